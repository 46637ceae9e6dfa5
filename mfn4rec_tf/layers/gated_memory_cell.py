"""The gated multi-modal memory of MFN4Rec as a Keras RNN cell (paper Sec. 3.2-3.3, Eq. 4-9)."""

from __future__ import annotations

import keras
from keras import ops

from mfn4rec_tf._checks import check_positive_int, check_rate
from mfn4rec_tf.layers.differentiated_attention import DifferentiatedAttention
from mfn4rec_tf.layers.fully_connected import FullyConnected


@keras.saving.register_keras_serializable(package="mfn4rec")
class GatedMemoryCell(keras.layers.Layer):
    """One step of the multi-view gated memory network: attention over adjacent states, then Eq. 6-9.

    The step input is `h_t`, the multi-GRU hidden states of every modality concatenated
    (`input_dim` wide). The state is `(h_{t-1}, u_{t-1})`, both zeros at `t = 1`::

        ĥ   = DifferentiatedAttention([h_{t-1}, h_t])     # Eq. 4-5
        û_t = FC_u(ĥ)                                     # Eq. 6
        g1  = sigmoid(FC_g1(ĥ))                           # Eq. 7, remaining gate
        g2  = sigmoid(FC_g2(ĥ))                           # Eq. 8, update gate
        u_t = g1 ⊙ u_{t-1} + g2 ⊙ tanh(û_t)               # Eq. 9

    FC_u, FC_g1 and FC_g2 are `2·input_dim -> hidden_units -> memory_dim` blocks with
    `hidden_activation` and dropout on the hidden layer (Table 1: 120 -> 50 -> 20, dropout 0.3).
    The gates are sigmoid, as in the original Memory Fusion Network (the paper does not say).
    Dropout draws a fresh mask at every step, as a per-step dense layer would.

    Because the gates see only `ĥ` (not `u_{t-1}`), `u_t` is linear in `u_{t-1}`; this cell is the
    step-by-step reference of that recurrence.

    Args:
        input_dim: width of `h_t` (sum of the modalities' hidden sizes). Required, because Keras' `RNN`
            reads `state_size` when it is constructed.
        memory_dim: width of the memory `u` (`d_mem`). Default `20`.
        hidden_units: hidden width of FC_u, FC_g1, FC_g2. Default `50`.
        dropout: dropout rate of every FC block, FC_a included. Default `0.0` (the model builder passes
            the paper's 0.3).
        hidden_activation: activation of the hidden layers. Default `"relu"`.
        seed: seed of the dropout generators. Default `None`.

    Call arguments:
        inputs: `(batch, input_dim)`, `h_t`.
        states: list `[h_{t-1} (batch, input_dim), u_{t-1} (batch, memory_dim)]`.
        training: whether dropout is active. Default `False`.

    Returns:
        `(u_t, [h_t, u_t])`.

    Masking: used in `keras.layers.RNN(cell)` with a mask, a masked step leaves both states (and the
    output) unchanged, so padding anywhere in a sequence does not change the memory.

    Example:

    >>> import numpy as np, keras
    >>> memory = keras.layers.RNN(GatedMemoryCell(input_dim=60), return_sequences=True)
    >>> tuple(memory(np.zeros((2, 5, 60), "float32")).shape)
    (2, 5, 20)
    """

    def __init__(
        self,
        input_dim,
        memory_dim=20,
        hidden_units=50,
        dropout=0.0,
        hidden_activation="relu",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.input_dim = check_positive_int("input_dim", input_dim)
        self.memory_dim = check_positive_int("memory_dim", memory_dim)
        self.hidden_units = check_positive_int("hidden_units", hidden_units)
        self.dropout = check_rate("dropout", dropout)
        self.hidden_activation = hidden_activation
        keras.activations.get(hidden_activation)  # fail early on an unknown name
        self.seed = seed
        self.state_size = [self.input_dim, self.memory_dim]
        self.output_size = self.memory_dim

    def _sub_seed(self, offset):
        return None if self.seed is None else self.seed + offset

    def build(self, input_shape):
        width = input_shape[-1]
        if width != self.input_dim:
            raise ValueError(
                f"{self.__class__.__name__} was created with input_dim={self.input_dim} but its input "
                f"has last dimension {width}. Received: input_shape={input_shape}"
            )
        pair_shape = tuple(input_shape[:-1]) + (2 * self.input_dim,)
        policy = self.dtype_policy
        self.attention = DifferentiatedAttention(
            dropout=self.dropout, seed=self._sub_seed(0), dtype=policy, name="attention"
        )

        def block(name, activation, offset):
            return FullyConnected(
                self.memory_dim,
                hidden_units=self.hidden_units,
                activation=activation,
                hidden_activation=self.hidden_activation,
                dropout=self.dropout,
                seed=self._sub_seed(offset),
                dtype=policy,
                name=name,
            )

        self.candidate = block("fc_u", None, 1)  # Eq. 6 (tanh is applied in Eq. 9)
        self.remain_gate = block("fc_g1", "sigmoid", 2)  # Eq. 7
        self.update_gate = block("fc_g2", "sigmoid", 3)  # Eq. 8
        for layer in (self.attention, self.candidate, self.remain_gate, self.update_gate):
            layer.build(pair_shape)

    def call(self, inputs, states, training=False):
        h_prev, u_prev = states
        pair = ops.concatenate([h_prev, inputs], axis=-1)  # h_[t-1,t]: (batch, 2 * input_dim)
        attended = self.attention(pair, training=training)  # Eq. 4-5
        candidate = self.candidate(attended, training=training)  # Eq. 6, (batch, memory_dim)
        remain = self.remain_gate(attended, training=training)  # Eq. 7
        update = self.update_gate(attended, training=training)  # Eq. 8
        memory = remain * u_prev + update * ops.tanh(candidate)  # Eq. 9
        return memory, [inputs, memory]

    def get_initial_state(self, batch_size=None):
        return [
            ops.zeros((batch_size, self.input_dim), dtype=self.compute_dtype),
            ops.zeros((batch_size, self.memory_dim), dtype=self.compute_dtype),
        ]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "input_dim": self.input_dim,
                "memory_dim": self.memory_dim,
                "hidden_units": self.hidden_units,
                "dropout": self.dropout,
                "hidden_activation": self.hidden_activation,
                "seed": self.seed,
            }
        )
        return config
