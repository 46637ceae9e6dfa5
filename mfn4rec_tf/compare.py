"""The paper's comparison as one command: `python -m mfn4rec_tf.compare`.

    python -m mfn4rec_tf.compare --data DIR --protocol paper [--models pop,lstm,mfn4rec,...] [--budget EPOCHS]
        [--patience P] [--max-steps S] [--max-minutes M] [--seeds N] [--modalities image,text] [--config YAML]
        [--set section.key=value ...] --out OUT

Every model (default: every model of `mfn4rec_tf.registry`: `pop`, the paper's baselines and
SASRec, MFN4Rec and its three ablations) is trained by `training.run_training`, exactly as
`python -m mfn4rec_tf.fit` trains it, with one shared configuration (defaults < --config < --set <
the flags) in which only `model.variant` differs: the same data, protocol, modalities, budget
(`train.epochs`), patience, seed and selection on validation Recall@20, then the paper's retraining
step and one test evaluation. A model that needs a modality the data (or --modalities) lacks is
reported as `n/a` with the reason; a model whose run raises is reported as `failed` with the error,
the others still run, and the exit status is 1.

Budgets: besides the epochs, `--max-steps` and `--max-minutes` (`train.max_steps`,
`train.max_minutes`) end each model's selection phase after as many training steps or as much wall
time, the same for every model (`training.train_and_select`); what ended each run is in the table.

Seeds (`--seeds N`, default 1): each model is trained N times, with the seeds `train.seed`,
`train.seed + 1`, ..., in `runs/<model>/seed<S>/` (with N = 1, `runs/<model>/` as always); the
table shows each metric's mean ± standard deviation (n - 1) over the seeds, compare.json and
`results_per_seed.csv` every seed's values. The model with the best mean test Recall@20 is compared
with each other one by a Wilcoxon signed-rank test over the test users (`mfn4rec_tf.stats`, zeros
dropped, tie-corrected normal approximation, two-sided) on their per-user Recall@20
(`test_per_user.npz` of each run, averaged over the seeds, paired by user); a Recall@20 that the
test does not find different from the best one at the 5% level is marked `†`.

OUT holds::

    runs/<model>/    the model's run directory (see `mfn4rec_tf.training`); runs/<model>/seed<S>/ with --seeds > 1
    results.md       the test metrics in percent, like the paper's Tables 3-4, under a header that
                     says what was compared where (data, protocol, budget, date, machine, command)
    results.csv      the same as fractions, with each model's status (and the std and p-value columns)
    results_per_seed.csv  one row per model and seed (with --seeds > 1)
    comparison.png   Recall@20/@30 and MAP@20/@30 per model (Tables 3-4 as bars)
    ablation.png     MFN4Rec against -g, -m, -add (Figure 2), when at least two of them ran
    compare.json     everything above, machine-readable, plus each run's validation metrics

Running the same command again continues: a finished run is reused (not retrained), an
interrupted one resumes from its last checkpoint, a failed one is tried again. A run directory
whose configuration differs from this command's is refused before anything is written.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import logging
import os
import platform
import shlex
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import yaml

from mfn4rec_tf import cli, presets, registry, stats, training
from mfn4rec_tf._atomic import write_text
from mfn4rec_tf._checks import NotApplicable
from mfn4rec_tf._version import __version__
from mfn4rec_tf.cli import one_line as _one_line
from mfn4rec_tf.cli import read_json as _read_json
from mfn4rec_tf.run_config import RunConfig

log = logging.getLogger("mfn4rec_tf.compare")


def default_models() -> tuple:
    """Every model of the registry, in the order of the table: `pop`, the baselines (the paper's
    Table 3 order, then SASRec), MFN4Rec, its ablations (then any model registered later)."""
    return registry.names()


COLUMNS = ("recall@20", "map@20", "recall@30", "map@30", "ndcg@20", "ndcg@30")
"""The metrics of the table: the paper's four (Tables 3-4), then NDCG at the same cut-offs."""
TITLES = {"recall": "Recall", "map": "MAP", "ndcg": "NDCG"}
STATUSES = ("ok", "n/a", "failed", "not run")
RUNS_DIR = "runs"
RECORD = "compare.json"
PER_SEED = "results_per_seed.csv"
SIGNIFICANCE_METRIC = "recall@20"
SIGNIFICANCE_LEVEL = 0.05
NOT_SIGNIFICANT = "†"
"""The mark of a Recall@20 that the paired test does not find different from the best model's."""


class CompareError(ValueError):
    """A comparison cannot start as asked (the message says why and what to do)."""


@dataclass
class Entry:
    """One model of the comparison, as planned before anything runs.

    Attributes:
        model: the model name (`model.variant`).
        config: its run configuration (the shared one with this variant).
        run_dir: `OUT/runs/<model>`.
        action: `"train"` (new run), `"restart"` (a run directory left before its first state was
            written: cleared, then trained), `"resume"` (an interrupted run) or `"reuse"` (finished);
            `"tune"` (`--tune`: searched first, then one of those for the best configuration);
            `None` when the model is not applicable.
        not_applicable: why the model cannot run on this data, or None.
        seed: the run's `train.seed`.
    """

    model: str
    config: RunConfig
    run_dir: Path
    action: str | None
    not_applicable: str | None = None
    seed: int | None = None


