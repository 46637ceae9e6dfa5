"""Hyperparameter search with KerasTuner: `python -m mfn4rec_tf.tune`.

    python -m mfn4rec_tf.tune --data DIR --space paper|wide|SPACE.yaml --tuner random|hyperband|bayesian \\
        --max-trials N --out TUNE_DIR

Each trial is the base configuration (defaults < --config < --set < the flags) with the trial's
values of the search space (`mfn4rec_tf.search_spaces`), trained exactly as `fit` selects: the
same model builder and compilation (`training.new_model`), the same epoch loop with early stopping
on validation Recall@20 (`training.train_and_select`), the same full-ranking metric on the
validation split of the configured protocol (`training.evaluate_split`). A trial's score is its
best epoch's validation Recall@20 (maximised). Hyperband passes each trial's epochs (and, when a
trial continues a previous one, its first epoch and weights); the other tuners train each trial up
to `train.epochs` (`--epochs`).

TUNE_DIR holds::

    base_config.yaml   the base configuration (a valid `fit --config`)
    space.yaml         the search space, normalised (a valid --space)
    search.json        the tuner and its settings
    search/            KerasTuner's project: oracle state, one trial_<id>/ per trial with trial.json
                       (KerasTuner's), mfn4rec_trial.json (ours: score, epochs, error and traceback),
                       checkpoint.weights.h5 (best epoch) and logs/ (TensorBoard)
    trials.csv         one row per trial: status, score, best epoch, hyperparameters, error (rewritten
                       after every trial of a one-process search)
    best_config.yaml   base configuration + the best trial's values: `fit --config` takes it as is

Running the same command again continues the search (KerasTuner reloads its state; a trial that
was running when the search stopped runs again); a different base configuration, space or tuner
is refused. `--max-trials` may grow. Distributed search (one chief, several workers, the same
TUNE_DIR on a shared file system) uses KerasTuner's environment variables; see the README.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import keras_tuner
import tensorflow as tf

from mfn4rec_tf import cli, registry, training
from mfn4rec_tf._atomic import write_csv, write_json, write_text
from mfn4rec_tf.cli import one_line as _one_line
from mfn4rec_tf.cli import read_json as _read_json
from mfn4rec_tf.run_config import RunConfig, load_config
from mfn4rec_tf.search_spaces import NAMES as SPACE_NAMES
from mfn4rec_tf.search_spaces import SearchSpace, load_space

log = logging.getLogger("mfn4rec_tf.tune")

OBJECTIVE = f"val_{training.SELECTION_METRIC}"
"""The objective's name in KerasTuner: validation Recall@20 of the full ranking, maximised."""
TUNERS = ("random", "hyperband", "bayesian")
PROJECT = "search"
RECORD = "mfn4rec_trial.json"
DISTRIBUTED_VARIABLES = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")
EXTRA_METRICS = ("best_epoch", "first_epoch", "last_epoch")


class TuneError(ValueError):
    """A search cannot start or continue as asked (the message says why and what to do)."""


class SearchStopped(RuntimeError):
    """Too many trials failed in a row (`--max-consecutive-failures`)."""


def check_dependencies(tuner: str):
    """Raises `TuneError` if a package the search needs is missing (instead of failing every trial).

    KerasTuner 1.4.8 imports tensorboard's hparams plugin in every trial and, without it, marks
    every trial failed while `search()` returns normally; `bayesian` needs scipy and scikit-learn.
    """
    try:
        importlib.import_module("tensorboard.plugins.hparams.api")
    except ImportError as error:
        raise TuneError(
            f"KerasTuner needs tensorboard (it imports tensorboard.plugins.hparams in every trial, and without it "
            f"every trial fails): pip install 'tensorboard>=2.21,<2.22' (a dependency of mfn4rec-tf). ({error})"
        ) from None
    if tuner == "bayesian":
        for module, package in (("scipy.optimize", "scipy"), ("sklearn.gaussian_process", "scikit-learn")):
            try:
                importlib.import_module(module)
            except ImportError as error:
                raise TuneError(
                    f"--tuner bayesian needs scipy and scikit-learn ({package} is missing): "
                    f"pip install 'mfn4rec-tf[bayesian]' (or pip install 'scipy>=1.11,<2' 'scikit-learn>=1.4,<2'). "
                    f"({error})"
                ) from None


