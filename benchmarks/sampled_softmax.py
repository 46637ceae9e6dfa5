"""Training step time and peak memory, full softmax against the sampled softmax, on one dataset.

    python benchmarks/sampled_softmax.py --data DIR [--negatives 256,1024,4096] [--sampler uniform]
                                         [--chunks 1024,4096] [--keras-loss] [--model mfn4rec]
                                         [--batches 30] [--warmup 5] [--full-limit-mb 4096]

Each configuration (`full`: the softmax cross-entropy `fit` trains with, `mfn4rec_tf.softmax_loss`;
with `--keras-loss` first `keras`: the same loss through Keras' `SparseCategoricalCrossentropy`, which
`fit` used before; `chunked` with each C of `--chunks`: the same loss computed C items at a time,
`train.softmax_chunk`; then `sampled` with each S) runs in its own process (so each peak resident
memory is its own) through the code path of `python -m mfn4rec_tf.fit`: `RunConfig`
(leave-one-out, validation mode, batch 64, targets all, max_length 100), `training.new_model` and
`model.fit` on the first `warmup + batches` batches of epoch 0 of `TrainingInput` (the same batches
for every configuration). The warm-up batches (tracing) are not timed. Printed per configuration:
ms per step (mean wall time of the timed steps), the CPU time per step, seconds per epoch
extrapolated (steps per epoch x mean step), peak resident memory (ru_maxrss of its process), and the
speed-up over `full` in the same run. A benchmark, not a test: CI does not run it.

The full softmax is guarded: before its model is built, the logits of the largest measured batch
(batch x its padded length x (items + 1) float32) are sized, and past `--full-limit-mb` it is not
run: the row says so with that size (its softmax and gradient need at least as much again each). At
1,000,000 items a batch of 64 x 20 steps already has 4.8 GiB of logits.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def measure(data, model, loss, negatives, sampler, batches, warmup, modalities, full_limit_mb=None):
    """One configuration in this process: `{"ms": ..., "cpu_ms": ..., "epoch_s": ..., "peak_mb": ...}`,
    or for `full` with logits past `full_limit_mb` MB, `{"skipped": True, "logits_mb": ...}` (not run)."""
    import keras

    from mfn4rec_tf.data import TrainingInput
    from mfn4rec_tf.run_config import load_config
    from mfn4rec_tf.splits import make_split
    from mfn4rec_tf.training import new_model, open_data

    overrides = [f"data.path={data}", "data.protocol=leave-one-out", f"model.variant={model}",
                 f"train.sampler={sampler}"]
    if loss == "chunked":  # the full loss, `negatives` items at a time
        overrides += ["train.loss=full", f"train.softmax_chunk={negatives}"]
    elif loss == "keras":  # the full loss through TensorFlow's sparse softmax cross-entropy kernel
        overrides += ["train.loss=full"]
    else:
        overrides += [f"train.loss={loss}", f"train.num_negatives={negatives}"]
    if modalities is not None:  # "none" or "a,b" as fit's --modalities takes it; --set wants a YAML list
        names = [] if modalities.strip().lower() == "none" else [m.strip() for m in modalities.split(",") if m.strip()]
        overrides.append(f"data.modalities=[{', '.join(names)}]")
    config = load_config(None, overrides)
    dataset = open_data(config)
    split = make_split(dataset.interactions, "leave-one-out", "validation")
    names = config.modality_names(dataset)
    keras.utils.set_random_seed(0)
    net = new_model(config, dataset, split.train_sequences)
    if loss == "keras":  # what `fit` trained with before `mfn4rec_tf.softmax_loss`
        net.compile(optimizer=net.optimizer,
                    loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    data_input = TrainingInput(dataset, split.train_sequences, modalities=names, batch_size=64,
                               max_length=config.data.max_length, seed=0)
    steps = data_input.steps_per_epoch
    every = [batch[1]["logits"].shape for batch in data_input.batches(0)]  # the batches fit sees (epoch 0)
    positions = every[:warmup + batches]
    per_position = (dataset.num_items + 1) * 4 / 2**20  # MB of float32 logits per position
    logits_mb = {"logits_mb": max(b * t for b, t in positions) * per_position,
                 "mean_logits_mb": sum(b * t for b, t in positions) / len(positions) * per_position,
                 "epoch_logits_mb": max(b * t for b, t in every) * per_position,
                 "steps": steps, "items": dataset.num_items}
    if loss in ("full", "keras") and full_limit_mb is not None and logits_mb["logits_mb"] > full_limit_mb:
        return {"skipped": True, **logits_mb, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    subset = data_input.tf_dataset().take(warmup + batches)
    marks = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            marks.append((time.perf_counter(), time.process_time()))

    net.fit(subset, epochs=1, verbose=0, callbacks=[Clock()])
    timed = marks[warmup:]
    wall = (timed[-1][0] - marks[warmup - 1][0]) / len(timed)
    cpu = (timed[-1][1] - marks[warmup - 1][1]) / len(timed)
    return {"ms": 1000 * wall, "cpu_ms": 1000 * cpu, "epoch_s": wall * steps, **logits_mb,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/sampled_softmax.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="dataset directory made by pipelines/")
    parser.add_argument("--model", default="mfn4rec")
    parser.add_argument("--modalities", default=None, help="comma-separated, or none (default: all the data has)")
    parser.add_argument("--negatives", default="256,1024,4096", help="comma-separated S values")
    parser.add_argument("--sampler", default="uniform")
    parser.add_argument("--chunks", default="", help="comma-separated C values of the chunked full softmax")
    parser.add_argument("--keras-loss", action="store_true",
                        help="also time the full softmax through Keras' SparseCategoricalCrossentropy (row `keras`)")
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--full-limit-mb", type=float, default=4096,
                        help="skip the full softmax when one batch's logits would exceed this many MB")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration, print JSON
    args = parser.parse_args(argv)
    if args.one:
        loss, negatives = args.one.split(":")
        print(json.dumps(measure(args.data, args.model, loss, int(negatives), args.sampler, args.batches,
                                 args.warmup, args.modalities, args.full_limit_mb)))
        return 0
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {platform.node()} ({os.cpu_count()} cores), "
          f"python {platform.python_version()}; {args.model} on {args.data}, {args.batches} timed steps after "
          f"{args.warmup}, sampler {args.sampler}")
    configs = (([("keras", 1)] if args.keras_loss else []) + [("full", 1)]
               + [("chunked", int(c)) for c in args.chunks.split(",") if c]
               + [("sampled", int(s)) for s in args.negatives.split(",") if s])
    rows = []
    for loss, negatives in configs:
        command = [sys.executable, __file__, "--data", args.data, "--model", args.model, "--sampler", args.sampler,
                   "--batches", str(args.batches), "--warmup", str(args.warmup), "--one", f"{loss}:{negatives}",
                   "--full-limit-mb", str(args.full_limit_mb)]
        if args.modalities is not None:
            command += ["--modalities", args.modalities]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            print(f"{loss} S={negatives}: failed\n{result.stderr[-2000:]}")
            return 1
        rows.append((loss, negatives, json.loads(result.stdout.strip().splitlines()[-1])))
    full = next(row for loss, _, row in rows if loss == "full")
    print(f"{full['items']:,} items, {full['steps']} steps per epoch; full-softmax float32 logits of one batch: "
          f"{full['logits_mb']:,.0f} MB for the largest measured batch (mean {full['mean_logits_mb']:,.0f} MB), "
          f"{full['epoch_logits_mb']:,.0f} MB for the largest batch of the epoch")
    if full.get("skipped"):
        print(f"full softmax not run: the largest measured batch's logits are past --full-limit-mb "
              f"{args.full_limit_mb:g}; its softmax and gradient take as much again each")
    print(f"{'loss':<8} {'S or C':>6} {'ms/step':>9} {'cpu ms':>9} {'s/epoch':>9} {'peak MB':>9} {'speed-up':>9}")
    for loss, negatives, row in rows:
        label = "-" if loss in ("full", "keras") else str(negatives)
        if row.get("skipped"):
            print(f"{loss:<8} {label:>6} {'skipped':>9} {'-':>9} {'-':>9} {'-':>9} {'-':>9}")
            continue
        speedup = "-" if full.get("skipped") else f"{full['ms'] / row['ms']:8.2f}x"
        print(f"{loss:<8} {label:>6} {row['ms']:9.1f} {row['cpu_ms']:9.1f} {row['epoch_s']:9.1f} "
              f"{row['peak_mb']:9.0f} {speedup:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
