"""Items represented from their features, so that an item without history can be read and scored.

Two layers, used by the MFN4Rec variants when `model.item_representation` is `features` or
`id+features` (docs/model.md#new-items):

- `ItemIdEmbedding` (input side): the ID embedding of each history item, except that an item the
  model does not know (never in its training data, or added after training) reads a learned
  "unknown" vector instead of its untrained row. The item's features still reach the model through
  the feature streams, so a new item in a history is read through its features.
- `FeatureItemLogits` (output side): every item's output vector is `encoder(features)` (`features`)
  or `encoder(features) + known · ID vector` (`id+features`), and its logit `h_out · vector + bias`.

Both hold a non-trainable `known` flag per item index (1.0 = trained ID; set by
`set_known_items`). In training, `id_dropout` treats each known item as unknown with that
probability, one draw per item of the catalogue and step, so the feature path learns to carry
signal on its own; nothing is rescaled (an unknown item's ID part is simply absent). At inference
nothing is dropped.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from mfn4rec_tf._checks import check_fraction, check_positive_int, check_rate

UNKNOWN_FLOOR = -1e9
"""In training with `exclude_unknown`, the logit of an item the model does not know (as the padding's)."""


def _check_vocabulary(vocabulary_size):
    size = check_positive_int("vocabulary_size", vocabulary_size)
    if size < 2:
        raise ValueError(f"`vocabulary_size` counts the padding index 0 and at least one item, so it must be >= 2. "
                         f"Received: vocabulary_size={vocabulary_size!r}")
    return size


def _kept(layer, training):
    """`(vocabulary_size,)` 1.0 where an item's ID part is used in this call: known, and not dropped."""
    known = ops.convert_to_tensor(layer.known)
    if training and layer.id_dropout > 0.0:
        draw = keras.random.uniform((layer.vocabulary_size,), seed=layer.seed_generator)
        keep = ops.cast(draw >= layer.id_dropout, known.dtype)
        keep = ops.where(ops.equal(ops.arange(layer.vocabulary_size), 0), ops.ones_like(keep), keep)  # padding
        known = known * keep
    return known


def _grow(old, new, axis):
    """`old` (an array) placed at the start of `new` (an array) along `axis`; the rest of `new` is kept."""
    out = np.array(new, copy=True)
    index = [slice(None)] * out.ndim
    index[axis] = slice(0, old.shape[axis])
    out[tuple(index)] = old
    return out


@keras.saving.register_keras_serializable(package="mfn4rec")
class ItemIdEmbedding(keras.layers.Layer):
    """Item-ID embedding with a learned "unknown item" vector (the input side of a features model).

    `output[b, t] = known'[i] · E[i] + (1 - known'[i]) · unknown` for `i = ids[b, t]`, where `known'`
    is the `known` flag times, in training, the ID dropout draw. Index 0 (padding) always reads `E[0]`,
    as a `keras.layers.Embedding` would.

    Args:
        vocabulary_size: number of item indices including padding (`num_items + 1`).
        output_dim: embedding width.
        id_dropout: rate in [0, 1) at which known items read the unknown vector in training.
        seed: seed of the dropout draws.
    """

    tracks_known_items = True  # `set_known_items` sets its flags

    def __init__(self, vocabulary_size, output_dim, id_dropout=0.5, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size = _check_vocabulary(vocabulary_size)
        self.output_dim = check_positive_int("output_dim", output_dim)
        self.id_dropout = check_rate("id_dropout", id_dropout)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        self.embeddings = self.add_weight(name="embeddings", shape=(self.vocabulary_size, self.output_dim),
                                          initializer=keras.initializers.RandomUniform(-0.05, 0.05))
        self.unknown = self.add_weight(name="unknown", shape=(self.output_dim,),
                                       initializer=keras.initializers.RandomUniform(-0.05, 0.05))
        self.known = self.add_weight(name="known", shape=(self.vocabulary_size,), initializer="ones",
                                     trainable=False)

    def call(self, inputs, training=None):
        ids = ops.cast(inputs, "int32")
        keep = ops.take(_kept(self, training), ids, axis=0)[..., None]  # (..., 1)
        rows = ops.take(self.embeddings, ids, axis=0)  # (..., output_dim)
        return keep * rows + (1.0 - keep) * self.unknown

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    def grow_from(self, old):
        """Copies `old`'s weights (a layer of a smaller catalogue) into this one: its items keep their
        rows and flags, the items past them are unknown."""
        known = np.zeros(self.vocabulary_size, np.float32)
        self.embeddings.assign(_grow(np.asarray(old.embeddings), np.zeros_like(np.asarray(self.embeddings)), 0))
        self.unknown.assign(np.asarray(old.unknown))
        self.known.assign(_grow(np.asarray(old.known), known, 0))

    def get_config(self):
        config = super().get_config()
        config.update({"vocabulary_size": self.vocabulary_size, "output_dim": self.output_dim,
                       "id_dropout": self.id_dropout, "seed": self.seed})
        return config


@keras.saving.register_keras_serializable(package="mfn4rec")
class FeatureItemLogits(keras.layers.Layer):
    """Scores every item from its features (and ID): the output layer of a features model.

    With `x_i` the concatenation of item i's feature rows (and its presence flags, where a modality
    has them), the item encoder is `z_i = tanh(x_i W1 + b1)`, and

        v_i = z_i W2 + b2   [+ known'_i · K[:, i]]     (id+features)
        c_i = z_i w_c       [+ known'_i · b_i]
        logits = h_out · v_i + c_i                     for every item i; index 0 gets a floor of -1e9

    `known'` is the `known` flag times, in training, the ID dropout draw. The feature tables are
    non-trainable weights of the layer (saved with the model; an export with new items builds a
    layer over longer tables and copies the rest with `grow_from`).

    Args:
        vocabulary_size: number of item indices including padding (`num_items + 1`).
        feature_dims: the width of each feature table, in order (a presence flag counts as one).
        hidden_units: width of the encoder's hidden layer.
        use_id: whether the item's ID vector and bias are added (`id+features`).
        id_dropout: rate in [0, 1) at which known items lose their ID part in training.
        seed: seed of the dropout draws.
        exclude_unknown: in training, give the items that are not `known` the padding's floor logit,
            so they leave the softmax (and the sampled and chunked losses, which read `item_weights`):
            no step pushes a never-trained item's feature vector down as a negative. Inference
            scores every item.
        id_inference_scale: the weight of the ID part outside training (`use_id` only), in [0, 1];
            1.0 (default) as trained, `1 - id_dropout` dropout's weight-scaling rule.
        tables: optional list of `(vocabulary_size, width)` arrays, the feature tables' values (not
            serialized: a loaded model gets them from its weights).
    """

    tracks_known_items = True  # `set_known_items` sets its flags

    def __init__(self, vocabulary_size, feature_dims, hidden_units=50, use_id=True, id_dropout=0.5, seed=None,
                 tables=None, exclude_unknown=False, id_inference_scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size = _check_vocabulary(vocabulary_size)
        if isinstance(feature_dims, (str, bytes)) or not feature_dims:
            raise ValueError(f"`feature_dims` must be a non-empty list of widths. Received: {feature_dims!r}")
        self.feature_dims = [check_positive_int("feature_dims", d) for d in feature_dims]
        self.hidden_units = check_positive_int("hidden_units", hidden_units)
        self.use_id = bool(use_id)
        self.id_dropout = check_rate("id_dropout", id_dropout)
        self.seed = seed
        self.exclude_unknown = bool(exclude_unknown)
        self.id_inference_scale = check_fraction("id_inference_scale", id_inference_scale)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._initial_tables = None
        if tables is not None:
            if len(tables) != len(self.feature_dims):
                raise ValueError(f"`tables` must hold {len(self.feature_dims)} arrays. Received {len(tables)}")
            self._initial_tables = []
            for number, (table, width) in enumerate(zip(tables, self.feature_dims)):
                table = np.asarray(table, np.float32)
                if table.ndim == 1:
                    table = table[:, None]
                if table.shape != (self.vocabulary_size, width):
                    raise ValueError(f"`tables[{number}]` must have shape {(self.vocabulary_size, width)}. "
                                     f"Received {table.shape}")
                self._initial_tables.append(table)
        self.supports_masking = True

    def build(self, input_shape):
        units, width = int(input_shape[-1]), sum(self.feature_dims)
        self.tables = []
        for number, dim in enumerate(self.feature_dims):
            values = None if self._initial_tables is None else self._initial_tables[number]
            initializer = "zeros" if values is None else (lambda shape, dtype=None, v=values: ops.convert_to_tensor(
                v, dtype=dtype))
            self.tables.append(self.add_weight(name=f"table_{number}", shape=(self.vocabulary_size, dim),
                                               initializer=initializer, trainable=False))
        self._initial_tables = None  # the weights hold them now
        self.hidden_kernel = self.add_weight(name="hidden_kernel", shape=(width, self.hidden_units),
                                             initializer="glorot_uniform")
        self.hidden_bias = self.add_weight(name="hidden_bias", shape=(self.hidden_units,), initializer="zeros")
        self.vector_kernel = self.add_weight(name="vector_kernel", shape=(self.hidden_units, units),
                                             initializer="glorot_uniform")
        self.vector_bias = self.add_weight(name="vector_bias", shape=(units,), initializer="zeros")
        self.score_kernel = self.add_weight(name="score_kernel", shape=(self.hidden_units,), initializer="zeros")
        if self.use_id:
            self.kernel = self.add_weight(name="kernel", shape=(units, self.vocabulary_size),
                                          initializer="glorot_uniform")
            self.bias = self.add_weight(name="bias", shape=(self.vocabulary_size,), initializer="zeros")
        self.known = self.add_weight(name="known", shape=(self.vocabulary_size,), initializer="ones", trainable=False)

    def item_weights(self, training=None):
        """`(kernel, bias)`: the `(units, vocabulary_size)` item vectors and `(vocabulary_size,)` biases
        of this call (the sampled loss scores its candidates with them)."""
        features = ops.concatenate([ops.convert_to_tensor(t) for t in self.tables], axis=-1)  # (V, width)
        hidden = ops.tanh(ops.matmul(features, self.hidden_kernel) + self.hidden_bias)  # (V, H)
        vectors = ops.matmul(hidden, self.vector_kernel) + self.vector_bias  # (V, units)
        bias = ops.matmul(hidden, self.score_kernel[:, None])[:, 0]  # (V,)
        kernel = ops.transpose(vectors)  # (units, V)
        if self.use_id:
            keep = _kept(self, training)
            if not training and self.id_inference_scale != 1.0:
                keep = keep * self.id_inference_scale
            kernel = kernel + self.kernel * keep[None, :]
            bias = bias + self.bias * keep
        if training and self.exclude_unknown:
            known = ops.convert_to_tensor(self.known)
            bias = ops.where(known > 0, bias, ops.cast(UNKNOWN_FLOOR, bias.dtype))
        return kernel, bias

    def call(self, inputs, training=None):
        dtype = keras.backend.standardize_dtype(self.compute_dtype)
        floor = -6e4 if dtype == "float16" else -1e9
        kernel, bias = self.item_weights(training)
        bias = ops.where(ops.equal(ops.arange(self.vocabulary_size), 0), ops.cast(floor, bias.dtype), bias)
        if dtype == "float16":  # the unknown items' float32 floor would overflow float16
            bias = ops.maximum(bias, ops.cast(floor, bias.dtype))
        return ops.matmul(inputs, ops.cast(kernel, dtype)) + ops.cast(bias, dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.vocabulary_size,)

    def grow_from(self, old):
        """Copies `old`'s trained weights (a layer of a smaller catalogue) into this one. The feature
        tables are this layer's own (built over the longer catalogue); the items past `old`'s are
        unknown (ID vector 0, bias 0, `known` 0), so they are scored from their features alone."""
        if old.feature_dims != self.feature_dims or old.use_id != self.use_id:
            raise ValueError(f"Cannot grow a layer with feature_dims={self.feature_dims}, use_id={self.use_id} from "
                             f"one with feature_dims={old.feature_dims}, use_id={old.use_id}.")
        for name in ("hidden_kernel", "hidden_bias", "vector_kernel", "vector_bias", "score_kernel"):
            getattr(self, name).assign(np.asarray(getattr(old, name)))
        if self.use_id:
            self.kernel.assign(_grow(np.asarray(old.kernel), np.zeros(tuple(self.kernel.shape), np.float32), 1))
            self.bias.assign(_grow(np.asarray(old.bias), np.zeros(self.vocabulary_size, np.float32), 0))
        self.known.assign(_grow(np.asarray(old.known), np.zeros(self.vocabulary_size, np.float32), 0))

    def get_config(self):
        config = super().get_config()
        config.update({"vocabulary_size": self.vocabulary_size, "feature_dims": list(self.feature_dims),
                       "hidden_units": self.hidden_units, "use_id": self.use_id, "id_dropout": self.id_dropout,
                       "seed": self.seed, "exclude_unknown": self.exclude_unknown,
                       "id_inference_scale": self.id_inference_scale})
        return config


def set_id_inference_scale(model, scale) -> None:
    """Sets the `id_inference_scale` of an `id+features` model's `FeatureItemLogits` (read when the model
    is next traced: set it before evaluating or exporting).

    Raises:
        ValueError: `scale` is not in [0, 1], or the model has no item layer with an ID part.
    """
    layers = [layer for layer in model.layers if isinstance(layer, FeatureItemLogits) and layer.use_id]
    if not layers:
        raise ValueError(f"Model {model.name!r} has no ID part to weigh: `id_inference_scale` applies to "
                         "`item_representation: id+features`.")
    scale = check_fraction("id_inference_scale", scale)
    for layer in layers:
        layer.id_inference_scale = scale


def set_known_items(model, known) -> None:
    """Sets the `known` flags of a model's item layers that have them (`tracks_known_items`: a features
    model's `ItemIdEmbedding` and `FeatureItemLogits`, an `id+knn` model's `KnnColdStart`).

    Args:
        model: a model of the package with `item_representation` `features`, `id+features` or `id+knn`.
        known: `(vocabulary_size,)` booleans (index 0, padding, is set known whatever it holds), or
            the item indices that are known.

    Raises:
        ValueError: the model has no such layer, or `known` does not fit its catalogue.
    """
    layers = [layer for layer in model.layers if getattr(layer, "tracks_known_items", False)]
    if not layers:
        raise ValueError(f"Model {model.name!r} has no item layer with `known` flags (its item_representation is id).")
    size = layers[0].vocabulary_size
    known = np.asarray(known)
    if known.dtype == bool:
        if known.shape != (size,):
            raise ValueError(f"`known` must have shape ({size},) as booleans. Received {known.shape}")
        flags = known.astype(np.float32)
    else:
        if known.size and (known.min() < 0 or known.max() >= size):
            raise ValueError(f"`known` item indices must be in [0, {size - 1}]. "
                             f"Received [{known.min()}, {known.max()}]")
        flags = np.zeros(size, np.float32)
        flags[known.astype(np.int64)] = 1.0
    flags[0] = 1.0
    for layer in layers:
        layer.known.assign(flags)
