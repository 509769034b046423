"""Benchmark of the dataset stage (``ltemfactory.dataset``): assembly and training reads.

Builds synthetic per-batch relax and render stores (smooth bubble textures, noisy float32
images: the compressibility of real data, none of the physics), then prints one JSON document:

* ``assembly``: wall time of :func:`ltemfactory.dataset.assemble` (threaded scheduler, a cheap
  threshold labeller so the figure is the I/O and compression path) and the throughput in MB/s of
  uncompressed image-sized output (images, clean_images, phase, labels, magnetization) and of
  uncompressed input read;
* ``store``: bytes on disk per image (whole store / N) and the compression ratio;
* ``random_reads``: samples/s reading single (image, labels) pairs at random indices through a
  ``torch.utils.data.DataLoader`` over a minimal ``Dataset`` wrapper, with 0 and 2 worker
  processes (warm OS page cache: the store was just written);
* ``fingerprint_s`` and ``check_s``: time to hash and to fully check the store.

Usage: ``python benchmarks/dataset.py [--images 384] [--size 256] [--batch 32] [--reads 512]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _textures(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Layer-mean-like m (n, 3, 1, size, size): reversed bubbles on a +z background."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    m = np.zeros((n, 3, 1, size, size), np.float32)
    for s in range(n):
        mz = np.ones((size, size), np.float32)
        for _ in range(rng.integers(5, 25)):
            cy, cx = rng.uniform(0, size, 2)
            r = rng.uniform(4, 14)
            d = np.hypot(yy - cy, xx - cx)
            mz = np.minimum(mz, np.tanh((d - r) / 2.5).astype(np.float32))
        mperp = np.sqrt(np.clip(1 - mz**2, 0, 1))
        theta = np.arctan2(yy - size / 2, xx - size / 2)
        m[s, 0, 0] = mperp * np.cos(theta)
        m[s, 1, 0] = mperp * np.sin(theta)
        m[s, 2, 0] = mz
    return m


def make_inputs(root: Path, n_images: int, size: int, batch: int, variants: int) -> list:
    from ltemfactory.stores import Variable, atomic_store, write_variable

    rng = np.random.default_rng(0)
    states_per_batch = batch // variants
    n_batches = -(-n_images // batch)
    out = []
    sid = 0
    for b in range(n_batches):
        ns = min(states_per_batch, (n_images - b * batch) // variants)
        m = _textures(ns, size, rng)
        ids = np.arange(sid, sid + ns, dtype=np.int64)
        sid += ns
        relax, render = root / f"relax_{b}.zarr", root / f"render_{b}.zarr"
        with atomic_store(relax) as g:
            write_variable(
                g,
                "m",
                Variable(
                    m,
                    ("state", "component", "layer", "row", "col"),
                    "1",
                    chunks=(1, 3, 1, size, size),
                ),
            )
            write_variable(g, "state_id", Variable(ids, ("state",)))
            for key, unit in (("field_mT", "mT"), ("Ms_A_per_m", "A/m"), ("D_J_per_m2", "J/m^2")):
                write_variable(g, key, Variable(rng.uniform(1, 2, ns), ("state",), unit))
        k = ns * variants
        mz = np.repeat(m[:, 2, 0], variants, axis=0)
        clean = (1 + 0.2 * np.gradient(mz, axis=-1)).astype(np.float32)
        image = (rng.poisson(clean * 100) / 100).astype(np.float32)
        phase = np.cumsum(mz, axis=-1, dtype=np.float32) * 0.01
        dims = ("image", "row", "col")
        ch = (1, size, size)
        with atomic_store(render) as g:
            write_variable(g, "image", Variable(image, dims, "1", chunks=ch))
            write_variable(g, "clean_image", Variable(clean, dims, "1", chunks=ch))
            write_variable(g, "magnetic_phase", Variable(phase, dims, "rad", chunks=ch))
            write_variable(g, "state_id", Variable(np.repeat(ids, variants), ("image",)))
            write_variable(
                g, "state_index", Variable(np.repeat(np.arange(ns), variants), ("image",))
            )
            write_variable(g, "variant", Variable(np.tile(np.arange(variants), ns), ("image",)))
            write_variable(g, "pixel_size_nm", Variable(np.full(k, 3.0), ("image",), "nm"))
            for key, unit in (("defocus_mm", "mm"), ("tilt_deg", "deg")):
                write_variable(g, key, Variable(rng.uniform(-3, 3, k), ("image",), unit))
        out.append((str(relax), str(render)))
    return out


def threshold_labels(relax: str, render: str):
    """Cheap labeller: connected m_z < 0 regions of each image's state."""
    from scipy import ndimage

    from ltemfactory.stores import open_store

    r, q = open_store(relax), open_store(render)
    mz = np.asarray(r["m"][:, 2, 0])
    state_index = np.asarray(q["state_index"][:])
    px = np.asarray(q["pixel_size_nm"][:])
    labels = np.zeros((len(state_index), *mz.shape[1:]), np.int32)
    cols: dict[str, list] = {"image_index": [], "instance_id": [], "area_nm2": []}
    for i, s in enumerate(state_index):
        lab, k = ndimage.label(mz[s] < 0)
        labels[i] = lab
        counts = np.bincount(lab.ravel(), minlength=k + 1)
        cols["image_index"] += [i] * k
        cols["instance_id"] += list(range(1, k + 1))
        cols["area_nm2"] += list(counts[1:] * px[i] ** 2)
    return labels, {k: np.asarray(v) for k, v in cols.items()}


