"""Seconds per training epoch: one process against workers of `train.strategy: multi-worker` on 127.0.0.1.

    python benchmarks/multi_worker.py [--data DIR] [--epochs 3] [--batch-size 64] [--workers 2]

Trains MFN4Rec (paper settings) on the leave-one-out validation split's training sequences
(default: the embedded demo) for `--epochs` epochs, three ways, each in fresh processes:

1. one process, Keras `fit` (`train.strategy: none`, what `fit` runs on one machine);
2. one process, the multi-worker loop (`mfn4rec_tf/multi_worker.py`) over a one-worker `TF_CONFIG`;
3. `--workers` processes of the multi-worker loop on 127.0.0.1, each with half (a 1/workers slice)
   of every global batch of `--batch-size`.

Only the training epochs are timed (`fit_epoch`, no validation ranking); the first epoch traces the
step function and is left out of the median. Prints the median seconds per epoch of each, and the
ratios. On one machine the workers share its cores and talk over loopback, so (3) against (1)
measures the overhead of the distribution, not the gain of more machines; the load average at the
start is printed, since other jobs on the machine change every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TIMEOUT = 1800


def free_ports(count):
    """`count` distinct free TCP ports on 127.0.0.1 (bound, read, released)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def worker(args):
    """One process's part: trains `args.epochs` epochs; the chief prints `{"seconds": [...], "loss": x}`."""
    import keras

    from mfn4rec_tf import training
    from mfn4rec_tf.data import TrainingInput

    trainer = training.KerasFit()
    if args.mode == "multi-worker":
        from mfn4rec_tf.cluster import read_cluster
        from mfn4rec_tf.multi_worker import MultiWorker

        trainer = MultiWorker(read_cluster())  # first: before TensorFlow runs anything
    from mfn4rec_tf.dataset import load_dataset
    from mfn4rec_tf.run_config import load_config
    from mfn4rec_tf.splits import make_split

    config = load_config(overrides=[f"train.batch_size={args.batch_size}", f"data.path={args.data}"])
    dataset = load_dataset(args.data)
    split = make_split(dataset.interactions, "leave-one-out", "validation")
    keras.utils.set_random_seed(0)
    model = training.new_model(config, dataset)
    trainer.prepare(model, lambda: training.new_model(config, dataset))
    data = TrainingInput(dataset, split.train_sequences, modalities=config.modality_names(dataset),
                         batch_size=args.batch_size, max_length=config.data.max_length, seed=0)
    seconds, loss = [], None
    for epoch in range(args.epochs):
        start = time.perf_counter()
        loss = trainer.fit_epoch(model, data, epoch, None, False, "")
        seconds.append(time.perf_counter() - start)
    if trainer.writes:
        print(json.dumps({"seconds": seconds, "loss": loss, "steps": data.steps_per_epoch}))
    return 0


def _run(args, mode, processes, folder):
    """Runs `processes` worker processes of `mode`; returns the chief's JSON report."""
    addresses = [f"127.0.0.1:{port}" for port in free_ports(processes)]
    command = [sys.executable, __file__, "--worker", mode, "--data", str(args.data), "--epochs", str(args.epochs),
               "--batch-size", str(args.batch_size)]
    started = []
    for index in range(processes):
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
        if mode == "multi-worker":
            task = {"type": "worker", "index": index}
            env["TF_CONFIG"] = json.dumps({"cluster": {"worker": addresses}, "task": task})
        with open(folder / f"{mode}-{processes}-{index}.log", "wb") as log:
            started.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE if index == 0 else log,
                                            stderr=log, text=True))
    try:
        output, _ = started[0].communicate(timeout=TIMEOUT)
        for process in started[1:]:
            process.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        for process in started:
            process.kill()
        raise SystemExit(f"{mode} x{processes} did not finish in {TIMEOUT}s (logs in {folder})") from None
    if any(p.returncode for p in started):
        raise SystemExit(f"{mode} x{processes} failed (logs in {folder}):\n"
                         + (folder / f"{mode}-{processes}-0.log").read_text()[-2000:])
    return json.loads(output.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="dataset directory (default: the embedded demo)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (the first is not counted)")
    parser.add_argument("--batch-size", type=int, default=64, help="global batch (sequences)")
    parser.add_argument("--workers", type=int, default=2, help="workers of the multi-worker run")
    parser.add_argument("--worker", choices=("keras", "multi-worker"), dest="mode", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is not counted)")
    if args.mode:
        return worker(args)
    if args.data is None:  # made once here, so that the workers do not write the cache at the same time
        from mfn4rec_tf.demo import default_path, demo_dataset

        demo_dataset()
        args.data = default_path(0)
    load = "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    print(f"{args.data}; global batch {args.batch_size}; {args.epochs} epochs per run; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; {load}", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        runs = [("1 process, Keras fit", _run(args, "keras", 1, folder)),
                ("1 process, multi-worker loop", _run(args, "multi-worker", 1, folder)),
                (f"{args.workers} workers on 127.0.0.1", _run(args, "multi-worker", args.workers, folder))]
    medians = [statistics.median(report["seconds"][1:]) for _, report in runs]
    print(f"{'run':<32}{'s/epoch':>10}{'steps':>7}{'loss':>9}")
    for (name, report), median in zip(runs, medians):
        print(f"{name:<32}{median:>10.2f}{report['steps']:>7}{report['loss']:>9.4f}")
    print(f"{args.workers} workers / 1 process (fit): {medians[2] / medians[0]:.2f}x the time per epoch; "
          f"/ 1 process (same loop): {medians[2] / medians[1]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
