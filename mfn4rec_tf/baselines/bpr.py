"""Matrix-factorisation baselines trained with the BPR pairwise loss: `bpr` and `vbpr` (paper Sec. 4.2).

Papers:

- BPR: Rendle, Freudenthaler, Gantner and Schmidt-Thieme (2009), "BPR: Bayesian Personalized Ranking
  from Implicit Feedback", UAI 2009. Matrix factorisation `score(u, i) = <p_u, q_i> + b_i`, trained
  so that an observed item outranks an unobserved one: maximise `ln sigmoid(s_ui - s_uj)`.
- VBPR: He and McAuley (2016), "VBPR: Visual Bayesian Personalized Ranking from Implicit Feedback",
  AAAI 2016. Adds visual factors: `score(u, i) = b_i + <gamma_u, gamma_i> + <theta_u, E f_i> +
  <beta', f_i>`, with `f_i` the item's (pretrained CNN) image features, `E` a learned projection to
  the visual factor width and `beta'` a learned visual bias. (The global offset and the user bias
  of the paper's Eq. 2 do not change a user's ranking, so they are left out, as in the paper's
  Eq. 3.)

Readings (ours; the MFN4Rec paper gives no details of its baselines):

- *History-encoded user factors.* Our models rank from a user's history (that is what `fit`,
  `evaluate` and `export` feed), not from a user ID, so the user factor is computed from the
  history, as in asymmetric / item-based factor models (FISM, Kabbur et al., KDD 2013): at step `t`,
  `p_t = mean(x_j for the valid history items j = 1..t)`, where `x_j` is a user-side item embedding
  (a second embedding table, not the scoring one). The layer computing the running mean,
  `HistoryMean`, is the model's `fc_out`: its output is the user representation. The scoring side
  `<p_t, q_i> + b_i` is exactly `ItemLogits` (kernel = item factors `q`, bias = item biases `b`).
- *Widths.* BPR: factor width `output_units`. VBPR: `gamma` width `output_units` and `theta` width
  `output_units`, so `h_out = concat[gamma_u, theta_u]` is `2 * output_units` wide, both halves the
  running mean of one user-side embedding of that width.
- *Regularisation.* The papers use L2 penalties; we use the package's one knob, `dropout`, applied
  to the history embeddings before the mean (seeded from `config.seed`).
- *VBPR's features.* `f_i` is the item's `image` feature vector, with its presence flag appended
  when the modality has presence (`ModalityConfig.presence`). The catalogue's table is a
  non-trainable weight of the `item_logits` layer, initialised from `item_features["image"]`, so a
  saved or exported model is self-contained; the layer's config holds only its shapes. The presence
  flags come from `item_features["image_present"]` when given, else a row counts as present when
  it is not all zeros (the dataset convention: an item without the modality has a zero vector).
  The model still takes the `image` inputs of its history (the contract of `model_inputs`), but
  the user factors are read from the item IDs only.
- *The loss.* `BPRLoss` is BPR's objective in expectation over uniformly drawn negatives: for a
  target (positive) item `p` at a position, the mean of `-ln sigmoid(s_p - s_j)` over every
  non-padding item `j != p`, computed from the full logits, so training has no sampling noise.
  (Rendle et al. sample (u, i, j) triples by bootstrap; the full mean is the quantity that
  sampling estimates.)
"""

from __future__ import annotations

import logging

import keras
import numpy as np
from keras import ops

from mfn4rec_tf._checks import check_positive_int, check_rate
from mfn4rec_tf.baselines._common import require_modalities, seed
from mfn4rec_tf.config import ID_INPUT, ModelConfig
from mfn4rec_tf.heads import model_head, model_inputs
from mfn4rec_tf.layers import ItemLogits, PaddingMask

log = logging.getLogger(__name__)


