"""The paper's multimodal sequential baselines (Sec. 4.2): p-RNN, MV-RNN (-Con, -Fus, -3mDAE), VCSRS.

Each reads the item ID and every chosen feature modality (its registry entry's `modalities`: `"some"`, at
least one), with presence inputs handled as in MFN4Rec (`AppendPresence`: `[present · f, present]`
is the modality's view). The paper's image ⊕ text becomes "every modality of the config", in its
order. All five train with softmax cross-entropy over every item (the package default, no `loss`
entry), score items with `ItemLogits` on `h_out = fc_out(...)`, and share MFN4Rec's contract
(`mfn4rec_tf.baselines`). Shapes below are for the paper's sizes (image 1000, text 100, Table 1).

Sizes read from `ModelConfig` (common to all five):
    item embedding `id_embedding_dim` (d_m = 25); user representation `h_out`: `fc_out`, a
    `FullyConnected(output_units, activation=output_activation, dropout=dropout)` on the recurrent
    state, exactly MFN4Rec's FC_out (Eq. 10), seed `config.seed + 100`; logits `ItemLogits`.

p-RNN — Hidasi, Quadrana, Karatzoglou, Tikk, "Parallel recurrent neural network architectures for
feature-rich session-based recommendations", RecSys 2016.
    One GRU per stream (item-ID embedding, each modality's features) with its own hidden size
    (`config.hidden_sizes`: `id_hidden_units`, each `modality.hidden_units`), states concatenated
    per step, `fc_out` on the concatenation (Hidasi's "concatenated output" p-RNN)::

        [h_m, h_1, ..., h_K] = MultiGRU([m_t, x_1t, ..., x_Kt])   (B, T, 60)
        h_out = fc_out([h_m, h_1, ..., h_K])                          (B, T, 20)

    Honest note: at equal config this is layer for layer MFN4Rec-g (MFN4Rec without the memory
    network, Sec. 4.3), and the two compute the same function (the tests check p-RNN against the
    NumPy reference of MFN4Rec-g). What the paper says p-RNN lacks — the gated multi-view memory
    modelling the interactions across modalities — is exactly what MFN4Rec-g drops too, so in this
    package `p-rnn` and `mfn4rec-g` runs differ only by name. The paper's own p-RNN numbers came
    from other code (its baseline rows equal MV-RNN's public results, docs/model.md#protocols), whose p-RNN
    scores an item by the sum of one dot product per stream — the concatenated-output form read
    here. Not reproduced from Hidasi et al. or that code: alternating/residual training of the
    subnets, session-parallel mini-batches and TOP1/BPR ranking losses (every subnet here trains
    jointly, with softmax cross-entropy), and the direct scoring `W [h_m, h_1, ...]` (our `fc_out`
    puts a linear `output_units` bottleneck before `ItemLogits`, as in every model of the package).

MV-RNN — Cui, Wu, Liu, Zhong, Wang, "MV-RNN: A multi-view recurrent neural network for sequential
recommendation", IEEE TKDE 2018 (arXiv:1611.06668, 2016). Read with the authors' public code
(github.com/cuiqiang1990/MV-RNN), which the paper's baseline numbers come from (docs/model.md#protocols):
each view is reduced by a bias-free linear map to the embedding width `id_embedding_dim`, the views
are combined (`MultiViewFusion`), joined to the ID embedding, and fed to one GRU of
`id_hidden_units` (Keras' GRU, `gru_reset_after`)::

    mv-rnn-con    x_t = [m_t, x_1t W_1, ..., x_Kt W_K]         (B, T, 25 + K·25)  concatenation
    mv-rnn-fus    x_t = [m_t, x_1t W_1 + ... + x_Kt W_K]       (B, T, 50)         fusion by addition,
                  i.e. a learned bias-free dense fusion layer on the concatenated views
    mv-rnn-3mdae  as -fus, plus MV-RNN's multi-modal denoising auto-encoder: during training each
                  view of each step is zeroed whole with probability `dropout` (0.3; seeded by
                  `config.seed + 1`), tied decoders `W_vᵀ` reconstruct every clean view from the
                  fused code, and `RECONSTRUCTION_WEIGHT` (1.0) · mean_steps Σ_v ½‖x_v − x̂_v‖²/d_v
                  is added with `add_loss` (training only; see `MultiViewFusion`)
    h_t = GRU(x_t);  h_out = fc_out(h_t)

    Readings: the projection widths are `id_embedding_dim` (MV-RNN uses one width, its `n_in`, for
    the embedding and the projections), not `fc_hidden_units`. -Con projects each view before
    concatenating, as MV-RNN's code does; it does not feed the raw features to the GRU. The
    corruption rate reuses `dropout` (MV-RNN tunes its own rate; the config has no separate
    field). The 3mDAE reconstructs the views as the model reads them, presence channel included;
    a dropped view is all zeros, its presence flag too, so it reads as an item lacking that
    modality. Not reproduced: MV-RNN scores item j by `h · [m_j, fused code_j]` with a BPR loss, so
    its item side also sees the features; here items are scored by `ItemLogits` (a free output
    vector per item) with softmax cross-entropy, as for every model of the package. MV-RNN's
    "separate" hidden structure (two GRUs, `MvGru2Units`) is not built; -Con/-Fus/-3mDAE are its
    "united" single-GRU form, which we take the paper's MV-RNN(Con/Fus/3mDAE) rows to be.

VCSRS — Qu et al., "Visual content-enhanced sequential recommendation with feature-level attention",
Neurocomputing 2021 (doi:10.1016/j.neucom.2021.02.037), the paper's reference [1]. As the MFN4Rec
paper adapts it (Sec. 4.2: image and text vectors concatenated into the input of the feature-level
attention module, FAM) and docs/model.md#baselines sums it up: feature-level attention over the
concatenated features, feeding an LSTM over the item IDs::

    f_t = [x_1t, ..., x_Kt]                                  (B, T, D = 1100)
    a_t = sigmoid(FC_a(f_t)),  f̃_t = a_t ⊙ f_t                FAM: a weight per feature dimension
    h_t = LSTM([m_t, f̃_t])   (id_hidden_units);  h_out = fc_out(h_t)

    Readings: FC_a is one dense layer D → D with dropout `dropout` on its input (seed
    `config.seed`), a `FullyConnected` block. The weights are element-wise sigmoids, not a softmax
    over the D dimensions (MFN4Rec's Eq. 4 form, `DifferentiatedAttention`): a softmax makes the
    weights average 1/D, which shrinks the features about a thousandfold at the paper's D = 1100
    beside an O(1) ID embedding, so the LSTM starts out nearly ID-only. Measured on the small demo
    of the tests (300 users, 3 epochs, leave-one-out validation Recall@20, `pop` 0.263): softmax
    0.270, sigmoid 0.513. The attended features enter the LSTM directly beside the ID embedding
    (no further projection). VCSRS's own equations (its "vision-concentrated" recurrent network)
    were not available to us; this is a reading of the MFN4Rec paper's description, not a
    reproduction.
"""

