"""Pictures of a model comparison (`python -m mfn4rec_tf.compare`): the paper's Tables 3-4 as bars,
and its Figure 2 (MFN4Rec against its ablations).

Both functions take the comparison's rows: mappings with `model`, `status` (`"ok"`, `"n/a"`,
`"failed"`, `"not run"`) and `test` (the run's test metrics, fractions, keyed like
`"recall@20"`; `None` unless the status is `"ok"`), and optionally `test_std` (each metric's standard
deviation over seeds, drawn as error bars of ± one standard deviation). Values are drawn in percent,
as the paper reports them.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt
import numpy as np

FAMILIES = (("recall", "Recall"), ("map", "MAP"))
"""The metric families drawn, one panel each (their scales differ several-fold)."""
KS = (20, 30)
"""The cut-offs of the paper's tables."""


def plot_comparison(rows, path, title="") -> Path:
    """Writes a PNG of grouped bars: Recall@20/@30 (top) and MAP@20/@30 (bottom) per model.

    Every row gets its place on the x axis, in the given order; a model without results shows its
    status (`n/a`, `failed`, `not run`) where its bars would be, so nothing is silently dropped.

    Args:
        rows: the comparison's rows (see the module docstring).
        path: the PNG to write (replaced atomically).
        title: the figure's title (e.g. the dataset and protocol).

    Returns:
        `path` as a `Path`.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("plot_comparison needs at least one row.")
    models = [row["model"] for row in rows]
    positions = np.arange(len(models))
    width = 0.8 / len(KS)
    # One panel above the other, so that fourteen models still fit a page's width.
    figure, axes = plt.subplots(len(FAMILIES), 1, figsize=(max(7.0, 0.6 * len(models) + 2.5), 7.5))
    for axis, (family, label) in zip(axes, FAMILIES):
        top = 0.0
        for slot, k in enumerate(KS):
            values = [_percent(row, f"{family}@{k}") for row in rows]
            offsets = positions + (slot - (len(KS) - 1) / 2) * width
            heights = [0.0 if v is None else v for v in values]
            errors = [_spread(row, f"{family}@{k}") for row in rows]
            axis.bar(offsets, heights, width, label=f"{label}@{k}", color=f"C{slot}",
                     yerr=errors if any(errors) else None, capsize=2, error_kw={"elinewidth": 0.8})
            top = max([top, *(h + e for h, e in zip(heights, errors))])
        for position, row in zip(positions, rows):
            if row["status"] != "ok":
                axis.text(position, 0.0, f" {row['status']}", rotation=90, ha="center", va="bottom", fontsize=8,
                          color="dimgrey")
        axis.set_xticks(positions, models, rotation=45, ha="right", fontsize=8)
        axis.set(title=f"{label} on the test split", ylabel=f"{label} (%)")
        axis.set_ylim(0.0, 1.15 * top if top > 0 else 1.0)
        axis.grid(axis="y", alpha=0.3)
        axis.legend(fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return _save(figure, Path(path))


def plot_ablation(rows, path, variants, title="") -> Path:
    """Writes a PNG like the paper's Figure 2: Recall and MAP at 20 and 30 of MFN4Rec and its ablations.

    Args:
        rows: the comparison's rows (see the module docstring); those of `variants` with status
            `"ok"` are drawn, in the order of `variants`.
        path: the PNG to write (replaced atomically).
        variants: the model names to draw (e.g. `mfn4rec_tf.config.VARIANTS`).
        title: the figure's title.

    Returns:
        `path` as a `Path`.

    Raises:
        ValueError: fewer than two of `variants` have results (nothing to compare).
    """
    by_model = {row["model"]: row for row in rows if row["status"] == "ok"}
    drawn = [name for name in variants if name in by_model]
    if len(drawn) < 2:
        raise ValueError(f"An ablation chart needs results of at least two of {list(variants)}; found {drawn}.")
    positions = np.arange(len(KS))
    width = 0.8 / len(drawn)
    figure, axes = plt.subplots(1, len(FAMILIES), figsize=(max(8.0, 4.0 + 1.2 * len(drawn)), 4.0))
    for axis, (family, label) in zip(axes, FAMILIES):
        top = 0.0
        for slot, name in enumerate(drawn):
            values = [_percent(by_model[name], f"{family}@{k}") or 0.0 for k in KS]
            errors = [_spread(by_model[name], f"{family}@{k}") for k in KS]
            offsets = positions + (slot - (len(drawn) - 1) / 2) * width
            bars = axis.bar(offsets, values, width, label=name, color=f"C{slot}",
                            yerr=errors if any(errors) else None, capsize=2, error_kw={"elinewidth": 0.8})
            axis.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
            top = max([top, *(v + e for v, e in zip(values, errors))])
        axis.set_xticks(positions, [f"{label}@{k}" for k in KS])
        axis.set(title=f"{label} of MFN4Rec and its variants", ylabel=f"{label} (%)")
        axis.set_ylim(0.0, 1.18 * top if top > 0 else 1.0)
        axis.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(drawn), fontsize=8, frameon=False)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout(rect=(0.0, 0.07, 1.0, 1.0))
    return _save(figure, Path(path))


def _percent(row, key):
    test = row.get("test")
    if row["status"] != "ok" or not test or test.get(key) is None:
        return None
    return 100.0 * float(test[key])


def _spread(row, key):
    """The row's standard deviation of `key` in percent (0 when it has none: one seed)."""
    spread = row.get("test_std")
    if row["status"] != "ok" or not spread or spread.get(key) is None:
        return 0.0
    return 100.0 * float(spread[key])


def _save(figure, path):
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    try:
        figure.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(figure)
        tmp.unlink(missing_ok=True)
    return path