@dataclass
class Result:
    """What the comparison reports about one model.

    Attributes:
        model: the model name.
        status: `"ok"`, `"n/a"` (needs a modality the data lacks), `"failed"` (its run raised) or
            `"not run"` (the comparison was interrupted before or during it).
        note: the reason (n/a), the error (failed), or how the run was obtained.
        run: `"trained"`, `"resumed"`, `"reused"`, or None when there is no run.
        run_dir: the run directory (as given under --out), or None.
        seconds: wall time of `run_training` over the sessions this comparison saw (a reused run
            keeps the time recorded when it was trained; None if none was recorded).
        selected_epoch: the epoch chosen on validation Recall@20.
        epochs_run: the epochs of the selection phase.
        valid, test: the run's `metrics.json` entries (fractions), or None; with several seeds,
            the means over the seeds.
        error: the traceback of a failed run.
        seed: the run's seed (one run), or None (a model over several seeds).
        stopped_by: what ended the selection phase (`training.STOP_REASONS`); with several seeds,
            the reasons of the seeds, comma-separated when they differ.
        valid_std, test_std: with several seeds, each metric's standard deviation (n - 1), else None.
        seeds: with several seeds, each seed's own `Result` (as a dict), else None.
        p_value: the Wilcoxon signed-rank test's p-value of this model's per-user Recall@20 against
            the best model's (None for the best one, or when it could not be computed).
        significant: whether `p_value` < 0.05; None when there is no p-value.
        settings: the settings of its run that differ from the shared ones (its registry preset,
            its tuned values), `{"section.key": value}`.
        tuning: with `--tune`: the trials, the tuning directory and the best trial's values and
            validation Recall@20.
    """

    model: str
    status: str
    note: str = ""
    run: str | None = None
    run_dir: str | None = None
    seconds: float | None = None
    selected_epoch: int | None = None
    epochs_run: int | None = None
    valid: dict | None = None
    test: dict | None = None
    error: str | None = None
    seed: int | None = None
    stopped_by: str | None = None
    valid_std: dict | None = None
    test_std: dict | None = None
    seeds: list | None = None
    p_value: float | None = None
    significant: bool | None = None
    settings: dict | None = None
    tuning: dict | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Plan:
    """Everything checked before --out is touched: the entries and what the header reports."""

    out: Path
    base: RunConfig
    entries: list
    summary: dict = field(default_factory=dict)


# ---- planning: every check before anything is written ----

def parse_models(text) -> tuple:
    """The models of `--models`: comma-separated names of the registry (duplicates count once).

    Raises:
        CompareError: naming the unknown names, or when none is given.
    """
    if text is None:
        return default_models()
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if not names:
        raise CompareError(f"--models is empty; give comma-separated names of {', '.join(default_models())}.")
    unknown = [name for name in names if name not in registry.names()]
    if unknown:
        raise CompareError(f"--models: unknown model(s) {', '.join(unknown)}. Known: {', '.join(default_models())}.")
    return names