def distributed_role() -> str | None:
    """`None` (one process), or this process's `KERASTUNER_TUNER_ID` in a distributed search."""
    present = [name for name in DISTRIBUTED_VARIABLES if os.environ.get(name)]
    if not present:
        return None
    if "KERASTUNER_ORACLE_IP" not in present:
        return None  # KerasTuner only distributes with an oracle address
    missing = [name for name in DISTRIBUTED_VARIABLES if name not in present]
    if missing:
        raise TuneError(f"Distributed search: {', '.join(present)} set but not {', '.join(missing)}. Set all three: "
                        "KERASTUNER_TUNER_ID (chief, or tuner0, tuner1, ... for workers), KERASTUNER_ORACLE_IP and "
                        "KERASTUNER_ORACLE_PORT (the chief's address, the same for every process).")
    return os.environ["KERASTUNER_TUNER_ID"]


def is_chief(role) -> bool:
    return role is not None and "chief" in role  # KerasTuner's rule


class MFN4RecHyperModel(keras_tuner.HyperModel):
    """MFN4Rec as a KerasTuner `HyperModel`: a trial's values mapped onto the run configuration.

    `build(hp)` is the base configuration with the trial's values (`SearchSpace.apply`) handed to
    the normal builder (`training.new_model`: `build_model(config.model_config(dataset))`,
    compiled with the trial's learning rate). `fit(hp, model, ...)` trains it with the trial's
    `train` settings (batch size, targets, patience, ...) through fit's own selection loop
    (`training.train_and_select`) on the validation split, and returns the best epoch's
    full-ranking validation metrics (`val_recall@20`, ...) with `best_epoch`, `first_epoch` and
    `last_epoch`. KerasTuner's callbacks (its best-epoch checkpoint among them) see every epoch's
    `on_epoch_end` with those validation metrics.

    Args:
        base: the base `RunConfig`.
        space: the `SearchSpace`.
        progress: progress bars per epoch.
    """

    def __init__(self, base: RunConfig, space: SearchSpace, progress: bool = False):
        super().__init__(name="mfn4rec")
        self.base = base
        self.space = space
        self.progress = progress
        self._data = None

    def data(self):
        """`(dataset, modality names, validation split)`, opened on first use."""
        if self._data is None:
            dataset = training.open_data(self.base)
            names = training.modality_names(self.base, dataset)
            split = self.base.split(dataset, "validation")
            if not len(split.user_ids):
                raise TuneError(f"The {self.base.data.protocol} protocol leaves no validation user on {dataset.name}.")
            log.info("Data %s\n  %s", dataset, split.summary())
            self._data = dataset, names, split
        return self._data

    def declare_hyperparameters(self, hp):
        self.space.declare(hp)

    def config(self, hp) -> RunConfig:
        """The trial's full run configuration."""
        return self.space.apply(self.base, hp.values)

    def build(self, hp):
        config = self.config(hp)
        dataset, _, _ = self.data()
        keras.utils.set_random_seed(config.train.seed)  # every trial starts from the same seed, as fit does
        model = training.new_model(config, dataset, self.data()[2].train_sequences)
        # The optimizer's variables now rather than at the first step (the same zeros), so that when
        # Hyperband continues a trial, loading its checkpoint restores the optimizer state too.
        model.optimizer.build(model.trainable_variables)
        return model

    def fit(self, hp, model, *args, callbacks=None, epochs=None, initial_epoch=0, log_dir=None, **kwargs):
        config = self.config(hp)
        dataset, _, split = self.data()
        names = training.modality_names(config, dataset)  # the trial's model may read other modalities
        last_epoch = config.train.epochs if epochs is None else int(epochs)
        if not initial_epoch < last_epoch:
            raise ValueError(f"Nothing to train: initial_epoch={initial_epoch}, epochs={last_epoch}.")
        callback_list = keras.callbacks.CallbackList(list(callbacks or []), model=model)
        callback_list.on_train_begin()
        result = None
        for result in training.train_and_select(model, config, dataset, split, names, first_epoch=initial_epoch,
                                                last_epoch=last_epoch, log_dir=log_dir, progress=self.progress):
            callback_list.on_epoch_end(result.epoch - 1, {"loss": result.loss, **_validation_metrics(result.scores)})
        callback_list.on_train_end()
        return {**_validation_metrics(result.best_scores), "best_epoch": result.best_epoch,
                "first_epoch": initial_epoch, "last_epoch": result.epoch}


