"""One item table for both ends of the model: the item-ID embedding and the output item vectors."""

from __future__ import annotations

import keras
from keras import ops

from mfn4rec_tf._checks import check_positive_int
from mfn4rec_tf.layers.item_logits import ItemLogits


@keras.saving.register_keras_serializable(package="mfn4rec")
class TiedItemLogits(ItemLogits):
    """`ItemLogits` whose kernel is the item-ID embedding table (weight tying, Press & Wolf 2017).

    The layer owns one `(vocabulary_size, dim)` variable, `embeddings`, and is called twice in a
    model: on the integer item IDs it looks them up (the input embedding, like
    `keras.layers.Embedding`), on float user representations `(..., dim)` it scores every item with
    `h · embeddings^T + b` (Eq. 11, with `kernel = embeddings^T`), its own bias, and the padding
    index 0 at a large negative constant as in `ItemLogits`.

    Args:
        vocabulary_size: number of item indices including padding (`num_items + 1`).
        dim: the embedding width, which is also the width of the user representation it scores.

    Example:

    >>> import numpy as np
    >>> layer = TiedItemLogits(5, 3)
    >>> vectors = layer(np.array([[1, 2]], "int32"))  # (1, 2, 3): rows 1 and 2 of the table
    >>> logits = layer(np.ones((1, 3), "float32"))    # (1, 5): scores with the same table
    >>> tuple(vectors.shape), tuple(logits.shape), len(layer.weights)
    ((1, 2, 3), (1, 5), 2)
    """

    def __init__(self, vocabulary_size, dim, embeddings_initializer="uniform", **kwargs):
        super().__init__(vocabulary_size, **kwargs)
        self.dim = check_positive_int("dim", dim)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(name="embeddings", shape=(self.vocabulary_size, self.dim),
                                          initializer=self.embeddings_initializer)
        self.bias = self.add_weight(name="bias", shape=(self.vocabulary_size,), initializer="zeros")

    @property
    def kernel(self):
        """`(dim, vocabulary_size)`: the transposed embedding table (what `ItemLogits` calls its kernel)."""
        return ops.transpose(self.embeddings)

    @staticmethod
    def _is_ids(inputs):
        return "int" in keras.backend.standardize_dtype(inputs.dtype)

    def call(self, inputs):
        if self._is_ids(inputs):
            return ops.cast(ops.take(self.embeddings, inputs, axis=0), self.compute_dtype)
        if inputs.shape[-1] is not None and inputs.shape[-1] != self.dim:
            raise ValueError(f"TiedItemLogits scores {self.dim}-d vectors. Received: shape {tuple(inputs.shape)}")
        return super().call(inputs)

    def compute_output_spec(self, inputs):
        if self._is_ids(inputs):
            return keras.KerasTensor(tuple(inputs.shape) + (self.dim,), dtype=self.compute_dtype)
        return keras.KerasTensor(tuple(inputs.shape[:-1]) + (self.vocabulary_size,), dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"dim": self.dim,
                       "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer)})
        return config
