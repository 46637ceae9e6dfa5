"""The gated multi-modal memory over a whole sequence: the RNN-cell reference or a parallel scan (Eq. 4-9)."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from mfn4rec_tf.config import MEMORY_MODES
from mfn4rec_tf.layers.gated_memory_cell import GatedMemoryCell


@keras.saving.register_keras_serializable(package="mfn4rec")
class GatedMemory(keras.layers.Layer):
    """Runs the gated memory (Eq. 4-9) over a sequence of multi-GRU states, in one of two ways with
    the same weights (those of a `GatedMemoryCell`):

    - `mode="cell"`: `keras.layers.RNN(GatedMemoryCell)`, one step after another (the reference).
    - `mode="scan"` (default): the paper's memory update is linear in the memory,

          u_t = g1_t ⊙ u_{t-1} + g2_t ⊙ tanh(û_t)                 (Eq. 9)

      and g1, g2, û depend only on the attended pair [h_{t-1}, h_t] (Eq. 4-8), which the multi-GRU
      has already produced for every step. So every step's attention and gates are computed at once
      as batched dense layers over `(batch, steps, ·)`, and the recurrence `u_t = a_t u_{t-1} + b_t`
      is solved by an associative scan (Hillis-Steele: ceil(log2 T) rounds of
      `(a, b)[t] <- (a[t] a[t-d], a[t] b[t-d] + b[t])`), which multiplies and adds gates only, so
      nothing is divided and nothing under- or overflows beyond what the step loop would.

    Masking: a masked step keeps the memory and the previous hidden state, as in the cell path:
    `h_{t-1}` is the state at the last unmasked step before t (zeros if none), and at a masked step
    `a = 1, b = 0`. Both paths give the same outputs and gradients (to float32 rounding) in
    inference mode; in training both apply dropout with fresh masks at every step, from different
    random draws.

    Args:
        input_dim: width of `h_t` (sum of the modalities' hidden sizes).
        memory_dim: width of `u` (`d_mem`). Default `20`.
        hidden_units: hidden width of FC_u, FC_g1, FC_g2. Default `50`.
        dropout: dropout rate of every FC block. Default `0.0`.
        seed: seed of the dropout generators. Default `None`.
        mode: `"scan"` (default) or `"cell"`.

    Call arguments:
        inputs: `(batch, steps, input_dim)` multi-GRU states.
        mask: optional `(batch, steps)` boolean mask.
        training: whether dropout is active.

    Returns:
        `(batch, steps, memory_dim)`, the memory after every step.

    Example:

    >>> import numpy as np
    >>> memory = GatedMemory(input_dim=6, memory_dim=4)
    >>> tuple(memory(np.ones((2, 5, 6), "float32")).shape)
    (2, 5, 4)
    """

    def __init__(self, input_dim, memory_dim=20, hidden_units=50, dropout=0.0, seed=None, mode="scan", **kwargs):
        super().__init__(**kwargs)
        if mode not in MEMORY_MODES:
            raise ValueError(f"`mode` must be one of {MEMORY_MODES}. Received: mode={mode!r}")
        self.mode = mode
        self.cell = GatedMemoryCell(
            input_dim=input_dim, memory_dim=memory_dim, hidden_units=hidden_units, dropout=dropout, seed=seed,
            dtype=self.dtype_policy, name="gated_memory_cell",
        )
        self.rnn = keras.layers.RNN(self.cell, return_sequences=True, dtype=self.dtype_policy, name="rnn")
        self.supports_masking = True

    def build(self, input_shape):
        self.rnn.build(input_shape)  # builds the cell: the weights both modes use

    def call(self, inputs, mask=None, training=False):
        if self.mode == "cell":
            return self.rnn(inputs, mask=mask, training=training)
        return self._scan(inputs, mask, training)

    def _scan(self, states, mask, training):
        cell = self.cell
        if mask is None:
            mask = ops.ones(ops.shape(states)[:2], dtype="bool")
        keep = ops.expand_dims(ops.cast(mask, states.dtype), -1)  # (B, T, 1)
        steps = ops.shape(states)[1]
        positions = ops.arange(steps, dtype="int32")[None, :]  # (1, T)
        valid_positions = ops.where(mask, positions, -1)  # (B, T)
        last_valid = _cumulative_max(valid_positions)  # last unmasked position <= t
        previous = ops.concatenate([-ops.ones_like(last_valid[:, :1]), last_valid[:, :-1]], axis=1)  # < t
        gathered = ops.take_along_axis(states, ops.expand_dims(ops.maximum(previous, 0), -1), axis=1)
        h_prev = gathered * ops.expand_dims(ops.cast(previous >= 0, states.dtype), -1)  # (B, T, H), 0 if none
        pair = ops.concatenate([h_prev, states], axis=-1)  # h_[t-1,t]: (B, T, 2H)
        attended = cell.attention(pair, training=training)  # Eq. 4-5
        candidate = cell.candidate(attended, training=training)  # Eq. 6: (B, T, d_mem)
        remain = cell.remain_gate(attended, training=training)  # Eq. 7
        update = cell.update_gate(attended, training=training)  # Eq. 8
        a = keep * remain + (1.0 - keep)  # masked step: u_t = u_{t-1}
        b = keep * update * ops.tanh(candidate)
        return _linear_scan(a, b)  # Eq. 9 for every t

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:2]) + (self.cell.memory_dim,)

    def compute_mask(self, inputs, mask=None):
        return mask

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "input_dim": self.cell.input_dim,
                "memory_dim": self.cell.memory_dim,
                "hidden_units": self.cell.hidden_units,
                "dropout": self.cell.dropout,
                "seed": self.cell.seed,
                "mode": self.mode,
            }
        )
        return config


def _cumulative_max(values):
    """Running maximum along axis 1 of an int tensor (B, T), by doubling (log2 T rounds)."""
    return _doubling_scan(values, lambda earlier, later: (ops.maximum(earlier, later),), fill=(-1,))[0]


def _linear_scan(a, b):
    """u_t = a_t u_{t-1} + b_t with u_0 = 0, for every t along axis 1: an inclusive associative scan."""

    def combine(earlier, later):
        (a_earlier, b_earlier), (a_later, b_later) = earlier, later
        return a_later * a_earlier, a_later * b_earlier + b_later

    return _doubling_scan((a, b), combine, fill=(1.0, 0.0), pairs=True)[1]


def _doubling_scan(values, combine, fill, pairs=False):
    """Hillis-Steele inclusive scan along axis 1 with a dynamic length: at distance d = 1, 2, 4, ...
    every position t >= d combines with position t - d; positions t < d combine with `fill`
    (the identity).

    The shift is a gather of positions `max(t - d, 0)` followed by a select, so every tensor in the
    loop keeps the input's shape (static when the caller's is): XLA compiles it (`export --xla`).
    """
    values = tuple(values) if pairs else (values,)
    steps = tf.shape(values[0])[1]
    positions = tf.range(steps)

    def shifted(x, distance, identity):
        source = positions - distance  # (T,)
        moved = tf.gather(x, tf.maximum(source, 0), axis=1)
        inside = tf.reshape(source >= 0, [1, -1] + [1] * (len(x.shape) - 2))
        return tf.where(inside, moved, tf.cast(identity, x.dtype))

    def body(distance, *current):
        earlier = tuple(shifted(x, distance, f) for x, f in zip(current, fill))
        if pairs:
            combined = combine(earlier, current)
        else:
            combined = combine(earlier[0], current[0])
        return (distance * 2, *combined)

    def keep_going(distance, *current):
        return distance < steps

    result = tf.while_loop(keep_going, body, (tf.constant(1), *values))
    return result[1:]
