"""The fully connected blocks of the paper's Table 1 (FC_a, FC_u, FC_g1, FC_g2, FC_out)."""

from __future__ import annotations

import keras

from mfn4rec_tf._checks import check_positive_int, check_rate


@keras.saving.register_keras_serializable(package="mfn4rec")
class FullyConnected(keras.layers.Layer):
    """One row of the paper's Table 1: a dense block with an optional hidden layer and dropout.

    Without a hidden layer (FC_a, FC_out)::

        y = act(W · dropout(x) + b)

    With a hidden layer (FC_u, FC_g1, FC_g2: 6·20 → 50 → 20)::

        y = act(W2 · dropout(hidden_act(W1 · x + b1)) + b2)

    Table 1 gives each block one dropout rate but not where it acts. We follow the original Memory
    Fusion Network (Zadeh et al., 2018), which drops the hidden activations of its two-layer blocks;
    a block without a hidden layer drops its input.

    Args:
        units: output width.
        hidden_units: width of the hidden layer, or `None` for a single dense layer. Default `None`.
        activation: activation of the output (a Keras activation name or `None` for linear).
            Default `None`.
        hidden_activation: activation of the hidden layer. Default `"relu"`.
        dropout: dropout rate in `[0, 1)`. Default `0.0`.
        seed: seed of the dropout generator. Default `None`.

    Call arguments:
        inputs: `(..., input_dim)` float tensor.
        training: whether dropout is active. Default `False`.

    Returns:
        `(..., units)` tensor.

    Example:

    >>> import numpy as np
    >>> fc = FullyConnected(20, hidden_units=50, activation="sigmoid", dropout=0.3)
    >>> tuple(fc(np.zeros((2, 120), "float32")).shape)
    (2, 20)
    """

    def __init__(
        self,
        units,
        hidden_units=None,
        activation=None,
        hidden_activation="relu",
        dropout=0.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = check_positive_int("units", units)
        self.hidden_units = (
            None if hidden_units is None else check_positive_int("hidden_units", hidden_units)
        )
        self.activation = keras.activations.get(activation)
        self.hidden_activation = keras.activations.get(hidden_activation)
        self.dropout = check_rate("dropout", dropout)
        self.seed = seed
        self.supports_masking = True

    def build(self, input_shape):
        policy = self.dtype_policy
        if self.hidden_units is not None:
            self.hidden = keras.layers.Dense(
                self.hidden_units, activation=self.hidden_activation, dtype=policy, name="hidden"
            )
            self.hidden.build(input_shape)
            output_input_shape = tuple(input_shape[:-1]) + (self.hidden_units,)
        else:
            self.hidden = None
            output_input_shape = tuple(input_shape)
        self.dropout_layer = keras.layers.Dropout(self.dropout, seed=self.seed, dtype=policy, name="dropout")
        self.output_dense = keras.layers.Dense(
            self.units, activation=self.activation, dtype=policy, name="output"
        )
        self.output_dense.build(output_input_shape)

    def call(self, inputs, training=False):
        x = inputs
        if self.hidden is not None:
            x = self.hidden(x)  # (..., hidden_units)
        x = self.dropout_layer(x, training=training)
        return self.output_dense(x)  # (..., units)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "hidden_units": self.hidden_units,
                "activation": keras.activations.serialize(self.activation),
                "hidden_activation": keras.activations.serialize(self.hidden_activation),
                "dropout": self.dropout,
                "seed": self.seed,
            }
        )
        return config
