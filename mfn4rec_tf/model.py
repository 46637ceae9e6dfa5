"""The functional MFN4Rec model and its ablations, built from one `ModelConfig` (paper Sec. 3, 4.3).

Data flow of the full model (`variant="mfn4rec"`), shapes for the paper's defaults::

    item_ids (B, T) ──Embedding──> (B, T, 25) ─┐
    image    (B, T, 1000) ─────────────────────┼─ MultiGRU (Eq. 1-3) ─> h_t = [h_m, h_f, h_g] (B, T, 60)
    text     (B, T, 100)  ─────────────────────┘                             │
                            GatedMemory (Eq. 4-9, scan or cell) ──> u_t (B, T, 20) │
                            FC_out([h_t, u_t]) (Eq. 10) ──> h_out (B, T, 20)  <┘
                            ItemLogits (Eq. 11) ──> logits (B, T, N + 1)  or, at the last valid step, (B, N + 1)

Variants (Sec. 4.3, read as MODEL-NOTES.md):
    mfn4rec-g    h_out = FC_out(h_t): no memory network.
    mfn4rec-m    no GRUs: each modality is projected per step (Dense, tanh) to its hidden size, and
                 h_out = FC_out(u_t).
    mfn4rec-add  the memory is replaced by u_t = sum of the modalities' hidden states (equal sizes).
"""

from __future__ import annotations

import keras

from mfn4rec_tf.config import BASELINES, ID_INPUT, PRESENCE_SUFFIX, ModelConfig
from mfn4rec_tf.layers import (
    AppendPresence,
    FullyConnected,
    GatedMemory,
    ItemLogits,
    LastValidStep,
    MultiGRU,
    PaddingMask,
)

OUTPUT_MODES = ("sequence", "last")
"""`sequence`: logits at every position (training on every prefix); `last`: at the last valid step."""


def model_inputs(config: ModelConfig) -> dict:
    """The named `keras.Input`s of a model built from `config`.

    - `item_ids`: `(batch, steps)` int32 item indices, 0 = padding.
    - one `(batch, steps, dim)` float32 input per feature modality, named after it.
    - `<name>_present`: `(batch, steps)` float32, for each modality with `presence=True`.
    """
    inputs = {ID_INPUT: keras.Input(shape=(None,), dtype="int32", name=ID_INPUT)}
    for modality in config.modalities:
        inputs[modality.name] = keras.Input(shape=(None, modality.dim), dtype="float32", name=modality.name)
        if modality.presence:
            name = modality.name + PRESENCE_SUFFIX
            inputs[name] = keras.Input(shape=(None,), dtype="float32", name=name)
    return inputs


