"""Tables and a chart from `fit` runs made separately: mean +- std over seeds, paired tests by user.

    python benchmarks/run_groups.py --group "SASRec=runs/sasrec-s0,runs/sasrec-s1" \\
        --group "MFN4Rec recipe=runs/recipe-s0,runs/recipe-s1" --reference SASRec [--chart groups.png]

`compare` trains its models one after another in one process; on a small machine it can pay to
train them side by side (several `fit` processes) and put the results together afterwards, which
is what this does. Not a test (CI does not run it).

Each `--group LABEL=DIR[,DIR...]` is one model at one setting, each DIR a finished `fit` run
(`metrics.json`, `test_per_user.npz`, `state.json`), one per seed. For every group it prints the
number of runs, the mean +- standard deviation (n - 1; none for one run) of validation Recall@20 and
of test Recall@20 and NDCG@20, and each run's selected epoch. With `--reference LABEL` it adds, per
group, the relative difference of the means to the reference and the two-sided Wilcoxon
signed-rank test (`mfn4rec_tf.stats.wilcoxon`: zero differences dropped) of each test user's
Recall@20 and NDCG@20, averaged over the group's runs, against the reference's, paired by user.
Groups compared this way must have been tested on the same users (the same data and protocol);
that is checked. `--cold-warm` adds, for runs of the `cold-items` protocol, the mean +- std of test
Recall@20 and NDCG@20 on the targets that are cold items, on the warm ones and on all (no paired
test: the per-user files do not say which users' targets are cold). `--chart PNG` draws
`mfn4rec_tf.compare_plots.plot_comparison`'s bars (Recall and MAP at 20 and 30, +-1 std error bars)
for the groups.
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

from mfn4rec_tf import compare, training

METRICS = ("recall@20", "ndcg@20")
"""The per-user metrics tested against the reference."""


class GroupError(ValueError):
    """A group or run that cannot be read; the message names it."""


def read_run(run_dir: Path) -> dict:
    """`{"valid", "test", "best_epoch", "epochs", "per_user"}` of a finished run."""
    metrics_file = run_dir / "metrics.json"
    per_user_file = run_dir / "test_per_user.npz"
    if not metrics_file.is_file() or not per_user_file.is_file():
        raise GroupError(f"{run_dir} is not a finished fit run (no metrics.json or test_per_user.npz).")
    state_file = run_dir / "state.json"
    try:
        metrics = json.loads(metrics_file.read_text())
        state = json.loads(state_file.read_text()) if state_file.is_file() else {}
        per_user = training.read_per_user(run_dir)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise GroupError(f"{run_dir}: cannot read its run files ({error}).") from None
    missing = [m for m in ("user_id", *METRICS) if m not in per_user]
    if missing:
        raise GroupError(f"{run_dir}/test_per_user.npz lacks {', '.join(missing)}.")
    return {"valid": metrics.get("valid") or {}, "test": metrics.get("test") or {},
            "best_epoch": state.get("best_epoch"), "epochs": len(state.get("history") or []),
            "per_user": per_user}


def parse_group(text: str) -> tuple:
    label, sep, dirs = text.partition("=")
    paths = [Path(d.strip()) for d in dirs.split(",") if d.strip()]
    if not sep or not label.strip() or not paths:
        raise GroupError(f"--group must be LABEL=DIR[,DIR...]. Received: {text!r}")
    return label.strip(), paths


def summarise(label: str, runs: list) -> dict:
    """The group's mean and std (n - 1) of every numeric metric of both splits, and its per-user
    values averaged over the runs."""
    row = {"model": label, "status": "ok", "runs": len(runs),
           "epochs": [(r["best_epoch"], r["epochs"]) for r in runs]}
    for split in ("valid", "test"):
        row[split], row[f"{split}_std"] = compare.seed_statistics([r[split] for r in runs])
    users = runs[0]["per_user"]["user_id"]
    if any(not np.array_equal(run["per_user"]["user_id"], users) for run in runs[1:]):
        # e.g. the cold-items protocol, whose cold set (hence the users evaluated) differs by seed:
        # means and stds are still defined, a test paired by user is not
        row["users"] = row["per_user"] = None
        return row
    row["users"] = users
    row["per_user"] = {m: np.mean([r["per_user"][m] for r in runs], axis=0) for m in METRICS}
    return row


def paired(row: dict, reference: dict) -> dict:
    """`{metric: p-value}` of the Wilcoxon test of `row`'s per-user values against `reference`'s."""
    for group in (row, reference):
        if group["users"] is None:
            raise GroupError(f"Group {group['model']!r}: its runs were tested on different users, so no test "
                             "paired by user applies; leave out --reference.")
    if not np.array_equal(row["users"], reference["users"]):
        raise GroupError(f"{row['model']!r} and {reference['model']!r} were tested on different users; "
                         "a paired test needs the same data and protocol.")
    return {metric: compare.paired_p_value(row["per_user"][metric], reference["per_user"][metric])
            for metric in METRICS}


def _cell(row, split, key) -> str:
    mean = 100 * row[split][key]
    return f"{mean:.2f}%" if row["runs"] == 1 else f"{mean:.2f} ± {100 * row[f'{split}_std'][key]:.2f}%"


def format_table(rows: list, reference: dict | None) -> str:
    head = ["group", "runs", "selected epoch (of)", "valid Recall@20", "test Recall@20", "test NDCG@20"]
    if reference is not None:
        head += [f"vs {reference['model']}: Recall@20 (p)", "NDCG@20 (p)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        epochs = ", ".join(f"{best} ({run})" for best, run in row["epochs"])
        cells = [row["model"], str(row["runs"]), epochs, _cell(row, "valid", "recall@20"),
                 _cell(row, "test", "recall@20"), _cell(row, "test", "ndcg@20")]
        if reference is not None:
            if row is reference:
                cells += ["reference", "reference"]
            else:
                p = paired(row, reference)
                for metric in METRICS:
                    change = row["test"][metric] / reference["test"][metric] - 1
                    test = "no user to pair" if p[metric] is None else f"p = {p[metric]:.2g}"
                    cells.append(f"{100 * change:+.1f}% ({test})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


GROUP_KEYS = ("cold/recall@20", "cold/ndcg@20", "warm/recall@20", "warm/ndcg@20", "recall@20", "ndcg@20")
"""The columns of `--cold-warm`'s table (the `cold-items` protocol's metric keys)."""


def format_cold_warm(rows: list) -> str:
    """Test metrics on cold targets, warm targets and all, mean +- std over each group's runs."""
    head = ["group", "runs", *(f"test {key}" for key in GROUP_KEYS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        missing = [key for key in GROUP_KEYS if key not in row["test"]]
        if missing:
            raise GroupError(f"Group {row['model']!r}: its runs have no {missing[0]} (not the cold-items protocol).")
        lines.append("| " + " | ".join([row["model"], str(row["runs"]),
                                        *(_cell(row, "test", key) for key in GROUP_KEYS)]) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--group", action="append", required=True, help="LABEL=DIR[,DIR...] (repeat)")
    parser.add_argument("--reference", help="the LABEL the others are tested against")
    parser.add_argument("--chart", help="a PNG of the groups' test metrics")
    parser.add_argument("--title", default="", help="the chart's title")
    parser.add_argument("--cold-warm", action="store_true",
                        help="also the test metrics on cold and warm targets (cold-items protocol runs)")
    args = parser.parse_args(argv)
    try:
        groups = [parse_group(text) for text in args.group]
        labels = [label for label, _ in groups]
        if len(set(labels)) != len(labels):
            raise GroupError(f"--group labels must differ. Received: {labels}")
        if args.reference is not None and args.reference not in labels:
            raise GroupError(f"--reference {args.reference!r} is not a group label ({', '.join(labels)}).")
        rows = [summarise(label, [read_run(p) for p in paths]) for label, paths in groups]
        reference = next((r for r in rows if r["model"] == args.reference), None)
        print(format_table(rows, reference))
        if args.cold_warm:
            print()
            print(format_cold_warm(rows))
    except GroupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.chart:
        from mfn4rec_tf.compare_plots import plot_comparison

        print(f"chart: {plot_comparison(rows, args.chart, title=args.title)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
