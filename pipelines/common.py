"""Steps every pipeline shares: skip accounting, de-duplication, the paper's filters, item indexing,
feature alignment, and writing the dataset directory with a summary.

A pipeline (`amazon`, `movielens`, `generic`) reads its raw files into two frames, then composes::

    events = drop_duplicate_events(events, skips)        # user_id, item_id, timestamp
    events, filters = apply_filters(events, FilterSpec.from_args(args))
    items, interactions = index_items(events, item_meta, skips)
    features = {"text": text_modality(items, ["title"], args.glove, args.dim), ...}
    finish(args, name=..., items=items, interactions=interactions, features=features, ...)
"""

from __future__ import annotations

import argparse
import collections
import logging
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from mfn4rec_tf.dataset import FeatureTable, write_dataset

log = logging.getLogger("pipelines")

SECONDS_PER_YEAR = 365.25 * 24 * 3600


class SkipCounter:
    """Counts input that was skipped, by reason, and logs the first few of each reason with where it was.

    Example:

    >>> skips = SkipCounter()
    >>> skips.skip("malformed_line", "reviews.json:3", "not JSON")
    >>> skips.add("duplicate_events", 2)
    >>> dict(skips.counts)
    {'malformed_line': 1, 'duplicate_events': 2}
    """

    def __init__(self, log_first: int = 5, logger: logging.Logger = log):
        self.counts = collections.Counter()
        self.log_first = log_first
        self.logger = logger

    def skip(self, reason: str, where: str, detail: str = "") -> None:
        """Counts one skipped record; logs it while fewer than `log_first` of this reason were logged."""
        self.counts[reason] += 1
        if self.counts[reason] <= self.log_first:
            self.logger.warning("skipped (%s) at %s%s", reason, where, f": {detail}" if detail else "")
        elif self.counts[reason] == self.log_first + 1:
            self.logger.warning("more skipped (%s); only counting from now on", reason)

    def add(self, reason: str, count: int) -> None:
        """Counts `count` records skipped in bulk (already summarised by the caller)."""
        if count:
            self.counts[reason] += int(count)

    def as_dict(self) -> dict:
        return {reason: int(count) for reason, count in sorted(self.counts.items())}


def drop_duplicate_events(events: pd.DataFrame, skips: SkipCounter) -> pd.DataFrame:
    """Normalises column types and drops repeated (user_id, item_id, timestamp) events, counting them."""
    events = events.astype({"user_id": "string", "item_id": "string"})
    events["timestamp"] = pd.to_numeric(events["timestamp"], errors="coerce")
    bad_time = events["timestamp"].isna()
    skips.add("bad_timestamp", int(bad_time.sum()))
    events = events[~bad_time].astype({"timestamp": "int64"})
    missing = (events["user_id"].isna() | events["item_id"].isna()
               | (events["user_id"] == "") | (events["item_id"] == ""))
    skips.add("missing_user_or_item", int(missing.sum()))
    events = events[~missing]
    duplicated = events.duplicated(["user_id", "item_id", "timestamp"], keep="first")
    skips.add("duplicate_events", int(duplicated.sum()))
    return events[~duplicated].reset_index(drop=True)


@dataclass(frozen=True)
class FilterSpec:
    """The paper's filters (Sec. 4.1, MV-RNN's data handling), each optional, applied in this order:

    1. `last_years`: keep interactions in the last `last_years` years of the data's time range;
    2. `min_item`: keep items with at least this many interactions;
    3. `min_user` / `max_user`: keep users with this many interactions (the paper: 5 to 100;
       "sequences longer than 100 removed");
    4. `sample_users`: keep a random fraction of the remaining users, each with their whole history
       (not one of the paper's filters: a smaller copy of a large dataset to try settings on; the
       draw is fixed by `sample_seed` and the sorted user ids, so it is the same on every machine).

    One pass, not iterated to a fixed point: users are filtered last, so every kept user has
    `min_user..max_user` interactions, while an item may fall below `min_item` after step 3 or 4.
    """

    last_years: float | None = None
    min_item: int | None = None
    min_user: int | None = None
    max_user: int | None = None
    sample_users: float | None = None
    sample_seed: int = 0

    def __post_init__(self):
        if self.sample_users is not None and not 0 < self.sample_users <= 1:
            raise ValueError(f"--sample-users must be a fraction in (0, 1]; got {self.sample_users}.")

    @classmethod
    def paper(cls):
        return cls(last_years=2.0, min_item=5, min_user=5, max_user=100)

    @classmethod
    def from_args(cls, args):
        explicit = cls(args.last_years, args.min_item, args.min_user, args.max_user)
        if args.paper_filters:
            if not explicit.is_empty():
                raise ValueError("--paper-filters sets --last-years, --min-item, --min-user and --max-user; "
                                 "give either it or those options, not both.")
            explicit = cls.paper()
        return replace(explicit, sample_users=getattr(args, "sample_users", None),
                       sample_seed=getattr(args, "sample_seed", 0))

    def is_empty(self):
        """Whether none of the paper's four filters is set (the user sample is not one of them)."""
        return all(getattr(self, name) is None for name in ("last_years", "min_item", "min_user", "max_user"))


