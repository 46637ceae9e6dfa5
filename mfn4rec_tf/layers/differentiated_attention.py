"""Differentiated attention over the dimensions of adjacent hidden states (paper Sec. 3.2, Eq. 4-5)."""

from __future__ import annotations

import keras
from keras import ops

from mfn4rec_tf._checks import check_rate
from mfn4rec_tf.layers.fully_connected import FullyConnected


@keras.saving.register_keras_serializable(package="mfn4rec")
class DifferentiatedAttention(keras.layers.Layer):
    """Re-weights each dimension of `h_[t-1,t]` by a softmax attention over all its dimensions.

    With `x = h_[t-1,t] = [h_{t-1}, h_t]` (the multi-GRU hidden states of two adjacent steps,
    every modality concatenated; `6·d_h = 120` wide in the paper)::

        a = softmax(FC_a(x))        # Eq. 4, softmax over the D dimensions, FC_a: D -> D
        ĥ = a ⊙ x                   # Eq. 5

    FC_a is a single dense layer with dropout on its input (Table 1: no hidden layer, dropout 0.3).

    Args:
        dropout: dropout rate of FC_a. Default `0.0` (the model builder passes the paper's 0.3).
        seed: seed of the dropout generator. Default `None`.

    Call arguments:
        inputs: `(..., D)` float tensor, the concatenated adjacent hidden states.
        training: whether dropout is active. Default `False`.
        return_attention: also return the attention weights `a`. Default `False`.

    Returns:
        `ĥ` of shape `(..., D)`, or `(ĥ, a)` when `return_attention=True`. Each row of `a` sums to 1.

    Masking: the layer acts on each position independently; a mask passes through unchanged.

    Example:

    >>> import numpy as np
    >>> layer = DifferentiatedAttention(dropout=0.3)
    >>> weighted, attention = layer(np.ones((2, 120), "float32"), return_attention=True)
    >>> tuple(weighted.shape), tuple(attention.shape)
    ((2, 120), (2, 120))
    """

    def __init__(self, dropout=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.dropout = check_rate("dropout", dropout)
        self.seed = seed
        self.supports_masking = True

    def build(self, input_shape):
        width = input_shape[-1]
        if width is None:
            raise ValueError(
                f"{self.__class__.__name__} needs a known last dimension. Received: input_shape={input_shape}"
            )
        self.scores = FullyConnected(
            width, dropout=self.dropout, seed=self.seed, dtype=self.dtype_policy, name="fc_a"
        )
        self.scores.build(input_shape)

    def call(self, inputs, training=False, return_attention=False):
        attention = ops.softmax(self.scores(inputs, training=training), axis=-1)  # Eq. 4, (..., D)
        weighted = attention * inputs  # Eq. 5, (..., D)
        if return_attention:
            return weighted, attention
        return weighted

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"dropout": self.dropout, "seed": self.seed})
        return config
