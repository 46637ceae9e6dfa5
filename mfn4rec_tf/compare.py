"""The paper's comparison as one command: `python -m mfn4rec_tf.compare`.

    python -m mfn4rec_tf.compare --data DIR --protocol paper [--models pop,lstm,mfn4rec,...] [--budget EPOCHS]
        [--patience P] [--modalities image,text] [--config YAML] [--set section.key=value ...] --out OUT

Every model (default: every model of `mfn4rec_tf.registry`: `pop`, the paper's baselines and
SASRec, MFN4Rec and its three ablations) is trained by `training.run_training`, exactly as
`python -m mfn4rec_tf.fit` trains it, with one shared configuration (defaults < --config < --set <
the flags) in which only `model.variant` differs: the same data, protocol, modalities, budget
(`train.epochs`), patience, seed and selection on validation Recall@20, then the paper's retraining
step and one test evaluation. A model that needs a modality the data (or --modalities) lacks is
reported as `n/a` with the reason; a model whose run raises is reported as `failed` with the error,
the others still run, and the exit status is 1.

OUT holds::

    runs/<model>/    the model's run directory (see `mfn4rec_tf.training`)
    results.md       the test metrics in percent, like the paper's Tables 3-4, under a header that
                     says what was compared where (data, protocol, budget, date, machine, command)
    results.csv      the same as fractions, with each model's status
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

import yaml

from mfn4rec_tf import cli, registry, training
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
            `None` when the model is not applicable.
        not_applicable: why the model cannot run on this data, or None.
    """

    model: str
    config: RunConfig
    run_dir: Path
    action: str | None
    not_applicable: str | None = None


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
        valid, test: the run's `metrics.json` entries (fractions), or None.
        error: the traceback of a failed run.
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
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CompareError(f"--out {out} exists and is not a directory.")
    for override in args.set:
        if override.partition("=")[0].strip() == "model.variant":
            raise CompareError("--set model.variant: compare sets the variant of each run; choose them with --models.")
    base = cli.resolve(args, FLAGS, ["model.variant=mfn4rec"])
    dataset = training.open_data(base)
    base.modality_names(dataset)  # an unknown --modalities name is an error, not n/a for every model
    protocol = base.data.protocol
    splits = {mode: base.split(dataset, mode) for mode in ("validation", "test")}
    empty = [mode for mode, split in splits.items() if not len(split.user_ids)]
    if empty:
        raise CompareError(f"The {protocol} protocol leaves no user to evaluate on {dataset.name} "
                           f"({' and '.join(empty)} split).")

    entries = []
    for model in models:
        run_dir = out / RUNS_DIR / model
        try:
            config = cli.resolve(args, FLAGS, [f"model.variant={model}"])  # with the model's preset
            config.modality_names(dataset)
        except NotApplicable as reason:  # a modality the data lacks, or a setting the model cannot take
            config = base
            entries.append(Entry(model, config, run_dir, None, not_applicable=str(reason)))
            continue
        try:
            config.model_config(dataset)
        except ValueError as error:
            raise CompareError(f"Model {model!r} cannot be configured with these settings: {error} "
                               f"(change them, or leave {model} out of --models).") from None
        entries.append(Entry(model, config, run_dir, _existing_run(run_dir, config)))

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
        "patience": base.train.patience,
        "seed": base.train.seed,
        "retrain": base.retrain,
        "settings": _shared_settings(base),
    }
    return Plan(out, base, entries, summary)


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
        return Result(entry.model, "n/a", note=entry.not_applicable)
    run_dir = entry.run_dir
    spent = 0.0  # a resumed run's time in the sessions before, when an earlier comparison recorded it
    if (entry.action == "resume" and previous and previous.get("status") in ("failed", "not run")
            and previous.get("seconds") is not None):
        spent = float(previous["seconds"])
    if entry.action == "reuse":
        result = _read_run(entry.model, run_dir, "reused")
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
                      error=traceback.format_exc())
    except KeyboardInterrupt:
        seconds = time.perf_counter() - started + spent
        raise Interrupted(Result(entry.model, "not run", note="interrupted", run_dir=str(run_dir),
                                 seconds=seconds)) from None
    finally:
        import keras

        keras.backend.clear_session()  # each run builds its own graphs; free the last one's
    result = _read_run(entry.model, run_dir, "resumed" if entry.action == "resume" else "trained")
    result.seconds = time.perf_counter() - started + spent
    return result


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
                  valid=metrics.get("valid"), test=metrics.get("test"))


