"""`feature-knn`: the items whose features are most like those of the last item of the history.

A content-based reference that needs no training and no interaction with an item, so it ranks a new
item (one without history) exactly as it ranks a known one: the yardstick for the models that score
items from their features (`model.item_representation`, docs/model.md#new-items). As a Keras model
with the contract of every other model (`mfn4rec_tf.heads`), so fit, evaluate, compare, export
(with `--add-items`) and serving treat it like the rest.

For each feature modality m with item rows `x_{m,i}` (and presence flags `p_{m,i}` where the
dataset has them), the item's direction in that modality is

    d_{m,i} = p_{m,i} · (x_{m,i} - mu_m) / ||x_{m,i} - mu_m||      (0 where the norm is 0)

with `mu_m` the mean row over the items that have the modality (index 0, the padding, excluded).
An item's vector is `v_i = [d_{1,i}, ..., d_{M,i}] / sqrt(M)`, so `v_i · v_j` is the mean over the
modalities of the two items' cosine similarities (of their centred features). The user
representation at a step (`fc_out`) is the vector of that step's item, computed from the step's
feature inputs, and an item's score (`item_logits`) is `v_t · v_i`: at the last valid step, the
similarity of every item to the last item read. The padding gets -1e9.

Training changes nothing (`FeatureKnnModel.train_step` returns a loss of 0; one epoch is its whole
training, `max_epochs=1` in its registry entry). The means `mu_m` are taken from the feature tables
the model is built with (the whole catalogue's features, which a new item's listing provides
without any interaction) and saved with the model; an export with new items keeps them
(`FeatureSimilarity.grow_from`), so the scores of the trained catalogue do not move.
The history's own items score high (the last one scores 1): rank with history exclusion
(`--exclude-history`, served `exclude_seen`) where repeats are not wanted.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from mfn4rec_tf.baselines._common import require_modalities
from mfn4rec_tf.config import ID_INPUT, PRESENCE_SUFFIX, ModelConfig
from mfn4rec_tf.heads import check_output_mode, model_head, model_inputs
from mfn4rec_tf.layers import PaddingMask
from mfn4rec_tf.layers.item_features import _grow

PADDING_SCORE = -1e9
_EPSILON = 1e-12


def _directions(rows, presence, mean, scale):
    """`scale · presence · (rows - mean) / ||rows - mean||` on the last axis (0 where the norm is 0)."""
    centred = rows - mean
    norm = ops.sqrt(ops.sum(ops.square(centred), axis=-1, keepdims=True))
    unit = ops.where(norm > _EPSILON, centred / ops.maximum(norm, _EPSILON), ops.zeros_like(centred))
    if presence is not None:
        unit = unit * ops.expand_dims(presence, -1)
    return unit * scale


def feature_means(tables, flags) -> list:
    """The mean row of each table over the items that have it (rows 1 on: row 0 is the padding).

    Args:
        tables: `(N + 1, dim)` arrays, one per modality.
        flags: one `(N + 1,)` presence array per table, or None for a modality every item has.

    Returns:
        one float32 `(dim,)` array per table (zeros where no item has the modality).
    """
    means = []
    for table, present in zip(tables, flags):
        rows = np.asarray(table, np.float64)[1:]
        if present is not None:
            rows = rows[np.asarray(present, bool)[1:]]
        means.append((rows.mean(axis=0) if len(rows) else np.zeros(rows.shape[1])).astype(np.float32))
    return means


def _mean_weights(layer, initial) -> list:
    """`layer`'s non-trainable centring means, one `(dim,)` weight per modality (`initial` or zeros)."""
    weights = []
    for number, dim in enumerate(layer.feature_dims):
        values = None if initial is None else initial[number]
        initializer = "zeros" if values is None else keras.initializers.Constant(values)
        weights.append(layer.add_weight(name=f"mean_{number}", shape=(dim,), initializer=initializer,
                                        trainable=False))
    return weights


def _vectors(layer, streams):
    """The joined vectors `[d_1, ..., d_M] / sqrt(M)` of `streams`: `layer.feature_dims`' feature rows,
    then one presence array per modality with `layer.has_presence` (in order), centred by `layer.means`."""
    count = len(layer.feature_dims)
    flags = iter(streams[count:])
    scale = 1.0 / np.sqrt(count)
    parts = []
    for number, rows in enumerate(streams[:count]):
        present = ops.cast(next(flags), rows.dtype) if layer.has_presence[number] else None
        parts.append(_directions(rows, present, ops.cast(layer.means[number], rows.dtype), scale))
    return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)


