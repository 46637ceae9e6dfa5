"""Analytic FLOPs of MFN4Rec and its ablations: per training event and per ranked user.

    python benchmarks/flops.py [--data DIR | --num-items 38840] [--variants mfn4rec,...] [--history-length 12.08]

Counts the arithmetic of the model's equations from a `ModelConfig`, the way `mfn4rec_tf.layers`
builds them, per sequence position ("step"). A multiply-add is 2 FLOPs; a bias add, an elementwise
add or product, and one evaluation of an activation (sigmoid, tanh, ReLU, exp) are 1 FLOP each.
Not counted: embedding lookups, dropout masks, masking/selection of padded steps, the padding
index's logit, and implementation overhead that is not in the equations (e.g. the parallel scan's
ceil(log2 T) combine rounds, about 3 d_mem FLOPs per step per round, or the zero blocks of the fused
multi-GRU's block-diagonal recurrent matrix, which multiplies H x 3H instead of the sum of h x 3h).
Notation: w = a modality's input width (its dim, +1 with a presence flag; d_m for the item ID),
h = its GRU size, H = sum of h, D = 2H, F = fc_hidden_units, M = memory_dim, O = output_units,
V = N + 1.

Per step (every position of a sequence)::

    GRU (Keras, 3 gates)  6 h (w + h)           input and recurrent matmuls of z, r and the candidate
                          + 6 h (3 h with reset_after=False)    biases
                          + 11 h                3 gate adds, r (.) recurrent part, 3 activations,
                                                h = z h' + (1 - z) h~ (4)
    presence flag         w - 1                 features times the flag (AppendPresence)
    projection (-m)       2 w h + h + h         Dense + tanh per modality, instead of a GRU
    attention (Eq. 4-5)   2 D D + D             FC_a
                          + 3 D                 softmax over D: exp, sum, divide
                          + D                   a (.) h_[t-1,t]
    FC_u, FC_g1, FC_g2    3 (2 D F + F + F      hidden Dense + ReLU
    (Eq. 6-8)                + 2 F M + M)       output Dense
                          + 2 M                 the gates' sigmoids
    update (Eq. 9)        4 M                   tanh, g2 (.) tanh(u^), g1 (.) u, add
    sum (-add)            (k - 1) h             the k modalities' states added
    FC_out (Eq. 10)       2 I O + O (+ O for tanh)   I = H + M (mfn4rec), H (-g), M (-m), H + h (-add)

Head (once per scored position)::

    output layer (Eq. 11) 2 O V + V             logits over all N items and padding
    softmax (Eq. 11-12)   3 V                   training only (cross-entropy); ranking needs logits

Totals::

    forward per training event  = step + output layer + softmax
    training per event          = 3 x forward   (the backward pass costs about twice the forward:
                                                 a gradient for the inputs and one for the weights
                                                 of every matmul; an estimate, not a count)
    per ranked user             = L x step + output layer   (L = history length; "last" mode scores
                                                 one position; top-K selection is comparisons)

An event is a scored (input, target) position: with `targets="all"` a training sequence of n
items gives min(n - 1, max_length) events. The implementation also computes padded positions
(batches are padded to their longest sequence); `benchmarks/training_speed.py` reports those apart.

With `--data` the figures per epoch (training events of the `paper` protocol's validation mode)
and per full ranking of that split's users (their mean history length) are printed too.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mfn4rec_tf.config import PAPER_MODALITIES, VARIANTS, ModelConfig

BACKWARD_FACTOR = 3
"""Training FLOPs = this x forward FLOPs (forward once, backward about twice)."""


@dataclass(frozen=True)
class Count:
    """FLOPs of one part of the model, split by kind.

    Attributes:
        matmul: 2 per multiply-add of the dense and recurrent kernels.
        bias: 1 per bias element added.
        elementwise: everything else (adds, products, activations, softmax).
    """

    matmul: int = 0
    bias: int = 0
    elementwise: int = 0

    @property
    def total(self) -> int:
        return self.matmul + self.bias + self.elementwise

    def __add__(self, other):
        return Count(self.matmul + other.matmul, self.bias + other.bias, self.elementwise + other.elementwise)

    def __mul__(self, factor):
        return Count(self.matmul * factor, self.bias * factor, self.elementwise * factor)

    __rmul__ = __mul__


def dense(inputs: int, units: int, activation: bool = False) -> Count:
    """A Dense layer on one position: matmul, bias, and the activation if it has one."""
    return Count(2 * inputs * units, units, units if activation else 0)


def softmax(width: int) -> Count:
    """Softmax over `width` entries: an exponential, an add (the sum) and a division per entry."""
    return Count(elementwise=3 * width)


def gru(inputs: int, units: int, reset_after: bool = True) -> Count:
    """One step of a Keras GRU (gates z, r and candidate h~) with input width `inputs`."""
    matmul = 2 * 3 * units * (inputs + units)  # x W (inputs x 3h) and h' U (h x 3h)
    bias = 2 * 3 * units if reset_after else 3 * units  # input and recurrent biases, or one
    # 3 adds (x part + recurrent part of z, r, h~), r (.) recurrent part, 2 sigmoids + tanh,
    # then h = z h' + (1 - z) h~: 1 - z, two products, one add.
    elementwise = 3 * units + units + 3 * units + 4 * units
    return Count(matmul, bias, elementwise)


def _check_variant(config: ModelConfig):
    if not isinstance(config, ModelConfig):
        raise ValueError(f"`config` must be a ModelConfig. Received: {type(config).__name__}")
    if config.variant not in VARIANTS:
        raise ValueError(f"FLOPs are counted for the MFN4Rec variants {VARIANTS}. Received: variant={config.variant!r}")


def step_flops(config: ModelConfig) -> dict:
    """FLOPs per sequence position of everything before the output layer, by part.

    Returns:
        `{part: Count}` with parts `inputs` (presence flags), `encoders` (GRUs, or the -m projections),
        `attention` (Eq. 4-5), `memory blocks` (FC_u, FC_g1, FC_g2 and the gates' sigmoids),
        `memory update` (Eq. 9, or the -add sum) and `fc_out` (Eq. 10); absent parts count 0.
    """
    _check_variant(config)
    widths = [config.id_embedding_dim] + [m.input_width for m in config.modalities]
    hidden = list(config.hidden_sizes)
    total_hidden, memory, fc = sum(hidden), config.memory_dim, config.fc_hidden_units
    parts = {name: Count() for name in ("inputs", "encoders", "attention", "memory blocks", "memory update", "fc_out")}
    parts["inputs"] = Count(elementwise=sum(m.dim for m in config.modalities if m.presence))
    if config.variant == "mfn4rec-m":
        parts["encoders"] = sum((dense(w, h, activation=True) for w, h in zip(widths, hidden)), Count())
    else:
        parts["encoders"] = sum((gru(w, h, config.gru_reset_after) for w, h in zip(widths, hidden)), Count())

    if config.variant in ("mfn4rec", "mfn4rec-m"):
        pair = 2 * total_hidden  # D: h_[t-1,t]
        parts["attention"] = dense(pair, pair) + softmax(pair) + Count(elementwise=pair)
        block = dense(pair, fc, activation=True) + dense(fc, memory)
        parts["memory blocks"] = 3 * block + Count(elementwise=2 * memory)
        parts["memory update"] = Count(elementwise=4 * memory)
        fused = memory if config.variant == "mfn4rec-m" else total_hidden + memory
    elif config.variant == "mfn4rec-add":
        parts["memory update"] = Count(elementwise=(len(hidden) - 1) * hidden[0])
        fused = total_hidden + hidden[0]
    else:  # mfn4rec-g
        fused = total_hidden
    parts["fc_out"] = dense(fused, config.output_units, activation=config.output_activation != "linear")
    return parts


def head_flops(config: ModelConfig) -> dict:
    """FLOPs per scored position of the output layer and of the training softmax."""
    _check_variant(config)
    return {"output layer": dense(config.output_units, config.vocabulary_size),
            "softmax": softmax(config.vocabulary_size)}


def forward_flops_per_event(config: ModelConfig) -> Count:
    """Forward FLOPs of one training event: a step, the output layer and the softmax of the loss."""
    return sum(step_flops(config).values(), Count()) + sum(head_flops(config).values(), Count())


def training_flops_per_event(config: ModelConfig) -> int:
    """FLOPs of one training event, forward and backward: `BACKWARD_FACTOR` x forward (an estimate)."""
    return BACKWARD_FACTOR * forward_flops_per_event(config).total


def ranking_flops_per_user(config: ModelConfig, history_length: float) -> float:
    """Forward FLOPs of ranking every item for one user: `history_length` steps, one output layer."""
    if not history_length >= 1:
        raise ValueError(f"`history_length` must be >= 1. Received: {history_length!r}")
    step = sum(step_flops(config).values(), Count()).total
    return history_length * step + head_flops(config)["output layer"].total


def split_workload(dataset, max_length: int = 100, protocol: str = "paper"):
    """`(training events per epoch, evaluated users, mean history length)` of a dataset's
    validation-mode split, as `TrainingInput` (targets all) and `RankingInput` cut them."""
    from mfn4rec_tf.splits import make_split

    split = make_split(dataset.interactions, protocol, "validation")
    events = sum(min(len(s) - 1, max_length) for s in split.train_sequences if len(s) >= 2)
    histories = [min(len(h), max_length) for h in split.histories]
    return events, len(histories), (sum(histories) / len(histories) if histories else float("nan"))


def variant_configs(variants, num_items, modalities=PAPER_MODALITIES, memory_mode="scan"):
    """The paper-default `ModelConfig` of each variant for a catalogue of `num_items` items."""
    return {variant: ModelConfig(num_items=num_items, variant=variant, modalities=modalities,
                                 memory_mode=memory_mode) for variant in variants}


def parse_variants(text):
    """`"mfn4rec,mfn4rec-g"` -> a tuple of known variant names (argparse type)."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in VARIANTS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown variant(s) {unknown or text!r}; choose from {', '.join(VARIANTS)}")
    return names


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", help="dataset directory: its catalogue, modalities and validation split")
    parser.add_argument("--num-items", type=int, default=38_840, help="N without --data (paper modalities)")
    parser.add_argument("--variants", type=parse_variants, default=VARIANTS, help="comma-separated")
    parser.add_argument("--history-length", type=float, default=12.08,
                        help="history length L of a ranked user without --data")
    parser.add_argument("--max-length", type=int, default=100, help="longest history fed (with --data)")
    args = parser.parse_args(argv)
    if args.num_items < 1:
        parser.error(f"--num-items must be >= 1 (received {args.num_items})")
    if not args.history_length >= 1:
        parser.error(f"--history-length must be >= 1 (received {args.history_length})")
    if args.max_length < 1:
        parser.error(f"--max-length must be >= 1 (received {args.max_length})")
    workload = None
    if args.data:
        from mfn4rec_tf.dataset import load_dataset

        try:
            dataset = load_dataset(args.data)
        except ValueError as error:
            parser.error(str(error))
        configs = variant_configs(args.variants, dataset.num_items, dataset.modality_configs())
        workload = split_workload(dataset, args.max_length)
        history = workload[2]
        print(f"{dataset}; paper/validation: {workload[0]:,} training events per epoch, {workload[1]:,} ranked "
              f"users, mean history {history:.2f}")
    else:
        configs = variant_configs(args.variants, args.num_items)
        history = args.history_length
        print(f"N = {args.num_items:,} items, paper modalities and sizes; ranked history length {history:g}")
    print(report(configs, history, workload))
    return 0


