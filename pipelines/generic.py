"""Any interaction log (+ item texts, images, precomputed vectors) -> a dataset directory.

Inputs (CSV, TSV or parquet, by extension: `.csv`, `.tsv` (optionally `.gz`/`.bz2`), `.parquet`, `.pq`;
CSV/TSV files are UTF-8 with a header line):

- `--interactions`: one row per interaction with a user, an item and a time column (names set by
  `--user-col`, `--item-col`, `--time-col`; other columns are ignored). Ids are read as strings
  (surrounding whitespace removed; integer-typed parquet ids as their decimal digits). A time is
  either a number of seconds since 1970 (an integer, or a float rounded down) or a date string
  (ISO 8601 first, then any format pandas parses; a date without a time zone is UTC).
- `--items` (optional): item metadata with an id column (`--items-id-col`, default the `--item-col`
  name) and text columns; `--text-fields` picks them (default: every string column but the id; in a
  CSV, every column with a value that is not a number). They are kept in `items.parquet` (blank
  values as missing) and are the text modality's input with `--glove`.
- `--images FOLDER`: `<item_id>.jpg|png` files -> the `image` modality (VGG-16 1000-way output).
- `--vectors NAME=FILE.npy:IDS` or `--vectors NAME=FILE.parquet` (repeatable): precomputed
  features -> modality NAME. A `.npy` matrix needs a text file of item ids, one per line, row
  for row; a parquet file has an id column (`--vectors-id-col`, default `item_id`) and a list
  column of numbers (`--vector-col`, default `vector`).

Skipped input is counted by reason (first few logged as `file:line` or `file:row N`):
`malformed_line` and `empty_line` (CSV rows with the wrong number of fields / no fields),
`bad_timestamp` (neither a number nor a date), `missing_user_or_item` (a null, NaN or blank id, or one
that spells a missing value: `NaN`, `NULL`, `None`, `N/A`, `#N/A`, `<NA>` in any case),
`items_malformed_line`, `items_empty_line`, `<NAME>_null_vectors` (a parquet vector that is null),
`<NAME>_not_in_catalogue` (vector rows of items no user interacted with), plus the shared reasons of
`pipelines.common` (`duplicate_events`, `metadata_not_in_catalogue`, `<NAME>_non_finite`, `<NAME>_missing`, ...).

Errors (one `error:` line, exit status 2) rather than skips: a needed column missing from a file or named
twice in its header (which one would be read is a guess), and a CSV/TSV line longer than
`--max-line-bytes` (default 1 MiB) that the reader refuses, named by `file:line` with the flag to raise.

Example::

    python -m pipelines.generic --interactions log.parquet --user-col customer --item-col sku \\
        --time-col ts --items catalogue.csv --glove glove.6B.100d.txt \\
        --vectors clip=clip.npy:clip_ids.txt --paper-filters --out data/shop
"""

from __future__ import annotations

import argparse
import collections
import csv
import io
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from mfn4rec_tf.config import ModalityConfig
from pipelines.common import (
    FilterSpec,
    SkipCounter,
    add_common_arguments,
    align_vectors,
    apply_filters,
    check_paths,
    drop_duplicate_events,
    finish,
    image_modality,
    index_items,
    row_line_numbers,
    run_main,
    text_modality,
)

log = logging.getLogger("pipelines.generic")

CSV_SUFFIXES = {".csv": ",", ".tsv": "\t"}
COMPRESSION_SUFFIXES = (".gz", ".bz2")
PARQUET_SUFFIXES = (".parquet", ".pq")
RESERVED_ITEM_COLUMNS = ("item_index", "item_id")
_INTEGER = r"^\s*-?\d{1,18}\s*$"  # fits int64
_NUMBER = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"
_MILLISECONDS = 1e11  # seconds after the year 5000: the column is probably in milliseconds
# Ids that are a missing value, not a user or item (compared lower-case, after trimming): what pandas,
# numpy, SQL exports and spreadsheets write for one.
MISSING_IDS = ("", "nan", "null", "none", "n/a", "#n/a", "<na>")
DEFAULT_MAX_LINE_BYTES = 1 << 20  # pyarrow's default CSV block size
_MAX_BLOCK_BYTES = 2**31 - 1  # pyarrow's block size is an int32


