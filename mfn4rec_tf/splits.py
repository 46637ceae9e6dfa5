"""Train / validation / test splits of user sequences: the protocols of docs/model.md#protocols.

Three protocols, each with a `validation` mode (model selection) and a `test` mode (touched once):

`paper` (MV-RNN's global time split, which the paper's baseline numbers come from)
    Let [t0, t1] be the time range of the (filtered) data. Validation mode: a user's training
    sequence is their interactions with time <= t0 + 0.6 (t1 - t0), their targets those in
    (0.6, 0.8]. Test mode: training <= 0.8 (train + validation, retrained), targets in (0.8, 1.0].
`user-ratio` (the paper's sentence, read literally)
    Per user, chronologically: the first floor(0.6 n) interactions train, up to floor(0.8 n)
    validation targets, the rest test targets; test mode trains on the first floor(0.8 n).
`leave-one-out` (today's standard)
    Validation mode: train on all but the last two, target the second to last; test mode: train on
    all but the last, target the last.

`cold-items` (new items without history, docs/model.md#new-items)
    A seeded random fraction of the catalogue, the cold items (`cold_item_set`), is treated as
    items added after training. The split is `leave-one-out`'s with every event of a cold item
    removed from every model input: the training sequences (so a cold item is never a training
    input nor a training target, and its ID is never trained) and the evaluation histories. The
    validation and test targets are leave-one-out's, cold or not: the metrics are reported for the
    targets that are cold items, those that are warm, and all together (`Split.cold_items`). A user
    whose history holds only cold items has an empty history left, so is not evaluated (as below).

Targets are de-duplicated (first occurrence kept, order kept). A user with an empty training
sequence or no target is not evaluated in that mode, but their training sequence is still used for
fitting. Everything is deterministic: users in sorted order, each user's events by time (ties keep
the dataset's order).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

PROTOCOLS = ("paper", "user-ratio", "leave-one-out", "cold-items")
MODES = ("validation", "test")
PAPER_CUTS = {"validation": (0.6, 0.8), "test": (0.8, 1.0)}


@dataclass
class Split:
    """One protocol in one mode.

    Attributes:
        protocol, mode: what made it.
        train_sequences: one int32 array of item indices per user with a non-empty training part,
            chronological; the data to fit on.
        train_user_ids: the users of `train_sequences`.
        user_ids: the evaluated users (sorted).
        histories: per evaluated user, the sequence the model reads to rank (their training part).
        targets: per evaluated user, the de-duplicated int32 target items.
        cold_items: for the `cold-items` protocol, the sorted int32 cold item indices (absent from
            every training sequence and history); None for the other protocols.
    """

    protocol: str
    mode: str
    train_sequences: list
    train_user_ids: np.ndarray
    user_ids: np.ndarray
    histories: list
    targets: list
    cold_items: np.ndarray | None = None

    @property
    def num_train_events(self) -> int:
        return int(sum(len(s) for s in self.train_sequences))

    def summary(self) -> str:
        targets = sum(len(t) for t in self.targets)
        return (
            f"{self.protocol}/{self.mode}: {len(self.train_sequences):,} training sequences "
            f"({self.num_train_events:,} events); {len(self.user_ids):,} users evaluated with {targets:,} targets"
        )


def cold_item_set(num_items: int, fraction: float, seed: int = 0) -> np.ndarray:
    """The cold items of the `cold-items` protocol: `round(fraction * num_items)` (at least one) item
    indices of 1..num_items drawn without replacement by `numpy.random.default_rng(seed)`, sorted.

    Raises:
        ValueError: `fraction` is not in (0, 1), or it leaves no warm item.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction < 1.0:
        raise ValueError(f"`data.cold_fraction` must be a number in (0, 1). Received: {fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"`data.cold_seed` must be an integer. Received: {seed!r}")
    count = max(1, int(round(fraction * num_items)))
    if count >= num_items:
        raise ValueError(f"`data.cold_fraction` {fraction} makes all {num_items} items cold; no item is left to train.")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(np.arange(1, num_items + 1), size=count, replace=False)).astype(np.int32)


def make_split(interactions: pd.DataFrame, protocol: str, mode: str, cold_items=None) -> Split:
    """Splits (user_id, item_index, timestamp) interactions by `protocol` in `mode`.

    Args:
        interactions: one row per event; sorted or not (it is sorted by user, then time, stably).
        protocol: one of `PROTOCOLS`.
        mode: `"validation"` or `"test"`.
        cold_items: the cold item indices, for the `cold-items` protocol only (`cold_item_set`).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"`protocol` must be one of {PROTOCOLS}. Received: protocol={protocol!r}")
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}. Received: mode={mode!r}")
    if (protocol == "cold-items") != (cold_items is not None):
        raise ValueError("`cold_items` is needed by the cold-items protocol and only by it. Received: "
                         f"protocol={protocol!r}, cold_items={'None' if cold_items is None else 'given'}")
    if cold_items is not None:
        cold_items = np.unique(np.asarray(cold_items, np.int32))
    users, items, times = _sorted_columns(interactions)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    bounds = np.r_[starts, len(users)]
    if protocol == "paper":
        t0, t1 = times.min(), times.max()
        low, high = PAPER_CUTS[mode]
        train_until = t0 + low * (t1 - t0)
        target_until = t0 + high * (t1 - t0)

    train_sequences, train_users, eval_users, histories, targets = [], [], [], [], []
    for start, end in zip(bounds[:-1], bounds[1:]):
        seq = items[start:end]
        if protocol == "paper":
            user_times = times[start:end]
            n_train = int(np.searchsorted(user_times, train_until, side="right"))
            n_until = int(np.searchsorted(user_times, target_until, side="right"))
            train, target = seq[:n_train], seq[n_train:n_until]
        elif protocol == "user-ratio":
            n = len(seq)
            cut_valid, cut_test = int(np.floor(0.6 * n)), int(np.floor(0.8 * n))
            if mode == "validation":
                train, target = seq[:cut_valid], seq[cut_valid:cut_test]
            else:
                train, target = seq[:cut_test], seq[cut_test:]
        else:  # leave-one-out, cold-items
            cut = max(len(seq) - (2 if mode == "validation" else 1), 0)
            train, target = seq[:cut], seq[cut:cut + 1]
            if cold_items is not None:
                train = train[~np.isin(train, cold_items)]
        if len(train):
            train_sequences.append(train)
            train_users.append(users[start])
            if len(target):
                eval_users.append(users[start])
                histories.append(train)
                targets.append(_dedupe(target))
    return Split(
        protocol=protocol,
        mode=mode,
        train_sequences=train_sequences,
        train_user_ids=np.asarray(train_users, dtype=object),
        user_ids=np.asarray(eval_users, dtype=object),
        histories=histories,
        targets=targets,
        cold_items=cold_items,
    )


def _sorted_columns(interactions):
    for column in ("user_id", "item_index", "timestamp"):
        if column not in interactions.columns:
            raise ValueError(f"interactions have no {column!r} column (columns: {list(interactions.columns)})")
    frame = interactions[["user_id", "item_index", "timestamp"]].copy()
    frame["user_id"] = frame["user_id"].astype(str)
    frame = frame.sort_values(["user_id", "timestamp"], kind="stable")
    return (
        frame["user_id"].to_numpy(dtype=object),
        frame["item_index"].to_numpy(dtype=np.int32),
        frame["timestamp"].to_numpy(dtype=np.int64),
    )


def _dedupe(values):
    _, first = np.unique(values, return_index=True)
    return values[np.sort(first)]
