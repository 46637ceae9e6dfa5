"""Sequential baselines over item IDs only: `lstm` (paper Sec. 4.2) and `sasrec` (today's reference).

Papers:

- LSTM: Hochreiter and Schmidhuber (1997), "Long Short-Term Memory", Neural Computation 9(8). The
  MFN4Rec paper's ID-only RNN baseline (as in MV-RNN, Cui et al., 2018): the item-ID sequence
  through one LSTM, next-item softmax over every item.
- SASRec: Kang and McAuley (2018), "Self-Attentive Sequential Recommendation", ICDM 2018. Item
  embeddings plus learned positional embeddings, a stack of causal self-attention blocks
  (layer norm, single-head attention, point-wise feed-forward network, residual connections,
  dropout), the output at step `t` predicting item `t + 1`.

Readings (ours):

- LSTM: `Embedding(id_embedding_dim)` -> `keras.layers.LSTM(id_hidden_units)` over the padding mask
  -> `fc_out` -> `ItemLogits`. `fc_out` is the package's `FullyConnected` (one dense layer to
  `output_units`, activation `output_activation`, dropout `dropout` on its input, seeded from
  `config.seed`), the same block as MFN4Rec's FC_out, so the two differ only in what feeds it; it
  is also the model's only dropout (the LSTM has none, like MFN4Rec's GRUs). Trained with softmax
  cross-entropy over every item (the package default; no `loss` in their registry entries).
- SASRec: model width `d = id_embedding_dim`; 2 blocks; 1 attention head (SASRec's choice, which
  also works for any `d`; Keras' `MultiHeadAttention` adds an output projection that the paper's
  Eq. 2 lacks); the paper's block `x + Dropout(g(LayerNorm(x)))` for `g` = self-attention and the
  FFN (`ReLU(x W1 + b1) W2 + b2`, both `d x d`), and a final layer norm. Attention is masked causally
  (step `t` sees steps `<= t`) and by the key padding mask. Dropout `dropout` on the embeddings,
  the attention weights, the FFN's hidden layer and each sublayer's output (seeded from
  `config.seed`). Positions are counted from the first item of the
  right-padded sequence (position 0 = first item) in a fixed table of `MAX_POSITIONS` (512)
  learned vectors; a longer input is an error (keep `data.max_length` <= 512). `fc_out` is a
  `FullyConnected` projection of the final block output to `output_units` (activation
  `output_activation`, no dropout: the blocks have their own), then `ItemLogits` scores every item.
  So, unlike SASRec, the output item vectors are not tied to the input embedding (our models all
  score through `ItemLogits`), and training is softmax cross-entropy over every item, the common
  stronger variant of SASRec's binary cross-entropy with one sampled negative per position.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from mfn4rec_tf._checks import check_positive_int
from mfn4rec_tf.baselines._common import fc_out_model, require_modalities, seed
from mfn4rec_tf.config import ID_INPUT, ModelConfig
from mfn4rec_tf.heads import model_inputs
from mfn4rec_tf.layers import PaddingMask
from mfn4rec_tf.registry import SASREC_MAX_POSITIONS

MAX_POSITIONS = SASREC_MAX_POSITIONS
"""Length of SASRec's positional table: the longest sequence it accepts."""
SASREC_BLOCKS = 2
SASREC_HEADS = 1


def build_lstm(config: ModelConfig, output_mode: str = "sequence", item_features=None) -> keras.Model:
    """The ID-only LSTM baseline (Hochreiter & Schmidhuber, 1997; see the module docstring).

    `item_ids` -> Embedding (`id_embedding_dim`) -> LSTM (`id_hidden_units`, masked) -> `fc_out`
    (`FullyConnected` to `output_units`) -> `ItemLogits`. `config.modalities` must be empty;
    `item_features` is ignored.
    """
    require_modalities(config)
    inputs = model_inputs(config)
    ids = inputs[ID_INPUT]
    mask = PaddingMask(name="padding_mask")(ids)  # (B, T)
    embedded = keras.layers.Embedding(config.vocabulary_size, config.id_embedding_dim, name="item_embedding")(ids)
    states = keras.layers.LSTM(config.id_hidden_units, return_sequences=True, name="lstm")(embedded, mask=mask)
    return fc_out_model(config, inputs, mask, states, output_mode)


