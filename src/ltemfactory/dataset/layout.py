"""Names, dimensions, dtypes and units of the dataset store, and small helpers shared by the
modules of :mod:`ltemfactory.dataset` (the store layout is described in its docstring)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ltemfactory.errors import InputError
from ltemfactory.stores import quiet_consolidated

IMAGE_DIMS = ("image", "row", "col")
STATE_DIMS = ("state", "component", "row", "col")

IMAGE_FIELDS = {
    # dataset name: (render store name, units, description)
    "images": ("image", "1", "detected LTEM image (normalised detector counts)"),
    "phase": ("magnetic_phase", "rad", "magnetic phase shift (ground truth)"),
    "clean_images": ("clean_image", "1", "noise-free image intensity (unit beam)"),
}

INSTANCE_UNITS = {
    "image": "",
    "instance_id": "",
    "centroid_row_px": "px",
    "centroid_col_px": "px",
    "centroid_x_nm": "nm",
    "centroid_y_nm": "nm",
    "area_nm2": "nm^2",
    "equivalent_radius_nm": "nm",
    "ellipse_major_nm": "nm",
    "ellipse_minor_nm": "nm",
    "orientation_deg": "deg",
    "topological_charge": "1",
    "holes": "1",
    "touches_border": "",
    "kind_code": "",
}
"""Units of the instance table columns (unknown columns: guessed from the name suffix)."""

EXPECTED_DTYPES = {
    "images": np.float32,
    "labels": np.int32,
    "phase": np.float32,
    "clean_images": np.float32,
    "magnetization": np.float32,
    "split": np.uint8,
    "state_split": np.uint8,
    "image_state": np.int64,
    "image_batch": np.int64,
    "state_batch": np.int64,
    "state_id": np.int64,
    "instances/image": np.int64,
    "instances/state": np.int64,
    "instances/instance_id": np.int32,
}

REQUIRED_ARRAYS = (
    "images",
    "labels",
    "phase",
    "magnetization",
    "split",
    "state_split",
    "image_state",
    "state_id",
    "pixel_size_nm",
    "instances/image",
    "instances/instance_id",
    "instances/area_nm2",
)
_RENDER_REPLACED = {"state_id", "state_index"}  # replaced by image_state


def _is_str(dtype: Any) -> bool:
    return np.dtype(dtype).kind in "OUST"


def _units_for(column: str) -> str:
    if column in INSTANCE_UNITS:
        return INSTANCE_UNITS[column]
    for suffix, unit in (("_nm2", "nm^2"), ("_nm", "nm"), ("_px", "px"), ("_deg", "deg")):
        if column.endswith(suffix):
            return unit
    return ""


def _array_paths(group: zarr.Group, prefix: str = "") -> list[str]:
    """Paths of all arrays below ``group`` (recursively), sorted."""
    out = [prefix + name for name, _ in group.arrays()]
    for name, sub in group.groups():
        out += _array_paths(sub, f"{prefix}{name}/")
    return sorted(out)


def _open_plain(store: str | Path) -> zarr.Group:
    path = Path(store)
    if not path.is_dir():
        raise InputError(f"{path}: no such Zarr store")
    with quiet_consolidated():
        return zarr.open_group(str(path), mode="r", use_consolidated=False)
