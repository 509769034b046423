"""The dataset stage: assemble per-batch relax and render stores into one training store.

:func:`assemble` reads the batch stores lazily with Dask and writes ONE Zarr v3 store
(atomically, see below); :func:`check` verifies it, :func:`fingerprint` hashes its content and
:func:`card` writes a Markdown dataset card with figures.

Store layout (N images, S states, H x W pixels, M instances; every array carries
``dimension_names``, so ``xarray.open_zarr(path)`` opens it)::

    dataset.zarr/
      images          (image, row, col)            float32  1    detected image
      labels          (image, row, col)            int32         instance ids, 0 background, 1..K
      phase           (image, row, col)            float32  rad  magnetic phase (ground truth)
      clean_images    (image, row, col)            float32  1    noise-free (if every batch has it)
      magnetization   (state, component, row, col) float32  1    layer mean of m (not renormalised)
      image_state     (image,)  int64   index into the state axis (state_id[image_state])
      image_batch     (image,)  int64   input batch (position in the ``batches`` list)
      split           (image,)  uint8   0 train, 1 val, 2 test (by state)
      state_split     (state,)  uint8   the same codes per state
      state_batch     (state,)  int64   input batch of each state
      <relax 1-D>     (state,)  every 1-D array of the relax stores (state_id, Ms_A_per_m, ...,
                                energy_*, converged, ...), units and attributes copied
      <render 1-D>    (image,)  every 1-D array of the render stores (defocus_mm, tilt_deg, ...,
                                pixel_size_nm, variant), units copied. The render stores'
                                ``state_id``/``state_index`` are replaced by ``image_state``; any
                                other name that collides with a relax array gets ``image_``.
      instances/      one (instance,) array per column of the label table (units in attrs),
                      rows sorted by (image, instance_id); ``instances/image`` is the global
                      image index (it replaces the table's batch-local ``image_index``) and
                      ``instances/state`` the global state index (replaces ``state_index``).

Chunking: the image-sized arrays have one image per chunk (``(1, H, W)``), grouped in shards
of one input batch (``(B, H, W)``, B = the largest batch's image count); ``magnetization``
likewise with the state axis. Each input batch is written as one Dask task into its own
shard-aligned region, so every shard has exactly one writer and no locks are needed. Batches
must then start on shard boundaries: that holds when every batch but the last has the largest
size (the normal case — the last batch may be smaller). Otherwise the shard is the greatest
common divisor of the batch sizes (logged), which keeps one writer per shard. 1-D arrays are
small and written whole by the coordinating process. Compression is
:data:`ltemfactory.stores.COMPRESSOR` (Blosc-zstd + bitshuffle); chunks equal to the fill value
are written too (``write_empty_chunks``), so every chunk of the grid exists on disk and
:func:`check` can tell a missing file from an all-zero one.

Atomicity: the store is built under ``<name>.tmp-<host>-<pid>`` next to ``out`` and renamed when
complete (a previous store under ``out`` is replaced only then). The consolidated metadata is
written once, as the last step before the rename. A failed run removes its temporary store; one
that was killed leaves it, and the next run removes it (same host, process gone) and starts over.

Provenance (root attributes): ``config``, ``ltemfactory_version``, ``git_commit`` (of the
current directory, else ``"unknown"``), ``git_dirty``, ``inputs`` (paths, offsets, sizes),
``inputs_sha256`` (paths and their ``state_id`` arrays), ``seed``, ``split_fractions``,
``created_utc`` and ``fingerprint`` (:func:`fingerprint`, content only — identical for two
assemblies of the same inputs, whatever the Dask scheduler).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import socket
import subprocess
import warnings
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ltemfactory import __version__
from ltemfactory.errors import ConfigError, InputError
from ltemfactory.stores import COMPRESSOR

log = logging.getLogger(__name__)

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
"""Codes of the ``split`` array."""

DEFAULT_SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
"""Train, val, test fractions of the states when ``dataset.split_fractions`` is not set."""

_SPLIT_SALT = 0x53504C54  # "SPLT": separates the split stream from every other use of the seed

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
_FINGERPRINT_TAG = b"ltemfactory-dataset-fingerprint-v1\n"
_MAX_MESSAGES = 10  # per kind of problem in check()

LabelFn = Callable[[str, str], tuple[np.ndarray, dict[str, np.ndarray]]]


# --------------------------------------------------------------------------------------------
# Small helpers


@contextlib.contextmanager
def _quiet_consolidated() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        yield


def _json_safe(value: Any) -> Any:
    """``value`` as plain JSON types (numpy scalars and paths become numbers and strings)."""

    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        return str(o)

    return json.loads(json.dumps(value, default=default))


def _git_info() -> tuple[str, bool | None]:
    """(commit, dirty) of the git work tree of the current directory; never raises."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown", None
    if not commit:
        return "unknown", None
    try:
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        return commit, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return commit, None


def _units_for(column: str) -> str:
    if column in INSTANCE_UNITS:
        return INSTANCE_UNITS[column]
    for suffix, unit in (("_nm2", "nm^2"), ("_nm", "nm"), ("_px", "px"), ("_deg", "deg")):
        if column.endswith(suffix):
            return unit
    return ""


def _is_str(dtype: Any) -> bool:
    return np.dtype(dtype).kind in "OUST"


def _create(
    group: zarr.Group,
    name: str,
    shape: tuple[int, ...],
    dtype: Any,
    dims: Sequence[str],
    *,
    chunks: tuple[int, ...] | None = None,
    shards: tuple[int, ...] | None = None,
    units: str | None = None,
    attrs: dict[str, Any] | None = None,
) -> zarr.Array:
    """Create an array that writes every chunk, also those equal to the fill value."""
    attributes = dict(attrs or {})
    if units is not None:
        attributes["units"] = units
    is_str = _is_str(dtype)
    if chunks is None:
        chunks = tuple(max(1, min(s, 1 << 20)) for s in shape)
    return group.create_array(
        name,
        shape=shape,
        dtype=str if is_str else dtype,
        chunks=chunks,
        shards=shards,
        compressors=None if is_str else COMPRESSOR,
        dimension_names=list(dims),
        attributes=_json_safe(attributes),
        config={"write_empty_chunks": True},
    )


