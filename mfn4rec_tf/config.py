"""The model configuration: one dataclass, whose defaults are the paper's (Table 1, Sec. 4.1)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from mfn4rec_tf import registry
from mfn4rec_tf._checks import (  # NotApplicable: also re-exported
    NotApplicable,
    check_fraction,
    check_positive_int,
    check_rate,
)

VARIANTS = registry.names("mfn4rec")
"""Model variants: the full model and the three ablations of Sec. 4.3 (registry family `mfn4rec`)."""

BASELINES = registry.names("baseline")
"""The paper's baselines (Sec. 4.2) and SASRec (registry family `baseline`), see `mfn4rec_tf.baselines`."""

OUTPUT_ACTIVATIONS = ("linear", "tanh")
MEMORY_MODES = ("scan", "cell")
"""How the memory network runs: a parallel scan (default) or the step-by-step RNN cell (reference)."""
GRU_IMPLEMENTATIONS = ("fused", "keras")
"""How the per-modality GRUs run: one fused loop over time for all of them (default; fastest on a
CPU) or each as its own `keras.layers.GRU` (on a GPU: the cuDNN kernel). Same weights, same outputs."""
ID_INPUT = "item_ids"
TARGET_MODES = ("all", "last")
"""`train.targets`: the next item at every position (`all`) or only the last one (`last`)."""
PRESENCE_SUFFIX = "_present"
ITEM_REPRESENTATIONS = ("id", "features", "id+features", "id+knn")
"""`model.item_representation`: what an item's output vector (the one `h_out` is scored against) is made
of: its learned ID vector (`id`, the paper's Eq. 11), a small encoder of its feature modalities
(`features`), or their sum (`id+features`); or (`id+knn`) the ID vector for the items whose ID was
trained and, for the others, a score from their features' similarity to the last history item,
blended into the user's scores by a calibration on validation. All but `id` score items never seen
in training (docs/model.md#new-items)."""
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class ModalityConfig:
    """One precomputed feature modality (image, text, ...) fed to the model per step.

    Attributes:
        name: input name, lower-case letters, digits and `_` (e.g. `"image"`).
        dim: feature width (`1000` for the paper's VGG-16 output, `100` for its GloVe text vectors).
        hidden_units: hidden size of this modality's GRU (`d_h`, 20 in Table 1).
        presence: whether some items lack this modality. If `True` the model takes an extra input
            `<name>_present` (1.0 where the item has the feature, 0.0 where its vector is zeros) and
            feeds it to the modality's GRU beside the features.
    """

    name: str
    dim: int
    hidden_units: int = 20
    presence: bool = False

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME.match(self.name) or self.name == ID_INPUT:
            raise ValueError(
                "Modality `name` must be lower-case letters, digits and '_', start with a letter and not be "
                f"{ID_INPUT!r}. Received: name={self.name!r}"
            )
        if self.name.endswith(PRESENCE_SUFFIX):
            raise ValueError(
                f"Modality `name` must not end with {PRESENCE_SUFFIX!r} (reserved for presence inputs). "
                f"Received: name={self.name!r}"
            )
        check_positive_int(f"modalities[{self.name}].dim", self.dim)
        check_positive_int(f"modalities[{self.name}].hidden_units", self.hidden_units)
        if not isinstance(self.presence, bool):
            raise ValueError(f"modalities[{self.name}].presence must be true or false. Received: {self.presence!r}")

    @property
    def input_width(self):
        """Width of what this modality's GRU reads: the features, plus one presence channel."""
        return self.dim + (1 if self.presence else 0)


PAPER_MODALITIES = (ModalityConfig("image", 1000), ModalityConfig("text", 100))


