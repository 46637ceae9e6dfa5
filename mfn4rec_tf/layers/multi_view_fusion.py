"""MV-RNN's multi-view input layer: project every feature view, then concatenate, add, or add with a
denoising auto-encoder (Cui et al., "MV-RNN: A multi-view recurrent neural network for sequential
recommendation", IEEE TKDE 2018 / arXiv:1611.06668)."""

from __future__ import annotations

import numbers

import keras
from keras import ops

from mfn4rec_tf._checks import check_positive_int, check_rate

COMBINE_MODES = ("concat", "add")


@keras.saving.register_keras_serializable(package="mfn4rec")
class MultiViewFusion(keras.layers.Layer):
    """Turns the feature views of one step into one vector, the three ways MV-RNN studies.

    Every view `x_v` (`(batch, steps, d_v)`) is projected by a bias-free linear map, as in MV-RNN's
    public code::

        e_v = x̃_v · W_v                               # (batch, steps, units)
        "concat" (MV-RNN-Con):  z = [e_1, ..., e_K]    # (batch, steps, K * units)
        "add"    (MV-RNN-Fus):  z = e_1 + ... + e_K    # (batch, steps, units), = [x̃_1, ..., x̃_K] · [W_1; ...; W_K]

    With `reconstruction_weight > 0` the layer is also MV-RNN's multi-modal denoising auto-encoder
    (3mDAE): the decoders are the encoders' transposes (tied weights, as in MV-RNN's code) and
    reconstruct every clean view from the code, `x̂_v = c · W_vᵀ` with `c = z` ("add") or `c = e_v`
    ("concat"). During training the layer adds (`add_loss`)::

        L_rec = reconstruction_weight · mean over unmasked steps of  Σ_v ½ ‖x_v − x̂_v‖² / d_v

    (MV-RNN's own term is ½ λ_ae Σ ‖x_v − x̂_v‖² / d_v summed over a sequence's steps; we average over
    steps, like the package's cross-entropy.)

    Corruption (`corruption_rate > 0`, training only): each view of each step is dropped whole,
    `x̃_v = 0`, with probability `corruption_rate`, independently per (sequence, step, view), from a
    seeded generator and without rescaling — MV-RNN's "whole feature corrupted" masking noise. The
    reconstruction target stays the clean `x_v`. At inference `x̃_v = x_v`.

    Args:
        units: width of each view's projection.
        combine: `"concat"` or `"add"`. Default `"add"`.
        corruption_rate: probability of dropping a whole view at a training step, in `[0, 1)`.
            Default `0.0`.
        reconstruction_weight: weight of the reconstruction loss (`0` = no auto-encoder). Default `0.0`.
        seed: seed of the corruption generator. Default `None`.

    Call arguments:
        inputs: list of `(batch, steps, d_v)` float tensors, one per view.
        mask: optional `(batch, steps)` boolean tensor; masked steps add nothing to `L_rec`. The
            output at a masked step is computed like any other (the recurrent layer after it skips it).
        training: whether corruption and the reconstruction loss are active. Default `False`.

    Returns:
        `(batch, steps, K * units)` ("concat") or `(batch, steps, units)` ("add").

    Example:

    >>> import numpy as np
    >>> layer = MultiViewFusion(4, combine="add", corruption_rate=0.3, reconstruction_weight=1.0, seed=1)
    >>> views = [np.ones((2, 3, 6), "float32"), np.ones((2, 3, 2), "float32")]
    >>> tuple(layer(views).shape), len(layer.losses)
    ((2, 3, 4), 0)
    >>> _ = layer(views, training=True); len(layer.losses)
    1
    """

    def __init__(self, units, combine="add", corruption_rate=0.0, reconstruction_weight=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.units = check_positive_int("units", units)
        if combine not in COMBINE_MODES:
            raise ValueError(f"`combine` must be one of {COMBINE_MODES}. Received: combine={combine!r}")
        self.combine = combine
        self.corruption_rate = check_rate("corruption_rate", corruption_rate)
        if isinstance(reconstruction_weight, bool) or not isinstance(reconstruction_weight, numbers.Real) or not (
            reconstruction_weight >= 0
        ):
            raise ValueError(
                "`reconstruction_weight` must be a number >= 0. "
                f"Received: reconstruction_weight={reconstruction_weight!r}"
            )
        self.reconstruction_weight = float(reconstruction_weight)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if self.corruption_rate > 0 else None

    def build(self, input_shape):
        is_list = isinstance(input_shape, (list, tuple)) and input_shape and isinstance(input_shape[0], (list, tuple))
        if not is_list:
            raise ValueError(
                f"{self.__class__.__name__} takes a non-empty list of view tensors. Received: input_shape={input_shape}"
            )
        self.kernels = []
        for index, shape in enumerate(input_shape):
            if shape[-1] is None:
                raise ValueError(
                    f"{self.__class__.__name__} needs a known last dimension for view {index}. "
                    f"Received: input_shape={input_shape}"
                )
            self.kernels.append(
                self.add_weight(name=f"kernel_{index}", shape=(shape[-1], self.units), initializer="glorot_uniform")
            )

    def call(self, inputs, mask=None, training=False):
        mask = _single(mask)
        views = list(inputs)
        corrupted = views
        if training and self.corruption_rate > 0:
            corrupted = [self._drop_whole(view) for view in views]
        codes = [ops.matmul(view, kernel) for view, kernel in zip(corrupted, self.kernels)]  # each (B, T, units)
        fused = ops.concatenate(codes, axis=-1) if self.combine == "concat" else _sum(codes)
        if training and self.reconstruction_weight > 0:
            self.add_loss(self._reconstruction_loss(views, codes, fused, mask))
        return fused

    def _drop_whole(self, view):
        draw = keras.random.uniform(ops.shape(view[..., :1]), seed=self.seed_generator, dtype=view.dtype)  # (B, T, 1)
        return view * ops.cast(draw >= self.corruption_rate, view.dtype)

    def _reconstruction_loss(self, views, codes, fused, mask):
        per_step = 0.0
        for view, code, kernel in zip(views, codes, self.kernels):
            source = fused if self.combine == "add" else code
            decoded = ops.matmul(source, ops.transpose(kernel))  # tied decoder: (B, T, d_v)
            per_step = per_step + 0.5 * ops.mean(ops.square(view - decoded), axis=-1)  # (B, T)
        if mask is None:
            return self.reconstruction_weight * ops.mean(per_step)
        weights = ops.cast(mask, per_step.dtype)
        return self.reconstruction_weight * ops.sum(per_step * weights) / ops.maximum(ops.sum(weights), 1.0)

    def compute_output_shape(self, input_shape):
        width = self.units * len(input_shape) if self.combine == "concat" else self.units
        return tuple(input_shape[0][:-1]) + (width,)

    def compute_mask(self, inputs, mask=None):
        return _single(mask)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "combine": self.combine,
                "corruption_rate": self.corruption_rate,
                "reconstruction_weight": self.reconstruction_weight,
                "seed": self.seed,
            }
        )
        return config


def _single(mask):
    """The step mask: Keras hands a list input's masks over as a list (one per view, all the same here)."""
    if isinstance(mask, (list, tuple)):
        mask = next((m for m in mask if m is not None), None)
    return mask


def _sum(tensors):
    total = tensors[0]
    for tensor in tensors[1:]:
        total = total + tensor
    return total
