"""MovieLens ratings (+ movie titles and genres, + posters) -> a dataset directory.

Reads the two MovieLens layouts:

- ML-1M (and ML-10M) `ratings.dat`: `UserID::MovieID::Rating::Timestamp`, no header; `movies.dat`:
  `MovieID::Title (Year)::Genre|Genre`, LATIN-1 in ML-1M (UTF-8 is tried first, so a UTF-8 file also reads).
- ML-latest(-small) `ratings.csv`: `userId,movieId,rating,timestamp` with a header; `movies.csv`:
  `movieId,title,genres`, quoted CSV, UTF-8.

The format is taken from the extension (`.dat` / `.csv`), else from the first line (`::` means `.dat`).
Every rating is an interaction (implicit feedback: a rating says the user watched the movie);
`--min-rating R` keeps only ratings >= R. Ids are canonical integers written as strings (`"0012"` ->
`"12"`), so poster files are `<movieId>.jpg|png`. The text of an item is its title (with the year, as
MovieLens writes it) and its genres joined by ", " (`(no genres listed)` counts as no genres).

Input that cannot be read is skipped and counted, by reason, with the first few logged as `file:line`:
`malformed_line` (not four fields), `non_integer_id`, `bad_timestamp` (not an integer), `bad_rating`
(not a number), `empty_line`; in the movies file `movies_malformed_line`, `movies_non_integer_id`.

Example::

    python -m pipelines.movielens --ratings ml-1m/ratings.dat --movies ml-1m/movies.dat \\
        --glove glove.6B.100d.txt --posters posters/ --paper-filters --out data/ml-1m
"""

from __future__ import annotations

