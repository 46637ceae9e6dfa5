"""Per-item presence of a feature modality (an item with no image, a product with no text)."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="mfn4rec")
class AppendPresence(keras.layers.Layer):
    """Zeroes the features of absent items and appends the presence flag as one more channel::

        x_t = [present_t · f_t, present_t]

    so a modality's GRU can tell "no image" from "an image whose features are near zero".

    Call arguments:
        features: `(batch, steps, dim)` float tensor.
        present: `(batch, steps)` tensor, 1 where the item has this modality, 0 where not.

    Returns:
        `(batch, steps, dim + 1)` tensor.

    Example:

    >>> import numpy as np
    >>> AppendPresence()(np.ones((1, 2, 2), "float32"), np.array([[1.0, 0.0]], "float32")).numpy().tolist()
    [[[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]]
    """

    def call(self, features, present):
        present = ops.expand_dims(ops.cast(present, self.compute_dtype), -1)  # (batch, steps, 1)
        return ops.concatenate([features * present, present], axis=-1)

    def compute_output_shape(self, features_shape, present_shape=None):
        width = None if features_shape[-1] is None else features_shape[-1] + 1
        return tuple(features_shape[:-1]) + (width,)
