"""Evaluate a trained model on one split of the dataset store (``ltemfactory evaluate``).

Writes ``<split>_metrics.json`` — the metrics of :func:`ltemfactory.metrics.match_dataset` at
IoU 0.3/0.5/0.7 for the model's own decoder and, for the instance formulation, for the binary
baseline (the same foreground map decoded by connected components, with the same size filters:
the ablation) — and
``<split>_grid.png`` (image | truth | prediction for a few images). When the model directory
names an MLflow run, the metrics (``test/f1_50``, ...) and the grid are logged to that run and
the registered model version is tagged with the headline scores. The truth holds the instance
kinds the model was trained to find (``Predictor.target_kinds``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ltemfactory.errors import InputError
from ltemfactory.files import write_json
from ltemfactory.metrics import match_dataset
from ltemfactory.plotting import prediction_grid
from ltemfactory.training.data import split_dataset
from ltemfactory.training.module import metric_logs
from ltemfactory.training.predictor import Predictor, decode_maps
from ltemfactory.training.tracking import log_evaluation

__all__ = ["evaluate", "grid_indices"]

log = logging.getLogger(__name__)


def grid_indices(truths: list[np.ndarray], n: int) -> list[int]:
    """Indices of ``n`` images to show, spread evenly over the images that hold true instances
    (a split's first images can all be one stripe state with nothing to find); images without
    instances fill up when fewer than ``n`` have any. In split order."""
    has = [bool(np.any(t)) for t in truths]
    with_instances = [i for i, h in enumerate(has) if h]
    without = [i for i, h in enumerate(has) if not h]
    if len(with_instances) >= n:
        picks = np.linspace(0, len(with_instances) - 1, n).round().astype(int)
        return [with_instances[k] for k in picks]
    return sorted(with_instances + without[: n - len(with_instances)])


def evaluate(
    model_dir: str | Path,
    dataset: str | Path,
    out_dir: str | Path,
    *,
    split: str = "test",
    n_grid: int = 6,
    batch_size: int = 8,
    device: str = "auto",
    tracking: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score the model in ``model_dir`` on ``split`` of ``dataset``; write JSON and PNG.

    Args:
        model_dir: a directory written by :func:`ltemfactory.training.run.train`.
        dataset: the dataset store.
        out_dir: output directory (created).
        split: ``train``, ``val`` or ``test``.
        n_grid: images shown in the PNG grid (:func:`grid_indices`).
        batch_size: images per network pass.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        tracking: the ``train.tracking`` config section; the run named in
            ``train_summary.json`` receives the metrics. ``None`` skips MLflow.

    Returns:
        The metrics dict written to ``<split>_metrics.json``.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    predictor = Predictor.load(model_dir / "model.pt")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    predictor.to(device)
    data = split_dataset(dataset, split, predictor.target_kinds, predictor.normalisation)
    if len(data) == 0:
        raise InputError(f"{dataset}: the {split} split has no images")

    trues, preds, bases, pxs = [], [], [], []
    start = time.perf_counter()
    for lo in range(0, len(data), batch_size):
        items = [data[i] for i in range(lo, min(lo + batch_size, len(data)))]
        x = np.stack([np.asarray(it["image"]) for it in items])
        maps = predictor.maps(x)
        prior = predictor.min_diameter_px
        preds.extend(decode_maps(maps, predictor.formulation, predictor.decode, prior))
        # the earlier approach on the same foreground map, with the same filters
        bases.extend(decode_maps(maps, "binary", predictor.decode, prior))
        for it in items:
            trues.append(np.asarray(it["labels"]))
            pxs.append(float(it["pixel_size_nm"]))
    wall_s = time.perf_counter() - start

    scores = match_dataset(trues, preds, pixel_size_nm=pxs)
    result: dict[str, Any] = {
        "split": split,
        "n_images": len(trues),
        "formulation": predictor.formulation,
        "metrics": metric_logs(scores, split),
        "scores": scores,
        "seconds_per_image": wall_s / len(trues),
        "device": device,
    }
    if predictor.formulation == "instance":
        base = match_dataset(trues, bases, pixel_size_nm=pxs)
        result["baseline_connected_components"] = metric_logs(base, f"{split}_baseline")
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = out_dir / f"{split}_metrics.json"
    write_json(metrics_path, result)
    shown = grid_indices(trues, n_grid)
    grid_path = prediction_grid(
        out_dir / f"{split}_grid.png",
        [np.asarray(data[i]["image"])[0] for i in shown],
        [trues[i] for i in shown],
        [preds[i] for i in shown],
        title=f"{split} split: image | truth | prediction (F1@0.5 = {scores['f1@0.5']:.3f})",
    )
    summary_path = model_dir / "train_summary.json"
    if tracking is not None and summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        log_evaluation(
            run_id=summary["run_id"],
            tracking=tracking,
            metrics={**result["metrics"], **result.get("baseline_connected_components", {})},
            artifacts=[metrics_path, grid_path],
            registered_model=summary.get("registered_model"),
            model_uri=summary.get("model_uri"),
        )
    log.info(
        "%s split: %d images, F1@0.5 %.3f, AP@0.5 %.3f, PQ@0.5 %.3f",
        split,
        len(trues),
        scores["f1@0.5"],
        scores["ap@0.5"],
        scores["pq@0.5"],
    )
    return result
