"""Our SASRec against RecBole's on the same leave-one-out split: test Recall@20 and NDCG@20 side by side.

    python benchmarks/recbole_sasrec.py [--data /work/shared/data/amazon2014-beauty] [--users N] [--epochs 5]
        [--patience 2] [--dropout 0.5] [--ours-windows last|prefix] [--work runs/recbole-sasrec]

Not a test (CI does not run it). What it does:

1. Creates `benchmarks/.venv-recbole` (gitignored) on first use: RecBole 1.2.1 and a CPU build of
   torch 2.13.0 (refused if pip installs a CUDA build), with the pins RecBole 1.2.1 needs beside
   today's packages (numpy<2, pandas<2.3). RecBole is never a dependency of the package.
2. Builds our dataset directory from `DATA/interactions.csv` (`pipelines.generic`, no filters; with
   `--users N`, only the events of the first N user ids in sorted order, a sample that fits a
   small budget), then
   writes RecBole's atomic file from that directory's interactions: the same users, the same item
   indices and, per user, the same order (the timestamp column of the atomic file is the event's
   rank in the user's time-ordered sequence, ties kept in our order, so RecBole's time ordering
   cannot reorder ties).
3. Trains our SASRec (`python -m mfn4rec_tf.fit --model sasrec`, its registry preset: d 50, 2 blocks,
   1 head, dropout 0.5, lr 0.001, batch 128, 50 items) and RecBole's SASRec with the same sizes
   (hidden 50, inner 50, 2 layers, 1 head, dropouts 0.5, ReLU, MAX_ITEM_LIST_LENGTH 50), loss
   (softmax cross-entropy over all items), learning rate, batch size, optimizer (Adam; ours is run
   with beta_2 0.999, RecBole's, instead of the preset's 0.98), epoch budget and patience on
   validation Recall@20, leave-one-out (last item test, second-to-last validation), full ranking
   with the user's history excluded (RecBole always masks it; ours with `--exclude-history`).
   `--dropout` sets every dropout rate of both (ours: `model.dropout`; RecBole: hidden and
   attention dropout). `--ours-windows prefix` trains ours on RecBole's examples: one window per
   target with up to 50 items of history, only its last position trained (`data.train_windows:
   sliding`, `data.window_stride: 1`, with the chunked full softmax, which skips the context
   positions); `last` (default) is the preset's: every position of each sequence's last 50 items.
4. Prints test Recall@20 / NDCG@20 of both and ours / RecBole's. The two train at the same time
   (their seconds are each other's competition, not a speed comparison). Finished runs in `--work`
   are reused.

Known differences that remain (the architectures as each library defines SASRec): RecBole's SASRec
is a post-LN transformer (LayerNorm and dropout on the embedding sum, no sqrt(d) scale, GELU or ReLU
FFN of `inner_size`, N(0, 0.02) initialisation, no dropout between the FFN's two layers), ours is
the paper's reference code (pre-LN on the query, final LN, sqrt(d) scale, Glorot initialisation,
dropout after both FFN layers), so one dropout rate drops more in ours. Measured (benchmarks/RESULTS.md,
"SASRec against RecBole's SASRec"): at dropout 0.5 ours reaches about half of RecBole's Recall@20
after 5 epochs; at 0.2 on RecBole's prefixes the two learn alike (validation curves within a few
percent, test Recall@20 ratio 1.015).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "benchmarks" / ".venv-recbole"
PACKAGES = (["torch==2.13.0"], ["numpy<2", "pandas<2.3", "recbole==1.2.1"])
SIZES = {"d": 50, "blocks": 2, "heads": 1, "dropout": 0.5, "lr": 0.001, "batch": 128, "max_length": 50}


def venv_python() -> Path:
    """The RecBole venv's python, created and filled on first use."""
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"Creating {VENV} (RecBole 1.2.1 + CPU torch) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        for group in PACKAGES:
            subprocess.run([str(python), "-m", "pip", "install", "-q", *group], check=True)
    probe = subprocess.run([str(python), "-c", "import torch, recbole; print(torch.version.cuda or '')"],
                           capture_output=True, text=True)
    if probe.returncode:
        raise SystemExit(f"{VENV} is not usable (delete it to rebuild): {probe.stderr.strip()[-500:]}")
    if probe.stdout.strip():
        raise SystemExit(f"{VENV} holds a CUDA build of torch ({probe.stdout.strip()}); this benchmark wants the "
                         f"CPU build: delete the folder and install torch from a CPU wheel.")
    return python