@dataclass(frozen=True)
class ModelConfig:
    """Everything the model builder needs. Defaults are the paper's.

    Attributes:
        num_items: catalogue size N. Item indices are 1..N; index 0 is padding.
        variant: a model of `mfn4rec_tf.registry`: `"mfn4rec"` (full), `"mfn4rec-g"` (multi-GRU
            only), `"mfn4rec-m"` (memory network only), `"mfn4rec-add"` (memory replaced by a sum),
            or a baseline (built by `mfn4rec_tf.baselines`, which read the size fields below as
            their docstrings say).
        modalities: the feature modalities beside the item ID; may be empty. Default: image (1000-d)
            and text (100-d), each with a 20-unit GRU.
        id_embedding_dim: item-ID embedding width `d_m`. Default 25.
        id_hidden_units: hidden size of the item-ID GRU. Default 20.
        memory_dim: memory width `d_mem`. Default 20.
        fc_hidden_units: hidden width of FC_u, FC_g1, FC_g2. Default 50 (Table 1).
        output_units: width of `h_out` (FC_out's output). Default 20 (Table 1).
        output_activation: FC_out's activation, `"linear"` (default; the paper does not say) or `"tanh"`.
        dropout: dropout rate of every FC block. Default 0.3.
        embedding_dropout: dropout rate on what the GRUs read: the item-ID embedding and each
            feature modality's input (presence flags excluded), in training only. Default 0.0 (the
            paper has none).
        tie_item_embeddings: score items with the item-ID embedding table (`ItemLogits`' kernel is
            the transposed embedding, one shared variable, plus its own bias). Needs
            `output_units == id_embedding_dim`. Default False (the paper's separate W of Eq. 11).
        gru_reset_after: Keras GRU convention (`True`, Keras' default) or Cho et al.'s (`False`).
        memory_mode: `"scan"` (default: every step's gates at once, then a parallel scan of Eq. 9) or
            `"cell"` (the `GatedMemoryCell` step by step); same weights, same outputs.
        gru_implementation: `"fused"` (default) or `"keras"`, see `GRU_IMPLEMENTATIONS`.
        attention_heads: attention heads of each self-attention block (`sasrec` only; the model
            width must divide by it). Default 1 (SASRec's paper).
        attention_blocks: self-attention blocks (`sasrec` only). Default 2 (SASRec's paper).
        item_representation: `"id"` (default, the paper), `"features"`, `"id+features"` or
            `"id+knn"`, see `ITEM_REPRESENTATIONS`; all but `id` need a feature modality and a model
            whose registry entry lists them (`ModelSpec.item_representations`).
        id_dropout: with `features` or `id+features`, the probability that an item's ID part (its ID
            vector and bias on the output side, its ID embedding on the input side) is replaced by
            the "unknown item" one in a training step, drawn per item of the catalogue. Default 0.5.
        exclude_unknown_items: with `features` or `id+features`, leave the items whose ID the model
            does not know (never in its training sequences: e.g. the cold items of the `cold-items`
            protocol) out of the training softmax, as a catalogue at training time would not have
            them; False (default) keeps them as negatives. Evaluation and serving score every item.
        id_inference_scale: with `id+features`, the weight of the ID part (vector and bias) when items
            are scored outside training, in [0, 1]. Default 1.0 (the ID part as trained). `1 - id_dropout`
            is dropout's classic weight-scaling rule (the training-time expectation of the ID part);
            lower values move new items, scored from their features alone, up the ranking.
        seed: seed of the dropout generators (weights are seeded with `keras.utils.set_random_seed`).
    """

    num_items: int
    variant: str = "mfn4rec"
    modalities: tuple[ModalityConfig, ...] = field(default=PAPER_MODALITIES)
    id_embedding_dim: int = 25
    id_hidden_units: int = 20
    memory_dim: int = 20
    fc_hidden_units: int = 50
    output_units: int = 20
    output_activation: str = "linear"
    dropout: float = 0.3
    embedding_dropout: float = 0.0
    tie_item_embeddings: bool = False
    gru_reset_after: bool = True
    memory_mode: str = "scan"
    gru_implementation: str = "fused"
    attention_heads: int = 1
    attention_blocks: int = 2
    item_representation: str = "id"
    id_dropout: float = 0.5
    exclude_unknown_items: bool = False
    id_inference_scale: float = 1.0
    seed: int | None = None

    def __post_init__(self):
        check_positive_int("num_items", self.num_items)
        check_model_settings(self)
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"`seed` must be an integer or None. Received: seed={self.seed!r}")
        modalities = tuple(
            m if isinstance(m, ModalityConfig) else _modality_from_dict(m) for m in self.modalities
        )
        object.__setattr__(self, "modalities", modalities)
        names = [m.name for m in modalities]
        if len(set(names)) != len(names):
            raise ValueError(f"Modality names must be unique. Received: {names}")
        if self.item_representation != "id" and not modalities:
            raise NotApplicable(f"`item_representation: {self.item_representation}` encodes items from their feature "
                                "modalities, and the model reads none; choose a dataset with features (and keep "
                                "them in `data.modalities`) or use `item_representation: id`.")
        if self.variant == "mfn4rec-add":
            sizes = {self.id_hidden_units, *(m.hidden_units for m in modalities)}
            if len(sizes) != 1:
                raise ValueError(
                    "Variant 'mfn4rec-add' sums the modalities' hidden states, so every hidden size must be "
                    f"equal. Received: id_hidden_units={self.id_hidden_units}, "
                    + ", ".join(f"{m.name}.hidden_units={m.hidden_units}" for m in modalities)
                )

    @property
    def vocabulary_size(self):
        """Number of item indices including padding: `num_items + 1`."""
        return self.num_items + 1

    @property
    def hidden_sizes(self):
        """Hidden size per modality, item ID first."""
        return (self.id_hidden_units, *(m.hidden_units for m in self.modalities))

    def to_dict(self):
        """Plain-data form (YAML/JSON-ready); `from_dict(to_dict())` gives back an equal config."""
        data = dataclasses.asdict(self)
        data["modalities"] = [dict(m) for m in data["modalities"]]
        return data

    @classmethod
    def from_dict(cls, data):
        """Build from plain data; unknown keys are errors that name the key."""
        if not isinstance(data, dict):
            raise ValueError(f"A model config must be a mapping. Received: {type(data).__name__}")
        _check_keys("model config", data, cls)
        data = dict(data)
        if "modalities" in data:
            if not isinstance(data["modalities"], (list, tuple)):
                raise ValueError(f"`modalities` must be a list. Received: {data['modalities']!r}")
            data["modalities"] = tuple(_modality_from_dict(m) for m in data["modalities"])
        return cls(**data)


