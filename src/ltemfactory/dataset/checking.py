"""Verification of a dataset store: metadata, layout, every chunk, labels, splits, fingerprint."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import zarr

from ltemfactory.dataset.fingerprinting import (
    _FINGERPRINT_TAG,
    _axis0_step,
    _hash_block,
    _hash_header,
)
from ltemfactory.dataset.layout import (
    EXPECTED_DTYPES,
    IMAGE_DIMS,
    REQUIRED_ARRAYS,
    STATE_DIMS,
    _array_paths,
    _open_plain,
)
from ltemfactory.dataset.split import SPLIT_CODES
from ltemfactory.errors import InputError

_MAX_MESSAGES = 10  # per kind of problem in check()


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
