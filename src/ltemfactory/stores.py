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

from ltemfactory.errors import InputError

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


class MissingArrayError(InputError, KeyError):
    """A store lacks a requested array or group: an :class:`InputError` naming the store (and a
    ``KeyError``, for callers that probe with ``try: group[name] except KeyError``)."""

    def __str__(self) -> str:
        return Exception.__str__(self)


_CALLER_ERRORS = (IndexError, TypeError, KeyError, NotImplementedError)
"""Exceptions of a read that come from the selection, not from the data on disk."""


class CheckedArray(zarr.Array):
    """An array of a store opened by :func:`open_store`: a read whose chunk data cannot be
    decoded (a truncated or corrupt chunk file) raises :class:`InputError` naming the store,
    the array and the selection instead of the codec's own exception."""

    def __init__(self, array: zarr.Array, where: str) -> None:
        super().__init__(array._async_array)
        self._where = where

    def __getitem__(self, selection: Any) -> Any:
        try:
            return super().__getitem__(selection)
        except _CALLER_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - codecs raise many types on corrupt data
            raise InputError(
                f"{self._where}: cannot read [{selection!r}] ({type(exc).__name__}: {exc}); a "
                "truncated or corrupt chunk file: rerun the stage that wrote the store"
            ) from exc


class CheckedGroup(zarr.Group):
    """A group of a store opened by :func:`open_store`: a missing member raises
    :class:`MissingArrayError` (naming the store, its stage and what it holds) and its arrays
    are :class:`CheckedArray`."""

    def __init__(self, group: zarr.Group, where: str) -> None:
        super().__init__(group._async_group)
        object.__setattr__(self, "_where", where)  # zarr.Group is a frozen dataclass

    def __getitem__(self, path: str) -> Any:
        try:
            obj = super().__getitem__(path)
        except KeyError:
            stage = self.attrs.get("stage")
            kind = f"a {stage!r} store" if stage else "this group"
            names = sorted(self.array_keys())
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise MissingArrayError(
                f"{self._where}: no array {path!r} ({kind} holds: {shown or 'nothing'})"
            ) from None
        if isinstance(obj, zarr.Array):
            return CheckedArray(obj, f"{self._where}/{path}")
        if isinstance(obj, zarr.Group):
            return CheckedGroup(obj, f"{self._where}/{path}")
        return obj  # pragma: no cover - zarr returns arrays and groups only


def open_store(path: str | Path) -> zarr.Group:
    """Open a finished store read-only (consolidated metadata).

    Every problem is an :class:`InputError` naming the store: no such path, a file instead of
    a directory, no ``zarr.json`` (not a store, or an interrupted write), unreadable metadata;
    later, a missing array (:class:`MissingArrayError`) or an undecodable chunk (see
    :class:`CheckedArray`). Chunk files that are missing altogether read as the fill value, as
    in zarr; ``ltemfactory dataset check`` finds those in a dataset store.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such Zarr store")
    if not path.is_dir():
        raise InputError(f"{path}: not a Zarr store (a file; a store is a directory)")
    if not (path / "zarr.json").is_file():
        raise InputError(
            f"{path}: not a Zarr store (no zarr.json): a wrong path, or a store whose writing "
            "was interrupted"
        )
    try:
        with quiet_consolidated():
            group = zarr.open_group(str(path), mode="r", use_consolidated=True)
    except Exception as exc:  # noqa: BLE001 - zarr/json raise many types on bad metadata
        raise InputError(
            f"{path}: unreadable Zarr store metadata ({type(exc).__name__}: {exc})"
        ) from None
    return CheckedGroup(group, str(path))
