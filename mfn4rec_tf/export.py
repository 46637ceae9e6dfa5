"""Export a trained run as a TensorFlow Serving model: `python -m mfn4rec_tf.export`.

    python -m mfn4rec_tf.export --run runs/mfn4rec-paper --name beauty [--base saved_models]
        [--version N] [--k 20] [--exclude-seen | --no-exclude-seen] [--xla] [--add-items DATASET_OR_PARQUET]

writes `<base>/<name>/<version>/`, the layout TensorFlow Serving (and our own server) reads::

    saved_model.pb, variables/      the served graph and its weights
    assets.extra/mfn4rec.json       what was exported: model, run, catalogue, k, metrics, ...
    assets.extra/tf_serving_warmup_requests   requests a server replays before serving

With `--xla` the model part of the graph is compiled by XLA, on inputs padded to bucketed shapes
(rows to a power of two; steps to 8, 16, 32, ... or `data.max_length`): on a CPU this removes the
per-op cost of the recurrent loops, several times faster per request (README, "Export and serve").
TensorFlow Serving runs such a model only with `--xla_cpu_compilation_enabled=true`; our server
needs nothing.

The served graph is self-contained, built from stock TensorFlow ops only (no `mfn4rec_tf`, no
`tensorflow_text` needed to load it): a client sends the RAW item ids of each user's history (the
dataset's original id strings, `Dataset.item_ids()`), oldest first, right-padded with `""` to equal
length, and gets the recommended raw item ids back. Baked in: the id -> item index lookup, every
feature and presence table the model reads, the popularity of each item in the run's training
data (test mode of its protocol), and the model in "last" output mode.

Per row: ids that are not in the catalogue (and `""`) are skipped, not fatal, and counted in
`unknown_ids` (`""` is not counted); the known ids keep their order and the last
`data.max_length` of them are fed to the model, as in training. A row with no known id at all
gets the most popular training items, with the popularity counts as scores. With `exclude_seen`,
every item of the row's known history (all of it, not only the last `max_length`) gets the score
-1e9 (`EXCLUDED_SCORE`) before the top-k, so it is recommended only if fewer than k other items
exist. The padding index 0 is never returned. Equal scores rank the lower item index first (what
`tf.math.top_k` does on CPU).

Signatures (input and output names are the contract; `K` is fixed at export time):

- `serving_default`: `history` string `(batch, length)` -> `item_ids` string `(batch, K)`,
  `scores` float32 `(batch, K)`, `unknown_ids` int32 `(batch,)`; `exclude_seen` as exported.
- `recommend`: `history`, `k` int32 scalar (capped to the catalogue size; < 1 is an invalid
  argument), `exclude_seen` bool scalar -> the same three outputs, `(batch, min(k, N))`.
- `user_representation`: `history` -> `user_representation` float32 `(batch, d)` (the model's
  `h_out` at the last known item; for a row with no known id, the model's output for an empty
  history), `unknown_ids` int32 `(batch,)`.

New items (`--add-items`): a run whose model scores items from their features
(`model.item_representation` `features`, `id+features` or `id+knn`, or the `feature-knn` model) can
be exported with items added after training, without retraining: their ids and feature vectors
(from a dataset directory of the pipelines, every item of which must be new, or a parquet file with
an `item_id` column and one list-of-floats column per modality the model reads) are appended to the
catalogue; the model is rebuilt over the longer catalogue with the trained weights, the new items
being unknown (scored from their features, by the item encoder or, `id+knn`, the calibrated
cold-start head; read in a history through their features and the learned unknown ID vector, or
with `id+knn` a zero ID vector). The
served model then recommends them and reads them in histories like any other item; their
popularity is 0. An `id` model cannot score an item it has no trained vector for, and is refused;
so are a missing modality, a feature width that differs from the run's, an empty id, and an id
that repeats or is already in the run's catalogue.

A version is written into a staging directory beside the versions (`.staging-<version>-<pid>-...`,
a name no server loads), checked by loading it back, and renamed into place in one step, so a
server never sees a half-written version and a failed or interrupted export leaves nothing. An
existing version is never overwritten.
"""

from __future__ import annotations

import argparse
import datetime
import errno
import json
import logging
import os
import re
import secrets
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

log = logging.getLogger("mfn4rec_tf.export")