def _validation_metrics(scores) -> dict:
    return {f"val_{key}": float(value) for key, value in scores.items() if "@" in key}


class _Reporting:
    """What every tuner here adds to KerasTuner's.

    - The space is declared from the file, without building a model (KerasTuner builds one with
      default values to find conditional parameters; a space file has none).
    - Each trial gets its TensorBoard folder and leaves `mfn4rec_trial.json` in its trial folder:
      score, epochs, or the error and traceback (KerasTuner does not send a worker's error to
      the chief, so this file is where the results table finds it).
    - Log lines per trial: start with its values, end with score and best so far, or the error.
    - One process (not distributed) stops after `max_consecutive_failures` failed trials in a row
      (0 = never): KerasTuner's own limit counts over the whole history, so a resumed search would
      stop at once; it is switched off.
    """

    max_consecutive_failures = 0

    def _populate_initial_space(self):
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def _label(self, trial):
        """`trial 3 (4/10)`: KerasTuner's trial id (that of the results table and the trial folder),
        then its place in the search."""
        total = self.oracle.max_trials
        try:
            return f"trial {trial.trial_id} ({int(trial.trial_id) + 1}/{total})"
        except ValueError:
            return f"trial {trial.trial_id}"

    def _values_text(self, trial):
        values = trial.hyperparameters.values
        try:
            text = " ".join(f"{key}={value}" for key, value in self.hypermodel.space.values(values).items())
        except ValueError:
            text = " ".join(f"{key}={value}" for key, value in values.items() if not key.startswith("tuner/"))
        if "tuner/epochs" in values:
            text += f" (epochs {values['tuner/initial_epoch'] + 1}-{values['tuner/epochs']}"
            if "tuner/trial_id" in values:
                text += f", continuing trial {values['tuner/trial_id']}"
            text += ")"
        return text

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        log.info("%s: %s", self._label(trial), self._values_text(trial))

    def run_trial(self, trial, *args, **kwargs):
        trial_dir = Path(self.get_trial_dir(trial.trial_id))
        kwargs["log_dir"] = trial_dir / "logs"
        record = {"trial_id": trial.trial_id, "worker": self.tuner_id,
                  "values": dict(trial.hyperparameters.values)}
        started = time.perf_counter()
        try:
            results = super().run_trial(trial, *args, **kwargs)
        except Exception as error:
            record.update(status="FAILED", error=_one_line(error), traceback=traceback.format_exc(),
                          seconds=round(time.perf_counter() - started, 1))
            write_json(trial_dir / RECORD, record)
            log.error("%s FAILED after %.0fs: %s\n%s", self._label(trial), record["seconds"], record["error"],
                      record["traceback"].rstrip())
            raise
        metrics = results[0] if isinstance(results, list) else results
        record.update(status="COMPLETED", score=metrics[OBJECTIVE], metrics=metrics,
                      seconds=round(time.perf_counter() - started, 1))
        write_json(trial_dir / RECORD, record)
        return results

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        record = _read_json(Path(self.get_trial_dir(trial.trial_id)) / RECORD) or {}
        self.session_trials = getattr(self, "session_trials", []) + [(trial.trial_id, record.get("status"))]
        best = [t for t in self.oracle.get_best_trials(1) if t.score is not None]
        best_text = f"best so far {best[0].score:.4f} (trial {best[0].trial_id})" if best else "no trial scored yet"
        if record.get("status") == "COMPLETED":
            metrics = record["metrics"]
            log.info("%s: %s %.4f at epoch %d of %d-%d in %.0fs; %s", self._label(trial), OBJECTIVE, record["score"],
                     metrics["best_epoch"], metrics["first_epoch"] + 1, metrics["last_epoch"], record["seconds"],
                     best_text)
        else:
            log.error("%s failed: %s; %s", self._label(trial), record.get("error", "(no error recorded)"), best_text)
        if not self._is_worker():  # the table so far, so a search cut off by a kill keeps it (workers: the chief's)
            out = Path(self.project_dir).parent
            write_results(out / "trials.csv", read_results(out, self.hypermodel.space), self.hypermodel.space)
        limit = self.max_consecutive_failures
        if limit and not self._is_worker():
            statuses = [status for _, status in self.session_trials]
            if len(statuses) >= limit and all(s != "COMPLETED" for s in statuses[-limit:]):
                raise SearchStopped(f"{limit} trials failed in a row; the search stopped (see the errors above and "
                                    f"in trials.csv). Fix the cause and run the same command to continue, or raise "
                                    f"--max-consecutive-failures.")


