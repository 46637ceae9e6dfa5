"""The functional MFN4Rec model and its ablations, built from one `ModelConfig` (paper Sec. 3, 4.3).

Data flow of the full model (`variant="mfn4rec"`), shapes for the paper's defaults::

    item_ids (B, T) ──Embedding──> (B, T, 25) ─┐
    image    (B, T, 1000) ─────────────────────┼─ MultiGRU (Eq. 1-3) ─> h_t = [h_m, h_f, h_g] (B, T, 60)
    text     (B, T, 100)  ─────────────────────┘                             │
                            GatedMemory (Eq. 4-9, scan or cell) ──> u_t (B, T, 20) │
                            FC_out([h_t, u_t]) (Eq. 10) ──> h_out (B, T, 20)  <┘
                            ItemLogits (Eq. 11) ──> logits (B, T, N + 1)  or, at the last valid step, (B, N + 1)

Variants (Sec. 4.3, read as docs/model.md#ablation-variants explains):
    mfn4rec-g    h_out = FC_out(h_t): no memory network.
    mfn4rec-m    no GRUs: each modality is projected per step (Dense, tanh) to its hidden size, and
                 h_out = FC_out(u_t).
    mfn4rec-add  the memory is replaced by u_t = sum of the modalities' hidden states (equal sizes).

With `item_representation` `features` or `id+features` (docs/model.md#new-items) the item-ID
embedding is an `ItemIdEmbedding` (unknown items read a learned "unknown" vector) and the output
layer a `FeatureItemLogits` (item vectors from an encoder of the items' feature tables); with `id`
(the default) the model is exactly the paper's, and with `id+knn` it is the paper's model with a
cold-start head after Eq. 11 (`KnnColdStart`, named `cold_start`): the items without a trained ID
vector are scored by their features' similarity to the last history item, outside training only.
"""

from __future__ import annotations

import keras

from mfn4rec_tf import registry
from mfn4rec_tf.config import ID_INPUT, PRESENCE_SUFFIX, ModelConfig
from mfn4rec_tf.heads import (  # noqa: F401  (re-exported: the model API of the package)
    OUTPUT_MODES,
    check_output_mode,
    concatenate,
    load_model,
    model_head,
    model_inputs,
    with_output_mode,
)
from mfn4rec_tf.layers import (
    AppendPresence,
    FeatureItemLogits,
    FullyConnected,
    GatedMemory,
    ItemIdEmbedding,
    ItemLogits,
    MultiGRU,
    PaddingMask,
    TiedItemLogits,
)