from __future__ import annotations

import keras

from mfn4rec_tf.baselines._common import fc_out_model, seed
from mfn4rec_tf.config import ID_INPUT, PRESENCE_SUFFIX, ModelConfig, NotApplicable
from mfn4rec_tf.heads import check_output_mode, concatenate, model_inputs
from mfn4rec_tf.layers import AppendPresence, FullyConnected, MultiGRU, PaddingMask
from mfn4rec_tf.layers.multi_view_fusion import MultiViewFusion

RECONSTRUCTION_WEIGHT = 1.0
"""Weight of MV-RNN-3mDAE's reconstruction loss beside the (per-step mean) cross-entropy."""


def build_p_rnn(config: ModelConfig, output_mode: str = "sequence", item_features=None) -> keras.Model:
    """p-RNN: parallel GRUs over the ID embedding and each modality, states concatenated (module doc).

    Args:
        config: the model configuration (at least one modality).
        output_mode: `"sequence"` or `"last"`.
        item_features: unused (p-RNN reads features from the inputs only).

    Returns:
        A functional `keras.Model` with MFN4Rec's inputs and outputs.

    Example:

    >>> import numpy as np
    >>> from mfn4rec_tf.config import ModalityConfig, ModelConfig
    >>> config = ModelConfig(num_items=30, variant="p-rnn", modalities=(ModalityConfig("image", 8),))
    >>> model = build_p_rnn(config, output_mode="last")
    >>> out = model({"item_ids": np.array([[3, 7, 0]], "int32"), "image": np.zeros((1, 3, 8), "float32")})
    >>> tuple(out["logits"].shape), tuple(out["user_representation"].shape)
    ((1, 31), (1, 20))
    """
    inputs, mask, embedded, views = _inputs(config, output_mode)
    hidden = MultiGRU(config.hidden_sizes, reset_after=config.gru_reset_after,
                      implementation=config.gru_implementation, name="multi_gru")(
        [embedded, *views], mask=mask
    )  # one (B, T, h_i) per stream
    states = keras.layers.Concatenate(axis=-1, name="hidden_states")(hidden)  # (B, T, sum of hidden sizes)
    return fc_out_model(config, inputs, mask, states, output_mode)


