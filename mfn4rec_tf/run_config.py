"""The configuration of a training run: nested dataclasses, the only route for hyperparameters.

Override order: defaults < the chosen model's preset (its `mfn4rec_tf.registry` entry) < a named
preset (`--preset`, `mfn4rec_tf.presets`) < YAML file (`--config`) < command-line flags (`--set
section.key=value` and the named flags of the commands). Unknown keys are errors that name the key. The
resolved configuration is written beside the run's outputs (`config.yaml`), and that file is a
valid `--config` for another run.

The model section holds everything of `ModelConfig` except what the dataset decides (the number of
items and the feature modalities and their widths); it is derived from `ModelConfig`, and both are
checked by `config.check_model_settings`. Reading a configuration does not import TensorFlow.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mfn4rec_tf import registry
from mfn4rec_tf._checks import NotApplicable, check_positive_int
from mfn4rec_tf.config import TARGET_MODES, ModalityConfig, ModelConfig, check_model_settings
from mfn4rec_tf.splits import PROTOCOLS, cold_item_set, make_split

TRAIN_WINDOWS = ("last", "sliding")
"""`data.train_windows` (the same as `mfn4rec_tf.data.TRAIN_WINDOWS`; this module imports no TensorFlow)."""

STRATEGIES = ("none", "mirrored", "multi-worker")
"""`train.strategy`: one device, the devices of one machine, or several machines (`mfn4rec_tf/multi_worker.py`)."""
TRAINING_LOSSES = ("full", "sampled", "bce")
"""`train.loss`: softmax cross-entropy over every item, the sampled softmax, or binary cross-entropy on the
target and one sampled negative per position (SASRec's paper loss); the last two in `mfn4rec_tf.sampled`."""
SAMPLERS = ("uniform", "popularity", "in-batch")
"""`train.sampler`: how the sampled loss draws its negatives (`mfn4rec_tf.sampled`)."""
OPTIMIZERS = ("adam", "adamw", "adagrad")
"""`train.optimizer`: Adam (the paper's; betas 0.9 and `train.adam_beta_2`), AdamW with decoupled weight
decay (`mfn4rec_tf.optim`) or Adagrad (GRU4Rec's papers)."""
LR_SCHEDULES = ("constant", "warmup_cosine", "plateau")
"""`train.lr_schedule`, see `mfn4rec_tf.optim`."""


@dataclass
class DataSection:
    """Which data and how it is split.

    Attributes:
        path: dataset directory (from `pipelines/`); `None` = the embedded demo dataset.
        demo_seed: seed of the demo dataset when `path` is None.
        protocol: `paper`, `user-ratio`, `leave-one-out` or `cold-items` (docs/model.md#protocols).
        cold_fraction: with `cold-items`, the fraction of the catalogue made cold (never trained).
        cold_seed: with `cold-items`, the seed that draws the cold items.
        modalities: feature modalities to use (default: every one the dataset has; `[]` = IDs only).
        max_length: longest history fed to the model (the most recent items are kept).
        train_windows: what training takes of a sequence longer than `max_length`: `last` (its last
            `max_length` steps; earlier targets are not trained on) or `sliding` (windows of at most
            `max_length` steps over the whole sequence, each target trained on once per epoch, each
            window a sequence of its own with the recurrent state starting afresh;
            `mfn4rec_tf.data.training_windows`; needs `train.targets: all`). Validation and test
            inputs are the same either way.
        window_stride: with `sliding`, the targets of each window (1..max_length); a smaller stride
            gives each window's targets more history at the cost of more windows. `None` =
            `max_length` (windows that do not overlap).
    """

    path: str | None = None
    demo_seed: int = 0
    protocol: str = "paper"
    cold_fraction: float = 0.1
    cold_seed: int = 0
    modalities: list | None = None
    max_length: int = 100
    train_windows: str = "last"
    window_stride: int | None = None


DATA_DECIDED = ("num_items", "modalities", "seed")
"""The `ModelConfig` fields a run does not set in its model section: the dataset decides the catalogue
and the modalities, `train.seed` the seed."""


def _model_section_fields():
    """`ModelConfig`'s fields less `DATA_DECIDED`, with `modality_hidden_units` (every modality's
    hidden size, `ModalityConfig.hidden_units`) after `id_hidden_units`."""
    hints = typing.get_type_hints(ModelConfig)
    modality_default = next(f.default for f in dataclasses.fields(ModalityConfig) if f.name == "hidden_units")
    fields = []
    for field_ in dataclasses.fields(ModelConfig):
        if field_.name in DATA_DECIDED:
            continue
        fields.append((field_.name, hints[field_.name], field(default=field_.default)))
        if field_.name == "id_hidden_units":
            fields.append(("modality_hidden_units", int, field(default=modality_default)))
    return fields


ModelSection = dataclasses.make_dataclass("ModelSection", _model_section_fields())
ModelSection.__module__ = __name__
ModelSection.__doc__ = """The model: `ModelConfig` without what the data decides (`DATA_DECIDED`), and with
`modality_hidden_units` for every modality's GRU. Derived from `ModelConfig`, so the two cannot drift;
defaults are the paper's, and a model's registry preset may change them (`load_config`).

`variant` is any model of `mfn4rec_tf.registry`: an MFN4Rec variant, one of the paper's baselines
(`mfn4rec_tf.baselines`, which read the size fields as their docstrings say) or `pop`.
"""


@dataclass
class TrainSection:
    """Optimisation, selection and evaluation.

    Attributes:
        epochs: most epochs of the selection phase.
        batch_size: sequences per batch (paper: 64).
        learning_rate: the optimizer's (paper: 0.01).
        optimizer: `adam` (default, the paper's), `adamw` (decoupled weight decay, `mfn4rec_tf.optim`)
            or `adagrad` (GRU4Rec's).
        adam_beta_2: Adam's and AdamW's second-moment decay (Keras' default 0.999; SASRec's paper 0.98).
        targets: `all` (next item at every position) or `last` (only the final one).
        patience: stop after this many epochs (>= 1) without a better validation Recall@20.
        seed: seeds weights, dropout and batch order.
        retrain: after selection, retrain on train + validation for the selected number of epochs
            before testing (the paper's step). `None` = yes for the `paper` protocol, no otherwise.
        exclude_history: never recommend items already in the user's history.
        eval_batch_size: users per evaluation batch.
        eval_memory_mb: the most memory (MB) one evaluation batch's scores may take: past it, models
            with an `ItemLogits` layer rank the catalogue in chunks (the same metrics).
        strategy: `none`, `mirrored` (tf.distribute.MirroredStrategy over the local devices) or
            `multi-worker` (MultiWorkerMirroredStrategy over the processes in `TF_CONFIG`, with the
            custom loop of `mfn4rec_tf/multi_worker.py`).
        loss: `full` (softmax cross-entropy over every item), `sampled` (sampled softmax with the
            logQ correction over the target and `num_negatives` shared negatives) or `bce` (binary
            cross-entropy on the target and one uniformly drawn negative per position, SASRec's paper
            loss), the last two in `mfn4rec_tf.sampled`.
        num_negatives: S, the negatives of each batch for `loss: sampled`.
        softmax_chunk: for `loss: full`, 0 = the softmax cross-entropy over the `(B, T, N + 1)`
            logits of every position (`mfn4rec_tf.softmax_loss`, a Keras loss); C > 0 = the same
            loss at the real positions only, computed C
            items at a time with its own gradient (`mfn4rec_tf.chunked_softmax`; one device, models
            with an `ItemLogits` layer; the others train with the Keras loss whatever this says).
        sampler: how the negatives are drawn: `uniform`, `popularity` or `in-batch`.
        max_steps: a training-step budget of the selection phase (with `epochs` and `patience`):
            training stops after this many steps in all, mid-epoch if need be; `None` = none.
        max_minutes: a wall-clock budget of the selection phase in minutes (training and the
            validation rankings, summed over resumed sessions); the step under way when it runs out
            is the last; `None` = none.
        weight_decay: AdamW's decay rate (biases excluded, `mfn4rec_tf.optim.NO_DECAY`); needs `adamw`.
        lr_schedule: `constant` (the paper's), `warmup_cosine` (linear warm-up over `warmup_steps`
            steps, then a half cosine to `min_learning_rate` at the end of `epochs` epochs) or
            `plateau` (times `plateau_factor` after `plateau_patience` epochs without a better
            validation Recall@20, down to `min_learning_rate`).
        warmup_steps: batches of linear warm-up for `warmup_cosine`.
        min_learning_rate: the floor of `warmup_cosine` and `plateau`.
        plateau_factor, plateau_patience: `plateau`'s factor (in (0, 1)) and patience (epochs).
        clipnorm: rescale each step's gradients to this global norm at most; None = no clipping.
    """

    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 0.01
    targets: str = "all"
    patience: int = 5
    seed: int = 0
    retrain: bool | None = None
    exclude_history: bool = False
    eval_batch_size: int = 256
    eval_memory_mb: int = 1024
    strategy: str = "none"
    loss: str = "full"
    num_negatives: int = 1024
    sampler: str = "uniform"
    softmax_chunk: int = 0
    max_steps: int | None = None
    max_minutes: float | None = None
    adam_beta_2: float = 0.999
    optimizer: str = "adam"
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    min_learning_rate: float = 0.0
    plateau_factor: float = 0.5
    plateau_patience: int = 1
    clipnorm: float | None = None


@dataclass
class RunConfig:
    """Everything a run needs."""

    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=TrainSection)

    def __post_init__(self):
        self.validate()

    def validate(self):
        for name, section in (("data", self.data), ("model", self.model), ("train", self.train)):
            _check_types(name, section)
        if self.data.protocol not in PROTOCOLS:
            raise ValueError(f"`data.protocol` must be one of {PROTOCOLS}. Received: {self.data.protocol!r}")
        if self.data.modalities is not None and not isinstance(self.data.modalities, list):
            raise ValueError(f"`data.modalities` must be a list of names. Received: {self.data.modalities!r}")
        check_positive_int("data.max_length", self.data.max_length)
        self._check_windows()
        if not 0.0 < self.data.cold_fraction < 1.0:
            raise ValueError(f"`data.cold_fraction` must be a number in (0, 1). Received: {self.data.cold_fraction!r}")
        if self.model.item_representation != "id" and self.data.modalities == []:
            raise NotApplicable(f"`model.item_representation: {self.model.item_representation}` encodes items from "
                                "their feature modalities, and `data.modalities` is []: keep at least one.")
        check_model_settings(self.model, prefix="model.")
        spec = registry.get(self.model.variant)
        if spec.max_length is not None and self.data.max_length > spec.max_length:
            raise NotApplicable(f"`data.max_length` must be <= {spec.max_length} for {spec.name} (the longest history "
                                f"it reads). Received: {self.data.max_length}")
        for name in ("epochs", "batch_size", "eval_batch_size", "eval_memory_mb"):
            check_positive_int(f"train.{name}", getattr(self.train, name))
        check_positive_int("train.patience", self.train.patience)
        if not self.train.learning_rate > 0:
            raise ValueError(f"`train.learning_rate` must be > 0. Received: {self.train.learning_rate}")
        if self.train.targets not in TARGET_MODES:
            raise ValueError(f"`train.targets` must be one of {TARGET_MODES}. Received: {self.train.targets!r}")
        if not 0 <= self.train.adam_beta_2 < 1:
            raise ValueError(f"`train.adam_beta_2` must be in [0, 1). Received: {self.train.adam_beta_2}")
        if self.train.strategy not in STRATEGIES:
            raise ValueError(f"`train.strategy` must be one of {STRATEGIES}. Received: {self.train.strategy!r}")
        self._check_loss(spec)
        self._check_budgets()
        self._check_optimizer(spec)
        if self.train.strategy == "multi-worker" and spec.sampled_loss is None:
            raise NotApplicable(f"`train.strategy: multi-worker` trains by a loss and {spec.name} trains by none "
                                f"({spec.description}); use `train.strategy: none`.")

    def _check_windows(self):
        data = self.data
        if data.train_windows not in TRAIN_WINDOWS:
            raise ValueError(f"`data.train_windows` must be one of {TRAIN_WINDOWS}. Received: {data.train_windows!r}")
        if data.window_stride is None:
            return
        check_positive_int("data.window_stride", data.window_stride)
        if data.train_windows != "sliding":
            raise ValueError(f"`data.window_stride` applies to `data.train_windows: sliding` only. Received: "
                             f"window_stride={data.window_stride} with train_windows={data.train_windows!r}")
        if data.window_stride > data.max_length:
            raise ValueError(f"`data.window_stride` must be <= data.max_length ({data.max_length}). Received: "
                             f"{data.window_stride}")

    def _check_budgets(self):
        train = self.train
        if train.max_steps is not None:
            check_positive_int("train.max_steps", train.max_steps)
        if train.max_minutes is not None and not train.max_minutes > 0:
            raise ValueError(f"`train.max_minutes` must be > 0. Received: {train.max_minutes}")
        if self.data.train_windows == "sliding" and train.targets != "all":
            raise ValueError(f"`data.train_windows: sliding` trains on every target of each window and needs "
                             f"`train.targets: all`. Received: train.targets={train.targets!r}")
        if train.strategy == "multi-worker" and (train.max_steps is not None or train.max_minutes is not None):
            raise ValueError("`train.max_steps` and `train.max_minutes` stop Keras `fit` mid-epoch, which the "
                             "multi-worker loop does not; use `train.epochs` there, or `train.strategy: none`.")

    def _check_loss(self, spec):
        train = self.train
        if train.loss not in TRAINING_LOSSES:
            raise ValueError(f"`train.loss` must be one of {TRAINING_LOSSES}. Received: {train.loss!r}")
        if train.sampler not in SAMPLERS:
            raise ValueError(f"`train.sampler` must be one of {SAMPLERS}. Received: {train.sampler!r}")
        check_positive_int("train.num_negatives", train.num_negatives)
        if isinstance(train.softmax_chunk, bool) or not isinstance(train.softmax_chunk, int) or train.softmax_chunk < 0:
            raise ValueError("`train.softmax_chunk` must be 0 (the softmax over all positions) or a positive number "
                             "of items. "
                             f"Received: {train.softmax_chunk!r}")
        if train.loss == "full" or spec.sampled_loss is None:
            return
        if spec.sampled_loss is False:
            raise NotApplicable(f"`train.loss: {train.loss}` does not apply to {spec.name} ({spec.description}: it "
                                f"trains with its own loss or scores items without one vector per item).")
        if train.strategy != "none":
            raise ValueError(f"`train.loss: {train.loss}` runs on one device (its own training step is not "
                             f"distributed); use `train.strategy: none`. Received: train.strategy={train.strategy!r}")

    def _check_optimizer(self, spec):
        train = self.train
        if train.optimizer not in OPTIMIZERS:
            raise ValueError(f"`train.optimizer` must be one of {OPTIMIZERS}. Received: {train.optimizer!r}")
        if train.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"`train.lr_schedule` must be one of {LR_SCHEDULES}. Received: {train.lr_schedule!r}")
        if not train.weight_decay >= 0:
            raise ValueError(f"`train.weight_decay` must be >= 0. Received: {train.weight_decay}")
        if train.weight_decay and train.optimizer != "adamw":
            raise ValueError("`train.weight_decay` is AdamW's decoupled decay: set `train.optimizer: adamw`. "
                             f"Received: optimizer={train.optimizer!r}, weight_decay={train.weight_decay}")
        if isinstance(train.warmup_steps, bool) or not isinstance(train.warmup_steps, int) or train.warmup_steps < 0:
            raise ValueError(f"`train.warmup_steps` must be an integer >= 0. Received: {train.warmup_steps!r}")
        if not 0 <= train.min_learning_rate <= train.learning_rate:
            raise ValueError(f"`train.min_learning_rate` must be in [0, train.learning_rate]. "
                             f"Received: {train.min_learning_rate}")
        if not 0 < train.plateau_factor < 1:
            raise ValueError(f"`train.plateau_factor` must be in (0, 1). Received: {train.plateau_factor}")
        check_positive_int("train.plateau_patience", train.plateau_patience)
        if train.clipnorm is not None and not train.clipnorm > 0:
            raise ValueError(f"`train.clipnorm` must be > 0 (or null: no clipping). Received: {train.clipnorm}")
        if train.lr_schedule == "plateau" and train.strategy == "multi-worker":
            raise ValueError("`train.lr_schedule: plateau` runs with `train.strategy` none or mirrored.")
        model = self.model
        if spec.family != registry.MFN4REC_FAMILY and (model.embedding_dropout or model.tie_item_embeddings):
            raise NotApplicable(f"`model.embedding_dropout` and `model.tie_item_embeddings` are MFN4Rec's "
                                f"settings; {spec.name} does not read them (leave them at 0 and false).")

    @property
    def retrain(self) -> bool:
        """Whether this run retrains on train + validation before testing."""
        return self.data.protocol == "paper" if self.train.retrain is None else bool(self.train.retrain)

    def modality_names(self, dataset) -> tuple:
        """The feature modalities this run's model reads: `data.modalities` (default: all the
        dataset's), narrowed to what the model reads (its registry entry).

        Raises:
            KeyError: a chosen modality is not in the dataset.
            NotApplicable: the model needs a modality that is not available.
        """
        chosen = dataset.modality_names if self.data.modalities is None else tuple(self.data.modalities)
        for name in chosen:
            dataset.modality(name)  # raises KeyError naming the missing modality
        return registry.model_modalities(self.model.variant, chosen)

    def split(self, dataset, mode: str):
        """The `Split` of `dataset` in `mode` under `data.protocol` (with the cold items of
        `data.cold_fraction` and `data.cold_seed` for `cold-items`)."""
        cold = None
        if self.data.protocol == "cold-items":
            cold = cold_item_set(dataset.num_items, self.data.cold_fraction, self.data.cold_seed)
        return make_split(dataset.interactions, self.data.protocol, mode, cold_items=cold)

    def model_config(self, dataset) -> ModelConfig:
        """The `ModelConfig` of this run on `dataset` (its catalogue and chosen modalities)."""
        section = dataclasses.asdict(self.model)
        hidden = section.pop("modality_hidden_units")
        return ModelConfig(
            num_items=dataset.num_items,
            modalities=dataset.modality_configs(hidden_units=hidden, names=self.modality_names(dataset)),
            seed=self.train.seed,
            **section,
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        """Defaults, the preset of the model `data` names (`preset`), then `data`."""
        return _resolve([data or {}])


def _check_types(name, section):
    """Checks each field against its annotation, converting what YAML leaves as a string but means as a
    number (PyYAML reads `1e-3` as a string); raises ValueError naming `section.field`."""
    hints = typing.get_type_hints(type(section))
    for field_ in dataclasses.fields(section):
        key, value = f"{name}.{field_.name}", getattr(section, field_.name)
        allowed = typing.get_args(hints[field_.name]) or (hints[field_.name],)
        if value is None and type(None) in allowed:
            continue
        if float in allowed:
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    raise ValueError(f"`{key}` must be a number. Received: {value!r}") from None
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"`{key}` must be a number. Received: {value!r}")
            setattr(section, field_.name, float(value))
        elif int in allowed:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"`{key}` must be an integer. Received: {value!r}")
        elif bool in allowed:
            if not isinstance(value, bool):
                raise ValueError(f"`{key}` must be true or false. Received: {value!r}")
        elif str in allowed:
            if not isinstance(value, str):
                raise ValueError(f"`{key}` must be a string. Received: {value!r}")
        elif list in allowed and not isinstance(value, list):
            raise ValueError(f"`{key}` must be a list. Received: {value!r}")