def build_model(config: ModelConfig, output_mode: str = "sequence", item_features=None) -> keras.Model:
    """Builds the functional model of `config.variant`: any model of `mfn4rec_tf.registry`.

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
    check_output_mode(output_mode)
    return registry.get(config.variant).build(config, output_mode, item_features=item_features)


def build_mfn4rec(config: ModelConfig, output_mode: str = "sequence", item_features=None) -> keras.Model:
    """The builder of MFN4Rec and its ablations (`config.variant` of the `mfn4rec` family).

    `item_features` is read only with `item_representation` `features`, `id+features` or `id+knn`:
    the feature tables of `config.modalities` (and `<name>_present` flags where a modality has them),
    which the item encoder (or the cold-start head) reads; with `id` MFN4Rec scores items by their ID
    vectors (Eq. 11).
    """
    check_output_mode(output_mode)
    if registry.get(config.variant).family != "mfn4rec":
        raise ValueError(f"build_mfn4rec builds the MFN4Rec variants {registry.names('mfn4rec')}. "
                         f"Received: variant={config.variant!r}")
    inputs = model_inputs(config)
    mask = PaddingMask(name="padding_mask")(inputs[ID_INPUT])  # (B, T)

    from_features = config.item_representation in ("features", "id+features")
    if from_features:  # items from their features: unknown items read through a learned "unknown" ID vector
        logits_layer = None
        id_embedding = ItemIdEmbedding(config.vocabulary_size, config.id_embedding_dim, id_dropout=config.id_dropout,
                                       seed=None if config.seed is None else config.seed + 200,
                                       name="item_embedding")(inputs[ID_INPUT])
    elif config.tie_item_embeddings:  # one item table: the input embedding and Eq. 11's W (its transpose)
        logits_layer = TiedItemLogits(config.vocabulary_size, config.id_embedding_dim, use_bias=True,
                                      name="item_logits")
        id_embedding = logits_layer(inputs[ID_INPUT], lookup=True)
    else:
        logits_layer = ItemLogits(config.vocabulary_size, name="item_logits")
        id_embedding = keras.layers.Embedding(config.vocabulary_size, config.id_embedding_dim,
                                              name="item_embedding")(inputs[ID_INPUT])
    streams = [_input_dropout(config, ID_INPUT, 0, id_embedding)]  # one (B, T, width) sequence per modality
    for index, modality in enumerate(config.modalities, start=1):
        features = _input_dropout(config, modality.name, index, inputs[modality.name])
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
    states = concatenate(hidden, "hidden_states")  # h_t: (B, T, sum of hidden sizes)

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
        fused = concatenate([states, memory], "fused_states")  # Eq. 10 input: (B, T, sum + d_mem)
    h_out = FullyConnected(
        config.output_units,
        activation=config.output_activation,
        dropout=config.dropout,
        seed=None if config.seed is None else config.seed + 100,
        name="fc_out",
    )(fused)  # Eq. 10: (B, T, output_units)

    if from_features:
        logits_layer = FeatureItemLogits(
            config.vocabulary_size, _feature_dims(config), hidden_units=config.fc_hidden_units,
            use_id=config.item_representation == "id+features", id_dropout=config.id_dropout,
            exclude_unknown=config.exclude_unknown_items, id_inference_scale=config.id_inference_scale,
            seed=None if config.seed is None else config.seed + 300, tables=_feature_tables(config, item_features),
            name="item_logits",
        )
    cold_start = None
    if config.item_representation == "id+knn":  # unknown items scored by feature similarity (docs/model.md#new-items)
        from mfn4rec_tf.baselines.feature_knn import knn_cold_start

        cold_start = knn_cold_start(config, inputs, mask, item_features)
    outputs = model_head(h_out, mask, logits_layer, output_mode, cold_start)
    return keras.Model(inputs, outputs, name=config.variant.replace("-", "_"))


def _input_dropout(config: ModelConfig, name, index, stream):
    """`stream` (what a modality's GRU reads) through dropout at `config.embedding_dropout`, in
    training only; no layer at all at rate 0 (the paper's model, unchanged)."""
    if not config.embedding_dropout:
        return stream
    seed = None if config.seed is None else config.seed + 210 + index
    return keras.layers.Dropout(config.embedding_dropout, seed=seed, name=f"{name}_dropout")(stream)


def _feature_dims(config):
    """The widths of the item encoder's tables: each modality's, then one per presence flag."""
    return [m.dim for m in config.modalities] + [1 for m in config.modalities if m.presence]


def _feature_tables(config, item_features):
    """The item encoder's tables from `item_features`, in the order of `_feature_dims`."""
    if item_features is None:
        return None  # a model being loaded: its tables come from the saved weights
    tables, flags = [], []
    for modality in config.modalities:
        if modality.name not in item_features:
            raise ValueError(f"`item_features` has no table for the modality {modality.name!r}, which "
                             f"`item_representation: {config.item_representation}` encodes.")
        tables.append(item_features[modality.name])
        if modality.presence:
            name = modality.name + PRESENCE_SUFFIX
            if name not in item_features:
                raise ValueError(f"`item_features` has no {name!r} flags for the modality {modality.name!r}.")
            flags.append(item_features[name])
    return tables + flags