import argparse
import csv
import logging
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from pipelines.common import (
    FilterSpec,
    SkipCounter,
    add_common_arguments,
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

log = logging.getLogger("pipelines.movielens")

RATING_COLUMNS = ("userId", "movieId", "rating", "timestamp")  # ML-latest header names, in ML-1M's order
MOVIE_COLUMNS = ("movieId", "title", "genres")
TEXT_COLUMNS = ("title", "genres")
NO_GENRES = "(no genres listed)"
_INTEGER = r"^\s*-?\d{1,18}\s*$"  # fits int64
_NUMBER = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"


def detect_format(path) -> str:
    """`"dat"` (`::`-separated) or `"csv"`: by extension, else by the first non-empty line."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".dat", ".csv"):
        return suffix[1:]
    with open(path, encoding="latin-1") as file:
        for line in file:
            if line.strip():
                return "dat" if "::" in line else "csv"
    raise ValueError(f"{path} is empty.")


def read_ratings(path, skips: SkipCounter) -> pd.DataFrame:
    """Reads `ratings.dat` or `ratings.csv` into user_id, item_id (canonical integer strings), rating, timestamp.

    Raises:
        ValueError: if the file has no valid line, or a CSV header lacks a MovieLens column.
    """
    path = Path(path)
    kind = detect_format(path)
    header = None
    if kind == "dat":
        # `::` is two one-character delimiters with an empty field between: 4 fields -> 7 columns.
        names = [f"f{i}" for i in range(7)]
        fields = {"user": "f0", "item": "f2", "rating": "f4", "timestamp": "f6"}
        separators = ["f1", "f3", "f5"]
        table, invalid = _read_lines(path, names, delimiter=":", skip_rows=0, expected="4 fields separated by '::'")
    else:
        header = _csv_header(path)
        names = [f"c{i}" for i in range(len(header) if header else 4)]
        if header:
            missing = [c for c in RATING_COLUMNS if c not in header]
            if missing:
                raise ValueError(
                    f"{path}: the header has no {missing[0]!r} column; found columns {header} "
                    f"(MovieLens ratings.csv has {list(RATING_COLUMNS)})."
                )
            position = {c: f"c{header.index(c)}" for c in RATING_COLUMNS}
        else:
            position = {c: f"c{i}" for i, c in enumerate(RATING_COLUMNS)}
        fields = {"user": position["userId"], "item": position["movieId"], "rating": position["rating"],
                  "timestamp": position["timestamp"]}
        separators = []
        table, invalid = _read_lines(path, names, delimiter=",", skip_rows=1 if header else 0,
                                     expected=f"{len(names)} comma-separated fields")

    first_line = 2 if header else 1
    lines = row_line_numbers(table.num_rows, [number for number, _ in invalid], first_line)
    for number, detail in invalid:
        skips.skip("malformed_line", f"{path}:{number}", detail)

    columns = {name: table.column(name).combine_chunks() for name in table.column_names}
    empty = np.ones(table.num_rows, bool)
    for name in names:
        empty &= pc.equal(pc.utf8_trim_whitespace(columns[name]), "").to_numpy(zero_copy_only=False)
    bad_separator = np.zeros(table.num_rows, bool)
    for name in separators:
        bad_separator |= pc.not_equal(columns[name], "").to_numpy(zero_copy_only=False)
    good_ids = (_matches(columns[fields["user"]], _INTEGER) & _matches(columns[fields["item"]], _INTEGER))
    good_time = _matches(columns[fields["timestamp"]], _INTEGER)
    good_rating = _matches(columns[fields["rating"]], _NUMBER)

    reasons = [
        ("empty_line", empty, "no fields"),
        ("malformed_line", bad_separator, "expected UserID::MovieID::Rating::Timestamp"),
        ("non_integer_id", ~good_ids, "user or movie id is not an integer"),
        ("bad_timestamp", ~good_time, "timestamp is not an integer"),
        ("bad_rating", ~good_rating, "rating is not a number"),
    ]
    keep = np.ones(table.num_rows, bool)
    for reason, bad, detail in reasons:
        bad = np.flatnonzero(bad & keep)
        for row in bad[: skips.log_first + 1]:  # the ones logged; the rest are only counted
            skips.skip(reason, f"{path}:{lines[row]}", detail)
        skips.add(reason, len(bad) - len(bad[: skips.log_first + 1]))
        keep[bad] = False
    if not keep.any():
        raise ValueError(
            f"{path} has no valid rating line ({table.num_rows + len(invalid)} lines read, all skipped: "
            f"{skips.as_dict()})."
        )
    mask = pa.array(keep)
    ratings = pd.DataFrame(
        {
            "user_id": _canonical_integers(columns[fields["user"]].filter(mask)),
            "item_id": _canonical_integers(columns[fields["item"]].filter(mask)),
            "rating": _floats(columns[fields["rating"]].filter(mask)),
            "timestamp": _integers(columns[fields["timestamp"]].filter(mask)),
        }
    )
    log.info("read %d ratings of %d users on %d movies from %s (%s format)", len(ratings),
             ratings["user_id"].nunique(), ratings["item_id"].nunique(), path, kind)
    return ratings


def read_movies(path, skips: SkipCounter) -> pd.DataFrame:
    """Reads `movies.dat` or `movies.csv` into item_id (canonical integer string), title, genres.

    Genres are joined by ", " (`Action|Comedy` -> `Action, Comedy`); `(no genres listed)` and empty
    fields become missing values.
    """
    path = Path(path)
    rows = []
    if detect_format(path) == "dat":
        raw = path.read_bytes()
        try:
            text, encoding = raw.decode("utf-8-sig"), "UTF-8"
        except UnicodeDecodeError:
            text, encoding = raw.decode("latin-1"), "LATIN-1"
        log.info("reading %s as %s", path, encoding)
        # split("\n"), not splitlines(): LATIN-1 byte 0x85 decodes to a character splitlines() breaks at.
        for number, line in enumerate(text.split("\n"), start=1):
            line = line.rstrip("\r")
            if not line.strip():
                continue
            first, _, rest = line.partition("::")
            title, separator, genres = rest.rpartition("::")
            if not separator:
                skips.skip("movies_malformed_line", f"{path}:{number}", "expected MovieID::Title::Genres")
                continue
            rows.append((number, first, title, genres))
    else:
        with open(path, encoding="utf-8-sig", newline="") as file:
            reader = csv.reader(file)
            header = next(reader, None)
            if header is None:
                raise ValueError(f"{path} is empty: expected a header {list(MOVIE_COLUMNS)}.")
            for column in MOVIE_COLUMNS:
                if column not in header:
                    raise ValueError(f"{path}: the header has no {column!r} column; found columns {header}.")
            where = [header.index(c) for c in MOVIE_COLUMNS]
            for row in reader:
                if not row or not any(field.strip() for field in row):
                    continue
                if len(row) != len(header):
                    skips.skip("movies_malformed_line", f"{path}:{reader.line_num}",
                               f"expected {len(header)} fields, found {len(row)}")
                    continue
                rows.append((reader.line_num, *(row[i] for i in where)))

    items = []
    for number, movie_id, title, genres in rows:
        movie_id = movie_id.strip()
        if not _is_integer(movie_id):
            skips.skip("movies_non_integer_id", f"{path}:{number}", f"movie id {movie_id!r}")
            continue
        genres = genres.strip()
        if genres and genres != NO_GENRES:
            genres = ", ".join(g.strip() for g in genres.split("|") if g.strip())
        else:
            genres = None
        items.append((str(int(movie_id)), title.strip() or None, genres))
    log.info("read %d movies from %s", len(items), path)
    return pd.DataFrame(items, columns=["item_id", *TEXT_COLUMNS]).astype(
        {"item_id": "string", "title": object, "genres": object})


def keep_min_rating(events: pd.DataFrame, min_rating: float) -> tuple[pd.DataFrame, dict]:
    """Keeps ratings >= `min_rating`; returns the events and a filter report like `apply_filters`' ones."""
    kept = events[events["rating"] >= min_rating]
    step = {
        "filter": "min_rating",
        "min": min_rating,
        "interactions_removed": int(len(events) - len(kept)),
        "users_removed": int(events["user_id"].nunique() - kept["user_id"].nunique()),
        "items_removed": int(events["item_id"].nunique() - kept["item_id"].nunique()),
    }
    log.info("filter min_rating: removed %d interactions, %d users, %d items", step["interactions_removed"],
             step["users_removed"], step["items_removed"])
    return kept.reset_index(drop=True), step


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.movielens",
        description="MovieLens (ML-1M .dat or ML-latest .csv) -> dataset directory. Every rating is an "
                    "interaction unless --min-rating is given.",
    )
    source = parser.add_argument_group("MovieLens input")
    source.add_argument("--ratings", required=True,
                        help="ratings.dat (UserID::MovieID::Rating::Timestamp) or ratings.csv (with header)")
    source.add_argument("--movies", help="movies.dat or movies.csv: titles and genres (the text modality's input)")
    source.add_argument("--text-fields", default=",".join(TEXT_COLUMNS),
                        help="comma-separated movie columns kept in items.parquet and read by --glove "
                             "(default: %(default)s)")
    source.add_argument("--min-rating", type=float,
                        help="keep only ratings >= this as interactions (default: keep every rating)")
    source.add_argument("--posters", dest="images", metavar="FOLDER",
                        help="folder of <movieId>.jpg|png posters; an alias of --images")
    add_common_arguments(parser)
    return parser


