"""Pictures of a run: training loss and validation ranking quality per epoch."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt


def plot_training_curves(history, path, metric="recall@20", best_epoch=None) -> Path:
    """Writes a PNG with two panels: loss per epoch (selection and retraining phases) and the
    validation `metric` per epoch with the selected epoch marked.

    Args:
        history: rows like `{"phase": "select", "epoch": 3, "loss": 4.1, "recall@20": 0.12, ...}`.
        path: the PNG to write (replaced atomically).
        metric: the validation metric to draw.
        best_epoch: the selected epoch, marked on both panels.
    """
    path = Path(path)
    figure, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    for phase, style in (("select", "-o"), ("retrain", "--s")):
        rows = [row for row in history if row["phase"] == phase]
        if rows:
            label = "training (selection)" if phase == "select" else "retraining on train + validation"
            loss_axis.plot([r["epoch"] for r in rows], [r["loss"] for r in rows], style, markersize=3, label=label)
    loss_axis.set(title="Training loss (cross-entropy)", xlabel="epoch", ylabel="loss")
    loss_axis.legend(fontsize=8)
    rows = [row for row in history if row["phase"] == "select" and metric in row]
    metric_axis.plot([r["epoch"] for r in rows], [100 * r[metric] for r in rows], "-o", markersize=3, color="tab:green")
    metric_axis.set(title=f"Validation {metric}", xlabel="epoch", ylabel=f"{metric} (%)")
    if best_epoch is not None:
        for axis in (loss_axis, metric_axis):
            axis.axvline(best_epoch, color="grey", linestyle=":", linewidth=1)
        best = [r for r in rows if r["epoch"] == best_epoch]
        if best:
            metric_axis.annotate(f"selected: epoch {best_epoch}\n{100 * best[0][metric]:.2f}%",
                                 (best_epoch, 100 * best[0][metric]), textcoords="offset points", xytext=(5, -25),
                                 fontsize=8)
    for axis in (loss_axis, metric_axis):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    figure.savefig(tmp, dpi=110)
    plt.close(figure)
    os.replace(tmp, path)
    return path