def _write_1d(
    group: zarr.Group, name: str, data: np.ndarray, dim: str, units: str | None, attrs=None
):
    arr = _create(group, name, data.shape, data.dtype, (dim,), units=units, attrs=attrs)
    if data.size:
        arr[...] = data
    return arr


def _writable(arr: zarr.Array) -> zarr.Array:
    return arr.with_config({"write_empty_chunks": True})


def _shard_size(sizes: Sequence[int]) -> int:
    """Shard length along the sample axis for batches of ``sizes`` written one after another.

    The largest size when every batch but the last has it (each batch starts on a shard
    boundary); otherwise the gcd of the sizes, which also gives one writer per shard.
    """
    sizes = [int(s) for s in sizes]
    largest = max(sizes)
    if all(s == largest for s in sizes[:-1]):
        return largest
    g = math.gcd(*sizes)
    log.warning(
        "batch sizes %s are not all equal but the last: shards of %d along the sample axis "
        "(gcd) instead of %d",
        sizes,
        g,
        largest,
    )
    return g


def _block_chunks(n: int, shard: int) -> tuple[int, ...]:
    """Dask chunks along the sample axis of one batch of ``n`` (starting on a shard boundary)."""
    out = [shard] * (n // shard)
    if n % shard:
        out.append(n % shard)
    return tuple(out)


def _array_paths(group: zarr.Group, prefix: str = "") -> list[str]:
    """Paths of all arrays below ``group`` (recursively), sorted."""
    out = [prefix + name for name, _ in group.arrays()]
    for name, sub in group.groups():
        out += _array_paths(sub, f"{prefix}{name}/")
    return sorted(out)


# --------------------------------------------------------------------------------------------
# Inputs


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
    if not Path(path).is_dir():
        raise InputError(f"{path}: no such Zarr store")
    try:
        with _quiet_consolidated():
            return zarr.open_group(path, mode="r", use_consolidated=True)
    except Exception as exc:  # noqa: BLE001 - any failure to open is an input problem
        raise InputError(f"{path}: cannot open Zarr store: {exc}") from None


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


# --------------------------------------------------------------------------------------------
# Splits


def split_fractions(config: dict[str, Any]) -> tuple[float, float, float]:
    """``dataset.split_fractions`` of ``config`` (normalised), default (0.8, 0.1, 0.1)."""
    ds = config.get("dataset") or {}
    raw = ds.get("split_fractions", DEFAULT_SPLIT_FRACTIONS) if isinstance(ds, dict) else None
    try:
        f = np.asarray(raw, dtype=float)
    except (TypeError, ValueError):
        f = np.array([np.nan])
    if f.shape != (3,) or not np.all(np.isfinite(f)) or np.any(f < 0) or f.sum() <= 0:
        raise ConfigError(
            f"dataset.split_fractions: expected three non-negative numbers (train, val, test) "
            f"with a positive sum, got {raw!r}"
        )
    f = f / f.sum()
    return (float(f[0]), float(f[1]), float(f[2]))


def split_seed(config: dict[str, Any]) -> int:
    """Seed of the split: ``dataset.seed`` if given, else the config's ``seed`` (else 0)."""
    ds = config.get("dataset") or {}
    seed = ds.get("seed") if isinstance(ds, dict) else None
    if seed is None:
        seed = config.get("seed")
    return int(seed or 0)


def split_states(
    state_ids: np.ndarray, seed: int, fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS
) -> np.ndarray:
    """Split code (0 train, 1 val, 2 test) of each state, in the order of ``state_ids``.

    A pure function of the seed and the *set* of state ids: the ids are sorted, permuted with
    a generator seeded by ``seed``, and cut at counts given by the fractions (largest
    remainder). With three or more states, every split whose fraction is positive gets at
    least one state (taken from the largest split).
    """
    ids = np.asarray(state_ids, dtype=np.int64)
    s = len(ids)
    f = np.asarray(fractions, dtype=float)
    f = f / f.sum()
    exact = f * s
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: s - counts.sum()]] += 1
    if s >= 3:
        for k in range(3):
            if f[k] > 0 and counts[k] == 0:
                counts[np.argmax(counts)] -= 1
                counts[k] += 1
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & (2**63 - 1), _SPLIT_SALT]))
    ranked = np.argsort(ids, kind="stable")[rng.permutation(s)]
    codes = np.empty(s, dtype=np.uint8)
    start = 0
    for k in range(3):
        codes[ranked[start : start + counts[k]]] = k
        start += counts[k]
    return codes


# --------------------------------------------------------------------------------------------
# Assembly


def _tmp_path(out: Path) -> Path:
    return out.with_name(f"{out.name}.tmp-{socket.gethostname()}-{os.getpid()}")


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


def _remove_stale(out: Path) -> None:
    """Remove temporary stores of ``out`` left by killed runs on this host."""
    host = socket.gethostname()
    for kind in ("tmp", "old"):
        for p in out.parent.glob(f"{out.name}.{kind}-*"):
            rest = p.name[len(out.name) + len(kind) + 2 :]
            p_host, _, p_pid = rest.rpartition("-")
            if p_host == host and p_pid.isdigit() and not _pid_alive(int(p_pid)):
                log.warning("removing stale temporary store %s", p)
                shutil.rmtree(p, ignore_errors=True)
            elif p_host != host:
                log.warning("leaving %s alone (written on host %r)", p, p_host)


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


