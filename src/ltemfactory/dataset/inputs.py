"""Inputs of the dataset stage: open and cross-check the per-batch relax and render stores."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import zarr

from ltemfactory.dataset.layout import _is_str
from ltemfactory.errors import InputError
from ltemfactory.stores import open_store


@dataclasses.dataclass
class _Batch:
    index: int
    relax: str
    render: str
    relax_group: zarr.Group
    render_group: zarr.Group
    state_ids: np.ndarray
    image_state_local: np.ndarray
    state_offset: int = 0
    image_offset: int = 0

    @property
    def n_states(self) -> int:
        return len(self.state_ids)

    @property
    def n_images(self) -> int:
        return len(self.image_state_local)


def _open_input(path: str) -> zarr.Group:
    """The store, opened so that a corrupt chunk is an InputError naming it (not a codec
    traceback from inside a Dask task)."""
    return open_store(path)


def _one_d(group: zarr.Group, dim: str, n: int) -> dict[str, zarr.Array]:
    out = {}
    for name, arr in group.arrays():
        if arr.ndim == 1 and tuple(arr.metadata.dimension_names or ()) == (dim,):
            if arr.shape[0] != n:
                raise InputError(f"{group.store}: {name} has {arr.shape[0]} entries, expected {n}")
            out[name] = arr
    return out


def _read_inputs(batches: Sequence[tuple[Any, Any]]) -> tuple[list[_Batch], tuple[int, int, int]]:
    """Open and cross-check the batch stores; returns the batches and (nz, H, W)."""
    if not batches:
        raise InputError("assemble: no input batches")
    out: list[_Batch] = []
    grid = None
    seen_ids: dict[int, str] = {}
    s_off = i_off = 0
    for b, pair in enumerate(batches):
        if len(pair) != 2:
            raise InputError(f"assemble: batch {b} is not a (relax_store, render_store) pair")
        relax, render = (os.fspath(p) for p in pair)
        rg, qg = _open_input(relax), _open_input(render)
        for name in ("m", "state_id"):
            if name not in rg:
                raise InputError(f"{relax}: no array {name!r} (not a relax store?)")
        for name in ("image", "magnetic_phase", "state_id", "pixel_size_nm"):
            if name not in qg:
                raise InputError(f"{render}: no array {name!r} (not a render store?)")
        m = rg["m"]
        if m.ndim != 5 or m.shape[1] != 3:
            raise InputError(f"{relax}: m has shape {m.shape}, expected (state, 3, layer, ny, nx)")
        g = tuple(m.shape[2:])
        if grid is None:
            grid = g
        elif g[1:] != grid[1:]:
            raise InputError(f"{relax}: grid {g[1:]} differs from the first batch's {grid[1:]}")
        ids = np.asarray(rg["state_id"][:]).astype(np.int64)
        if len(ids) != m.shape[0]:
            raise InputError(f"{relax}: {len(ids)} state ids for {m.shape[0]} states")
        for sid in ids.tolist():
            if sid in seen_ids:
                raise InputError(f"{relax}: state_id {sid} already in {seen_ids[sid]}")
            seen_ids[sid] = relax
        img = qg["image"]
        if img.ndim != 3 or tuple(img.shape[1:]) != grid[1:]:
            raise InputError(f"{render}: image has shape {img.shape}, expected (n, {grid[1:]})")
        n = img.shape[0]
        if n == 0 or len(ids) == 0:
            raise InputError(f"{render}: empty batch ({len(ids)} states, {n} images)")
        for name in ("magnetic_phase", "clean_image"):
            if name in qg and tuple(qg[name].shape) != tuple(img.shape):
                raise InputError(f"{render}: {name} has shape {qg[name].shape} != {img.shape}")
        r_ids = np.asarray(qg["state_id"][:]).astype(np.int64)
        if len(r_ids) != n:
            raise InputError(f"{render}: {len(r_ids)} state ids for {n} images")
        pos = {int(s): k for k, s in enumerate(ids)}
        missing = sorted({int(s) for s in r_ids} - pos.keys())
        if missing:
            raise InputError(f"{render}: images of state ids {missing} not in {relax}")
        local = np.array([pos[int(s)] for s in r_ids], dtype=np.int64)
        out.append(_Batch(b, relax, render, rg, qg, ids, local, s_off, i_off))
        s_off += len(ids)
        i_off += n
    assert grid is not None
    return out, grid


def _collect_1d(batches: list[_Batch], which: str) -> dict[str, tuple[np.ndarray, dict]]:
    """Concatenate the 1-D arrays of the relax (``state``) or render (``image``) stores."""
    per_batch = []
    for b in batches:
        if which == "state":
            arrays = _one_d(b.relax_group, "state", b.n_states)
        else:
            arrays = _one_d(b.render_group, "image", b.n_images)
        per_batch.append(arrays)
    names = set(per_batch[0])
    for b, arrays in zip(batches, per_batch, strict=True):
        if set(arrays) != names:
            store = b.relax if which == "state" else b.render
            diff = sorted(set(arrays) ^ names)
            raise InputError(f"{store}: 1-D arrays {diff} differ from the first batch's")
    out = {}
    for name in sorted(names):
        parts = [np.asarray(arrays[name][:]) for arrays in per_batch]
        if _is_str(parts[0].dtype):
            data = np.array([str(x) for p in parts for x in p.tolist()], dtype=str)
        else:
            data = np.concatenate(parts)
        attrs = dict(per_batch[0][name].attrs)
        out[name] = (data, attrs)
    return out
