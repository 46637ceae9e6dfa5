"""Is the input the bottleneck? tf.data batches/s alone against train steps/s on the same batches.

    python benchmarks/input_pipeline.py [--data DIR] [--batches 60] [--batch-size 64]

Prints, in one run on this machine: (1) batches/s of the tf.data input alone (gathering every
modality's features from the memory-mapped matrices), (2) train steps/s of MFN4Rec (paper
settings) on the same batches held in memory, after two warm-up passes that trace the batch shapes,
(3) steps/s of `model.fit` fed by the tf.data input (after two warm-up epochs), and the ratios.
The input keeps up when (1) is well above (2) and (3) is close to (2).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras

from mfn4rec_tf.config import ModelConfig
from mfn4rec_tf.data import TrainingInput
from mfn4rec_tf.dataset import load_dataset
from mfn4rec_tf.demo import demo_dataset
from mfn4rec_tf.model import build_model
from mfn4rec_tf.splits import make_split


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="dataset directory (default: the embedded demo)")
    parser.add_argument("--batches", type=int, default=60, help="batches per measurement")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    dataset = load_dataset(args.data) if args.data else demo_dataset()
    split = make_split(dataset.interactions, "leave-one-out", "validation")
    data = TrainingInput(dataset, split.train_sequences, batch_size=args.batch_size, seed=0)
    n = min(args.batches, data.steps_per_epoch)
    print(f"{dataset}; {n} batches of {args.batch_size}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores")

    stream = iter(data.tf_dataset().repeat())
    next(stream)  # start the generator and warm the page cache of the first rows
    start = time.perf_counter()
    batches = [next(stream) for _ in range(n)]
    input_rate = n / (time.perf_counter() - start)

    keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(num_items=dataset.num_items, modalities=dataset.modality_configs()))
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    for _ in range(2):  # warm-up passes: every batch length is traced (then Keras relaxes the shapes)
        for batch in batches:
            model.train_on_batch(*batch)
    start = time.perf_counter()
    for batch in batches:
        model.train_on_batch(*batch)
    step_rate = n / (time.perf_counter() - start)

    fit_input = data.tf_dataset().repeat()
    model.fit(fit_input, epochs=2, steps_per_epoch=n, verbose=0, shuffle=False)  # warm-up, as for (2)
    start = time.perf_counter()
    model.fit(fit_input, epochs=1, steps_per_epoch=n, verbose=0, shuffle=False)
    fit_rate = n / (time.perf_counter() - start)

    print(f"(1) tf.data input alone         {input_rate:8.1f} batches/s")
    print(f"(2) train steps, batches in RAM {step_rate:8.1f} steps/s")
    print(f"(3) model.fit fed by tf.data    {fit_rate:8.1f} steps/s")
    print(f"input / train-step ratio: {input_rate / step_rate:.1f}x; fit reaches {100 * fit_rate / step_rate:.0f}% "
          "of the in-RAM step rate")


if __name__ == "__main__":
    main()