def assemble(
    batches: Sequence[tuple[str | Path, str | Path]],
    out: str | Path,
    config: dict[str, Any],
    *,
    label_fn: LabelFn | None = None,
    scheduler: Any = None,
) -> None:
    """Assemble (relax store, render store) ``batches`` into one dataset store at ``out``.

    The big arrays are read lazily (``dask.array.from_zarr``) and written batch by batch into
    shard-aligned regions (module docstring); labels come from ``label_fn(relax, render)``
    (default :func:`ltemfactory.labels.label_render_store`), run as one Dask task per batch.
    ``scheduler`` is anything ``dask.compute`` accepts (``"threads"`` — the default —,
    ``"synchronous"``, ``"processes"``, a ``dask.distributed.Client``). The store appears under
    ``out`` only when complete, with consolidated metadata and provenance attributes.
    """
    import dask
    import dask.array as da

    out = Path(out)
    label_fn = label_fn or _default_label_fn()
    kind_codes = None
    if getattr(label_fn, "__module__", None) == "ltemfactory.labels":
        from ltemfactory.labels import KIND_CODES

        kind_codes = dict(KIND_CODES)
    fractions = split_fractions(config)
    seed = split_seed(config)
    inputs, (_, ny, nx) = _read_inputs(batches)
    n_img = sum(b.n_images for b in inputs)
    n_state = sum(b.n_states for b in inputs)
    img_shard = _shard_size([b.n_images for b in inputs])
    state_shard = _shard_size([b.n_states for b in inputs])
    has_clean = all("clean_image" in b.render_group for b in inputs)

    state_1d = _collect_1d(inputs, "state")
    image_1d = _collect_1d(inputs, "image")
    state_ids = state_1d["state_id"][0].astype(np.int64)
    image_state = np.concatenate([b.state_offset + b.image_state_local for b in inputs])
    state_split = split_states(state_ids, seed, fractions)

    h = hashlib.sha256()
    for b in inputs:
        h.update(json.dumps([b.relax, b.render]).encode() + b"\n")
        h.update(b.state_ids.astype("<i8").tobytes())
    inputs_sha256 = h.hexdigest()
    commit, dirty = _git_info()

    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(out)
    tmp = _tmp_path(out)
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        targets = {}
        for name, (src, units, desc) in IMAGE_FIELDS.items():
            if name == "clean_images" and not has_clean:
                continue
            targets[name] = (
                src,
                _create(
                    root,
                    name,
                    (n_img, ny, nx),
                    np.float32,
                    IMAGE_DIMS,
                    chunks=(1, ny, nx),
                    shards=(img_shard, ny, nx),
                    units=units,
                    attrs={"description": desc},
                ),
            )
        labels_arr = _create(
            root,
            "labels",
            (n_img, ny, nx),
            np.int32,
            IMAGE_DIMS,
            chunks=(1, ny, nx),
            shards=(img_shard, ny, nx),
            units="",
            attrs={"description": "instance labels: 0 background, 1..K instances of the image"},
        )
        mag_arr = _create(
            root,
            "magnetization",
            (n_state, 3, ny, nx),
            np.float32,
            STATE_DIMS,
            chunks=(1, 3, ny, nx),
            shards=(state_shard, 3, ny, nx),
            units="1",
            attrs={
                "components": ["mx", "my", "mz"],
                "description": "unit magnetisation averaged over the layers (not renormalised)",
            },
        )

        sources, dests, regions, label_tasks = [], [], [], []
        for b in inputs:
            ichunks = (_block_chunks(b.n_images, img_shard), (ny,), (nx,))
            iregion = (slice(b.image_offset, b.image_offset + b.n_images),)
            for src, arr in targets.values():
                zsrc = b.render_group[src]
                sources.append(da.from_zarr(zsrc, chunks=ichunks).astype(np.float32))
                dests.append(_writable(arr))
                regions.append(iregion)
            b_nz = b.relax_group["m"].shape[2]  # layers may differ between batches
            schunks = (_block_chunks(b.n_states, state_shard), (3,), (b_nz,), (ny,), (nx,))
            m = da.from_zarr(b.relax_group["m"], chunks=schunks)
            sources.append(m.mean(axis=2, dtype=np.float64).astype(np.float32))
            dests.append(_writable(mag_arr))
            regions.append((slice(b.state_offset, b.state_offset + b.n_states),))
            label_tasks.append(
                dask.delayed(_label_batch, pure=False)(
                    label_fn, b.relax, b.render, _writable(labels_arr), b.image_offset, b.n_images
                )
            )
        stored = da.store(sources, dests, regions=regions, lock=False, compute=False)
        _, *tables = dask.compute(stored, *label_tasks, scheduler=scheduler or "threads")

        # 1-D arrays, written whole by this process
        for name, (data, attrs) in state_1d.items():
            units = attrs.pop("units", None)
            dtype = np.int64 if name == "state_id" else None
            _write_1d(root, name, data.astype(dtype) if dtype else data, "state", units, attrs)
        for name, (data, attrs) in image_1d.items():
            if name in _RENDER_REPLACED:
                continue
            units = attrs.pop("units", None)
            target = f"image_{name}" if name in state_1d or name in root else name
            _write_1d(root, target, data, "image", units, attrs)
        split_attrs = {
            "codes": SPLIT_CODES,
            "flag_values": list(SPLIT_CODES.values()),
            "flag_meanings": " ".join(SPLIT_CODES),
            "assigned_by": "state",
            "fractions": list(fractions),
            "seed": seed,
        }
        _write_1d(root, "split", state_split[image_state], "image", "", split_attrs)
        _write_1d(root, "state_split", state_split, "state", "", split_attrs)
        _write_1d(root, "image_state", image_state, "image", "", {"description": "index on state"})
        _write_1d(
            root,
            "image_batch",
            np.concatenate([np.full(b.n_images, b.index, np.int64) for b in inputs]),
            "image",
            "",
            {"description": "input batch (position in the inputs attribute)"},
        )
        _write_1d(
            root,
            "state_batch",
            np.concatenate([np.full(b.n_states, b.index, np.int64) for b in inputs]),
            "state",
            "",
            {"description": "input batch (position in the inputs attribute)"},
        )

        table = _merge_tables(inputs, tables)
        inst = root.create_group("instances", attributes={"description": "instance table"})
        for name, data in table.items():
            attrs = {}
            if name == "image":
                attrs["description"] = "global image index"
            elif name == "state":
                attrs["description"] = "global state index (of the image's state)"
            elif name == "kind_code" and kind_codes:
                attrs["codes"] = kind_codes
            _write_1d(inst, name, data, "instance", _units_for(name), attrs)

        fp = fingerprint(str(tmp))
        root.attrs.update(
            _json_safe(
                {
                    "stage": "dataset",
                    "n_images": n_img,
                    "n_states": n_state,
                    "n_instances": int(len(table["image"])),
                    "image_shard": img_shard,
                    "state_shard": state_shard,
                    "inputs": [
                        {
                            "relax": b.relax,
                            "render": b.render,
                            "n_states": b.n_states,
                            "n_images": b.n_images,
                            "state_offset": b.state_offset,
                            "image_offset": b.image_offset,
                        }
                        for b in inputs
                    ],
                    "inputs_sha256": inputs_sha256,
                    "config": config,
                    "seed": seed,
                    "split_fractions": list(fractions),
                    "ltemfactory_version": __version__,
                    "git_commit": commit,
                    "git_dirty": dirty,
                    "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
                    "fingerprint": fp,
                    "fingerprint_algorithm": "sha256 over arrays sorted by path: JSON header "
                    "(name, shape, dtype) then C-order little-endian data (strings: 8-byte "
                    "length + UTF-8); see ltemfactory.dataset.fingerprint",
                    "axes": "x along col, y along row, z out of plane (right-handed)",
                }
            )
        )
        with _quiet_consolidated():
            zarr.consolidate_metadata(str(tmp))
        if out.exists():
            old = out.with_name(f"{out.name}.old-{socket.gethostname()}-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "assembled %d images of %d states (%d instances) into %s",
        n_img,
        n_state,
        len(table["image"]),
        out,
    )


