"""Detection against electron dose: a trained model on the test split re-noised to low doses.

Experimental LTEM images are far noisier than the demo's renders (1,000–20,000 e/px): the
shipped Fe3GeTe2 image has the lattice-ring-to-noise ratio of a demo image at ~30 e/px (README,
Inference). This benchmark measures what that costs: each test image's noise-free intensity
(``clean_images``) gets Poisson noise of ``--doses`` [e/px] (:func:`~ltemfactory.training.
augment.renoise`, seeded per image and dose) and goes through the inference segmentation
(:func:`~ltemfactory.inference.pipeline.segment_image` at scale factor 1 — the test images are
at the training scale — with the inference low-pass and size prior of ``--lowpass-sigma-a`` and
``--min-diameter-fraction``). The rendered images themselves (their own dose) are the
``rendered`` row. Scores: :func:`~ltemfactory.metrics.match_dataset` against the labels of the
kinds the model was trained to find.

To place an experimental image on the dose axis, :func:`ring_to_noise` compares the power of
the first lattice ring with the power at 1.5–3× its frequency (noise, for a lattice whose
higher rings are weak): ``ring_to_noise`` holds its median over the split's hexagonal-lattice
images (``initial_state`` ``bubbles_hex``, lattice constant known) per dose, and ``--images``
adds each given image resampled to the model scale as inference does (FFT lattice estimate),
over 256² windows (the test images' size) and as a whole.

Usage: ``python benchmarks/dose.py --model results/model --dataset results/dataset.zarr
[--doses 1000 300 100 30 10] [--max-images 0] [--images data/experimental/*.tif]``; prints
JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from ltemfactory.errors import InputError
from ltemfactory.inference.lattice import estimate_lattice_period_px, scale_factor_to_training
from ltemfactory.inference.pipeline import (
    LOWPASS_SIGMA_A,
    MIN_DIAMETER_FRACTION,
    load_predictor,
    model_scale,
    resample_image,
    segment_image,
    size_priors,
)
from ltemfactory.inference.readers import read_image
from ltemfactory.metrics import match_dataset
from ltemfactory.stores import open_store
from ltemfactory.training.augment import renoise
from ltemfactory.training.data import split_dataset

KEYS = ("n_pred", "precision@0.5", "recall@0.5", "f1@0.5", "recall@0.3", "f1@0.3")
WINDOW_PX = 256


def ring_to_noise(image: np.ndarray, nn_px: float, dq: float = 0.005) -> float:
    """Peak power on the first ring of a hexagonal lattice of nearest-neighbour distance
    ``nn_px`` [px] (annuli of width ``dq`` [cycles/px] within ±20 % of q1 = 2/(√3 nn)) over the
    median annulus power at 1.5–3 q1, of the Hann-windowed (row, col) image."""
    img = np.asarray(image, dtype=np.float64)
    img = img - img.mean()
    h, w = img.shape
    power = np.abs(np.fft.fft2(img * np.outer(np.hanning(h), np.hanning(w)))) ** 2
    q = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :])
    q1 = 2.0 / (math.sqrt(3.0) * nn_px)

    def annulus(qc: float) -> float:
        return float(power[np.abs(q - qc) < dq / 2].mean())

    peak = max(annulus(qc) for qc in np.arange(0.8 * q1, 1.2 * q1, dq / 2))
    return peak / float(np.median([annulus(qc) for qc in np.arange(1.5 * q1, 3.0 * q1, dq)]))


def image_ring_to_noise(path: str, train_nn_px: float) -> dict:
    """:func:`ring_to_noise` of an image file at the model scale: whole and 256² windows."""
    img = read_image(path).data.astype(np.float64)
    fft = estimate_lattice_period_px(img)
    if not fft.reliable:
        raise InputError(f"{path}: no reliable lattice ring in the power spectrum")
    nn = fft.nn_distance_px
    model = resample_image(img, scale_factor_to_training(nn, train_nn_px))
    h, w = model.shape
    starts = [(r, c) for r in (0, h - WINDOW_PX) for c in (0, w - WINDOW_PX)]
    return {
        "fft_nn_distance_px": nn,
        "whole": ring_to_noise(model, train_nn_px),
        "windows": [
            ring_to_noise(model[r : r + WINDOW_PX, c : c + WINDOW_PX], train_nn_px)
            for r, c in starts
        ]
        if min(h, w) >= WINDOW_PX
        else [],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="model directory or .pt")
    parser.add_argument("--dataset", required=True, help="dataset store (with clean_images)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--doses", type=float, nargs="+", default=[1000, 300, 100, 30, 10])
    parser.add_argument("--lowpass-sigma-a", type=float, default=LOWPASS_SIGMA_A)
    parser.add_argument("--min-diameter-fraction", type=float, default=MIN_DIAMETER_FRACTION)
    parser.add_argument("--max-images", type=int, default=0, help="0: the whole split")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--images", nargs="*", default=[], help="images to place on the dose axis")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    predictor = load_predictor(args.model, device="auto")
    mscale = model_scale(predictor)
    priors = size_priors(mscale, args.lowpass_sigma_a, args.min_diameter_fraction)
    data = split_dataset(args.dataset, args.split, predictor.target_kinds, predictor.normalisation)
    n = len(data) if args.max_images <= 0 else min(args.max_images, len(data))
    items = [data[i] for i in range(n)]
    store = open_store(args.dataset)
    clean, rendered = store["clean_images"], store["images"]
    state = np.asarray(store["image_state"][:])
    hexagonal = np.asarray(store["initial_state"][:])[state] == "bubbles_hex"
    lattice_px = np.asarray(store["lattice_constant_nm"][:])[state] / np.asarray(
        store["pixel_size_nm"][:]
    )
    trues = [np.asarray(it["labels"]) for it in items]
    pxs = [float(it["pixel_size_nm"]) for it in items]

    def segment(image: np.ndarray) -> np.ndarray:
        return segment_image(
            image,
            predictor,
            1.0,
            lowpass_sigma_px=priors["lowpass_sigma_model_px"] or 0.0,
            min_diameter_px=priors["min_diameter_model_px"] or 0.0,
        )[0]

    rows: dict[str, dict] = {}
    start = time.perf_counter()
    for dose in [None, *args.doses]:
        preds, ratios = [], []
        for it in items:
            idx = int(it["index"])
            if dose is None:
                image = np.asarray(rendered[idx], dtype=np.float64)
            else:
                rng = np.random.default_rng(np.random.SeedSequence([idx, int(round(dose * 1e3))]))
                image = renoise(np.asarray(clean[idx], dtype=np.float64), dose, rng)
            preds.append(segment(image))
            if hexagonal[idx]:
                ratios.append(ring_to_noise(image, float(lattice_px[idx])))
        scores = match_dataset(trues, preds, (0.3, 0.5), pixel_size_nm=pxs)
        rows["rendered" if dose is None else f"{dose:g}"] = {
            **{k: scores[k] for k in KEYS},
            "ring_to_noise": float(np.median(ratios)) if ratios else None,
        }
        n_true = scores["n_true"]
    result = {
        "model": args.model,
        "dataset": args.dataset,
        "split": args.split,
        "device": str(predictor.device),
        "n_images": n,
        "n_true": n_true,
        "priors": priors,
        "dose_e_per_px": rows,
        "images_ring_to_noise": {
            p: image_ring_to_noise(p, float(mscale["train_nn_distance_px"])) for p in args.images
        },
        "seconds": time.perf_counter() - start,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
