"""The gated memory's two execution paths: parallel scan against the step-by-step RNN cell.

    python benchmarks/memory_scan.py [--steps 100] [--batch-size 64] [--repeats 20]

Times one full MFN4Rec training step (paper sizes: item IDs + 1000-d image + 100-d text, d 20,
dropout 0.3, Adam) on the same random batch with `memory_mode="cell"` and `"scan"`, in one run, and
prints milliseconds per step and the ratio. Also checks that both give the same inference output.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from mfn4rec_tf.config import ModelConfig  # noqa: E402
from mfn4rec_tf.model import build_model  # noqa: E402
from mfn4rec_tf.smoke import generated_batch  # noqa: E402


def step_time(mode, args, weights=None):
    keras.utils.set_random_seed(0)
    config = ModelConfig(num_items=args.num_items, memory_mode=mode, seed=0)
    model = build_model(config)
    if weights is not None:
        model.set_weights(weights)
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    inputs, targets, sample_weights = generated_batch(config, args.batch_size, args.steps, seed=0)
    inputs["item_ids"][:, -1] = np.maximum(inputs["item_ids"][:, -1], 1)  # full length T
    for name in ("image", "text"):
        inputs[name] = np.random.default_rng(1).normal(size=inputs[name].shape).astype("float32")
    prediction = model.predict_on_batch(inputs)["user_representation"]
    for _ in range(3):  # trace and warm up
        model.train_on_batch(inputs, {"logits": targets}, sample_weight={"logits": sample_weights})
    start = time.perf_counter()
    for _ in range(args.repeats):
        model.train_on_batch(inputs, {"logits": targets}, sample_weight={"logits": sample_weights})
    return (time.perf_counter() - start) / args.repeats, model, prediction


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="sequence length T")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-items", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    cell_seconds, cell_model, cell_out = step_time("cell", args)
    scan_seconds, _, scan_out = step_time("scan", args, weights=None)
    print(f"MFN4Rec train step, T={args.steps}, batch {args.batch_size}, {args.num_items} items, {os.cpu_count()} cores")
    print(f"  cell path  {1000 * cell_seconds:8.1f} ms/step")
    print(f"  scan path  {1000 * scan_seconds:8.1f} ms/step")
    print(f"  speed-up   {cell_seconds / scan_seconds:8.2f}x")
    print(f"  max |scan - cell| of h_out before training: {np.abs(scan_out - cell_out).max():.2e}")


if __name__ == "__main__":
    main()