class RandomSearchTuner(_Reporting, keras_tuner.RandomSearch):
    """`keras_tuner.RandomSearch` with this module's reporting."""


class HyperbandTuner(_Reporting, keras_tuner.Hyperband):
    """`keras_tuner.Hyperband` with this module's reporting (it passes `epochs` and `initial_epoch`)."""


class BayesianTuner(_Reporting, keras_tuner.BayesianOptimization):
    """`keras_tuner.BayesianOptimization` with this module's reporting."""


def make_tuner(kind, hypermodel, out, max_trials, seed, hyperband_factor=3, initial_points=None,
               max_consecutive_failures=3):
    """The KerasTuner tuner of `kind` over `hypermodel`, its project in `out/search` (reloaded if there)."""
    common = dict(hypermodel=hypermodel, objective=keras_tuner.Objective(OBJECTIVE, direction="max"), seed=seed,
                  directory=str(out), project_name=PROJECT, overwrite=False,
                  max_consecutive_failed_trials=2**31 - 1)  # see _Reporting
    if kind == "random":
        tuner = RandomSearchTuner(max_trials=max_trials, **common)
    elif kind == "hyperband":
        tuner = HyperbandTuner(max_epochs=hypermodel.base.train.epochs, factor=hyperband_factor, **common)
    elif kind == "bayesian":
        tuner = BayesianTuner(max_trials=max_trials, num_initial_points=initial_points, **common)
    else:
        raise TuneError(f"--tuner must be one of {TUNERS}. Received: {kind!r}")
    tuner.max_consecutive_failures = max_consecutive_failures
    # Hyperband takes no max_trials, and a reloaded oracle should take this run's: set it here (on a
    # worker, tuner.oracle is a client of the chief's oracle, and this only labels the log lines).
    tuner.oracle.max_trials = max_trials
    return tuner


def run_search(base: RunConfig, space: SearchSpace, out, max_trials: int, tuner: str = "random",
               progress: bool = False) -> tuple:
    """One process's search as `main` runs it, for other commands (`compare --tune`).

    Prepares (or continues) the tuning directory `out`, runs the trials still missing up to
    `max_trials`, writes `trials.csv` and, when a trial completed, `best_config.yaml`.

    Returns:
        `(best configuration or None, the results rows of read_results)`.
    """
    out = Path(out)
    check_dependencies(tuner)
    hypermodel = MFN4RecHyperModel(base, space, progress=progress)
    hypermodel.data()
    prepare_directory(out, base, space, {"tuner": tuner})
    make_tuner(tuner, hypermodel, out, max_trials, base.train.seed).search(verbose=0)
    rows = read_results(out, space)
    write_results(out / "trials.csv", rows, space)
    best = best_row(rows)
    if best is None:
        return None, rows
    best_config = space.apply(base, {key: best[key] for key in space.keys})
    write_text(out / "best_config.yaml", f"# Best of {len(rows)} trial(s) of a {tuner} search over {space.source}: "
                                         f"trial {best['trial']}, validation Recall@20 {best[OBJECTIVE]:.6f}.\n"
                                         + best_config.to_yaml())
    return best_config, rows


# ---- the tuning directory ----

