"""Training speed of every MFN4Rec variant at the paper's settings, beside the memory's cell path.

    python benchmarks/training_speed.py [--data DIR | --scale 1.0] [--variants mfn4rec,mfn4rec:cell,...]
                                        [--batches 30] [--warmup 5] [--rounds 3] [--jit | --no-jit]

`--variants` entries are a variant, optionally followed by `:` and values of `ModelSection` fields:
`mfn4rec:cell` is the full model with `memory_mode="cell"` (the memory stepped by
`keras.layers.RNN(GatedMemoryCell)`: the reference every row is compared with), `mfn4rec:cell:keras`
also runs each GRU as its own `keras.layers.GRU` (`gru_implementation="keras"`, where the
configuration has that field); fields not named keep the `RunConfig` defaults (the fast paths).

Data: `--data DIR`, or (default) the generated Clothing-scale dataset of `clothing_data.py` at
`--scale`, generated into its cache directory if missing. Each variant trains through the code path
of `python -m mfn4rec_tf.fit`: `RunConfig` (paper protocol, validation mode; batch 64, targets all,
max_length 100, Adam 0.01), `mfn4rec_tf.training.new_model`, and `model.fit` on
`mfn4rec_tf.data.TrainingInput(...).tf_dataset()`, on the first `warmup + batches` batches of
epoch 0 (the same batches for every variant). The first `warmup` batches (tracing) are not timed.
The timed batches are cut into `--rounds` parts and run round-robin over the variants (one `fit`
per variant and part, order rotated each round), so that a change of the machine's load during the
run falls on every variant alike. A callback takes the time at the end of every batch; a step's time
is the gap to the previous batch end (the first batch of each `fit` is run only to start it). Input
preparation runs on tf.data's threads beside the step, as in a real run, so a stall of the input
counts.

Printed per variant: ms per step (mean wall time over the timed batches, and the CPU time of this
process per step, which other jobs on a shared machine disturb less), training events per second (scored
target positions), seconds per epoch EXTRAPOLATED as steps_per_epoch x mean step time (no epoch is
run), the analytic GFLOP per epoch (`flops.py`: 3 x forward per event, events of one epoch), the
achieved GFLOP/s (analytic FLOPs of the timed events / timed seconds) and the speed-up over the
`mfn4rec:cell` reference: the median over the timed batches of the reference's time on a batch over
this entry's time on the same batch (wall and CPU), which one disturbed step moves less than a
ratio of means. The timed batches are a sample of one epoch's shuffled
batches; their mean padded length is printed beside the epoch's, so the extrapolation's bias shows.

`--jit` XLA-compiles the train step (through `RunConfig.train.jit_compile` when it exists, else by
recompiling the model from `new_model` with `jit_compile=True`). XLA compiles for fixed shapes, and
the batches are padded to their own longest sequence, so every new length compiles again and the
timed steps include compilations; a variant whose step XLA cannot compile is reported as failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from clothing_data import clothing_dataset
from flops import training_flops_per_event

from mfn4rec_tf import config as model_config
from mfn4rec_tf.data import TrainingInput, length_bucketed_batches
from mfn4rec_tf.dataset import load_dataset
from mfn4rec_tf.run_config import DataSection, ModelSection, RunConfig, TrainSection
from mfn4rec_tf.splits import make_split
from mfn4rec_tf.training import new_model, training_loss

REFERENCE = "mfn4rec:cell"
DEFAULT_VARIANTS = (REFERENCE,) + model_config.VARIANTS
OPTIONS = {  # entry option -> the `ModelSection` field it sets
    **{mode: "memory_mode" for mode in model_config.MEMORY_MODES},
    **{kind: "gru_implementation" for kind in getattr(model_config, "GRU_IMPLEMENTATIONS", ())},
}


def machine_lines() -> list:
    """Date, host and software lines that every benchmark prints first."""
    gpus = [device.name for device in tf.config.list_physical_devices("GPU")]
    try:
        load = "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:  # not every platform has it
        load = "load average unknown"
    return [
        f"date {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"machine {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{load}, GPUs: {', '.join(gpus) or 'none'}",
        f"python {platform.python_version()}, TensorFlow {tf.__version__}, Keras {keras.__version__}",
    ]


def open_benchmark_data(path, scale):
    """The dataset at `path`, or the generated Clothing-scale one at `scale` (generated if missing)."""
    if path:
        return load_dataset(path)
    return clothing_dataset(scale=scale)


def parse_entry(entry: str):
    """`"mfn4rec:cell"` -> `("mfn4rec", {"memory_mode": "cell"})`: a variant, then options, each a
    value of a `ModelSection` field (`OPTIONS`); unnamed fields keep their defaults.

    Raises:
        ValueError: an unknown variant or option, or two options for one field.
    """
    variant, *options = entry.split(":")
    if variant not in model_config.VARIANTS:
        raise ValueError(f"unknown variant {variant!r} in {entry!r}; choose from {', '.join(model_config.VARIANTS)}")
    fields = {}
    for option in options:
        if option not in OPTIONS:
            raise ValueError(f"unknown option {option!r} in {entry!r}; options: {', '.join(OPTIONS)}")
        if OPTIONS[option] in fields:
            raise ValueError(f"{entry!r} sets {OPTIONS[option]} twice")
        fields[OPTIONS[option]] = option
    return variant, fields


def run_config(dataset, entry: str, jit=None) -> RunConfig:
    """The run configuration of one `--variants` entry (`parse_entry`) at the paper's settings.
    `jit` goes to `train.jit_compile` when `RunConfig` has that field."""
    variant, fields = parse_entry(entry)
    config = RunConfig(
        data=DataSection(path=str(dataset.path), protocol="paper", max_length=100),
        model=ModelSection(variant=variant, **fields),
        train=TrainSection(batch_size=64, targets="all", learning_rate=0.01, seed=0),
    )
    if jit is not None and has_jit_field():
        config.train.jit_compile = jit
        config.validate()
    return config


def has_jit_field() -> bool:
    """Whether `RunConfig.train` has a `jit_compile` field (then `new_model` applies it)."""
    return "jit_compile" in {field.name for field in dataclasses.fields(TrainSection)}


def build(config: RunConfig, dataset, jit=None):
    """`new_model(config, dataset)` with the weights of seed `train.seed`, recompiled with
    `jit_compile=jit` when `jit` is given and `RunConfig` cannot carry it."""
    keras.utils.set_random_seed(config.train.seed)
    model = new_model(config, dataset)
    if jit is not None and not has_jit_field():
        model.compile(optimizer=keras.optimizers.Adam(config.train.learning_rate),
                      loss={"logits": training_loss(config.model_config(dataset))}, jit_compile=jit)
    return model


class StepClock(keras.callbacks.Callback):
    """Records the wall time (`time.perf_counter`) and the CPU time of this process, all threads
    (`time.process_time`), at the end of every batch of a `fit`.

    Reading the loss at each batch end waits for the step to finish, so the times are of finished steps.
    """

    def __init__(self):
        super().__init__()
        self.times, self.cpu_times, self.losses = [], [], []

    def on_train_begin(self, logs=None):
        self.times, self.cpu_times, self.losses = [], [], []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))
        self.times.append(time.perf_counter())
        self.cpu_times.append(time.process_time())


def training_input(config: RunConfig, dataset, split) -> TrainingInput:
    """The `TrainingInput` that `mfn4rec_tf.training` builds for this configuration, at epoch 0."""
    return TrainingInput(dataset, split.train_sequences, modalities=config.modality_names(dataset),
                         batch_size=config.train.batch_size, max_length=config.data.max_length,
                         targets=config.train.targets, seed=config.train.seed)


def batch_stats(data: TrainingInput, first: int, stop: int):
    """`(sequences, events, padded positions)` of batches `first` to `stop - 1` of epoch 0, read from
    the batches themselves."""
    sequences = events = positions = 0
    for index, (inputs, _, weights) in enumerate(data.batches(0)):
        if index == stop:
            break
        if index >= first:
            sequences += len(inputs["item_ids"])
            events += int(weights["logits"].sum())
            positions += int(inputs["item_ids"].size)
    return sequences, events, positions


def epoch_positions(data: TrainingInput) -> int:
    """Padded positions of one epoch: every batch of epoch 0 padded to its longest sequence."""
    rng = np.random.default_rng([data.seed, 0])  # the order TrainingInput.batches(0) uses
    batches = length_bucketed_batches(data.lengths, data.batch_size, rng, data.bucket_batches)
    return int(sum(len(index) * data.lengths[index].max() for index in batches))


class Contender:
    """One `--variants` entry: its compiled model, its input, and the times of its timed steps."""

    def __init__(self, entry, dataset, split, jit=None):
        self.entry = entry
        self.config = run_config(dataset, entry, jit)
        self.model = build(self.config, dataset, jit)
        self.data = training_input(self.config, dataset, split)
        self.flops_per_event = training_flops_per_event(self.config.model_config(dataset))
        self.clock = StepClock()
        self.step_seconds, self.step_cpu_seconds = [], []
        self.warmup_seconds = 0.0
        self.loss = float("nan")
        self.error = None

    def train(self, first, stop):
        """`model.fit` on batches `first` to `stop - 1` of epoch 0 of `TrainingInput.tf_dataset()`;
        returns the wall and the CPU seconds between consecutive batch ends (`stop - first - 1` of
        each: the first batch of a `fit` also pays its start)."""
        self.data.epoch = 0  # every pass of the input counts as epoch 0: the same batches each time
        batches = self.data.tf_dataset().skip(first).take(stop - first)
        self.model.fit(batches, epochs=1, verbose=0, shuffle=False, callbacks=[self.clock])
        self.loss = self.clock.losses[-1]
        return np.diff(self.clock.times), np.diff(self.clock.cpu_times)

    def warm_up(self, batches):
        """Trains on the first `batches` batches (tracing). A step TensorFlow cannot run (e.g. one XLA
        cannot compile) is recorded in `error` instead of raised, so the other entries still run."""
        started = time.perf_counter()
        try:
            self.train(0, batches)
        except tf.errors.OpError as error:
            self.error = f"{type(error).__name__}: {_first_line(error.message)}"
        self.warmup_seconds = time.perf_counter() - started

    def figures(self) -> dict:
        if self.error:
            return {"entry": self.entry, "error": self.error}
        times = np.asarray(self.step_seconds)
        return {
            "entry": self.entry,
            "jit_compile": bool(self.model.jit_compile),
            "step_seconds": float(times.mean()),
            "step_cpu_seconds": float(np.mean(self.step_cpu_seconds)),
            "per_step": times,  # [batches] wall seconds, in batch order (the same order for every entry)
            "per_step_cpu": np.asarray(self.step_cpu_seconds),
            "timed_seconds": float(times.sum()),
            "warmup_seconds": self.warmup_seconds,
            "steps_per_epoch": self.data.steps_per_epoch,
            "events_per_epoch": int(self.data.lengths.sum()),
            "flops_per_event": self.flops_per_event,
            "final_loss": self.loss,
        }


def _first_line(text):
    """The telling line of a TensorFlow error message: one that names XLA, else the first that is not
    TensorFlow's preamble."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    for line in lines:
        if "XLA" in line:
            return line
    lines = [line for line in lines if not line.startswith(("Graph execution error", "Detected at node", "File "))]
    return lines[0] if lines else "(no message)"