def table_format(path) -> tuple[str, str | None]:
    """`("parquet", None)` or `("csv", delimiter)` from the file name; ValueError for anything else."""
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in PARQUET_SUFFIXES:
        return "parquet", None
    if suffixes and suffixes[-1] in COMPRESSION_SUFFIXES:
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in CSV_SUFFIXES:
        return "csv", CSV_SUFFIXES[suffixes[-1]]
    raise ValueError(
        f"{path}: cannot tell the format from the name; use .csv or .tsv (optionally .gz/.bz2), or "
        f".parquet/.pq."
    )


@dataclass(frozen=True)
class Places:
    """Where the rows of a table came from, formatted only when a message needs one.

    `places[i]` is `"<path>:<line>"` for CSV rows or `"<path>:row <n>"` (1-based) for parquet rows.
    """

    path: Path
    numbers: np.ndarray
    unit: str = ""

    def __getitem__(self, row) -> str:
        return f"{self.path}:{self.unit}{int(self.numbers[row])}"

    def keep(self, mask) -> Places:
        return Places(self.path, self.numbers[mask], self.unit)


def read_table(path, columns=None, *, string_columns=(), skips: SkipCounter, prefix="", multiline=False,
               max_line_bytes: int = DEFAULT_MAX_LINE_BYTES):
    """Reads `columns` (all if None) of a CSV/TSV/parquet file as a pyarrow Table.

    Args:
        path: the file.
        columns: the columns needed; a missing one, or one the header names twice, is a ValueError
            naming the file, the column and the columns found.
        string_columns: CSV columns read as strings whatever they look like (ids, times), or "all".
        skips: counts CSV lines with the wrong number of fields (`<prefix>malformed_line`).
        prefix: prefix of the skip reasons.
        multiline: CSV values may hold line breaks (inside quotes); line numbers are then approximate.
        max_line_bytes: CSV lines (rows) up to this long are always read; a longer one may be refused,
            with a ValueError naming its line (the reader's block size).

    Returns:
        (table, where): `where[i]` says where row i came from (`file:line` / `file:row N`), for messages.
    """
    path = Path(path)
    kind, delimiter = table_format(path)
    if kind == "parquet":
        try:
            found = pq.read_schema(path).names
        except pa.ArrowException as error:
            raise ValueError(f"{path} cannot be read as parquet: {error}") from None
        _check_columns(path, columns, found)
        table = pq.read_table(path, columns=list(columns) if columns is not None else None)
        return table, Places(path, np.arange(1, table.num_rows + 1), "row ")

    found = _csv_header(path, delimiter)
    _check_columns(path, columns, found)
    invalid = []

    def handler(row):
        invalid.append(row.number)
        skips.skip(f"{prefix}malformed_line", f"{path}:{row.number}",
                   f"expected {row.expected_columns} fields, found {row.actual_columns}")
        return "skip"

    try:
        table = pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(use_threads=False, block_size=min(max_line_bytes, _MAX_BLOCK_BYTES)),
            parse_options=pa_csv.ParseOptions(delimiter=delimiter, ignore_empty_lines=False,
                                              newlines_in_values=multiline, invalid_row_handler=handler),
            convert_options=pa_csv.ConvertOptions(
                include_columns=list(columns) if columns is not None else None,
                column_types={name: pa.string() for name in (found if string_columns == "all" else string_columns)},
            ),
        )
    except pa.ArrowInvalid as error:
        if "straddl" in str(error):  # "straddling object straddles two block boundaries"
            raise ValueError(_long_line_message(path, max_line_bytes)) from None
        raise ValueError(f"{path} cannot be read as {'TSV' if delimiter == chr(9) else 'CSV'}: {error}") from None
    where = Places(path, row_line_numbers(table.num_rows, invalid, first_line=2))
    table, where = _drop_empty_rows(table, where, skips, prefix)
    return table, where