def prepare_directory(out: Path, base: RunConfig, space: SearchSpace, settings: dict) -> bool:
    """Writes base_config.yaml, space.yaml and search.json into a new `out`, or checks them.

    Returns True when `out` already holds this search (it continues). Raises `TuneError` when it
    holds another one (a different base configuration, space or tuner) or something else.
    """
    files = {"base_config.yaml": base.to_yaml(), "space.yaml": space.to_yaml(),
             "search.json": json.dumps(settings, indent=2, sort_keys=True) + "\n"}
    if (out / "base_config.yaml").is_file():
        saved_base = load_config(out / "base_config.yaml")
        if saved_base.to_yaml() != files["base_config.yaml"]:
            raise TuneError(f"{out} holds a search with another base configuration ({_differences(saved_base, base)}). "
                            f"Continue it with the same --config, --set and flags as before, or choose another --out.")
        saved_space = load_space(out / "space.yaml")
        if saved_space.to_yaml() != files["space.yaml"]:
            raise TuneError(f"{out} holds a search over another space ({_space_differences(saved_space, space)}). "
                            f"Continue it with --space {out / 'space.yaml'}, or choose another --out.")
        saved = _read_json(out / "search.json") or {}
        if saved != settings:
            changed = ", ".join(f"{key}: saved {saved.get(key)!r}, now {settings.get(key)!r}"
                                for key in sorted(set(saved) | set(settings)) if saved.get(key) != settings.get(key))
            raise TuneError(f"{out} holds a search with other tuner settings ({changed}). Continue it with the same "
                            f"--tuner (and --hyperband-factor), or choose another --out.")
        return (out / PROJECT / "oracle.json").is_file() or any((out / PROJECT).glob("tuner*.json"))
    if (out / PROJECT).exists():
        raise TuneError(f"{out}/{PROJECT} exists but {out} has no base_config.yaml: not a directory made by this "
                        f"command. Choose another --out.")
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        write_text(out / name, text)
    return False


def _differences(saved: RunConfig, now: RunConfig) -> str:
    return cli.differences(saved.to_dict(), now.to_dict())


def _space_differences(saved: SearchSpace, now: SearchSpace) -> str:
    a, b = saved.to_dict(), now.to_dict()
    return "; ".join(f"{key}: saved {a.get(key)}, now {b.get(key)}" for key in dict.fromkeys([*a, *b])
                     if a.get(key) != b.get(key))


# ---- results ----

def read_results(out: Path, space: SearchSpace) -> list:
    """One dict per trial of the search in `out`, in trial order: KerasTuner's trial.json + ours.

    Keys: `trial`, `status` (COMPLETED, FAILED, INVALID = failed and to be retried, RUNNING =
    running or interrupted), `val_recall@20` (the score; None unless COMPLETED), `best_epoch`,
    `first_epoch` and `last_epoch` (epochs trained: first_epoch+1 .. last_epoch), one key per
    space key, `from_trial` (Hyperband: the trial it continued), `seconds`, `worker`, `error`.
    """
    rows = []
    for path in (out / PROJECT).glob("trial_*/trial.json"):
        state = _read_json(path) or {}
        record = _read_json(path.parent / RECORD) or {}
        values = state.get("hyperparameters", {}).get("values", {})
        try:
            space_values = space.values(values)
        except ValueError:
            space_values = {key: values.get(key) for key in space.keys}
        metrics = record.get("metrics", {})
        error = record.get("error") if record.get("status") == "FAILED" else None
        if error is None and state.get("message"):
            error = state["message"].strip().splitlines()[-1]
        rows.append({
            "trial": state.get("trial_id", path.parent.name.removeprefix("trial_")),
            "status": state.get("status"),
            OBJECTIVE: state.get("score") if state.get("status") == "COMPLETED" else None,
            "best_epoch": _int(metrics.get("best_epoch")),
            "first_epoch": _int(metrics.get("first_epoch")),
            "last_epoch": _int(metrics.get("last_epoch")),
            **space_values,
            "from_trial": values.get("tuner/trial_id"),
            "seconds": record.get("seconds"),
            "worker": record.get("worker"),
            "error": error if state.get("status") != "COMPLETED" else None,
        })
    return sorted(rows, key=lambda row: (not row["trial"].isdigit(), int(row["trial"]) if row["trial"].isdigit() else 0,
                                         row["trial"]))


def best_row(rows):
    scored = [row for row in rows if row["status"] == "COMPLETED" and row[OBJECTIVE] is not None]
    return max(scored, key=lambda row: row[OBJECTIVE]) if scored else None


def _columns(rows, space):
    columns = ["trial", "status", OBJECTIVE, "best_epoch", "first_epoch", "last_epoch", *space.keys]
    if any(row["from_trial"] is not None for row in rows):
        columns.append("from_trial")
    return columns + ["seconds", "worker", "error"]


def write_results(path: Path, rows, space):
    """The results table as CSV (one row per trial, `read_results`' keys as columns)."""
    columns = _columns(rows, space)
    write_csv(path, [columns] + [["" if row.get(key) is None else row[key] for key in columns] for row in rows])


