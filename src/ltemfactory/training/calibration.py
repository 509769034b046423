"""Decoder thresholds chosen on the validation split, after training.

A network trained for a fixed budget is rarely calibrated: an undertrained one gives foreground
probabilities that stay below 0.5 on faint skyrmions, a well-trained one may split large ones.
The thresholds of :func:`ltemfactory.instances.decode_instances` are therefore chosen, like
StarDist's ``optimize_thresholds`` does for its NMS and probability thresholds (Schmidt et al.,
"Cell Detection with Star-convex Polygons", MICCAI 2018), by maximising F1 at IoU 0.5 on the
validation images over a small grid. The network's maps are computed once; only the cheap
decoding is repeated. The test split is never looked at, so test metrics stay honest.

Arrays are (…, row, col).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ltemfactory.errors import InputError
from ltemfactory.metrics import match_dataset
from ltemfactory.training.data import split_dataset
from ltemfactory.training.predictor import FORMULATIONS, Predictor, decode_maps, decode_params

__all__ = ["DECODE_GRID", "tune_decoder", "tune_predictor_on_split"]

log = logging.getLogger(__name__)

DECODE_GRID: dict[str, tuple[float, ...]] = {
    "fg_threshold": (0.3, 0.4, 0.5, 0.6),
    "seed_threshold": (0.4, 0.5, 0.6, 0.7),
}
"""Values tried per decoder parameter (the product of all is searched); the binary formulation
uses ``fg_threshold`` only."""


def tune_decoder(
    maps: Sequence[Mapping[str, np.ndarray]],
    labels: Sequence[np.ndarray],
    pixel_size_nm: Sequence[float],
    formulation: str,
    *,
    base: Mapping[str, Any] | None = None,
    grid: Mapping[str, Sequence[float]] | None = None,
    min_diameter_px: float = 0.0,
) -> tuple[dict[str, Any], float, float]:
    """Decoder parameters that maximise F1@0.5 over ``labels``.

    Args:
        maps: per image, the probability maps (row, col) of :func:`predictor.maps_from_logits`.
        labels: per image, the true instance labels (row, col).
        pixel_size_nm: per image [nm] (only used by size/position errors, not by F1).
        formulation: ``instance`` or ``binary``.
        base: parameters not searched (defaults: ``predictor.DECODE_DEFAULTS``).
        grid: values per searched parameter (default :data:`DECODE_GRID`).
        min_diameter_px: size prior applied after decoding (see :func:`predictor.decode_maps`).

    Returns:
        (best parameters, their F1@0.5, F1@0.5 of ``base``). Ties keep the earlier grid point;
        ``base`` itself is always a candidate, so the result is never worse than it on these
        images.
    """
    if len(maps) != len(labels) or not labels:
        raise InputError(
            f"tune_decoder: expected as many map sets as label images (> 0), got {len(maps)} "
            f"and {len(labels)}"
        )
    base = decode_params(base)
    grid = dict(DECODE_GRID if grid is None else grid)
    if FORMULATIONS.get(formulation) == ("foreground",):
        grid = {k: v for k, v in grid.items() if k == "fg_threshold"}
    decode_params(dict.fromkeys(grid, 0.5))  # unknown keys raise
    stacked = _stack(maps)

    def score(params: Mapping[str, Any]) -> float:
        if stacked is not None:
            pred = list(decode_maps(stacked, formulation, params, min_diameter_px))
        else:
            pred = [decode_maps(m, formulation, params, min_diameter_px) for m in maps]
        scores = match_dataset(list(labels), pred, 0.5, pixel_size_nm=pixel_size_nm)
        return float(scores["f1@0.5"])

    base_f1 = score(base)
    best, best_f1 = dict(base), base_f1
    for values in itertools.product(*grid.values()):
        params = {**base, **dict(zip(grid, values, strict=True))}
        f1 = score(params)
        if f1 > best_f1:
            best, best_f1 = params, f1
    chosen = {k: best[k] for k in grid}
    log.info(
        "decoder tuned on %d images: F1@0.5 %.3f -> %.3f with %s",
        len(labels),
        base_f1,
        best_f1,
        chosen,
    )
    return best, best_f1, base_f1


def _stack(maps: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray] | None:
    """One (N, row, col) array per map when all images share a shape, else None."""
    shapes = {m["foreground"].shape for m in maps}
    if len(shapes) != 1:
        return None
    return {k: np.stack([m[k] for m in maps]) for k in maps[0]}


def tune_predictor_on_split(
    predictor: Predictor, store: str | Path, split: str = "val"
) -> tuple[dict[str, Any], float, float]:
    """:func:`tune_decoder` for ``predictor`` on the images of ``split`` of a dataset store.

    The predictor is not changed; set ``predictor.decode`` to the returned parameters to adopt
    them. Returns (parameters, tuned F1@0.5, F1@0.5 of the predictor's current parameters).
    """
    ds = split_dataset(store, split, predictor.target_kinds, predictor.normalisation)
    maps, labels, px = [], [], []
    for i in range(len(ds)):
        item = ds[i]
        m = predictor.maps(item["image"][None].numpy())
        maps.append({k: v[0] for k, v in m.items()})
        labels.append(item["labels"].numpy())
        px.append(float(item["pixel_size_nm"]))
    return tune_decoder(
        maps,
        labels,
        px,
        predictor.formulation,
        base=predictor.decode,
        min_diameter_px=predictor.min_diameter_px,
    )
