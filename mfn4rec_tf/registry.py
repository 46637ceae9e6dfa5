"""The model registry: one entry per model name, the only place that knows what a model is.

Each `ModelSpec` holds what the rest of the package needs to know about a model:

- `builder`: the function that builds it (`"module:function"`, imported on first use, so that
  reading a configuration never imports TensorFlow). Every builder has the signature
  `builder(config: ModelConfig, output_mode: str, item_features: dict | None) -> keras.Model` and
  returns a model with the contract of `mfn4rec_tf.heads` (inputs of `model_inputs`, outputs of
  `model_head`, layers named `padding_mask`, `fc_out` and `item_logits`).
- `loss`: a factory `loss(config) -> keras.losses.Loss` for a model with its own training loss
  (BPR's pairwise loss), or None for the package's default, softmax cross-entropy over every item.
- `modalities`: which feature modalities it reads (see `model_modalities`).
- `preset`: its default settings, `{"data": {...}, "model": {...}, "train": {...}}`, applied over the
  dataclass defaults of `mfn4rec_tf.run_config` and under everything a user sets: each model runs
  at its own paper's settings where the paper gives them (SASRec's, GRU4Rec's); MFN4Rec's are the
  dataclass defaults (the paper's Table 1).
- `search_space`: the search space `compare --tune` gives it.
- `item_representations`: the values of `model.item_representation` it supports (`id` for all; the
  MFN4Rec variants also score items from their features, for items without history).
- `max_length`, `max_epochs`: limits of the model (SASRec's table of learned positions; `pop`,
  whose whole training is one pass of counting).

Every command (`fit`, `evaluate`, `tune`, `compare`, `export`) asks the registry and never tests a
model's name. Adding a model is an entry here (or `register(ModelSpec(...))` from outside the
package) and its builder; the Keras classes it defines are registered when its builder's module is
imported (`import_keras_classes` imports every entry's module before a `.keras` file is loaded).

This module imports nothing of the package, so anything may import it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from mfn4rec_tf._checks import NotApplicable

MODALITY_RULES = ("any", "none", "some")
"""`any`: every chosen modality, zero or more; `none`: item IDs only (the dataset's features are not
fed); `some`: every chosen modality, at least one. A tuple of names instead: exactly those."""

FAMILIES = ("mfn4rec", "baseline", "reference")
"""`mfn4rec`: the full model and its ablations (paper Sec. 4.3); `baseline`: the paper's baselines
(Sec. 4.2) and SASRec; `reference`: non-learned references (popularity, feature similarity)."""
MFN4REC_FAMILY = FAMILIES[0]
"""The family of MFN4Rec and its ablations (the models MFN4Rec-only settings apply to)."""


@dataclass(frozen=True)
class ModelSpec:
    """What the package knows about one model (see the module docstring).

    Attributes:
        name: the model's name, `model.variant` in a run configuration.
        family: one of `FAMILIES`.
        builder: `"module:function"` of its builder.
        description: one line for `--help` and the docs.
        paper: the paper it implements (empty for ours).
        modalities: one of `MODALITY_RULES`, or a tuple of the modality names it needs.
        loss: `"module:function"` of a loss factory `f(config)`, or None (softmax cross-entropy).
        preset: default settings, `{"model": {...}, "train": {...}}`, over the dataclass defaults.
        max_length: the longest history it can read (`data.max_length` must not exceed it), or None.
        max_epochs: most epochs that can change it (training stops there), or None.
        sampled_loss: whether `train.loss: sampled` (and `bce`) applies: True (a softmax over its
            `ItemLogits`), False (it has its own loss, or no item vector per item: not applicable),
            or None (it does not train by a loss at all: the setting is ignored).
        search_space: the shipped search space (`mfn4rec_tf/search_spaces/<name>.yaml`) that
            `compare --tune` searches for it; None for a model with nothing to tune (`pop`).
        item_representations: the `model.item_representation` values it supports (`"id"` always).
        scores_from_features: it scores every item from its features alone, whatever
            `model.item_representation` says (`feature-knn`), so items added after training can be
            exported with it (`export --add-items`).
    """

    name: str
    family: str
    builder: str
    description: str
    paper: str = ""
    modalities: str | tuple = "any"
    loss: str | None = None
    preset: dict = field(default_factory=dict)
    max_length: int | None = None
    max_epochs: int | None = None
    sampled_loss: bool | None = True
    search_space: str | None = "paper"
    item_representations: tuple = ("id",)
    scores_from_features: bool = False

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"ModelSpec {self.name!r}: `family` must be one of {FAMILIES}. Received: {self.family!r}")
        if not (self.modalities in MODALITY_RULES or (isinstance(self.modalities, tuple) and self.modalities)):
            raise ValueError(f"ModelSpec {self.name!r}: `modalities` must be one of {MODALITY_RULES} or a non-empty "
                             f"tuple of modality names. Received: {self.modalities!r}")
        for reference in (self.builder, self.loss):
            if reference is not None and reference.count(":") != 1:
                raise ValueError(f"ModelSpec {self.name!r}: {reference!r} must look like 'module:function'.")
        if not isinstance(self.item_representations, tuple) or "id" not in self.item_representations:
            raise ValueError(f"ModelSpec {self.name!r}: `item_representations` must be a tuple holding 'id'. "
                             f"Received: {self.item_representations!r}")
        unknown = sorted(set(self.preset) - {"model", "train", "data"})
        if unknown:
            raise ValueError(
                f"ModelSpec {self.name!r}: preset sections must be data, model or train. Received: {unknown}"
            )

    def build(self, config, output_mode: str = "sequence", item_features=None):
        """The model of `config` (whose `variant` is this entry's name), see `builder`."""
        return _resolve(self.builder)(config, output_mode, item_features=item_features)

    def training_loss(self, config):
        """Its own loss for `config`, or None when it trains with softmax cross-entropy."""
        return None if self.loss is None else _resolve(self.loss)(config)

    def reads(self, available) -> tuple:
        """The modality names it reads, given the `available` ones (in their order).

        Raises:
            NotApplicable: it needs a modality that is not available.
        """
        available = tuple(available)
        if self.modalities == "any":
            return available
        if self.modalities == "none":
            return ()
        if self.modalities == "some":
            if not available:
                raise NotApplicable(f"Model {self.name!r} needs at least one feature modality; none is available.")
            return available
        missing = [name for name in self.modalities if name not in available]
        if missing:
            raise NotApplicable(f"Model {self.name!r} needs the modality {missing} (available: {list(available)}).")
        return tuple(self.modalities)


def _resolve(reference: str):
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


_MFN4REC = "mfn4rec_tf.model:build_mfn4rec"
_BPR = "mfn4rec_tf.baselines.bpr"
_SEQUENTIAL = "mfn4rec_tf.baselines.sequential"
_MULTIMODAL = "mfn4rec_tf.baselines.multimodal"
_FROM_FEATURES = ("id", "features", "id+features", "id+knn")

SASREC_MAX_POSITIONS = 512
"""Rows of SASRec's table of learned positions, hence the longest history it reads."""

SASREC_PRESET = {
    "data": {"max_length": 50},
    "model": {"id_embedding_dim": 50, "attention_blocks": 2, "attention_heads": 1, "dropout": 0.5},
    "train": {"learning_rate": 0.001, "adam_beta_2": 0.98, "batch_size": 128},
}
"""SASRec's settings (Kang & McAuley, 2018, Sec. IV-B): d = 50, 2 blocks, 1 head, Adam with lr 0.001
and betas (0.9, 0.98), batch 128, at most 50 recent items, dropout 0.5 (the paper's rate for its
sparse Amazon data; it uses 0.2 and 200 items on the dense MovieLens-1M: `--set model.dropout=0.2
--max-length 200`). Trained with the package's full softmax unless `train.loss: bce` (the paper's)."""

GRU4REC_PRESET = {
    "model": {"id_embedding_dim": 100, "id_hidden_units": 100, "dropout": 0.0},
    "train": {"optimizer": "adagrad", "learning_rate": 0.01},
}
"""GRU4Rec's settings (Hidasi et al., 2016): one GRU layer of 100 units, Adagrad, and the
cross-entropy row of its Table 2 (dropout 0, learning rate 0.01). The paper feeds one-hot items;
the embedding of width 100 stands in for them (an assumption, as in common implementations)."""

_REGISTRY: dict = {}


def register(spec: ModelSpec, replace: bool = False) -> ModelSpec:
    """Adds `spec` to the registry (`replace=True` to redefine a name). Returns it."""
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"register() takes a ModelSpec. Received: {type(spec).__name__}")
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"Model {spec.name!r} is already registered (pass replace=True to redefine it).")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str):
    """Removes `name` from the registry (for models registered at run time, e.g. by a test)."""
    _REGISTRY.pop(name, None)


