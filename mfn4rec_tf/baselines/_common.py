"""Pieces every baseline builder shares: dropout seeds, the modality check, FC_out + the output head."""

from __future__ import annotations

import keras

from mfn4rec_tf import registry
from mfn4rec_tf.config import ModelConfig
from mfn4rec_tf.heads import model_head
from mfn4rec_tf.layers import FullyConnected, ItemLogits


def seed(config: ModelConfig, offset: int):
    """The seed of one dropout generator: `config.seed + offset`, or None when the config has none."""
    return None if config.seed is None else config.seed + offset


def require_modalities(config: ModelConfig):
    """Checks that `config.modalities` are exactly the ones baseline `config.variant` reads.

    Raises:
        ValueError: they are not (the message names what the model reads).
    """
    names = tuple(m.name for m in config.modalities)
    try:
        expected = registry.model_modalities(config.variant, names)
    except ValueError as error:
        raise ValueError(f"config.modalities: {error}") from None
    if expected != names:
        reads = "item IDs only" if not expected else f"the modalities {list(expected)}"
        raise ValueError(
            f"Baseline {config.variant!r} reads {reads}, so `config.modalities` must be exactly those. "
            f"Received: {list(names)}"
        )


def fc_out_model(config: ModelConfig, inputs, mask, states, output_mode, dropout=True) -> keras.Model:
    """`h_out = fc_out(states)` (MFN4Rec's FC_out block, Eq. 10: `output_units`, the config's
    activation, dropout on its input with seed `config.seed + 100` unless `dropout=False`), item
    logits, and the functional model named after the variant."""
    h_out = FullyConnected(
        config.output_units,
        activation=config.output_activation,
        dropout=config.dropout if dropout else 0.0,
        seed=seed(config, 100) if dropout else None,
        name="fc_out",
    )(states)  # (B, T, output_units)
    outputs = model_head(h_out, mask, ItemLogits(config.vocabulary_size, name="item_logits"), output_mode)
    return keras.Model(inputs, outputs, name=config.variant.replace("-", "_"))
