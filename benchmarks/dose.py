"""Detection against electron dose: a trained model on the test split re-noised to low doses.

Experimental LTEM images are far noisier than the demo's renders (1,000–20,000 e/px): the
shipped Fe3GeTe2 image has the lattice-ring-to-noise ratio of a demo image at ~20 e/px (README,
Inference). This benchmark measures what that costs: each test image's noise-free intensity
(``clean_images``) gets Poisson noise of ``--doses`` [e/px] (:func:`~ltemfactory.training.
augment.renoise`, seeded per image and dose) and goes through the inference segmentation
(:func:`~ltemfactory.inference.pipeline.segment_image` at scale factor 1 — the test images are
at the training scale — with the inference low-pass and size prior of ``--lowpass-sigma-a`` and
``--min-diameter-fraction``). The rendered images themselves (their own dose) are the
``rendered`` row. Scores: :func:`~ltemfactory.metrics.match_dataset` against the labels of the
kinds the model was trained to find.

Usage: ``python benchmarks/dose.py --model results/model --dataset results/dataset.zarr
[--doses 1000 300 100 30 10] [--max-images 0]``; prints JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from ltemfactory.inference.pipeline import (
    LOWPASS_SIGMA_A,
    MIN_DIAMETER_FRACTION,
    load_predictor,
    model_scale,
    segment_image,
    size_priors,
)
from ltemfactory.metrics import match_dataset
from ltemfactory.stores import open_store
from ltemfactory.training.augment import renoise
from ltemfactory.training.data import split_dataset

KEYS = ("n_pred", "precision@0.5", "recall@0.5", "f1@0.5", "recall@0.3", "f1@0.3")


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
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    predictor = load_predictor(args.model, device="auto")
    priors = size_priors(model_scale(predictor), args.lowpass_sigma_a, args.min_diameter_fraction)
    data = split_dataset(args.dataset, args.split, predictor.target_kinds)
    n = len(data) if args.max_images <= 0 else min(args.max_images, len(data))
    items = [data[i] for i in range(n)]
    store = open_store(args.dataset)
    clean, rendered = store["clean_images"], store["images"]
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
        preds = []
        for it in items:
            idx = int(it["index"])
            if dose is None:
                image = np.asarray(rendered[idx], dtype=np.float64)
            else:
                rng = np.random.default_rng(np.random.SeedSequence([idx, int(round(dose * 1e3))]))
                image = renoise(np.asarray(clean[idx], dtype=np.float64), dose, rng)
            preds.append(segment(image))
        scores = match_dataset(trues, preds, (0.3, 0.5), pixel_size_nm=pxs)
        rows["rendered" if dose is None else f"{dose:g}"] = {k: scores[k] for k in KEYS}
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
        "seconds": time.perf_counter() - start,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