@keras.saving.register_keras_serializable(package="mfn4rec")
class HistoryMean(keras.layers.Layer):
    """Running mean of a sequence over its valid steps: the history-encoded user factor.

    At every step `t`::

        p_t = sum_{s <= t, mask_s} dropout(x_s) / max(1, #{s <= t : mask_s})

    so `p_t` depends on the valid steps up to `t` only (left context), and steps after the end of a
    right-padded sequence repeat the mean of the whole sequence. A sequence with no valid step up
    to `t` gets zeros.

    Args:
        dropout: dropout rate of the inputs, in `[0, 1)`. Default `0.0`.
        seed: seed of the dropout generator. Default `None`.

    Call arguments:
        inputs: `(batch, steps, dim)` float tensor (the history's item embeddings).
        mask: `(batch, steps)` boolean tensor, True at the real steps.
        training: whether dropout is active. Default `False`.

    Returns:
        `(batch, steps, dim)` tensor.

    Example:

    >>> import numpy as np
    >>> x = np.array([[[2.0], [4.0], [9.0]]], "float32")
    >>> HistoryMean()(x, np.array([[True, True, False]])).numpy()[0, :, 0].tolist()
    [2.0, 3.0, 3.0]
    """

    def __init__(self, dropout=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.dropout = check_rate("dropout", dropout)
        self.seed = seed

    def build(self, inputs_shape, mask_shape=None):
        self.dropout_layer = keras.layers.Dropout(self.dropout, seed=self.seed, dtype=self.dtype_policy,
                                                  name="dropout")

    def call(self, inputs, mask, training=False):
        weights = ops.cast(mask, inputs.dtype)[..., None]  # (B, T, 1)
        x = self.dropout_layer(inputs, training=training) * weights
        total = ops.cumsum(x, axis=1)  # (B, T, dim)
        count = ops.cumsum(weights, axis=1)  # (B, T, 1)
        return total / ops.maximum(count, 1.0)

    def compute_output_shape(self, inputs_shape, mask_shape=None):
        return tuple(inputs_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"dropout": self.dropout, "seed": self.seed})
        return config


@keras.saving.register_keras_serializable(package="mfn4rec")
class VisualItemLogits(ItemLogits):
    """VBPR's item scores: `ItemLogits` on the ID factors plus the visual terms of He & McAuley (2016).

    For a user representation `h = [gamma_u, theta_u]` (the last `visual_units` entries are
    `theta_u`)::

        logits_i = gamma_u · gamma_i + b_i + theta_u · (E^T f_i) + beta' · f_i

    where `gamma_i`, `b_i` are `ItemLogits`' kernel column and bias, `f_i` row `i` of the item
    feature table (a non-trainable weight), `E` a trainable `(feature_dim, visual_units)` projection
    and `beta'` a trainable `(feature_dim,)` visual bias. Item index 0 keeps `ItemLogits`' padding
    floor.

    Args:
        vocabulary_size: number of item indices including padding (`num_items + 1`).
        feature_dim: width of the item feature vectors `f_i`.
        visual_units: width of `theta_u` (and of `E^T f_i`).
        feature_table: `(vocabulary_size, feature_dim)` array, the initial value of the feature
            table. Not part of the config (a saved model stores it as a weight); `None` starts with
            zeros, e.g. when a saved model is loaded.

    Call arguments:
        inputs: `(..., id_units + visual_units)` user representation(s).

    Returns:
        `(..., vocabulary_size)` logits.

    Example:

    >>> import numpy as np
    >>> table = np.eye(4, 3, k=-1, dtype="float32")  # item i has feature vector e_{i-1}; padding 0
    >>> layer = VisualItemLogits(4, feature_dim=3, visual_units=2, feature_table=table)
    >>> tuple(layer(np.ones((2, 5), "float32")).shape)
    (2, 4)
    """

    def __init__(self, vocabulary_size, feature_dim, visual_units, feature_table=None, **kwargs):
        super().__init__(vocabulary_size, **kwargs)
        self.feature_dim = check_positive_int("feature_dim", feature_dim)
        self.visual_units = check_positive_int("visual_units", visual_units)
        if feature_table is not None:
            feature_table = np.asarray(feature_table, dtype=np.float32)
            if feature_table.shape != (self.vocabulary_size, self.feature_dim):
                raise ValueError(
                    f"`feature_table` must have shape (vocabulary_size, feature_dim) = "
                    f"{(self.vocabulary_size, self.feature_dim)}. Received: shape {feature_table.shape}"
                )
        self._initial_table = feature_table

    def build(self, input_shape):
        width = input_shape[-1]
        if width is None or width <= self.visual_units:
            raise ValueError(
                f"The input of {self.name!r} must be wider than visual_units={self.visual_units} "
                f"(it is [gamma_u, theta_u]). Received: input shape {tuple(input_shape)}"
            )
        super().build(tuple(input_shape[:-1]) + (width - self.visual_units,))  # gamma_i and b_i
        table = self._initial_table
        self.feature_table = self.add_weight(
            name="feature_table",
            shape=(self.vocabulary_size, self.feature_dim),
            initializer="zeros" if table is None else (lambda shape, dtype=None: ops.convert_to_tensor(table, dtype)),
            trainable=False,
        )
        self._initial_table = None  # the weight holds it now
        self.visual_projection = self.add_weight(
            name="visual_projection", shape=(self.feature_dim, self.visual_units), initializer="glorot_uniform"
        )  # E
        self.visual_bias = self.add_weight(name="visual_bias", shape=(self.feature_dim,), initializer="zeros")  # beta'

    def call(self, inputs):
        gamma_u = inputs[..., : -self.visual_units]
        theta_u = inputs[..., -self.visual_units:]
        id_logits = super().call(gamma_u)  # gamma_u · gamma_i + b_i, padding floored
        table = ops.cast(self.feature_table, id_logits.dtype)
        visual_items = ops.matmul(table, ops.cast(self.visual_projection, table.dtype))  # (V, visual_units)
        visual = ops.matmul(theta_u, ops.transpose(visual_items))  # (..., V)
        visual = visual + ops.matmul(table, ops.cast(self.visual_bias, table.dtype))  # + beta' · f_i
        is_padding = ops.equal(ops.arange(self.vocabulary_size), 0)
        return ops.where(is_padding, id_logits, id_logits + visual)

    def get_config(self):
        config = super().get_config()
        config.update({"feature_dim": self.feature_dim, "visual_units": self.visual_units})
        return config