EXCLUDED_SCORE = -1e9
"""The score an item of the user's history gets when `exclude_seen` is on."""
METADATA = Path("assets.extra") / "mfn4rec.json"
"""Where the export's description lands inside the version directory (TF Serving ignores it)."""
WARMUP = Path("assets.extra") / "tf_serving_warmup_requests"
"""TensorFlow Serving's warm-up file (TFRecord of `PredictionLog`s), replayed when a version loads."""
WARMUP_BATCH_SIZES = (1, 2, 4, 8)
"""The batch sizes of an XLA export's warm-up requests (with every length bucket); a larger batch
compiles its executables on first use."""
SIGNATURES = ("serving_default", "recommend", "user_representation")
STAGING_PREFIX = ".staging-"
_STAGING = re.compile(r"^\.staging-(\d+)-(\d+)-[0-9a-f]+$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_RENAME_ATTEMPTS = 100


class ExportError(ValueError):
    """An export cannot be made as asked (the message names the input and says why)."""


def export_run(run_dir, name, base="saved_models", version=None, k=20, exclude_seen=None, xla=False,
               add_items=None, id_inference_scale=None) -> Path:
    """Exports the final model of a training run as version `version` of model `name` under `base`.

    Everything is checked (run, name, version, k, data, model) before anything is written. See the
    module docstring for the served graph and its signatures.

    Args:
        run_dir: a finished run directory of `python -m mfn4rec_tf.fit` (`config.yaml`,
            `model.keras`), of any model of `mfn4rec_tf.registry`.
        name: the model name: letters, digits, `.`, `_` and `-`, not starting with `.` or `-`.
        base: the directory of served models. Default `"saved_models"`.
        version: the positive integer version to write. Default `None`: one more than the highest
            existing version (1 for a new model). An existing version is an error.
        k: the number of recommendations of the `serving_default` signature. Default 20; at most
            the catalogue size.
        exclude_seen: whether `serving_default` leaves out the items of the user's history.
            Default `None`: the run's `train.exclude_history`.
        xla: compile the served model with XLA (see `ServingGraph`): several times faster per
            request on a CPU, but TensorFlow Serving then needs `--xla_cpu_compilation_enabled=true`
            (our server needs nothing). Default `False`.
        add_items: a dataset directory or a `.parquet` file of new items to add to the served
            catalogue (see the module docstring); the run's model must have `item_representation`
            `features` or `id+features`. Default `None`: the run's catalogue as it is.
        id_inference_scale: for an `id+features` run, the weight of the items' ID part in the served
            scores, in [0, 1] (`model.id_inference_scale`; lower favours new items). Default `None`:
            the run's.

    Returns:
        The version directory written, `base/name/<version>`.

    Raises:
        ExportError: bad arguments, an unusable run, or a version that is taken.
        DatasetError: the run's dataset is missing or broken.
    """
    run_dir, base = Path(run_dir), Path(base)
    _check_name(name)
    if version is not None:
        version = _check_positive("version", version)
    k = _check_positive("k", k)
    if exclude_seen is not None and not isinstance(exclude_seen, bool):
        raise ExportError(f"`exclude_seen` must be True, False or None. Received: exclude_seen={exclude_seen!r}")
    config = _read_run(run_dir)
    if add_items is not None:
        from mfn4rec_tf import registry

        if config.model.item_representation == "id" and not registry.get(config.model.variant).scores_from_features:
            raise ExportError(f"--add-items: the model of {run_dir} has `model.item_representation: id`: it scores an "
                              "item only by the ID vector it learned, so it cannot score an item added after training. "
                              f"Give it a cold-start head (python -m mfn4rec_tf.cold_start --run {run_dir} --out "
                              "NEW_RUN, then export NEW_RUN), or train with `--set model.item_representation=id+knn` "
                              "(or id+features, features).")
        add_items = Path(add_items)
        if not add_items.exists():
            raise ExportError(f"--add-items: {add_items} does not exist (a dataset directory or a .parquet file).")
    metrics = _read_metrics(run_dir)
    target = base / name
    for path in (base, target):
        if path.exists() and not path.is_dir():
            raise ExportError(f"{path} exists and is not a directory.")
    if version is not None:
        _check_version_free(target, version)
    if exclude_seen is None:
        exclude_seen = bool(config.train.exclude_history)
    if id_inference_scale is not None:
        import dataclasses

        try:
            config = dataclasses.replace(config, model=dataclasses.replace(config.model,
                                                                           id_inference_scale=id_inference_scale))
        except ValueError as error:
            raise ExportError(f"--id-inference-scale: {error}") from None

    started = time.perf_counter()
    export = _prepare_export(run_dir, config, k, exclude_seen, bool(xla), add_items)
    log.info("Built the serving graph in %.1fs.", time.perf_counter() - started)
    metadata = {
        "model_name": name,
        "variant": config.model.variant,
        "run_dir": str(run_dir.resolve()),
        "dataset": export.dataset_info,
        "protocol": config.data.protocol,
        "num_items": export.num_items,
        "added_items": export.added_items,
        "cold_start": export.cold_start,
        "k": k,
        "exclude_seen": exclude_seen,
        "id_inference_scale": config.model.id_inference_scale,
        "xla": bool(xla),
        "max_length": config.data.max_length,
        "modalities": export.modalities,
        "signatures": export.signatures,
        "export_time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "package_version": _package_version(),
        "tensorflow_version": export.tensorflow_version,
        "metrics": metrics,
    }
    target.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    return _publish(export, target, version, metadata)


def next_version(model_dir) -> int:
    """One more than the highest integer-named entry of `model_dir` (1 if it has none)."""
    model_dir = Path(model_dir)
    versions = [int(p.name) for p in model_dir.iterdir() if p.name.isdecimal()] if model_dir.is_dir() else []
    return max(versions, default=0) + 1


def remove_stale_staging(model_dir) -> list:
    """Removes the staging directories of exports whose process no longer runs; returns them.

    A staging directory is named `.staging-<version>-<pid>-<random>`. One whose process is alive
    (possibly a concurrent export) is left alone. Process ids are those of this machine: do not run
    exporters on several machines into one shared directory.
    """
    removed = []
    for path in Path(model_dir).iterdir():
        match = _STAGING.match(path.name)
        if not match or not path.is_dir():
            continue
        pid = int(match.group(2))
        if pid == os.getpid() or _process_alive(pid):
            continue
        shutil.rmtree(path, ignore_errors=True)
        log.info("Removed %s, the staging directory of an export (pid %d) that did not finish.", path, pid)
        removed.append(path)
    return removed


def _process_alive(pid) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    except OverflowError:  # not a possible pid
        return False
    return True


def _check_name(name):
    if not isinstance(name, str) or not _NAME.fullmatch(name):  # fullmatch: `$` would let a final "\n" in
        raise ExportError(
            "The model name must be 1-128 letters, digits, '.', '_' or '-', not starting with '.' or '-' "
            f"(it is a directory name and a URL path part). Received: name={name!r}"
        )


def _check_positive(label, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ExportError(f"`{label}` must be a positive integer. Received: {label}={value!r}")
    return value


def _check_version_free(target, version):
    if (target / str(version)).exists():
        raise ExportError(f"Version {version} of model {target.name!r} already exists ({target / str(version)}); "
                          "a version is never overwritten: choose another --version, or leave it out to take "
                          f"the next free one ({next_version(target)}).")


def _read_run(run_dir):
    """The run's configuration, after checking that the run can be exported."""
    if not run_dir.is_dir():
        raise ExportError(f"Run directory {run_dir} does not exist (or is not a directory).")
    if not (run_dir / "config.yaml").is_file():
        raise ExportError(f"{run_dir} is not a run directory: it has no config.yaml.")
    from mfn4rec_tf.run_config import load_config  # imports TensorFlow: after the quick checks

    config = load_config(run_dir / "config.yaml")
    if not (run_dir / "model.keras").is_file():
        raise ExportError(f"{run_dir} has no model.keras: the run has not finished (resume it with "
                          f"python -m mfn4rec_tf.fit --out {run_dir} --resume).")
    return config


def _read_metrics(run_dir):
    file = run_dir / "metrics.json"
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as error:
        raise ExportError(f"{file} is not valid JSON: {error}") from None


def _package_version():
    from mfn4rec_tf._version import __version__

    return __version__


@dataclass
class _Export:
    """What `_prepare_export` built: the archive to write, its endpoints, and what describes them."""

    archive: object  # keras.export.ExportArchive
    graph: ServingGraph
    functions: dict  # signature name -> tf.function
    signatures: dict  # signature name -> `_describe` of it
    num_items: int
    modalities: list
    dataset_info: dict
    tensorflow_version: str
    sample: list  # raw-id histories the written model is checked on
    warmup: list  # raw-id history batches: the warm-up requests
    added_items: dict | None = None  # {"count", "source"} of --add-items
    cold_start: dict | None = None  # {"offset", "slope"} of an id+knn model's head


def _prepare_export(run_dir, config, k, exclude_seen, xla=False, add_items=None) -> _Export:
    """Loads the run's data and model and builds the `keras.export.ExportArchive` to write."""
    import keras
    import numpy as np
    import tensorflow as tf

    from mfn4rec_tf.model import load_model, with_output_mode
    from mfn4rec_tf.training import open_data

    dataset = open_data(config)
    names = config.modality_names(dataset)
    num_items = dataset.num_items
    new = None if add_items is None else read_new_items(add_items, dataset, names)
    if new is not None:
        num_items += len(new["ids"])
    if k > num_items:
        raise ExportError(f"`k` ({k}) is larger than the catalogue ({num_items} items).")
    item_ids = dataset.item_ids()
    if new is not None:
        item_ids = np.concatenate([item_ids, np.asarray(new["ids"], dtype=object)])
    if any(item_id == "" for item_id in item_ids[1:]):
        raise ExportError(f"Dataset {dataset.name!r} has an item whose id is the empty string, which the "
                          "served model reserves for padding.")
    log.info("Loading %s (%s, %d items, modalities %s)", run_dir / "model.keras", config.model.variant,
             num_items, list(names) or "none")
    try:
        model = load_model(run_dir / "model.keras")
        ranker = with_output_mode(model, "last")
    except Exception as error:  # Keras raises several types for an unreadable or foreign file
        raise ExportError(f"{run_dir / 'model.keras'} cannot be loaded as a model of this package: {error}") from None

    features = {name: dataset.features(name) for name in names}
    presence = {name: dataset.presence(name) for name in names if dataset.presence(name) is not None}
    if new is not None:
        features = {name: np.concatenate([np.asarray(table, np.float32), new["features"][name]])
                    for name, table in features.items()}
        presence = {name: np.concatenate([np.asarray(flags, bool), new["presence"][name]])
                    for name, flags in presence.items()}
    expected = {"item_ids", *features, *(name + "_present" for name in presence)}
    model_inputs = set(ranker.input) if isinstance(ranker.input, dict) else None
    if model_inputs != expected:
        raise ExportError(f"The model of {run_dir} takes the inputs {sorted(model_inputs or [])}, but its "
                          f"config.yaml on {dataset.name!r} gives {sorted(expected)}.")

    if config.model.id_inference_scale != 1.0:  # an export's choice, or the run's own
        from mfn4rec_tf.layers import set_id_inference_scale

        set_id_inference_scale(ranker, config.model.id_inference_scale)
    if new is not None:
        ranker = _grown_model(ranker, config, dataset, num_items, features, presence)
        log.info("Added %d new items from %s (scored from their features).", len(new["ids"]), add_items)
    sequences = config.split(dataset, "test").train_sequences
    events = np.concatenate(sequences) if sequences else np.zeros(0, np.int64)
    popularity = np.bincount(events, minlength=num_items + 1).astype(np.float32)
    log.info("Popularity from %d training events of the %s protocol (test mode).", len(events),
             config.data.protocol)

    graph = ServingGraph(ranker, item_ids, features, presence, popularity, config.data.max_length, k, exclude_seen,
                         xla=xla)
    archive = keras.export.ExportArchive()
    # The endpoints' own variables are saved; tracking the Keras model too would store every weight twice
    # (its Keras variables and the TensorFlow variables under them). The hash table must be tracked.
    archive.track(graph.lookup)
    history = tf.TensorSpec((None, None), tf.string, name="history")
    functions = {
        "serving_default": archive.add_endpoint("serving_default", graph.serving_default, [history]),
        "recommend": archive.add_endpoint(
            "recommend", graph.recommend,
            [history, tf.TensorSpec((), tf.int32, name="k"), tf.TensorSpec((), tf.bool, name="exclude_seen")],
        ),
        "user_representation": archive.add_endpoint("user_representation", graph.user_representation, [history]),
    }
    return _Export(
        archive=archive,
        graph=graph,
        functions=functions,
        signatures={key: _describe(fn) for key, fn in functions.items()},
        num_items=num_items,
        modalities=[{"name": name, "dim": int(features[name].shape[1]), "presence": name in presence}
                    for name in names],
        dataset_info={"name": dataset.name, "path": None if config.data.path is None else str(config.data.path)},
        tensorflow_version=tf.__version__,
        sample=_sample_histories(sequences, item_ids, None if new is None else new["ids"]),
        warmup=_warmup_histories(sequences, item_ids, graph.length_buckets if xla else [8],
                                 WARMUP_BATCH_SIZES if xla else [1]),
        added_items=None if new is None else {"count": len(new["ids"]), "source": str(Path(add_items).resolve())},
        cold_start=_cold_start_blend(ranker),
    )


def _cold_start_blend(model):
    """`{"offset", "slope"}` of an `id+knn` model's cold-start head (None, None: off), or None without one."""
    from mfn4rec_tf.heads import has_cold_start

    if not has_cold_start(model):
        return None
    offset, slope = model.get_layer("cold_start").blend()
    return {"offset": offset, "slope": slope}


def read_new_items(source, dataset, names) -> dict:
    """The new items of `--add-items`: `{"ids": [str], "features": {name: (M, dim) float32},
    "presence": {name: (M,) bool}}` for the modalities `names` the run's model reads.

    Args:
        source: a dataset directory (every item of its catalogue is new) or a `.parquet` file with an
            `item_id` column and, per modality, a column of that name holding each item's vector.
        dataset: the run's dataset (its catalogue and feature widths).
        names: the modalities the model reads.

    Raises:
        ExportError: a missing modality or column, a width that differs from the run's, no item, an
            empty id, an id that repeats or collides with the run's catalogue.
    """
    import numpy as np

    source = Path(source)
    widths = {name: dataset.modality(name).dim for name in names}
    if source.is_dir():
        from mfn4rec_tf.dataset import load_dataset

        added = load_dataset(source)
        ids = [str(i) for i in added.item_ids()[1:]]
        features, presence = {}, {}
        for name in names:
            if name not in added.modality_names:
                raise ExportError(f"--add-items: {source} has no modality {name!r}, which the model reads "
                                  f"(it has {list(added.modality_names)}).")
            features[name] = np.asarray(added.features(name)[1:], np.float32)
            flags = added.presence(name)
            presence[name] = (features[name] != 0).any(axis=1) if flags is None else np.asarray(flags[1:], bool)
    elif source.is_file() and source.suffix == ".parquet":
        import pandas as pd

        try:
            frame = pd.read_parquet(source)
        except Exception as error:  # pyarrow raises several types for a broken file
            raise ExportError(f"--add-items: {source} is not a readable parquet file: {error}") from None
        missing = [column for column in ("item_id", *names) if column not in frame.columns]
        if missing:
            raise ExportError(f"--add-items: {source} has no column {missing}; it needs item_id and one vector "
                              f"column per modality the model reads ({list(names)}). Columns: {list(frame.columns)}")
        ids = [str(i) for i in frame["item_id"]]
        features, presence = {}, {}
        for name in names:
            try:
                rows = [np.asarray(value, np.float32).reshape(-1) for value in frame[name]]
            except (TypeError, ValueError) as error:
                raise ExportError(f"--add-items: column {name!r} of {source} must hold vectors of numbers: "
                                  f"{error}") from None
            lengths = sorted({len(row) for row in rows})
            if len(lengths) > 1:
                raise ExportError(f"--add-items: the vectors of column {name!r} of {source} have several lengths "
                                  f"{lengths}; the model reads {widths[name]}.")
            features[name] = np.stack(rows) if rows else np.zeros((0, widths[name]), np.float32)
            presence[name] = (features[name] != 0).any(axis=1)
    else:
        raise ExportError(f"--add-items: {source} must be a dataset directory or a .parquet file.")
    if not ids:
        raise ExportError(f"--add-items: {source} holds no item.")
    for name in names:
        if features[name].shape[1] != widths[name]:
            raise ExportError(f"--add-items: the {name!r} features of {source} are {features[name].shape[1]}-d; "
                              f"the run's model reads {widths[name]}-d {name!r} features.")
        if not np.isfinite(features[name]).all():
            raise ExportError(f"--add-items: the {name!r} features of {source} hold NaN or infinite values.")
    if any(item_id == "" for item_id in ids):
        raise ExportError(f"--add-items: {source} has an item whose id is empty, which the served model reserves "
                          "for padding.")
    repeated = sorted({item_id for item_id in ids if ids.count(item_id) > 1}) if len(set(ids)) < len(ids) else []
    if repeated:
        raise ExportError(f"--add-items: {source} lists the id(s) {repeated[:5]} more than once.")
    taken = set(str(i) for i in dataset.item_ids()[1:]).intersection(ids)
    if taken:
        raise ExportError(f"--add-items: {len(taken)} id(s) of {source} are already in the run's catalogue "
                          f"{dataset.name!r}, e.g. {sorted(taken)[:5]}; add only new items.")
    return {"ids": ids, "features": features, "presence": presence}


def _grown_model(model, config, dataset, num_items, features, presence):
    """`model` (a features or `id+knn` model, "last" mode) rebuilt over a catalogue of `num_items` items
    with the extended `features` and `presence` tables: every layer keeps its trained weights; the item
    layers copy theirs in with `grow_from` (which leaves the added items unknown) or `_padded`."""
    import dataclasses

    from mfn4rec_tf.model import build_model

    model_config = dataclasses.replace(config.model_config(dataset), num_items=num_items)
    tables = {**features, **{name + "_present": flags for name, flags in presence.items()}}
    grown = build_model(model_config, "last", item_features=tables)
    trained = {layer.name: layer for layer in model.layers}
    for layer in grown.layers:
        if not layer.weights:
            continue
        old = trained.get(layer.name)
        if old is None:
            raise ExportError(f"The run's model has no layer {layer.name!r} to copy into the model with new items.")
        if hasattr(layer, "grow_from"):
            layer.grow_from(old)
        else:
            layer.set_weights([_padded(value, tuple(w.shape)) for value, w in zip(old.get_weights(), layer.weights)])
    return grown


def _padded(value, shape):
    """A trained weight placed at the start of a zero array of `shape`: an `id+knn` model's item tables
    (ID embedding, Eq. 11's vectors and biases) grown by the added items, which get zeros there (the
    cold-start head scores them; in a history they read a zero ID vector besides their features)."""
    import numpy as np

    if value.shape == shape:
        return value
    if len(shape) != value.ndim or any(new < old for new, old in zip(shape, value.shape)):
        raise ExportError(f"Cannot grow a weight of shape {value.shape} to {shape}.")
    out = np.zeros(shape, value.dtype)
    out[tuple(slice(0, n) for n in value.shape)] = value
    return out


class ServingGraph:
    """The served computation over raw item-id strings (see the module docstring).

    Holds, as TensorFlow state that a SavedModel keeps: the id -> index hash table, the id of each
    index, each feature table and presence table the model reads, and the popularity counts.

    Args:
        model: a Keras model in "last" output mode (`with_output_mode(model, "last")`).
        item_ids: the raw id of each item index, `item_ids[0] == ""` (padding).
        features: `{modality: (N + 1, dim) array}` for every modality the model reads.
        presence: `{modality: (N + 1,) bool array}` for those with a presence input.
        popularity: float32 `(N + 1,)` training counts per item.
        max_length: the longest history fed to the model (the most recent known items are kept).
        k: the number of recommendations of `serving_default`.
        exclude_seen: whether `serving_default` leaves out the history's items.
        xla: compile the model with XLA (`tf.function(jit_compile=True)`), on inputs padded to a
            bucketed shape: rows to a power of two, steps to one of `length_buckets(max_length)`, so
            a handful of executables serve every request (each compiled on its first use; the
            export's warm-up requests compile those of 1, 2, 4 and 8 rows when a server loads the version).
    """

    def __init__(self, model, item_ids, features, presence, popularity, max_length, k, exclude_seen, xla=False):
        import numpy as np
        import tensorflow as tf

        self.model = model
        self.xla = bool(xla)
        self.length_buckets = length_buckets(max_length)
        # One function for every signature, so its XLA executables (one per bucketed shape) are shared.
        self._outputs = tf.function(self._model_outputs, jit_compile=self.xla)
        self.num_items = len(item_ids) - 1
        self.max_length = int(max_length)
        self.k = int(k)
        self.exclude_seen = bool(exclude_seen)
        self.lookup = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant([str(i) for i in item_ids[1:]], tf.string),
                tf.range(1, self.num_items + 1, dtype=tf.int64),
            ),
            default_value=0,  # unknown ids and "" map to the padding index
            name="item_index_lookup",
        )
        self.vocabulary = tf.Variable([str(i) for i in item_ids], trainable=False, dtype=tf.string,
                                      name="item_vocabulary")
        self.features = {name: tf.Variable(np.asarray(table, np.float32), trainable=False, name=f"{name}_features")
                         for name, table in features.items()}
        self.presence = {name: tf.Variable(np.asarray(flags, np.float32), trainable=False, name=f"{name}_presence")
                         for name, flags in presence.items()}
        self.popularity = tf.Variable(np.asarray(popularity, np.float32), trainable=False, name="popularity")

    def serving_default(self, history):
        """`recommend` with the export's `k` and `exclude_seen`, so `K` is static."""
        return self._rank(history, self.k, self.exclude_seen)

    def recommend(self, history, k, exclude_seen):
        """The top `min(k, N)` items per row; `exclude_seen` as the caller says."""
        import tensorflow as tf

        check = tf.debugging.assert_positive(k, message="`k` must be a positive integer")
        with tf.control_dependencies([check]):
            k = tf.minimum(k, self.num_items)
        return self._rank(history, k, exclude_seen)

    def user_representation(self, history):
        """The model's `h_out` at each row's last known item."""
        import tensorflow as tf

        _, unknown, outputs = self._run_model(history)
        return {"user_representation": tf.cast(outputs["user_representation"], tf.float32), "unknown_ids": unknown}

    def _rank(self, history, k, exclude_seen):
        import tensorflow as tf

        seen, unknown, outputs = self._run_model(history)
        logits = tf.cast(outputs["logits"], tf.float32)  # (B, N + 1)
        has_history = seen.row_lengths() > 0  # (B,)
        scores = tf.where(has_history[:, None], logits, self.popularity[None, :])  # (B, N + 1)
        if exclude_seen is not False:  # True, or a tensor decided at call time
            positions = tf.stack([seen.value_rowids(), tf.cast(seen.flat_values, tf.int64)], axis=1)  # (H, 2)
            floor = tf.fill(tf.shape(positions)[:1], tf.constant(EXCLUDED_SCORE, tf.float32))
            if exclude_seen is not True:
                floor = tf.where(exclude_seen, floor, tf.gather_nd(scores, positions))
            scores = tf.tensor_scatter_nd_update(scores, positions, floor)
        values, indices = tf.math.top_k(scores[:, 1:], k=k)  # (B, k): index 0 is never a candidate
        return {"item_ids": tf.gather(self.vocabulary, indices + 1), "scores": values, "unknown_ids": unknown}

    def _run_model(self, history):
        """Returns the known item indices (ragged, `(B, (n))`), the unknown counts and the model outputs."""
        import tensorflow as tf

        index = tf.cast(self.lookup.lookup(history), tf.int32)  # (B, L), 0 = unknown or ""
        known = index > 0
        unknown = tf.reduce_sum(tf.cast(tf.logical_and(tf.not_equal(history, ""), tf.logical_not(known)), tf.int32),
                                axis=1)  # (B,)
        seen = tf.ragged.boolean_mask(index, known)  # (B, (n)) known ids, in order
        ids = seen[:, -self.max_length:].to_tensor(default_value=0)  # (B, T), right-padded
        rows, steps = tf.shape(ids)[0], tf.shape(ids)[1]
        if self.xla:  # pad to a bucketed shape; padded rows are cut from the outputs, padded steps are masked
            buckets = tf.constant(self.length_buckets, tf.int32)
            target_steps = tf.gather(buckets, tf.searchsorted(buckets, tf.reshape(tf.maximum(steps, 1), [1]))[0])
            target_rows = _next_power_of_two(rows)
            ids = tf.pad(ids, [[0, target_rows - rows], [0, target_steps - steps]])
        else:
            ids = tf.pad(ids, [[0, 0], [0, tf.maximum(1 - steps, 0)]])  # at least one step
        outputs = self._outputs(ids)
        return seen, unknown, {key: value[:rows] for key, value in outputs.items()}

    def _model_outputs(self, ids):
        """The model's "last" outputs for item indices `ids` (B, T), features gathered from the tables."""
        import tensorflow as tf

        inputs = {"item_ids": ids}
        for name, table in self.features.items():
            inputs[name] = tf.gather(table, ids)  # (B, T, dim)
        for name, flags in self.presence.items():
            inputs[name + "_present"] = tf.gather(flags, ids)  # (B, T)
        return self.model(inputs, training=False)