def read_interactions(path, user_col, item_col, time_col, skips: SkipCounter,
                      max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> pd.DataFrame:
    """Reads the interaction log into user_id, item_id (strings) and timestamp (int64 seconds).

    Rows whose time is neither a number nor a date are counted as `bad_timestamp`; rows whose user or
    item id is missing (null, NaN, blank, or one of `MISSING_IDS` such as "NaN" or "NULL") as
    `missing_user_or_item`, both logged with their line for the first few.
    """
    columns = list(dict.fromkeys([user_col, item_col, time_col]))
    table, where = read_table(path, columns, string_columns=columns, skips=skips, max_line_bytes=max_line_bytes)
    seconds, ok = to_seconds(table.column(time_col))
    _skip_rows(skips, "bad_timestamp", where, np.flatnonzero(~ok),
               lambda row: f"{time_col}={table.column(time_col)[int(row)].as_py()!r}")
    users, items = id_strings(table.column(user_col)), id_strings(table.column(item_col))
    missing = ok & (missing_ids(users) | missing_ids(items))
    _skip_rows(skips, "missing_user_or_item", where, np.flatnonzero(missing),
               lambda row: f"{user_col}={users[row]!r}, {item_col}={items[row]!r}")
    keep = ok & ~missing
    events = pd.DataFrame({"user_id": users, "item_id": items, "timestamp": seconds})[keep].reset_index(drop=True)
    if events.empty:
        raise ValueError(f"{path} has no valid interaction ({table.num_rows} rows read; skipped {skips.as_dict()}).")
    if np.median(events["timestamp"]) > _MILLISECONDS:
        log.warning("%s: column %r looks like milliseconds (median %d); it is read as seconds", path, time_col,
                    int(np.median(events["timestamp"])))
    log.info("read %d interactions from %s", len(events), path)
    return events


def read_items(path, id_col, text_fields, skips: SkipCounter,
               max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> tuple[pd.DataFrame, list]:
    """Reads item metadata into item_id and the text columns (Python strings or None).

    Args:
        text_fields: the columns to keep, or None for every string column but the id.

    Returns:
        (items, text_fields).
    """
    # CSV columns are all read as strings (type guesses from the first block can fail further down).
    table, _ = read_table(path, None, string_columns="all", skips=skips, prefix="items_", multiline=True,
                          max_line_bytes=max_line_bytes)
    found = table.column_names
    _check_columns(path, [id_col], found)
    if text_fields is None:
        text_fields = [name for name in found
                       if name != id_col and name not in RESERVED_ITEM_COLUMNS and _is_text(table.column(name))]
        log.info("text fields of %s: %s", path, text_fields)
    else:
        _check_columns(path, text_fields, found)
        reserved = [name for name in text_fields if name in RESERVED_ITEM_COLUMNS and name != id_col]
        if reserved or id_col in text_fields:
            raise ValueError(f"--text-fields: {(reserved or [id_col])[0]!r} is an id column, not text.")
    items = pd.DataFrame({"item_id": id_strings(table.column(id_col))})
    for name in text_fields:
        items[name] = pd.Series(_texts(table.column(name)), dtype=object)
    return items, list(text_fields)


@dataclass(frozen=True)
class VectorSource:
    """One `--vectors NAME=FILE[:IDS]` argument."""

    name: str
    path: Path
    ids: Path | None = None

    @classmethod
    def parse(cls, text: str) -> VectorSource:
        """Parses `NAME=FILE.npy:IDS` or `NAME=FILE.parquet` (argparse `type=`)."""
        name, equals, rest = text.partition("=")
        if not equals or not rest:
            raise argparse.ArgumentTypeError(f"expected NAME=FILE.npy:IDS or NAME=FILE.parquet, got {text!r}")
        try:
            ModalityConfig(name, 1)
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None
        npy = re.fullmatch(r"(.+?\.npy):(.+)", rest, flags=re.IGNORECASE)
        if npy:
            return cls(name, Path(npy.group(1)), Path(npy.group(2)))
        if rest.lower().endswith(".npy"):
            raise argparse.ArgumentTypeError(f"{text!r}: a .npy matrix needs its item-id list: {name}={rest}:IDS_FILE")
        if rest.lower().endswith(PARQUET_SUFFIXES):
            return cls(name, Path(rest))
        raise argparse.ArgumentTypeError(f"{text!r}: FILE must be a .npy matrix (with :IDS) or a parquet file")


def read_vectors(source: VectorSource, id_col, vector_col, skips: SkipCounter) -> tuple[list, np.ndarray]:
    """Reads precomputed vectors: (item ids, [rows, dim] array). A `.npy` matrix is memory-mapped."""
    if source.ids is not None:
        try:
            matrix = np.load(source.path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:
            raise ValueError(f"{source.path} cannot be read as a .npy matrix: {error}") from None
        if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.number):
            raise ValueError(
                f"{source.path} must hold a 2-d numeric matrix; found {matrix.dtype} {list(matrix.shape)}.")
        ids = source.ids.read_text(encoding="utf-8-sig").split("\n")
        if ids and ids[-1].strip() == "":
            ids = ids[:-1]  # the final line break
        ids = [line.strip() for line in ids]
        if len(ids) != len(matrix):
            raise ValueError(
                f"{source.ids} lists {len(ids)} item ids but {source.path} has {len(matrix)} rows; "
                "they must match row for row."
            )
        return ids, matrix

    table, where = read_table(source.path, [id_col, vector_col], skips=skips)
    column = table.column(vector_col).combine_chunks()
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
            or pa.types.is_fixed_size_list(column.type)) or not (
            pa.types.is_integer(column.type.value_type) or pa.types.is_floating(column.type.value_type)):
        raise ValueError(
            f"{source.path}: column {vector_col!r} must hold lists of numbers (one vector per row); "
            f"found type {column.type}."
        )
    ids = id_strings(table.column(id_col))
    null = column.is_null().to_numpy(zero_copy_only=False)
    _skip_rows(skips, f"{source.name}_null_vectors", where, np.flatnonzero(null), lambda row: "vector is null")
    column = column.filter(pa.array(~null))
    ids = ids[~null]
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths != lengths[0]).any():
        row = int(np.flatnonzero(~null)[np.argmax(lengths != lengths[0])])
        raise ValueError(
            f"{source.path}: column {vector_col!r} holds vectors of different lengths "
            f"({int(lengths[0])} first, then {int(lengths[np.argmax(lengths != lengths[0])])} at {where[row]})."
        )
    dim = int(lengths[0]) if len(lengths) else 0
    values = pc.list_flatten(column).cast(pa.float64()).to_numpy(zero_copy_only=False)  # nulls -> NaN
    return list(ids), values.reshape(len(ids), dim)