def main(argv=None) -> Path:
    """Runs the pipeline and returns the dataset directory; raises ValueError / FileNotFoundError on bad
    input (`run_main` turns those into one `error:` line and exit status 2)."""
    args = build_parser().parse_args(argv)
    text_fields = [f.strip() for f in args.text_fields.split(",") if f.strip()]
    unknown = [f for f in text_fields if f not in TEXT_COLUMNS]
    if unknown:
        raise ValueError(f"--text-fields: {unknown[0]!r} is not a movie column; choose from {list(TEXT_COLUMNS)}.")
    check_paths(args, [("--ratings", args.ratings), ("--movies", args.movies)])
    if args.glove is not None and (args.movies is None or not text_fields):
        raise ValueError("--glove needs --movies and at least one --text-fields column: the text is the movies'.")

    skips = SkipCounter()
    events = drop_duplicate_events(read_ratings(args.ratings, skips), skips)
    filters = []
    if args.min_rating is not None:
        events, step = keep_min_rating(events, args.min_rating)
        filters.append(step)
    events, steps = apply_filters(events.drop(columns="rating"), FilterSpec.from_args(args))
    filters.extend(steps)
    if events.empty:
        raise ValueError(f"no interactions left after the filters ({[s['filter'] for s in filters]}); relax them.")
    movies = read_movies(args.movies, skips)[["item_id", *text_fields]] if args.movies else None
    items, interactions = index_items(events, movies, skips)

    features = {}
    if args.glove is not None:
        features["text"] = text_modality(items, text_fields, args.glove, args.dim)
    if args.images is not None:
        features["image"] = image_modality(items, args.images, args.weights, args.image_batch_size)
    sources = [{"role": "ratings", "path": str(Path(args.ratings).resolve()), "format": detect_format(args.ratings),
                "min_rating": args.min_rating}]
    if args.movies:
        sources.append({"role": "movies", "path": str(Path(args.movies).resolve()), "text_fields": text_fields})
    if args.glove:
        sources.append({"role": "word_vectors", "path": str(Path(args.glove).resolve()), "text_fields": text_fields})
    if args.images:
        sources.append({"role": "posters", "path": str(Path(args.images).resolve()), "weights": args.weights})
    return finish(args, name=args.name, items=items, interactions=interactions, features=features,
           sources=sources, filters=filters, skips=skips)