for _spec in (
    ModelSpec("pop", "reference", "mfn4rec_tf.baselines.popularity:build_pop",
              "the most frequent items of the training sequences, for every user",
              modalities="none", max_epochs=1, sampled_loss=None,
              # Its scores are the counts of the training data it saw, so it always counts the data
              # before the test targets (train + validation), whatever the protocol.
              preset={"train": {"retrain": True}}, search_space=None),
    ModelSpec("feature-knn", "reference", "mfn4rec_tf.baselines.feature_knn:build_feature_knn",
              "the items whose features are most similar (cosine) to the last history item's",
              modalities="some", max_epochs=1, sampled_loss=None, search_space=None, scores_from_features=True),
    ModelSpec("bpr", "baseline", f"{_BPR}:build_bpr", "matrix factorisation with the BPR loss",
              paper="Rendle et al., UAI 2009", modalities="none", loss=f"{_BPR}:bpr_loss", sampled_loss=False,
              search_space="bpr"),
    ModelSpec("vbpr", "baseline", f"{_BPR}:build_vbpr", "BPR with visual factors",
              paper="He & McAuley, AAAI 2016", modalities=("image",), loss=f"{_BPR}:bpr_loss",
              sampled_loss=False, search_space="bpr"),
    ModelSpec("lstm", "baseline", f"{_SEQUENTIAL}:build_lstm", "item embedding, LSTM, softmax",
              paper="MV-RNN's ID-only RNN (Cui et al., TKDE 2018)", modalities="none", search_space="rnn"),
    ModelSpec("p-rnn", "baseline", f"{_MULTIMODAL}:build_p_rnn", "one GRU per stream, states concatenated",
              paper="Hidasi et al., RecSys 2016", modalities="some", search_space="multimodal"),
    ModelSpec("mv-rnn-con", "baseline", f"{_MULTIMODAL}:build_mv_rnn_con", "views projected and concatenated, one GRU",
              paper="Cui et al., TKDE 2018", modalities="some", search_space="multimodal"),
    ModelSpec("mv-rnn-fus", "baseline", f"{_MULTIMODAL}:build_mv_rnn_fus", "views projected and summed, one GRU",
              paper="Cui et al., TKDE 2018", modalities="some", search_space="multimodal"),
    ModelSpec("mv-rnn-3mdae", "baseline", f"{_MULTIMODAL}:build_mv_rnn_3mdae",
              "views fused by a denoising auto-encoder, one GRU", paper="Cui et al., TKDE 2018", modalities="some",
              search_space="multimodal"),
    ModelSpec("vcsrs", "baseline", f"{_MULTIMODAL}:build_vcsrs", "feature-level attention into an LSTM",
              paper="Qu et al., Neurocomputing 2021", modalities="some", search_space="multimodal"),
    ModelSpec("gru4rec", "baseline", f"{_SEQUENTIAL}:build_gru4rec", "item embedding, one GRU, softmax",
              paper="Hidasi et al., ICLR 2016", modalities="none", preset=GRU4REC_PRESET, search_space="gru4rec"),
    ModelSpec("sasrec", "baseline", f"{_SEQUENTIAL}:build_sasrec", "causal self-attention over the item IDs",
              paper="Kang & McAuley, ICDM 2018", modalities="none", max_length=SASREC_MAX_POSITIONS,
              preset=SASREC_PRESET, search_space="sasrec"),
    ModelSpec("mfn4rec", "mfn4rec", _MFN4REC, "MFN4Rec: multi-GRU + gated memory network (Eq. 1-12)",
              item_representations=_FROM_FEATURES),
    ModelSpec("mfn4rec-g", "mfn4rec", _MFN4REC, "ablation: the multi-GRU only, no memory network",
              item_representations=_FROM_FEATURES),
    ModelSpec("mfn4rec-m", "mfn4rec", _MFN4REC, "ablation: the memory network only, no GRUs",
              item_representations=_FROM_FEATURES),
    ModelSpec("mfn4rec-add", "mfn4rec", _MFN4REC, "ablation: the memory replaced by a sum of hidden states",
              item_representations=_FROM_FEATURES),
):
    register(_spec)
del _spec


def names(family: str | None = None) -> tuple:
    """Every registered name (of `family`, when given), in the order of the comparison tables."""
    return tuple(name for name, spec in _REGISTRY.items() if family is None or spec.family == family)


def get(name) -> ModelSpec:
    """The entry of `name`.

    Raises:
        ValueError: no such model (the message lists the known ones).
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown model {name!r}. Known: {', '.join(_REGISTRY)}") from None


def model_modalities(name: str, available) -> tuple:
    """The modality names model `name` reads, given the `available` ones (`ModelSpec.reads`)."""
    return get(name).reads(available)


def import_keras_classes() -> None:
    """Imports the module of every entry's builder and loss, which registers the Keras classes
    they define (`keras.saving.register_keras_serializable`): call before loading a `.keras` file."""
    for spec in _REGISTRY.values():
        for reference in (spec.builder, spec.loss):
            if reference is not None:
                importlib.import_module(reference.partition(":")[0])