def vector_modality(source: VectorSource, catalogue_ids, id_col, vector_col, skips: SkipCounter):
    """Reads one `--vectors` source and aligns it to the catalogue (see `align_vectors`)."""
    ids, matrix = read_vectors(source, id_col, vector_col, skips)
    if 0 in matrix.shape:
        raise ValueError(f"{source.path} holds no vector (its matrix is {list(matrix.shape)}).")
    unknown = ~pd.Index(ids).isin(pd.Index(catalogue_ids))
    skips.add(f"{source.name}_not_in_catalogue", int(unknown.sum()))
    table = align_vectors(catalogue_ids, ids, matrix, source.name, skips)
    table.how = f"{table.how} from {source.path.name}"
    log.info("modality %s: %d-d, %d of %d items", source.name, matrix.shape[1], int(table.present[1:].sum()),
             len(catalogue_ids))
    return table


def to_seconds(array) -> tuple[np.ndarray, np.ndarray]:
    """Converts a time column to int64 seconds since 1970-01-01 UTC.

    Numbers are seconds (floats rounded down); strings are integers, numbers, or dates (ISO 8601,
    then any format `pandas.to_datetime` parses, month first); dates without a zone are UTC.

    Returns:
        (seconds, ok): int64 [rows] (0 where not ok) and bool [rows].
    """
    array = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    seconds = np.zeros(len(array), np.int64)
    if pa.types.is_integer(array.type):
        ok = array.is_valid().to_numpy(zero_copy_only=False)
        seconds[ok] = array.filter(pa.array(ok)).cast(pa.int64()).to_numpy()
        return seconds, ok
    if pa.types.is_floating(array.type):
        values = array.cast(pa.float64()).to_numpy(zero_copy_only=False)
        ok = np.isfinite(values) & (np.abs(values) < 9e18)
        seconds[ok] = np.floor(values[ok]).astype(np.int64)
        return seconds, ok
    if pa.types.is_timestamp(array.type) or pa.types.is_date(array.type):
        return _datetime_seconds(pd.to_datetime(pd.Series(array.to_pandas()), utc=True))
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        raise ValueError(f"cannot read times of type {array.type}: expected numbers, dates or strings")

    text = pc.utf8_trim_whitespace(array)
    ok = np.zeros(len(array), bool)
    integer = pc.match_substring_regex(text, _INTEGER).fill_null(False).to_numpy(zero_copy_only=False)
    seconds[integer] = text.filter(pa.array(integer)).cast(pa.int64()).to_numpy()
    ok |= integer
    number = ~ok & pc.match_substring_regex(text, _NUMBER).fill_null(False).to_numpy(zero_copy_only=False)
    if number.any():
        values = text.filter(pa.array(number)).cast(pa.float64()).to_numpy()
        fits = np.abs(values) < 9e18
        rows = np.flatnonzero(number)[fits]
        seconds[rows] = np.floor(values[fits]).astype(np.int64)
        ok[rows] = True
    rest = np.flatnonzero(~ok & ~number)
    if len(rest):
        strings = pd.Series(text.take(pa.array(rest)).to_numpy(zero_copy_only=False), dtype=object)
        parsed = pd.to_datetime(strings, format="ISO8601", utc=True, errors="coerce")
        retry = parsed.isna() & strings.notna() & (strings != "")
        if retry.any():
            parsed[retry] = pd.to_datetime(strings[retry], format="mixed", utc=True, errors="coerce")
        values, parsed_ok = _datetime_seconds(parsed)
        seconds[rest[parsed_ok]] = values[parsed_ok]
        ok[rest[parsed_ok]] = True
    return seconds, ok