def format_results(rows, space, width=70) -> str:
    """The results table as aligned text; `*` marks the best trial; errors cut to `width` characters."""
    best = best_row(rows)
    columns = [c for c in _columns(rows, space) if c not in ("worker", "first_epoch", "last_epoch")]
    headers = {OBJECTIVE: "recall@20 (%)", "best_epoch": "best ep.", "seconds": "s"}
    for key in space.keys:
        headers[key] = key.split(".", 1)[1]
    lines = []
    cells = []
    for row in rows:
        line = {}
        for column in columns:
            value = row.get(column)
            if column == OBJECTIVE and value is not None:
                value = f"{100 * value:.3f}"
            elif column == "trial":
                value = ("* " if row is best else "  ") + str(value)
            elif column == "best_epoch" and value is not None:
                value = f"{value} ({row['first_epoch'] + 1}-{row['last_epoch']})"
            elif column == "error" and value:
                value = value if len(value) <= width else value[:width - 3] + "..."
            elif isinstance(value, float):
                value = f"{value:.4g}"
            line[column] = "" if value is None else str(value)
        cells.append(line)
    widths = {c: max([len(headers.get(c, c))] + [len(line[c]) for line in cells]) for c in columns}
    lines.append("  ".join(headers.get(c, c).ljust(widths[c]) for c in columns).rstrip())
    for line in cells:
        lines.append("  ".join(line[c].ljust(widths[c]) for c in columns).rstrip())
    return "\n".join(lines)


def _int(value):
    return None if value is None else int(value)


# ---- command line ----

# The fit flags that make sense for a base configuration.
FLAGS = cli.flags(
    "--data", "--protocol", "--modalities", "--model", "--epochs", "--patience", "--seed", "--loss",
    "--num-negatives", "--sampler", "--softmax-chunk",
    protocol=f"split protocol (its validation split scores the trials): {', '.join(cli.PROTOCOLS)}",
    epochs="most epochs per trial (Hyperband: its max_epochs)",
    patience="early stopping in a trial: epochs without a better validation Recall@20",
    seed="seed of every trial's weights, dropout and batch order, and of the tuner",
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m mfn4rec_tf.tune",
        description="Search hyperparameters with KerasTuner: each trial trains as fit does and is scored by its best "
                    "validation Recall@20 (full ranking). Base settings: defaults < --config < --set < the flags "
                    "below; the space's values override them per trial. Running the same command again continues "
                    "the search in --out.",
    )
    parser.add_argument("--out", required=True, help="tuning directory (also where an interrupted search continues)")
    parser.add_argument("--space", default="paper",
                        help=f"search space: {' or '.join(SPACE_NAMES)} (shipped) or a YAML file [default: paper]")
    parser.add_argument("--tuner", default="random", choices=TUNERS, help="search algorithm [default: random]")
    parser.add_argument("--max-trials", type=cli.at_least(1), default=10,
                        help="trials in the whole search, those of earlier runs of it included [default: 10]")
    cli.add_config_arguments(parser, FLAGS, config_help="base YAML configuration (e.g. a run's config.yaml)",
                             set_help="override a base setting, e.g. --set model.fc_hidden_units=32 (repeatable)")
    parser.add_argument("--hyperband-factor", type=cli.at_least(2), default=3,
                        help="Hyperband's reduction factor of epochs and trials per bracket [default: 3]")
    parser.add_argument("--initial-points", type=cli.at_least(1), default=None,
                        help="Bayesian: random trials before the Gaussian process "
                             "[default: KerasTuner's, 3 per searched parameter]")
    parser.add_argument("--max-consecutive-failures", type=cli.at_least(0), default=3,
                        help="stop after this many failed trials in a row, 0 = never (one process only; a "
                             "distributed search runs every trial) [default: 3]")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    cli.add_threads_argument(parser)
    return parser.parse_args(argv)


