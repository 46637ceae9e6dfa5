"""Sequential baselines over item IDs only: `lstm` (paper Sec. 4.2), `gru4rec` and `sasrec`.

Papers:

- LSTM: Hochreiter and Schmidhuber (1997), "Long Short-Term Memory", Neural Computation 9(8). The
  MFN4Rec paper's ID-only RNN baseline (as in MV-RNN, Cui et al., 2018): the item-ID sequence
  through one LSTM, next-item softmax over every item.
- GRU4Rec: Hidasi, Karatzoglou, Baltrunas and Tikk (2016), "Session-based Recommendations with
  Recurrent Neural Networks", ICLR 2016 (and Hidasi & Karatzoglou, CIKM 2018, for its later
  losses): the items of a sequence through one GRU layer, the hidden state scoring every item.
- SASRec: Kang and McAuley (2018), "Self-Attentive Sequential Recommendation", ICDM 2018. Item
  embeddings plus learned positional embeddings, a stack of causal self-attention blocks
  (layer norm, attention, point-wise feed-forward network, residual connections, dropout), the
  output at step `t` predicting item `t + 1` by its inner product with the (shared) item embedding.

Readings (ours):

- LSTM: `Embedding(id_embedding_dim)` -> `keras.layers.LSTM(id_hidden_units)` over the padding mask
  -> `fc_out` -> `ItemLogits`. `fc_out` is the package's `FullyConnected` (one dense layer to
  `output_units`, activation `output_activation`, dropout `dropout` on its input, seeded from
  `config.seed`), the same block as MFN4Rec's FC_out, so the two differ only in what feeds it; it
  is also the model's only dropout (the LSTM has none, like MFN4Rec's GRUs). Trained with softmax
  cross-entropy over every item (the package default; no `loss` in their registry entries).
- GRU4Rec: `Embedding(id_embedding_dim)` -> `keras.layers.GRU(id_hidden_units)` over the padding
  mask -> dropout `dropout` on the hidden state (the layer named `fc_out`: no projection) ->
  `ItemLogits` (an output vector and a bias per item, the paper's feed-forward output layer). The
  registry preset is the 2016 paper's: 100 units, Adagrad, the cross-entropy setting of its Table 2
  (dropout 0, learning rate 0.01); the embedding (width 100) stands in for its one-hot input, as in
  common implementations. Trained by every sequence's every prefix in padded mini-batches (not the
  paper's session-parallel mini-batches, which yield the same per-step targets), with softmax
  cross-entropy over every item (default), the sampled softmax (`train.loss: sampled`, close to
  the paper's mini-batch output sampling) or one-negative BCE (`bce`). The TOP1 and BPR(-max)
  ranking losses of the papers are not implemented.
- SASRec, as in the paper and its reference code: one item table `M` (`TiedItemLogits`, width
  `d = id_embedding_dim`) embeds the inputs and scores the outputs (`r_t,i = F_t · M_i`, no bias);
  the input embedding is scaled by `sqrt(d)` (the reference code's `scale=True`), learned positions
  are added, then dropout `dropout`, and padding steps are set to zero (`ZeroPadding`). Each of the
  `attention_blocks` blocks (2) is the reference code's pre-norm block with the residual on the
  normalised query: `q = LN(x); x = q + Dropout(Attention(q, keys = values = x))`, then
  `n = LN(x); x = n + Dropout(W2 Dropout(ReLU(W1 n + b1)) + b2)` (both `d x d`), padding zeroed
  again; a final layer norm gives `F`. Attention has `attention_heads` heads (the paper: 1), is
  masked causally (step `t` sees steps `<= t`) and by the key padding mask, and drops attention
  weights at rate `dropout`; Keras' `MultiHeadAttention` adds an output projection that the
  paper's Eq. 2 lacks. Dropout generators are seeded from `config.seed`. Positions are counted from
  the first item of the right-padded sequence (position 0 = first item, as RecBole counts; the
  reference code left-pads, so its last position is always the most recent item) in a table of
  `MAX_POSITIONS` (512) learned vectors; a longer input is an error (keep `data.max_length` <=
  512). The layer named `fc_out` is the identity on `F` (so `output_units` is not read), and the
  layer named `item_logits` is the shared table. The preset is the paper's (`registry.SASREC_PRESET`);
  training is softmax cross-entropy over every item by default (Klenitskiy & Vasilev, RecSys
  2023, found it stronger than the paper's loss) or the paper's binary cross-entropy with one
  sampled negative per position (`train.loss: bce`, `mfn4rec_tf.sampled`).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from mfn4rec_tf._checks import check_positive_int
from mfn4rec_tf.baselines._common import fc_out_model, require_modalities, seed
from mfn4rec_tf.config import ID_INPUT, ModelConfig
from mfn4rec_tf.heads import model_head, model_inputs
from mfn4rec_tf.layers import ItemLogits, PaddingMask, TiedItemLogits
from mfn4rec_tf.registry import SASREC_MAX_POSITIONS

MAX_POSITIONS = SASREC_MAX_POSITIONS
"""Length of SASRec's positional table: the longest sequence it accepts."""


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


