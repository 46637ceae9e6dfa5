"""A generated dataset at the paper's Amazon Clothing scale, with the demo's planted structure.

    python benchmarks/clothing_data.py [--out DIR] [--seed 0] [--scale 1.0] [--overwrite]
        [--items N] [--users U] [--interactions I] [--no-features]

Writes a dataset directory (`mfn4rec_tf.dataset.write_dataset`) with the sizes of the paper's
Table 2 for Amazon Clothing: 22,586 users, 38,840 items and exactly 272,949 interactions, a 1000-d
`image` and a 100-d `text` modality (the widths of the paper's VGG-16 and GloVe features). Every
item has both (no presence input), as in the paper. `--scale s` multiplies the three counts (each
rounded, at least 1) and keeps the widths, for a smaller copy. Same seed, same bytes.

`--items`, `--users` and `--interactions` replace the (scaled) counts, and `--no-features` writes an
item-ID-only dataset: no image or text table is drawn at all (at 1,000,000 items the 1000-d image
table alone would be 4 GB in float32). Its catalogue is drawn from the same stream as the demo's, so
an ID-only copy has the same styles, brands, style successors and sequences as the featured copy of
the same seed and counts. A 1M-item catalogue for the large-catalogue benchmark:

    python benchmarks/clothing_data.py --out /tmp/big1m --items 1000000 --users 25000 \
        --interactions 300000 --no-features

How it is drawn:

- The catalogue (items, their style and brand, image = style centroid + noise, text = brand
  centroid + noise) is `mfn4rec_tf.demo.generate`'s, with `CATALOGUE` as its spec.
- The demo draws each user's length uniformly, so its total is random; here the lengths are drawn
  so that the total is exact: 5 + a geometric draw with the paper's mean of 12.08 items a user,
  capped at 100 (the paper keeps users with 5-100 interactions), then single events are added to
  or taken from randomly chosen users until the sum is the target. The distribution is skewed like
  a real one (most users near 5, a tail towards 100).
- The sequences follow the demo's rules (vectorised over users): the next item's style is the
  successor of the current style with probability `style_follow`, its brand is the user's favourite
  with probability `brand_loyalty`, and the item is drawn by popularity (`POPULARITY_TAIL`) within
  that style and brand (within the style if no item has both, within the catalogue if the style has
  none). So the image
  of the current item predicts the next item's style and the texts of the history predict its
  brand, as in the demo: trained models learn something, and the ranking figures are not of noise.
- Timestamps spread each user's events over most of two years, so the `paper` protocol's time
  split leaves most users with training and target events.

Peak memory at full scale is about 1 GB (the demo's generator draws the 38,841 x 1000 image table
in float64 before storing it as float32: 155 MB on disk); it takes well under a minute.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mfn4rec_tf.dataset import DatasetError, load_dataset, write_dataset
from mfn4rec_tf.demo import START, TWO_YEARS, DemoSpec, generate

CLOTHING = {"users": 22_586, "items": 38_840, "interactions": 272_949}
"""Amazon Clothing in the paper's Table 2."""

IMAGE_DIM, TEXT_DIM = 1000, 100
MIN_LENGTH, MAX_LENGTH = 5, 100
"""The paper's user filter: 5 to 100 interactions a user."""

CATALOGUE = DemoSpec(num_users=0, num_items=CLOTHING["items"], styles=24, brands=32, image_dim=IMAGE_DIM,
                     text_dim=TEXT_DIM, missing_image=0.0)
"""The demo spec whose catalogue (features, styles, brands) is used; its walk strengths drive the sequences.
More styles and brands than the demo's 12 and 8, so that a (style, brand) pool holds about 50 items."""

POPULARITY_TAIL = 1.2
"""Pareto tail index of the item popularity (1 + Pareto(1.2)). The demo's Zipf(1.6) would leave half
of 38,840 items unseen; with this about 90% are interacted with and the top tenth of a (style, brand)
pool gets about half of its interactions, as in review data (whose items the paper filters to >= 5)."""

VERSION = 1


