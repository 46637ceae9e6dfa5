"""The multi-GRU layer: one GRU per modality (paper Sec. 3.1, Eq. 1-3)."""

from __future__ import annotations

import keras
import tensorflow as tf

from mfn4rec_tf._checks import check_positive_int

IMPLEMENTATIONS = ("fused", "keras")


@keras.saving.register_keras_serializable(package="mfn4rec")
class MultiGRU(keras.layers.Layer):
    """Runs one GRU over each modality's sequence, each with its own hidden size::

        h_m^t = GRU_m(m_t, h_m^{t-1})   # Eq. 1, item-ID embeddings
        h_f^t = GRU_f(f_t, h_f^{t-1})   # Eq. 2, image features
        h_g^t = GRU_g(g_t, h_g^{t-1})   # Eq. 3, text features

    generalised to any number of modalities. The weights are those of one `keras.layers.GRU` per
    modality (sublayers `gru_0`, `gru_1`, ...); `reset_after=True` is the cuDNN-compatible form
    Keras uses by default, `False` the form of Cho et al. (2014).

    Two executions of the same equations and weights:

    - `"fused"` (default): the input projections `x_t W + b` of every modality and step are
      computed up front (one matrix product per modality), then ONE loop over time updates the
      concatenated state of all GRUs with a block-diagonal recurrent matrix (the GRUs stay
      independent: the off-diagonal blocks are zero). One small matmul per step instead of two per
      GRU; on a CPU this is what a step of the loop costs.
    - `"keras"`: each modality's `keras.layers.GRU` runs on its own (on a GPU that is the cuDNN
      kernel, when its conditions hold, e.g. right padding).

    Args:
        units: one hidden size per modality, e.g. `[20, 20, 20]` (Table 1).
        reset_after: GRU convention, see above. Default `True`.
        implementation: `"fused"` (default) or `"keras"`, see above.

    Call arguments:
        inputs: list of `(batch, steps, dim_i)` tensors, one per modality, in the order of `units`.
        mask: optional `(batch, steps)` boolean tensor; a masked step carries every GRU's state
            (and output) unchanged.

    Returns:
        list of `(batch, steps, units[i])` hidden-state sequences.

    Example:

    >>> import numpy as np
    >>> layer = MultiGRU([4, 3])
    >>> [tuple(h.shape) for h in layer([np.zeros((2, 5, 6), "float32"), np.zeros((2, 5, 8), "float32")])]
    [(2, 5, 4), (2, 5, 3)]
    """

    def __init__(self, units, reset_after=True, implementation="fused", **kwargs):
        super().__init__(**kwargs)
        if isinstance(units, int) or not units:
            raise ValueError(f"`units` must be a non-empty list of hidden sizes. Received: units={units!r}")
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"`implementation` must be one of {IMPLEMENTATIONS}. Received: {implementation!r}")
        self.units = [check_positive_int("units", u) for u in units]
        self.reset_after = bool(reset_after)
        self.implementation = implementation
        self.supports_masking = True

    def build(self, input_shape):
        if len(input_shape) != len(self.units):
            raise ValueError(
                f"{self.__class__.__name__} has {len(self.units)} GRUs (units={self.units}) but received "
                f"{len(input_shape)} input sequences."
            )
        self.grus = []
        for index, (units, shape) in enumerate(zip(self.units, input_shape)):
            gru = keras.layers.GRU(
                units,
                return_sequences=True,
                reset_after=self.reset_after,
                dtype=self.dtype_policy,
                name=f"gru_{index}",
            )
            gru.build(shape)
            self.grus.append(gru)

    def call(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if self.implementation == "keras":
            return [gru(x, mask=mask) for gru, x in zip(self.grus, inputs)]
        return self._fused(inputs, mask)

    def _fused(self, inputs, mask):
        cells = [gru.cell for gru in self.grus]
        total = sum(self.units)
        # Per gate (z, r, h): every GRU's input projection for every step, concatenated over the GRUs.
        gates = [[], [], []]
        for cell, units, x in zip(cells, self.units, inputs):
            input_bias = cell.bias[0] if self.reset_after else cell.bias
            projected = tf.matmul(x, cell.kernel) + input_bias  # (B, T, 3 u): [z, r, h]
            for gate in range(3):
                gates[gate].append(projected[..., gate * units:(gate + 1) * units])
        projected = tf.concat([tf.concat(g, axis=-1) for g in gates], axis=-1)  # (B, T, 3 U)
        # The recurrent kernels as one block-diagonal (U, 3 U) matrix in the same gate-major layout.
        blocks, offset = [[], [], []], 0
        for cell, units in zip(cells, self.units):
            for gate in range(3):
                block = cell.recurrent_kernel[:, gate * units:(gate + 1) * units]  # (u, u)
                blocks[gate].append(tf.pad(block, [[offset, total - offset - units], [offset, total - offset - units]]))
            offset += units
        recurrent = tf.concat([tf.add_n(b) for b in blocks], axis=-1)  # (U, 3 U)
        if self.reset_after:
            recurrent_bias = tf.concat(
                [tf.concat([c.bias[1][g * u:(g + 1) * u] for c, u in zip(cells, self.units)], 0) for g in range(3)], 0
            )
        batch, steps = tf.shape(projected)[0], tf.shape(projected)[1]
        keep = tf.ones((batch, steps), tf.bool) if mask is None else tf.cast(mask, tf.bool)
        reset_after = self.reset_after

        def step(state, elements):
            x, valid = elements  # (B, 3 U), (B,)
            x_z, x_r, x_h = tf.split(x, 3, axis=-1)
            if reset_after:
                inner = tf.matmul(state, recurrent) + recurrent_bias
                h_z, h_r, h_h = tf.split(inner, 3, axis=-1)
                z = tf.sigmoid(x_z + h_z)
                r = tf.sigmoid(x_r + h_r)
                candidate = tf.tanh(x_h + r * h_h)
            else:
                h_z, h_r = tf.split(tf.matmul(state, recurrent[:, :2 * total]), 2, axis=-1)
                z = tf.sigmoid(x_z + h_z)
                r = tf.sigmoid(x_r + h_r)
                candidate = tf.tanh(x_h + tf.matmul(r * state, recurrent[:, 2 * total:]))
            new = z * state + (1.0 - z) * candidate
            return tf.where(valid[:, None], new, state)  # a masked step carries the state

        initial = tf.zeros((batch, total), projected.dtype)
        states = tf.scan(step, (tf.transpose(projected, [1, 0, 2]), tf.transpose(keep)), initializer=initial)
        states = tf.transpose(states, [1, 0, 2])  # (B, T, U)
        return tf.split(states, self.units, axis=-1)

    def compute_output_shape(self, input_shape):
        return [tuple(shape[:2]) + (units,) for shape, units in zip(input_shape, self.units)]

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        return [mask for _ in self.units]

    def get_config(self):
        config = super().get_config()
        config.update({"units": list(self.units), "reset_after": self.reset_after,
                       "implementation": self.implementation})
        return config
