"""Install check: train every model variant, at the paper's sizes, on one generated batch.

    python -m mfn4rec_tf.smoke [--steps 40] [--variants mfn4rec mfn4rec-g ...]

Builds each variant with the paper's defaults (item IDs + 1000-d image + 100-d text features, d 20,
dropout 0.3, Adam lr 0.01), fits it on one generated batch of right-padded sequences with the masked
next-item cross-entropy on every prefix, and prints the loss before and after. It exits with status 1
if any variant's loss does not fall to at most `--max-ratio` of its start (default 0.9; in 40
steps the paper-size models reach about 0.06 of it, mfn4rec-m, the slowest learner, about 0.8), so a broken
install (or a broken model) does not pass quietly. The batch is random: this shows the model trains,
not that it recommends well; `python -m mfn4rec_tf.fit` is the real job.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

from mfn4rec_tf.config import PAPER_MODALITIES, VARIANTS, ModelConfig
from mfn4rec_tf.model import build_model
from mfn4rec_tf.softmax_loss import SoftmaxCrossEntropy

log = logging.getLogger("mfn4rec_tf.smoke")


def generated_batch(config: ModelConfig, batch_size: int, length: int, seed: int):
    """Random right-padded sequences (lengths 2..length) with per-step features, and next-item targets."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((batch_size, length), "int32")
    for row, size in enumerate(rng.integers(2, length + 1, size=batch_size)):
        ids[row, :size] = rng.integers(1, config.num_items + 1, size=size)
    inputs = {"item_ids": ids}
    for modality in config.modalities:
        table = rng.normal(size=(config.vocabulary_size, modality.dim)).astype("float32")
        table[0] = 0.0
        inputs[modality.name] = table[ids]  # each item has one fixed feature vector
    targets = np.zeros_like(ids)
    targets[:, :-1] = ids[:, 1:]
    return inputs, targets, (targets != 0).astype("float32")


def train_variant(variant, args):
    """Fits one variant; returns (parameters, first loss, last loss, seconds)."""
    keras.utils.set_random_seed(args.seed)
    config = ModelConfig(num_items=args.num_items, variant=variant, modalities=PAPER_MODALITIES, seed=args.seed)
    model = build_model(config)
    model.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate),
        loss={"logits": SoftmaxCrossEntropy()},
    )
    inputs, targets, weights = generated_batch(config, args.batch_size, args.length, args.seed)
    start = time.perf_counter()
    history = model.fit(
        inputs,
        {"logits": targets},
        sample_weight={"logits": weights},
        batch_size=args.batch_size,
        epochs=args.steps,
        verbose=0,
        callbacks=[_ProgressLine(variant, args.steps)],
    )
    losses = history.history["loss"]
    return model.count_params(), losses[0], losses[-1], time.perf_counter() - start


class _ProgressLine(keras.callbacks.Callback):
    """One line per variant, rewritten in place: `mfn4rec  step 12/40  loss 5.91`."""

    def __init__(self, name, total):
        super().__init__()
        self.name, self.total = name, total

    def on_epoch_end(self, epoch, logs=None):
        last = epoch + 1 == self.total
        if sys.stdout.isatty() or last:  # redirected output gets the final line only
            line = f"  {self.name:<12} step {epoch + 1:>3}/{self.total}  loss {logs['loss']:.4f}"
            print(("\r" if sys.stdout.isatty() else "") + line, end="\n" if last else "", flush=True)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m mfn4rec_tf.smoke",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS), help="variants to train")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps (one batch each)")
    parser.add_argument("--num-items", type=int, default=500, help="catalogue size of the generated data")
    parser.add_argument("--batch-size", type=int, default=64, help="sequences in the batch (paper: 64)")
    parser.add_argument("--length", type=int, default=20, help="longest sequence in the batch")
    parser.add_argument("--learning-rate", type=float, default=0.01, help="Adam learning rate (paper: 0.01)")
    parser.add_argument("--max-ratio", type=float, default=0.9, help="fail if final loss > ratio * first loss")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, weights and dropout")
    args = parser.parse_args(argv)
    for name in ("steps", "num_items", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.length < 2:
        parser.error(f"--length must be >= 2, got {args.length}")
    return args


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log.info(
        "Training %d variant(s) on one generated batch: %d sequences of up to %d items, %d-item catalogue, "
        "image 1000-d + text 100-d, %d steps.",
        len(args.variants), args.batch_size, args.length, args.num_items, args.steps,
    )
    rows, failed = [], []
    for variant in args.variants:
        params, first, last, seconds = train_variant(variant, args)
        rows.append((variant, params, first, last, seconds))
        if not last <= args.max_ratio * first:
            failed.append(variant)
    print(f"\n{'variant':<12} {'params':>9} {'first loss':>11} {'last loss':>10} {'seconds':>8}")
    for variant, params, first, last, seconds in rows:
        print(f"{variant:<12} {params:>9,} {first:>11.4f} {last:>10.4f} {seconds:>8.1f}")
    if failed:
        log.error("Loss did not fall below %.2f x its start for: %s", args.max_ratio, ", ".join(failed))
        return 1
    log.info("All variants trained: loss fell below %.2f x its start.", args.max_ratio)
    return 0


if __name__ == "__main__":
    sys.exit(main())