SIZE_SETTINGS = ("id_embedding_dim", "id_hidden_units", "memory_dim", "fc_hidden_units", "output_units",
                 "attention_heads", "attention_blocks")


def check_model_settings(settings, prefix: str = "") -> None:
    """The checks of the model settings, shared by `ModelConfig` and the run configuration's model
    section (`mfn4rec_tf.run_config`): raises ValueError naming `prefix + field`.

    Args:
        settings: an object with the fields of `ModelConfig` (`modality_hidden_units` instead of
            `modalities` for a run configuration's model section).
        prefix: prepended to the names in the messages (`"model."` for a run configuration).
    """
    names = SIZE_SETTINGS + (("modality_hidden_units",) if hasattr(settings, "modality_hidden_units") else ())
    for name in names:
        check_positive_int(prefix + name, getattr(settings, name))
    if settings.variant not in registry.names():
        raise ValueError(f"`{prefix}variant` must be one of {registry.names()}. Received: variant={settings.variant!r}")
    choices = {"memory_mode": MEMORY_MODES, "gru_implementation": GRU_IMPLEMENTATIONS,
               "output_activation": OUTPUT_ACTIVATIONS}
    for name, allowed in choices.items():
        value = getattr(settings, name)
        if value not in allowed:
            raise ValueError(f"`{prefix}{name}` must be one of {allowed}. Received: {name}={value!r}")
    check_rate(prefix + "dropout", settings.dropout)
    check_rate(prefix + "embedding_dropout", settings.embedding_dropout)
    if not isinstance(settings.tie_item_embeddings, bool):
        raise ValueError(f"`{prefix}tie_item_embeddings` must be true or false. "
                         f"Received: {settings.tie_item_embeddings!r}")
    if settings.tie_item_embeddings and settings.item_representation not in ("id", "id+knn"):
        raise ValueError(f"`{prefix}tie_item_embeddings` ties the output item vectors to the ID embedding, which "
                         f"`{prefix}item_representation: {settings.item_representation}` replaces by vectors from "
                         "the item features: use one or the other.")
    if settings.tie_item_embeddings and settings.output_units != settings.id_embedding_dim:
        raise ValueError(f"`{prefix}tie_item_embeddings` scores items with the item-ID embeddings, so "
                         f"`{prefix}output_units` must equal `{prefix}id_embedding_dim`. Received: "
                         f"output_units={settings.output_units}, id_embedding_dim={settings.id_embedding_dim}")
    check_rate(prefix + "id_dropout", settings.id_dropout)
    if not isinstance(settings.exclude_unknown_items, bool):
        raise ValueError(f"`{prefix}exclude_unknown_items` must be true or false. "
                         f"Received: {settings.exclude_unknown_items!r}")
    check_fraction(prefix + "id_inference_scale", settings.id_inference_scale)
    if settings.id_inference_scale != 1.0 and settings.item_representation != "id+features":
        raise ValueError(f"`{prefix}id_inference_scale` weighs the ID part of `{prefix}item_representation: "
                         f"id+features`; it has no effect on {settings.item_representation!r}.")
    if settings.exclude_unknown_items and settings.item_representation in ("id", "id+knn"):
        raise ValueError(f"`{prefix}exclude_unknown_items` applies to `{prefix}item_representation` features or "
                         "id+features (an `id` model knows no items apart from its IDs).")
    if settings.item_representation not in ITEM_REPRESENTATIONS:
        raise ValueError(f"`{prefix}item_representation` must be one of {ITEM_REPRESENTATIONS}. "
                         f"Received: item_representation={settings.item_representation!r}")
    supported = registry.get(settings.variant).item_representations
    if settings.item_representation not in supported:
        able = [name for name in registry.names()
                if settings.item_representation in registry.get(name).item_representations]
        raise NotApplicable(f"`{prefix}item_representation: {settings.item_representation}` is not available for "
                            f"{settings.variant} (it supports {list(supported)}); the models that support it: {able}.")
    if not isinstance(settings.gru_reset_after, bool):
        raise ValueError(f"`{prefix}gru_reset_after` must be true or false. Received: {settings.gru_reset_after!r}")


def _modality_from_dict(data):
    if isinstance(data, ModalityConfig):
        return data
    if not isinstance(data, dict):
        raise ValueError(f"Each modality must be a mapping with name and dim. Received: {data!r}")
    _check_keys("modality", data, ModalityConfig)
    return ModalityConfig(**data)


def _check_keys(what, data, cls):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"Unknown key(s) in {what}: {unknown}. Known keys: {sorted(known)}")