def apply_filters(events: pd.DataFrame, spec: FilterSpec) -> tuple[pd.DataFrame, list[dict]]:
    """Applies `spec` to (user_id, item_id, timestamp) events; returns the kept events and a report per filter."""
    report = []

    def record(name, parameters, before):
        report.append(
            {
                "filter": name,
                **parameters,
                "interactions_removed": int(len(before) - len(events)),
                "users_removed": int(before["user_id"].nunique() - events["user_id"].nunique()),
                "items_removed": int(before["item_id"].nunique() - events["item_id"].nunique()),
            }
        )

    if spec.last_years is not None:
        before = events
        start = events["timestamp"].max() - spec.last_years * SECONDS_PER_YEAR
        events = events[events["timestamp"] >= start]
        record("last_years", {"years": spec.last_years, "from_timestamp": int(np.ceil(start))}, before)
    if spec.min_item is not None:
        before = events
        counts = events.groupby("item_id")["user_id"].transform("size")
        events = events[counts >= spec.min_item]
        record("min_item", {"min": spec.min_item}, before)
    if spec.min_user is not None or spec.max_user is not None:
        before = events
        counts = events.groupby("user_id")["item_id"].transform("size")
        keep = pd.Series(True, index=events.index)
        if spec.min_user is not None:
            keep &= counts >= spec.min_user
        if spec.max_user is not None:
            keep &= counts <= spec.max_user
        events = events[keep]
        record("user_length", {"min": spec.min_user, "max": spec.max_user}, before)
    if spec.sample_users is not None:
        before = events
        users = np.sort(events["user_id"].astype(str).unique())
        count = max(1, int(round(spec.sample_users * len(users)))) if len(users) else 0
        chosen = np.random.default_rng(spec.sample_seed).choice(users, size=count, replace=False)
        events = events[events["user_id"].astype(str).isin(chosen)]
        record("user_sample", {"fraction": spec.sample_users, "seed": spec.sample_seed, "users_kept": count}, before)
    for step in report:
        log.info("filter %s: removed %d interactions, %d users, %d items", step["filter"],
                 step["interactions_removed"], step["users_removed"], step["items_removed"])
    return events.reset_index(drop=True), report


def index_items(events: pd.DataFrame, item_meta: pd.DataFrame | None, skips: SkipCounter):
    """Numbers the catalogue and joins item metadata.

    The catalogue is the items that occur in `events`, numbered 1..N in sorted item_id order
    (0 is padding). Metadata rows for items outside the catalogue are dropped (counted as
    `metadata_not_in_catalogue`, not a skip of bad input); catalogue items without metadata are kept
    with missing text (counted as `items_without_metadata`); repeated metadata rows keep the first.

    Returns:
        items: item_index, item_id and the metadata columns; interactions: user_id, item_index, timestamp.
    """
    catalogue = np.sort(events["item_id"].astype(str).unique())
    items = pd.DataFrame({"item_index": np.arange(1, len(catalogue) + 1, dtype="int32"), "item_id": catalogue})
    if item_meta is not None:
        meta = item_meta.astype({"item_id": "string"})
        duplicated = meta["item_id"].duplicated(keep="first")
        skips.add("duplicate_item_metadata", int(duplicated.sum()))
        meta = meta[~duplicated]
        in_catalogue = meta["item_id"].isin(catalogue)
        skips.add("metadata_not_in_catalogue", int((~in_catalogue).sum()))
        items = items.merge(meta[in_catalogue].astype({"item_id": object}), on="item_id", how="left")
        skips.add("items_without_metadata", int(len(catalogue) - in_catalogue.sum()))
    index_of = pd.Series(items["item_index"].to_numpy(), index=items["item_id"].to_numpy())
    interactions = pd.DataFrame(
        {
            "user_id": events["user_id"].astype(str).to_numpy(),
            "item_index": index_of.loc[events["item_id"].astype(str).to_numpy()].to_numpy().astype("int32"),
            "timestamp": events["timestamp"].to_numpy().astype("int64"),
        }
    )
    return items, interactions