def id_strings(array) -> np.ndarray:
    """Ids as an object array of str (None where missing, NaN included): strings trimmed, integers (also
    integral floats) in decimal."""
    array = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if pa.types.is_floating(array.type):
        array = pc.if_else(pc.is_nan(array), pa.scalar(None, array.type), array)  # not INT64_MIN, not "nan"
        values = array.to_numpy(zero_copy_only=False)
        finite = values[np.isfinite(values)]
        if np.array_equal(finite, np.floor(finite)) and (np.abs(finite) < 9e18).all():
            array = pc.cast(array, pa.int64(), safe=False)
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        array = pc.cast(array, pa.string())
    return pc.utf8_trim_whitespace(array).to_numpy(zero_copy_only=False)


def missing_ids(ids) -> np.ndarray:
    """bool [rows]: which of `ids` (as `id_strings` gives them) are a missing value: None, or one of
    `MISSING_IDS` in any case ("", "NaN", "NULL", "None", "N/A", ...)."""
    lowered = pc.utf8_lower(pa.array(ids, pa.string()))
    return pc.is_in(lowered, value_set=pa.array(MISSING_IDS)).fill_null(True).to_numpy(zero_copy_only=False)


def _max_line_bytes(text: str) -> int:
    """argparse type of --max-line-bytes: a whole number of bytes, 1 to 2**31 - 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of bytes, e.g. {4 << 20}; got {text!r}") from None
    if not 1 <= value <= _MAX_BLOCK_BYTES:
        raise argparse.ArgumentTypeError(f"must be 1 to {_MAX_BLOCK_BYTES:,} bytes; got {value:,}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.generic",
        description="Interaction log (+ item texts, images, precomputed vectors) as CSV/TSV/parquet -> dataset "
                    "directory. Times are seconds since 1970 or date strings (UTC unless they say otherwise).",
    )
    source = parser.add_argument_group("input")
    source.add_argument("--interactions", required=True, help="CSV/TSV/parquet file, one row per interaction")
    source.add_argument("--user-col", default="user_id", help="user column of --interactions (default: %(default)s)")
    source.add_argument("--item-col", default="item_id", help="item column of --interactions (default: %(default)s)")
    source.add_argument("--time-col", default="timestamp", help="time column of --interactions (default: %(default)s)")
    source.add_argument("--items", help="CSV/TSV/parquet file of item metadata: an id column and text columns")
    source.add_argument("--items-id-col", help="id column of --items (default: the --item-col name)")
    source.add_argument("--text-fields",
                        help="comma-separated columns of --items kept as text "
                             "(default: every string column but the id, numbers-only CSV columns excepted)")
    source.add_argument("--max-line-bytes", type=_max_line_bytes, default=DEFAULT_MAX_LINE_BYTES, metavar="BYTES",
                        help="CSV/TSV lines (rows) of --interactions and --items up to this long are always read; "
                             "a longer one may stop the run with an error naming its line, then raise this "
                             "(default: %(default)s, 1 MiB)")
    vectors = parser.add_argument_group("precomputed features")
    vectors.add_argument("--vectors", action="append", type=VectorSource.parse, default=[], metavar="NAME=FILE[:IDS]",
                         help="modality NAME from FILE.npy (+ IDS, a file of item ids, one a line) or FILE.parquet; "
                              "repeatable")
    vectors.add_argument("--vectors-id-col", default="item_id",
                         help="id column of parquet --vectors files (default: %(default)s)")
    vectors.add_argument("--vector-col", default="vector",
                         help="vector column of parquet --vectors files (default: %(default)s)")
    add_common_arguments(parser)
    return parser


def main(argv=None) -> Path:
    """Runs the pipeline and returns the dataset directory; raises ValueError / FileNotFoundError on bad
    input (`run_main` turns those into one `error:` line and exit status 2)."""
    args = build_parser().parse_args(argv)
    items_id_col = args.items_id_col or args.item_col
    text_fields = None
    if args.text_fields is not None:
        text_fields = [f.strip() for f in args.text_fields.split(",") if f.strip()]
    _check_inputs(args)
    spec = FilterSpec.from_args(args)  # a bad filter value fails before the reading

    skips = SkipCounter()
    events = read_interactions(args.interactions, args.user_col, args.item_col, args.time_col, skips,
                               max_line_bytes=args.max_line_bytes)
    events = drop_duplicate_events(events, skips)
    events, filters = apply_filters(events, spec)
    if events.empty:
        raise ValueError(f"no interactions left after the filters ({[s['filter'] for s in filters]}); relax them.")
    item_meta = None
    if args.items is not None:
        item_meta, text_fields = read_items(args.items, items_id_col, text_fields, skips,
                                            max_line_bytes=args.max_line_bytes)
    items, interactions = index_items(events, item_meta, skips)

    features = {}
    if args.glove is not None:
        if not text_fields:
            raise ValueError(f"--glove: {args.items} has no text column to read (set --text-fields).")
        features["text"] = text_modality(items, text_fields, args.glove, args.dim)
    if args.images is not None:
        features["image"] = image_modality(items, args.images, args.weights, args.image_batch_size)
    catalogue_ids = items["item_id"].astype(str).tolist()
    for source in args.vectors:
        features[source.name] = vector_modality(source, catalogue_ids, args.vectors_id_col, args.vector_col, skips)

    sources = [{"role": "interactions", "path": str(Path(args.interactions).resolve()),
                "columns": {"user": args.user_col, "item": args.item_col, "time": args.time_col}}]
    if args.items is not None:
        sources.append({"role": "items", "path": str(Path(args.items).resolve()), "id_column": items_id_col,
                        "text_fields": text_fields})
    if args.glove is not None:
        sources.append({"role": "word_vectors", "path": str(Path(args.glove).resolve()), "text_fields": text_fields})
    if args.images is not None:
        sources.append({"role": "images", "path": str(Path(args.images).resolve()), "weights": args.weights})
    for source in args.vectors:
        where = ({"ids": str(source.ids.resolve())} if source.ids is not None
                 else {"id_column": args.vectors_id_col, "vector_column": args.vector_col})
        sources.append({"role": "vectors", "modality": source.name, "path": str(source.path.resolve()), **where})
    return finish(args, name=args.name, items=items, interactions=interactions, features=features,
           sources=sources, filters=filters, skips=skips)


def _check_inputs(args):
    """Fails fast, before any reading, on missing files and clashing names."""
    files = [("--interactions", args.interactions), ("--items", args.items)]
    for source in args.vectors:
        files += [(f"--vectors {source.name}", source.path), (f"--vectors {source.name} ids", source.ids)]
    check_paths(args, files)
    for file in (args.interactions, args.items):
        if file is not None:
            table_format(file)
    if args.glove is not None and args.items is None:
        raise ValueError("--glove needs --items: the text modality is made from the items' text columns.")
    taken = (["text"] if args.glove else []) + (["image"] if args.images else [])
    for source in args.vectors:
        if source.name in taken:
            raise ValueError(f"--vectors: modality {source.name!r} is given twice (or made by --glove/--images).")
        taken.append(source.name)


def _check_columns(path, columns, found):
    """Every column of `columns` (all of `found` if None) is in the header `found`, once."""
    for column in columns or ():
        if column not in found:
            raise ValueError(f"{path} has no column {column!r}; its columns are {list(found)}.")
    counts = collections.Counter(found)
    for column in found if columns is None else columns:
        if counts[column] > 1:
            positions = ", ".join(str(i + 1) for i, name in enumerate(found) if name == column)
            raise ValueError(
                f"{path}: column {column!r} is in the header {counts[column]} times (columns {positions}); "
                "rename all but one, so that it is clear which one to read."
            )


def _csv_header(path, delimiter) -> list:
    """The column names on the first line of a (possibly compressed) CSV/TSV file."""
    try:
        with pa.input_stream(str(path), compression="detect") as stream:
            first = next(csv.reader(io.TextIOWrapper(stream, encoding="utf-8-sig", newline=""), delimiter=delimiter),
                         None)
    except (csv.Error, UnicodeDecodeError) as error:
        raise ValueError(f"{path}:1: the header line cannot be read ({error}).") from None
    if not first:
        raise ValueError(f"{path} is empty: expected a header line with the column names.")
    return first


def _long_line_message(path, limit) -> str:
    """The error for a CSV the reader refused for a row over `limit` bytes: names the first line that long."""
    found = _first_line_longer_than(path, limit)
    if found is None:  # a row with line breaks inside quotes, each line shorter than the limit
        return (f"{path}: a row (a quoted value with line breaks) is longer than {limit:,} bytes; "
                f"raise the limit with --max-line-bytes.")
    line, length = found
    suggest = min(((length >> 20) + 1) << 20, _MAX_BLOCK_BYTES)
    return (f"{path}:{line}: the line is {length:,} bytes, longer than the {limit:,} read at once; "
            f"raise the limit with --max-line-bytes (e.g. --max-line-bytes {suggest}).")


def _first_line_longer_than(path, limit):
    """(line number, length in bytes without the line break) of the first line of the (decompressed) file
    longer than `limit` bytes, or None."""
    line, carried = 1, 0  # line number of the first piece of the chunk; bytes of it in earlier chunks
    with pa.input_stream(str(path), compression="detect") as stream:
        while True:
            chunk = stream.read(1 << 24)
            if not chunk:
                break
            ends = np.flatnonzero(np.frombuffer(chunk, np.uint8) == ord("\n"))
            lengths = np.r_[ends, len(chunk)] - np.r_[0, ends + 1]  # the last piece goes on in the next chunk
            lengths[0] += carried
            over = np.flatnonzero(lengths[:-1] > limit)
            if len(over):
                return line + int(over[0]), int(lengths[over[0]])
            line += len(ends)
            carried = int(lengths[-1])
    return (line, carried) if carried > limit else None


def _drop_empty_rows(table, where, skips, prefix):
    """Drops CSV rows whose every field is empty (blank lines), counting them as `<prefix>empty_line`."""
    if table.num_columns == 0 or table.num_rows == 0:
        return table, where
    empty = np.ones(table.num_rows, bool)
    for column in table.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            empty &= pc.equal(pc.utf8_trim_whitespace(column), "").fill_null(True).to_numpy(zero_copy_only=False)
        else:
            empty &= column.is_null().to_numpy(zero_copy_only=False)
    _skip_rows(skips, f"{prefix}empty_line", where, np.flatnonzero(empty), lambda row: "no fields")
    return table.filter(pa.array(~empty)), where.keep(~empty)


def _skip_rows(skips: SkipCounter, reason, where, rows, detail):
    """Counts `rows` as skipped for `reason`; only the first few (the ones logged) get a place and a detail."""
    first = rows[: skips.log_first + 1]
    for row in first:
        skips.skip(reason, where[row], detail(row))
    skips.add(reason, len(rows) - len(first))


def _datetime_seconds(parsed: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    ok = parsed.notna().to_numpy()
    seconds = np.zeros(len(parsed), np.int64)
    if ok.any():
        delta = parsed[ok] - pd.Timestamp(0, tz="UTC")
        seconds[ok] = (delta // pd.Timedelta(seconds=1)).to_numpy(dtype=np.int64)
    return seconds, ok


def _is_text(column) -> bool:
    """A string column with at least one value that is not a number (so a CSV price column is not text)."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return False
    filled = pc.invert(pc.match_substring_regex(column, r"^\s*$")).fill_null(False)
    numeric = pc.match_substring_regex(column, _NUMBER).fill_null(False)
    return bool(pc.any(pc.and_(filled, pc.invert(numeric))).as_py())


def _texts(column) -> list:
    """A text column as Python strings, None where missing or blank; non-string values written out with str()."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    values = column.to_pylist()
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        values = [None if value is None else str(value) for value in values]
    return [value if value is not None and value.strip() else None for value in values]


if __name__ == "__main__":
    sys.exit(run_main(main))