def _check_modalities(feature_dims, has_presence) -> tuple:
    dims, flags = [int(d) for d in feature_dims], [bool(p) for p in has_presence]
    if len(flags) != len(dims) or not dims:
        raise ValueError(f"`feature_dims` and `has_presence` must be non-empty and of one length. Received: "
                         f"{feature_dims!r}, {has_presence!r}")
    return dims, flags


@keras.saving.register_keras_serializable(package="mfn4rec")
class FeatureDirection(keras.layers.Layer):
    """The vector `v` of each step's item from its feature inputs (the `fc_out` of `feature-knn`).

    Call on `[features_1, ..., features_M]` (each `(batch, steps, dim_m)`), then one `(batch, steps)`
    presence input per modality that has them (`has_presence`, in order), then the padding mask
    (`(batch, steps)`, true at real steps): the padding's steps get the zero vector. (Reading the
    mask also keeps the layer `padding_mask` in the graph, which `heads.with_output_mode` needs.)

    Args:
        feature_dims: the width of each modality.
        has_presence: per modality, whether a presence input follows the features.
        means: optional `(dim_m,)` arrays, the centring means (`feature_means`); zeros when
            omitted (a model being loaded gets them from its weights).
    """

    def __init__(self, feature_dims, has_presence, means=None, **kwargs):
        super().__init__(**kwargs)
        self.feature_dims, self.has_presence = _check_modalities(feature_dims, has_presence)
        self._initial_means = None if means is None else [np.asarray(m, np.float32) for m in means]

    def build(self, input_shape):
        self.means = _mean_weights(self, self._initial_means)
        self._initial_means = None

    def call(self, inputs):
        real = ops.expand_dims(ops.cast(inputs[-1], inputs[0].dtype), -1)
        return _vectors(self, inputs[:-1]) * real

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0][:-1]) + (sum(self.feature_dims),)

    def get_config(self):
        return {**super().get_config(), "feature_dims": list(self.feature_dims),
                "has_presence": list(self.has_presence)}


@keras.saving.register_keras_serializable(package="mfn4rec")
class FeatureSimilarity(keras.layers.Layer):
    """Scores every item by `v · v_i` (the `item_logits` of `feature-knn`): `(..., D)` -> `(..., N + 1)`.

    Holds the feature tables and presence flags as non-trainable weights (saved with the model), and
    the centring means (as `FeatureDirection`'s).

    Args:
        vocabulary_size: number of item indices including padding (`num_items + 1`).
        feature_dims, has_presence: as `FeatureDirection`'s.
        tables: optional `(vocabulary_size, dim_m)` arrays, then one `(vocabulary_size,)` presence
            array per modality with `has_presence` (omitted: zeros, a model being loaded).
        means: optional centring means (`feature_means`).
    """

    def __init__(self, vocabulary_size, feature_dims, has_presence, tables=None, means=None, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size = int(vocabulary_size)
        self.feature_dims, self.has_presence = _check_modalities(feature_dims, has_presence)
        self._initial = None
        if tables is not None:
            count = len(self.feature_dims) + sum(self.has_presence)
            if len(tables) != count:
                raise ValueError(f"`tables` must hold {count} arrays (the features, then the presence flags). "
                                 f"Received {len(tables)}")
            self._initial = [np.asarray(t, np.float32) for t in tables]
        self._initial_means = None if means is None else [np.asarray(m, np.float32) for m in means]

    def build(self, input_shape):
        shapes = [(self.vocabulary_size, d) for d in self.feature_dims]
        shapes += [(self.vocabulary_size,) for present in self.has_presence if present]
        self.tables = []
        for number, shape in enumerate(shapes):
            values = None if self._initial is None else self._initial[number]
            if values is not None and values.shape != shape:
                raise ValueError(f"`tables[{number}]` must have shape {shape}. Received {values.shape}")
            initializer = "zeros" if values is None else keras.initializers.Constant(values)
            self.tables.append(self.add_weight(name=f"table_{number}", shape=shape, initializer=initializer,
                                               trainable=False))
        self.means = _mean_weights(self, self._initial_means)
        self._initial = self._initial_means = None

    def item_vectors(self):
        """`(vocabulary_size, D)`: every item's vector `v_i`."""
        return _vectors(self, [ops.convert_to_tensor(table) for table in self.tables])

    def call(self, inputs):
        vectors = ops.cast(self.item_vectors(), inputs.dtype)
        scores = ops.matmul(inputs, ops.transpose(vectors))
        is_padding = ops.equal(ops.arange(self.vocabulary_size), 0)
        return ops.where(is_padding, ops.cast(PADDING_SCORE, scores.dtype), scores)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.vocabulary_size,)

    def grow_from(self, old):
        """Keeps `old`'s centring means (a layer of a smaller catalogue): this layer's tables already
        hold the longer catalogue, and the trained items' scores stay as they were."""
        if old.feature_dims != self.feature_dims or old.has_presence != self.has_presence:
            raise ValueError(f"Cannot grow a layer with feature_dims={self.feature_dims}, has_presence="
                             f"{self.has_presence} from one with {old.feature_dims}, {old.has_presence}.")
        for mine, theirs in zip(self.means, old.means):
            mine.assign(np.asarray(theirs))

    def get_config(self):
        return {**super().get_config(), "vocabulary_size": self.vocabulary_size,
                "feature_dims": list(self.feature_dims), "has_presence": list(self.has_presence)}