def align_vectors(catalogue_ids, ids, vectors, name: str, skips: SkipCounter) -> FeatureTable:
    """Puts per-item vectors (any order, any superset of items) into catalogue order.

    Args:
        catalogue_ids: item ids in item-index order (index 1 first).
        ids: item ids of the rows of `vectors`.
        vectors: [len(ids), dim] array.
        name: modality name, for messages.

    Returns:
        A `FeatureTable` [N + 1, dim] with zero rows (and present False) for items without a vector
        and for vectors with NaN/inf values (counted as `<name>_non_finite`); repeated ids keep the first.
    """
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or len(vectors) != len(ids):
        raise ValueError(
            f"{name} vectors must be a [rows, dim] matrix with one row per id; got shape {vectors.shape} "
            f"for {len(ids)} ids."
        )
    position = {}
    for row, item_id in enumerate(map(str, ids)):
        position.setdefault(item_id, row)
    skips.add(f"{name}_duplicate_ids", len(ids) - len(position))
    values = np.zeros((len(catalogue_ids) + 1, vectors.shape[1]), np.float32)
    present = np.zeros(len(catalogue_ids) + 1, bool)
    rows = np.array([position.get(str(i), -1) for i in catalogue_ids])
    found = rows >= 0
    values[1:][found] = vectors[rows[found]]
    finite = np.isfinite(values).all(axis=1)
    skips.add(f"{name}_non_finite", int((found & ~finite[1:]).sum()))
    values[~finite] = 0.0
    present[1:] = found & finite[1:]
    skips.add(f"{name}_missing", int((~found).sum()))
    return FeatureTable(values, present, how=f"precomputed {vectors.shape[1]}-d vectors")


def item_texts(items: pd.DataFrame, columns) -> list:
    """One text per catalogue item: the given columns joined by ". " (missing parts left out)."""
    columns = [c for c in columns if c in items.columns]
    texts = []
    for row in items[columns].itertuples(index=False):
        parts = [str(v).strip() for v in row if isinstance(v, str) and v.strip()]
        texts.append(". ".join(parts) if parts else None)
    return texts


def text_modality(items: pd.DataFrame, columns, glove, dim=None, progress=True) -> FeatureTable:
    """TF-IDF-weighted mean of word vectors over the items' text (see `pipelines.text_features`)."""
    from pipelines.text_features import load_word_vectors, text_features

    word_vectors = load_word_vectors(glove, dim=dim)
    values, present, report = text_features(item_texts(items, columns), word_vectors, progress=progress)
    log.info("text features:\n%s", report.summary())
    how = f"TF-IDF-weighted mean of {word_vectors.dim}-d word vectors from {Path(glove).name} over {list(columns)}"
    return _padded_table(values, present, how, report)


def image_modality(items: pd.DataFrame, folder, weights="imagenet", batch_size=16, progress=True) -> FeatureTable:
    """VGG-16 1000-way outputs of `<folder>/<item_id>.jpg|png` (see `pipelines.image_features`)."""
    from pipelines.image_features import find_images, image_features

    paths = find_images(folder, items["item_id"].astype(str).tolist())
    values, present, report = image_features(paths, weights=weights, batch_size=batch_size, progress=progress)
    log.info("image features:\n%s", report.summary())
    return _padded_table(values, present, f"VGG-16 (weights={weights}) 1000-way output of images in {folder}", report)


def _padded_table(values, present, how, report) -> FeatureTable:
    """Per-item rows (item index 1..N) -> a FeatureTable with the zero padding row 0 in front."""
    table = np.zeros((len(values) + 1, values.shape[1]), np.float32)
    table[1:] = values
    return FeatureTable(table, np.r_[False, present], how=how, details=asdict(report))