def _read_lines(path, names, delimiter, skip_rows, expected):
    """Reads a delimited text file as strings; returns the table and [(line number, detail)] of bad lines.

    Single-threaded so that pyarrow knows each bad line's number; empty lines stay rows (of empty
    strings) so that row i of the table is the i-th line that is not bad.
    """
    invalid = []

    def handler(row):
        invalid.append((row.number, f"expected {expected}: {row.text[:80]!r}"))
        return "skip"

    table = pa_csv.read_csv(
        path,
        read_options=pa_csv.ReadOptions(use_threads=False, column_names=names, skip_rows=skip_rows,
                                        encoding="latin-1"),
        parse_options=pa_csv.ParseOptions(delimiter=delimiter, quote_char=False, ignore_empty_lines=False,
                                          invalid_row_handler=handler),
        convert_options=pa_csv.ConvertOptions(column_types={n: pa.string() for n in names}),
    )
    return table, invalid


def _csv_header(path):
    """The first line's fields if it is a header (its first field is not an integer), else None."""
    with open(path, encoding="utf-8-sig", newline="") as file:
        first = next(csv.reader(file), None)
    if not first or _is_integer(first[0].strip()):
        return None
    return [field.strip() for field in first]


def _matches(array, pattern) -> np.ndarray:
    return pc.match_substring_regex(array, pattern).fill_null(False).to_numpy(zero_copy_only=False)


def _floats(array) -> np.ndarray:
    return pc.cast(pc.utf8_trim_whitespace(array), pa.float64()).to_numpy()


def _integers(array) -> np.ndarray:
    return pc.cast(pc.utf8_trim_whitespace(array), pa.int64()).to_numpy()


def _canonical_integers(array) -> np.ndarray:
    return pc.cast(pc.cast(pc.utf8_trim_whitespace(array), pa.int64()), pa.string()).to_numpy(zero_copy_only=False)


def _is_integer(text) -> bool:
    return re.match(_INTEGER, text) is not None


if __name__ == "__main__":
    sys.exit(run_main(main))
