"""Train and evaluate a model: `python -m mfn4rec_tf.fit`.

With no arguments it trains MFN4Rec, with the paper's settings, on the embedded demo dataset
under the `paper` protocol, and prints the full-ranking metrics of the validation-selected model on
the test split. See `--help` for the options and `mfn4rec_tf.training` for what lands in --out.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mfn4rec_tf.dataset import DatasetError  # noqa: E402
from mfn4rec_tf.run_config import (  # noqa: E402
    MODELS,
    STRATEGIES,
    DataSection,
    ModelSection,
    TrainSection,
    flag_overrides,
    load_config,
    with_absolute_data_path,
)
from mfn4rec_tf.splits import PROTOCOLS  # noqa: E402

log = logging.getLogger("mfn4rec_tf.fit")

# flag -> (config key, type, help); defaults are read from the dataclasses, so --help cannot drift.
FLAGS = {
    "--data": ("data.path", str, "dataset directory made by pipelines/ (default: the embedded demo dataset)"),
    "--protocol": ("data.protocol", str, f"split protocol: {', '.join(PROTOCOLS)}"),
    "--modalities": ("data.modalities", str, "comma-separated feature modalities to use, or 'none' for item IDs "
                                             "only (default: every modality of the dataset)"),
    "--max-length": ("data.max_length", int, "longest history fed to the model"),
    "--model": ("model.variant", str, f"model: {', '.join(MODELS)}"),
    "--dropout": ("model.dropout", float, "dropout of every FC block"),
    "--epochs": ("train.epochs", int, "most epochs of the selection phase"),
    "--batch-size": ("train.batch_size", int, "sequences per batch"),
    "--learning-rate": ("train.learning_rate", float, "Adam learning rate"),
    "--targets": ("train.targets", str, "train on the next item at every position (all) or the last one (last)"),
    "--patience": ("train.patience", int, "early stopping: epochs without a better validation Recall@20"),
    "--seed": ("train.seed", int, "seed of weights, dropout and batch order"),
    "--strategy": ("train.strategy", str, f"distribution strategy: {', '.join(STRATEGIES)}"),
}
DEFAULTS = {"data": DataSection(), "model": ModelSection(), "train": TrainSection()}


def _default(key):
    section, name = key.split(".")
    return getattr(DEFAULTS[section], name)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m mfn4rec_tf.fit",
        description="Train a model, select it on validation Recall@20, and report full-ranking metrics on "
                    "the test split. Settings: defaults < --config YAML < --set < the flags below.",
    )
    parser.add_argument("--config", help="YAML file with data/model/train sections (e.g. a run's config.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override any setting, e.g. --set model.memory_dim=32 (repeatable)")
    for flag, (key, kind, text) in FLAGS.items():
        parser.add_argument(flag, type=kind, help=f"{text} [{key}, default: {_default(key)}]")
    parser.add_argument("--retrain", action=argparse.BooleanOptionalAction, default=None,
                        help="retrain on train + validation for the selected epochs before testing "
                             "[train.retrain, default: yes for the paper protocol, no otherwise]")
    parser.add_argument("--exclude-history", action=argparse.BooleanOptionalAction, default=None,
                        help="never recommend items already in the user's history [train.exclude_history, default: no]")
    parser.add_argument("--out", help="run directory (default: runs/<model>-<date>-<time>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted run in --out with its own config.yaml (other options must "
                             "agree with it)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def resolve(args):
    """The run configuration from defaults, --config, --set and the flags, in that order."""
    overrides = list(args.set) + flag_overrides(args, FLAGS)
    if args.retrain is not None:
        overrides.append(f"train.retrain={str(args.retrain).lower()}")
    if args.exclude_history is not None:
        overrides.append(f"train.exclude_history={str(args.exclude_history).lower()}")
    return with_absolute_data_path(load_config(args.config, overrides))  # evaluate/--resume work from anywhere


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from mfn4rec_tf.metrics import format_table
    from mfn4rec_tf.training import RunError, run_training

    try:
        if args.resume:
            if not args.out:
                raise RunError("--resume needs --out, the run directory to continue.")
            saved = Path(args.out) / "config.yaml"
            if args.config is None and saved.is_file():
                args.config = str(saved)  # resume with the run's own settings; flags must agree with them
        config = resolve(args)
        out = Path(args.out or f"runs/{config.model.variant}-{time.strftime('%Y%m%d-%H%M%S')}")
        started = time.perf_counter()
        result = run_training(config, out, resume=args.resume, progress=not args.quiet)
    except (RunError, DatasetError, ValueError, KeyError, FileNotFoundError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2
    data = config.data.path or f"embedded demo (seed {config.data.demo_seed})"
    print(f"\n{config.model.variant} on {data}, {config.data.protocol} protocol — test split (validation-selected):")
    print(format_table(result["test"]))
    print(f"\nvalidation {result['valid'].get('recall@20', float('nan')) * 100:.3f}% Recall@20 at the selected epoch")
    written = ", ".join(sorted(p.name for p in out.iterdir() if not p.name.startswith(".")))
    print(f"Run written to {out}/ in {time.perf_counter() - started:.0f}s: {written}")
    if (out / "logs").is_dir():
        print(f"Curves: {out}/training_curves.png; TensorBoard: tensorboard --logdir {out}/logs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
