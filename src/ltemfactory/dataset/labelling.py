"""Labelling during assembly: one Dask task per input batch, then one merged instance table."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import zarr

from ltemfactory.dataset.inputs import _Batch
from ltemfactory.errors import InputError

LabelFn = Callable[[str, str], tuple[np.ndarray, dict[str, np.ndarray]]]


def _default_label_fn() -> LabelFn:
    try:
        from ltemfactory.labels import label_render_store
    except ImportError as exc:  # pragma: no cover - labels.py lands separately
        raise ImportError(
            "assemble: ltemfactory.labels.label_render_store is not available; pass label_fn"
        ) from exc
    return label_render_store


def _label_batch(
    label_fn: LabelFn,
    relax: str,
    render: str,
    target: zarr.Array,
    start: int,
    n: int,
) -> dict[str, np.ndarray]:
    """Dask task: label one batch, write its labels into its own region, return its table."""
    labels, table = label_fn(relax, render)
    labels = np.asarray(labels)
    want = (n, *target.shape[1:])
    if labels.shape != want:
        raise InputError(f"{render}: labels have shape {labels.shape}, expected {want}")
    if labels.dtype.kind not in "iu":
        raise InputError(f"{render}: labels have dtype {labels.dtype}, expected integers")
    if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.int32).max):
        raise InputError(f"{render}: label ids outside [0, 2^31)")
    target[start : start + n] = labels.astype(np.int32, copy=False)
    cols = {str(k): np.asarray(v) for k, v in table.items()}
    lengths = {k: v.shape for k, v in cols.items()}
    if any(len(s) != 1 for s in lengths.values()) or len({s[0] for s in lengths.values()}) > 1:
        raise InputError(f"{render}: instance table columns are not 1-D of equal length")
    for key in ("image_index", "instance_id"):
        if key not in cols:
            raise InputError(f"{render}: instance table has no column {key!r}")
    idx = cols["image_index"]
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise InputError(f"{render}: instance table image_index outside [0, {n})")
    return cols


def _merge_tables(batches: list[_Batch], tables: list[dict[str, np.ndarray]]) -> dict:
    names = set(tables[0])
    for b, t in zip(batches, tables, strict=True):
        if set(t) != names:
            raise InputError(f"{b.render}: instance table columns {sorted(set(t) ^ names)} differ")
    out: dict[str, np.ndarray] = {}
    pairs = list(zip(batches, tables, strict=True))
    image = np.concatenate([b.image_offset + t["image_index"].astype(np.int64) for b, t in pairs])
    if "state_index" in names:
        out["state"] = np.concatenate(
            [b.state_offset + t["state_index"].astype(np.int64) for b, t in pairs]
        )
    for name in sorted(names - {"image_index", "state_index"}):
        parts = [t[name] for t in tables]
        nonempty = [p for p in parts if p.size]
        dtype = np.result_type(*nonempty) if nonempty else parts[0].dtype
        out[name] = np.concatenate([p.astype(dtype, copy=False) for p in parts])
    out["instance_id"] = out["instance_id"].astype(np.int32)
    order = np.lexsort((out["instance_id"], image))
    out = {k: v[order] for k, v in out.items()}
    out["image"] = image[order]
    return out
