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


@keras.saving.register_keras_serializable(package="mfn4rec")
class TiedItemLogits(ItemLogits):
    """One item table for both ends of a model: the input embedding and the output scores.

    SASRec (Kang & McAuley, 2018) scores item `i` by `h · M_i` with `M` its input item embedding.
    The layer holds `M`, `(vocabulary_size, embedding_dim)`, and is called twice in a model: with
    `lookup=True` on the item indices (the embedding), and on the user representation (the scores,
    `logits = h · Mᵀ`, no bias). Item index 0 (padding) keeps `ItemLogits`' floor. Its `kernel`
    (`Mᵀ`) and `bias` (zeros, or its own with `use_bias`) read like `ItemLogits`' weights, so the
    sampled losses and the chunked ranking use it as they use `ItemLogits`. MFN4Rec's
    `model.tie_item_embeddings` uses it with `use_bias=True` (Eq. 11's bias kept; weight tying as
    in Press & Wolf 2017).

    Args:
        vocabulary_size: number of item indices including padding (`num_items + 1`).
        embedding_dim: the width of `M` (and of the user representation it scores).
        use_bias: a learned bias per item (MFN4Rec's Eq. 11) instead of none (SASRec). Default False.

    Call arguments:
        inputs: `(...)` int item indices with `lookup=True`, else `(..., embedding_dim)` user
            representation(s).
        lookup: embed item indices instead of scoring. Default False.

    Returns:
        `(..., embedding_dim)` embeddings (`lookup=True`) or `(..., vocabulary_size)` logits.

    Example:

    >>> import numpy as np
    >>> layer = TiedItemLogits(5, 3)
    >>> tuple(layer(np.array([[1, 2]]), lookup=True).shape), tuple(layer(np.ones((2, 3), "float32")).shape)
    ((1, 2, 3), (2, 5))
    """

    def __init__(self, vocabulary_size, embedding_dim, use_bias=False, **kwargs):
        super().__init__(vocabulary_size, **kwargs)
        self.embedding_dim = check_positive_int("embedding_dim", embedding_dim)
        self.use_bias = bool(use_bias)

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.vocabulary_size, self.embedding_dim), initializer="glorot_uniform"
        )
        self._bias = (self.add_weight(name="bias", shape=(self.vocabulary_size,), initializer="zeros")
                      if self.use_bias else None)

    @property
    def kernel(self):
        return ops.transpose(self.embeddings)  # (embedding_dim, vocabulary_size)

    @property
    def bias(self):
        return self._bias if self._bias is not None else ops.zeros((self.vocabulary_size,), self.embeddings.dtype)

    def call(self, inputs, lookup=False):
        dtype = keras.backend.standardize_dtype(self.compute_dtype)
        table = ops.cast(self.embeddings, dtype)
        if lookup:
            return ops.take(table, ops.cast(inputs, "int32"), axis=0)
        if inputs.shape[-1] is not None and inputs.shape[-1] != self.embedding_dim:
            raise ValueError(f"TiedItemLogits scores {self.embedding_dim}-d vectors. Received: shape "
                             f"{tuple(inputs.shape)}")
        floor = -6e4 if dtype == "float16" else -1e9
        padding = ops.equal(ops.arange(self.vocabulary_size), 0)
        offset = (ops.where(padding, ops.cast(floor, self._bias.dtype), self._bias) if self._bias is not None
                  else ops.where(padding, floor, 0.0))
        return ops.matmul(inputs, ops.transpose(table)) + ops.cast(offset, dtype)

    def compute_output_spec(self, inputs, lookup=False):
        shape = tuple(inputs.shape) + (self.embedding_dim,) if lookup else tuple(inputs.shape[:-1]) + (
            self.vocabulary_size,)
        return keras.KerasTensor(shape, dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"embedding_dim": self.embedding_dim, "use_bias": self.use_bias})
        return config


def has_item_vectors(layer) -> bool:
    """Whether `layer` scores items as `h · kernel + bias` with one vector per item (`ItemLogits`,
    `TiedItemLogits`), which the sampled losses and the chunked ranking need."""
    return type(layer) in (ItemLogits, TiedItemLogits)