def build_mv_rnn_con(config: ModelConfig, output_mode: str = "sequence", item_features=None) -> keras.Model:
    """MV-RNN-Con: ID embedding ⊕ every view's projection, into one GRU (module doc). Args as `build_p_rnn`."""
    return _mv_rnn(config, output_mode, MultiViewFusion(config.id_embedding_dim, combine="concat", name="view_fusion"))


def build_mv_rnn_fus(config: ModelConfig, output_mode: str = "sequence", item_features=None) -> keras.Model:
    """MV-RNN-Fus: ID embedding ⊕ the sum of the views' projections, into one GRU (module doc).
    Args as `build_p_rnn`."""
    return _mv_rnn(config, output_mode, MultiViewFusion(config.id_embedding_dim, combine="add", name="view_fusion"))


def build_mv_rnn_3mdae(config: ModelConfig, output_mode: str = "sequence", item_features=None) -> keras.Model:
    """MV-RNN-3mDAE: -Fus with a denoising auto-encoder over the views (module doc). Its
    reconstruction loss is in `model.losses` after a training call, and `fit` adds it.
    Args as `build_p_rnn`."""
    fusion = MultiViewFusion(
        config.id_embedding_dim,
        combine="add",
        corruption_rate=config.dropout,
        reconstruction_weight=RECONSTRUCTION_WEIGHT,
        seed=seed(config, 1),
        name="view_fusion",
    )
    return _mv_rnn(config, output_mode, fusion)


def build_vcsrs(config: ModelConfig, output_mode: str = "sequence", item_features=None) -> keras.Model:
    """VCSRS: feature-level attention over the concatenated features, beside the ID embedding in an
    LSTM (module doc). Args as `build_p_rnn`."""
    inputs, mask, embedded, views = _inputs(config, output_mode)
    features = concatenate(views, "features")  # f_t: (B, T, D)
    weights = FullyConnected(
        features.shape[-1], activation="sigmoid", dropout=config.dropout, seed=config.seed, name="feature_attention"
    )(features)  # a_t: (B, T, D)
    attended = keras.layers.Multiply(name="attended_features")([weights, features])  # f̃_t = a_t ⊙ f_t
    steps = keras.layers.Concatenate(axis=-1, name="lstm_input")([embedded, attended])  # (B, T, d_m + D)
    states = keras.layers.LSTM(config.id_hidden_units, return_sequences=True, name="lstm")(steps, mask=mask)
    return fc_out_model(config, inputs, mask, states, output_mode)




def _mv_rnn(config, output_mode, fusion):
    inputs, mask, embedded, views = _inputs(config, output_mode)
    fused = fusion(views, mask=mask)  # (B, T, K·d_m) or (B, T, d_m)
    steps = keras.layers.Concatenate(axis=-1, name="gru_input")([embedded, fused])
    states = keras.layers.GRU(
        config.id_hidden_units, return_sequences=True, reset_after=config.gru_reset_after, name="gru"
    )(steps, mask=mask)  # (B, T, id_hidden_units)
    return fc_out_model(config, inputs, mask, states, output_mode)


def _inputs(config, output_mode):
    """The named inputs, the padding mask, the ID embedding and one view per modality."""
    check_output_mode(output_mode)
    if not config.modalities:
        raise NotApplicable(
            f"Model {config.variant!r} reads item IDs and at least one feature modality; the config has none."
        )
    inputs = model_inputs(config)
    mask = PaddingMask(name="padding_mask")(inputs[ID_INPUT])  # (B, T)
    embedded = keras.layers.Embedding(config.vocabulary_size, config.id_embedding_dim, name="item_embedding")(
        inputs[ID_INPUT]
    )  # (B, T, d_m)
    views = []
    for modality in config.modalities:
        view = inputs[modality.name]  # (B, T, dim)
        if modality.presence:
            view = AppendPresence(name=f"{modality.name}_with_presence")(
                view, inputs[modality.name + PRESENCE_SUFFIX]
            )  # (B, T, dim + 1)
        views.append(view)
    return inputs, mask, embedded, views
