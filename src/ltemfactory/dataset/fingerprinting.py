"""Content fingerprint of a dataset store: SHA-256 over the data of every array."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ltemfactory.dataset.layout import _array_paths, _is_str, _open_plain

_FINGERPRINT_TAG = b"ltemfactory-dataset-fingerprint-v1\n"


def _axis0_step(arr: zarr.Array) -> int:
    return max(1, int((arr.shards or arr.chunks)[0]))


def _hash_header(h: Any, name: str, arr: zarr.Array) -> None:
    dtype = "str" if _is_str(arr.dtype) else np.dtype(arr.dtype).newbyteorder("<").str
    h.update(json.dumps([name, list(arr.shape), dtype]).encode() + b"\n")


def _hash_block(h: Any, block: np.ndarray) -> None:
    if _is_str(block.dtype):
        for s in block.ravel().tolist():
            b = str(s).encode("utf-8")
            h.update(len(b).to_bytes(8, "little") + b)
    else:
        le = block.dtype.newbyteorder("<")
        h.update(np.ascontiguousarray(block, dtype=le).tobytes())


def fingerprint(store: str | Path) -> str:
    """SHA-256 (hex) of the content of every array of ``store``.

    Arrays in sorted path order; for each a JSON header (path, shape, little-endian dtype) and
    the data in C order, read block by block along the first axis (strings: 8-byte length and
    UTF-8 bytes each). Attributes — creation time included — are not hashed, so two
    assemblies of the same inputs have the same fingerprint whatever the scheduler.
    """
    group = _open_plain(store)
    h = hashlib.sha256(_FINGERPRINT_TAG)
    for name in _array_paths(group):
        arr = group[name]
        _hash_header(h, name, arr)
        if arr.ndim == 0:
            _hash_block(h, np.asarray(arr[...]))
            continue
        step = _axis0_step(arr)
        for start in range(0, arr.shape[0], step):
            _hash_block(h, np.asarray(arr[start : start + step]))
    return h.hexdigest()
