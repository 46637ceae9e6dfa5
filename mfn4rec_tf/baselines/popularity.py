"""`pop`: every user gets the most frequent items of the training sequences.

The reference every recommender must beat, as a Keras model with the contract of every other model
(`mfn4rec_tf.heads`), so that training, selection, evaluation, checkpoints, export and serving treat
it like the rest:

- `fc_out` gives every user the same representation (a single 1.0 per step): popularity is not
  personal.
- `item_logits` (`ItemCounts`) scores item `i` by how often it occurred in the training data the
  model has seen (a non-trainable count per item; padding gets -1e9).
- Training (`PopularityModel.train_step`) counts instead of descending a gradient: for each training
  example it adds its input items and its last target, i.e. every item of the (at most
  `data.max_length` + 1 most recent) items of the sequence that every other model trains on. One
  epoch is its whole training (`max_epochs=1` in its registry entry): more epochs scale every
  count alike and change no ranking. Its `loss` is reported as 0.

Its registry preset retrains on train + validation before testing (`train.retrain: true`), so the
tested counts cover everything before the test targets, whatever the protocol.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from mfn4rec_tf._checks import check_positive_int
from mfn4rec_tf.baselines._common import require_modalities
from mfn4rec_tf.config import ID_INPUT, ModelConfig
from mfn4rec_tf.heads import check_output_mode, model_head, model_inputs
from mfn4rec_tf.layers import PaddingMask

PADDING_SCORE = -1e9


@keras.saving.register_keras_serializable(package="mfn4rec")
class SameUser(keras.layers.Layer):
    """The user representation of `pop`: `(batch, steps, 1)` ones, whatever the history (it reads the
    padding mask for its shape only, which keeps `padding_mask` in the graph for `with_output_mode`)."""

    def call(self, inputs):
        return ops.ones_like(ops.expand_dims(ops.cast(inputs, "float32"), -1))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (1,)


@keras.saving.register_keras_serializable(package="mfn4rec")
class ItemCounts(keras.layers.Layer):
    """Scores every item by its training count: `(..., 1)` -> `(..., vocabulary_size)`.

    Args:
        vocabulary_size: number of item indices including padding (`num_items + 1`).
    """

    def __init__(self, vocabulary_size, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size = check_positive_int("vocabulary_size", vocabulary_size)

    def build(self, input_shape):
        self.counts = self.add_weight(name="counts", shape=(self.vocabulary_size,), initializer="zeros",
                                      trainable=False)

    def call(self, inputs):
        is_padding = ops.equal(ops.arange(self.vocabulary_size), 0)
        scores = ops.where(is_padding, ops.cast(PADDING_SCORE, self.counts.dtype), self.counts)
        return ops.cast(inputs, scores.dtype) * scores  # inputs are ones: (..., 1) * (V,) -> (..., V)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.vocabulary_size,)

    def add_counts(self, item_ids):
        """Adds one to the count of every non-padding id in `item_ids` (any shape)."""
        ids = tf.reshape(tf.cast(item_ids, tf.int32), [-1])
        ids = tf.boolean_mask(ids, ids > 0)
        self.counts.assign_add(tf.math.bincount(ids, minlength=self.vocabulary_size,
                                                maxlength=self.vocabulary_size, dtype=self.counts.dtype))

    def get_config(self):
        return {**super().get_config(), "vocabulary_size": self.vocabulary_size}


@keras.saving.register_keras_serializable(package="mfn4rec")
class PopularityModel(keras.Model):
    """The functional `pop` model; `fit` counts items (see the module docstring). It keeps
    `keras.Model`'s constructor, so Keras saves and loads it as a functional model."""

    def train_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        ids = tf.convert_to_tensor(x[ID_INPUT])  # (B, T), right-padded
        targets = tf.convert_to_tensor(y["logits"] if isinstance(y, dict) else y)  # (B, T) or (B,)
        if targets.shape.rank == 2:  # next item at every step: the last one is the target of the last step
            last = tf.reduce_sum(tf.cast(targets > 0, tf.int32), axis=1) - 1
            targets = tf.gather(targets, tf.maximum(last, 0), batch_dims=1)
        counts = self.get_layer("item_logits")
        counts.add_counts(ids)
        counts.add_counts(targets)
        return {"loss": tf.constant(0.0)}


def build_pop(config: ModelConfig, output_mode: str = "sequence", item_features=None) -> keras.Model:
    """The `pop` model of `config` (its `num_items`; it reads no modality and no size setting)."""
    check_output_mode(output_mode)
    require_modalities(config)
    inputs = model_inputs(config)
    mask = PaddingMask(name="padding_mask")(inputs[ID_INPUT])
    h_out = SameUser(name="fc_out")(mask)  # (B, T, 1)
    outputs = model_head(h_out, mask, ItemCounts(config.vocabulary_size, name="item_logits"), output_mode)
    return PopularityModel(inputs, outputs, name="pop")
