"""Full-ranking evaluation speed: all metrics against the bare top-K and the model forward alone.

    python benchmarks/evaluation_speed.py [--data DIR | --scale 1.0] [--variant mfn4rec] [--mode validation]
                                          [--batch-size 256] [--max-users N]

Data as in `training_speed.py` (`--data DIR`, or the generated Clothing-scale data at `--scale`).
A fresh model of `--variant` at the paper's settings (`mfn4rec_tf.training.new_model`, seed 0,
untrained) is put in "last" output mode (`with_output_mode`, as `fit` ranks), then, for every
evaluated user of the `paper` protocol's split in `--mode` (their history, the last 100 items):

(a) `mfn4rec_tf.training.evaluate_split`: every item ranked for every user, all metrics at
    K = 10, 20, 30, 50, the input gathered from the memory-mapped features on the way. Timed whole.
(b) the same batches, each stage timed on its own: gathering the input (`RankingInput.batches`),
    the model forward (`predict_on_batch`, logits over all items), the top-K
    (`mfn4rec_tf.metrics.top_k_items`, K = 50) and the metric accumulation
    (`RankingMetrics.update_from_ranked`).

Printed: seconds and users/s of (a); the bare top-K (forward + top_k_items) and the forward alone,
with (a) as a ratio of each, so the metrics' overhead shows. The forward is first run untimed on
batches of every shape (tracing); then (a) and (b) are run `--repeats` times, alternating, and the
fastest run of each is kept (the least disturbed by other work on the machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
from training_speed import machine_lines, open_benchmark_data, run_config

from mfn4rec_tf.config import VARIANTS
from mfn4rec_tf.data import RankingInput
from mfn4rec_tf.metrics import KS, RankingMetrics, top_k_items
from mfn4rec_tf.model import with_output_mode
from mfn4rec_tf.splits import make_split
from mfn4rec_tf.training import evaluate_split, new_model

WARMUP_BATCHES = 2


def warm_up(ranker, data: RankingInput, last_batch: RankingInput):
    """Runs the forward on the first `WARMUP_BATCHES` batches of `data` and on `last_batch` (its
    last, shorter, batch), untimed: the traces for every batch shape Keras will see (it relaxes the
    traced shape after two)."""
    for index, (inputs, _) in enumerate(data.batches()):
        if index == WARMUP_BATCHES:
            break
        ranker.predict_on_batch(inputs)
    for inputs, _ in last_batch.batches():
        ranker.predict_on_batch(inputs)


def stage_times(ranker, data: RankingInput, ks=KS):
    """Runs every batch of `data` through the stages of an evaluation, timing each on its own.

    Returns:
        `({"input": s, "forward": s, "top-k": s, "metrics": s}, metrics)` where `metrics` is the
        `RankingMetrics(ks).result()` of the same ranking (equal to `evaluate_split`'s).
    """
    metrics = RankingMetrics(ks)
    seconds = dict.fromkeys(("input", "forward", "top-k", "metrics"), 0.0)
    batches = data.batches()
    while True:
        started = time.perf_counter()
        try:
            inputs, targets = next(batches)
        except StopIteration:
            break
        gathered = time.perf_counter()
        logits = ranker.predict_on_batch(inputs)["logits"]
        forwarded = time.perf_counter()
        ranked = top_k_items(logits, metrics.max_k)
        ranked_at = time.perf_counter()
        metrics.update_from_ranked(ranked, targets)
        done = time.perf_counter()
        seconds["input"] += gathered - started
        seconds["forward"] += forwarded - gathered
        seconds["top-k"] += ranked_at - forwarded
        seconds["metrics"] += done - ranked_at
    return seconds, metrics.result()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", help="dataset directory (default: the generated Clothing-scale data at --scale)")
    parser.add_argument("--scale", type=float, default=1.0, help="scale of the generated data without --data")
    parser.add_argument("--variant", choices=VARIANTS, default="mfn4rec")
    parser.add_argument("--mode", choices=("validation", "test"), default="validation",
                        help="split of the paper protocol")
    parser.add_argument("--batch-size", type=int, default=256, help="users per batch (train.eval_batch_size)")
    parser.add_argument("--max-users", type=int, help="rank only the first N evaluated users (default: all)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of (a) and (b), alternating; the best is kept")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1 (received {args.batch_size})")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1 (received {args.repeats})")
    if args.max_users is not None and args.max_users < 1:
        parser.error(f"--max-users must be >= 1 (received {args.max_users})")
    try:
        dataset = open_benchmark_data(args.data, args.scale)
    except ValueError as error:
        parser.error(str(error))
    split = make_split(dataset.interactions, "paper", args.mode)
    if args.max_users is not None:
        keep = slice(0, args.max_users)
        split = dataclasses.replace(split, user_ids=split.user_ids[keep], histories=split.histories[keep],
                                    targets=split.targets[keep])
    if not len(split.histories):
        parser.error(f"the paper protocol's {args.mode} split of {dataset.name} has no user to rank")
    config = run_config(dataset, args.variant)
    config.train.eval_batch_size = args.batch_size
    names = config.modality_names(dataset)
    keras.utils.set_random_seed(config.train.seed)
    ranker = with_output_mode(new_model(config, dataset), "last")
    data = RankingInput(dataset, split.histories, split.targets, modalities=names, batch_size=args.batch_size,
                        max_length=config.data.max_length)
    last = (len(split.histories) - 1) // args.batch_size * args.batch_size  # first user of the last batch
    last_batch = RankingInput(dataset, split.histories[last:], split.targets[last:], modalities=names,
                              batch_size=args.batch_size, max_length=config.data.max_length)

    for line in machine_lines():
        print(line)
    print(f"data {dataset}")
    users = len(split.histories)
    history = sum(len(h) for h in data.histories) / users
    print(f"  {split.summary()}; ranked: {users:,} users (mean history {history:.1f}), "
          f"{-(-users // args.batch_size)} batches of {args.batch_size}, {dataset.num_items:,} items each")
    print(f"model {args.variant}, fresh (seed 0), 'last' output mode; metrics at K = {', '.join(map(str, KS))}")

    warm_up(ranker, data, last_batch)
    full, stages = None, None
    for _ in range(args.repeats):  # (a) and (b) alternate; each keeps its best
        started = time.perf_counter()
        full_metrics = evaluate_split(ranker, config, dataset, split, names, progress=False)
        full = min(full or float("inf"), time.perf_counter() - started)
        seconds, stage_metrics = stage_times(ranker, data)
        if stages is None or sum(seconds.values()) < sum(stages.values()):
            stages = seconds
        if stage_metrics != full_metrics:
            print("warning: the staged ranking's metrics differ from evaluate_split's")
    bare = stages["forward"] + stages["top-k"]
    print(f"(a) evaluate_split, all metrics   {full:8.2f} s  {users / full:9.0f} users/s   "
          f"recall@20 {100 * full_metrics['recall@20']:.3f}% (untrained)")
    print(f"(b) the same, stage by stage      {sum(stages.values()):8.2f} s")
    for stage, label in (("input", "input gather"), ("forward", "model forward"),
                         ("top-k", f"top-K (top_k_items, K={max(KS)})"), ("metrics", "metric accumulation")):
        print(f"      {label:<28}{stages[stage]:8.2f} s  {100 * stages[stage] / sum(stages.values()):5.1f}%")
    print(f"bare top-K (forward + top-K)      {bare:8.2f} s  {users / bare:9.0f} users/s   (a) / bare  "
          f"{full / bare:5.2f}x")
    print(f"forward alone                     {stages['forward']:8.2f} s  {users / stages['forward']:9.0f} users/s   "
          f"(a) / forward {full / stages['forward']:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