SECTIONS = {"data": DataSection, "model": ModelSection, "train": TrainSection}


def with_absolute_data_path(config: RunConfig) -> RunConfig:
    """Makes `data.path` absolute (in place), so a saved config works from any folder."""
    if config.data.path is not None:
        config.data.path = str(Path(config.data.path).resolve())
    return config


def load_config(path=None, overrides=(), preset=None) -> RunConfig:
    """Defaults, the chosen model's preset, the named preset `preset` (`mfn4rec_tf.presets`, if
    any), the YAML file at `path` (if any), then `overrides` (`"section.key=value"`, in order)."""
    data = {}
    if path is not None:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise ValueError(f"Config file {path} does not exist.") from None
        except yaml.YAMLError as error:
            raise ValueError(f"Config file {path} is not valid YAML: {error}") from None
        if not isinstance(data, dict):
            raise ValueError(f"Config file {path} must hold a mapping at the top level.")
    layers = [data]
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise ValueError(f"An override must look like section.key=value. Received: {override!r}")
        value = yaml.safe_load(raw) if raw != "" else None
        nested = value
        for part in reversed(key.strip().split(".")):
            nested = {part: nested}
        layers.append(nested)
    return _resolve(layers, preset)


def preset(variant) -> dict:
    """The default settings of model `variant` over the dataclass defaults (its registry entry's
    `preset`, `{"model": {...}, "train": {...}}`); empty for an unknown name (validation names it)."""
    return registry.get(variant).preset if variant in registry.names() else {}