def make_plan(args) -> Plan:
    """Checks the arguments, the data, each model's configuration and the existing runs in --out.

    Reads only; nothing under --out is created or changed.

    Raises:
        CompareError, DatasetError (a ValueError), ValueError, KeyError: naming what is wrong.
    """
    models = parse_models(args.models)
    if args.seeds < 1:
        raise CompareError(f"--seeds must be at least 1. Received: {args.seeds}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CompareError(f"--out {out} exists and is not a directory.")
    for override in args.set:
        if override.partition("=")[0].strip() == "model.variant":
            raise CompareError("--set model.variant: compare sets the variant of each run; choose them with --models.")
    named = getattr(args, "preset", None)
    if named is not None and not any(presets.applies(named, model) for model in models):
        raise CompareError(f"--preset {named} applies to none of --models ({', '.join(models)}); it is for the "
                           f"{presets.FAMILIES[named]} models.")
    own = parse_model_sets(getattr(args, "model_set", None) or [], models)
    shared = argparse.Namespace(**dict(vars(args), preset=None))  # the named preset is a model's own setting
    base = cli.resolve(shared, FLAGS, ["model.variant=mfn4rec"])
    dataset = training.open_data(base)
    base.modality_names(dataset)  # an unknown --modalities name is an error, not n/a for every model
    protocol = base.data.protocol
    splits = {mode: base.split(dataset, mode) for mode in ("validation", "test")}
    empty = [mode for mode, split in splits.items() if not len(split.user_ids)]
    if empty:
        raise CompareError(f"The {protocol} protocol leaves no user to evaluate on {dataset.name} "
                           f"({' and '.join(empty)} split).")

    seeds = [base.train.seed + i for i in range(args.seeds)]
    entries = []
    for model in models:
        tuned = getattr(args, "tune", 0) and registry.get(model).search_space is not None
        for seed in seeds:
            run_dir = out / RUNS_DIR / model if len(seeds) == 1 else out / RUNS_DIR / model / f"seed{seed}"
            with_named = named is not None and presets.applies(named, model)
            # the budget stays shared even where the named preset has its own (the recipe's 15 epochs)
            budget = [f"train.{key}={getattr(base.train, key)}" for key in ("epochs", "patience") if with_named]
            extra = ([f"model.variant={model}", *budget, *own.get(model, [])]
                     + ([f"train.seed={seed}"] if len(seeds) > 1 else []))
            try:  # with the model's registry preset, and the named one where it is for the model
                config = cli.resolve(args if with_named else shared, FLAGS, extra)
                config.modality_names(dataset)
            except NotApplicable as reason:  # a modality the data lacks, or a setting the model cannot take
                entries.append(Entry(model, base, run_dir, None, not_applicable=str(reason), seed=seed))
                break  # the same for every seed
            try:
                config.model_config(dataset)
            except ValueError as error:
                raise CompareError(f"Model {model!r} cannot be configured with these settings: {error} "
                                   f"(change them, or leave {model} out of --models).") from None
            # with --tune, every seed's run waits for the model's search (made once, at its first seed)
            entries.append(Entry(model, config, run_dir, "tune" if tuned else _existing_run(run_dir, config),
                                 seed=seed))

    counts = dataset.manifest["counts"]
    summary = {
        "dataset": {
            "name": dataset.name,
            "path": base.data.path,
            "users": int(counts["users"]),
            "items": int(counts["items"]),
            "interactions": int(counts["interactions"]),
            "modalities": {m.name: m.dim for m in dataset.modalities},
        },
        "modalities": list(base.modality_names(dataset)),
        "protocol": protocol,
        "splits": {mode: {"training_sequences": len(split.train_sequences),
                          "training_events": split.num_train_events,
                          "users": len(split.user_ids),
                          "targets": int(sum(len(t) for t in split.targets))}
                   for mode, split in splits.items()},
        "budget": base.train.epochs,
        "max_steps": base.train.max_steps,
        "max_minutes": base.train.max_minutes,
        "patience": base.train.patience,
        "seed": base.train.seed,
        "seeds": seeds,
        "retrain": base.retrain,
        "settings": _shared_settings(base),
        "tune": getattr(args, "tune", 0),
        "preset": named,
        "model_settings": own,
    }
    return Plan(out, base, entries, summary)


def parse_model_sets(texts, models) -> dict:
    """`{model: ["section.key=value", ...]}` from `--model-set MODEL:SECTION.KEY=VALUE` arguments.

    Raises:
        CompareError: a malformed argument, a model not in `models`, or `model.variant`.
    """
    own = {}
    for text in texts:
        model, colon, setting = text.partition(":")
        key, equals, _ = setting.partition("=")
        model, key = model.strip(), key.strip()
        if not colon or not equals or not model or not key:
            raise CompareError(f"--model-set must be MODEL:SECTION.KEY=VALUE, e.g. sasrec:model.dropout=0.2. "
                               f"Received: {text!r}")
        if model not in models:
            raise CompareError(f"--model-set {text}: {model!r} is not one of --models ({', '.join(models)}).")
        if key == "model.variant":
            raise CompareError("--model-set cannot set model.variant; choose the models with --models.")
        own.setdefault(model, []).append(setting.strip())
    return own


def _existing_run(run_dir: Path, config: RunConfig) -> str:
    """What to do with `run_dir`: train, restart, resume or reuse (see `Entry.action`)."""
    if not run_dir.exists():
        return "train"
    if not run_dir.is_dir():
        raise CompareError(f"{run_dir} exists and is not a directory; remove it or choose another --out.")
    contents = list(run_dir.iterdir())
    if not contents:
        return "train"
    if not (run_dir / "state.json").is_file():
        # `run_training` writes config.yaml, then state.json: a run killed in between left only those.
        leftovers = all(p.name == "config.yaml" or p.name.startswith(".") or
                        (p.name == "checkpoints" and p.is_dir() and not any(p.iterdir())) for p in contents)
        if leftovers:
            return "restart"
        raise CompareError(f"{run_dir} holds files but no state.json, so it is not a run compare can continue; "
                           "remove it or choose another --out.")
    saved = run_dir / "config.yaml"
    text = saved.read_text() if saved.is_file() else ""
    if text != config.to_yaml():
        raise CompareError(f"{run_dir} holds a run with other settings ({_differences(text, config)}). Run the "
                           "comparison with the same settings to continue it, choose another --out, or delete that "
                           "run directory to train it again.")
    state = _read_json(run_dir / "state.json") or {}
    if state.get("phase") == "done" and (run_dir / "metrics.json").is_file():
        return "reuse"
    return "resume"


def _differences(saved_text: str, config: RunConfig) -> str:
    try:
        saved = yaml.safe_load(saved_text) or {}
    except yaml.YAMLError:
        return "its config.yaml is not valid YAML"
    return cli.differences(saved, config.to_dict()) or "config.yaml differs"


def own_settings(base: RunConfig, config: RunConfig) -> dict:
    """`{"section.key": value}` of `config`'s settings that differ from `base`'s (the shared ones)."""
    shared, own = cli.flat(base.to_dict()), cli.flat(config.to_dict())
    return {key: value for key, value in own.items() if key != "model.variant" and shared.get(key) != value}


TUNE_DIR = "tune"


def tune_entry(entry: Entry, trials: int, out: Path, progress: bool):
    """`--tune`: a random search of `trials` trials over the model's own space (its registry entry's
    `search_space`) from its configuration, in `OUT/tune/<model>` (continued when there).

    Returns:
        `(record, best)`: the tuning record of the model's `Result`, and the best trial's configuration.

    Raises:
        RuntimeError: no trial completed.
    """
    from mfn4rec_tf import tune
    from mfn4rec_tf.search_spaces import load_space

    name = registry.get(entry.model).search_space
    space = load_space(name)
    where = out / TUNE_DIR / entry.model
    best, rows = tune.run_search(entry.config, space, where, trials, progress=progress)
    if best is None:
        raise RuntimeError(f"no trial of the {entry.model} search completed (see {where / 'trials.csv'})")
    top = tune.best_row(rows)
    record = {"space": name, "trials": len(rows), "dir": str(where), "best_trial": top["trial"],
              "valid_recall@20": top[tune.OBJECTIVE], "values": {key: top[key] for key in space.keys}}
    return record, best


def apply_tuning(entry: Entry, best: RunConfig) -> None:
    """Sets `entry.config` to the tuned configuration `best` at the entry's own seed, and
    `entry.action` for its run directory (CompareError: the directory holds other settings)."""
    entry.config = dataclasses.replace(best, train=dataclasses.replace(best.train, seed=entry.config.train.seed))
    entry.action = _existing_run(entry.run_dir, entry.config)


def _shared_settings(base: RunConfig) -> dict:
    """The configuration every run shares (all of it but `model.variant`)."""
    settings = base.to_dict()
    settings["model"] = {k: v for k, v in settings["model"].items() if k != "variant"}
    return settings


# ---- running ----

def run_entry(entry: Entry, progress: bool, previous: dict | None) -> Result:
    """Runs (or reuses) one planned model and reads its results.

    Args:
        entry: the planned model.
        progress: progress bars per epoch (on a terminal).
        previous: this model's record in an earlier `compare.json` of the same --out, or None; a
            reused run takes its time from it, a resumed one adds the time spent before it stopped
            (unknown, so not counted, when that session was killed before it could record it).

    Returns:
        The model's `Result`. An exception of the run is caught and reported as `failed`.
    """
    if entry.not_applicable is not None:
        return Result(entry.model, "n/a", note=entry.not_applicable, seed=entry.seed)
    run_dir = entry.run_dir
    spent = 0.0  # a resumed run's time in the sessions before, when an earlier comparison recorded it
    if (entry.action == "resume" and previous and previous.get("status") in ("failed", "not run")
            and previous.get("seconds") is not None):
        spent = float(previous["seconds"])
    if entry.action == "reuse":
        result = _read_run(entry.model, run_dir, "reused")
        result.seed = entry.seed
        recorded = previous.get("seconds") if previous and previous.get("status") == "ok" else None
        result.seconds = recorded
        if recorded is None:
            result.note = "reused (its training time was not recorded)"
        return result

    started = time.perf_counter()
    try:
        if entry.action == "restart":
            log.info("Clearing %s (a run stopped before its first state was written).", run_dir)
            shutil.rmtree(run_dir)
        training.run_training(entry.config, run_dir, resume=entry.action == "resume", progress=progress)
    except Exception as error:
        seconds = time.perf_counter() - started + spent
        return Result(entry.model, "failed", note=_one_line(error), run_dir=str(run_dir), seconds=seconds,
                      error=traceback.format_exc(), seed=entry.seed)
    except KeyboardInterrupt:
        seconds = time.perf_counter() - started + spent
        raise Interrupted(Result(entry.model, "not run", note="interrupted", run_dir=str(run_dir),
                                 seconds=seconds, seed=entry.seed)) from None
    finally:
        import keras

        keras.backend.clear_session()  # each run builds its own graphs; free the last one's
    result = _read_run(entry.model, run_dir, "resumed" if entry.action == "resume" else "trained")
    result.seconds = time.perf_counter() - started + spent
    result.seed = entry.seed
    return result


def _previous(previous: dict, entry: Entry, seeds: int) -> dict | None:
    """This run's record in an earlier compare.json: the model's own (one seed), or its seed's."""
    record = previous.get(entry.model)
    if seeds == 1 or not record:
        return record
    return next((run for run in record.get("seeds") or [] if run.get("seed") == entry.seed), None)


class Interrupted(Exception):
    """Carries the `Result` of the model under way when Ctrl-C stopped the comparison."""

    def __init__(self, result):
        super().__init__(result.model)
        self.result = result


def _read_run(model, run_dir: Path, how: str) -> Result:
    """The `Result` of a finished run directory (its metrics.json and state.json)."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    state = _read_json(run_dir / "state.json") or {}
    history = state.get("history") or []
    epochs = sum(1 for row in history if row.get("phase") == "select")
    return Result(model, "ok", note="" if how == "trained" else how, run=how, run_dir=str(run_dir),
                  selected_epoch=state.get("best_epoch"), epochs_run=epochs,
                  valid=metrics.get("valid"), test=metrics.get("test"), stopped_by=state.get("stopped_by"))


def aggregate(model: str, runs, seeds) -> Result:
    """The `Result` of `model` over its runs, one per seed of `seeds` (in that order).

    With one seed, that run's own result. With several, `ok` when every seed's run is, with each
    metric's mean (`test`, `valid`) and standard deviation with n - 1 (`test_std`, `valid_std`)
    over the seeds, the summed time, and each run in `seeds`; else the status of the first seed that
    is `n/a`, `failed` or `not run` (in that order of precedence), its note naming the seed.
    """
    runs = list(runs)
    if len(seeds) == 1 or (len(runs) == 1 and runs[0].status == "n/a"):
        return runs[0]
    records = [r.to_dict() for r in runs]
    times = [r.seconds for r in runs if r.seconds is not None]
    for status in ("n/a", "failed", "not run"):
        stopped = [r for r in runs if r.status == status]
        if stopped:
            first = stopped[0]
            note = first.note if status == "n/a" else f"seed {first.seed}: {first.note}"
            return Result(model, status, note=note, seconds=sum(times) if times else None, error=first.error,
                          seeds=records)
    hows = sorted({r.run for r in runs if r.run and r.run != "trained"})
    reasons = list(dict.fromkeys(r.stopped_by for r in runs if r.stopped_by))
    result = Result(model, "ok", note=", ".join(hows), run=runs[0].run if len(hows) <= 1 else "mixed",
                    run_dir=str(Path(runs[0].run_dir).parent) if runs[0].run_dir else None,
                    seconds=sum(times) if len(times) == len(runs) else None, stopped_by=", ".join(reasons) or None,
                    seeds=records)
    for split in ("valid", "test"):
        mean, std = seed_statistics([getattr(r, split) or {} for r in runs])
        setattr(result, split, mean)
        setattr(result, f"{split}_std", std)
    return result


def seed_statistics(values) -> tuple:
    """`(mean, std)` over seeds of the metric dicts `values` (one per seed): each metric that is a
    number in every dict, its mean and its standard deviation with n - 1 (0 for one seed)."""
    keys = [key for key in values[0] if all(isinstance(v.get(key), (int, float)) for v in values)]
    table = {key: np.array([float(v[key]) for v in values]) for key in keys}
    return ({key: float(column.mean()) for key, column in table.items()},
            {key: float(column.std(ddof=1)) if len(column) > 1 else 0.0 for key, column in table.items()})


def paired_p_value(a, b) -> float | None:
    """The two-sided Wilcoxon signed-rank p-value of per-user values `a` against `b` (paired by
    position), users with NaN on either side left out; None when no user is left."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    keep = ~(np.isnan(a) | np.isnan(b))
    if not keep.any():
        return None
    return float(stats.wilcoxon(a[keep], b[keep]).pvalue)


def per_user_recall(result: Result):
    """`(user ids, per-user Recall@20 averaged over the result's seeds)` from the runs'
    `test_per_user.npz`, or a string saying why there is none."""
    run_dirs = [r["run_dir"] for r in result.seeds] if result.seeds else [result.run_dir]
    users, columns = None, []
    for run_dir in run_dirs:
        data = training.read_per_user(run_dir) if run_dir else None
        if data is None or SIGNIFICANCE_METRIC not in data:
            return f"{run_dir} has no {training.PER_USER_FILE} (a run made before it was written)"
        if users is None:
            users = data["user_id"]
        elif not np.array_equal(users, data["user_id"]):
            return f"{run_dir} was tested on other users than its other seeds"
        columns.append(data[SIGNIFICANCE_METRIC])
    return users, np.mean(columns, axis=0)


def significance(results) -> str | None:
    """Sets `p_value` and `significant` of every `ok` result against the one with the best mean test
    Recall@20 (the paired Wilcoxon signed-rank test of the module docstring); returns the best
    model's name, or None when fewer than two models have results."""
    ranked = [r for r in results if r.status == "ok" and r.test and r.test.get(SIGNIFICANCE_METRIC) is not None]
    if len(ranked) < 2:
        return None
    best = max(ranked, key=lambda r: r.test[SIGNIFICANCE_METRIC])
    reference = per_user_recall(best)
    for result in ranked:
        result.p_value = result.significant = None
        if result is best:
            continue
        other = per_user_recall(result)
        if isinstance(reference, str) or isinstance(other, str):
            log.info("No significance test of %s against %s: %s.", result.model, best.model,
                     reference if isinstance(reference, str) else other)
            continue
        common, mine, theirs = np.intersect1d(reference[0], other[0], return_indices=True)
        p_value = paired_p_value(reference[1][mine], other[1][theirs])
        if p_value is None:
            continue
        result.p_value = p_value
        result.significant = result.p_value < SIGNIFICANCE_LEVEL
    return best.model


def describe(result: Result) -> str:
    """One line about a model's result, for the progress log."""
    if result.status == "ok":
        scores = "  ".join(f"{_title(key)} {100 * result.test[key]:.3f}%" for key in COLUMNS[:4]
                           if key in result.test)
        epoch = "" if result.selected_epoch is None else f"selected epoch {result.selected_epoch} of " \
                                                         f"{result.epochs_run}; "
        stop = f"ended by {result.stopped_by}; " if result.stopped_by else ""
        return (f"{scores}  ({epoch}{stop}{_seconds(result.seconds)}"
                f"{', ' + result.run if result.run != 'trained' else ''})")
    if result.status == "n/a":
        return f"n/a: {result.note}"
    return f"{result.status.upper()} after {_seconds(result.seconds)}: {result.note}"


# ---- outputs ----

def format_markdown(summary: dict, results, command: str) -> str:
    """`results.md`: the header (what was compared where), then the table in percent (3 decimals).

    The best value of each metric among the models that ran is in bold, as in the paper's tables.
    """
    data = summary["dataset"]
    splits = summary["splits"]
    modalities = ", ".join(f"{name} ({dim}-d)" for name, dim in data["modalities"].items()) or "none"
    used = ", ".join(summary["modalities"]) or "none (item IDs only)"
    retrain = ("the selected model is retrained on train + validation for its number of epochs, then tested"
               if summary["retrain"] else "the selected model is tested as it is (no retraining)")
    seeds = summary.get("seeds") or [summary["seed"]]
    budgets = "".join(f", at most {value} {unit}" for value, unit in
                      ((summary.get("max_steps"), "training steps"), (summary.get("max_minutes"), "minutes"))
                      if value is not None)
    seeding = (f"seed {summary['seed']}" if len(seeds) == 1 else
               f"{len(seeds)} seeds ({', '.join(map(str, seeds))}): mean ± standard deviation over the seeds")
    lines = [
        f"# Model comparison on {data['name']} ({summary['protocol']} protocol)",
        "",
        (f"- Dataset: {data['name']} (`{data['path'] or 'embedded demo'}`): {data['users']:,} users, "
         f"{data['items']:,} items, {data['interactions']:,} interactions; modalities: {modalities}"),
        (f"- Protocol: {summary['protocol']}. Test split: {splits['test']['users']:,} users evaluated "
         f"({splits['test']['targets']:,} targets); validation split: {splits['validation']['users']:,} users "
         f"({splits['validation']['targets']:,} targets). Feature modalities fed: {used} (to the models that "
         f"read features; bpr, lstm and sasrec read item IDs only, vbpr only `image`)"),
        (f"- Budget: up to {summary['budget']} epoch(s) per model{budgets}, early stopping after "
         f"{summary['patience']} epoch(s) without a better validation Recall@20 (the selection metric), {seeding}; "
         f"{retrain}; a model's own preset may differ (`pop` counts items in one epoch and is always retrained)"),
        ("- Settings: each model runs at its registry preset (its own paper's settings where the paper gives them, "
         "e.g. sasrec, gru4rec) under the settings of this command, which apply to every model"
         + (f"; the {summary['preset']} preset (`mfn4rec_tf/presets.py`) to the models it is for"
            if summary.get("preset") else "")
         + "".join(f"; {model} also {', '.join(f'`{s}`' for s in sets)}"
                   for model, sets in (summary.get("model_settings") or {}).items())
         + (f"; each model was first tuned by a random search of {summary['tune']} trial(s) over its own space"
            if summary.get("tune") else "") + f". Each model's own settings are in {RECORD}"),
        f"- Date: {summary['date']}. Machine: {summary['machine']}. Software: {summary['software']}",
        f"- Command: `{command}`",
        "",
        "Test split, full ranking over every item, in percent; the best value of each column in bold.",
        "",
    ]
    header = ["Model", *(_title(key) for key in COLUMNS), "Selected epoch", "Epochs run", "Time (s)", "Note"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join([":---", *["---:"] * (len(header) - 2), ":---"]) + "|")
    best = {}
    for key in COLUMNS:
        values = [r.test[key] for r in results if r.status == "ok" and r.test and r.test.get(key) is not None]
        if values:
            best[key] = max(values)
    for result in results:
        cells = [result.model]
        for key in COLUMNS:
            if result.status != "ok":
                cells.append(result.status)
                continue
            value = (result.test or {}).get(key)
            text = "-" if value is None else f"{100 * value:.3f}"
            text = f"**{text}**" if value is not None and value == best.get(key) else text
            spread = (result.test_std or {}).get(key)
            if spread is not None:
                text += f" ± {100 * spread:.3f}"
            if key == SIGNIFICANCE_METRIC and result.significant is False:
                text += NOT_SIGNIFICANT
            cells.append(text)
        cells.append(_per_seed(result, "selected_epoch"))
        cells.append(_per_seed(result, "epochs_run"))
        cells.append("-" if result.seconds is None else f"{result.seconds:.0f}")
        cells.append(_cell(result.note))
        lines.append("| " + " | ".join(cells) + " |")
    lines += _significance_notes(results, len(seeds))
    stops = [f"{r.model}: {r.stopped_by}" for r in results if r.status == "ok" and r.stopped_by]
    if stops:
        lines += ["", "Selection ended by: " + "; ".join(stops) + "."]
    failed = [r.model for r in results if r.status == "failed"]
    if failed:
        lines += ["", f"Failed: {', '.join(failed)} (the error is in the Note column; the traceback in {RECORD})."]
    return "\n".join(lines) + "\n"


def _per_seed(result, attribute):
    """A table cell of `attribute` (one run's value, or every seed's, separated by `/`)."""
    if result.seeds and result.status == "ok":
        return "/".join("-" if run.get(attribute) is None else str(run[attribute]) for run in result.seeds)
    value = getattr(result, attribute)
    return "-" if value is None else str(value)


def _significance_notes(results, seeds) -> list:
    tested = [r for r in results if r.status == "ok" and r.p_value is not None]
    if not tested:
        return []
    best = max((r for r in results if r.status == "ok"), key=lambda r: r.test[SIGNIFICANCE_METRIC])
    same = [f"{r.model} (p = {r.p_value:.3g})" for r in tested if not r.significant]
    differ = [f"{r.model} (p = {r.p_value:.3g})" for r in tested if r.significant]
    averaged = f", averaged over the {seeds} seeds" if seeds > 1 else ""
    return ["", (f"{NOT_SIGNIFICANT} Not significantly different from {best.model}, the best mean Recall@20, at the "
                 f"{SIGNIFICANCE_LEVEL:.0%} level: two-sided Wilcoxon signed-rank test over the test users, paired by "
                 f"user, of per-user Recall@20{averaged} (zero differences dropped, tie-corrected normal "
                 f"approximation). " + (f"Not different: {', '.join(same)}. " if same else "")
                 + (f"Different: {', '.join(differ)}." if differ else "")).rstrip()]


def results_csv(results) -> str:
    """`results.csv`: one row per model, the metrics as fractions (as in each run's metrics.json)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "status", *COLUMNS, "selected_epoch", "epochs_run", "seconds", "run", "note", "run_dir",
                     "stopped_by", "seeds", *(f"{key}_std" for key in COLUMNS), "p_value_vs_best", "significant"])
    for r in results:
        test, spread = r.test or {}, r.test_std or {}
        writer.writerow([r.model, r.status, *(test.get(key, "") if r.status == "ok" else "" for key in COLUMNS),
                         _per_seed(r, "selected_epoch").replace("-", ""), _per_seed(r, "epochs_run").replace("-", ""),
                         "" if r.seconds is None else round(r.seconds, 3), r.run or "", r.note, r.run_dir or "",
                         r.stopped_by or "", len(r.seeds) if r.seeds else 1,
                         *(spread.get(key, "") for key in COLUMNS), _blank(r.p_value), _blank(r.significant)])
    return buffer.getvalue()


def per_seed_csv(results) -> str:
    """`results_per_seed.csv`: one row per model and seed, its own test metrics as fractions."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "seed", "status", *COLUMNS, "selected_epoch", "epochs_run", "stopped_by", "seconds",
                     "run_dir"])
    for r in results:
        for run in r.seeds or []:
            test = run.get("test") or {}
            writer.writerow([r.model, _blank(run.get("seed")), run["status"],
                             *(test.get(key, "") if run["status"] == "ok" else "" for key in COLUMNS),
                             _blank(run.get("selected_epoch")), _blank(run.get("epochs_run")),
                             run.get("stopped_by") or "",
                             "" if run.get("seconds") is None else round(run["seconds"], 3), run.get("run_dir") or ""])
    return buffer.getvalue()


