"""Amazon review data (McAuley et al. 2014, Ni et al. 2018) -> a dataset directory.

Usage::

    python -m pipelines.amazon --reviews reviews_Clothing_Shoes_and_Jewelry.json.gz \\
        --meta meta_Clothing_Shoes_and_Jewelry.json.gz \\
        --image-features image_features_Clothing_Shoes_and_Jewelry.b \\
        --glove glove.6B.100d.txt --dim 100 --paper-filters --out data/clothing

Input (see docs/data.md#amazon-review-data), each file gzip-compressed or plain (told apart by its
first bytes, not its name):

- `--reviews`: one strict JSON object a line, with `reviewerID`, `asin` and `unixReviewTime` (both
  releases; 2014 `reviews_<Cat>[_5].json.gz`, 2018 `<Cat>[_5].json.gz`). Only those three fields are kept.
- `--meta`: 2014 lines are Python dict literals (single quotes), parsed with `ast.literal_eval` — never
  `eval`, so a line is data and nothing in it runs; 2018 lines are strict JSON. `--release auto` (default)
  tries JSON first and falls back to a Python literal, line by line. Kept as text columns of
  items.parquet: `title`, `description` (2018: a list of strings, joined), `categories` (2014
  `categories`, a list of lists, or 2018 `category`, a list: flattened, de-duplicated in order, joined
  with ", ") and `brand`. Every text has HTML removed (script/style blocks and tags dropped, entities
  such as `&amp;` unescaped, whitespace collapsed): 2018 titles and descriptions carry HTML fragments
  and 2014 texts carry escaped entities.
- `--image-features`: McAuley's `image_features_<Cat>.b`, records of a 10-byte ASCII ASIN and 4096
  little-endian float32 values, read streaming in chunks of records (the files are GBs); only the first
  record of each catalogue item is kept. Gives the `image` modality (4096-d).

Text is read as strict UTF-8 line by line (from the bytes, not a text-mode stream), so one line with
undecodable bytes is counted and skipped without touching its neighbours or altering any kept text.

Skipped input is counted by reason (manifest `skipped`, and the printed summary); the first few of each
reason are logged with `file:line`:

- `reviews_undecodable_line` / `metadata_undecodable_line`: not UTF-8;
- `reviews_blank_line` / `metadata_blank_line`: only whitespace;
- `reviews_malformed_line` / `metadata_malformed_line`: not a JSON object (nor, for metadata, a Python
  dict literal), including lines nested too deeply for the parser and numbers over Python's 4,300-digit
  limit; or a kept value (reviewerID, asin, a text column) holding a lone surrogate escape (`\\ud800`),
  which is no character and cannot be written as UTF-8;
- `reviews_missing_field`: no (or an empty, or a non-string) `reviewerID` or `asin`, or no
  `unixReviewTime`;
- `reviews_bad_timestamp`: `unixReviewTime` not an integer (an integral float or a string of ASCII
  digits counts as one) or outside 0..2**63 - 1;
- `metadata_missing_asin`: a metadata record without a string `asin`;
- `metadata_not_in_catalogue`: metadata of items not in the filtered interactions (not an error);
- `image_truncated_record`: an incomplete last record of the `.b` file (logged with its byte offset);
- `image_not_in_catalogue`: `.b` records of items not in the catalogue (not an error);
- `image_duplicate_ids`, `image_non_finite` (NaN/inf vector: zero row, presence False), `image_missing`
  (catalogue items without a record), `duplicate_events`, `duplicate_item_metadata`,
  `items_without_metadata`: counted by the shared steps in `pipelines.common`.

A reviews or metadata file with no valid line, or a `.b` file with no complete record, is an error
naming the file; so is a compressed file that ends early (a partial download), at the line it broke.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import gzip
import json
import logging
import re
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

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
    run_main,
    text_modality,
)
from pipelines.text_cleaning import strip_html

log = logging.getLogger("pipelines.amazon")

TEXT_COLUMNS = ("title", "description", "categories", "brand")
IMAGE_FEATURE_DIM = 4096
IMAGE_RECORD = np.dtype([("asin", "S10"), ("vector", "<f4", (IMAGE_FEATURE_DIM,))])  # 16,394 bytes, packed
IMAGE_CHUNK_RECORDS = 1024  # ~16 MiB read at a time
PROGRESS_EVERY = 1_000_000  # lines (or .b records) between progress log lines
REVIEW_FIELDS = ("reviewerID", "asin", "unixReviewTime")
KEYS_2018_ONLY = ("verified", "vote", "style", "image")  # 2014 reviews have none of these...
KEYS_2014_ONLY = ("helpful",)  # ...and 2018 reviews never have this one

_SPACE = re.compile(r"\s+")
_LITERAL_ERRORS = (ValueError, SyntaxError, TypeError, MemoryError, RecursionError)
# json.loads raises JSONDecodeError for bad syntax, but a plain ValueError for a number over Python's
# 4,300-digit int conversion limit and RecursionError for brackets nested too deeply.
_JSON_ERRORS = (ValueError, RecursionError, MemoryError)
_SURROGATE = re.compile("[\ud800-\udfff]")  # a lone \udXXX escape: not a character, cannot be written as UTF-8
_DIGITS = re.compile(r"\s*([0-9]{1,19})\s*")  # ASCII digits that fit int64


# ----------------------------------------------------------------------------------------- line input


def read_lines(path, role: str, skips: SkipCounter, progress_every: int = PROGRESS_EVERY):
    """Yields `(line_no, text)` for each line of a gzip or plain file that decodes as UTF-8 and is not blank.

    Lines are read as bytes and decoded one by one (strict UTF-8, a leading BOM dropped), so an
    undecodable line is counted as `<role>_undecodable_line` and skipped; whitespace-only lines are
    counted as `<role>_blank_line`. Logs progress (lines and share of the file read) every
    `progress_every` lines.

    Raises:
        ValueError: the compressed stream is damaged or ends early, naming the file and line.
    """
    path = Path(path)
    size = max(path.stat().st_size, 1)
    started = time.monotonic()
    line_no = 0
    with open(path, "rb") as raw:
        compressed = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        try:
            for line_no, data in enumerate(stream, 1):
                if line_no % progress_every == 0:
                    log.info("%s: %s lines read (%.0f%% of the file) in %.0f s", path.name, f"{line_no:,}",
                             100.0 * raw.tell() / size, time.monotonic() - started)
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError as error:
                    skips.skip(f"{role}_undecodable_line", f"{path}:{line_no}", f"not UTF-8 at byte {error.start}")
                    continue
                if line_no == 1:
                    text = text.lstrip("\ufeff")
                if not text.strip():
                    skips.skip(f"{role}_blank_line", f"{path}:{line_no}")
                    continue
                yield line_no, text
        except (EOFError, OSError, zlib.error) as error:
            raise ValueError(
                f"{path} is damaged or incomplete after line {line_no:,} ({error}); download it again."
            ) from None
    log.info("%s: %s lines read in %.1f s", path.name, f"{line_no:,}", time.monotonic() - started)


def _parse_error(error: BaseException, kind: str = "JSON") -> str:
    """Why a line is not `kind`, in words (for the skip's log line)."""
    if isinstance(error, json.JSONDecodeError):
        return f"not {kind} ({error.msg})"
    if isinstance(error, (RecursionError, MemoryError)) or "too many nested" in str(error):
        return f"not {kind} (nested too deeply)"
    if "integer string conversion" in str(error) or "Exceeds the limit" in str(error):
        return f"not {kind} (a number with over 4,300 digits)"
    return f"not {kind} ({type(error).__name__}: {str(error)[:80]})"


def _lone_surrogate(*values) -> str | None:
    """The first of the string `values` holding a lone surrogate (a \\udXXX escape that is no character
    and cannot be written as UTF-8), described for a skip's log line; None if there is none."""
    for value in values:
        if isinstance(value, str) and _SURROGATE.search(value):
            code = ord(_SURROGATE.search(value).group())
            return f"{value[:40]!r} holds a lone surrogate (\\u{code:04x}), not a character"
    return None


def _skipped(skips: SkipCounter, role: str) -> str:
    """'skipped: reason count, ...' for one file's reasons, for an error message."""
    counts = [f"{reason} {count:,}" for reason, count in skips.as_dict().items() if reason.startswith(f"{role}_")]
    return "skipped: " + ", ".join(counts) if counts else "the file has no lines"


def _short_repr(value, limit: int = 60) -> str:
    """repr() cut to `limit` characters (a 5,000-digit number stays one log line)."""
    if isinstance(value, int) and value.bit_length() > 3 * limit:  # repr() of a huge int is slow or raises
        return f"an integer of about {int(value.bit_length() * 0.30103):,} digits"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _integer_time(value):
    """`unixReviewTime` as an int, or None: ints, integral floats and strings of digits within
    0..2**63 - 1 (int64 seconds) are accepted."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, str):
        digits = _DIGITS.fullmatch(value)  # not int(): 5,000 digits raise, and so does "²" (isdigit() is True)
        value = int(digits.group(1)) if digits else None
    if isinstance(value, int) and 0 <= value < 2**63:
        return value
    return None


def read_reviews(path, skips: SkipCounter, progress_every: int = PROGRESS_EVERY):
    """Reads a reviews file (JSON lines, either release) into events.

    Returns:
        events: DataFrame user_id (reviewerID), item_id (asin), timestamp (unixReviewTime, int64 seconds),
            in file order, duplicates kept (the shared `drop_duplicate_events` counts them).
        info: valid lines, and the release the fields point to (2014 reviews carry
            `helpful`; 2018 reviews carry `verified`/`vote`/`style`/`image` instead; else the file
            name: `reviews_<Cat>` is 2014).

    Raises:
        ValueError: no line of the file is a valid review.
    """
    path = Path(path)
    where = str(path)
    strings = {}  # one string object per distinct id, however many lines repeat it
    users, item_ids, times = [], [], []
    with_2014_keys = with_2018_keys = 0
    for line_no, text in read_lines(path, "reviews", skips, progress_every):
        try:
            record = json.loads(text)
        except _JSON_ERRORS as error:
            skips.skip("reviews_malformed_line", f"{where}:{line_no}", _parse_error(error))
            continue
        if not isinstance(record, dict):
            skips.skip("reviews_malformed_line", f"{where}:{line_no}", f"a JSON {type(record).__name__}, not an object")
            continue
        missing = [key for key in REVIEW_FIELDS if key not in record]
        bad_ids = [key for key in REVIEW_FIELDS[:2] if key in record
                   and not (isinstance(record[key], str) and record[key].strip())]
        if missing or bad_ids:
            detail = "; ".join(filter(None, [missing and f"no {', '.join(missing)}",
                                             bad_ids and f"empty or not a string: {', '.join(bad_ids)}"]))
            skips.skip("reviews_missing_field", f"{where}:{line_no}", detail)
            continue
        surrogate = _lone_surrogate(record["reviewerID"], record["asin"])
        if surrogate:
            skips.skip("reviews_malformed_line", f"{where}:{line_no}", surrogate)
            continue
        timestamp = _integer_time(record["unixReviewTime"])
        if timestamp is None:
            skips.skip("reviews_bad_timestamp", f"{where}:{line_no}",
                       f"unixReviewTime {_short_repr(record['unixReviewTime'])} is not an integer")
            continue
        user, item = record["reviewerID"].strip(), record["asin"].strip()
        users.append(strings.setdefault(user, user))
        item_ids.append(strings.setdefault(item, item))
        times.append(timestamp)
        with_2014_keys += any(key in record for key in KEYS_2014_ONLY)
        with_2018_keys += any(key in record for key in KEYS_2018_ONLY)
    if not times:
        raise ValueError(f"{path} has no valid review line ({_skipped(skips, 'reviews')}).")
    if with_2014_keys and not with_2018_keys:
        release, detected_by = "2014", "fields: 'helpful' (2014 reviews only)"
    elif with_2018_keys and not with_2014_keys:
        release, detected_by = "2018", f"fields: one of {list(KEYS_2018_ONLY)} (2018 reviews only)"
    elif path.name.startswith("reviews_"):
        release, detected_by = "2014", "file name reviews_<Category> (fields did not tell)"
    else:
        release, detected_by = "unknown", "neither fields nor file name tell"
    events = pd.DataFrame({"user_id": users, "item_id": item_ids, "timestamp": np.asarray(times, np.int64)})
    info = {"valid_lines": len(times), "release_detected": release, "detected_by": detected_by}
    log.info("%s: %s valid reviews; release %s (%s)", path.name, f"{len(times):,}", release, detected_by)
    return events, info


# ------------------------------------------------------------------------------------------- metadata


def clean_text(value):
    """Plain text of a metadata value: HTML removed, entities unescaped, whitespace collapsed.

    Strings are cleaned; lists (2018 `description`) have their cleaned parts joined by a space; numbers
    become strings; anything else, and text that ends up empty, is None.

    >>> clean_text('<span class="a">Case &amp; Cover</span>\\n  for <b>phones</b>')
    'Case & Cover for phones'
    >>> clean_text(["<p>Fits</p>", "", "a < b"])
    'Fits a < b'
    """
    if isinstance(value, (list, tuple)):
        parts = [clean_text(part) for part in value]
        value = " ".join(part for part in parts if part)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None
    value = _SPACE.sub(" ", strip_html(value)).strip()
    return value or None


def _categories(value):
    """2014 `categories` (list of lists) or 2018 `category` (list) -> unique cleaned names, in order, joined."""
    names = []
    stack = [value]  # depth-first, in order, without recursion (a line may nest lists deeply)
    while stack:
        node = stack.pop()
        if isinstance(node, (list, tuple)):
            stack.extend(reversed(node))
        else:
            name = clean_text(node)
            if name and name not in names:
                names.append(name)
    return ", ".join(names) or None


def parse_metadata_line(text: str, release: str = "auto"):
    """One metadata line -> (record, parser), parser being "json" or "python_literal".

    `release` 2018: strict JSON only; 2014: Python literal only (`ast.literal_eval`, which evaluates
    nothing: calls, names and attributes are rejected); auto: JSON, else Python literal.

    Raises:
        ValueError: the line is neither (the message says why).

    >>> parse_metadata_line("{'asin': '0000031852', 'title': 'Girls Ballet Tutu'}")
    ({'asin': '0000031852', 'title': 'Girls Ballet Tutu'}, 'python_literal')
    """
    if release != "2014":
        try:
            return json.loads(text), "json"
        except _JSON_ERRORS as error:
            if release == "2018":
                raise ValueError(_parse_error(error)) from None
    try:
        return ast.literal_eval(text.strip()), "python_literal"
    except _LITERAL_ERRORS as error:
        raise ValueError(_parse_error(error, "JSON or a Python literal" if release == "auto" else "a Python literal")
                         ) from None


def read_metadata(path, catalogue, skips: SkipCounter, release: str = "auto", progress_every: int = PROGRESS_EVERY):
    """Reads a metadata file (2014 Python literals or 2018 JSON lines), keeping catalogue items only.

    Args:
        path: the metadata file.
        catalogue: the item ids (asins) to keep; others are counted as `metadata_not_in_catalogue`.
        release: "2014", "2018" or "auto" (see `parse_metadata_line`).

    Returns:
        meta: DataFrame item_id plus the `TEXT_COLUMNS` (None where missing), one row per kept line
            (repeats included: `index_items` counts them).
        info: valid lines, how many lines each parser read, and the release that points to.

    Raises:
        ValueError: no line of the file is a valid metadata record.
    """
    path = Path(path)
    where = str(path)
    catalogue = set(catalogue)
    rows = []
    parsed = {"json": 0, "python_literal": 0}
    valid = 0
    for line_no, text in read_lines(path, "metadata", skips, progress_every):
        try:
            record, parser = parse_metadata_line(text, release)
        except ValueError as error:
            skips.skip("metadata_malformed_line", f"{where}:{line_no}", str(error))
            continue
        if not isinstance(record, dict):
            skips.skip("metadata_malformed_line", f"{where}:{line_no}", f"a {type(record).__name__}, not a dict")
            continue
        asin = record.get("asin")
        if not (isinstance(asin, str) and asin.strip()):
            skips.skip("metadata_missing_asin", f"{where}:{line_no}", f"asin is {asin!r}")
            continue
        asin = asin.strip()
        if asin in catalogue:
            row = {
                "item_id": asin,
                "title": clean_text(record.get("title")),
                "description": clean_text(record.get("description")),
                "categories": _categories(record.get("categories", record.get("category"))),
                "brand": clean_text(record.get("brand")),
            }
            surrogate = _lone_surrogate(*row.values())  # only the kept text matters
            if surrogate:
                skips.skip("metadata_malformed_line", f"{where}:{line_no}", surrogate)
                continue
        valid += 1
        parsed[parser] += 1
        if asin not in catalogue:
            skips.add("metadata_not_in_catalogue", 1)
            continue
        rows.append(row)
    if not valid:
        raise ValueError(f"{path} has no valid metadata line ({_skipped(skips, 'metadata')}).")
    if parsed["python_literal"] and not parsed["json"]:
        detected = "2014"
    elif parsed["json"] and not parsed["python_literal"]:
        detected = "2018"
    else:
        detected = "mixed"
        log.warning("%s mixes JSON (%d) and Python-literal (%d) lines", path.name, parsed["json"],
                    parsed["python_literal"])
    meta = pd.DataFrame(rows, columns=["item_id", *TEXT_COLUMNS])
    info = {"valid_lines": valid, "parsed_as": parsed, "release_detected": detected,
            "detected_by": "line syntax: Python dict literals are 2014, strict JSON is 2018"}
    log.info("%s: %s valid records, %s of catalogue items; release %s", path.name, f"{valid:,}", f"{len(meta):,}",
             detected)
    return meta, info


# ------------------------------------------------------------------------------------- image features


def _read_full(f, size):
    """Reads `size` bytes, fewer only at the end of the file."""
    parts, have = [], 0
    while have < size:
        part = f.read(size - have)
        if not part:
            break
        parts.append(part)
        have += len(part)
    return b"".join(parts)


def read_image_features(path, catalogue, skips: SkipCounter, chunk_records: int = IMAGE_CHUNK_RECORDS,
                        progress_every: int = PROGRESS_EVERY):
    """Streams McAuley's `.b` image features, keeping the first record of each catalogue item.

    The file is read `chunk_records` records at a time, so memory holds one chunk plus the kept
    vectors (at most one [4096] row per catalogue item). Records of other items are counted as
    `image_not_in_catalogue`, repeats of a kept item as `image_duplicate_ids`, an incomplete last record
    as `image_truncated_record` (logged with its byte offset).

    Returns:
        ids: the kept asins, in file order; vectors: float32 [len(ids), 4096]; info for the manifest.

    Raises:
        ValueError: the file holds no complete record, or its first record's ASIN is not ASCII letters
            and digits (not a `.b` file).
    """
    path = Path(path)
    size = path.stat().st_size
    catalogue = set(catalogue)
    vectors = np.empty((len(catalogue), IMAGE_FEATURE_DIM), np.float32)  # pages are touched only as filled
    ids, kept = [], set()
    records = 0
    started = time.monotonic()
    with open(path, "rb") as f:
        while True:
            data = _read_full(f, IMAGE_RECORD.itemsize * chunk_records)
            whole, rest = divmod(len(data), IMAGE_RECORD.itemsize)
            if whole:
                chunk = np.frombuffer(data, IMAGE_RECORD, count=whole)
                asins = [a.decode("ascii", "replace") for a in chunk["asin"]]
                if records == 0 and not (asins[0].isascii() and asins[0].isalnum()):
                    raise ValueError(
                        f"{path} does not look like an image-features .b file: its first record's ASIN is "
                        f"{bytes(chunk['asin'][0])!r}, not 10 ASCII letters and digits."
                    )
                for row, asin in enumerate(asins):
                    if asin not in catalogue:
                        skips.add("image_not_in_catalogue", 1)
                    elif asin in kept:
                        skips.add("image_duplicate_ids", 1)
                    else:
                        vectors[len(ids)] = chunk["vector"][row]
                        ids.append(asin)
                        kept.add(asin)
                if (records + whole) // progress_every > records // progress_every:
                    log.info("%s: %s records read (%.0f%% of the file) in %.0f s", path.name,
                             f"{records + whole:,}", 100.0 * f.tell() / max(size, 1), time.monotonic() - started)
                records += whole
            if rest:  # only at the end of the file: _read_full returns a short read only there
                offset = records * IMAGE_RECORD.itemsize
                skips.skip("image_truncated_record", f"{path}:byte {offset:,}",
                           f"last record has {rest:,} of {IMAGE_RECORD.itemsize:,} bytes")
            if len(data) < IMAGE_RECORD.itemsize * chunk_records:
                break
    if not records:
        raise ValueError(
            f"{path} holds no complete image-feature record ({size:,} bytes; a record is a 10-byte ASIN and "
            f"{IMAGE_FEATURE_DIM} float32, {IMAGE_RECORD.itemsize:,} bytes)."
        )
    log.info("%s: %s records read, %s of catalogue items, in %.1f s", path.name, f"{records:,}", f"{len(ids):,}",
             time.monotonic() - started)
    info = {"records": records, "records_kept": len(ids), "dim": IMAGE_FEATURE_DIM}
    return ids, vectors[: len(ids)], info


# ------------------------------------------------------------------------------------------------ CLI


def _text_fields(value: str) -> list:
    fields = [field.strip() for field in value.split(",") if field.strip()]
    unknown = [field for field in fields if field not in TEXT_COLUMNS]
    if not fields or unknown:
        raise argparse.ArgumentTypeError(f"choose a comma-separated list from {', '.join(TEXT_COLUMNS)}; got {value!r}")
    return fields


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.amazon",
        description="Amazon review data (2014 McAuley et al. or 2018 Ni et al.) -> dataset directory "
        "(items.parquet, interactions.parquet, features/*.npy, manifest.json).",
        epilog="Input that cannot be used is skipped and counted by reason (manifest 'skipped' and the summary): "
        "reviews_/metadata_ undecodable_line (not UTF-8), blank_line, malformed_line; reviews_missing_field, "
        "reviews_bad_timestamp, metadata_missing_asin, image_truncated_record, duplicates, and catalogue items "
        "without metadata or image record.",
    )
    source = parser.add_argument_group("input")
    source.add_argument("--reviews", required=True,
                        help="reviews JSON lines, .gz or plain: 2014 reviews_<Cat>[_5].json.gz "
                             "or 2018 <Cat>[_5].json.gz")
    source.add_argument("--meta",
                        help="item metadata meta_<Cat>.json.gz, .gz or plain (default: none, no text columns)")
    source.add_argument("--release", choices=("auto", "2014", "2018"), default="auto",
                        help="metadata syntax: 2014 Python dict literals, 2018 strict JSON, or auto: JSON, else a "
                        "Python literal, line by line (default: auto); the release found is kept in the manifest")
    source.add_argument("--text-fields", type=_text_fields, default="title", metavar="FIELDS",
                        help=f"comma-separated metadata columns that feed the text modality, from "
                        f"{', '.join(TEXT_COLUMNS)} (default: title; the paper used review/description text: pass "
                        "title,description to come closer). Items with no text there get presence False")
    source.add_argument("--image-features",
                        help="McAuley's image_features_<Cat>.b (10-byte ASIN + 4096 float32 per record): "
                        "a 4096-d image modality; not together with --images")
    add_common_arguments(parser)
    return parser


def _check_inputs(args) -> None:
    """Fails before hours of reading: missing inputs, an --out that would be refused at the end."""
    check_paths(args, [("--reviews", args.reviews), ("--meta", args.meta), ("--image-features", args.image_features)])


def _release(forced: str, detected: str, path) -> str:
    if forced == "auto":
        return detected
    if detected not in (forced, "unknown"):
        log.warning("--release %s, but %s looks like the %s release", forced, path, detected)
    return forced


def main(argv=None) -> Path:
    """Runs the pipeline; returns the dataset directory. Input errors raise ValueError/FileNotFoundError."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.images and args.image_features:
        parser.error("--images and --image-features both make the image modality; pass one of them.")
    if args.glove and not args.meta:
        parser.error("--glove needs --meta: the item texts come from the metadata file.")
    _check_inputs(args)

    skips = SkipCounter()
    events, reviews_info = read_reviews(args.reviews, skips)
    events = drop_duplicate_events(events, skips)
    events, filters = apply_filters(events, FilterSpec.from_args(args))
    if events.empty:
        raise ValueError(f"no interaction of {args.reviews} is left after the filters; loosen them.")
    catalogue = events["item_id"].astype(str).unique()
    sources = [{"role": "reviews", "path": str(Path(args.reviews).resolve()),
                "release": _release(args.release, reviews_info["release_detected"], args.reviews), **reviews_info}]

    meta = None
    if args.meta:
        meta, meta_info = read_metadata(args.meta, catalogue, skips, release=args.release)
        sources.append({"role": "metadata", "path": str(Path(args.meta).resolve()),
                        "release": _release(args.release, meta_info["release_detected"], args.meta), **meta_info})
    items, interactions = index_items(events, meta, skips)

    features = {}
    if args.image_features:
        ids, vectors, image_info = read_image_features(args.image_features, catalogue, skips)
        table = align_vectors(items["item_id"].astype(str).tolist(), ids, vectors, "image", skips)
        features["image"] = dataclasses.replace(
            table, how=f"McAuley's released CNN features ({IMAGE_FEATURE_DIM}-d) from {Path(args.image_features).name}")
        sources.append({"role": "image_features", "path": str(Path(args.image_features).resolve()),
                        "format": "10-byte ASIN + 4096 float32 (little-endian) per record", **image_info})
    elif args.images:
        features["image"] = image_modality(items, args.images, args.weights, args.image_batch_size)
        sources.append({"role": "images", "path": str(Path(args.images).resolve()), "weights": args.weights})
    if args.glove:
        features["text"] = text_modality(items, args.text_fields, args.glove, args.dim)
        sources.append({"role": "word_vectors", "path": str(Path(args.glove).resolve()),
                        "text_fields": args.text_fields})

    return finish(args, name=args.name, items=items, interactions=interactions, features=features,
                  sources=sources, filters=filters, skips=skips)


if __name__ == "__main__":
    sys.exit(run_main(main))
