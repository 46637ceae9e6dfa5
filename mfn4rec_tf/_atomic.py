"""Atomic writes of small files: a temporary name in the same folder, then a rename, so a reader (or a
run killed at any moment) sees the old file or the new one, never half of one."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path


def write_text(path, text: str) -> Path:
    """Writes `text` to `path` atomically (temp file beside it, then `os.replace`)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_model(model, path) -> Path:
    """`model.save(path)` (a `.keras` file) atomically; creates the folder if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.keras")  # Keras wants the .keras suffix
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