def report(configs, history_length, workload=None):
    """The table `main` prints: per variant, MFLOPs per step part, per event and per ranked user."""
    mega = 1e6
    lines = ["MFLOP per position      " + "".join(f"{name:>13}" for name in configs)]
    steps = {name: step_flops(config) for name, config in configs.items()}
    heads = {name: head_flops(config) for name, config in configs.items()}
    for part in next(iter(steps.values())):
        lines.append(f"  {part:<22}" + "".join(f"{steps[name][part].total / mega:13.4f}" for name in configs))
    for part in ("output layer", "softmax"):
        lines.append(f"  {part:<22}" + "".join(f"{heads[name][part].total / mega:13.4f}" for name in configs))
    forward = {name: forward_flops_per_event(config) for name, config in configs.items()}
    lines.append(f"{'forward / event':<24}" + "".join(f"{forward[name].total / mega:13.4f}" for name in configs))
    lines.append(f"{'  of which matmul':<24}" + "".join(f"{forward[name].matmul / forward[name].total:12.1%} "
                                                        for name in configs))
    lines.append(f"{'training / event (3x)':<24}"
                 + "".join(f"{training_flops_per_event(config) / mega:13.4f}" for config in configs.values()))
    lines.append(f"{'ranking / user':<24}"
                 + "".join(f"{ranking_flops_per_user(config, history_length) / mega:13.4f}"
                           for config in configs.values()))
    if workload is not None:
        events, users, _ = workload
        lines.append(f"{'GFLOP / epoch':<24}" + "".join(
            f"{events * training_flops_per_event(config) / 1e9:13.1f}" for config in configs.values()))
        lines.append(f"{'GFLOP / full ranking':<24}" + "".join(
            f"{users * ranking_flops_per_user(config, history_length) / 1e9:13.2f}" for config in configs.values()))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