def write_outputs(out: Path, summary: dict, results, command: str, argv, plots: bool = True) -> list:
    """Writes results.md, results.csv, compare.json (and, with `plots`, the PNGs) into `out`, atomically.

    Returns:
        The paths written.
    """
    from mfn4rec_tf import compare_plots

    written = []
    markdown = format_markdown(summary, results, command)
    write_text(out / "results.md", markdown)
    write_text(out / "results.csv", results_csv(results))
    written += [out / "results.md", out / "results.csv"]
    if len(summary.get("seeds") or [None]) > 1:
        write_text(out / PER_SEED, per_seed_csv(results))
        written.append(out / PER_SEED)
    if plots:
        rows = [r.to_dict() for r in results]
        title = f"{summary['dataset']['name']}, {summary['protocol']} protocol, test split"
        written.append(compare_plots.plot_comparison(rows, out / "comparison.png", title=title))
        ablation = out / "ablation.png"
        variants = registry.names("mfn4rec")
        ran = [r.model for r in results if r.status == "ok" and r.model in variants]
        if len(ran) >= 2:
            written.append(compare_plots.plot_ablation(rows, ablation, variants, title=title))
        else:
            log.info("No ablation chart: it needs at least two of %s with results; %s.", ", ".join(variants),
                     f"only {ran[0]} has" if ran else "none has")
            if ablation.exists():
                ablation.unlink()  # an earlier comparison's chart would no longer match the table
                log.info("Removed the earlier %s.", ablation)
    record = {
        "command": command,
        "argv": list(argv),
        **summary,
        "columns": list(COLUMNS),
        "models": [r.to_dict() for r in results],
        "outputs": [p.name for p in written] + [RECORD],
    }
    write_text(out / RECORD, json.dumps(record, indent=2, default=str) + "\n")
    return written + [out / RECORD]