def chunks(warmup, batches, rounds):
    """`(first, stop)` batch ranges of each round: the timed batches `warmup .. warmup + batches - 1`
    cut into `rounds` near-equal parts, each led by the batch before it (run, not timed)."""
    edges = np.linspace(warmup, warmup + batches, rounds + 1).round().astype(int)
    return [(int(a) - 1, int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def time_entries(entries, dataset, split, warmup, batches, rounds=3, jit=None, progress=print):
    """Times every entry on the same batches; returns `{entry: figures}`.

    All models are built and warmed up first; then the timed batches are run in `rounds` rounds, every
    entry in each round (the order rotated from round to round), so that a change in the load of the
    machine during the run falls on every entry alike.
    """
    contenders = []
    for entry in entries:
        contender = Contender(entry, dataset, split, jit)
        contender.warm_up(warmup)
        contenders.append(contender)
        if progress:
            failure = f"; FAILED: {contender.error}" if contender.error else ""
            progress(f"  built and warmed up {entry} ({contender.warmup_seconds:.1f}s{failure})")
    working = [contender for contender in contenders if not contender.error]
    for number, (first, stop) in enumerate(chunks(warmup, batches, rounds)):
        shift = number % max(len(working), 1)
        for contender in working[shift:] + working[:shift]:
            wall, cpu = contender.train(first, stop)
            contender.step_seconds.extend(wall)
            contender.step_cpu_seconds.extend(cpu)
        if progress:
            progress(f"  round {number + 1}/{rounds}: batches {first + 2}-{stop} timed")
    results = {}
    for contender in contenders:
        results[contender.entry] = contender.figures()
        del contender.model
    gc.collect()
    return results


def parse_entries(text):
    """`"mfn4rec,mfn4rec:cell"` -> a tuple of `--variants` entries (argparse type)."""
    entries = tuple(entry.strip() for entry in text.split(",") if entry.strip())
    if not entries:
        raise argparse.ArgumentTypeError(f"no variant in {text!r}")
    for entry in entries:
        try:
            parse_entry(entry)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return entries


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", help="dataset directory (default: the generated Clothing-scale data at --scale)")
    parser.add_argument("--scale", type=float, default=1.0, help="scale of the generated data without --data")
    parser.add_argument("--variants", type=parse_entries, default=DEFAULT_VARIANTS,
                        help="comma-separated entries VARIANT[:OPTION...], VARIANT one of "
                        f"{', '.join(model_config.VARIANTS)}, OPTION one of {', '.join(OPTIONS)} "
                        "(memory_mode, gru_implementation; default: the RunConfig defaults)")
    parser.add_argument("--batches", type=int, default=30, help="timed batches per variant")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches first (tracing)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds the timed batches are cut into (see time_entries)")
    parser.add_argument("--jit", action=argparse.BooleanOptionalAction, default=None,
                        help="XLA-compile the train step (default: what new_model gives: Keras' 'auto', off on CPU). "
                        "XLA compiles per input shape: every new padded batch length compiles again")
    args = parser.parse_args(argv)
    if args.batches < 1:
        parser.error(f"--batches must be >= 1 (received {args.batches})")
    if args.warmup < 1:
        parser.error(f"--warmup must be >= 1: the first batch traces the step (received {args.warmup})")
    if not 1 <= args.rounds <= args.batches:
        parser.error(f"--rounds must be between 1 and --batches (received {args.rounds})")
    try:
        dataset = open_benchmark_data(args.data, args.scale)
    except ValueError as error:
        parser.error(str(error))
    split = make_split(dataset.interactions, "paper", "validation")
    data = training_input(run_config(dataset, model_config.VARIANTS[0]), dataset, split)
    if args.warmup + args.batches > data.steps_per_epoch:
        parser.error(f"--warmup {args.warmup} + --batches {args.batches} exceed the {data.steps_per_epoch} "
                     "batches of an epoch")
    timed_sequences, timed_events, timed_positions = batch_stats(data, args.warmup, args.warmup + args.batches)
    epoch_padded = epoch_positions(data)

    for line in machine_lines():
        print(line)
    print(f"data {dataset}")
    print(f"  {split.summary()}")
    print(f"  epoch: {data.steps_per_epoch} steps of {data.batch_size}, {int(data.lengths.sum()):,} events, "
          f"{epoch_padded:,} padded positions (mean padded length {epoch_padded / len(data.lengths):.1f})")
    print(f"  timed: batches {args.warmup + 1}-{args.warmup + args.batches} of epoch 0, {timed_events:,} events, "
          f"{timed_positions:,} padded positions (mean padded length "
          f"{timed_positions / timed_sequences:.1f})")
    print(f"settings: paper protocol (validation), batch 64, targets all, max_length 100, Adam 0.01; model.fit "
          f"on TrainingInput.tf_dataset(); jit {'as new_model' if args.jit is None else args.jit}"
          f"{' (RunConfig.train.jit_compile)' if args.jit is not None and has_jit_field() else ''}")
    results = time_entries(args.variants, dataset, split, args.warmup, args.batches, args.rounds, args.jit)
    print(report(results, timed_events))
    return 0


def report(results, timed_events):
    """The results table: one row per entry."""
    reference = results.get(REFERENCE)
    reference = None if reference is None or "error" in reference else reference
    header = (f"{'variant':<20}{'jit':>6}{'ms/step':>10}{'CPU ms':>9}{'events/s':>11}{'s/epoch*':>10}"
              f"{'GFLOP/epoch':>13}{'GFLOP/s':>9}{'vs cell':>9}{'CPU vs cell':>13}")
    lines = [header]
    for entry, r in results.items():
        if "error" in r:
            lines.append(f"{entry:<20} failed: {r['error']}")
            continue
        events_per_second = timed_events / r["timed_seconds"]
        epoch_seconds = r["steps_per_epoch"] * r["step_seconds"]
        epoch_gflop = r["events_per_epoch"] * r["flops_per_event"] / 1e9
        achieved = timed_events * r["flops_per_event"] / r["timed_seconds"] / 1e9
        if reference:
            speedup = f"{paired_speedup(reference['per_step'], r['per_step']):8.2f}x"
            cpu_speedup = f"{paired_speedup(reference['per_step_cpu'], r['per_step_cpu']):12.2f}x"
        else:
            speedup, cpu_speedup = f"{'-':>9}", f"{'-':>13}"
        lines.append(f"{entry:<20}{str(r['jit_compile']):>6}{1000 * r['step_seconds']:10.1f}"
                     f"{1000 * r['step_cpu_seconds']:9.1f}{events_per_second:11.0f}{epoch_seconds:10.1f}"
                     f"{epoch_gflop:13.1f}{achieved:9.2f}{speedup}{cpu_speedup}")
    lines.append("ms/step: wall time; CPU ms: CPU time of this process per step, all threads (input included), "
                 "less sensitive to other jobs on a shared machine.")
    lines.append("* s/epoch EXTRAPOLATED: steps_per_epoch x mean wall ms/step of the timed batches (no epoch was run). "
                 "GFLOP: analytic (flops.py), 3 x forward per event; GFLOP/s on wall time; "
                 "vs cell: speed-up over mfn4rec:cell (wall, CPU), the median over the timed batches of "
                 "(reference time / this entry's time) on the same batch.")
    return "\n".join(lines)


def paired_speedup(reference_times, times) -> float:
    """Median over batches of `reference_times[i] / times[i]`: the speed-up measured batch by batch on
    the same batches, which a slow step (another job's burst) moves less than a ratio of means."""
    return float(np.median(np.asarray(reference_times) / np.asarray(times)))


if __name__ == "__main__":
    sys.exit(main())
