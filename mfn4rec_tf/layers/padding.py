"""Padding handling: the padding mask of item-id sequences and the last valid step of a sequence."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="mfn4rec")
class PaddingMask(keras.layers.Layer):
    """`(batch, steps)` boolean mask of the real steps of an item-index sequence (index 0 is padding).

    Example:

    >>> import numpy as np
    >>> PaddingMask()(np.array([[3, 1, 0]], "int32")).numpy().tolist()
    [[True, True, False]]
    """

    def call(self, item_ids):
        return ops.not_equal(item_ids, 0)

    def compute_output_spec(self, item_ids):
        return keras.KerasTensor(item_ids.shape, dtype="bool")


@keras.saving.register_keras_serializable(package="mfn4rec")
class LastValidStep(keras.layers.Layer):
    """Picks each sequence's value at its last unmasked step.

    Works for padding on either side (or inside) a sequence. A sequence with no valid step yields
    its step 0 (where a masked RNN still holds its zero initial state).

    Call arguments:
        sequence: `(batch, steps, dim)` tensor.
        mask: `(batch, steps)` boolean tensor.

    Returns:
        `(batch, dim)` tensor.

    Example:

    >>> import numpy as np
    >>> seq = np.arange(6, dtype="float32").reshape(1, 3, 2)
    >>> LastValidStep()(seq, np.array([[True, True, False]])).numpy().tolist()
    [[2.0, 3.0]]
    """

    def call(self, sequence, mask):
        steps = ops.shape(sequence)[1]
        positions = ops.arange(steps, dtype="int32")[None, :]  # (1, steps)
        last = ops.max(ops.where(mask, positions, -1), axis=1)  # (batch,)
        last = ops.maximum(last, 0)
        return ops.take_along_axis(sequence, last[:, None, None], axis=1)[:, 0, :]  # (batch, dim)

    def compute_output_shape(self, sequence_shape, mask_shape=None):
        return (sequence_shape[0], sequence_shape[2])

    def compute_mask(self, sequence, mask=None):
        return None