# --------------------------------------------------------------------------------------------
# Fingerprint


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


def _open_plain(store: str | Path) -> zarr.Group:
    path = Path(store)
    if not path.is_dir():
        raise InputError(f"{path}: no such Zarr store")
    with _quiet_consolidated():
        return zarr.open_group(str(path), mode="r", use_consolidated=False)


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


# --------------------------------------------------------------------------------------------
# Check


class _Problems:
    """Problem messages, at most ``_MAX_MESSAGES`` per kind (then a count of the rest)."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self._counts: dict[str, int] = {}

    def add(self, kind: str, message: str) -> None:
        c = self._counts.get(kind, 0) + 1
        self._counts[kind] = c
        if c <= _MAX_MESSAGES:
            self.items.append(message)

    def result(self) -> list[str]:
        extra = [
            f"... and {c - _MAX_MESSAGES} more problems of kind {kind!r}"
            for kind, c in self._counts.items()
            if c > _MAX_MESSAGES
        ]
        return self.items + extra


def _storage_grid(arr: zarr.Array) -> tuple[tuple[int, ...], tuple[int, ...]]:
    unit = tuple(arr.shards or arr.chunks)
    return unit, tuple(math.ceil(s / u) for s, u in zip(arr.shape, unit, strict=True))


def _shard_index_problems(arr: zarr.Array, path: Path, coords: tuple[int, ...]) -> list[str]:
    """Missing inner chunks or offsets past the end in a shard file (index at the end)."""
    codec = arr.metadata.codecs[0]
    if getattr(getattr(codec, "index_location", None), "value", None) != "end":
        return []
    inner = tuple(codec.chunk_shape)
    shard = tuple(arr.shards)
    per = tuple(s // c for s, c in zip(shard, inner, strict=True))
    n = math.prod(per)
    has_crc = any(type(c).__name__ == "Crc32cCodec" for c in codec.index_codecs)
    index_nbytes = 16 * n + (4 if has_crc else 0)
    size = path.stat().st_size
    if size < index_nbytes:
        return [f"shard file is {size} bytes, shorter than its index ({index_nbytes})"]
    with open(path, "rb") as f:
        f.seek(size - index_nbytes)
        raw = f.read(16 * n)
    index = np.frombuffer(raw, dtype="<u8").reshape(per + (2,))
    problems = []
    empty = np.iinfo(np.uint64).max
    for local in np.ndindex(per):
        glob = tuple(c * p + i for c, p, i in zip(coords, per, local, strict=True))
        if any(g * c >= s for g, c, s in zip(glob, inner, arr.shape, strict=True)):
            continue  # outside the array (partial last shard)
        off, nbytes = (int(v) for v in index[local])
        if off == empty and nbytes == empty:
            problems.append(f"inner chunk {glob} missing")
        elif off + nbytes > size - index_nbytes:
            problems.append(f"inner chunk {glob} extends past the end of the file (truncated)")
    return problems


def _check_metadata(path: Path, p: _Problems) -> None:
    """Consolidated metadata present and equal to every node's own zarr.json."""
    try:
        root = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError) as exc:
        p.add("metadata", f"zarr.json: unreadable ({exc})")
        return
    cons = (root.get("consolidated_metadata") or {}).get("metadata")
    if cons is None:
        p.add("metadata", "zarr.json: no consolidated metadata")
        return
    on_disk = {}
    for d, _, files in os.walk(path):
        if "zarr.json" in files and Path(d) != path:
            rel = Path(d).relative_to(path).as_posix()
            try:
                on_disk[rel] = json.loads((Path(d) / "zarr.json").read_text())
            except (OSError, ValueError) as exc:
                p.add("metadata", f"{rel}/zarr.json: unreadable ({exc})")
    for rel in sorted(set(cons) | set(on_disk)):
        if rel not in on_disk:
            p.add("metadata", f"consolidated metadata lists {rel}, which is not in the store")
        elif rel not in cons:
            p.add("metadata", f"{rel}: missing from the consolidated metadata")
        else:
            a = {k: v for k, v in cons[rel].items() if k != "consolidated_metadata"}
            b = {k: v for k, v in on_disk[rel].items() if k != "consolidated_metadata"}
            if a != b:
                diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                p.add("metadata", f"{rel}: consolidated metadata is stale (differs in {diff})")