def add_common_arguments(parser: argparse.ArgumentParser, text=True, images=True) -> None:
    """Output, filter and feature options shared by every pipeline."""
    out = parser.add_argument_group("output")
    out.add_argument("--out", required=True, help="dataset directory to write")
    out.add_argument("--name", help="dataset name in the manifest (default: the --out folder's name)")
    out.add_argument("--overwrite", action="store_true", help="replace an existing dataset directory")
    filters = parser.add_argument_group("filters (applied in this order; none by default)")
    filters.add_argument("--paper-filters", action="store_true",
                         help="the paper's: --last-years 2 --min-item 5 --min-user 5 --max-user 100")
    filters.add_argument("--last-years", type=float, help="keep the last N years of the data's time range")
    filters.add_argument("--min-item", type=int, help="keep items with at least N interactions")
    filters.add_argument("--min-user", type=int, help="keep users with at least N interactions")
    filters.add_argument("--max-user", type=int, help="keep users with at most N interactions")
    filters.add_argument("--sample-users", type=float, metavar="FRACTION",
                         help="then keep this random fraction of the users, each with their whole history "
                              "(a smaller copy to try settings on; not one of --paper-filters)")
    filters.add_argument("--sample-seed", type=int, default=0,
                         help="seed of the --sample-users draw (default: %(default)s)")
    if text:
        group = parser.add_argument_group("text features (TF-IDF-weighted mean of word vectors)")
        group.add_argument("--glove", help="word vectors in GloVe text format (no text modality without it)")
        group.add_argument("--dim", type=int, help="expected word-vector width, e.g. 100 (checked against --glove)")
    if images:
        group = parser.add_argument_group("image features (VGG-16, 1000-way output)")
        group.add_argument("--images", help="folder of <item_id>.jpg|png images (no image modality without it)")
        group.add_argument("--weights", default="imagenet",
                           help="VGG-16 weights: imagenet (downloads), a local weights file, or none "
                                "(default: %(default)s)")
        group.add_argument("--image-batch-size", type=int, default=16,
                           help="images per VGG-16 batch (default: %(default)s)")


def check_paths(args, files=()) -> None:
    """Fails before any reading (which can take hours on real data): the input files in `files`
    (`(option, path)` pairs; None = not given), `--glove`, the `--images` folder, and an `--out`
    that would be refused at the end."""
    for option, value in [*files, ("--glove", getattr(args, "glove", None))]:
        if value is not None and not Path(value).is_file():
            raise FileNotFoundError(f"{option} {value} does not exist (or is not a file).")
    images = getattr(args, "images", None)
    if images is not None and not Path(images).is_dir():
        raise FileNotFoundError(f"--images {images} is not a folder.")
    if Path(args.out).exists() and not args.overwrite:
        raise ValueError(f"--out {args.out} already exists; pass --overwrite to replace it.")


def row_line_numbers(num_rows, bad_lines, first_line):
    """File line number of each table row: the lines from `first_line` on that are not in `bad_lines`
    (lines a reader rejected), so a skip can name `file:line`."""
    bad = np.asarray(sorted(n for n in bad_lines if n is not None), dtype=np.int64)
    candidates = np.arange(first_line, first_line + num_rows + len(bad), dtype=np.int64)
    return np.setdiff1d(candidates, bad, assume_unique=True)[:num_rows]


def finish(args, *, name, items, interactions, features, sources, filters, skips: SkipCounter) -> Path:
    """Writes the dataset directory and prints a summary of what was made and what was skipped."""
    path = write_dataset(
        args.out,
        name=name or Path(args.out).name,
        items=items,
        interactions=interactions,
        features=features,
        sources=sources,
        filters=filters,
        skipped=skips.as_dict(),
        overwrite=args.overwrite,
    )
    lines = [
        f"Dataset written to {path}",
        f"  users {interactions['user_id'].nunique():,}  items {len(items):,}  interactions {len(interactions):,}",
    ]
    for modality, table in features.items():
        have = int(table.present[1:].sum()) if table.present is not None else len(items)
        lines.append(f"  modality {modality}: {table.values.shape[1]}-d, {have:,} of {len(items):,} items have it")
    for step in filters:
        lines.append(f"  filter {step['filter']}: -{step['interactions_removed']:,} interactions, "
                     f"-{step['users_removed']:,} users, -{step['items_removed']:,} items")
    for reason, count in skips.as_dict().items():
        lines.append(f"  skipped {reason}: {count:,}")
    print("\n".join(lines))
    return path


def run_main(main_function, argv=None) -> int:
    """Runs a pipeline's `main`, turning expected input errors into one clear line and exit status 2."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        main_function(argv)
    except (ValueError, OSError, RuntimeError) as error:  # OSError: missing, unreadable or unwritable files
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