def build_model(config: ModelConfig, output_mode: str = "sequence", item_features=None) -> keras.Model:
    """Builds the functional model of `config.variant` (an MFN4Rec variant or a baseline).

    Args:
        config: the model configuration.
        output_mode: `"sequence"` (default) or `"last"`, see `OUTPUT_MODES`.
        item_features: `{modality: (N + 1, dim) array}`, the catalogue's feature tables, for the
            baselines that score candidate items by their features (VBPR); MFN4Rec ignores it.

    Returns:
        A `keras.Model` taking the dict of `model_inputs(config)` and returning a dict with
        `logits` (`(batch, steps, N + 1)` or `(batch, N + 1)`) and `user_representation`
        (`h_out`, `(batch, steps, output_units)` or `(batch, output_units)`). The padding index 0
        always has a logit of -1e9.

    Example:

    >>> import numpy as np
    >>> from mfn4rec_tf.config import ModelConfig, ModalityConfig
    >>> config = ModelConfig(num_items=50, modalities=(ModalityConfig("text", 8),))
    >>> model = build_model(config, output_mode="last")
    >>> out = model({"item_ids": np.array([[3, 7, 0]], "int32"), "text": np.zeros((1, 3, 8), "float32")})
    >>> tuple(out["logits"].shape), tuple(out["user_representation"].shape)
    ((1, 51), (1, 20))
    """
    _check_output_mode(output_mode)
    if config.variant in BASELINES:
        from mfn4rec_tf.baselines import build_baseline

        return build_baseline(config, output_mode, item_features=item_features)
    inputs = model_inputs(config)
    mask = PaddingMask(name="padding_mask")(inputs[ID_INPUT])  # (B, T)

    streams = [  # one (B, T, width) sequence per modality, item ID first
        keras.layers.Embedding(config.vocabulary_size, config.id_embedding_dim, name="item_embedding")(
            inputs[ID_INPUT]
        )
    ]
    for modality in config.modalities:
        features = inputs[modality.name]
        if modality.presence:
            features = AppendPresence(name=f"{modality.name}_with_presence")(
                features, inputs[modality.name + PRESENCE_SUFFIX]
            )
        streams.append(features)

    if config.variant == "mfn4rec-m":
        names = (ID_INPUT, *(m.name for m in config.modalities))
        hidden = [
            keras.layers.Dense(units, activation="tanh", name=f"project_{name}")(stream)
            for name, units, stream in zip(names, config.hidden_sizes, streams)
        ]
    else:
        hidden = MultiGRU(config.hidden_sizes, reset_after=config.gru_reset_after,
                          implementation=config.gru_implementation, name="multi_gru")(
            streams, mask=mask
        )
    states = _concatenate(hidden, "hidden_states")  # h_t: (B, T, sum of hidden sizes)

    if config.variant in ("mfn4rec", "mfn4rec-m"):
        memory = GatedMemory(
            input_dim=sum(config.hidden_sizes),
            memory_dim=config.memory_dim,
            hidden_units=config.fc_hidden_units,
            dropout=config.dropout,
            seed=config.seed,
            mode=config.memory_mode,
            name="gated_memory",
        )(states, mask=mask)  # (B, T, d_mem)
    elif config.variant == "mfn4rec-add":
        memory = hidden[0] if len(hidden) == 1 else keras.layers.Add(name="memory_sum")(hidden)
    else:
        memory = None

    if config.variant == "mfn4rec-m":
        fused = memory
    elif memory is None:
        fused = states
    else:
        fused = _concatenate([states, memory], "fused_states")  # Eq. 10 input: (B, T, sum + d_mem)
    h_out = FullyConnected(
        config.output_units,
        activation=config.output_activation,
        dropout=config.dropout,
        seed=None if config.seed is None else config.seed + 100,
        name="fc_out",
    )(fused)  # Eq. 10: (B, T, output_units)

    logits_layer = ItemLogits(config.vocabulary_size, name="item_logits")
    outputs = model_head(h_out, mask, logits_layer, output_mode)
    return keras.Model(inputs, outputs, name=config.variant.replace("-", "_"))


def with_output_mode(model: keras.Model, output_mode: str) -> keras.Model:
    """A model over the same layers (hence the same weights) as `model`, in another output mode.

    Works on a model from `build_model` or one loaded from a `.keras` file. Training either model
    trains both.
    """
    _check_output_mode(output_mode)
    try:
        h_out = model.get_layer("fc_out").output
        mask = model.get_layer("padding_mask").output
        logits_layer = model.get_layer("item_logits")
    except (ValueError, AttributeError) as error:
        raise ValueError(
            f"`model` ({model.name!r}) is not a functional model from `build_model`: {error}"
        ) from error
    return keras.Model(model.input, model_head(h_out, mask, logits_layer, output_mode), name=model.name)


def model_head(h_out, mask, logits_layer, output_mode):
    """The outputs of every model of the package: `{"logits", "user_representation"}` at every step
    or at the last valid one.

    `h_out` is the user representation per step (the output of the layer named `fc_out`), `mask`
    the output of the layer named `padding_mask`, `logits_layer` the layer named `item_logits`.
    Every builder (MFN4Rec and the baselines) names its layers so, which lets `with_output_mode`
    rebuild the other output mode over the same layers.
    """
    if output_mode == "last":
        h_out = LastValidStep(name="last_valid_step")(h_out, mask)  # (B, output_units)
    return {"logits": logits_layer(h_out), "user_representation": h_out}


def _concatenate(tensors, name):
    if len(tensors) == 1:
        return tensors[0]
    return keras.layers.Concatenate(axis=-1, name=name)(tensors)


def _check_output_mode(output_mode):
    if output_mode not in OUTPUT_MODES:
        raise ValueError(f"`output_mode` must be one of {OUTPUT_MODES}. Received: output_mode={output_mode!r}")


# Saved baselines hold Keras classes defined in `mfn4rec_tf.baselines`; importing them here registers
# those classes for every loader of saved models (evaluate, export, fit --resume), which all import
# this module. (The baseline modules import this one lazily or at its end, so there is no cycle.)
import mfn4rec_tf.baselines.bpr  # noqa: E402,F401
import mfn4rec_tf.baselines.multimodal  # noqa: E402,F401
import mfn4rec_tf.baselines.sequential  # noqa: E402,F401