def length_buckets(max_length) -> list:
    """The history lengths an XLA export pads to: 8, 16, 32, ... below `max_length`, then `max_length`."""
    buckets, length = [], 8
    while length < max_length:
        buckets.append(length)
        length *= 2
    return [*buckets, int(max_length)]


def _next_power_of_two(n):
    """The smallest power of two >= n (n >= 1, an int32 scalar tensor), computed exactly on integers."""
    import tensorflow as tf

    powers = tf.constant([2 ** i for i in range(31)], tf.int32)
    return tf.gather(powers, tf.searchsorted(powers, tf.reshape(n, [1]))[0])


def _describe(fn) -> dict:
    """`{"inputs": {name: "dtype [shape]"}, "outputs": {...}}` of an endpoint's concrete function."""
    concrete = fn.get_concrete_function()
    specs = concrete.structured_input_signature[0]

    def text(x):
        dims = ", ".join("None" if d is None else str(d) for d in x.shape.as_list())
        return f"{x.dtype.name} [{dims}]"

    return {"inputs": {spec.name: text(spec) for spec in specs},
            "outputs": {key: text(value) for key, value in concrete.structured_outputs.items()}}


def _sample_histories(sequences, item_ids, added=None):
    """A few raw-id histories to check the written model with: real ones, an unknown id, an empty row
    (and, with added items, a row of them)."""
    rows = [[str(item_ids[i]) for i in seq[-8:]] for seq in sequences[:4]]
    rows += [["\x00not-an-item"], []]
    if added:
        rows.append([str(i) for i in added[:8]])
    width = max(len(row) for row in rows)
    return [row + [""] * (width - len(row)) for row in rows]


