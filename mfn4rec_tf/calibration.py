"""The calibration of the cold-start head of `item_representation: id+knn` (docs/model.md#new-items).

The head (`KnnColdStart`) scores an item without a trained ID vector by
`mean_u + std_u · (offset + slope · s_i)`; `calibrate` ranks a split under every `(offset, slope)`
of a grid (`OFFSETS` x `SLOPES`, and "off") and keeps the best by validation Recall@20 over all
targets, or with `warm_tolerance` the best on the cold targets among the blends that keep that much
of the warm targets' Recall@20. `fit` calls it through `training.calibrate_split` for an `id+knn` run;
`python -m mfn4rec_tf.cold_start` (mfn4rec_tf/cold_start.py) for a finished run.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

OFFSETS = tuple(x / 2 for x in range(-12, 13))
"""The offsets tried: -6 to 6 by 0.5 (in standard deviations of the user's known-item logits)."""
SLOPES = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
"""The slopes tried (standard deviations per unit of feature similarity)."""
CALIBRATION_FILE = "cold_start.csv"
K = 20


@dataclass
class Calibration:
    """The outcome of `calibrate`.

    Attributes:
        offset, slope: the chosen blend (None, None: off).
        metric: what chose it: `recall@20` (over all validation targets), or the rule with a warm
            tolerance (`calibrate`'s `warm_tolerance`), or `given` (a blend set by hand).
        rows: one dict per pair tried, in order: `offset`, `slope` (None for off), the metric and
            `ndcg@20`, and per target group (`cold`, `warm`) the same under `<group>/`.
    """

    offset: float | None
    slope: float | None
    metric: str
    rows: list

    @property
    def chosen(self) -> dict:
        """The row of the chosen pair ({} when no grid was ranked)."""
        return next((row for row in self.rows if (row["offset"], row["slope"]) == (self.offset, self.slope)), {})

    def summary(self) -> dict:
        """`{"offset", "slope", "metric", "valid": the chosen row's metrics}` (for state.json)."""
        valid = {key: value for key, value in self.chosen.items() if key not in ("offset", "slope")}
        return {"offset": self.offset, "slope": self.slope, "metric": self.metric, "valid": valid}


def grid(offsets=OFFSETS, slopes=SLOPES) -> list:
    """The pairs `calibrate` tries: off first, then every `(offset, slope)`."""
    for name, values in (("offsets", offsets), ("slopes", slopes)):
        if not len(values) or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise ValueError(f"`{name}` must be a non-empty list of finite numbers. Received: {values!r}")
    return [(None, None)] + [(float(o), float(s)) for s in slopes for o in offsets]


def calibrate(model, batches, *, exclude_history=False, target_groups=None, offsets=OFFSETS, slopes=SLOPES,
              metric="recall@20", warm_tolerance=None, steps=None, progress=True) -> Calibration:
    """Chooses the blend of `model`'s cold-start head on `batches` and sets it.

    Args:
        model: an `id+knn` model in "last" output mode (`with_output_mode(model, "last")`).
        batches: `(inputs, targets)` batches as `metrics.evaluate` takes (the validation split).
        exclude_history: rank as `metrics.evaluate(..., exclude_history=...)` does.
        target_groups: optional `{name: (N + 1,) bool array}` (e.g. `cold`, `warm`), reported per pair.
        offsets, slopes: the grid (`grid`).
        metric: `recall@20` or `ndcg@20`, the metric (over all targets) that chooses.
        warm_tolerance: None (default) or a fraction in [0, 1): choose instead the pair with the best
            `metric` on the `cold` targets among those whose `metric` on the `warm` targets is at least
            `1 - warm_tolerance` times the head-off one's (needs both groups: the `cold-items` protocol).
        steps: the number of batches, for the progress bar.

    Returns:
        The `Calibration`; the head of `model` holds its blend.

    Raises:
        ValueError: `model` has no cold-start head, or a bad grid or metric.
    """
    import keras
    import numpy as np

    from mfn4rec_tf import metrics as ranking
    from mfn4rec_tf.heads import has_cold_start

    if not has_cold_start(model):
        raise ValueError(f"Model {model.name!r} has no cold-start head (`item_representation: id+knn`).")
    if metric not in (f"recall@{K}", f"ndcg@{K}"):
        raise ValueError(f"`metric` must be recall@{K} or ndcg@{K}. Received: {metric!r}")
    if warm_tolerance is not None:
        if isinstance(warm_tolerance, bool) or not isinstance(warm_tolerance, (int, float)) or not (
                0.0 <= warm_tolerance < 1.0):
            raise ValueError(f"`warm_tolerance` must be a fraction in [0, 1). Received: {warm_tolerance!r}")
        if not {"cold", "warm"} <= set(target_groups or {}):
            raise ValueError("`warm_tolerance` chooses on cold and warm targets: it needs the `cold-items` protocol "
                             "(target groups `cold` and `warm`).")
    pairs = grid(offsets, slopes)
    try:
        probe = keras.Model(model.input, [model.get_layer("last_valid_step").output,
                                          model.get_layer("last_valid_direction").output])
    except ValueError as error:
        raise ValueError(f"`model` must be in 'last' output mode (`with_output_mode(model, 'last')`): "
                         f"{error}") from None
    head, item_logits = model.get_layer("cold_start"), model.get_layer("item_logits")
    groups = {name: np.asarray(flags, bool) for name, flags in (target_groups or {}).items()}
    accumulators = [(ranking.RankingMetrics((K,)), {name: (flags, ranking.RankingMetrics((K,)))
                                                    for name, flags in groups.items()}) for _ in pairs]
    bar = keras.utils.Progbar(steps, unit_name="batch") if progress and steps else None
    for step, (inputs, targets) in enumerate(batches):
        user, directions = probe.predict_on_batch(inputs)
        logits = item_logits(user)
        similarity = head.similarity(directions)
        targets = ranking._check_items("targets", targets, int(np.shape(user)[0]), head.vocabulary_size - 1)
        ranks = _Rankings(logits, similarity, head.known, inputs["item_ids"] if exclude_history else None)
        for (offset, slope), (overall, parts) in zip(pairs, accumulators):
            ranking._update_all(overall, parts, ranks.top(offset, slope), targets)
        if bar is not None:
            bar.update(step + 1)
    rows = []
    for (offset, slope), (overall, parts) in zip(pairs, accumulators):
        row = {"offset": offset, "slope": slope}
        result = overall.result()
        row.update({key: result[key] for key in (f"recall@{K}", f"ndcg@{K}")})
        for name, (_, part) in parts.items():
            values = part.result()
            row.update({f"{name}/{key}": values[key] for key in (f"recall@{K}", f"ndcg@{K}")})
        rows.append(row)
    best = _choose(rows, metric, warm_tolerance)
    head.set_blend(best["offset"], best["slope"])
    edge = best["offset"] is not None and (best["offset"] in (min(offsets), max(offsets)) or
                                           best["slope"] in (min(slopes), max(slopes)))
    if edge:
        log.warning("The chosen cold-start blend (offset %g, slope %g) is at the edge of the grid; a wider grid "
                    "(--offsets, --slopes) may do better.", best["offset"], best["slope"])
    rule = metric if warm_tolerance is None else f"cold/{metric} with warm/{metric} >= {1 - warm_tolerance:g} x off's"
    return Calibration(best["offset"], best["slope"], rule, rows)


def _choose(rows, metric, warm_tolerance=None) -> dict:
    """The best row by `metric` (or, with `warm_tolerance`, by cold `metric` among the rows whose warm
    `metric` keeps `1 - warm_tolerance` of the first row's, head off); a tie keeps the earlier row."""
    key, allowed = metric, rows
    if warm_tolerance is not None:
        floor = (1.0 - warm_tolerance) * rows[0][f"warm/{metric}"]
        if not math.isfinite(floor):
            raise ValueError("`warm_tolerance` keeps a share of the warm targets' metric, and the split has no warm "
                             "target (every target is a new item).")
        key, allowed = f"cold/{metric}", [row for row in rows if row[f"warm/{metric}"] >= floor]
    best = allowed[0]
    for row in allowed[1:]:  # strictly better: a tie keeps the earlier pair (off first)
        if row[key] > best[key]:
            best = row
    return best


class _Rankings:
    """One batch's top-`K` lists under any blend, as `metrics.top_k_items` ranks the head's scores
    (`blend_scores`; ties to the lower index, -inf not a candidate, index 0 and `exclude` left out),
    without scoring the whole catalogue per blend: the known items' scores do not depend on the blend,
    so their top `K` is found once, and each blend ranks only the unknown items and merges the two lists."""

    def __init__(self, logits, similarity, known, exclude=None):
        import numpy as np
        import tensorflow as tf

        from mfn4rec_tf.baselines.feature_knn import known_moments

        self.mean, self.std = known_moments(logits, known)
        flags = np.asarray(known) > 0
        self.cold = np.flatnonzero(~flags)  # unknown items, ascending (index 0 is always known)
        scores = np.array(logits, np.float32)
        scores[:, ~flags] = -np.inf
        scores[:, 0] = -np.inf
        self.blocked = np.zeros(scores.shape, bool)
        if exclude is not None:
            self.blocked[np.arange(len(scores))[:, None], np.asarray(exclude, np.int64)] = True
            scores[self.blocked] = -np.inf
        kk = min(K, scores.shape[1])
        values, items = tf.math.top_k(scores, k=kk, sorted=True)
        self.known_values, self.known_items = values.numpy(), items.numpy()
        self.similarity = tf.gather(similarity, self.cold, axis=1)
        self.cold_blocked = self.blocked[:, self.cold]

    def top(self, offset, slope):
        import numpy as np
        import tensorflow as tf

        from mfn4rec_tf.baselines.feature_knn import OFF, cold_scores

        values, items = self.known_values, self.known_items
        if len(self.cold):
            cold = np.array(cold_scores(self.mean, self.std, self.similarity, OFF if offset is None else offset,
                                        slope or 0.0), np.float32)
            cold[self.cold_blocked] = -np.inf
            cold_values, cold_at = tf.math.top_k(cold, k=min(K, cold.shape[1]), sorted=True)
            values = np.concatenate([values, cold_values.numpy()], axis=1)
            items = np.concatenate([items, self.cold[cold_at.numpy()]], axis=1)
            order = np.lexsort((items, -values), axis=-1)[:, :K]  # by score, then by index
            values, items = np.take_along_axis(values, order, 1), np.take_along_axis(items, order, 1)
        items = np.where(values == -np.inf, 0, items)
        if items.shape[1] < K:
            items = np.pad(items, ((0, 0), (0, K - items.shape[1])))
        return items.astype(np.int32)


def describe(offset, slope) -> str:
    """A blend in words."""
    return "off (new items are not recommended)" if offset is None else f"offset {offset:g}, slope {slope:g}"


def write_table(run_dir, calibration: Calibration) -> Path:
    """The grid of `calibration` as `CALIBRATION_FILE` in `run_dir` (one row per pair; `chosen` marks one)."""
    from mfn4rec_tf._atomic import write_csv

    columns = list(calibration.rows[0])
    rows = [columns + ["chosen"]]
    for row in calibration.rows:
        chosen = (row["offset"], row["slope"]) == (calibration.offset, calibration.slope)
        rows.append([("off" if row[c] is None else row[c]) if c in ("offset", "slope") else row[c] for c in columns]
                    + [int(chosen)])
    return write_csv(Path(run_dir) / CALIBRATION_FILE, rows)


def apply(model, summary) -> None:
    """Sets the blend of `summary` (`Calibration.summary()`, as state.json keeps it) on `model`'s head."""
    model.get_layer("cold_start").set_blend(summary["offset"], summary["slope"])
