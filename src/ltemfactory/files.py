"""Atomic file writes: write a temporary file beside the target, then rename it over it.

Readers never see half a file, and a failed write leaves the previous file untouched. Zarr
stores (directories) have their own mechanism in :func:`ltemfactory.stores.atomic_store`.
JSON outputs go through :func:`write_json`, which also makes them standard JSON (no NaN).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ltemfactory.errors import InputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; rename it to ``path`` on success.

    The temporary name keeps the suffix of ``path`` (writers such as matplotlib and tifffile
    pick the format from it). Parent directories are created. On error the temporary file is
    removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(6)}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, synced to disk before the rename."""
    with atomic_path(path) as tmp, open(tmp, "xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` (``\\n`` line ends) to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types: NaN/±inf → None, numpy scalars/arrays → Python, tuples → lists,
    dataclasses → dicts, paths → str, mapping keys → str."""
    if obj is None or isinstance(obj, bool | str | int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in obj]
    raise InputError(f"write_json: cannot store a {type(obj).__name__} in JSON")


def write_json(path: str | Path, obj: Any) -> None:
    """``obj`` as indented UTF-8 JSON (see :func:`to_jsonable`; NaN becomes null)."""
    text = json.dumps(to_jsonable(obj), indent=2, allow_nan=False, ensure_ascii=False)
    write_text_atomic(path, text + "\n")