def prepare(data: Path, work: Path, users: int | None) -> tuple[Path, Path]:
    """Our dataset directory and RecBole's data folder (`<folder>/beauty/beauty.inter`), from the same events."""
    dataset_dir = work / "dataset"
    if not (dataset_dir / "manifest.json").exists():
        source = data / "interactions.csv"
        if users is not None:
            import pandas as pd

            frame = pd.read_csv(source)
            keep = sorted(frame["user_id"].unique())[:users]
            source = work / "interactions.csv"
            frame[frame["user_id"].isin(keep)].to_csv(source, index=False)
        subprocess.run([sys.executable, "-m", "pipelines.generic", "--interactions", str(source),
                        "--out", str(dataset_dir), "--name", "beauty"], check=True, cwd=ROOT)
    from mfn4rec_tf.dataset import load_dataset

    frame = load_dataset(dataset_dir).interactions[["user_id", "item_index", "timestamp"]]
    frame = frame.sort_values(["user_id", "timestamp"], kind="stable")  # the order of mfn4rec_tf.splits
    rank = frame.groupby("user_id", sort=False).cumcount()
    folder = work / "recbole"
    (folder / "beauty").mkdir(parents=True, exist_ok=True)
    with open(folder / "beauty" / "beauty.inter", "w") as out:
        out.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for user, item, order in zip(frame["user_id"].astype(str), frame["item_index"], rank):
            out.write(f"{user}\t{item}\t{order}\n")
    print(f"{len(frame):,} interactions, {frame['user_id'].nunique():,} users, {frame['item_index'].nunique():,} "
          f"items -> {dataset_dir} and {folder / 'beauty' / 'beauty.inter'}", flush=True)
    return dataset_dir, folder


def tag(dropout: float, windows: str = "") -> str:
    """The folder suffix of a configuration's runs (`work/ours-<tag>`, `work/recbole-<tag>.json`)."""
    return f"d{dropout:g}" + (f"-{windows}" if windows else "")


def run_ours(dataset_dir: Path, work: Path, epochs: int, patience: int, dropout: float, windows: str) -> dict:
    out = work / f"ours-{tag(dropout, windows)}"
    if not (out / "metrics.json").exists():
        started = time.perf_counter()
        extra = ["--set", "data.train_windows=sliding", "--set", "data.window_stride=1",
                 "--softmax-chunk", "4096"] if windows == "prefix" else []
        subprocess.run([sys.executable, "-m", "mfn4rec_tf.fit", "--model", "sasrec", "--data", str(dataset_dir),
                        "--protocol", "leave-one-out", "--epochs", str(epochs), "--patience", str(patience),
                        "--exclude-history", "--set", "train.adam_beta_2=0.999", "--set", f"model.dropout={dropout}",
                        *extra, "--out", str(out)],
                       check=True, cwd=ROOT)
        (out / "seconds.txt").write_text(f"{time.perf_counter() - started:.0f}\n")
    test = json.loads((out / "metrics.json").read_text())["test"]
    state = json.loads((out / "state.json").read_text())
    epochs_run = sum(1 for row in state.get("history", []) if row.get("phase") == "select")
    return {"recall@20": test["recall@20"], "ndcg@20": test["ndcg@20"], "users": test.get("users"),
            "best_epoch": state.get("best_epoch"), "epochs_run": epochs_run,
            "seconds": float((out / "seconds.txt").read_text()) if (out / "seconds.txt").exists() else None}


def start_recbole(work: Path, epochs: int, patience: int, dropout: float):
    """RecBole's run in its venv, in the background (None when its result is already there)."""
    if (work / f"recbole-{tag(dropout)}.json").exists():
        return None
    return subprocess.Popen([str(venv_python()), str(Path(__file__).resolve()), "--recbole-worker", "--work", str(work),
                             "--epochs", str(epochs), "--patience", str(patience), "--dropout", str(dropout)],
                            cwd=work)  # its log/ there


def recbole_result(process, work: Path, dropout: float) -> dict:
    if process is not None and process.wait():
        raise SystemExit(f"RecBole's run failed (exit status {process.returncode}); its log is in {work / 'log'}")
    return json.loads((work / f"recbole-{tag(dropout)}.json").read_text())


