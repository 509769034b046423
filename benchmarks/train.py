"""Throughput benchmark of the training stage and of inference with the trained network.

Prints one JSON document with, per device (the CPU, and CUDA when available):

* ``train_images_per_s``: optimiser steps of the U-Net of the default ``train`` config
  (instance formulation, three maps, the training losses, AdamW) on batches of random
  ``crop``² crops, in the precision the training stage picks for that device (fp32 on the CPU,
  bf16/fp16 mixed on CUDA);
* ``infer_ms_per_512``: one 512² image through :class:`ltemfactory.training.predictor.Predictor`
  — the network pass (``maps``) and the watershed decoding (``decode``) timed separately
  (decoding always runs on the CPU).

With ``--dataset STORE`` it also times the data pipeline alone (shard reads, augmentation and
target encoding; ``loader_images_per_s``) for each count of loader processes in ``--workers``.

Usage: ``python benchmarks/train.py [--crop 64] [--batch 16] [--depth 3] [--width 16]
[--seconds 10] [--devices cpu cuda] [--dataset STORE] [--workers 0 2]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from ltemfactory.instances import encode_targets
from ltemfactory.training.module import SkyrmionSegmenter
from ltemfactory.training.normalisation import NORMALISATION
from ltemfactory.training.predictor import Predictor, decode_maps
from ltemfactory.training.run import resolve_precision
from ltemfactory.training.unet import UNet, UNetConfig


def _batch(n: int, crop: int, device: torch.device) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(0)
    labels = np.zeros((n, crop, crop), dtype=np.int32)
    rr, cc = np.mgrid[:crop, :crop]
    for i in range(n):  # a few disks per crop, so the targets are not trivial
        for k, (r, c) in enumerate(rng.uniform(0, crop, size=(6, 2)), start=1):
            labels[i][(rr - r) ** 2 + (cc - c) ** 2 < 16] = k
    targets = encode_targets(labels)
    batch = {k: torch.as_tensor(v[:, None], device=device) for k, v in targets.items()}
    batch["image"] = torch.randn(n, 1, crop, crop, device=device)
    return batch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_throughput(
    device: torch.device, network: UNetConfig, crop: int, batch: int, seconds: float
) -> dict:
    module = SkyrmionSegmenter(UNet(network), normalisation=NORMALISATION).to(device)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    precision = resolve_precision("auto", "gpu" if device.type == "cuda" else "cpu")
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(enabled=precision == "16-mixed")
    data = _batch(batch, crop, device)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = module.losses(module(data["image"]), data)["loss"]
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    _sync(device)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        n += 1
    _sync(device)
    elapsed = time.perf_counter() - start
    return {"train_images_per_s": n * batch / elapsed, "precision": precision, "steps": n}


def infer_latency(device: torch.device, network: UNetConfig, seconds: float) -> dict:
    predictor = Predictor(UNet(network), formulation="instance", normalisation=NORMALISATION).to(
        device
    )
    image = predictor.normalise(np.random.default_rng(1).gamma(50, 1 / 50, (512, 512)))[None, None]
    predictor.maps(image)
    _sync(device)
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        t0 = time.perf_counter()
        maps = predictor.maps(image)
        _sync(device)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    decode_maps({k: v[0] for k, v in maps.items()}, "instance")
    decode_s = time.perf_counter() - t0
    return {"infer_ms_per_512": 1e3 * float(np.median(times)), "decode_ms_per_512": 1e3 * decode_s}


def loader_throughput(
    store: str, crop: int, batch: int, seconds: float, workers: list[int]
) -> dict:
    from ltemfactory.training.augment import AugmentConfig
    from ltemfactory.training.data import SkyrmionDataModule

    out = {}
    for n_workers in workers:
        dm = SkyrmionDataModule(
            store,
            augment=AugmentConfig(crop_px=crop),
            batch_size=batch,
            num_workers=n_workers,
            samples_per_epoch=100_000,
            seed=0,
        )
        dm.setup("fit")
        n, start = 0, time.perf_counter()
        for b in dm.train_dataloader():
            n += b["image"].shape[0]
            if time.perf_counter() - start > seconds:
                break
        out[f"loader_images_per_s_workers{n_workers}"] = n / (time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--depth", type=int, default=UNetConfig.depth, help="U-Net depth")
    parser.add_argument("--width", type=int, default=UNetConfig.width, help="U-Net base width")
    parser.add_argument("--devices", nargs="+", help="default: cpu (+ cuda when available)")
    parser.add_argument("--dataset", help="dataset store for the data-pipeline timing")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[0, 2], help="loader processes to time"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    devices = [torch.device(name) for name in names]
    network = UNetConfig(depth=args.depth, width=args.width)
    result = {
        "benchmark": "train",
        "network": network.to_dict(),
        "crop_px": args.crop,
        "batch": args.batch,
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "devices": {},
    }
    for device in devices:
        entry = train_throughput(device, network, args.crop, args.batch, args.seconds)
        entry.update(infer_latency(device, network, args.seconds / 2))
        if device.type == "cuda":
            entry["gpu"] = torch.cuda.get_device_name(device)
        result["devices"][device.type] = entry
    if args.dataset:
        result.update(
            loader_throughput(args.dataset, args.crop, args.batch, args.seconds, args.workers)
        )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