def machine() -> str:
    """`platform, N CPU(s), GPU(s)` of this machine, for the header."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return f"{platform.platform()}, {os.cpu_count()} CPU(s), " + (f"{len(gpus)} GPU(s)" if gpus else "no GPU")


def software() -> str:
    import keras
    import tensorflow as tf

    return (f"mfn4rec_tf {__version__}, TensorFlow {tf.__version__}, Keras {keras.__version__}, "
            f"Python {platform.python_version()}")


def _title(key):
    family, _, k = key.partition("@")
    return f"{TITLES.get(family, family)}@{k}"


def _cell(text):
    return " ".join(str(text).split()).replace("|", "\\|")


def _blank(value):
    return "" if value is None else value


def _seconds(seconds):
    return "?s" if seconds is None else f"{seconds:.0f}s"


# ---- command line ----

FLAGS = cli.flags(
    "--data", "--protocol", "--modalities", "--patience", "--loss", "--num-negatives", "--sampler", "--softmax-chunk",
    "--max-steps", "--max-minutes",
    modalities=("comma-separated feature modalities to use, or 'none' for item IDs only; a model needing one that "
                "is left out is reported n/a (default: every modality of the dataset)"),
    budget=("train.epochs", int, "most epochs of each model's selection phase, the same for every model"),
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m mfn4rec_tf.compare",
        description="Train every model with the same data, protocol, budget and validation-based selection, and "
                    "write the test metrics as the paper's Tables 3-4 (results.md, results.csv, comparison.png) "
                    "and its ablation figure (ablation.png). Settings: defaults < --config < --set < the flags "
                    "below; model.variant is set per model. Running the same command again reuses finished runs "
                    "and resumes interrupted ones.",
    )
    parser.add_argument("--out", required=True, help="comparison directory (also where an interrupted one continues)")
    parser.add_argument("--models", help=f"comma-separated models [default: all: {','.join(default_models())}]")
    cli.add_config_arguments(parser, FLAGS,
                             config_help="YAML file with data/model/train sections shared by every run (e.g. a "
                                         "run's config.yaml; its model.variant is replaced per model)",
                             set_help="override a shared setting, e.g. --set train.seed=1 (repeatable)")
    cli.add_preset_argument(parser, help="a named preset (mfn4rec_tf/presets.py) for the models it is for, e.g. "
                                         "recipe for the MFN4Rec variants; the others keep their registry preset")
    parser.add_argument("--model-set", action="append", default=[], metavar="MODEL:SECTION.KEY=VALUE",
                        help="a setting of one model only, over everything shared, e.g. sasrec:model.dropout=0.2 "
                             "(repeatable)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="train each model N times, with seeds train.seed, train.seed + 1, ...; the table shows "
                             "mean ± std [default: 1]")
    parser.add_argument("--tune", type=cli.at_least(0), default=0, metavar="N",
                        help="first give every model (but pop) a random KerasTuner search of N trials over its own "
                             "space (its registry entry's search_space), each trial with the same budget, then train "
                             "its best configuration; searches continue in OUT/tune/<model> [default: 0, no search]")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    cli.add_threads_argument(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """The command line; returns the exit status (0 ok, 1 some model failed, 2 bad arguments, 130 interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    command = "python -m mfn4rec_tf.compare " + shlex.join(argv)
    try:
        cli.apply_threads(args.threads)
        plan = make_plan(args)
    except cli.USER_ERRORS as error:
        return cli.fail(error)

    out = plan.out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(f"error: cannot create --out {out}: {error.strerror or error}", file=sys.stderr)
        return 2
    earlier = _read_json(out / RECORD) or {}
    previous = {m.get("model"): m for m in earlier.get("models", []) if isinstance(m, dict)}
    summary = dict(plan.summary, date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), machine=machine(), software=software())
    data = summary["dataset"]
    log.info("Comparing %d model(s) on %s (%s users, %s items, %s interactions), %s protocol, budget %d epoch(s), "
             "patience %d, in %s", len(plan.entries), data["name"], f"{data['users']:,}", f"{data['items']:,}",
             f"{data['interactions']:,}", summary["protocol"], summary["budget"], summary["patience"], out)

    seeds = summary["seeds"]
    runs = {(entry.model, entry.seed): Result(entry.model, "not run", note="not reached", seed=entry.seed)
            for entry in plan.entries}

    def collect():
        models = dict.fromkeys(entry.model for entry in plan.entries)
        return [aggregate(model, [r for (m, _), r in runs.items() if m == model], seeds) for model in models]

    started = time.perf_counter()
    interrupted = False
    total = len(plan.entries)
    tunings = {}  # model -> its tuning record (or the error that ended its search)
    for number, entry in enumerate(plan.entries, start=1):
        label = f"[{number}/{total}] {entry.model}" + (f" (seed {entry.seed})" if len(seeds) > 1 else "")
        if entry.action == "tune":
            if entry.model not in tunings:
                log.info("%s: searching %d trial(s) over its own space ... (%s)", label, args.tune,
                         out / TUNE_DIR / entry.model)
                try:
                    tunings[entry.model] = tune_entry(entry, args.tune, out, progress=not args.quiet)
                except KeyboardInterrupt:
                    runs[(entry.model, entry.seed)] = Result(entry.model, "not run", note="interrupted while tuning",
                                                             seed=entry.seed)
                    interrupted = True
                    log.error("%s: interrupted while tuning. Run the same command to continue the search.", label)
                    break
                except Exception as error:  # reported as failed, as a failed run is
                    tunings[entry.model] = error
                    log.error("%s: tuning FAILED: %s", label, _one_line(error))
            tuning = tunings[entry.model]
            if isinstance(tuning, Exception):
                runs[(entry.model, entry.seed)] = Result(entry.model, "failed", note=f"tuning: {_one_line(tuning)}",
                                                         seed=entry.seed, error="".join(
                                                             traceback.format_exception(tuning)))
                continue
            apply_tuning(entry, tuning[1])
        if entry.not_applicable is None:
            doing = {"train": "training", "restart": "training", "resume": "resuming the interrupted run",
                     "reuse": "reusing the finished run"}[entry.action]
            log.info("%s: %s ... (%s)", label, doing, entry.run_dir)
        try:
            result = run_entry(entry, progress=not args.quiet, previous=_previous(previous, entry, len(seeds)))
        except Interrupted as stop:
            runs[(entry.model, entry.seed)] = stop.result
            interrupted = True
            log.error("%s: interrupted after %s. Run the same command to continue (this run resumes from its last "
                      "checkpoint).", label, _seconds(stop.result.seconds))
            break
        if entry.not_applicable is None:
            tuning = tunings.get(entry.model)
            result.settings, result.tuning = own_settings(plan.base, entry.config), tuning and tuning[0]
        runs[(entry.model, entry.seed)] = result
        (log.error if result.status == "failed" else log.info)("%s: %s", label, describe(result))
        if result.error:
            log.error("%s", result.error.rstrip())
        # The record after every model: what finished survives a crash, with its training time.
        write_outputs(out, summary, collect(), command, argv, plots=False)

    ordered = collect()
    significance(ordered)
    written = write_outputs(out, summary, ordered, command, argv)
    print(f"\n{format_markdown(summary, ordered, command)}")
    counts = {status: sum(r.status == status for r in ordered) for status in STATUSES}
    print(f"{counts['ok']} model(s) with results, {counts['n/a']} n/a, {counts['failed']} failed, "
          f"{counts['not run']} not run; {time.perf_counter() - started:.0f}s. Written: "
          + ", ".join(str(p) for p in written))
    if interrupted:
        return 130
    if counts["failed"]:
        failed = ", ".join(r.model for r in ordered if r.status == "failed")
        print(f"error: {counts['failed']} model(s) failed: {failed} (errors above, in results.md and {out / RECORD}); "
              "run the same command to try them again (finished runs are reused).", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
