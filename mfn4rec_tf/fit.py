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

from mfn4rec_tf import cli

log = logging.getLogger("mfn4rec_tf.fit")

FLAGS = cli.flags("--data", "--protocol", "--modalities", "--max-length", "--train-windows", "--window-stride",
                  "--model", "--dropout", "--epochs", "--batch-size", "--learning-rate", "--targets", "--patience",
                  "--seed", "--strategy",
                  "--loss", "--num-negatives", "--sampler", "--softmax-chunk", "--max-steps", "--max-minutes")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m mfn4rec_tf.fit",
        description="Train a model, select it on validation Recall@20, and report full-ranking metrics on "
                    "the test split. Settings: defaults < the model's preset < --preset < --config YAML < --set "
                    "< the flags below.",
    )
    cli.add_config_arguments(parser, FLAGS)
    cli.add_preset_argument(parser)
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
    cli.add_threads_argument(parser)
    return parser.parse_args(argv)


def resolve(args):
    """The run configuration from defaults, the model's preset, --preset, --config, --set and the flags, in
    that order."""
    extra = (cli.boolean_override("train.retrain", args.retrain)
             + cli.boolean_override("train.exclude_history", args.exclude_history))
    return cli.resolve(args, FLAGS, extra)  # data.path absolute: evaluate/--resume work from anywhere


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from mfn4rec_tf.cli import read_json
    from mfn4rec_tf.metrics import format_groups, format_table
    from mfn4rec_tf.multi_worker import WorkerLost
    from mfn4rec_tf.training import RunError, describe_stop, run_training

    try:
        cli.apply_threads(args.threads)
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
    except cli.USER_ERRORS as error:
        return cli.fail(error)
    except WorkerLost as error:  # a multi-worker run lost a worker: the run resumes once all are back
        print(f"error: {error}", file=sys.stderr)
        return 1
    if result is None:  # a multi-worker run's worker other than the chief: the chief reports
        print(f"Worker done in {time.perf_counter() - started:.0f}s; the chief wrote the run and its metrics.")
        return 0
    data = config.data.path or f"embedded demo (seed {config.data.demo_seed})"
    print(f"\n{config.model.variant} on {data}, {config.data.protocol} protocol — test split (validation-selected):")
    print(format_table(result["test"]))
    if format_groups(result["test"]):
        print(format_groups(result["test"]))
    print(f"\nvalidation {result['valid'].get('recall@20', float('nan')) * 100:.3f}% Recall@20 at the selected epoch")
    state = read_json(out / "state.json") or {}
    if state.get("stopped_by"):
        print(f"Selection ended by {describe_stop(state['stopped_by'], config)} after {state.get('steps', '?')} "
              f"step(s); selected epoch {state.get('best_epoch')}.")
    written = ", ".join(sorted(p.name for p in out.iterdir() if not p.name.startswith(".")))
    print(f"Run written to {out}/ in {time.perf_counter() - started:.0f}s: {written}")
    if (out / "logs").is_dir():
        print(f"Curves: {out}/training_curves.png; TensorBoard: tensorboard --logdir {out}/logs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