def _resolve(layers, named=None) -> RunConfig:
    """Defaults < the preset of the model the layers choose (the last `model.variant` set) < the
    named preset `named` < each layer in order."""
    variant = ModelSection().variant
    for layer in layers:
        model = layer.get("model") if isinstance(layer, dict) else None
        if isinstance(model, dict) and "variant" in model:
            variant = model["variant"]
    config = _merge(RunConfig(), preset(variant), "")
    if named is not None:
        from mfn4rec_tf import presets

        config = _merge(config, presets.get(named, variant), "")
    user = {}
    for layer in layers:
        user = _fold(user, layer) if user else layer
    # One merge of all the user's settings: validated once, so settings that must agree with each
    # other (`model.output_units` and `model.id_embedding_dim` of tied item vectors) can be set one
    # `--set` at a time.
    return _merge(config, user, "")


def _fold(into, layer, prefix=""):
    """`layer` over `into`, nested mappings merged key by key, a later value winning over an earlier
    one; a key set as a mapping in one and as a value in the other is an error naming it."""
    if not isinstance(into, dict) or not isinstance(layer, dict):
        if isinstance(into, dict) != isinstance(layer, dict):
            raise ValueError(f"`{prefix.rstrip('.') or 'config'}` is set both as a mapping and as a value: "
                             f"{into!r}, then {layer!r}")
        return layer
    folded = dict(into)
    for key, value in layer.items():
        folded[key] = _fold(folded[key], value, f"{prefix}{key}.") if key in folded else value
    return folded


def _merge(config, data, prefix):
    """Returns a copy of dataclass `config` with `data` merged in; unknown keys raise."""
    if not isinstance(data, dict):
        raise ValueError(f"`{prefix.rstrip('.') or 'config'}` must be a mapping. Received: {data!r}")
    known = {f.name: f for f in dataclasses.fields(config)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"Unknown key(s) {[prefix + k for k in unknown]}. Known keys here: {sorted(known)}")
    changes = {}
    for key, value in data.items():
        current = getattr(config, key)
        if dataclasses.is_dataclass(current):
            changes[key] = _merge(current, value, f"{prefix}{key}.")
        else:
            changes[key] = value
    return dataclasses.replace(config, **changes)  # a RunConfig re-validates in __post_init__