@keras.saving.register_keras_serializable(package="mfn4rec")
class LearnedPositions(keras.layers.Layer):
    """Adds a learned vector per position: `y_t = x_t + P_t` (SASRec's positional embedding).

    Position 0 is the first step of the input (sequences are right-padded, so it is the first
    item). Inputs longer than `max_positions` steps are an error (ValueError when the length is
    known while building, an `InvalidArgumentError` at run time otherwise).

    Args:
        max_positions: number of positions in the table. Default `MAX_POSITIONS` (512).

    Call arguments:
        inputs: `(batch, steps, dim)` float tensor.

    Returns:
        `(batch, steps, dim)` tensor.

    Example:

    >>> import numpy as np
    >>> layer = LearnedPositions(max_positions=4)
    >>> tuple(layer(np.zeros((2, 3, 5), "float32")).shape)
    (2, 3, 5)
    """

    def __init__(self, max_positions=MAX_POSITIONS, **kwargs):
        super().__init__(**kwargs)
        self.max_positions = check_positive_int("max_positions", max_positions)

    def build(self, input_shape):
        self._check_steps(input_shape[1])
        self.positions = self.add_weight(
            name="positions", shape=(self.max_positions, input_shape[-1]), initializer="glorot_uniform"
        )

    def _check_steps(self, steps):
        if isinstance(steps, int) and steps > self.max_positions:
            raise ValueError(
                f"{self.name!r} has {self.max_positions} positions, so sequences may have at most that many steps. "
                f"Received: {steps} steps (shorten data.max_length)"
            )

    def call(self, inputs):
        steps = ops.shape(inputs)[1]
        self._check_steps(steps)
        if not isinstance(steps, int):  # traced with an unknown length: check when it runs
            check = tf.debugging.assert_less_equal(
                steps, self.max_positions,
                message=f"{self.name}: sequences may have at most {self.max_positions} steps (shorten data.max_length)",
            )
            with tf.control_dependencies([check]):
                steps = tf.identity(steps)
        return inputs + ops.cast(self.positions[:steps], inputs.dtype)[None]  # (B, T, dim)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"max_positions": self.max_positions})
        return config


@keras.saving.register_keras_serializable(package="mfn4rec")
class CausalAttentionMask(keras.layers.Layer):
    """The attention mask of causal self-attention over a padded sequence.

    `allowed[b, t, s] = (s <= t) and mask[b, s]`: step `t` attends to the real steps up to itself.

    Call arguments:
        mask: `(batch, steps)` boolean tensor, True at the real steps.

    Returns:
        `(batch, steps, steps)` boolean tensor (`attention_mask` of `keras.layers.MultiHeadAttention`).

    Example:

    >>> import numpy as np
    >>> CausalAttentionMask()(np.array([[True, True, False]])).numpy()[0].astype(int).tolist()
    [[1, 0, 0], [1, 1, 0], [1, 1, 0]]
    """

    def call(self, mask):
        steps = ops.arange(ops.shape(mask)[1])
        causal = ops.greater_equal(steps[:, None], steps[None, :])  # (T, T): query t, key s <= t
        return ops.logical_and(causal[None], ops.cast(mask, "bool")[:, None, :])  # (B, T, T)

    def compute_output_spec(self, mask):
        return keras.KerasTensor((mask.shape[0], mask.shape[1], mask.shape[1]), dtype="bool")


def build_sasrec(config: ModelConfig, output_mode: str = "sequence", item_features=None) -> keras.Model:
    """SASRec (Kang & McAuley, ICDM 2018) with the readings of the module docstring.

    `item_ids` -> Embedding (`d = id_embedding_dim`) + learned positions -> dropout ->
    2 x [x + Dropout(SelfAttention(LayerNorm(x))); x + Dropout(FFN(LayerNorm(x)))] -> LayerNorm ->
    `fc_out` (to `output_units`) -> `ItemLogits`. `config.modalities` must be empty;
    `item_features` is ignored.
    """
    require_modalities(config)
    d, rate = config.id_embedding_dim, config.dropout
    inputs = model_inputs(config)
    ids = inputs[ID_INPUT]
    mask = PaddingMask(name="padding_mask")(ids)  # (B, T)
    attention_mask = CausalAttentionMask(name="attention_mask")(mask)  # (B, T, T)
    x = keras.layers.Embedding(config.vocabulary_size, d, name="item_embedding")(ids)  # (B, T, d)
    x = LearnedPositions(MAX_POSITIONS, name="positions")(x)
    x = keras.layers.Dropout(rate, seed=seed(config, 200), name="embedding_dropout")(x)
    for block in range(SASREC_BLOCKS):
        prefix, attention_seed = f"block{block}", seed(config, 210 + 10 * block)
        normed = keras.layers.LayerNormalization(epsilon=1e-8, name=f"{prefix}_attention_norm")(x)
        attended = keras.layers.MultiHeadAttention(
            num_heads=SASREC_HEADS, key_dim=d // SASREC_HEADS, dropout=rate, seed=attention_seed,
            name=f"{prefix}_attention",
        )(normed, normed, attention_mask=attention_mask)  # (B, T, d)
        attended = keras.layers.Dropout(rate, seed=seed(config, 211 + 10 * block), name=f"{prefix}_attention_dropout")(
            attended
        )
        x = keras.layers.Add(name=f"{prefix}_attention_residual")([x, attended])
        normed = keras.layers.LayerNormalization(epsilon=1e-8, name=f"{prefix}_ffn_norm")(x)
        hidden = keras.layers.Dense(d, activation="relu", name=f"{prefix}_ffn_hidden")(normed)
        hidden = keras.layers.Dropout(rate, seed=seed(config, 212 + 10 * block), name=f"{prefix}_ffn_dropout")(hidden)
        hidden = keras.layers.Dense(d, name=f"{prefix}_ffn_output")(hidden)
        hidden = keras.layers.Dropout(rate, seed=seed(config, 213 + 10 * block), name=f"{prefix}_ffn_output_dropout")(
            hidden
        )
        x = keras.layers.Add(name=f"{prefix}_ffn_residual")([x, hidden])
    x = keras.layers.LayerNormalization(epsilon=1e-8, name="final_norm")(x)
    return fc_out_model(config, inputs, mask, x, output_mode, dropout=False)