class PairDataset:
    """Minimal map-style dataset: (image, labels) of one index, store opened per worker."""

    def __init__(self, path: str):
        self.path = path
        self._arrays = None
        from ltemfactory.stores import open_store

        self.n = open_store(path)["images"].shape[0]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        import torch

        from ltemfactory.stores import open_store

        if self._arrays is None:  # once per worker process
            g = open_store(self.path)
            self._arrays = (g["images"], g["labels"])
        images, labels = self._arrays
        return torch.from_numpy(images[i]), torch.from_numpy(labels[i])


class ShardShuffleDataset(torch.utils.data.IterableDataset):
    """Iterable dataset: shards in a seeded random order (split over workers), each shard read
    whole and yielded in a random order — random at shard granularity, one read per shard."""

    def __init__(self, path: str, seed: int = 0):
        from ltemfactory.stores import open_store

        self.path, self.seed = path, seed
        images = open_store(path)["images"]
        self.n, self.shard = images.shape[0], images.shards[0]

    def __iter__(self):
        from ltemfactory.stores import open_store

        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        g = open_store(self.path)
        images, labels = g["images"], g["labels"]
        rng = np.random.default_rng([self.seed, wid])
        starts = np.arange(0, self.n, self.shard)
        for start in rng.permutation(starts)[wid::nw]:
            stop = min(start + self.shard, self.n)
            block_i, block_l = images[start:stop], labels[start:stop]
            for j in rng.permutation(stop - start):
                yield torch.from_numpy(block_i[j]), torch.from_numpy(block_l[j])


def shard_reads(path: str, workers: int) -> dict:
    from torch.utils.data import DataLoader

    loader = DataLoader(ShardShuffleDataset(path), batch_size=None, num_workers=workers)
    t0 = time.perf_counter()
    n = sum(1 for _ in loader)
    dt = time.perf_counter() - t0
    return {"workers": workers, "samples": n, "samples_per_s": round(n / dt, 1)}


def random_reads(path: str, reads: int, workers: int) -> dict:
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    ds = PairDataset(path)
    sampler = RandomSampler(
        range(len(ds)), num_samples=reads, generator=torch.Generator().manual_seed(0)
    )
    loader = DataLoader(
        ds, batch_size=None, sampler=sampler, num_workers=workers, persistent_workers=False
    )
    it = iter(loader)
    next(it)  # worker start-up and store opening are not counted
    t0 = time.perf_counter()
    n = 0
    for image, label in it:
        assert image.shape == label.shape
        n += 1
    dt = time.perf_counter() - t0
    return {"workers": workers, "samples": n, "samples_per_s": round(n / dt, 1)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=384)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=32, help="images per input batch (= shard)")
    p.add_argument("--variants", type=int, default=4)
    p.add_argument("--reads", type=int, default=512)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--dir", default=None, help="scratch directory (default: a temporary one)")
    args = p.parse_args(argv)

    from ltemfactory import dataset

    root = Path(args.dir or tempfile.mkdtemp(prefix="ltemfactory-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        batches = make_inputs(root, args.images, args.size, args.batch, args.variants)
        out = root / "dataset.zarr"
        config = {"seed": 1}
        t0 = time.perf_counter()
        dataset.assemble(batches, out, config, label_fn=threshold_labels)
        t_asm = time.perf_counter() - t0

        from ltemfactory.stores import open_store

        g = open_store(out)
        n = g["images"].shape[0]
        raw = sum(
            g[a].nbytes for a in ("images", "clean_images", "phase", "labels", "magnetization")
        )
        raw_in = sum(
            open_store(relax)["m"].nbytes
            + sum(open_store(render)[a].nbytes for a in ("image", "clean_image", "magnetic_phase"))
            for relax, render in batches
        )
        size_on_disk = _du(out)
        t0 = time.perf_counter()
        dataset.fingerprint(out)
        t_fp = time.perf_counter() - t0
        t0 = time.perf_counter()
        problems = dataset.check(out)
        t_check = time.perf_counter() - t0
        reads = [random_reads(str(out), args.reads, w) for w in args.workers]
        shard_wise = [shard_reads(str(out), w) for w in args.workers]
        result = {
            "benchmark": "dataset",
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "images": n,
            "size_px": args.size,
            "batch_images": args.batch,
            "assembly": {
                "seconds": round(t_asm, 2),
                "output_MB_per_s": round(raw / 1e6 / t_asm, 1),
                "input_MB_per_s": round(raw_in / 1e6 / t_asm, 1),
                "uncompressed_MB": round(raw / 1e6, 1),
            },
            "store": {
                "bytes_per_image": int(size_on_disk / n),
                "MB_total": round(size_on_disk / 1e6, 1),
                "compression_ratio": round(raw / size_on_disk, 2),
            },
            "random_reads": reads,
            "shard_shuffled_reads": shard_wise,
            "fingerprint_s": round(t_fp, 2),
            "check_s": round(t_check, 2),
            "check_problems": len(problems),
        }
        print(json.dumps(result, indent=1))
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