def _check_layout(group: zarr.Group, names: list[str], p: _Problems) -> tuple[int, int] | None:
    """Required arrays, dims, dtypes and shapes; returns (N, S) when they can be read."""
    for name in REQUIRED_ARRAYS:
        if name not in names:
            p.add("missing", f"{name}: required array missing")
    if "images" not in names or "magnetization" not in names:
        return None
    n, h, w = group["images"].shape if group["images"].ndim == 3 else (None, None, None)
    s = group["magnetization"].shape[0]
    if n is None:
        p.add("shape", f"images: shape {group['images'].shape}, expected (image, row, col)")
        return None
    sizes = {"image": n, "state": s, "row": h, "col": w, "component": 3}
    n_inst = group["instances/image"].shape[0] if "instances/image" in names else None
    if n_inst is not None:
        sizes["instance"] = n_inst
    for name in names:
        arr = group[name]
        dims = tuple(arr.metadata.dimension_names or ())
        if len(dims) != arr.ndim or any(d is None for d in dims):
            p.add("dims", f"{name}: dimension names {dims} do not name all {arr.ndim} axes")
            continue
        if name.startswith("instances/") and dims != ("instance",):
            p.add("dims", f"{name}: dims {dims}, expected ('instance',)")
        for d, size in zip(dims, arr.shape, strict=True):
            if d in sizes and size != sizes[d]:
                p.add("shape", f"{name}: {d} axis has {size} entries, expected {sizes[d]}")
        want = EXPECTED_DTYPES.get(name)
        if want is not None and np.dtype(arr.dtype) != np.dtype(want):
            p.add("dtype", f"{name}: dtype {np.dtype(arr.dtype)}, expected {np.dtype(want)}")
    expected_dims = {
        "images": IMAGE_DIMS,
        "labels": IMAGE_DIMS,
        "phase": IMAGE_DIMS,
        "clean_images": IMAGE_DIMS,
        "magnetization": STATE_DIMS,
        "split": ("image",),
        "image_state": ("image",),
        "state_split": ("state",),
        "state_id": ("state",),
        "pixel_size_nm": ("image",),
    }
    for name, dims in expected_dims.items():
        if name in names and tuple(group[name].metadata.dimension_names or ()) != dims:
            got = group[name].metadata.dimension_names
            p.add("dims", f"{name}: dims {got}, expected {dims}")
    return n, s


def _check_chunks_and_values(
    path: Path, group: zarr.Group, names: list[str], p: _Problems
) -> tuple[set[str], str | None]:
    """Every storage unit present and decodable, float arrays finite; also the fingerprint.

    Returns the names of arrays with unreadable data and the recomputed fingerprint (None
    when some data could not be read).
    """
    broken: set[str] = set()
    h = hashlib.sha256(_FINGERPRINT_TAG)
    for name in names:
        arr = group[name]
        _hash_header(h, name, arr)
        unit, grid = _storage_grid(arr)
        axis0_only = all(g <= 1 for g in grid[1:])
        enc = arr.metadata.chunk_key_encoding
        adir = path / name
        bad_values = 0
        first_bad = None
        for coords in np.ndindex(grid):
            key = enc.encode_chunk_key(coords)
            sel = tuple(
                slice(c * u, min((c + 1) * u, s))
                for c, u, s in zip(coords, unit, arr.shape, strict=True)
            )
            what = ", ".join(f"{s.start}:{s.stop}" for s in sel)
            fpath = adir / key
            if not fpath.is_file():
                p.add("chunk", f"{name}: chunk file {key} missing ([{what}])")
                broken.add(name)
                continue
            try:
                block = np.asarray(arr[sel])
            except Exception as exc:  # noqa: BLE001 - any decode failure is a corrupt chunk
                p.add("chunk", f"{name}: chunk file {key} unreadable ({type(exc).__name__}: {exc})")
                broken.add(name)
                continue
            if arr.shards is not None:
                for msg in _shard_index_problems(arr, fpath, coords):
                    p.add("chunk", f"{name}: chunk file {key}: {msg}")
                    broken.add(name)
            if block.dtype.kind in "fc":
                finite = np.isfinite(block)
                if not finite.all():
                    bad_values += int((~finite).sum())
                    if first_bad is None:
                        first_bad = tuple(
                            int(i) + s.start
                            for i, s in zip(np.argwhere(~finite)[0], sel, strict=True)
                        )
            if axis0_only and name not in broken:
                _hash_block(h, block)
        if bad_values:
            p.add("nan", f"{name}: {bad_values} NaN/inf value(s), first at index {first_bad}")
        if not axis0_only and not broken:
            step = _axis0_step(arr)
            for start in range(0, arr.shape[0], step):
                _hash_block(h, np.asarray(arr[start : start + step]))
    return broken, (None if broken else h.hexdigest())