@keras.saving.register_keras_serializable(package="mfn4rec")
class FeatureKnnModel(keras.Model):
    """The functional `feature-knn` model; training leaves it unchanged (the module docstring). It
    keeps `keras.Model`'s constructor, so Keras saves and loads it as a functional model."""

    def train_step(self, data):
        return {"loss": tf.constant(0.0)}


def build_feature_knn(config: ModelConfig, output_mode: str = "sequence", item_features=None) -> keras.Model:
    """The `feature-knn` model of `config` (its modalities and `num_items`; no size setting applies).

    Args:
        item_features: `{modality: (N + 1, dim) array, modality + "_present": (N + 1,) array}` for
            every modality of `config` (and its presence flags); None for a model whose weights are
            about to be loaded.

    Raises:
        ValueError: `config` has no modality, or `item_features` lacks one of its tables.
    """
    check_output_mode(output_mode)
    require_modalities(config)
    dims, has_presence, tables, means = _similarity_settings(config, item_features)
    inputs = model_inputs(config)
    mask = PaddingMask(name="padding_mask")(inputs[ID_INPUT])
    h_out = FeatureDirection(dims, has_presence, means=means, name="fc_out")(_direction_inputs(config, inputs, mask))
    logits = FeatureSimilarity(config.vocabulary_size, dims, has_presence, tables=tables, means=means,
                               name="item_logits")
    return FeatureKnnModel(inputs, model_head(h_out, mask, logits, output_mode), name="feature-knn")


def _similarity_settings(config, item_features):
    """`(feature_dims, has_presence, tables, means)` of the similarity layers of `config`'s modalities
    (`tables`, `means` None without `item_features`: a model about to be loaded)."""
    modalities = config.modalities
    dims = [m.dim for m in modalities]
    has_presence = [bool(m.presence) for m in modalities]
    if item_features is None:
        return dims, has_presence, None, None
    features, flags = [], []
    for modality in modalities:
        if modality.name not in item_features:
            raise ValueError(f"`item_features` has no table for the modality {modality.name!r}, which "
                             f"{config.variant!r} compares items by.")
        features.append(item_features[modality.name])
        name = modality.name + PRESENCE_SUFFIX
        if modality.presence and name not in item_features:
            raise ValueError(f"`item_features` has no {name!r} flags for the modality {modality.name!r}.")
        flags.append(item_features[name] if modality.presence else None)
    return dims, has_presence, features + [f for f in flags if f is not None], feature_means(features, flags)


def _direction_inputs(config, inputs, mask):
    """What `FeatureDirection` reads: the modalities' inputs, their presence inputs, the padding mask."""
    modalities = config.modalities
    return ([inputs[m.name] for m in modalities] + [inputs[m.name + PRESENCE_SUFFIX] for m in modalities
                                                    if m.presence] + [mask])


def knn_cold_start(config: ModelConfig, inputs, mask, item_features=None) -> tuple:
    """The cold-start head of an `item_representation: id+knn` model: `(KnnColdStart layer, directions)`,
    the pair `heads.model_head` takes (`directions`: the output of a `FeatureDirection` named
    `step_directions` on `inputs`, `(batch, steps, D)`)."""
    require_modalities(config)
    dims, has_presence, tables, means = _similarity_settings(config, item_features)
    directions = FeatureDirection(dims, has_presence, means=means, name="step_directions")(
        _direction_inputs(config, inputs, mask))
    head = KnnColdStart(config.vocabulary_size, dims, has_presence, tables=tables, means=means, name="cold_start")
    return head, directions


OFF = float("-inf")
"""`KnnColdStart`'s offset when the head is off: unknown items get the padding's floor (never recommended
while a known item is left)."""


