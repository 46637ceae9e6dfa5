"""The multi-GRU layer: one GRU per modality (paper Sec. 3.1, Eq. 1-3)."""

from __future__ import annotations

import keras

from mfn4rec_tf._checks import check_positive_int


@keras.saving.register_keras_serializable(package="mfn4rec")
class MultiGRU(keras.layers.Layer):
    """Runs one GRU over each modality's sequence, each with its own hidden size::

        h_m^t = GRU_m(m_t, h_m^{t-1})   # Eq. 1, item-ID embeddings
        h_f^t = GRU_f(f_t, h_f^{t-1})   # Eq. 2, image features
        h_g^t = GRU_g(g_t, h_g^{t-1})   # Eq. 3, text features

    generalised to any number of modalities. The GRUs are Keras' own (`keras.layers.GRU`);
    `reset_after=True` is the cuDNN-compatible form Keras uses by default, `False` the form of
    Cho et al. (2014).

    Args:
        units: one hidden size per modality, e.g. `[20, 20, 20]` (Table 1).
        reset_after: GRU convention, see above. Default `True`.

    Call arguments:
        inputs: list of `(batch, steps, dim_i)` tensors, one per modality, in the order of `units`.
        mask: optional `(batch, steps)` boolean tensor; a masked step carries every GRU's state
            (and output) unchanged.

    Returns:
        list of `(batch, steps, units[i])` hidden-state sequences.

    Example:

    >>> import numpy as np
    >>> layer = MultiGRU([4, 3])
    >>> [tuple(h.shape) for h in layer([np.zeros((2, 5, 6), "float32"), np.zeros((2, 5, 8), "float32")])]
    [(2, 5, 4), (2, 5, 3)]
    """

    def __init__(self, units, reset_after=True, **kwargs):
        super().__init__(**kwargs)
        if isinstance(units, int) or not units:
            raise ValueError(f"`units` must be a non-empty list of hidden sizes. Received: units={units!r}")
        self.units = [check_positive_int("units", u) for u in units]
        self.reset_after = bool(reset_after)
        self.supports_masking = True

    def build(self, input_shape):
        if len(input_shape) != len(self.units):
            raise ValueError(
                f"{self.__class__.__name__} has {len(self.units)} GRUs (units={self.units}) but received "
                f"{len(input_shape)} input sequences."
            )
        self.grus = []
        for index, (units, shape) in enumerate(zip(self.units, input_shape)):
            gru = keras.layers.GRU(
                units,
                return_sequences=True,
                reset_after=self.reset_after,
                dtype=self.dtype_policy,
                name=f"gru_{index}",
            )
            gru.build(shape)
            self.grus.append(gru)

    def call(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        return [gru(x, mask=mask) for gru, x in zip(self.grus, inputs)]

    def compute_output_shape(self, input_shape):
        return [tuple(shape[:2]) + (units,) for shape, units in zip(input_shape, self.units)]

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        return [mask for _ in self.units]

    def get_config(self):
        config = super().get_config()
        config.update({"units": list(self.units), "reset_after": self.reset_after})
        return config
