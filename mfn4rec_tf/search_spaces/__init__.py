"""Search spaces of `python -m mfn4rec_tf.tune`: small YAML files, checked before any trial runs.

A space maps run settings (the dotted keys of `RunConfig`, as `--set` takes them) to the values a
search may give them. Each key takes exactly one of four forms::

    model.memory_dim:      {choice: [10, 20, 40]}                         # one of these values
    model.fc_hidden_units: {int: {min: 25, max: 100, step: 25}}           # 25, 50, 75 or 100
    model.dropout:         {float: {min: 0.1, max: 0.5, step: 0.1}}       # 0.1, 0.2, ..., 0.5
    train.learning_rate:   {float: {min: 0.001, max: 0.1, sampling: log}} # log-uniform
    model.id_hidden_units: {same_as: model.modality_hidden_units}         # tied to another key

- `int` takes `min`, `max` (both included), optional `step` (default 1) and `sampling`
  (`linear`, default, or `log`); `float` takes `min`, `max` and `step` and/or `sampling`
  (`linear`, `log` or `reverse_log`). With `sampling: log`, a `step` is a factor (KerasTuner's
  convention), so prefer one or the other.
- `choice` values are scalars of the setting's type (numbers, strings, true/false).
- `same_as` gives a key the value another tuned key gets in each trial (it is not searched).

Every value a space can give (each choice, each range's ends) is checked against `RunConfig`
when the space loads, one key at a time with the other keys at their first values, and each error
names its key. Some settings cannot be tuned (`FIXED`: they
choose the data, the split or the metric the trials are compared on, or change nothing).
Combinations can still be invalid (e.g. `mfn4rec-add` with unequal hidden sizes): such a trial
fails with the model's error, reported in the results table.

Shipped spaces (`NAMES`), in this folder: `paper` (the grid around the paper's Table 1 / Sec. 4.1
settings), `wide`, and `recipe` (the training ingredients of `--preset recipe`: weight decay, input
dropout, learning-rate schedule, clipping, tied widths).

>>> space = parse_space({"model.memory_dim": {"choice": [10, 20]},
...                      "train.learning_rate": {"float": {"min": 0.001, "max": 0.1, "sampling": "log"}}})
>>> space.keys
('model.memory_dim', 'train.learning_rate')
>>> config = space.apply(RunConfig(), {"model.memory_dim": 10, "train.learning_rate": 0.003})
>>> config.model.memory_dim, config.train.learning_rate
(10, 0.003)
>>> parse_space({"model.memroy_dim": {"choice": [10]}})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: Search space: unknown key `model.memroy_dim`. Tunable keys: ...
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from mfn4rec_tf.run_config import SECTIONS, RunConfig

NAMES = ("paper", "wide", "recipe", "sasrec", "gru4rec", "rnn", "multimodal", "bpr")
"""The spaces shipped with the package: `--space paper` reads `search_spaces/paper.yaml`. `paper`,
`wide` and `recipe` are MFN4Rec's; the others are the baselines' (each registry entry's
`search_space`, which `compare --tune` searches)."""

FIXED = {
    "data.path": "the dataset is the search's (--data)",
    "data.demo_seed": "it chooses the dataset",
    "data.protocol": "it chooses the validation split the trials are compared on (--protocol)",
    "data.modalities": "it is a list; set it in the base config (--modalities)",
    "train.epochs": "it is each trial's epoch budget (--epochs)",
    "train.seed": "every trial starts from the same seed, so that trials differ only by the space (--seed)",
    "train.exclude_history": "it changes the metric the trials are compared on",
    "train.retrain": "it only acts after selection, which tuning does not reach",
    "train.eval_batch_size": "it does not change results",
    "train.strategy": "it does not change results",
    "model.memory_mode": "it does not change results (scan and cell compute the same outputs)",
    "model.gru_implementation": "it does not change results (fused and keras compute the same outputs)",
}
"""Settings a space may not tune, and why."""

FORMS = ("choice", "int", "float", "same_as")
SAMPLINGS = {"int": ("linear", "log"), "float": ("linear", "log", "reverse_log")}
RANGE_KEYS = {"int": {"min", "max", "step", "sampling"}, "float": {"min", "max", "step", "sampling"}}


def _defaults():
    """`{"section.key": default value}` of every `RunConfig` setting."""
    return {f"{section}.{f.name}": getattr(cls(), f.name)
            for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)}


def _setting_type(default, key=None):
    """The type of a setting's values: its default's, or for a None default (`train.clipnorm`) the
    scalar type its annotation allows besides None; None for lists (all in FIXED)."""
    if isinstance(default, bool):
        return bool
    if isinstance(default, (int, float, str)):
        return type(default)
    if default is None and key is not None:
        section, name = key.split(".")
        allowed = typing.get_args(typing.get_type_hints(SECTIONS[section])[name])
        scalars = [kind for kind in (bool, int, float, str) if kind in allowed]
        if scalars:
            return scalars[0]
    return None


def tunable_keys() -> tuple:
    """The keys a space may name: every `RunConfig` setting except those in `FIXED`."""
    return tuple(sorted(key for key in _defaults() if key not in FIXED))


@dataclass(frozen=True)
class Parameter:
    """One key of a space in one of the four forms (see the module docstring)."""

    key: str
    form: str
    values: tuple = ()
    min: float | int | None = None
    max: float | int | None = None
    step: float | int | None = None
    sampling: str | None = None
    same_as: str | None = None

    def declare(self, hp):
        """Registers this parameter on KerasTuner `HyperParameters` `hp` (not for `same_as`)."""
        if self.form == "choice":
            return hp.Choice(self.key, list(self.values))
        if self.form == "int":
            return hp.Int(self.key, self.min, self.max, step=self.step, sampling=self.sampling or "linear")
        if self.form == "float":
            return hp.Float(self.key, self.min, self.max, step=self.step, sampling=self.sampling or "linear")
        raise ValueError(f"`{self.key}` ({self.form}) is not a searched parameter.")

    def to_dict(self) -> dict:
        """The YAML form of this parameter (what `parse_space` reads)."""
        if self.form == "choice":
            return {"choice": list(self.values)}
        if self.form == "same_as":
            return {"same_as": self.same_as}
        spec = {"min": self.min, "max": self.max}
        if self.step is not None:
            spec["step"] = self.step
        if self.sampling is not None:
            spec["sampling"] = self.sampling
        return {self.form: spec}


@dataclass(frozen=True)
class SearchSpace:
    """A parsed, checked search space.

    Attributes:
        parameters: one `Parameter` per key, in the file's order.
        source: where it came from (a file path or a shipped name), for messages.
    """

    parameters: tuple
    source: str = "search space"

    @property
    def keys(self) -> tuple:
        return tuple(p.key for p in self.parameters)

    @property
    def searched(self) -> tuple:
        """The parameters KerasTuner searches (all but `same_as`)."""
        return tuple(p for p in self.parameters if p.form != "same_as")

    def declare(self, hp):
        """Registers the searched parameters on KerasTuner `HyperParameters` `hp`."""
        for parameter in self.searched:
            parameter.declare(hp)

    def values(self, hp_values: dict) -> dict:
        """`{key: value}` for every key of the space, from a trial's hyperparameter values.

        Other entries of `hp_values` (KerasTuner's own, such as Hyperband's `tuner/epochs`) are
        ignored; `same_as` keys take their target's value; floats are rounded to 12 significant
        digits (a `step` of 0.1 gives 0.3, not 0.30000000000000004); a choice of booleans, which
        KerasTuner hands back as 0 / 1, is a boolean again.
        """
        values = {}
        for parameter in self.searched:
            if parameter.key not in hp_values:
                raise ValueError(f"The trial has no value for `{parameter.key}`. Received: {sorted(hp_values)}")
            value = hp_values[parameter.key]
            if parameter.form == "choice" and all(isinstance(v, bool) for v in parameter.values):
                value = bool(value)  # KerasTuner's Choice keeps booleans as 0 / 1
            values[parameter.key] = float(f"{value:.12g}") if isinstance(value, float) else value
        for parameter in self.parameters:
            if parameter.form == "same_as":
                values[parameter.key] = values[parameter.same_as]
        return values

    def apply(self, base: RunConfig, hp_values: dict) -> RunConfig:
        """`base` with a trial's values (see `values`): a full, validated `RunConfig`."""
        return _with_values(base, self.values(hp_values))

    def to_dict(self) -> dict:
        return {p.key: p.to_dict() for p in self.parameters}

    def to_yaml(self) -> str:
        """The space in its file format (a normalised copy: `parse_space` of it gives it back)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)


def space_path(name_or_path) -> Path:
    """The file of a shipped space name (`NAMES`) or the given path."""
    if str(name_or_path) in NAMES:
        return Path(str(resources.files(__name__) / f"{name_or_path}.yaml"))
    return Path(name_or_path)


def load_space(name_or_path) -> SearchSpace:
    """Reads and checks a space: a shipped name (`paper`, `wide`) or a YAML file."""
    path = space_path(name_or_path)
    if not path.is_file():
        raise ValueError(f"Search space {name_or_path!r} is neither a shipped space ({', '.join(NAMES)}) "
                         f"nor an existing file.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"Search space {path} is not valid YAML: {error}") from None
    return parse_space(data, source=str(name_or_path) if str(name_or_path) in NAMES else str(path))


def parse_space(data, source: str = "search space") -> SearchSpace:
    """Checks plain data (a parsed YAML mapping) and returns the `SearchSpace`; errors name the key."""
    where = "Search space" if source == "search space" else f"Search space {source}"
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{where} must be a non-empty mapping of setting keys (e.g. model.memory_dim) to "
                         f"{{choice: [...]}}, {{int: {{min, max}}}}, {{float: {{min, max}}}} or {{same_as: key}}. "
                         f"Received: {data!r}")
    defaults = _defaults()
    tunable = tunable_keys()
    parameters = []
    for key, spec in data.items():
        if key in FIXED:
            raise ValueError(f"{where}: `{key}` cannot be tuned: {FIXED[key]}.")
        if key not in defaults:
            raise ValueError(f"{where}: unknown key `{key}`. Tunable keys: {', '.join(tunable)}")
        parameters.append(_parse_parameter(where, key, spec, defaults[key]))
    searched = {p.key for p in parameters if p.form != "same_as"}
    for parameter in parameters:
        if parameter.form == "same_as" and parameter.same_as not in searched:
            raise ValueError(f"{where}: `{parameter.key}`: same_as must name another searched key of this space "
                             f"({', '.join(sorted(searched)) or 'none'}). Received: {parameter.same_as!r}")
    space = SearchSpace(tuple(parameters), source)
    _check_values(where, space)
    return space


def _parse_parameter(where, key, spec, default):
    kind = _setting_type(default, key)
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in FORMS:
        raise ValueError(f"{where}: `{key}` must be exactly one of {{choice: [...]}}, {{int: {{min, max}}}}, "
                         f"{{float: {{min, max}}}} or {{same_as: key}}. Received: {spec!r}")
    form, body = next(iter(spec.items()))
    if form == "same_as":
        if not isinstance(body, str):
            raise ValueError(f"{where}: `{key}`: same_as must be a setting key. Received: {body!r}")
        if body == key:
            raise ValueError(f"{where}: `{key}`: same_as cannot name the key itself.")
        same = _defaults().get(body)
        if same is not None and _setting_type(same) is not kind:
            raise ValueError(f"{where}: `{key}`: same_as `{body}`, a setting of another type.")
        return Parameter(key, "same_as", same_as=body)
    if form == "choice":
        return Parameter(key, "choice", values=_parse_choice(where, key, body, kind))
    if kind not in (int, float):
        raise ValueError(f"{where}: `{key}` is a {kind.__name__} setting: use choice.")
    if form == "int" and kind is float:
        raise ValueError(f"{where}: `{key}` is a float setting: use float (or choice).")
    if form == "float" and kind is int:
        raise ValueError(f"{where}: `{key}` is an integer setting: use int (or choice).")
    return _parse_range(where, key, form, body)


def _parse_choice(where, key, values, kind):
    if not isinstance(values, list) or not values:
        raise ValueError(f"{where}: `{key}`: choice must be a non-empty list. Received: {values!r}")
    checked = []
    for value in values:
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is bool and not isinstance(value, bool) or kind is not bool and (
                isinstance(value, bool) or not isinstance(value, kind)):
            raise ValueError(f"{where}: `{key}` is a {kind.__name__} setting; choice value {value!r} is not.")
        checked.append(value)
    if len(set(checked)) != len(checked):
        raise ValueError(f"{where}: `{key}`: choice values repeat. Received: {values!r}")
    return tuple(checked)


def _parse_range(where, key, form, body):
    if not isinstance(body, dict):
        raise ValueError(f"{where}: `{key}`: {form} must be a mapping with min and max. Received: {body!r}")
    unknown = sorted(set(body) - RANGE_KEYS[form])
    if unknown:
        raise ValueError(f"{where}: `{key}`: unknown {form} field(s) {unknown}. Known: {sorted(RANGE_KEYS[form])}")
    missing = [name for name in ("min", "max") if name not in body]
    if missing:
        raise ValueError(f"{where}: `{key}`: {form} needs {' and '.join(missing)}.")
    number = int if form == "int" else (int, float)
    for name in ("min", "max", "step"):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, number)):
            kind = "an integer" if form == "int" else "a number"
            raise ValueError(f"{where}: `{key}`: {form} {name} must be {kind}. Received: {value!r}")
    low, high, step, sampling = body["min"], body["max"], body.get("step"), body.get("sampling")
    if form == "float":
        low, high = float(low), float(high)
        step = None if step is None else float(step)
    if not low < high:
        raise ValueError(f"{where}: `{key}`: {form} min must be below max. Received: min={low}, max={high}")
    if step is not None and not step > 0:
        raise ValueError(f"{where}: `{key}`: {form} step must be > 0. Received: {step}")
    if sampling is not None and sampling not in SAMPLINGS[form]:
        raise ValueError(f"{where}: `{key}`: {form} sampling must be one of {SAMPLINGS[form]}. Received: {sampling!r}")
    if sampling in ("log", "reverse_log") and not low > 0:
        raise ValueError(f"{where}: `{key}`: {sampling} sampling needs min > 0. Received: min={low}")
    if form == "int" and step is None and sampling != "log":
        step = 1
    return Parameter(key, form, min=low, max=high, step=step, sampling=sampling)


def _check_values(where, space):
    """Every value the space can give, one key at a time over the space's first values (each other
    key at its first choice or its minimum), must make a valid `RunConfig`; so a space may fix a
    setting that another one needs (`train.optimizer: {choice: [adamw]}` beside `train.weight_decay`)."""
    first = {}
    for parameter in space.searched:
        first[parameter.key] = parameter.values[0] if parameter.form == "choice" else parameter.min
        first.update({p.key: first[parameter.key] for p in space.parameters if p.same_as == parameter.key})
    for parameter in space.searched:
        if parameter.form == "choice":
            candidates = parameter.values
        else:
            candidates = (parameter.min, parameter.max)
        for value in candidates:
            if parameter.key == "model.variant" and value == "pop":
                raise ValueError(f"{where}: `model.variant`: `pop` has nothing to tune (and is no neural model).")
            changes = {**first, parameter.key: value}
            changes.update({p.key: value for p in space.parameters if p.same_as == parameter.key})
            try:
                _with_values(RunConfig(), changes)
            except ValueError as error:
                raise ValueError(f"{where}: `{parameter.key}`: value {value!r} is not valid: {error}") from None
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{where}: `{parameter.key}`: value {value!r} is not finite.")


def _with_values(base: RunConfig, values: dict) -> RunConfig:
    data = base.to_dict()
    for key, value in values.items():
        section, name = key.split(".")
        data[section][name] = value
    return RunConfig.from_dict(data)