def recbole_worker(work: Path, epochs: int, patience: int, dropout: float):
    """Runs inside the RecBole venv: builds config, dataset, model and trainer directly (not quick_start)."""
    import torch

    loader = torch.load
    torch.load = lambda *args, **kwargs: loader(*args, **{**kwargs, "weights_only": False})  # RecBole's checkpoints
    torch.set_num_threads(1)  # on a shared machine two spinning OpenMP threads ran many times slower
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_logger, init_seed

    settings = {
        "data_path": str(work / "recbole"), "checkpoint_dir": str(work / "recbole" / "saved"),
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": SIZES["max_length"],
        "hidden_size": SIZES["d"], "inner_size": SIZES["d"], "n_layers": SIZES["blocks"], "n_heads": SIZES["heads"],
        "hidden_dropout_prob": dropout, "attn_dropout_prob": dropout, "hidden_act": "relu",
        "loss_type": "CE", "train_neg_sample_args": None,
        "learning_rate": SIZES["lr"], "train_batch_size": SIZES["batch"], "eval_batch_size": 512,
        "epochs": epochs, "stopping_step": patience, "eval_step": 1,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "metrics": ["Recall", "NDCG"], "topk": [20], "valid_metric": "Recall@20",
        "seed": 0, "reproducibility": True, "device": "cpu", "use_gpu": False, "show_progress": False,
        "worker": 0, "log_wandb": False, "state": "INFO",
    }
    config = Config(model="SASRec", dataset="beauty", config_dict=settings)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)  # per-epoch lines on stdout and in WORK/log/
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = SASRec(config, train_data.dataset).to(config["device"])
    trainer = Trainer(config, model)
    started = time.perf_counter()
    best_valid, _ = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    record = {"recall@20": float(test["recall@20"]), "ndcg@20": float(test["ndcg@20"]),
              "valid_recall@20": float(best_valid), "users": int(dataset.user_num - 1),
              "seconds": round(time.perf_counter() - started)}
    (work / f"recbole-{tag(dropout)}.json").write_text(json.dumps(record, indent=2) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="/work/shared/data/amazon2014-beauty", type=Path)
    parser.add_argument("--work", default=ROOT / "runs" / "recbole-sasrec", type=Path)
    parser.add_argument("--users", type=int, default=None, help="only the first N users (sorted ids) [default: all]")
    parser.add_argument("--epochs", type=int, default=5, help="epoch budget of both (the same)")
    parser.add_argument("--patience", type=int, default=2, help="early stopping of both on validation Recall@20")
    parser.add_argument("--dropout", type=float, default=SIZES["dropout"],
                        help="every dropout rate of both models [default: %(default)s, SASRec's for sparse data]")
    parser.add_argument("--ours-windows", choices=("last", "prefix"), default="last",
                        help="ours on each sequence's last 50 items (the preset) or on RecBole's prefixes")
    parser.add_argument("--recbole-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.work = args.work.resolve()
    if args.recbole_worker:
        return recbole_worker(args.work, args.epochs, args.patience, args.dropout)
    args.work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    dataset_dir, folder = prepare(args.data.resolve(), args.work, args.users)
    process = start_recbole(args.work, args.epochs, args.patience, args.dropout)  # both train at once
    ours = run_ours(dataset_dir, args.work, args.epochs, args.patience, args.dropout, args.ours_windows)
    recbole = recbole_result(process, args.work, args.dropout)
    sample = "" if args.users is None else f" (first {args.users} users)"
    print(f"\nSASRec on {args.data.name}{sample}, leave-one-out, full ranking (history excluded), budget "
          f"{args.epochs} epochs, patience {args.patience}, dropout {args.dropout:g}, ours on "
          f"{'prefixes' if args.ours_windows == 'prefix' else 'whole sequences'}:")
    print(f"{'':10s} {'Recall@20':>10s} {'NDCG@20':>10s} {'seconds':>8s}")
    for name, row in (("RecBole", recbole), ("ours", ours)):
        print(f"{name:10s} {row['recall@20']:10.4f} {row['ndcg@20']:10.4f} {row.get('seconds') or 0:8.0f}")
    ratios = {key: ours[key] / recbole[key] for key in ("recall@20", "ndcg@20")}
    print(f"{'ours/RB':10s} {ratios['recall@20']:10.3f} {ratios['ndcg@20']:10.3f}")
    record = {"recbole": recbole, "ours": ours, "ratio": ratios}
    (args.work / f"comparison-{tag(args.dropout, args.ours_windows)}.json").write_text(
        json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
