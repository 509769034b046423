"""End-to-end inference time on the CPU for a 700×700 and a 2048×2048 image (issue 6 targets:
≤ 2 s and ≤ 15 s on the 2-core dev machine).

The network is a random-weight U-Net of the default training size (``UNetConfig()``: depth 3,
width 16), which costs what a trained one costs (its noisy maps make the watershed decoding
slower than a trained model's would). The images are synthetic hexagonal lattices of Gaussian
skyrmions; the model's training nearest-neighbour distance is that of the demo dataset
(:data:`TRAIN_NN_PX`). Two spacings, i.e. two FFT scale factors:

* ``at_training_spacing``: lattice spacing = training spacing, factor ≈ 1: the network sees
  every pixel (the worst case for a given image size);
* ``at_shipped_spacing``: the spacing of the shipped experimental image (37.4 px), factor ≈ 0.6:
  the image is shrunk before the network, as for the demo's experimental image.

Timed per size and spacing, after one warm-up call (minimum over ``--repeat`` runs):

* ``seconds``: :func:`ltemfactory.inference.pipeline.infer_image` from the ``.npy`` file to the
  last output file (read, FFT lattice estimate, resampling, tiled network, watershed decoding,
  label TIFF, CSV, overlay and ψ6 PNGs, lattice statistics JSON);
* ``seconds_segment``: :func:`~ltemfactory.inference.pipeline.segment_image` alone
  (resampling + tiled network + decoding).

Usage: ``python benchmarks/infer.py [--sizes 700 2048] [--threads N] [--repeat 1]``; prints JSON.
Timings on shared machines vary by 2x and more; use ``--repeat``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ltemfactory.inference.pipeline import infer_image, segment_image
from ltemfactory.training.normalisation import NORMALISATION
from ltemfactory.training.predictor import Predictor
from ltemfactory.training.unet import UNet, UNetConfig

TRAIN_NN_PX = 22.5
"""Median nearest-neighbour distance [px] of the skyrmions in the demo training dataset."""

SPACINGS = {"at_training_spacing": TRAIN_NN_PX, "at_shipped_spacing": 37.4}


def lattice_image(n: int, nn: float, seed: int = 0) -> np.ndarray:
    """n×n float32 hexagonal lattice of Gaussian blobs (σ = nn/4) with weak noise."""
    rng = np.random.default_rng(seed)
    t = 0.3
    a1 = nn * np.array([math.sin(t), math.cos(t)])
    a2 = nn * np.array([math.sin(t + math.pi / 3), math.cos(t + math.pi / 3)])
    k = int(2 * n / nn) + 4
    i, j = np.mgrid[-k : k + 1, -k : k + 1]
    sites = i.reshape(-1, 1) * a1 + j.reshape(-1, 1) * a2
    sites = sites[np.all((sites > -nn) & (sites < n + nn), axis=1)]
    img = np.zeros((n, n))
    sigma = nn / 4
    w = int(4 * sigma) + 1
    yy, xx = np.mgrid[-w : w + 1, -w : w + 1]
    for r, c in sites:
        r0, c0 = int(round(r)), int(round(c))
        patch = np.exp(-((yy + r0 - r) ** 2 + (xx + c0 - c) ** 2) / (2 * sigma**2))
        rs, cs = (
            slice(max(r0 - w, 0), min(r0 + w + 1, n)),
            slice(max(c0 - w, 0), min(c0 + w + 1, n)),
        )
        img[rs, cs] += patch[
            rs.start - r0 + w : rs.stop - r0 + w, cs.start - c0 + w : cs.stop - c0 + w
        ]
    img += rng.normal(0, 0.05, img.shape)
    return img.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[700, 2048])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per size (min taken)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    predictor = Predictor(
        UNet(UNetConfig()),
        formulation="instance",
        normalisation=NORMALISATION,
        train_diameter_px=TRAIN_NN_PX / 2,
        metadata={"train_nn_distance_px": TRAIN_NN_PX},
    ).to("cpu")
    result: dict = {
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "network": predictor.network.config.to_dict(),
        "tile_px": 256,
        "overlap_px": 32,
        "sizes": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        warm = tmpdir / "warm.npy"
        np.save(warm, lattice_image(256, TRAIN_NN_PX))
        infer_image(warm, predictor, tmpdir / "out")
        for n in args.sizes:
            for label, nn in SPACINGS.items():
                img = lattice_image(n, nn)
                path = tmpdir / f"lattice_{n}.npy"
                np.save(path, img)
                total, seg, entry = math.inf, math.inf, {}
                for _ in range(args.repeat):
                    start = time.perf_counter()
                    entry = infer_image(path, predictor, tmpdir / "out")
                    total = min(total, time.perf_counter() - start)
                    start = time.perf_counter()
                    segment_image(img, predictor, entry["scale_factor"])
                    seg = min(seg, time.perf_counter() - start)
                result["sizes"].setdefault(f"{n}x{n}", {})[label] = {
                    "seconds": total,
                    "seconds_segment": seg,
                    "scale_factor": entry["scale_factor"],
                    "n_instances": entry["n_instances"],
                }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
