"""The command-line plumbing shared by `fit`, `evaluate`, `tune`, `compare` and `export`.

- `FLAGS`: every named flag that sets a run-configuration key, with its help; a command takes the
  ones it offers with `flags(...)` (and may reword their help or rename them, e.g. compare's
  `--budget` for `train.epochs`).
- `add_config_arguments`: `--config`, `--set` and those flags, each flag's help ending with its
  key and default (read from the dataclasses, so `--help` cannot drift).
- `resolve`: the run configuration from defaults, the model's preset, `--config`, `--set` and the
  flags, in that order, with an absolute `data.path` (so a saved config works from any folder).
- `at_least`: an argparse type for integers with a lower bound.
- `add_threads_argument` / `apply_threads`: `--threads N`, the CPU threads TensorFlow may use (set
  before the first op runs).
- `fail` / `USER_ERRORS`: the one error-to-exit mapping (`error: ...` on stderr, exit status 2).
- `read_json`, `one_line`: small helpers the commands' reports share.

Nothing here imports TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from mfn4rec_tf import registry
from mfn4rec_tf.run_config import (
    SAMPLERS,
    STRATEGIES,
    TRAINING_LOSSES,
    DataSection,
    ModelSection,
    RunConfig,
    TrainSection,
    load_config,
    with_absolute_data_path,
)
from mfn4rec_tf.splits import PROTOCOLS

EXIT_USAGE = 2
"""Exit status of a command whose arguments, data or settings are wrong (argparse's, too)."""

USER_ERRORS = (ValueError, KeyError, FileNotFoundError)
"""What a command reports as `error: ...` with exit status 2: the package's own errors (`RunError`,
`DatasetError`, `TuneError`, ... are ValueErrors) and a missing file or key."""


def _model_help():
    return "model: " + ", ".join(registry.names())


FLAGS = {
    "--data": ("data.path", str, "dataset directory made by pipelines/ (default: the embedded demo dataset)"),
    "--protocol": ("data.protocol", str, f"split protocol: {', '.join(PROTOCOLS)}"),
    "--modalities": ("data.modalities", str, "comma-separated feature modalities to use, or 'none' for item IDs "
                                             "only (default: every modality of the dataset)"),
    "--max-length": ("data.max_length", int, "longest history fed to the model"),
    "--train-windows": ("data.train_windows", str, "training on long sequences: their last max-length steps "
                                                   "(last) or windows over all of them (sliding)"),
    "--window-stride": ("data.window_stride", int, "targets per window of --train-windows sliding"),
    "--max-steps": ("train.max_steps", int, "training-step budget of the selection phase (stops mid-epoch)"),
    "--max-minutes": ("train.max_minutes", float, "wall-clock budget of the selection phase, in minutes"),
    "--model": ("model.variant", str, _model_help),
    "--dropout": ("model.dropout", float, "dropout of every FC block"),
    "--epochs": ("train.epochs", int, "most epochs of the selection phase"),
    "--batch-size": ("train.batch_size", int, "sequences per batch"),
    "--learning-rate": ("train.learning_rate", float, "learning rate of the optimizer (train.optimizer)"),
    "--targets": ("train.targets", str, "train on the next item at every position (all) or the last one (last)"),
    "--patience": ("train.patience", int, "early stopping: epochs without a better validation Recall@20"),
    "--seed": ("train.seed", int, "seed of weights, dropout and batch order"),
    "--strategy": ("train.strategy", str, f"distribution strategy: {', '.join(STRATEGIES)}"),
    "--loss": ("train.loss", str, f"training loss: {', '.join(TRAINING_LOSSES)} (full softmax; sampled softmax "
                                  "with the logQ correction; binary cross-entropy with one sampled negative per "
                                  "position; evaluation always ranks every item)"),
    "--num-negatives": ("train.num_negatives", int, "negatives per batch of the sampled loss"),
    "--sampler": ("train.sampler", str, f"negatives of the sampled loss: {', '.join(SAMPLERS)}"),
    "--softmax-chunk": ("train.softmax_chunk", int, "full loss: 0 = the softmax over every position's logits; C > 0 = "
                                                    "the same loss at the real positions, C items at a time"),
}
"""flag -> (config key, type, help text or a function giving it at parse time)."""

_DEFAULTS = {"data": DataSection, "model": ModelSection, "train": TrainSection}


def flags(*names, **changes) -> dict:
    """The entries of `FLAGS` named (in that order), with `changes`: `flag=(key, type, help)` to add
    or replace one, or `flag="help text"` to reword an entry's help."""
    table = {name: FLAGS[name] for name in names}
    for attribute, change in changes.items():
        flag = "--" + attribute.replace("_", "-")
        table[flag] = change if isinstance(change, tuple) else (*FLAGS[flag][:2], change)
    return table


def default(key: str):
    """The dataclass default of config key `section.name`."""
    section, name = key.split(".")
    return getattr(_DEFAULTS[section](), name)


def add_config_arguments(parser, flag_table, config_help=None, set_help=None):
    """Adds `--config`, `--set` and the flags of `flag_table` to `parser`."""
    parser.add_argument("--config", help=config_help or "YAML file with data/model/train sections (e.g. a run's "
                                                        "config.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help=set_help or "override any setting, e.g. --set model.memory_dim=32 (repeatable)")
    for flag, (key, kind, text) in flag_table.items():
        text = text() if callable(text) else text
        parser.add_argument(flag, type=kind, help=f"{text} [{key}, default: {default(key)}]")


def overrides(args, flag_table, extra=()) -> list:
    """`section.key=value` overrides: `--set` first, then the flags of `flag_table` that were given,
    then `extra`. `data.modalities` takes a comma-separated list, or `none` for item IDs only."""
    result = list(getattr(args, "set", []) or [])
    for flag, (key, *_) in flag_table.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is None:
            continue
        if key == "data.modalities":
            value = [] if value.strip().lower() == "none" else [v.strip() for v in value.split(",") if v.strip()]
        text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        result.append(f"{key}={text}")
    return result + list(extra)


def resolve(args, flag_table, extra=()) -> RunConfig:
    """The run configuration of a command's arguments: defaults < the model's preset < the named
    `--preset` (where the command has one) < `--config` < `--set` < the flags < `extra`, with
    `data.path` made absolute."""
    return with_absolute_data_path(load_config(getattr(args, "config", None), overrides(args, flag_table, extra),
                                               preset=getattr(args, "preset", None)))


def add_preset_argument(parser, help=None):
    """Adds `--preset NAME` (`mfn4rec_tf.presets`)."""
    from mfn4rec_tf import presets

    parser.add_argument("--preset", choices=presets.names(),
                        help=help or "named settings over the model's defaults and under --config/--set/flags: paper "
                                     "(Table 1, the defaults) or recipe (regularised, wider MFN4Rec trained on "
                                     "prefixes; MFN4Rec variants only) [default: none, i.e. paper]")


def boolean_override(key: str, value) -> list:
    """`[f"{key}=true|false"]` for a `BooleanOptionalAction` flag that was given, else `[]`."""
    return [] if value is None else [f"{key}={str(bool(value)).lower()}"]


def at_least(minimum: int):
    """An argparse type: an integer >= `minimum`."""

    def parse(text):
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse's "invalid integer value" for non-numbers
    return parse


def add_threads_argument(parser):
    """Adds `--threads N`: the size of TensorFlow's two CPU thread pools (`apply_threads`)."""
    parser.add_argument("--threads", type=at_least(1), metavar="N",
                        help="CPU threads TensorFlow may use: N threads for one op's work (matrix products) and N "
                             "for running ops side by side, so several runs can share a machine without "
                             "oversubscribing it (e.g. 1 each for two runs on 2 cores) [default: TensorFlow's, "
                             "every core]")


def apply_threads(threads) -> None:
    """Sets TensorFlow's intra-op and inter-op thread pools to `threads` each (None: leaves TensorFlow's
    defaults). Must run before TensorFlow executes its first op; a `ValueError` names the flag if it
    is too late (the pools exist and cannot change)."""
    if threads is None:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError as error:
        raise ValueError(f"--threads {threads}: TensorFlow has already started its thread pools ({error})") from None


def fail(error) -> int:
    """Prints `error: <message>` on stderr and returns `EXIT_USAGE` (a KeyError shows its key only)."""
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


def one_line(error) -> str:
    """`Type: message` of an exception on one line."""
    return " ".join(f"{type(error).__name__}: {error}".split())


def read_json(path):
    """The JSON in `path`, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def flat(data, prefix="") -> dict:
    """A nested mapping as `{"section.key": value}`."""
    result = {}
    for key, value in (data.items() if isinstance(data, dict) else ()):
        if isinstance(value, dict):
            result.update(flat(value, f"{prefix}{key}."))
        else:
            result[f"{prefix}{key}"] = value
    return result


def differences(saved: dict, now: dict) -> str:
    """`key: saved <value>, now <value>; ...` for every key whose value differs between two nested
    mappings (e.g. two run configurations); empty when none does."""
    saved, now = flat(saved), flat(now)
    missing = object()

    def show(value):
        return "absent" if value is missing else repr(value)

    return "; ".join(f"{key}: saved {show(saved.get(key, missing))}, now {show(now.get(key, missing))}"
                     for key in dict.fromkeys([*saved, *now]) if saved.get(key, missing) != now.get(key, missing))