def resolve(args) -> RunConfig:
    """The base configuration from defaults, --config, --set and the flags, in that order."""
    return cli.resolve(args, FLAGS)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    try:
        cli.apply_threads(args.threads)
        base = resolve(args)
        spec = registry.get(base.model.variant)
        if spec.family == "reference":
            raise TuneError(f"model.variant {spec.name} ({spec.description}) is a reference with no "
                            f"hyperparameters to tune.")
        space = load_space(args.space)
        check_dependencies(args.tuner)
        role = distributed_role()
        settings = {"tuner": args.tuner, **({"hyperband_factor": args.hyperband_factor}
                                            if args.tuner == "hyperband" else {})}
        hypermodel = MFN4RecHyperModel(base, space, progress=not args.quiet and sys.stdout.isatty())
        if not is_chief(role):  # the chief only runs the oracle
            hypermodel.data()  # data errors now (before anything is written), not in every trial
            tf.config.experimental.enable_op_determinism()
        resumed = prepare_directory(out, base, space, settings)
        tuner = make_tuner(args.tuner, hypermodel, out, args.max_trials, base.train.seed, args.hyperband_factor,
                           args.initial_points, args.max_consecutive_failures)
    except (*cli.USER_ERRORS, RuntimeError) as error:
        return cli.fail(error)

    where = "" if role is None else (f" as {role} (oracle at {os.environ['KERASTUNER_ORACLE_IP']}:"
                                     f"{os.environ['KERASTUNER_ORACLE_PORT']})")
    rows = read_results(out, space)
    done = len(rows)
    finished_before = sum(row["status"] in ("COMPLETED", "FAILED") for row in rows)
    if role is not None and not is_chief(role):
        log.info("%s joining the %s search in %s%s", role, args.tuner, out, where)
    else:
        log.info("%s %s search over %s (%d parameter(s)), objective %s (max), up to %d trial(s)%s; %s",
                 "Continuing" if resumed else "Starting", args.tuner, space.source, len(space.searched), OBJECTIVE,
                 args.max_trials, where, f"{done} trial(s) already in {out}" if done else f"in {out}")
    started = time.perf_counter()
    stopped = None
    try:
        tuner.search(verbose=0)
    except SearchStopped as error:
        stopped = error
        log.error("%s", error)
    except KeyboardInterrupt:
        stopped = "interrupted"
        log.error("Interrupted. Run the same command to continue the search (the trial under way runs again).")
        if role is not None:
            return 130

    if role is not None and not is_chief(role):
        mine = getattr(tuner, "session_trials", [])
        failed = sum(status != "COMPLETED" for _, status in mine)
        log.info("%s done: %d trial(s) run here, %d failed, in %.0fs. The chief writes the results table.",
                 role, len(mine), failed, time.perf_counter() - started)
        return 1 if mine and failed == len(mine) else 0

    rows = read_results(out, space)
    write_results(out / "trials.csv", rows, space)
    ran = sum(row["status"] in ("COMPLETED", "FAILED") for row in rows) - finished_before
    print(f"\n{args.tuner} search over {space.source} in {out}: {len(rows)} trial(s), {ran} run by this command "
          f"({time.perf_counter() - started:.0f}s); validation Recall@20 of the full ranking, "
          f"{base.data.protocol} protocol:")
    print(format_results(rows, space))
    failed = [row for row in rows if row["status"] in ("FAILED", "INVALID")]
    unfinished = [row for row in rows if row["status"] not in ("COMPLETED", "FAILED", "INVALID")]
    best = best_row(rows)
    if failed:
        print(f"\n{len(failed)} trial(s) failed: errors above and in {out / 'trials.csv'}, tracebacks in "
              f"{out / PROJECT}/trial_<id>/{RECORD}.")
    if unfinished:
        print(f"\n{len(unfinished)} trial(s) unfinished ({', '.join(row['trial'] for row in unfinished)}): they run "
              f"again when the search continues (the same command).")
    if best is None:
        print("error: no trial completed, so there is no best configuration (see the errors above).", file=sys.stderr)
        return 130 if stopped == "interrupted" else 1
    best_config = space.apply(base, {key: best[key] for key in space.keys})
    header = (f"# Best of {len(rows)} trial(s) of a {args.tuner} search over {space.source} ({out}): trial "
              f"{best['trial']}, validation Recall@20 {best[OBJECTIVE]:.6f} at epoch {best['best_epoch']}.\n"
              f"# The base configuration with the best values: python -m mfn4rec_tf.fit --config THIS_FILE\n")
    write_text(out / "best_config.yaml", header + best_config.to_yaml())
    print(f"\nBest: trial {best['trial']}, {100 * best[OBJECTIVE]:.3f}% validation Recall@20. "
          f"Train it: python -m mfn4rec_tf.fit --config {out / 'best_config.yaml'}")
    print(f"Written: {out / 'trials.csv'}, {out / 'best_config.yaml'}")
    return 130 if stopped == "interrupted" else 1 if stopped else 0


if __name__ == "__main__":
    sys.exit(main())