def describe(result: Result) -> str:
    """One line about a model's result, for the progress log."""
    if result.status == "ok":
        scores = "  ".join(f"{_title(key)} {100 * result.test[key]:.3f}%" for key in COLUMNS[:4]
                           if key in result.test)
        epoch = "" if result.selected_epoch is None else f"selected epoch {result.selected_epoch} of " \
                                                         f"{result.epochs_run}; "
        return f"{scores}  ({epoch}{_seconds(result.seconds)}{', ' + result.run if result.run != 'trained' else ''})"
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
    lines = [
        f"# Model comparison on {data['name']} ({summary['protocol']} protocol)",
        "",
        (f"- Dataset: {data['name']} (`{data['path'] or 'embedded demo'}`): {data['users']:,} users, "
         f"{data['items']:,} items, {data['interactions']:,} interactions; modalities: {modalities}"),
        (f"- Protocol: {summary['protocol']}. Test split: {splits['test']['users']:,} users evaluated "
         f"({splits['test']['targets']:,} targets); validation split: {splits['validation']['users']:,} users "
         f"({splits['validation']['targets']:,} targets). Feature modalities fed: {used} (to the models that "
         f"read features; bpr, lstm and sasrec read item IDs only, vbpr only `image`)"),
        (f"- Budget: up to {summary['budget']} epoch(s) per model, early stopping after {summary['patience']} "
         f"epoch(s) without a better validation Recall@20 (the selection metric), seed {summary['seed']}; "
         f"{retrain}; a model's own preset may differ (`pop` counts items in one epoch and is always retrained)"),
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
            cells.append(f"**{text}**" if value is not None and value == best.get(key) else text)
        cells.append("-" if result.selected_epoch is None else str(result.selected_epoch))
        cells.append("-" if result.epochs_run is None else str(result.epochs_run))
        cells.append("-" if result.seconds is None else f"{result.seconds:.0f}")
        cells.append(_cell(result.note))
        lines.append("| " + " | ".join(cells) + " |")
    failed = [r.model for r in results if r.status == "failed"]
    if failed:
        lines += ["", f"Failed: {', '.join(failed)} (the error is in the Note column; the traceback in {RECORD})."]
    return "\n".join(lines) + "\n"


def results_csv(results) -> str:
    """`results.csv`: one row per model, the metrics as fractions (as in each run's metrics.json)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "status", *COLUMNS, "selected_epoch", "epochs_run", "seconds", "run", "note", "run_dir"])
    for r in results:
        test = r.test or {}
        writer.writerow([r.model, r.status, *(test.get(key, "") if r.status == "ok" else "" for key in COLUMNS),
                         _blank(r.selected_epoch), _blank(r.epochs_run),
                         "" if r.seconds is None else round(r.seconds, 3), r.run or "", r.note, r.run_dir or ""])
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
    "--data", "--protocol", "--modalities", "--patience", "--loss", "--num-negatives", "--sampler",
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
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """The command line; returns the exit status (0 ok, 1 some model failed, 2 bad arguments, 130 interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    command = "python -m mfn4rec_tf.compare " + shlex.join(argv)
    try:
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

    results = {entry.model: Result(entry.model, "not run", note="not reached") for entry in plan.entries}
    started = time.perf_counter()
    interrupted = False
    total = len(plan.entries)
    for number, entry in enumerate(plan.entries, start=1):
        label = f"[{number}/{total}] {entry.model}"
        if entry.not_applicable is None:
            doing = {"train": "training", "restart": "training", "resume": "resuming the interrupted run",
                     "reuse": "reusing the finished run"}[entry.action]
            log.info("%s: %s ... (%s)", label, doing, entry.run_dir)
        try:
            result = run_entry(entry, progress=not args.quiet, previous=previous.get(entry.model))
        except Interrupted as stop:
            results[entry.model] = stop.result
            interrupted = True
            log.error("%s: interrupted after %s. Run the same command to continue (this run resumes from its last "
                      "checkpoint).", label, _seconds(stop.result.seconds))
            break
        results[entry.model] = result
        (log.error if result.status == "failed" else log.info)("%s: %s", label, describe(result))
        if result.error:
            log.error("%s", result.error.rstrip())
        # The record after every model: what finished survives a crash, with its training time.
        write_outputs(out, summary, list(results.values()), command, argv, plots=False)

    ordered = list(results.values())
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