def scaled_counts(scale: float, **overrides) -> dict:
    """The users, items and interactions at `scale` times the Clothing counts (rounded, at least 1),
    with any of them replaced by `overrides` (`users=`, `items=`, `interactions=`; `None` keeps it).

    Raises:
        ValueError: `scale` is not a positive number, an override is not a positive integer, or the
            counts cannot hold every user between `MIN_LENGTH` and `MAX_LENGTH` interactions.
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0 or not np.isfinite(scale):
        raise ValueError(f"`scale` must be a positive number. Received: scale={scale!r}")
    counts = {key: max(1, int(round(value * scale))) for key, value in CLOTHING.items()}
    for key, value in overrides.items():
        if key not in counts:
            raise ValueError(f"Unknown count {key!r}; expected one of {sorted(counts)}.")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"`{key}` must be a positive integer. Received: {key}={value!r}")
        counts[key] = int(value)
    if counts["items"] < 2:
        raise ValueError(f"`scale`={scale} leaves {counts['items']} item; at least 2 are needed.")
    if not MIN_LENGTH * counts["users"] <= counts["interactions"] <= MAX_LENGTH * counts["users"]:
        raise ValueError(f"`scale`={scale} leaves {counts['interactions']} interactions for {counts['users']} "
                         f"users; each needs {MIN_LENGTH}-{MAX_LENGTH}.")
    return counts


def id_catalogue(spec: DemoSpec):
    """The catalogue of `mfn4rec_tf.demo.generate(spec)` without its feature tables: the same items
    frame and the same `truth` (style, brand, successor), drawn from the same stream in the same order
    (the demo's unused Zipf popularity is drawn too, so that the successor map matches), but no image
    or text table is ever drawn. Memory is O(items), not O(items x width).

    Returns:
        `(items, truth)` as `generate` returns them.
    """
    rng = np.random.default_rng(spec.seed)
    style = rng.integers(0, spec.styles, spec.num_items)
    brand = rng.integers(0, spec.brands, spec.num_items)
    rng.zipf(1.6, spec.num_items)  # the demo's popularity: not used here, drawn to keep the stream aligned
    successor = rng.permutation(spec.styles)
    index = np.arange(1, spec.num_items + 1)
    items = pd.DataFrame({
        "item_index": index.astype(np.int32),
        "item_id": [f"demo{i:05d}" for i in index],
        "title": [f"Brand{b} Style{s:02d} item {i:04d}" for i, (s, b) in enumerate(zip(style, brand), start=1)],
    })
    return items, {"style": np.r_[-1, style], "brand": np.r_[-1, brand], "successor": successor}


def draw_lengths(rng: np.random.Generator, users: int, total: int, low: int = MIN_LENGTH,
                 high: int = MAX_LENGTH) -> np.ndarray:
    """Per-user sequence lengths in [low, high] that sum to exactly `total`.

    `low` + a geometric draw with mean `total / users - low`, capped at `high`; then one event is
    added to (or taken from) each of randomly chosen users that can take it, until the sum is exact.

    Raises:
        ValueError: `total` is outside `[low * users, high * users]`.
    """
    if not low * users <= total <= high * users:
        raise ValueError(f"{total} interactions cannot be spread over {users} users with {low}-{high} each.")
    extra = total / users - low  # mean events beyond the minimum
    lengths = np.full(users, low, np.int64)
    if extra > 0:
        lengths += np.minimum(rng.geometric(1.0 / (extra + 1.0), users) - 1, high - low)
    while (gap := total - int(lengths.sum())) != 0:
        room = np.flatnonzero(lengths < high) if gap > 0 else np.flatnonzero(lengths > low)
        chosen = rng.choice(room, size=min(abs(gap), len(room)), replace=False)
        lengths[chosen] += 1 if gap > 0 else -1
    return lengths


def draw_items(rng, item_style, item_brand, popularity, event_style, event_brand, brands):
    """Item indices (1-based) drawn by popularity within each event's (style, brand) pool.

    Falls back to the style's pool where no item has both, and to the whole catalogue where the style
    has no item. Items are sorted by (style, brand), so every pool is one contiguous slice of the
    sorted catalogue; a draw is a uniform number mapped through the cumulative popularity of the slice.
    """
    key = item_style * brands + item_brand  # [N]
    order = np.argsort(key, kind="stable")  # [N] item positions sorted by (style, brand)
    sorted_key = key[order]
    mass = np.concatenate([[0.0], np.cumsum(popularity[order])])  # [N + 1] popularity before position i
    styles = int(max(item_style.max(), event_style.max())) + 1
    cells = np.arange(styles * brands)
    cell_lo, cell_hi = np.searchsorted(sorted_key, cells, "left"), np.searchsorted(sorted_key, cells, "right")
    first_cells = np.arange(styles) * brands
    style_lo = np.searchsorted(sorted_key, first_cells, "left")
    style_hi = np.searchsorted(sorted_key, first_cells + brands, "left")

    cell = event_style * brands + event_brand  # [E]
    lo, hi = cell_lo[cell], cell_hi[cell]
    empty = lo == hi
    lo[empty], hi[empty] = style_lo[event_style[empty]], style_hi[event_style[empty]]
    empty = lo == hi
    lo[empty], hi[empty] = 0, len(order)
    target = mass[lo] + rng.random(len(cell)) * (mass[hi] - mass[lo])  # [E] a point inside the pool's mass
    position = np.clip(np.searchsorted(mass, target, "right") - 1, lo, hi - 1)
    return order[position].astype(np.int32) + 1


def generate_clothing(seed: int = 0, scale: float = 1.0, progress=print, *, counts: dict | None = None,
                      features: bool = True):
    """Draws the Clothing-scale data; see the module docstring.

    Args:
        seed: generator seed (the catalogue and the sequences are both drawn from it).
        scale: multiplies the Clothing counts (`scaled_counts`).
        progress: called with one line per stage (default `print`; `None` for silence).
        counts: overrides of the scaled counts (`users`, `items`, `interactions`), as `scaled_counts` takes.
        features: draw the image and text tables; `False`: item IDs only (`id_catalogue`), and
            `features` comes back empty.

    Returns:
        `(items, interactions, features, truth)` as `mfn4rec_tf.demo.generate` returns them; `truth`
        has `style` and `brand` by item index (-1 for padding) and the style `successor` map.
    """
    say = progress or (lambda line: None)
    counts = scaled_counts(scale, **(counts or {}))
    started = time.perf_counter()
    spec = dataclasses.replace(CATALOGUE, seed=seed, num_items=counts["items"])
    if features:
        say(f"catalogue: {counts['items']:,} items, image {IMAGE_DIM}-d, text {TEXT_DIM}-d ...")
        items, _, features, truth = generate(spec)
    else:
        say(f"catalogue: {counts['items']:,} items, item IDs only (no feature tables) ...")
        (items, truth), features = id_catalogue(spec), {}
    say(f"  done in {time.perf_counter() - started:.1f}s")

    rng = np.random.default_rng([seed, VERSION])  # a stream apart from the catalogue's
    users, total = counts["users"], counts["interactions"]
    lengths = draw_lengths(rng, users, total)
    say(f"sequences: {users:,} users, {total:,} interactions (lengths {lengths.min()}-{lengths.max()}, "
        f"mean {lengths.mean():.2f}, median {np.median(lengths):.0f}) ...")
    item_style, item_brand = truth["style"][1:], truth["brand"][1:]
    popularity = 1.0 + rng.pareto(POPULARITY_TAIL, counts["items"])  # [N]
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])  # [U] first event of each user
    favourite = rng.integers(spec.brands, size=users)
    current = rng.integers(spec.styles, size=users)
    event_style = np.empty(total, np.int64)
    event_brand = np.empty(total, np.int64)
    for step in range(int(lengths.max())):
        active = np.flatnonzero(lengths > step)  # users with a step-th event
        n = len(active)
        if step:
            follow = rng.random(n) < spec.style_follow
            current[active] = np.where(follow, truth["successor"][current[active]], rng.integers(spec.styles, size=n))
        loyal = rng.random(n) < spec.brand_loyalty
        event_style[offsets[active] + step] = current[active]
        event_brand[offsets[active] + step] = np.where(loyal, favourite[active], rng.integers(spec.brands, size=n))
    item_index = draw_items(rng, item_style, item_brand, popularity, event_style, event_brand, spec.brands)

    owner = np.repeat(np.arange(users), lengths)  # [E] user of each event, events grouped by user
    start = rng.uniform(0.0, 0.15, users) * TWO_YEARS
    end = rng.uniform(0.85, 1.0, users) * TWO_YEARS
    raw = start[owner] + rng.random(total) * (end - start)[owner]
    stamps = raw[np.lexsort((raw, owner))].astype(np.int64) + START  # sorted within each user, in step order
    interactions = pd.DataFrame({
        "user_id": np.array([f"user{user:05d}" for user in range(users)])[owner],
        "item_index": item_index,
        "timestamp": stamps,
    })
    used = len(np.unique(item_index))
    say(f"  done in {time.perf_counter() - started:.1f}s; {used:,} of {counts['items']:,} items interacted with")
    return items, interactions, features, truth


def default_path(seed: int = 0, scale: float = 1.0) -> Path:
    """The cache directory of a generated copy: `$MFN4REC_HOME/clothing-v<version>-seed<seed>-x<scale>`
    (default home `~/.cache/mfn4rec_tf`)."""
    home = Path(os.environ.get("MFN4REC_HOME", Path.home() / ".cache" / "mfn4rec_tf"))
    return home / f"clothing-v{VERSION}-seed{seed}-x{scale:g}"


def write_clothing(path, seed: int = 0, scale: float = 1.0, overwrite: bool = False, progress=print, *,
                   counts: dict | None = None, features: bool = True) -> Path:
    """Generates the data (`generate_clothing`) and writes it as a dataset directory at `path`.

    `counts` and `features` are `generate_clothing`'s; with either given, the dataset's name and its
    manifest's source entry say so (the default dataset's bytes are unchanged)."""
    say = progress or (lambda line: None)
    path = Path(path)
    if path.exists() and not overwrite:
        raise DatasetError(f"{path} already exists; pass --overwrite to replace it.")
    overrides = {key: value for key, value in (counts or {}).items() if value is not None}
    items, interactions, tables, _ = generate_clothing(seed, scale, progress, counts=overrides, features=features)
    started = time.perf_counter()
    say(f"writing {path} ...")
    name = f"clothing-scale-seed{seed}-x{scale:g}"
    source = {"generator": "benchmarks/clothing_data.py", "version": VERSION, "seed": seed, "scale": scale,
              "catalogue": dataclasses.asdict(dataclasses.replace(CATALOGUE, seed=seed))}
    if overrides:
        name += "".join(f"-{key}{overrides[key]}" for key in sorted(overrides))
        source["counts"] = overrides
    if not features:
        name += "-ids"
        source["features"] = False
    write_dataset(
        path,
        name=name,
        items=items,
        interactions=interactions,
        features=tables,
        sources=[source],
        overwrite=overwrite,
    )
    say(f"  done in {time.perf_counter() - started:.1f}s")
    return path


def clothing_dataset(path=None, seed: int = 0, scale: float = 1.0, progress=print):
    """Opens the generated Clothing-scale dataset at `path` (default `default_path(seed, scale)`),
    generating it first if it is missing or does not have the expected counts."""
    path = Path(path) if path is not None else default_path(seed, scale)
    expected = scaled_counts(scale)
    if path.exists():
        try:
            dataset = load_dataset(path)
            if dataset.manifest["counts"] == expected:
                return dataset
            reason = f"counts {dataset.manifest['counts']} instead of {expected}"
        except DatasetError as error:
            reason = str(error)
        if progress:
            progress(f"regenerating {path}: {reason}")
    write_clothing(path, seed, scale, overwrite=True, progress=progress)
    return load_dataset(path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", help="dataset directory to write; None: the cache directory "
                        "$MFN4REC_HOME/clothing-v1-seed<seed>-x<scale>")
    parser.add_argument("--seed", type=int, default=0, help="generator seed")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the Clothing counts")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing directory at --out")
    parser.add_argument("--items", type=int, help="number of items, replacing the scaled Clothing count")
    parser.add_argument("--users", type=int, help="number of users, replacing the scaled Clothing count")
    parser.add_argument("--interactions", type=int, help="number of interactions, replacing the scaled count")
    parser.add_argument("--no-features", dest="features", action="store_false",
                        help="item IDs only: draw no image or text table")
    args = parser.parse_args(argv)
    counts = {"items": args.items, "users": args.users, "interactions": args.interactions}
    custom = any(value is not None for value in counts.values()) or not args.features
    try:
        scaled_counts(args.scale, **counts)
        if custom and not args.out:
            raise ValueError("--items, --users, --interactions and --no-features need --out (the cache "
                             "directory is for the Clothing-scale copies).")
        path = Path(args.out) if args.out else default_path(args.seed, args.scale)
        write_clothing(path, args.seed, args.scale, overwrite=args.overwrite, counts=counts, features=args.features)
    except ValueError as error:  # DatasetError is a ValueError
        parser.error(str(error))
    dataset = load_dataset(path)
    print(f"{dataset} at {dataset.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
