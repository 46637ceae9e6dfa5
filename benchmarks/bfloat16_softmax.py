"""Does bfloat16 make the full softmax cheaper on this CPU? The output layer's training step in three
precisions, timed against float32 in the same process.

    python benchmarks/bfloat16_softmax.py [--positions 2560] [--width 20] [--items 41241]
                                          [--repeats 7] [--threads 1]

The step is the part of an MFN4Rec training step that the full softmax costs (benchmarks/RESULTS.md,
"FLOPs": 89% of it): logits = h · W for `--positions` user representations of `--width` against
`--items` item vectors, the softmax cross-entropy of a target per position, and the gradients of
both h and W. Three variants, each a `tf.function`:

- `float32`: everything in float32 (what `fit` does);
- `bf16 matmul`: h and W cast to bfloat16 for the product, the logits cast back to float32 for the
  cross-entropy (Keras' `mixed_bfloat16` policy does this for a `Dense` layer followed by a float32
  loss);
- `bf16 all`: the cross-entropy on the bfloat16 logits as well (the [positions, items] arrays at half
  the bytes).

Printed: the CPU flags that matter (avx512_bf16, amx_bf16 from /proc/cpuinfo), the median CPU time
per step of each variant over `--repeats` interleaved rounds (after two untimed calls that trace),
its ratio to float32, and the loss of each variant on the same inputs (bfloat16 keeps ~3 significant
digits). A benchmark, not a test: CI does not run it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def cpu_flags(names=("avx512f", "avx512_bf16", "amx_bf16", "amx_tile")) -> dict:
    """Which of `names` /proc/cpuinfo lists (all False where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as handle:
            words = set(handle.read().split())
    except OSError:
        words = set()
    return {name: name in words for name in names}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--positions", type=int, default=64 * 40, help="B·T rows of h [default: 2560]")
    parser.add_argument("--width", type=int, default=20, help="d, the item vectors' width [default: 20]")
    parser.add_argument("--items", type=int, default=41241, help="N + 1 columns [default: 41241, food]")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds [default: 7]")
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow threads [default: 1]")
    args = parser.parse_args(argv)
    for name in ("positions", "width", "items", "repeats", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1. Received: {getattr(args, name)}")

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    generator = tf.random.Generator.from_seed(0)
    h = generator.normal([args.positions, args.width])
    kernel = tf.Variable(generator.normal([args.width, args.items]) * 0.1)
    targets = generator.uniform([args.positions], 1, args.items, tf.int32)

    def step(product_dtype, loss_dtype):
        with tf.GradientTape() as tape:
            tape.watch(h)
            logits = tf.matmul(tf.cast(h, product_dtype), tf.cast(kernel, product_dtype))
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, tf.cast(logits, loss_dtype))
            loss = tf.reduce_mean(tf.cast(losses, tf.float32))
        grad_h, grad_kernel = tape.gradient(loss, [h, kernel])
        return loss, tf.reduce_sum(tf.cast(grad_h, tf.float32)), tf.reduce_sum(tf.cast(grad_kernel, tf.float32))

    variants = {"float32": (tf.float32, tf.float32), "bf16 matmul": (tf.bfloat16, tf.float32),
                "bf16 all": (tf.bfloat16, tf.bfloat16)}
    functions, losses, errors = {}, {}, {}
    for name, dtypes in variants.items():
        function = tf.function(lambda dtypes=dtypes: step(*dtypes))
        try:
            losses[name] = float(function()[0])
            function()
            functions[name] = function
        except (tf.errors.OpError, TypeError, ValueError) as error:  # a kernel this build lacks
            errors[name] = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
    times = {name: [] for name in functions}
    for _ in range(args.repeats):
        for name, function in functions.items():
            start = time.process_time()
            function()
            times[name].append(time.process_time() - start)

    flags = cpu_flags()
    print(f"CPU flags: {', '.join(f'{k}={v}' for k, v in flags.items())}; TensorFlow {tf.__version__}, "
          f"{args.threads} thread(s)")
    print(f"logits [{args.positions}, {args.items}] from width {args.width}; median of {args.repeats} rounds")
    print("| variant | CPU ms/step | vs float32 | loss |")
    print("|---|---:|---:|---:|")
    reference = statistics.median(times["float32"]) if "float32" in times else None
    for name in variants:
        if name in errors:
            print(f"| {name} | not run: {errors[name]} | | |")
            continue
        median = statistics.median(times[name])
        ratio = f"{reference / median:.2f}x" if reference else "-"
        print(f"| {name} | {1000 * median:.1f} | {ratio} | {losses[name]:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
