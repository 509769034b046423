"""Zarr v3 stores written atomically: build under a temporary name, then rename.

A store that exists under its final name is complete: every writer here first fills
``<name>.tmp-<host>-<pid>`` and renames it when all arrays, attributes and the consolidated metadata
are written, so an interrupted job never leaves a store that looks finished.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

log = logging.getLogger(__name__)

COMPRESSOR = BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle")
"""Default compression: Blosc-zstd with bit shuffling (good on float32 fields)."""


@dataclass
class Variable:
    """One array of a store: data, dimension names, units and free attributes."""

    data: np.ndarray
    dims: tuple[str, ...]
    units: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    chunks: tuple[int, ...] | None = None


@contextlib.contextmanager
def quiet_consolidated() -> Iterator[None]:
    """Silence zarr's warning that consolidated metadata is not (yet) in the v3 spec."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        yield


def _scratch(path: Path, kind: str) -> Path:
    """``<name>.<kind>-<host>-<pid>`` beside ``path``: this process's temporary names."""
    return path.with_name(f"{path.name}.{kind}-{socket.gethostname()}-{os.getpid()}")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftover from an earlier call in this process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(path: Path) -> None:
    """Remove temporary stores of ``path`` left by killed runs on this host (others are kept:
    a run on another host of a shared filesystem may still be writing them)."""
    host = socket.gethostname()
    for kind in ("tmp", "old"):
        for p in path.parent.glob(f"{path.name}.{kind}-*"):
            rest = p.name[len(path.name) + len(kind) + 2 :]
            p_host, _, p_pid = rest.rpartition("-")
            if p_host == host and p_pid.isdigit() and not _pid_alive(int(p_pid)):
                log.warning("removing stale temporary store %s", p)
                shutil.rmtree(p, ignore_errors=True)
            elif p_host != host:
                log.warning("leaving %s alone (written on host %r)", p, p_host)


@contextlib.contextmanager
def atomic_store(path: str | Path) -> Iterator[zarr.Group]:
    """Yield a fresh Zarr group at a temporary path; rename it to ``path`` on success.

    The temporary store is ``<name>.tmp-<host>-<pid>`` (its directory is
    ``Path(group.store.root)``, for writers that need a path, e.g. Dask). Consolidated metadata
    is written last, then the store is renamed; an existing store at ``path`` is replaced only
    then. On error the temporary store is removed and ``path`` is left as it was; temporaries
    of killed runs are removed by the next run (:func:`remove_stale`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    tmp = _scratch(path, "tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        yield group
        with quiet_consolidated():
            zarr.consolidate_metadata(str(tmp))
        if path.exists():
            old = _scratch(path, "old")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_variable(group: zarr.Group, name: str, var: Variable) -> zarr.Array:
    """Create ``name`` in ``group`` from ``var`` with compression and dimension names."""
    if var.data.ndim != len(var.dims):
        raise ValueError(f"{name}: {var.data.ndim}-D data but dims {var.dims}")
    attrs = dict(var.attrs)
    if var.units is not None:
        attrs["units"] = var.units
    data = var.data
    is_str = data.dtype.kind in "US"
    arr = group.create_array(
        name,
        shape=data.shape,
        dtype=str if is_str else data.dtype,
        chunks=var.chunks or data.shape,
        compressors=None if is_str else COMPRESSOR,
        dimension_names=list(var.dims),
        attributes=attrs,
    )
    arr[...] = data
    return arr


def open_store(path: str | Path) -> zarr.Group:
    """Open a finished store read-only (consolidated metadata), with a clear error if absent."""
    path = Path(path)
    if not path.is_dir():
        from ltemfactory.errors import InputError

        raise InputError(f"{path}: no such Zarr store")
    with quiet_consolidated():
        return zarr.open_group(str(path), mode="r", use_consolidated=True)
