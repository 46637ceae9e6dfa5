"""The dataset directory: the one contract between `pipelines/` and the model.

Layout::

    <dataset>/
      manifest.json                  name, sources, counts, modalities, filters, skipped input
      items.parquet                  item_index int32 (1..N; 0 is padding), item_id string, text columns
      interactions.parquet           user_id string, item_index int32, timestamp int64 (seconds),
                                     sorted by user then time (ties keep input order)
      features/<modality>.npy        float32 [N + 1, dim], row 0 zeros (row i = item_index i)
      features/<modality>.present.npy  bool [N + 1], only when some items lack the modality

Pipelines write one with `write_dataset` (atomically: a crash never leaves a half-written
directory under the final name); everything downstream opens it with `load_dataset`, which checks
the contract and memory-maps the feature matrices, so a matrix larger than RAM works.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mfn4rec_tf._version import __version__
from mfn4rec_tf.config import ModalityConfig

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ITEMS = "items.parquet"
INTERACTIONS = "interactions.parquet"
FEATURES = "features"

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A dataset directory (or what is about to be written as one) breaks the contract."""


@dataclass
class FeatureTable:
    """One modality's item features, ready to write.

    Attributes:
        values: float32-convertible array [N + 1, dim] (a memmap is fine); row 0 is padding.
        present: bool [N + 1] (row 0 False), or None when every item has the modality.
        how: one line on how the features were made (kept in the manifest).
        details: anything else worth keeping in the manifest (counts of OOV words, unreadable images...).
    """

    values: np.ndarray
    present: np.ndarray | None = None
    how: str = ""
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ModalityInfo:
    """A modality as the manifest records it."""

    name: str
    dim: int
    file: str
    presence_file: str | None
    items_with: int
    how: str


