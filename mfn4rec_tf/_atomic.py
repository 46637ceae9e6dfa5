"""Atomic writes of small files: a temporary name in the same folder, then a rename, so a reader (or a
run killed at any moment) sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
from pathlib import Path


@contextlib.contextmanager
def _replacing(path: Path, suffix: str = ".tmp"):
    """Yields a temporary path beside `path` (`.<name>.<pid><suffix>`); when the block ends without an
    error, it replaces `path` (`os.replace`: atomic); the temporary file never outlives the block."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path, text: str) -> Path:
    """Writes `text` to `path` atomically (temp file beside it, then `os.replace`)."""
    path = Path(path)
    with _replacing(path) as tmp:
        tmp.write_text(text)
    return path


def write_json(path, data) -> Path:
    """`data` as indented JSON (values JSON does not know written with `str`), atomically."""
    return write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def write_csv(path, rows) -> Path:
    """`rows` (lists of cells) as CSV, atomically."""
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return write_text(path, buffer.getvalue())


def copy_file(source, path) -> Path:
    """Copies `source` to `path` atomically (a copy beside `path`, then `os.replace`)."""
    path = Path(path)
    with _replacing(path) as tmp:
        shutil.copyfile(source, tmp)
    return path


def save_model(model, path) -> Path:
    """`model.save(path)` (a `.keras` file) atomically; creates the folder if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _replacing(path, ".tmp.keras") as tmp:  # Keras wants the .keras suffix
        model.save(tmp)
    return path


def write_npz(path, **arrays) -> Path:
    """`np.savez(path, **arrays)` atomically (`path` keeps its own name; no `.npz` is appended)."""
    import numpy as np

    path = Path(path)
    with _replacing(path) as tmp:
        with open(tmp, "wb") as file:
            np.savez(file, **arrays)
    return path
