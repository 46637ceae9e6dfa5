"""The contract every model of the package keeps: its inputs, its outputs and the layers they hang on.

Every builder (`mfn4rec_tf.model` and the baselines, see `mfn4rec_tf.registry`) makes a functional
`keras.Model` that takes the named inputs of `model_inputs` (for the modalities it reads) and returns
`model_head`'s outputs, with its layers named `padding_mask` (the mask of the item IDs), `fc_out` (the
user representation per step, `h_out`) and `item_logits` (the scores of every item). So `fit`,
`evaluate`, `tune`, `compare` and `export` treat every model alike, and `with_output_mode` rebuilds
any of them in the other output mode over the same layers.
"""

from __future__ import annotations

import keras

from mfn4rec_tf.config import ID_INPUT, PRESENCE_SUFFIX, ModelConfig
from mfn4rec_tf.layers import LastValidStep

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


def model_head(h_out, mask, logits_layer, output_mode, cold_start=None):
    """The outputs of every model of the package: `{"logits", "user_representation"}` at every step
    or at the last valid one.

    `h_out` is the user representation per step (the output of the layer named `fc_out`), `mask`
    the output of the layer named `padding_mask`, `logits_layer` the layer named `item_logits`.
    `cold_start` (`item_representation: id+knn`): the pair `(head, directions)`, the layer named
    `cold_start` and the per-step item vectors it reads (the output of the layer named
    `step_directions`); the logits are then `head([logits, directions])`.
    """
    check_output_mode(output_mode)
    directions = None if cold_start is None else cold_start[1]
    if output_mode == "last":
        h_out = LastValidStep(name="last_valid_step")(h_out, mask)  # (B, output_units)
        if directions is not None:
            directions = LastValidStep(name="last_valid_direction")(directions, mask)
    logits = logits_layer(h_out)
    if cold_start is not None:
        logits = cold_start[0]([logits, directions])
    return {"logits": logits, "user_representation": h_out}


def with_output_mode(model: keras.Model, output_mode: str) -> keras.Model:
    """A model over the same layers (hence the same weights) as `model`, in another output mode.

    Works on a model from any builder of the registry or one loaded from a `.keras` file. Training
    either model trains both.
    """
    check_output_mode(output_mode)
    try:
        h_out = model.get_layer("fc_out").output
        mask = model.get_layer("padding_mask").output
        logits_layer = model.get_layer("item_logits")
    except (ValueError, AttributeError) as error:
        raise ValueError(
            f"`model` ({model.name!r}) is not a functional model from `build_model`: {error}"
        ) from error
    cold_start = None
    if has_cold_start(model):
        cold_start = (model.get_layer("cold_start"), model.get_layer("step_directions").output)
    return keras.Model(model.input, model_head(h_out, mask, logits_layer, output_mode, cold_start), name=model.name)


def has_cold_start(model) -> bool:
    """Whether `model` has the cold-start head of `item_representation: id+knn` (a layer named `cold_start`)."""
    return any(layer.name == "cold_start" for layer in getattr(model, "layers", ()))


def concatenate(tensors, name):
    """`tensors` joined on the last axis by a layer named `name` (a single tensor is returned as is)."""
    if len(tensors) == 1:
        return tensors[0]
    return keras.layers.Concatenate(axis=-1, name=name)(tensors)


def check_output_mode(output_mode):
    """Raises ValueError unless `output_mode` is one of `OUTPUT_MODES`."""
    if output_mode not in OUTPUT_MODES:
        raise ValueError(f"`output_mode` must be one of {OUTPUT_MODES}. Received: output_mode={output_mode!r}")


def load_model(path, **kwargs) -> keras.Model:
    """`keras.saving.load_model(path)` with the Keras classes of every registered model registered
    first (`mfn4rec_tf.registry.import_keras_classes`): the one way the package loads a `.keras` file."""
    # sampled: registers SampledSoftmaxModel; softmax_loss: the loss a saved model was compiled with
    from mfn4rec_tf import registry, sampled, softmax_loss  # noqa: F401

    registry.import_keras_classes()
    return keras.saving.load_model(path, **kwargs)