def write_dataset(
    path,
    *,
    name,
    items: pd.DataFrame,
    interactions: pd.DataFrame,
    features: dict[str, FeatureTable] | None = None,
    sources: list | None = None,
    filters: list | None = None,
    skipped: dict | None = None,
    extra: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Checks the tables and writes a dataset directory at `path`, atomically.

    Args:
        path: target directory.
        name: dataset name for the manifest.
        items: item_index (1..N, each once), item_id, and any text columns.
        interactions: user_id, item_index, timestamp.
        features: modality name -> `FeatureTable`.
        sources: what the data was made from (file paths, with roles), for the manifest.
        filters: the filters applied, each a dict (name, parameters, rows/users/items removed).
        skipped: counts of input skipped, by reason.
        extra: any more manifest entries.
        overwrite: replace an existing dataset at `path`; otherwise an existing path is an error.

    Returns:
        The dataset directory's path.
    """
    path = Path(path)
    features = dict(features or {})
    items, interactions = _checked_tables(items, interactions)
    num_items = len(items)
    for modality, table in features.items():
        ModalityConfig(modality, 1)  # the modality name must be a valid model input name
        _check_feature_table(modality, table, num_items)
    if path.exists() and not overwrite:
        raise DatasetError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it.")

    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        items.to_parquet(staging / ITEMS, index=False)
        interactions.to_parquet(staging / INTERACTIONS, index=False)
        (staging / FEATURES).mkdir()
        modalities = {}
        for modality, table in features.items():
            file = f"{FEATURES}/{modality}.npy"
            _save_npy(staging / file, table.values, np.float32)
            presence_file = None
            items_with = num_items
            if table.present is not None and not bool(np.all(table.present[1:])):
                presence_file = f"{FEATURES}/{modality}.present.npy"
                present = np.asarray(table.present, dtype=bool).copy()
                present[0] = False
                np.save(staging / presence_file, present)
                items_with = int(present.sum())
            modalities[modality] = {
                "file": file,
                "dim": int(table.values.shape[1]),
                "presence_file": presence_file,
                "items_with": items_with,
                "how": table.how,
                **({"details": table.details} if table.details else {}),
            }
        manifest = {
            "format_version": FORMAT_VERSION,
            "name": name,
            "created_by": f"mfn4rec_tf {__version__}",
            "sources": list(sources or []),
            "counts": {
                "users": int(interactions["user_id"].nunique()),
                "items": num_items,
                "interactions": len(interactions),
            },
            "modalities": modalities,
            "filters": list(filters or []),
            "skipped": dict(skipped or {}),
            **(extra or {}),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, default=_json_default) + "\n")
        _replace_directory(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("Wrote dataset %r to %s: %s", name, path, manifest["counts"])
    return path


class Dataset:
    """An opened dataset directory. Feature matrices are memory-mapped (read-only)."""

    def __init__(self, path, manifest, items, interactions):
        self.path = Path(path)
        self.manifest = manifest
        self.items = items
        self.interactions = interactions
        self.name = manifest["name"]
        self.modalities = tuple(
            ModalityInfo(
                name=name,
                dim=int(info["dim"]),
                file=info["file"],
                presence_file=info.get("presence_file"),
                items_with=int(info.get("items_with", len(items))),
                how=info.get("how", ""),
            )
            for name, info in manifest["modalities"].items()
        )
        self._features = {}
        self._presence = {}

    @property
    def num_items(self) -> int:
        """N: item indices are 1..N."""
        return len(self.items)

    @property
    def num_users(self) -> int:
        return int(self.manifest["counts"]["users"])

    @property
    def modality_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modalities)

    def modality(self, name) -> ModalityInfo:
        for info in self.modalities:
            if info.name == name:
                return info
        raise KeyError(f"Dataset {self.name!r} has no modality {name!r}; it has {list(self.modality_names)}")

    def features(self, name) -> np.ndarray:
        """float32 [N + 1, dim] memory-mapped feature matrix of modality `name`."""
        if name not in self._features:
            info = self.modality(name)
            self._features[name] = np.load(self.path / info.file, mmap_mode="r")
        return self._features[name]

    def presence(self, name) -> np.ndarray | None:
        """bool [N + 1] presence of modality `name` per item, or None if every item has it."""
        info = self.modality(name)
        if info.presence_file is None:
            return None
        if name not in self._presence:
            self._presence[name] = np.load(self.path / info.presence_file)
        return self._presence[name]

    def item_ids(self) -> np.ndarray:
        """Original item ids by item index (object array, index 0 -> "")."""
        ids = np.empty(self.num_items + 1, dtype=object)
        ids[0] = ""
        ids[self.items["item_index"].to_numpy()] = self.items["item_id"].to_numpy()
        return ids

    def modality_configs(self, hidden_units=20, names=None) -> tuple[ModalityConfig, ...]:
        """`ModalityConfig`s for the model (presence inputs where some items lack the modality)."""
        chosen = self.modality_names if names is None else names
        return tuple(
            ModalityConfig(m.name, m.dim, hidden_units, presence=m.presence_file is not None)
            for m in map(self.modality, chosen)
        )

    def __repr__(self):
        counts = self.manifest["counts"]
        return (
            f"Dataset({self.name!r}, users={counts['users']}, items={counts['items']}, "
            f"interactions={counts['interactions']}, modalities={list(self.modality_names)})"
        )


def load_dataset(path, verify_features: bool = False) -> Dataset:
    """Opens and checks a dataset directory.

    Args:
        path: the directory `write_dataset` (or a pipeline) made.
        verify_features: also scan every feature matrix for NaN/inf and a non-zero padding row
            (reads the whole matrix; the shapes and dtypes are always checked).

    Raises:
        DatasetError: naming the file and what is wrong.
    """
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"Dataset directory {path} does not exist (or is not a directory).")
    manifest_path = path / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path} is not a dataset directory: {MANIFEST} is missing.") from None
    except json.JSONDecodeError as error:
        raise DatasetError(f"{manifest_path} is not valid JSON: {error}") from None
    for key in ("format_version", "name", "counts", "modalities"):
        if key not in manifest:
            raise DatasetError(f"{manifest_path} has no {key!r} entry.")
    if manifest["format_version"] != FORMAT_VERSION:
        raise DatasetError(
            f"{manifest_path} has format_version {manifest['format_version']}; this version of mfn4rec_tf "
            f"reads {FORMAT_VERSION}."
        )
    items = _read_parquet(path / ITEMS)
    interactions = _read_parquet(path / INTERACTIONS)
    try:
        items, interactions = _checked_tables(items, interactions)
    except DatasetError as error:
        raise DatasetError(f"{path}: {error}") from None
    dataset = Dataset(path, manifest, items, interactions)
    for info in dataset.modalities:
        file = path / info.file
        if not file.is_file():
            raise DatasetError(f"{file} is missing (modality {info.name!r} of {manifest_path}).")
        matrix = dataset.features(info.name)
        if matrix.dtype != np.float32 or matrix.shape != (dataset.num_items + 1, info.dim):
            raise DatasetError(
                f"{file} must be float32 [{dataset.num_items + 1}, {info.dim}]; "
                f"found {matrix.dtype} {list(matrix.shape)}."
            )
        if info.presence_file is not None:
            present = dataset.presence(info.name)
            if present.shape != (dataset.num_items + 1,):
                raise DatasetError(f"{path / info.presence_file} must have {dataset.num_items + 1} entries.")
        if verify_features:
            _check_feature_table(info.name, FeatureTable(matrix, dataset.presence(info.name)), dataset.num_items)
    return dataset


def _checked_tables(items, interactions):
    for column in ("item_index", "item_id"):
        if column not in items.columns:
            raise DatasetError(f"items table has no {column!r} column (columns: {list(items.columns)}).")
    for column in ("user_id", "item_index", "timestamp"):
        if column not in interactions.columns:
            raise DatasetError(f"interactions table has no {column!r} column (columns: {list(interactions.columns)}).")
    if len(items) == 0 or len(interactions) == 0:
        raise DatasetError(
            f"the dataset is empty ({len(items)} items, {len(interactions)} interactions); "
            "check the input files and the filters."
        )
    items = items.sort_values("item_index", kind="stable").reset_index(drop=True)
    index = items["item_index"].to_numpy()
    if not np.array_equal(index, np.arange(1, len(items) + 1)):
        raise DatasetError("items.item_index must be exactly 1..N, each once (0 is reserved for padding).")
    if items["item_id"].isna().any() or items["item_id"].duplicated().any():
        raise DatasetError("items.item_id must be unique and not missing.")
    used = interactions["item_index"].to_numpy()
    if used.min() < 1 or used.max() > len(items):
        raise DatasetError(f"interactions.item_index must be in 1..{len(items)}; found {used.min()}..{used.max()}.")
    if interactions["user_id"].isna().any() or interactions["timestamp"].isna().any():
        raise DatasetError("interactions.user_id and interactions.timestamp must not be missing.")
    items = items.astype({"item_index": "int32", "item_id": "string"})
    interactions = interactions.astype({"user_id": "string", "item_index": "int32", "timestamp": "int64"})
    interactions = interactions.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    return items, interactions


def _check_feature_table(name, table, num_items):
    values = table.values
    if values.ndim != 2 or values.shape[0] != num_items + 1:
        raise DatasetError(
            f"features of modality {name!r} must have shape [{num_items + 1}, dim] (row 0 = padding); "
            f"got {list(values.shape)}."
        )
    if table.present is not None and np.shape(table.present) != (num_items + 1,):
        raise DatasetError(
            f"presence of modality {name!r} must have {num_items + 1} entries; got {np.shape(table.present)}."
        )
    for start in range(0, values.shape[0], 65536):  # chunked, so a memmap is not read into RAM at once
        chunk = np.asarray(values[start:start + 65536], dtype=np.float32)
        bad = ~np.isfinite(chunk).all(axis=1)
        if bad.any():
            row = start + int(np.argmax(bad))
            raise DatasetError(
                f"features of modality {name!r} have NaN/inf values (first at item_index {row}); "
                "mark such items absent instead."
            )
        if start == 0 and np.any(chunk[0] != 0):
            raise DatasetError(f"features of modality {name!r}: row 0 (padding) must be zeros.")


def _save_npy(file, values, dtype):
    out = np.lib.format.open_memmap(file, mode="w+", dtype=dtype, shape=values.shape)
    for start in range(0, values.shape[0], 65536):
        out[start:start + 65536] = values[start:start + 65536]
    out.flush()
    del out


def _read_parquet(file):
    if not file.is_file():
        raise DatasetError(f"{file} is missing.")
    try:
        return pd.read_parquet(file)
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise DatasetError(f"{file} cannot be read as parquet: {error}") from None


def _replace_directory(staging, path):
    """Moves `staging` to `path`; an existing `path` is swapped out first and removed after."""
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
    os.replace(staging, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    raise TypeError(f"Cannot write {type(value).__name__} to the manifest")
