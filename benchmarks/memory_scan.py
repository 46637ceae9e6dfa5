"""The model's execution paths, one training step each: the fast path against the reference.

    python benchmarks/memory_scan.py [--steps 100] [--batch-size 64] [--num-items 10000] [--rounds 5]

Times one full MFN4Rec training step (paper sizes: item IDs + 1000-d image + 100-d text, d 20,
dropout 0.3, Adam, softmax over every item at every step) on the same random full-length batch for
each combination of

- `memory_mode`: `scan` (Eq. 9 as a parallel scan, the default) or `cell` (the `GatedMemoryCell`
  stepped by `keras.layers.RNN`, the reference), and
- `gru_implementation`: `fused` (all modalities' GRUs in one loop, the default) or `keras` (one
  `keras.layers.GRU` each, the reference),

plus MFN4Rec-g (no memory at all) and a model whose step is the output layer alone (embedding ->
item logits -> softmax), which bound what the memory and the GRUs can still cost. The paths are
timed in interleaved rounds (so a noisy machine slows them alike) and reported as wall time and
process CPU time (the sum over TensorFlow's threads; steadier when other jobs share the cores),
medians over rounds, with ratios against the reference path `cell + keras`. Also checks that the
paths compute the same inference output from the same weights.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from mfn4rec_tf.config import ModelConfig
from mfn4rec_tf.layers import ItemLogits
from mfn4rec_tf.model import build_model
from mfn4rec_tf.smoke import generated_batch

PATHS = (  # (label, variant, memory_mode, gru_implementation)
    ("reference: cell + keras GRUs", "mfn4rec", "cell", "keras"),
    ("scan + keras GRUs", "mfn4rec", "scan", "keras"),
    ("cell + fused GRUs", "mfn4rec", "cell", "fused"),
    ("default: scan + fused GRUs", "mfn4rec", "scan", "fused"),
    ("MFN4Rec-g (no memory), fused", "mfn4rec-g", "scan", "fused"),
)


def _compile(model):
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    return model


def _output_layer_only(config):
    """Embedding -> ItemLogits: the part of a step every path shares at full catalogue size."""
    ids = keras.Input((None,), dtype="int32", name="item_ids")
    h = keras.layers.Embedding(config.vocabulary_size, config.output_units)(ids)
    return keras.Model(ids, {"logits": ItemLogits(config.vocabulary_size)(h)})


def _paths(args):
    base = ModelConfig(num_items=args.num_items, seed=0)
    inputs, targets, weights = generated_batch(base, args.batch_size, args.steps, seed=0)
    inputs["item_ids"][:, -1] = np.maximum(inputs["item_ids"][:, -1], 1)  # every row full length T
    for name in ("image", "text"):
        inputs[name] = np.random.default_rng(1).normal(size=inputs[name].shape).astype("float32")
    steps, outputs, reference_weights = {}, {}, None
    for label, variant, memory_mode, gru in PATHS:
        keras.utils.set_random_seed(0)
        config = ModelConfig(num_items=args.num_items, variant=variant, memory_mode=memory_mode,
                             gru_implementation=gru, seed=0)
        model = build_model(config)
        if variant == "mfn4rec":
            if reference_weights is None:
                reference_weights = model.get_weights()
            model.set_weights(reference_weights)
            outputs[label] = model.predict_on_batch(inputs)["user_representation"]
        _compile(model)
        steps[label] = _trainer(model, inputs, targets, weights)
    model = _compile(_output_layer_only(base))
    steps["output layer alone (embedding -> logits)"] = _trainer(model, {"item_ids": inputs["item_ids"]}, targets,
                                                                 weights)
    return steps, outputs


def _trainer(model, inputs, targets, weights):
    def step():
        model.train_on_batch(inputs, {"logits": targets}, sample_weight={"logits": weights})

    for _ in range(3):  # trace and warm up
        step()
    return step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="sequence length T")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-items", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (2 steps per path each)")
    args = parser.parse_args(argv)
    steps, outputs = _paths(args)
    wall = {label: [] for label in steps}
    cpu = {label: [] for label in steps}
    for _ in range(args.rounds):
        for label, step in steps.items():
            started, started_cpu = time.perf_counter(), time.process_time()
            step()
            step()
            wall[label].append((time.perf_counter() - started) / 2)
            cpu[label].append((time.process_time() - started_cpu) / 2)
    reference = PATHS[0][0]
    print(f"MFN4Rec train step, T={args.steps}, batch {args.batch_size}, {args.num_items} items; "
          f"{os.cpu_count()} cores, {platform.platform()}, TF {tf.__version__}, {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"  {'path':44s} {'wall ms':>9s} {'x ref':>6s} {'cpu ms':>9s} {'x ref':>6s}")
    for label in steps:
        w, c = np.median(wall[label]), np.median(cpu[label])
        print(f"  {label:44s} {1000 * w:9.1f} {np.median(wall[reference]) / w:6.2f} {1000 * c:9.1f} "
              f"{np.median(cpu[reference]) / c:6.2f}")
    print("  (medians over rounds; 'x ref' = reference time / path time, > 1 is faster)")
    deviation = max(np.abs(out - outputs[reference]).max() for out in outputs.values())
    print(f"  max |path - reference| of h_out from the same weights: {deviation:.2e}")


if __name__ == "__main__":
    main()