@keras.saving.register_keras_serializable(package="mfn4rec")
class BPRLoss(keras.losses.Loss):
    """BPR's pairwise loss in expectation over uniformly drawn negatives, from the full logits.

    For a target item `p` with logit `s_p` among `N` items (logit index 0 is padding)::

        loss = 1 / (N - 1) * sum_{j = 1..N, j != p} softplus(s_j - s_p)      # softplus(-x) = -ln sigmoid(x)

    A target of 0 (padding) has loss 0. Sample weights and the reduction apply as for any Keras
    loss (`"sum_over_batch_size"` by default, as `SparseCategoricalCrossentropy`). It works on
    `(batch,)` or `(batch, steps)` integer targets against `(..., N + 1)` logits, in float32, with
    `O(batch · steps · N)` memory like softmax cross-entropy. `softplus` is evaluated stably, so
    large score gaps neither overflow nor lose the gradient.

    Args:
        reduction: a Keras loss reduction. Default `"sum_over_batch_size"`.
        name: the loss name. Default `"bpr"`.
        dtype: the loss dtype (Keras). Default `None`.

    Example:

    >>> import numpy as np
    >>> logits = np.array([[-1e9, 2.0, 0.0, 0.0]], "float32")  # items 1..3, item 1 the target
    >>> round(float(BPRLoss()(np.array([1]), logits)), 4)  # softplus(-2)
    0.1269
    """

    def __init__(self, reduction="sum_over_batch_size", name="bpr", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        logits = ops.cast(y_pred, "float32")
        targets = ops.cast(y_true, "int32")
        if len(targets.shape) == len(logits.shape):  # (..., 1) targets, as Keras sometimes passes them
            targets = ops.squeeze(targets, axis=-1)
        positive = ops.take_along_axis(logits, targets[..., None], axis=-1)  # (..., 1)
        vocabulary = ops.shape(logits)[-1]
        items = ops.arange(vocabulary)  # (N + 1,)
        is_negative = ops.logical_and(ops.not_equal(items, 0), ops.not_equal(items, targets[..., None]))
        pairs = ops.where(is_negative, ops.softplus(logits - positive), 0.0)  # (..., N + 1)
        negatives = ops.maximum(ops.cast(vocabulary, "float32") - 2.0, 1.0)  # N - 1 (at least 1)
        loss = ops.sum(pairs, axis=-1) / negatives
        return ops.where(ops.equal(targets, 0), 0.0, loss)


def _history_factors(config, inputs, width):
    """`(padding_mask, h_out)`: the running mean of a user-side item embedding of `width`."""
    ids = inputs[ID_INPUT]
    mask = PaddingMask(name="padding_mask")(ids)  # (B, T)
    history = keras.layers.Embedding(config.vocabulary_size, width, name="history_embedding")(ids)  # (B, T, width)
    h_out = HistoryMean(dropout=config.dropout, seed=seed(config, 100), name="fc_out")(history, mask)
    return mask, h_out


def build_bpr(config: ModelConfig, output_mode: str = "sequence", item_features=None) -> keras.Model:
    """BPR (Rendle et al., UAI 2009) with a history-encoded user factor (see the module docstring).

    `score_t(i) = <p_t, q_i> + b_i`, `p_t` the running mean of the history's user-side embeddings
    (width `output_units`), `q_i`, `b_i` in `ItemLogits`. Reads item IDs only (`config.modalities`
    must be empty); `item_features` is ignored. Train with `BPRLoss` (`bpr_loss`, its registry loss).
    """
    require_modalities(config)
    inputs = model_inputs(config)
    mask, h_out = _history_factors(config, inputs, config.output_units)  # (B, T, output_units)
    outputs = model_head(h_out, mask, ItemLogits(config.vocabulary_size, name="item_logits"), output_mode)
    return keras.Model(inputs, outputs, name="bpr")


def build_vbpr(config: ModelConfig, output_mode: str = "sequence", item_features=None) -> keras.Model:
    """VBPR (He & McAuley, AAAI 2016) with history-encoded user factors (see the module docstring).

    `h_out = [gamma_t, theta_t]` (each `output_units` wide) is the running mean of the history's
    user-side embeddings; `item_logits` (`VisualItemLogits`) scores every item with the ID and
    visual terms. `config.modalities` must be exactly `(image,)`.

    Args:
        config: the model configuration.
        output_mode: `"sequence"` or `"last"`.
        item_features: `{"image": (N + 1, dim) array}`, the catalogue's image features (row 0 =
            padding), and optionally `{"image_present": (N + 1,) bool array}`.

    Raises:
        ValueError: `item_features` lacks the image table or it has the wrong shape.
    """
    require_modalities(config)
    (modality,) = config.modalities
    table = _feature_table(modality, config.vocabulary_size, item_features)
    inputs = model_inputs(config)
    mask, h_out = _history_factors(config, inputs, 2 * config.output_units)  # [gamma_t, theta_t]
    logits_layer = VisualItemLogits(
        config.vocabulary_size,
        feature_dim=table.shape[1],
        visual_units=config.output_units,
        feature_table=table,
        name="item_logits",
    )
    return keras.Model(inputs, model_head(h_out, mask, logits_layer, output_mode), name="vbpr")


def _feature_table(modality, vocabulary_size, item_features):
    """The `(N + 1, dim [+ 1])` table `f` of VBPR: the modality's features, plus presence flags."""
    name = modality.name
    if item_features is None or name not in item_features or item_features[name] is None:
        raise ValueError(
            f"Baseline 'vbpr' scores every item by its {name!r} features: pass "
            f"`item_features={{{name!r}: (num_items + 1, {modality.dim}) array}}` (the catalogue's table, "
            "row 0 = padding). Received: "
            + ("item_features=None" if item_features is None else f"item_features with keys {sorted(item_features)}")
        )
    values = np.asarray(item_features[name], dtype=np.float32)
    if values.shape != (vocabulary_size, modality.dim):
        raise ValueError(
            f"item_features[{name!r}] must have shape (num_items + 1, dim) = {(vocabulary_size, modality.dim)}. "
            f"Received: shape {values.shape}"
        )
    if not modality.presence:
        return values
    present = item_features.get(name + "_present")
    if present is None:
        present = np.any(values != 0, axis=1)
        log.info("vbpr: %s presence flags read from the feature table (%d of %d items have a non-zero vector)",
                 name, int(present[1:].sum()), vocabulary_size - 1)
    present = np.asarray(present, dtype=np.float32).reshape(-1)
    if present.shape != (vocabulary_size,):
        raise ValueError(
            f"item_features[{name + '_present'!r}] must have shape (num_items + 1,) = ({vocabulary_size},). "
            f"Received: shape {present.shape}"
        )
    present[0] = 0.0  # padding
    return np.concatenate([values, present[:, None]], axis=1)  # (N + 1, dim + 1)


def bpr_loss(config: ModelConfig) -> BPRLoss:
    """The training loss of `bpr` and `vbpr` (their registry entries' `loss`)."""
    return BPRLoss()