def _check_labels(group: zarr.Group, names: list[str], broken: set[str], p: _Problems) -> None:
    """Label ids contiguous per image; instance table equal to the label images."""
    need = ["labels", "instances/image", "instances/instance_id", "pixel_size_nm"]
    if any(n not in names or n in broken for n in need):
        return
    labels = group["labels"]
    n = labels.shape[0]
    cols = {
        name.split("/", 1)[1]: np.asarray(group[name][:])
        for name in names
        if name.startswith("instances/") and name not in broken
    }
    lengths = {k: len(v) for k, v in cols.items()}
    if len(set(lengths.values())) > 1:
        p.add("table", f"instances: columns have different lengths {lengths}")
        return
    img = cols["image"].astype(np.int64)
    ids = cols["instance_id"].astype(np.int64)
    area = cols.get("area_nm2")
    if img.size and (img.min() < 0 or img.max() >= n):
        p.add("table", f"instances/image: values outside [0, {n})")
        return
    if "state" in cols and "image_state" in names and "image_state" not in broken:
        image_state = np.asarray(group["image_state"][:])
        wrong = np.flatnonzero(image_state[img] != cols["state"])
        if wrong.size:
            p.add("table", f"instances/state: {wrong.size} row(s) disagree with image_state")
    px = np.asarray(group["pixel_size_nm"][:], dtype=float)
    order = np.lexsort((ids, img))
    img, ids = img[order], ids[order]
    area = area[order] if area is not None else None
    bounds = np.searchsorted(img, np.arange(n + 1))
    step = _axis0_step(labels)
    for start in range(0, n, step):
        block = np.asarray(labels[start : start + step])
        for j in range(block.shape[0]):
            i = start + j
            lab = block[j].ravel()
            if lab.size and lab.min() < 0:
                p.add("labels", f"labels: image {i} has negative label ids")
                continue
            counts = np.bincount(lab) if lab.size else np.zeros(1, np.int64)
            present = np.flatnonzero(counts[1:]) + 1
            k = len(present)
            if k and present[-1] != k:
                p.add(
                    "labels",
                    f"labels: image {i} ids are not contiguous 1..{k} "
                    f"(max {int(present[-1])}, {k} distinct)",
                )
            lo, hi = bounds[i], bounds[i + 1]
            t_ids = ids[lo:hi]
            if len(np.unique(t_ids)) != len(t_ids):
                p.add("table", f"instances: image {i} has duplicate instance ids")
            if set(t_ids.tolist()) != set(present.tolist()):
                only_t = sorted(set(t_ids.tolist()) - set(present.tolist()))
                only_l = sorted(set(present.tolist()) - set(t_ids.tolist()))
                p.add(
                    "table",
                    f"instances: image {i}: table ids not in labels {only_t}, "
                    f"label ids not in table {only_l}",
                )
                continue
            if area is not None and hi > lo:
                want = counts[t_ids] * px[i] ** 2
                got = area[lo:hi].astype(float)
                bad = ~np.isclose(got, want, rtol=1e-4, atol=1e-6)
                for r in np.flatnonzero(bad)[:3]:
                    p.add(
                        "table",
                        f"instances: image {i} instance {int(t_ids[r])}: area_nm2 {got[r]:.6g}"
                        f" != {int(counts[t_ids[r]])} px x {px[i]:.6g}^2 nm^2 = {want[r]:.6g}",
                    )


def _check_split(group: zarr.Group, names: list[str], broken: set[str], p: _Problems) -> None:
    need = ["split", "image_state", "state_id"]
    if any(n not in names or n in broken for n in need):
        return
    split = np.asarray(group["split"][:])
    image_state = np.asarray(group["image_state"][:]).astype(np.int64)
    s = group["state_id"].shape[0]
    state_ids = np.asarray(group["state_id"][:])
    bad = ~np.isin(split, list(SPLIT_CODES.values()))
    if bad.any():
        p.add("split", f"split: invalid codes {sorted(set(split[bad].tolist()))} (valid 0, 1, 2)")
    if image_state.size and (image_state.min() < 0 or image_state.max() >= s):
        p.add("split", f"image_state: values outside [0, {s})")
        return
    per_state: dict[int, set[int]] = {}
    for st, code in zip(image_state.tolist(), split.tolist(), strict=True):
        per_state.setdefault(st, set()).add(code)
    for st, codes in sorted(per_state.items()):
        if len(codes) > 1:
            p.add(
                "split",
                f"split: state {int(state_ids[st])} (index {st}) has images in several splits "
                f"{sorted(codes)}",
            )
    without = sorted(set(range(s)) - per_state.keys())
    if without:
        p.add("split", f"image_state: states {without[:10]} have no images")
    if "state_split" in names and "state_split" not in broken:
        ss = np.asarray(group["state_split"][:])
        for st, codes in sorted(per_state.items()):
            if len(codes) == 1 and ss[st] not in codes:
                p.add("split", f"state_split: state index {st} is {ss[st]}, its images {codes}")
    fractions = group["split"].attrs.get("fractions", [1, 1, 1])
    if s >= 3:
        state_codes = {st: next(iter(c)) for st, c in per_state.items() if len(c) == 1}
        for name, code in SPLIT_CODES.items():
            if fractions[code] > 0 and code not in state_codes.values():
                p.add("split", f"split: no state in {name} ({s} states)")


