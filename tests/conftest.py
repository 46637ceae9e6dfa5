"""Shared fixtures: small asymmetric configs and inputs, so a swapped modality or state shows up."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from mfn4rec_tf.config import ModalityConfig, ModelConfig


def make_config(variant="mfn4rec", **overrides):
    """A tiny config with modalities of different widths and (except for -add) different hidden sizes.

    The image modality has a presence input, so that path is always exercised.
    """
    equal = variant == "mfn4rec-add"
    fields = dict(
        num_items=13,
        variant=variant,
        modalities=(
            ModalityConfig("image", 7, 4 if equal else 5, presence=True),
            ModalityConfig("text", 3, 4),
        ),
        id_embedding_dim=6,
        id_hidden_units=4 if equal else 3,
        memory_dim=4,
        fc_hidden_units=9,
        output_units=5,
        dropout=0.3,
        seed=7,
    )
    fields.update(overrides)
    return ModelConfig(**fields)


def make_inputs(config, lengths, steps=None, seed=0):
    """Right-padded random inputs; `lengths[i]` real steps in row i. Presence flags are random."""
    rng = np.random.default_rng(seed)
    steps = steps or max(lengths)
    batch = len(lengths)
    ids = np.zeros((batch, steps), "int32")
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(1, config.num_items + 1, size=length)
    inputs = {"item_ids": ids}
    for modality in config.modalities:
        inputs[modality.name] = rng.normal(size=(batch, steps, modality.dim)).astype("float32")
        if modality.presence:
            inputs[modality.name + "_present"] = (rng.random((batch, steps)) < 0.7).astype("float32")
    return inputs


def randomize_weights(model, seed=0, scale=0.5):
    """Replaces every weight (biases included) by N(0, scale^2) draws, so no term hides behind a zero."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0.0, scale, w.shape).astype(w.dtype) for w in model.get_weights()])


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    keras.backend.clear_session()
    keras.utils.set_random_seed(1234)
    yield