def blend_scores(logits, similarity, known, offset, slope):
    """The scores of `item_representation: id+knn` (docs/model.md#new-items).

    A known item keeps its logit. An item without a trained ID vector (`known` 0) is placed on the
    user's own scale of the known items' logits by its feature similarity to the last history item:

        score_i = mean_u + std_u · (offset + slope · similarity_i)

    with `mean_u`, `std_u` the mean and standard deviation of row u's logits over the known items
    (index 0, the padding, left out). With `offset` -inf (`OFF`) the unknown items get the padding's floor.

    Args:
        logits: `(..., V)` the ID model's logits (index 0: the padding's floor).
        similarity: `(..., V)` each item's similarity to the last history item (`FeatureSimilarity`).
        known: `(V,)` 1.0 for an item with a trained ID vector (index 0 included), 0.0 otherwise.
        offset, slope: the blend (scalars, in standard deviations of the user's known-item logits).

    Returns:
        `(..., V)` scores.
    """
    mean, std = known_moments(logits, known)
    return ops.where(ops.cast(known, logits.dtype) > 0, logits, cold_scores(mean, std, similarity, offset, slope))


def known_moments(logits, known):
    """`(mean, std)`, each `(..., 1)`: the mean and (population) standard deviation of each row of
    `logits` `(..., V)` over the items whose `known` flag `(V,)` is 1, the padding (index 0) left out."""
    known = ops.cast(known, logits.dtype)
    real = ops.concatenate([ops.zeros((1,), logits.dtype), known[1:]])
    count = ops.maximum(ops.sum(real), 1.0)
    mean = ops.sum(logits * real, axis=-1, keepdims=True) / count
    std = ops.sqrt(ops.sum(ops.square(logits - mean) * real, axis=-1, keepdims=True) / count)
    return mean, std


def cold_scores(mean, std, similarity, offset, slope):
    """`mean + std · (offset + slope · similarity)` (`blend_scores`' unknown items), or the padding's
    floor everywhere when `offset` is -inf (`OFF`)."""
    similarity = ops.convert_to_tensor(similarity)
    dtype = mean.dtype
    offset, slope = ops.cast(offset, dtype), ops.cast(slope, dtype)
    on = ops.isfinite(offset)
    cold = mean + std * (ops.where(on, offset, 0.0) + slope * ops.cast(similarity, dtype))
    return ops.where(on, cold, ops.cast(PADDING_SCORE, dtype))


@keras.saving.register_keras_serializable(package="mfn4rec")
class KnnColdStart(FeatureSimilarity):
    """The cold-start head of `item_representation: id+knn` (the layer named `cold_start`).

    Call on `[logits, directions]`: an ID model's `(..., V)` logits and the `(..., D)` vector of the
    last history item (`FeatureDirection`). In training it returns `logits` unchanged (an `id+knn`
    model trains exactly as an `id` model). Outside training every item whose `known` flag is 0 (no
    trained ID vector: never in the training sequences, or added by `export --add-items`) is scored
    by `blend_scores` from its feature similarity to that item (`FeatureSimilarity`'s `v · v_i`).

    `offset` and `slope` are non-trainable weights set after training by `mfn4rec_tf.cold_start`'s
    calibration on the validation split; until then `offset` is `OFF` (unknown items never recommended).

    Args:
        vocabulary_size, feature_dims, has_presence, tables, means: as `FeatureSimilarity`'s.
    """

    tracks_known_items = True  # `set_known_items` sets its flags

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.supports_masking = True

    def compute_mask(self, inputs, mask=None):
        """The logits' mask passes through (the training loss of a sequence-mode model reads it)."""
        return mask[0] if isinstance(mask, (list, tuple)) else mask

    def build(self, input_shape):
        super().build(input_shape)
        self.known = self.add_weight(name="known", shape=(self.vocabulary_size,), initializer="ones", trainable=False)
        self.offset = self.add_weight(name="offset", shape=(), initializer=keras.initializers.Constant(OFF),
                                      trainable=False)
        self.slope = self.add_weight(name="slope", shape=(), initializer="zeros", trainable=False)

    def similarity(self, directions):
        """`(..., V)`: each item's similarity to the item whose vector is `directions` `(..., D)`."""
        return FeatureSimilarity.call(self, directions)

    def call(self, inputs, training=None):
        logits, directions = inputs
        if training:
            return logits
        return blend_scores(logits, self.similarity(ops.cast(directions, logits.dtype)), self.known, self.offset,
                            self.slope)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def set_blend(self, offset, slope):
        """Sets the blend: `offset` None (or -inf) turns the head off."""
        self.offset.assign(OFF if offset is None else float(offset))
        self.slope.assign(0.0 if slope is None else float(slope))

    def blend(self) -> tuple:
        """`(offset, slope)`, or `(None, None)` when the head is off."""
        offset = float(np.asarray(self.offset))
        return (None, None) if not np.isfinite(offset) else (offset, float(np.asarray(self.slope)))

    def grow_from(self, old):
        """`FeatureSimilarity.grow_from`, and `old`'s known flags (the items past them unknown) and blend."""
        super().grow_from(old)
        self.known.assign(_grow(np.asarray(old.known), np.zeros(self.vocabulary_size, np.float32), 0))
        self.set_blend(*old.blend())