def check(store: str | Path) -> list[str]:
    """Problems of the dataset store at ``store`` (empty list: none found).

    Checks the consolidated metadata against every node's own ``zarr.json``; required arrays,
    dimension names, dtypes and shapes (N images, S states); that every chunk/shard file of
    every array's grid exists (listing the directory: zarr would return fill values for a
    missing one), decodes, and has no missing inner chunks; no NaN/inf in float arrays; label
    ids contiguous 1..K per image; the instance table equal to the label images (ids per
    image, ``area_nm2`` = pixel count x pixel_size_nm²); splits by state; and the stored
    fingerprint against the recomputed one. Reads from the per-array metadata, never the
    consolidated copy, so a stale consolidated copy cannot hide a problem.
    """
    path = Path(store)
    p = _Problems()
    try:
        group = _open_plain(path)
        names = _array_paths(group)
    except Exception as exc:  # noqa: BLE001 - report, don't raise
        return [f"{path}: cannot open as a Zarr v3 group ({type(exc).__name__}: {exc})"]
    _check_metadata(path, p)
    _check_layout(group, names, p)
    broken, recomputed = _check_chunks_and_values(path, group, names, p)
    _check_labels(group, names, broken, p)
    _check_split(group, names, broken, p)
    attrs = group.attrs.asdict()
    for key in ("config", "ltemfactory_version", "git_commit", "created_utc", "fingerprint"):
        if key not in attrs:
            p.add("provenance", f"root attributes: {key!r} missing")
    stored = attrs.get("fingerprint")
    if recomputed is None:
        p.add("fingerprint", "fingerprint: not verified (unreadable data, see above)")
    elif stored is not None and stored != recomputed:
        p.add("fingerprint", f"fingerprint: stored {stored} != recomputed {recomputed}")
    shard = attrs.get("image_shard")
    if shard and "images" in names and group["images"].shards:
        if group["images"].shards[0] != shard:
            p.add("layout", f"images: shard {group['images'].shards[0]} != image_shard {shard}")
        for b in attrs.get("inputs", []):
            if b.get("image_offset", 0) % shard:
                p.add("layout", f"input batch at image {b['image_offset']} is not shard-aligned")
    return p.result()


def check_or_raise(store: str | Path) -> None:
    """Raise :class:`InputError` listing every problem :func:`check` finds in ``store``."""
    problems = check(store)
    if problems:
        lines = "\n".join(f"  - {m}" for m in problems)
        raise InputError(f"{store}: {len(problems)} problem(s) in dataset store:\n{lines}")


# --------------------------------------------------------------------------------------------
# Dataset card


