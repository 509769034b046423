"""Assembly of per-batch relax and render stores into one dataset store (:func:`assemble`).

Chunking: the image-sized arrays have one image per chunk (``(1, H, W)``), grouped in shards
of one input batch (``(B, H, W)``, B = the largest batch's image count); ``magnetization``
likewise with the state axis. Every shard has exactly one writer, so no locks are needed (Zarr
rewrites a whole shard file on each partial write: two writers of one shard lose data): each
big array is written by one Dask task per shard, the labels by one task per batch over its own
shards. Batches must then start on shard boundaries: that holds when every batch but the last
has the largest size (the normal case — the last batch may be smaller). Otherwise the shard is
the greatest common divisor of the batch sizes (logged), which keeps one writer per shard. The
write regions come from :func:`plan_shard_writes` (a pure function) and are checked by
:func:`verify_shard_writes` (whole shards, disjoint, covering the array, each inside its batch)
before anything is written. 1-D arrays are small and written whole by the coordinating
process. Compression is :data:`ltemfactory.stores.COMPRESSOR` (Blosc-zstd + bitshuffle); chunks
equal to the fill value are written too (``write_empty_chunks``), so every chunk of the grid
exists on disk and :func:`~ltemfactory.dataset.checking.check` can tell a missing file from an
all-zero one.

Atomicity: the store is built under ``<name>.tmp-<host>-<pid>`` next to ``out`` and renamed when
complete (a previous store under ``out`` is replaced only then). The consolidated metadata is
written once, as the last step before the rename. A failed run removes its temporary store; one
that was killed leaves it, and the next run removes it (same host, process gone) and starts over.

Provenance (root attributes): ``config``, ``ltemfactory_version``, ``git_commit`` (of the
current directory, else ``"unknown"``), ``git_dirty``, ``inputs`` (paths, offsets, sizes),
``inputs_sha256`` (paths and their ``state_id`` arrays), ``seed``, ``split_fractions``,
``created_utc`` and ``fingerprint`` (:func:`fingerprint`, content only — identical for two
assemblies of the same inputs, whatever the Dask scheduler).

Dask: ``scheduler`` may be a ``dask.distributed.Client`` of a remote cluster
(:func:`ltemfactory.dask_cluster.dask_client`), so the tasks get absolute paths: workers with
another working directory read and write the same files (the provenance keeps the paths as
given).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ltemfactory import __version__
from ltemfactory.dataset.fingerprinting import fingerprint
from ltemfactory.dataset.inputs import _collect_1d, _open_input, _read_inputs
from ltemfactory.dataset.labelling import LabelFn, _default_label_fn, _label_batch, _merge_tables
from ltemfactory.dataset.layout import (
    _RENDER_REPLACED,
    IMAGE_DIMS,
    IMAGE_FIELDS,
    STATE_DIMS,
    _units_for,
)
from ltemfactory.dataset.split import SPLIT_CODES, split_fractions, split_seed, split_states
from ltemfactory.dataset.writing import (
    _block_chunks,
    _create,
    _json_safe,
    _shard_size,
    _writable,
    _write_1d,
)
from ltemfactory.stores import atomic_store

log = logging.getLogger(__name__)

Region = tuple[int, int]
"""A write region along the sample axis: ``(start, stop)``, stop exclusive."""


def plan_shard_writes(sizes: Sequence[int]) -> tuple[int, list[list[Region]]]:
    """Shard length and write regions along the sample axis for batches of ``sizes``.

    The batches are laid out one after another; ``regions[b]`` lists the ``(start, stop)``
    regions that batch ``b``'s writer tasks write, one task per region, each region one whole
    shard (or the array's partial last shard). Verified by :func:`verify_shard_writes`.
    """
    sizes = [int(n) for n in sizes]
    if not sizes or min(sizes) < 0:
        raise ValueError(f"plan_shard_writes: expected non-negative batch sizes, got {sizes}")
    shard = _shard_size(sizes)
    regions: list[list[Region]] = []
    start = 0
    for n in sizes:
        batch: list[Region] = []
        for length in _block_chunks(n, shard) if n else ():
            batch.append((start, start + length))
            start += length
        regions.append(batch)
    verify_shard_writes(sizes, shard, regions)
    return shard, regions


def verify_shard_writes(sizes: Sequence[int], shard: int, regions: Sequence[Sequence[Region]]):
    """Raise ``ValueError`` unless ``regions`` give exactly one writer per shard.

    Checks: ``shard >= 1``; the regions of batch ``b`` cover exactly its range of the array;
    together they are disjoint and cover ``[0, sum(sizes))``; taken in order, each is one whole
    shard or the array's partial last shard (so each starts on a shard boundary). Two regions
    that share a shard would race: Zarr rewrites a whole shard file on every partial write, so
    the last writer silently drops the other's inner chunks.
    """
    sizes = [int(n) for n in sizes]
    total = sum(sizes)
    if shard < 1:
        raise ValueError(f"shard length {shard}: expected >= 1")
    if len(regions) != len(sizes):
        raise ValueError(f"{len(regions)} region lists for {len(sizes)} batches")
    offset = 0
    flat: list[tuple[int, int, int]] = []
    for b, (n, batch) in enumerate(zip(sizes, regions, strict=True)):
        covered = 0
        for a, z in batch:
            flat.append((a, z, b))
            if not offset <= a < z <= offset + n:
                raise ValueError(f"batch {b}: region [{a}, {z}) outside [{offset}, {offset + n})")
            covered += z - a
        if covered != n:
            raise ValueError(f"batch {b}: regions cover {covered} of its {n} samples")
        offset += n
    expect = 0
    for a, z, b in sorted(flat):
        if a != expect:
            what = "overlaps" if a < expect else "leaves a gap before"
            raise ValueError(f"batch {b}: region [{a}, {z}) {what} sample {expect}")
        if z - a != shard and not (z == total and z - a < shard):
            raise ValueError(f"batch {b}: region [{a}, {z}) is not one whole shard of {shard}")
        expect = z
    if expect != total:
        raise ValueError(f"regions end at {expect}, expected {total}")


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


def assemble(
    batches: Sequence[tuple[str | Path, str | Path]],
    out: str | Path,
    config: dict[str, Any],
    *,
    label_fn: LabelFn | None = None,
    scheduler: Any = None,
    sweep_table: str | Path | None = None,
) -> None:
    """Assemble (relax store, render store) ``batches`` into one dataset store at ``out``.

    ``sweep_table`` (the sweep TSV the batches were relaxed from), when given, is hashed into
    the provenance attribute ``sweep_sha256``.

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
    for b in inputs:  # the Dask tasks may run on workers with another working directory
        if not os.path.isabs(b.relax):
            b.relax_group = _open_input(os.path.abspath(b.relax))
        if not os.path.isabs(b.render):
            b.render_group = _open_input(os.path.abspath(b.render))
    img_shard, img_regions = plan_shard_writes([b.n_images for b in inputs])
    state_shard, state_regions = plan_shard_writes([b.n_states for b in inputs])
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
    with atomic_store(out.absolute()) as root:
        tmp = Path(root.store.root)
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
            # one Dask chunk per planned region: each store task writes one whole shard
            ichunks = (tuple(z - a for a, z in img_regions[b.index]), (ny,), (nx,))
            iregion = (slice(b.image_offset, b.image_offset + b.n_images),)
            for src, arr in targets.values():
                zsrc = b.render_group[src]
                sources.append(da.from_zarr(zsrc, chunks=ichunks).astype(np.float32))
                dests.append(_writable(arr))
                regions.append(iregion)
            b_nz = b.relax_group["m"].shape[2]  # layers may differ between batches
            schunks = (tuple(z - a for a, z in state_regions[b.index]), (3,), (b_nz,), (ny,), (nx,))
            m = da.from_zarr(b.relax_group["m"], chunks=schunks)
            sources.append(m.mean(axis=2, dtype=np.float64).astype(np.float32))
            dests.append(_writable(mag_arr))
            regions.append((slice(b.state_offset, b.state_offset + b.n_states),))
            # the batch's whole image range: its shards only (plan verified above)
            label_tasks.append(
                dask.delayed(_label_batch, pure=False)(
                    label_fn,
                    os.path.abspath(b.relax),
                    os.path.abspath(b.render),
                    _writable(labels_arr),
                    b.image_offset,
                    b.n_images,
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
                    "sweep_sha256": (
                        hashlib.sha256(Path(sweep_table).read_bytes()).hexdigest()
                        if sweep_table is not None
                        else None
                    ),
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
    log.info(
        "assembled %d images of %d states (%d instances) into %s",
        n_img,
        n_state,
        len(table["image"]),
        out,
    )
