"""End-to-end inference time on the CPU for a 700×700 and a 2048×2048 image (issue 6 targets:
≤ 2 s and ≤ 15 s on the 2-core dev machine).

The network is either a trained model (``--model``: a model directory of ``ltemfactory train``
or a ``.pt`` file) or a random-weight U-Net of ``--depth`` × ``--width`` (default 4 × 8, the
demo's network), which costs what a trained one of that size costs in the network (its noisy
maps make the watershed decoding slower than a trained model's). The images are synthetic
hexagonal lattices of Gaussian skyrmions; the random network is given the demo dataset's
training nearest-neighbour distance (:data:`TRAIN_NN_PX`), a trained one keeps its own. Two
spacings, i.e. two FFT scale factors:

* ``at_training_spacing``: lattice spacing = training spacing, factor ≈ 1: the network sees
  every pixel (the worst case for a given image size);
* ``at_shipped_spacing``: the spacing of the shipped experimental image (37.4 px), factor ≈ 0.6
  for the demo's training spacing: the image is shrunk before the network, as for the demo's
  experimental image.

Timed per size and spacing, after one warm-up call (minimum over ``--repeat`` runs):

* ``seconds``: :func:`ltemfactory.inference.pipeline.infer_image` from the ``.npy`` file to the
  last output file (read, FFT lattice estimate, resampling, low-pass, tiled network, watershed
  decoding, size prior, label TIFF, CSV, overlay and ψ6 PNGs, lattice statistics JSON);
* ``seconds_segment``: :func:`~ltemfactory.inference.pipeline.segment_image` alone with the
  same scale factor and priors (resampling, low-pass, tiled network, decoding, size prior).

Usage: ``python benchmarks/infer.py [--sizes 700 2048] [--model DIR | --depth 4 --width 8]
[--threads N] [--repeat 1]``; prints JSON.
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

from ltemfactory.inference.pipeline import (
    LOWPASS_SIGMA_A,
    MIN_DIAMETER_FRACTION,
    infer_image,
    load_predictor,
    model_scale,
    segment_image,
    size_priors,
)
from ltemfactory.training.normalisation import NORMALISATION
from ltemfactory.training.predictor import Predictor
from ltemfactory.training.unet import UNet, UNetConfig

TRAIN_NN_PX = 22.5
"""Median nearest-neighbour distance [px] of the skyrmions in the demo training dataset."""

SHIPPED_NN_PX = 37.4
"""Nearest-neighbour distance [px] of the skyrmions in the shipped experimental image."""


def lattice_image(n: int, nn: float, seed: int = 0) -> np.ndarray:
    """n×n float32 LTEM-like image of a hexagonal skyrmion lattice: every site is a dark/bright
    lobe pair (the derivative of a Gaussian of σ = nn/5 along a fixed direction, as a tilted Néel
    skyrmion looks), 10 % contrast on a unit background, 2 % Gaussian noise."""
    rng = np.random.default_rng(seed)
    t = 0.3
    a1 = nn * np.array([math.sin(t), math.cos(t)])
    a2 = nn * np.array([math.sin(t + math.pi / 3), math.cos(t + math.pi / 3)])
    k = int(2 * n / nn) + 4
    i, j = np.mgrid[-k : k + 1, -k : k + 1]
    sites = i.reshape(-1, 1) * a1 + j.reshape(-1, 1) * a2
    sigma = nn / 5
    w = int(4 * sigma) + 1
    sites = sites[np.all((sites > -w) & (sites < n + w - 1), axis=1)]
    img = np.zeros((n, n))
    yy, xx = np.mgrid[-w : w + 1, -w : w + 1]
    lobe = (math.cos(1.0) * xx + math.sin(1.0) * yy) / sigma  # derivative direction 57° from +x
    for r, c in sites:
        r0, c0 = int(round(r)), int(round(c))
        dy, dx = yy + r0 - r, xx + c0 - c
        patch = lobe * np.exp(-(dy**2 + dx**2) / (2 * sigma**2))
        rs, cs = (
            slice(max(r0 - w, 0), min(r0 + w + 1, n)),
            slice(max(c0 - w, 0), min(c0 + w + 1, n)),
        )
        img[rs, cs] += patch[
            rs.start - r0 + w : rs.stop - r0 + w, cs.start - c0 + w : cs.stop - c0 + w
        ]
    img = 1 + 0.1 * img / np.abs(img).max() + rng.normal(0, 0.02, img.shape)
    return img.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[700, 2048])
    parser.add_argument("--model", help="trained model directory or .pt (default: random weights)")
    parser.add_argument("--depth", type=int, default=4, help="random network's depth")
    parser.add_argument("--width", type=int, default=8, help="random network's base width")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per size (min taken)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.model:
        predictor = load_predictor(args.model)
    else:
        predictor = Predictor(
            UNet(UNetConfig(depth=args.depth, width=args.width)),
            formulation="instance",
            normalisation=NORMALISATION,
            train_diameter_px=TRAIN_NN_PX / 2,
            metadata={"train_nn_distance_px": TRAIN_NN_PX},
        ).to("cpu")
    mscale = model_scale(predictor)
    train_nn = float(mscale.get("train_nn_distance_px") or TRAIN_NN_PX)
    spacings = {"at_training_spacing": train_nn, "at_shipped_spacing": SHIPPED_NN_PX}
    priors = size_priors(mscale, LOWPASS_SIGMA_A, MIN_DIAMETER_FRACTION)
    result: dict = {
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "model": args.model or "random weights",
        "network": predictor.network.config.to_dict(),
        "train_nn_distance_px": train_nn,
        "tile_px": 256,
        "overlap_px": 32,
        "sizes": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        warm = tmpdir / "warm.npy"
        np.save(warm, lattice_image(256, train_nn))
        infer_image(warm, predictor, tmpdir / "out")
        for n in args.sizes:
            for label, nn in spacings.items():
                img = lattice_image(n, nn)
                path = tmpdir / f"lattice_{n}.npy"
                np.save(path, img)
                total, seg, entry = math.inf, math.inf, {}
                for _ in range(args.repeat):
                    start = time.perf_counter()
                    entry = infer_image(path, predictor, tmpdir / "out")
                    total = min(total, time.perf_counter() - start)
                    start = time.perf_counter()
                    segment_image(
                        img,
                        predictor,
                        entry["scale_factor"],
                        lowpass_sigma_px=priors["lowpass_sigma_model_px"] or 0.0,
                        min_diameter_px=priors["min_diameter_model_px"] or 0.0,
                    )
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
