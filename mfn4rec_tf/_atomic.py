"""Atomic writes of small files: a temporary name in the same folder, then a rename, so a reader (or a
run killed at any moment) sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
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
