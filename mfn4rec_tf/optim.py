"""The optimiser of a run: Adam or AdamW, gradient clipping, and the learning-rate schedule.

All settings live in `train.*` (`mfn4rec_tf.run_config.TrainSection`); the defaults (Adam, constant
learning rate, no clipping, no weight decay) are the paper's (Sec. 4.1) and build exactly
`keras.optimizers.Adam(train.learning_rate)`.

- `train.optimizer: adamw` with `train.weight_decay`: decoupled weight decay (Loshchilov & Hutter,
  2019), `w <- w - learning_rate * weight_decay * w` beside the Adam step, on every trainable
  variable except those named in `NO_DECAY` (biases, and LayerNorm's gamma/beta where a model has
  them): the item-ID embeddings, kernels, recurrent kernels and the output item vectors decay.
- `train.clipnorm`: the gradients of a step are rescaled together so that their global norm is at
  most this (Keras' `global_clipnorm`, not its per-variable `clipnorm`).
- `train.lr_schedule`:
    `constant` (default) the learning rate throughout;
    `warmup_cosine` linear warm-up over `train.warmup_steps` steps to `train.learning_rate`, then a
        half cosine down to `train.min_learning_rate` at the end of `train.epochs` epochs (`WarmupCosine`;
        its position is the optimiser's step counter, which the checkpoints carry);
    `plateau` the learning rate times `train.plateau_factor` (never below `train.min_learning_rate`)
        after every `train.plateau_patience` epochs without a better validation Recall@20
        (`PlateauState`; its state lives in the run's state.json, and the retraining phase replays
        the selection phase's rates epoch by epoch).
"""

from __future__ import annotations

import math

import keras
from keras import ops

from mfn4rec_tf.run_config import LR_SCHEDULES, OPTIMIZERS  # noqa: F401 (re-exported)

NO_DECAY = ("bias", "gamma", "beta")
"""Variable names (regular expressions searched in `variable.name`) that AdamW does not decay."""


@keras.saving.register_keras_serializable(package="mfn4rec")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak` over `warmup_steps` steps, then a half cosine from `peak` to `floor`
    at step `total_steps`, and `floor` after it.

    At step s (0-based, the optimiser's `iterations` before the update):
    `peak * (s + 1) / warmup_steps` while `s < warmup_steps`, else
    `floor + (peak - floor) * (1 + cos(pi * min(1, (s - warmup_steps) / (total_steps - warmup_steps)))) / 2`.

    >>> schedule = WarmupCosine(peak=0.01, warmup_steps=10, total_steps=110, floor=0.001)
    >>> [round(float(schedule(s)), 6) for s in (0, 9, 10, 60, 110, 500)]
    [0.001, 0.01, 0.01, 0.0055, 0.001, 0.001]
    """

    def __init__(self, peak, warmup_steps, total_steps, floor=0.0):
        self.peak, self.floor = float(peak), float(floor)
        self.warmup_steps, self.total_steps = int(warmup_steps), int(total_steps)
        if self.warmup_steps < 0 or self.total_steps <= self.warmup_steps:
            raise ValueError(f"WarmupCosine needs 0 <= warmup_steps < total_steps. Received: "
                             f"warmup_steps={warmup_steps}, total_steps={total_steps}")

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = self.peak * (step + 1.0) / max(self.warmup_steps, 1)
        progress = ops.minimum(1.0, ops.maximum(0.0, step - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        cosine = self.floor + (self.peak - self.floor) * 0.5 * (1.0 + ops.cos(math.pi * progress))
        return ops.where(step < self.warmup_steps, warm, cosine)

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
                "floor": self.floor}


@keras.saving.register_keras_serializable(package="mfn4rec")
class AdamW(keras.optimizers.AdamW):
    """Keras' AdamW with its exclusions from weight decay kept in its config, so that a model loaded
    from a checkpoint decays the same variables (Keras' own `exclude_from_weight_decay` is not saved)."""

    def __init__(self, *args, no_decay=NO_DECAY, **kwargs):
        super().__init__(*args, **kwargs)
        self.no_decay = tuple(no_decay)
        self.exclude_from_weight_decay(var_names=list(self.no_decay))

    def get_config(self):
        return {**super().get_config(), "no_decay": list(self.no_decay)}


def steps_per_epoch(train, num_examples: int) -> int:
    """Batches of one epoch of `num_examples` training sequences."""
    return -(-int(num_examples) // train.batch_size)


def learning_rate(train, steps: int | None = None):
    """The `learning_rate` argument of the optimiser of `train` (a `TrainSection`): a number, or a
    `WarmupCosine` over `train.epochs * steps` steps (`steps`: batches per epoch, required then)."""
    if train.lr_schedule != "warmup_cosine":
        return train.learning_rate
    if steps is None:
        raise ValueError("`train.lr_schedule: warmup_cosine` needs the number of batches per epoch.")
    total = max(train.epochs * steps, train.warmup_steps + 1)
    return WarmupCosine(train.learning_rate, train.warmup_steps, total, train.min_learning_rate)


def make_optimizer(train, steps: int | None = None) -> keras.optimizers.Optimizer:
    """The optimiser of `train` (a `TrainSection`); `steps` = batches per epoch (for `warmup_cosine`).

    The defaults give `keras.optimizers.Adam(train.learning_rate)`, the paper's; `adagrad` is
    GRU4Rec's; Adam and AdamW take `train.adam_beta_2`."""
    kwargs = {"learning_rate": learning_rate(train, steps)}
    if train.clipnorm is not None:
        kwargs["global_clipnorm"] = train.clipnorm
    if train.optimizer == "adagrad":
        return keras.optimizers.Adagrad(**kwargs)
    if train.optimizer == "adamw":
        return AdamW(weight_decay=train.weight_decay, beta_2=train.adam_beta_2, **kwargs)
    return keras.optimizers.Adam(beta_2=train.adam_beta_2, **kwargs)


class PlateauState:
    """Reduce-on-plateau over validation Recall@20, as a plain dict that a run keeps in state.json.

    `state["learning_rate"]` is the rate of the next epoch, `state["wait"]` the epochs since the
    rate last improved or dropped, and `state["rates"]` the rate each epoch trained with (the
    retraining phase replays them).
    """

    @staticmethod
    def fresh(train) -> dict:
        return {"learning_rate": train.learning_rate, "wait": 0, "rates": []}

    @staticmethod
    def after_epoch(train, state: dict, improved: bool) -> float:
        """Updates `state` after an epoch (`improved`: a better validation Recall@20); returns the
        rate of the next epoch."""
        state["wait"] = 0 if improved else state["wait"] + 1
        if state["wait"] >= train.plateau_patience:
            state["learning_rate"] = max(state["learning_rate"] * train.plateau_factor, train.min_learning_rate)
            state["wait"] = 0
        return state["learning_rate"]


def set_learning_rate(model, value: float) -> None:
    """Sets the learning rate of `model`'s optimiser (a constant rate, as `plateau` keeps it)."""
    model.optimizer.learning_rate = float(value)
