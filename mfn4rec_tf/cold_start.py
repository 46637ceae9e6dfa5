"""The cold-start head of `item_representation: id+knn`: its calibration, and the command that adds
it to a finished run.

    python -m mfn4rec_tf.cold_start --run RUN --out NEW_RUN [--warm-tolerance T] [--offsets ...] [--slopes ...]
    python -m mfn4rec_tf.cold_start --run RUN --out NEW_RUN --blend OFFSET SLOPE

An `id+knn` model is the `id` model (the paper's Eq. 11 scores every item it has trained) with a
head after its logits (`KnnColdStart`, docs/model.md#new-items): an item without a trained ID
vector (never in the training sequences, or added by `export --add-items`) is scored from its
features' similarity s_i to the last history item (`feature-knn`'s cosine), placed on the user's
own scale of the known items' logits:

    score_i = mean_u + std_u · (offset + slope · s_i)

`offset` and `slope` are chosen after training on the validation split: every pair of the grid
(`OFFSETS` x `SLOPES`, and "off": new items never recommended) is ranked, and the one with the best
validation Recall@20 over all targets (cold and warm alike) is kept; a tie keeps the earlier pair,
so "off" wins unless the head helps. With `--warm-tolerance T` (a `cold-items` run) the pair with the
best cold-target Recall@20 is kept among those whose warm-target Recall@20 is at least (1 - T) times
the head-off model's: how much of the known items' accuracy new items may take.

`fit` calibrates an `id+knn` run itself (`cold_start.csv` in the run directory: the whole grid with
its cold and warm Recall@20 / NDCG@20). This command does it for a finished run trained as `id`
(training is the same, so nothing is retrained), or again for an `id+knn` run: it writes a new run
directory NEW_RUN whose model is RUN's with the calibrated head, tested like `fit` tests (test
metrics, per-user file, cold and warm groups under `cold-items`), so `evaluate`, `export
--add-items`, `compare` and `benchmarks/run_groups.py` read it as any run. The head reads the
run's catalogue features, so the run's data must have at least one feature modality.

Only the items a model has not trained are unknown to it, so a run with no such item among its
validation targets (plain leave-one-out on a catalogue that does not change) has nothing to
calibrate on, and keeps the head off: calibrate on a `cold-items` run of the same data and set its
blend on the production run with `--blend OFFSET SLOPE`.

Both calibrate the model selected on validation (`best.keras`; with `train.retrain`, the paper
protocol, the retrained final model then gets the same blend), so the calibration never sees a model
that trained on the validation split.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mfn4rec_tf.calibration import OFFSETS, SLOPES, Calibration, apply, describe, write_table

log = logging.getLogger(__name__)


def add_to_run(run, out, offsets=OFFSETS, slopes=SLOPES, progress=True, warm_tolerance=None, blend=None) -> dict:
    """Writes `out`: the finished run `run` (`item_representation: id`, or `id+knn` to calibrate again)
    with a cold-start head calibrated on its validation split (`calibrate`, with `offsets`, `slopes`,
    `warm_tolerance`; on the run's `best.keras`, the model selected on validation, as `fit` does, or
    its final model when it has none), or set to `blend` (an `(offset, slope)` pair, e.g. one
    calibrated on a `cold-items` run of the same data; `(None, None)`: off), and tested. Returns
    `{"valid", "test", "cold_start"}`: the validation metrics are those of the calibrated model
    `calibrate` ranked (`evaluate_split`), the test ones those of the final model with its blend."""
    import numpy as np

    from mfn4rec_tf._atomic import save_model, write_json, write_npz, write_text
    from mfn4rec_tf.cli import read_json
    from mfn4rec_tf.model import load_model, with_output_mode
    from mfn4rec_tf.run_config import load_config
    from mfn4rec_tf.training import (
        PER_USER_FILE,
        RunError,
        calibrate_split,
        evaluate_split,
        modality_names,
        open_data,
        uncompiled_model,
    )

    run, out = Path(run), Path(out)
    if not (run / "config.yaml").is_file() or not (run / "model.keras").is_file():
        raise RunError(f"{run} is not a finished run directory (it needs config.yaml and model.keras).")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunError(f"--out {out} already exists and is not an empty directory: choose another.")
    source = load_config(run / "config.yaml")
    if source.model.item_representation not in ("id", "id+knn"):
        raise RunError(f"{run} has `model.item_representation: {source.model.item_representation}`: the cold-start "
                       "head goes on an `id` model (one that scores items by their trained ID vectors).")
    config = dataclasses.replace(source, model=dataclasses.replace(source.model, item_representation="id+knn"))
    dataset = open_data(config)
    names = modality_names(config, dataset)
    config.model_config(dataset)  # its checks: a feature modality, a model that takes the head
    valid, test = config.split(dataset, "validation"), config.split(dataset, "test")
    final_sequences = (test if config.retrain else valid).train_sequences
    files = {"model.keras": final_sequences}
    if (run / "best.keras").is_file():
        files["best.keras"] = valid.train_sequences
    if blend is not None:
        offset, slope = blend
        if (offset is None) != (slope is None) or any(v is not None and not math.isfinite(v) for v in blend):
            raise RunError(f"--blend must be two finite numbers (offset, slope), or off. Received: {blend!r}")
    models = {}
    for name, sequences in files.items():
        try:
            trained = load_model(run / name)
        except Exception as error:  # Keras raises several types for an unreadable or foreign file
            raise RunError(f"{run / name} cannot be loaded as a model of this package: {error}") from None
        model = uncompiled_model(config, dataset, sequences)  # evaluated and served, not trained further
        _copy_weights(trained, model, run / name)
        models[name] = model
    # the model chosen on validation (never trained on it, as fit calibrates), else the final one
    chooser = with_output_mode(models.get("best.keras", models["model.keras"]), "last")
    if blend is None:
        log.info("Calibrating the cold-start head on the validation split of %s.", run)
        calibration = calibrate_split(chooser, config, dataset, valid, names, progress, offsets, slopes, warm_tolerance)
    else:
        calibration = Calibration(blend[0], blend[1], "given", [])
    for model in models.values():
        apply(model, calibration.summary())
    valid_metrics = evaluate_split(chooser, config, dataset, valid, names, progress)
    test_metrics, per_user = evaluate_split(with_output_mode(models["model.keras"], "last"), config, dataset, test,
                                            names, progress, per_user=True)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", config.to_yaml())
    for name, model in models.items():
        save_model(model, out / name)
    if calibration.rows:
        write_table(out, calibration)
    write_npz(out / PER_USER_FILE, user_id=np.asarray([str(u) for u in test.user_ids]), **per_user)
    result = {"valid": valid_metrics, "test": test_metrics}
    write_json(out / "metrics.json", result)
    trained = read_json(run / "state.json") or {}  # the training's record (run_groups reads its epochs)
    write_json(out / "state.json", {"phase": "done", "source_run": str(run.resolve()),
                                    **{key: trained[key] for key in ("best_epoch", "history") if key in trained},
                                    "cold_start": calibration.summary()})
    return {**result, "cold_start": calibration.summary()}


def _copy_weights(trained, model, path):
    """`trained`'s weights into `model`, layer by layer by name (`model` has the head's layers besides)."""
    from mfn4rec_tf.training import RunError

    layers = {layer.name: layer for layer in model.layers}
    for layer in trained.layers:
        if not layer.weights:
            continue
        target = layers.get(layer.name)
        shapes = [tuple(w.shape) for w in layer.weights]
        if target is None or [tuple(w.shape) for w in target.weights] != shapes:
            raise RunError(f"{path}: its layer {layer.name!r} does not match the model of the run's settings with "
                           "`item_representation: id+knn` (was the run trained with another version of the package?).")
        target.set_weights(layer.get_weights())


def _number(text):
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--blend takes two numbers (offset, slope) or 'off off'. Received {text!r}") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mfn4rec_tf.cold_start",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True,
                        help="a finished run of an `id` (or `id+knn`) MFN4Rec model (python -m mfn4rec_tf.fit)")
    parser.add_argument("--out", required=True, help="the new run directory to write (must not hold a run)")
    parser.add_argument("--offsets", type=float, nargs="+", metavar="X",
                        help=f"offsets to try (default {' '.join(f'{v:g}' for v in OFFSETS)})")
    parser.add_argument("--slopes", type=float, nargs="+", metavar="X",
                        help=f"slopes to try (default {' '.join(f'{v:g}' for v in SLOPES)})")
    parser.add_argument("--warm-tolerance", type=float, metavar="T",
                        help="choose the blend with the best cold-target Recall@20 among those that keep warm-target "
                             "Recall@20 within a fraction T of the head-off model's (cold-items runs; e.g. 0.05)")
    parser.add_argument("--blend", nargs=2, metavar=("OFFSET", "SLOPE"),
                        help="no calibration: set this blend (e.g. one chosen on a cold-items run of the same data), "
                             "or 'off off'")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    from mfn4rec_tf import cli

    cli.add_threads_argument(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cli.apply_threads(args.threads)
        blend = None if args.blend is None else tuple(None if v == "off" else _number(v) for v in args.blend)
        if blend is not None and (args.warm_tolerance is not None or args.offsets or args.slopes):
            raise ValueError("--blend sets the blend: it takes no --warm-tolerance, --offsets or --slopes "
                             "(those choose one on validation).")
        result = add_to_run(args.run, args.out, args.offsets or OFFSETS, args.slopes or SLOPES,
                            progress=not args.quiet, warm_tolerance=args.warm_tolerance, blend=blend)
    except cli.USER_ERRORS as error:
        return cli.fail(error)
    from mfn4rec_tf.metrics import format_groups, format_table

    blend = result["cold_start"]
    print(f"cold-start head: {describe(blend['offset'], blend['slope'])}; run written to {args.out}")
    print(format_table(result["test"]))
    if format_groups(result["test"]):
        print(format_groups(result["test"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
