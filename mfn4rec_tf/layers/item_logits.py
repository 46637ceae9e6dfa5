"""Next-item scores over the whole catalogue (paper Sec. 3.4, Eq. 11)."""

from __future__ import annotations

import keras
from keras import ops

from mfn4rec_tf._checks import check_positive_int


@keras.saving.register_keras_serializable(package="mfn4rec")
class ItemLogits(keras.layers.Layer):
    """Scores every item for the next step: `logits = W · h_out + b` (the argument of Eq. 11's softmax).

    Item index 0 is padding: its logit is set to a large negative constant, so it gets zero
    probability and is never recommended. The constant is finite so that a padded target with zero
    sample weight contributes exactly zero to the loss (instead of `0 * inf = nan`).

    Args:
        vocabulary_size: number of item indices including padding (`num_items + 1`).

    Call arguments:
        inputs: `(..., dim)` user representation(s).

    Returns:
        `(..., vocabulary_size)` logits.

    Example:

    >>> import numpy as np
    >>> logits = ItemLogits(5)(np.ones((2, 3), "float32"))
    >>> tuple(logits.shape), bool((logits[:, 0] < -1e8).numpy().all())
    ((2, 5), True)
    """

    def __init__(self, vocabulary_size, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size = check_positive_int("vocabulary_size", vocabulary_size)
        if self.vocabulary_size < 2:
            raise ValueError(
                "`vocabulary_size` counts the padding index 0 and at least one item, so it must be >= 2. "
                f"Received: vocabulary_size={vocabulary_size!r}"
            )
        self.supports_masking = True

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel", shape=(input_shape[-1], self.vocabulary_size), initializer="glorot_uniform"
        )
        self.bias = self.add_weight(name="bias", shape=(self.vocabulary_size,), initializer="zeros")

    def call(self, inputs):
        dtype = keras.backend.standardize_dtype(self.compute_dtype)
        floor = -6e4 if dtype == "float16" else -1e9  # finite in every float dtype
        is_padding = ops.equal(ops.arange(self.vocabulary_size), 0)  # (vocabulary_size,)
        # The floor replaces the padding column's bias: one (vocabulary_size,) vector, so the
        # (..., vocabulary_size) logits take a single pass (no select over every logit, forward or
        # backward). Its score is floor + h · w_0, within float rounding of the floor itself.
        bias = ops.where(is_padding, ops.cast(floor, self.bias.dtype), self.bias)
        return ops.matmul(inputs, ops.cast(self.kernel, dtype)) + ops.cast(bias, dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.vocabulary_size,)

    def get_config(self):
        config = super().get_config()
        config.update({"vocabulary_size": self.vocabulary_size})
        return config