_INDEX_ARRAYS = {
    "state_id",
    "image_state",
    "image_batch",
    "state_batch",
    "split",
    "state_split",
    "variant",
    "seed",
    "image_state_id",
}


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _hist_figure(group, names: list[str], title: str, out: Path) -> bool:
    from ltemfactory.plotting import plt, save_figure

    if not names:
        return False
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, name in zip(axes.ravel(), names, strict=False):
        ax.axis("on")
        data = np.asarray(group[name][:], dtype=float)
        ax.hist(data[np.isfinite(data)], bins=min(30, max(5, len(data) // 2)), color="0.4")
        units = group[name].attrs.get("units") or ""
        ax.set_title(f"{name} [{units}]" if units else name, fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, out)
    return True


def _montage(group, out: Path, n_examples: int = 4) -> None:
    from matplotlib.colors import ListedColormap

    from ltemfactory.plotting import plt, save_figure

    n = group["images"].shape[0]
    image_state = np.asarray(group["image_state"][:])
    split = np.asarray(group["split"][:])
    picks: list[int] = []
    # one image per split first, then further states
    for code in SPLIT_CODES.values():
        idx = np.flatnonzero(split == code)
        if idx.size and len(picks) < n_examples:
            picks.append(int(idx[0]))
    seen = {image_state[i] for i in picks}
    for i in range(n):
        if len(picks) >= n_examples:
            break
        if image_state[i] not in seen:
            picks.append(i)
            seen.add(image_state[i])
    picks = sorted(picks) or [0]
    px = np.asarray(group["pixel_size_nm"][:])
    names = {v: k for k, v in SPLIT_CODES.items()}
    rng = np.random.default_rng(0)
    colors = ListedColormap(rng.uniform(0.2, 1.0, size=(256, 3)))
    fig, axes = plt.subplots(len(picks), 3, figsize=(9, 3.1 * len(picks)), squeeze=False)
    for row, i in enumerate(picks):
        img = np.asarray(group["images"][i])
        lab = np.asarray(group["labels"][i])
        st = int(image_state[i])
        mz = np.asarray(group["magnetization"][st, 2])
        ny, nx = img.shape
        ext = (0, nx * px[i], 0, ny * px[i])
        ax = axes[row]
        lo, hi = np.percentile(img, [1, 99])  # hot/dead pixels must not set the grey scale
        shown = {"cmap": "gray", "origin": "lower", "extent": ext, "vmin": lo, "vmax": hi}
        ax[0].imshow(img, **shown)
        ax[0].set_title(f"image {i} (state {st}, {names.get(int(split[i]), '?')})", fontsize=8)
        ax[1].imshow(img, **shown)
        masked = np.ma.masked_equal(lab % 256, 0) if lab.max() > 0 else np.ma.masked_all(lab.shape)
        ax[1].imshow(masked, cmap=colors, origin="lower", extent=ext, alpha=0.5, vmin=0, vmax=255)
        ax[1].set_title(f"labels: {int(lab.max())} instances", fontsize=8)
        ax[2].imshow(mz, cmap="RdBu_r", vmin=-1, vmax=1, origin="lower", extent=ext)
        ax[2].set_title("m_z (layer mean)", fontsize=8)
        for a in ax:
            a.tick_params(labelsize=7)
    fig.suptitle("examples: image | labels overlay | m_z (axes in nm, y up)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, out)


def card(store: str | Path, out_dir: str | Path) -> Path:
    """Write a Markdown dataset card ``out_dir/README.md`` with PNG figures; returns its path.

    The card has the counts of states, images and instances per split, a table of every
    per-state and per-image parameter (range and units), instance size statistics, the
    provenance and the fingerprint; figures: ``parameters_state.png``,
    ``parameters_image.png`` (histograms of the parameters that vary) and ``examples.png``
    (image | labels overlay | m_z for a few images). Every file is written atomically.
    """
    from ltemfactory.stores import open_store

    group = open_store(store)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    attrs = group.attrs.asdict()
    names = _array_paths(group)
    split = np.asarray(group["split"][:])
    state_split = np.asarray(group["state_split"][:]) if "state_split" in names else None
    inst_image = np.asarray(group["instances/image"][:])
    n_img = group["images"].shape[0]
    n_state = group["magnetization"].shape[0]
    lines = [
        f"# Dataset card: `{Path(store).name}`",
        "",
        f"Simulated Lorentz-TEM images of magnetic textures with instance labels "
        f"(ltemfactory {attrs.get('ltemfactory_version', '?')}). "
        f"{n_state} states, {n_img} images of {group['images'].shape[1]} x "
        f"{group['images'].shape[2]} px, {len(inst_image)} labelled instances.",
        "",
        "## Splits (by state: all images of a state share a split)",
        "",
        "| split | states | images | instances |",
        "|---|---:|---:|---:|",
    ]
    inst_split = split[inst_image] if len(inst_image) else np.zeros(0, np.uint8)
    for name, code in SPLIT_CODES.items():
        ns = int((state_split == code).sum()) if state_split is not None else "?"
        lines.append(
            f"| {name} | {ns} | {int((split == code).sum())} | {int((inst_split == code).sum())} |"
        )
    lines.append(f"| **all** | {n_state} | {n_img} | {len(inst_image)} |")

    varying: dict[str, list[str]] = {"state": [], "image": []}
    lines += ["", "## Parameters", "", "| parameter | per | units | min | median | max |"]
    lines.append("|---|---|---|---:|---:|---:|")
    for name in names:
        arr = group[name]
        dims = tuple(arr.metadata.dimension_names or ())
        if arr.ndim != 1 or dims[0] not in ("state", "image") or name in _INDEX_ARRAYS:
            continue
        units = arr.attrs.get("units") or ""
        data = np.asarray(arr[:])
        if _is_str(data.dtype):
            vals, counts = np.unique([str(x) for x in data.tolist()], return_counts=True)
            desc = ", ".join(f"{v} ({c})" for v, c in zip(vals, counts, strict=True))
            lines.append(f"| {name} | {dims[0]} | | {desc} | | |")
            continue
        data = data.astype(float)
        if not data.size:
            continue
        lo, med, hi = np.nanmin(data), np.nanmedian(data), np.nanmax(data)
        lines.append(f"| {name} | {dims[0]} | {units} | {_fmt(lo)} | {_fmt(med)} | {_fmt(hi)} |")
        if hi > lo and arr.dtype != bool:
            varying[dims[0]].append(name)

    lines += ["", "## Instance sizes", ""]
    stat_cols = [
        c
        for c in (
            "area_nm2",
            "equivalent_radius_nm",
            "major_axis_nm",
            "minor_axis_nm",
            "ellipse_major_nm",
            "ellipse_minor_nm",
        )
        if f"instances/{c}" in names
    ]
    if len(inst_image) and stat_cols:
        lines += ["| column | units | mean | std | p5 | p50 | p95 |", "|---|---|" + "---:|" * 5]
        for c in stat_cols:
            v = np.asarray(group[f"instances/{c}"][:], dtype=float)
            p5, p50, p95 = np.percentile(v, [5, 50, 95])
            units = group[f"instances/{c}"].attrs.get("units", "")
            lines.append(
                f"| {c} | {units} | {_fmt(v.mean())} | {_fmt(v.std())} | {_fmt(p5)} | "
                f"{_fmt(p50)} | {_fmt(p95)} |"
            )
        per_image = np.bincount(inst_image, minlength=n_img)
        lines += [
            "",
            f"Instances per image: mean {per_image.mean():.2f}, max {int(per_image.max())}, "
            f"{int((per_image == 0).sum())} images without instances.",
        ]
        if "instances/touches_border" in names:
            tb = np.asarray(group["instances/touches_border"][:]).astype(bool)
            lines.append(f"Instances touching the border: {int(tb.sum())}.")
    else:
        lines.append("No instances.")

    figures = []
    if _hist_figure(
        group, varying["state"], "per-state parameters", out_dir / "parameters_state.png"
    ):
        figures.append(("Per-state parameters", "parameters_state.png"))
    if _hist_figure(
        group, varying["image"], "per-image parameters", out_dir / "parameters_image.png"
    ):
        figures.append(("Per-image imaging parameters", "parameters_image.png"))
    _montage(group, out_dir / "examples.png")
    figures.append(("Examples: image, labels overlay, m_z", "examples.png"))
    lines += ["", "## Figures", ""]
    for title, fname in figures:
        lines += [f"### {title}", "", f"![{title}]({fname})", ""]

    cfg = attrs.get("config", {})
    lines += [
        "## Provenance",
        "",
        f"- created (UTC): {attrs.get('created_utc', '?')}",
        f"- ltemfactory version: {attrs.get('ltemfactory_version', '?')}",
        f"- git commit: `{attrs.get('git_commit', 'unknown')}`"
        + (" (uncommitted changes)" if attrs.get("git_dirty") else ""),
        f"- seed: {attrs.get('seed', '?')}; split fractions {attrs.get('split_fractions', '?')}",
        f"- inputs: {len(attrs.get('inputs', []))} batches, SHA-256 of paths + state ids "
        f"`{attrs.get('inputs_sha256', '?')}`",
        f"- shards: {attrs.get('image_shard', '?')} images, {attrs.get('state_shard', '?')} states",
        "",
        "## Fingerprint",
        "",
        f"`{attrs.get('fingerprint', '?')}` (SHA-256 of all array contents; recompute with "
        "`ltemfactory.dataset.fingerprint`)",
        "",
        "<details><summary>Config</summary>",
        "",
        "```json",
        json.dumps(cfg, indent=2, sort_keys=True),
        "```",
        "",
        "</details>",
        "",
    ]
    readme = out_dir / "README.md"
    _atomic_text(readme, "\n".join(lines))
    return readme