@keras.saving.register_keras_serializable(package="mfn4rec")
class ZeroPadding(keras.layers.Layer):
    """Sets the padding steps of a sequence to zero: `y[b, t] = x[b, t] * mask[b, t]` (SASRec's code
    does so after the embedding and after every block).

    Call arguments:
        inputs: `(batch, steps, dim)` float tensor.
        mask: `(batch, steps)` boolean tensor, True at the real steps.

    Returns:
        `(batch, steps, dim)` tensor.

    Example:

    >>> import numpy as np
    >>> ZeroPadding()(np.ones((1, 2, 1), "float32"), np.array([[True, False]])).numpy()[0, :, 0].tolist()
    [1.0, 0.0]
    """

    def call(self, inputs, mask):
        return inputs * ops.cast(mask, inputs.dtype)[..., None]

    def compute_output_shape(self, inputs_shape, mask_shape=None):
        return tuple(inputs_shape)


def build_sasrec(config: ModelConfig, output_mode: str = "sequence", item_features=None) -> keras.Model:
    """SASRec (Kang & McAuley, ICDM 2018) with the readings of the module docstring.

    `item_ids` -> tied item table (`d = id_embedding_dim`) x sqrt(d) + learned positions -> dropout
    -> padding zeroed -> `attention_blocks` x [q = LN(x); x = q + Dropout(SelfAttention(q, x));
    n = LN(x); x = n + Dropout(FFN(n)); padding zeroed] -> LayerNorm -> `fc_out` (identity) ->
    scores `h · M_i` with the same item table. `config.modalities` must be empty; `item_features`
    is ignored.
    """
    require_modalities(config)
    d, rate, heads = config.id_embedding_dim, config.dropout, config.attention_heads
    if d % heads:
        raise ValueError(f"SASRec splits the model width over the attention heads, so `id_embedding_dim` ({d}) must "
                         f"divide by `attention_heads` ({heads}).")
    inputs = model_inputs(config)
    ids = inputs[ID_INPUT]
    mask = PaddingMask(name="padding_mask")(ids)  # (B, T)
    attention_mask = CausalAttentionMask(name="attention_mask")(mask)  # (B, T, T)
    items = TiedItemLogits(config.vocabulary_size, d, name="item_logits")
    x = items(ids, lookup=True)  # (B, T, d)
    x = keras.layers.Rescaling(d ** 0.5, name="embedding_scale")(x)
    x = LearnedPositions(MAX_POSITIONS, name="positions")(x)
    x = keras.layers.Dropout(rate, seed=seed(config, 200), name="embedding_dropout")(x)
    x = ZeroPadding(name="embedding_padding")(x, mask)
    for block in range(config.attention_blocks):
        prefix, attention_seed = f"block{block}", seed(config, 210 + 10 * block)
        query = keras.layers.LayerNormalization(epsilon=1e-8, name=f"{prefix}_attention_norm")(x)
        attended = keras.layers.MultiHeadAttention(
            num_heads=heads, key_dim=d // heads, dropout=rate, seed=attention_seed, name=f"{prefix}_attention",
        )(query, x, attention_mask=attention_mask)  # (B, T, d): queries normalised, keys and values not
        attended = keras.layers.Dropout(rate, seed=seed(config, 211 + 10 * block), name=f"{prefix}_attention_dropout")(
            attended
        )
        x = keras.layers.Add(name=f"{prefix}_attention_residual")([query, attended])
        normed = keras.layers.LayerNormalization(epsilon=1e-8, name=f"{prefix}_ffn_norm")(x)
        hidden = keras.layers.Dense(d, activation="relu", name=f"{prefix}_ffn_hidden")(normed)
        hidden = keras.layers.Dropout(rate, seed=seed(config, 212 + 10 * block), name=f"{prefix}_ffn_dropout")(hidden)
        hidden = keras.layers.Dense(d, name=f"{prefix}_ffn_output")(hidden)
        hidden = keras.layers.Dropout(rate, seed=seed(config, 213 + 10 * block), name=f"{prefix}_ffn_output_dropout")(
            hidden
        )
        x = keras.layers.Add(name=f"{prefix}_ffn_residual")([normed, hidden])
        x = ZeroPadding(name=f"{prefix}_padding")(x, mask)
    x = keras.layers.LayerNormalization(epsilon=1e-8, name="final_norm")(x)
    h_out = keras.layers.Identity(name="fc_out")(x)  # the final block output scores the items directly
    outputs = model_head(h_out, mask, items, output_mode)
    return keras.Model(inputs, outputs, name="sasrec")


def build_gru4rec(config: ModelConfig, output_mode: str = "sequence", item_features=None) -> keras.Model:
    """GRU4Rec (Hidasi et al., ICLR 2016) over item IDs, with the readings of the module docstring.

    `item_ids` -> Embedding (`id_embedding_dim`) -> GRU (`id_hidden_units`, masked) -> `fc_out`
    (dropout `dropout` on the hidden state, no projection) -> `ItemLogits` on the hidden state.
    `config.modalities` must be empty; `item_features` is ignored.
    """
    require_modalities(config)
    inputs = model_inputs(config)
    ids = inputs[ID_INPUT]
    mask = PaddingMask(name="padding_mask")(ids)  # (B, T)
    embedded = keras.layers.Embedding(config.vocabulary_size, config.id_embedding_dim, name="item_embedding")(ids)
    states = keras.layers.GRU(config.id_hidden_units, return_sequences=True, reset_after=config.gru_reset_after,
                              name="gru")(embedded, mask=mask)  # (B, T, id_hidden_units)
    h_out = keras.layers.Dropout(config.dropout, seed=seed(config, 100), name="fc_out")(states)
    outputs = model_head(h_out, mask, ItemLogits(config.vocabulary_size, name="item_logits"), output_mode)
    return keras.Model(inputs, outputs, name="gru4rec")