def _warmup_histories(sequences, item_ids, lengths, batch_sizes):
    """A batch of histories of real ids (the training sequences repeated) for each batch size in
    `batch_sizes` and length in `lengths`."""
    events = [str(item_ids[i]) for seq in sequences[:64] for i in seq] or [str(item_ids[1])]
    row = lambda length: (events * (length // len(events) + 1))[:length]  # noqa: E731
    return [[row(length)] * rows for rows in batch_sizes for length in lengths]


def _write_warmup(export, path):
    """Writes TensorFlow Serving's warm-up file: one `PredictionLog` per batch of `export.warmup`
    for `serving_default`, replayed by a server before it serves the version (ours and TF Serving
    both), so a version is never slow on its first requests (with XLA: its compilations)."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for history in export.warmup:
            request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(signature_name="serving_default"))
            request.inputs["history"].CopyFrom(tf.make_tensor_proto(history, tf.string))
            log_record = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log_record.SerializeToString())


def _write(export, staging, metadata):
    """Writes the SavedModel and its metadata into `staging`, then checks it by loading it back."""
    import numpy as np
    import tensorflow as tf

    started = time.perf_counter()
    export.archive.write_out(str(staging), verbose=False)
    (staging / METADATA).parent.mkdir(parents=True, exist_ok=True)
    (staging / METADATA).write_text(json.dumps(metadata, indent=2) + "\n")
    _write_warmup(export, staging / WARMUP)
    log.info("Wrote the SavedModel in %.1fs; checking it.", time.perf_counter() - started)

    started = time.perf_counter()
    history = tf.constant(export.sample, tf.string)
    loaded = tf.saved_model.load(str(staging))
    expected = export.functions["serving_default"](history)
    got = loaded.signatures["serving_default"](history=history)
    if sorted(loaded.signatures) != sorted(SIGNATURES) or not (
        np.array_equal(got["item_ids"].numpy(), expected["item_ids"].numpy())
        and np.allclose(got["scores"].numpy(), expected["scores"].numpy(), rtol=1e-5, atol=1e-5)
    ):
        raise ExportError("The written SavedModel does not reproduce the model it was made from; nothing was "
                          "published.")
    log.info("Loaded it back and checked it in %.1fs.", time.perf_counter() - started)


def _publish(export, target, version, metadata) -> Path:
    """Writes a version into a staging directory and renames it into place (see the module docstring)."""
    chosen = version if version is not None else next_version(target)
    staging = target / f"{STAGING_PREFIX}{chosen}-{os.getpid()}-{secrets.token_hex(4)}"
    import tensorflow as tf

    try:
        staging.mkdir()
        try:
            _write(export, staging, metadata)
        except (OSError, tf.errors.OpError) as error:  # e.g. a full disk: TensorFlow's writer raises its own
            reason = error.message if isinstance(error, tf.errors.OpError) else (error.strerror or str(error))
            raise ExportError(f"Writing version {chosen} of model {target.name!r} failed: "
                              f"{' '.join(str(reason).split())}. Nothing was published (the staging copy is "
                              f"removed).") from None
        for _ in range(_RENAME_ATTEMPTS):
            final = target / str(chosen)
            if not final.exists():
                try:  # atomic; fails if another export published this version since the check above
                    os.rename(staging, final)
                    log.info("Published %s", final)
                    return final
                except OSError as error:
                    if error.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                        raise
            if version is not None:
                raise ExportError(f"Version {chosen} of model {target.name!r} was written by another export while "
                                  f"this one ran ({final}); it is never overwritten. Nothing was published.")
            taken, chosen = chosen, max(next_version(target), chosen + 1)
            log.warning("Version %d was taken by another export meanwhile; publishing as version %d.", taken, chosen)
        raise ExportError(f"No free version found under {target} after {_RENAME_ATTEMPTS} attempts.")
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m mfn4rec_tf.export",
        description="Export the final model of a training run as a TensorFlow Serving SavedModel that takes raw "
                    "item ids: BASE/NAME/VERSION/ (saved_model.pb, variables/, assets.extra/mfn4rec.json).",
    )
    parser.add_argument("--run", required=True, help="run directory written by python -m mfn4rec_tf.fit")
    parser.add_argument("--name", required=True, help="model name (a directory under --base; letters, digits, . _ -)")
    parser.add_argument("--base", default="saved_models", help="directory of served models (default: saved_models)")
    parser.add_argument("--version", type=int, help="integer version to write (default: the highest existing + 1, "
                                                    "1 for a new model); an existing version is an error")
    parser.add_argument("--k", type=int, default=20, help="recommendations per user of serving_default (default: 20)")
    parser.add_argument("--xla", action=argparse.BooleanOptionalAction, default=False,
                        help="compile the served model with XLA: several times faster per request on a CPU; "
                             "TensorFlow Serving then needs --xla_cpu_compilation_enabled=true (default: off)")
    parser.add_argument("--add-items", metavar="DATASET_OR_PARQUET",
                        help="serve items added after training, scored from their features: a dataset directory "
                             "(all its items new) or a .parquet file (item_id + one vector column per modality); "
                             "the run's model.item_representation must be features, id+features or id+knn "
                             "(or the model feature-knn)")
    parser.add_argument("--id-inference-scale", type=float, metavar="S",
                        help="id+features runs: weigh the items' ID part by S in [0, 1] in the served scores; "
                             "lower favours new items (default: the run's model.id_inference_scale)")
    parser.add_argument("--exclude-seen", action=argparse.BooleanOptionalAction, default=None,
                        help="serving_default never recommends items of the user's history "
                             "(default: the run's train.exclude_history)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from mfn4rec_tf import cli

    started = time.perf_counter()
    try:
        path = export_run(args.run, args.name, base=args.base, version=args.version, k=args.k,
                          exclude_seen=args.exclude_seen, xla=args.xla, add_items=args.add_items,
                          id_inference_scale=args.id_inference_scale)
    except (*cli.USER_ERRORS, OSError) as error:
        # ExportError, DatasetError are ValueErrors; OSError: --base unwritable
        return cli.fail(error)
    except KeyboardInterrupt:
        print("error: interrupted; no version was published", file=sys.stderr)
        return 130
    metadata = json.loads((path / METADATA).read_text())
    print(f"\nExported {metadata['variant']} ({args.run}) in {time.perf_counter() - started:.0f}s to {path}/")
    print(f"serving_default: k={metadata['k']}, exclude_seen={str(metadata['exclude_seen']).lower()}, "
          f"xla={str(metadata['xla']).lower()}, "
          f"{metadata['num_items']} items{_added(metadata)}, histories cut to the last {metadata['max_length']} "
          "known items")
    for key, signature in metadata["signatures"].items():
        inputs = ", ".join(f"{name}: {spec}" for name, spec in signature["inputs"].items())
        outputs = ", ".join(f"{name}: {spec}" for name, spec in signature["outputs"].items())
        print(f"  {key}({inputs})\n      -> {outputs}")
    return 0


def _added(metadata):
    added = metadata.get("added_items")
    return "" if not added else f" ({added['count']} added from {added['source']})"


if __name__ == "__main__":
    sys.exit(main())

