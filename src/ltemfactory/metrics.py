"""Instance-segmentation metrics: IoU matching, detection scores, panoptic quality, size errors.

Pure functions on label images (numpy in, numpy/float out, no printing, no state). The API reads
like the one of StarDist's ``matching.py`` (Schmidt et al., "Cell Detection with Star-Convex
Polygons", MICCAI 2018): :func:`iou_matrix`, :func:`match_instances`, :func:`match_dataset`; the
code is independent.

Label images are integer arrays (..., row, col): 0 is background, every other value is one
instance. Ids need not be contiguous (1, 5, 17 is fine) and carry no meaning beyond identity:
counts and scores do not change when either image is relabelled (the radius and centroid errors
can, but only in exact ties, see below). An instance is a set of pixels; it
need not be connected. Pixel (row, col) has its centre at ((row + 0.5)·px, (col + 0.5)·px)
(:mod:`ltemfactory.labels`); the pixel size ``px`` [nm] is given by the caller.

Matching. A true and a predicted instance are *admissible* partners when their intersection over
union reaches the threshold, ``IoU >= iou_threshold`` (inclusive: a pair with IoU exactly at the
threshold counts as a true positive). Among the admissible pairs the one-to-one matching with
the largest sum of matched IoUs is found with the Hungarian algorithm
(:func:`scipy.optimize.linear_sum_assignment`); of matchings whose IoU sums tie (to within
``_TIE`` = 1e-9 per pair) the one with more pairs wins, so the counts do not depend on how the
instances are numbered (0.5 alone against 0.25 + 0.25 gives two true positives). The PQ
denominator TP + FP/2 + FN/2 = (n_true + n_pred)/2 is fixed, so this matching maximises PQ.

Above 0.5 each instance has at most one admissible partner, so the matching is unique and equals
the greedy one. At exactly 0.5 an instance split exactly into two halves has two partners of IoU
0.5; either choice gives the same counts and IoU sum. Below 0.5 greedy matching (highest IoU
first) can be suboptimal and the Hungarian matching is not. StarDist instead maximises the
number of matches first and uses the IoU sum only to break ties. The two can differ only below
0.5, and only in contrived geometry. Where several matchings have the same IoU sum and the same
number of pairs, the solver picks one by id order. The counts and all IoU-based scores are the
same whichever it picks, but the radius and centroid errors can differ (e.g. one prediction
covering two equal true instances that sit at different distances from its centroid).

Scores. TP = matched pairs, FP = unmatched predictions, FN = unmatched true instances.

* precision = TP/(TP+FP), recall = TP/(TP+FN), F1 = 2TP/(2TP+FP+FN);
* ``ap_dsb`` = TP/(TP+FP+FN), the per-threshold "average precision" of the 2018 Data Science
  Bowl (and StarDist's ``accuracy``);
* panoptic quality (Kirillov et al., "Panoptic Segmentation", CVPR 2019):
  PQ = Σ_matched IoU / (TP + FP/2 + FN/2) = SQ · RQ, with segmentation quality
  SQ = Σ_matched IoU / TP (the mean matched IoU) and recognition quality
  RQ = TP/(TP + FP/2 + FN/2) (equal to F1);
* size and position errors over the matched pairs: with the equivalent-disk radius
  r = sqrt(area/π)·px, ``radius_error_nm`` = mean |r_pred − r_true|,
  ``relative_radius_error`` = mean |r_pred − r_true|/r_true, and ``centroid_error_nm`` = mean
  Euclidean distance between the two centroids [nm].

Conventions where a ratio is 0/0 (all documented, no NaN except for means over no pairs):

* no true and no predicted instances (nothing to find, nothing found): precision = recall =
  F1 = ``ap_dsb`` = RQ = PQ = 1;
* no predictions but some true instances: precision = 0 (and recall = F1 = AP = RQ = PQ = 0);
* no true instances but some predictions: recall = 0 (and precision = F1 = AP = RQ = PQ = 0);
* no matched pair (TP = 0, including the empty case): SQ, ``mean_matched_iou`` and the three
  size/position errors are means over zero pairs and are NaN. PQ is computed from the IoU sum, not
  as SQ·RQ, so it is 0 (or 1 in the empty case), never NaN.

IoUs are double-precision quotients of pixel counts. Division is correctly rounded, so an IoU
whose exact rational value equals a decimal threshold (e.g. 3/10 and 0.3) compares equal to it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from ltemfactory.errors import InputError

__all__ = [
    "Matching",
    "instances_from_mask",
    "iou_matrix",
    "match_dataset",
    "match_instances",
]

DEFAULT_THRESHOLDS = (0.3, 0.5, 0.7)
"""IoU thresholds reported by :func:`match_dataset` unless told otherwise."""

_CROSS = ndimage.generate_binary_structure(2, 1)

_TIE = 1e-9
"""Bonus per matched pair: IoU sums that tie (within this per pair) favour more pairs."""


# ---------------------------------------------------------------------------------------------
# label bookkeeping


def _check_labels(labels: np.ndarray, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(
            f"{name}: label image must have an integer dtype, got {labels.dtype}"
            " (use instances_from_mask for a binary mask)"
        )
    if labels.ndim < 1:
        raise InputError(f"{name}: label image must be an array, got a scalar")
    if labels.size and labels.min() < 0:
        raise InputError(f"{name}: labels must be >= 0 (0 is background), got {labels.min()}")
    return labels


def _index(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Foreground ids (sorted, int64) and each pixel's index: 0 background, 1 + position in ids."""
    ids, inverse = np.unique(labels.ravel(), return_inverse=True)
    inverse = inverse.ravel()
    if ids.size and ids[0] == 0:
        return ids[1:].astype(np.int64), inverse
    return ids.astype(np.int64), inverse + 1


def _iou(true: np.ndarray, pred: np.ndarray):
    """IoU matrix, ids, and the per-pixel index arrays (for geometry)."""
    true = _check_labels(true, "true")
    pred = _check_labels(pred, "pred")
    if true.shape != pred.shape:
        raise InputError(f"true and pred have different shapes: {true.shape} vs {pred.shape}")
    true_ids, t_idx = _index(true)
    pred_ids, p_idx = _index(pred)
    nt, npr = true_ids.size + 1, pred_ids.size + 1
    # one bincount over the paired indices: counts[i, j] = #pixels with true index i, pred index j
    counts = np.bincount(t_idx * npr + p_idx, minlength=nt * npr).reshape(nt, npr)
    area_t = counts.sum(axis=1)[1:]
    area_p = counts.sum(axis=0)[1:]
    inter = counts[1:, 1:].astype(np.float64)
    union = area_t[:, None] + area_p[None, :] - inter  # >= 1: foreground areas are >= 1
    iou = inter / union if inter.size else inter
    return iou, true_ids, pred_ids, t_idx, p_idx, area_t, area_p


def iou_matrix(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intersection over union of every true instance with every predicted instance.

    Args:
        true: integer label image (any shape), 0 background.
        pred: integer label image of the same shape.

    Returns:
        ``(iou, true_ids, pred_ids)``: ``iou`` float64 (n_true, n_pred) with
        ``iou[i, j]`` = |T_i ∩ P_j| / |T_i ∪ P_j| for ``true_ids[i]`` and ``pred_ids[j]``; the id
        arrays are the sorted foreground ids (int64) of each image. Computed with a single
        ``np.bincount`` over the paired labels (no per-instance loop).

    Raises:
        InputError: non-integer or negative labels, or shapes that differ.
    """
    iou, true_ids, pred_ids, *_ = _iou(true, pred)
    return iou, true_ids, pred_ids


def instances_from_mask(mask: np.ndarray) -> np.ndarray:
    """Baseline decoder: connected components (4-connectivity) of a binary mask.

    Args:
        mask: (..., row, col) array; nonzero (True) is foreground.

    Returns:
        int32 labels of the same shape: each 2-D image (the last two axes) is labelled on its
        own, 0 background and instances 1..K in raster order of first appearance. Components are
        never joined across the image border nor across the leading axes.
    """
    mask = np.asarray(mask)
    if mask.ndim < 2:
        raise InputError(f"mask must be (..., row, col), got shape {mask.shape}")
    fg = mask.astype(bool)
    out = np.zeros(mask.shape, dtype=np.int32)
    for lead in np.ndindex(mask.shape[:-2]):
        ndimage.label(fg[lead], structure=_CROSS, output=out[lead])
    return out


# ---------------------------------------------------------------------------------------------
# per-image geometry and matching


@dataclass(frozen=True)
class _Paired:
    """Everything one image contributes, independent of the threshold."""

    iou: np.ndarray  # (n_true, n_pred)
    true_ids: np.ndarray
    pred_ids: np.ndarray
    area_true: np.ndarray  # (n_true,) pixels
    area_pred: np.ndarray
    centroid_true: np.ndarray  # (n_true, 2) [row, col] in pixels
    centroid_pred: np.ndarray


def _centroids(index: np.ndarray, n: int, area: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    rows, cols = shape
    r = np.broadcast_to(np.arange(rows, dtype=np.float64)[:, None], shape).ravel()
    c = np.broadcast_to(np.arange(cols, dtype=np.float64)[None, :], shape).ravel()
    sr = np.bincount(index, weights=r, minlength=n + 1)[1:]
    sc = np.bincount(index, weights=c, minlength=n + 1)[1:]
    return np.stack([sr, sc], axis=-1) / np.maximum(area, 1)[:, None]


def _pair(true: np.ndarray, pred: np.ndarray) -> _Paired:
    true = np.asarray(true)
    if true.ndim != 2:
        raise InputError(
            f"match one 2-D (row, col) label image at a time, got shape {true.shape}"
            " (use match_dataset for a stack)"
        )
    iou, true_ids, pred_ids, t_idx, p_idx, area_t, area_p = _iou(true, pred)
    return _Paired(
        iou=iou,
        true_ids=true_ids,
        pred_ids=pred_ids,
        area_true=area_t,
        area_pred=area_p,
        centroid_true=_centroids(t_idx, true_ids.size, area_t, true.shape),
        centroid_pred=_centroids(p_idx, pred_ids.size, area_p, true.shape),
    )


def _check_threshold(t: float) -> float:
    t = float(t)
    if not 0.0 < t <= 1.0:
        raise InputError(f"iou_threshold must be in (0, 1], got {t}")
    return t


def _check_pixel_size(px: float) -> float:
    px = float(px)
    if not (math.isfinite(px) and px > 0):
        raise InputError(f"pixel_size_nm must be a positive number, got {px}")
    return px


def _assign(iou: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the max-IoU-sum one-to-one matching of admissible pairs."""
    admissible = iou >= threshold
    rows = np.flatnonzero(admissible.any(axis=1))
    cols = np.flatnonzero(admissible.any(axis=0))
    if rows.size == 0:
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty
    sub = np.ix_(rows, cols)
    # inadmissible pairs weigh 0; admissible ones IoU + _TIE, so equal IoU sums favour more pairs
    weight = np.where(admissible[sub], iou[sub] + _TIE, 0.0)
    r, c = linear_sum_assignment(weight, maximize=True)
    keep = weight[r, c] > 0
    r, c = rows[r[keep]], cols[c[keep]]
    order = np.argsort(r, kind="stable")
    return r[order], c[order]


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if x.size else math.nan


def _ratio(num: float, den: float, *, empty: float) -> float:
    return num / den if den else empty


def _scores(
    tp: int,
    fp: int,
    fn: int,
    ious: np.ndarray,
    radius_true: np.ndarray,
    radius_pred: np.ndarray,
    distance: np.ndarray,
) -> dict[str, float]:
    """The scalar scores from counts and the matched pairs (see the module docstring)."""
    n_true, n_pred = tp + fn, tp + fp
    nothing = n_true == 0 and n_pred == 0
    dr = np.abs(radius_pred - radius_true)
    half = tp + 0.5 * (fp + fn)
    return {
        "precision": _ratio(tp, n_pred, empty=1.0 if nothing else 0.0),
        "recall": _ratio(tp, n_true, empty=1.0 if nothing else 0.0),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, empty=1.0),
        "ap_dsb": _ratio(tp, tp + fp + fn, empty=1.0),
        "sq": _mean(ious),
        "rq": _ratio(tp, half, empty=1.0),
        "panoptic_quality": _ratio(float(np.sum(ious)), half, empty=1.0),
        "mean_matched_iou": _mean(ious),
        "radius_error_nm": _mean(dr),
        "relative_radius_error": _mean(dr / radius_true) if tp else math.nan,
        "centroid_error_nm": _mean(distance),
    }


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Matching:
    """Result of :func:`match_instances` on one image (conventions: module docstring).

    Counts: ``n_true``, ``n_pred``, ``tp``, ``fp``, ``fn``. Matched pairs, sorted by true id, as
    parallel read-only arrays of length ``tp``: ``matched_true_ids``, ``matched_pred_ids``,
    ``matched_ious``, ``matched_radius_true_nm``, ``matched_radius_pred_nm`` (equivalent-disk
    radii) and ``matched_centroid_distance_nm``; :attr:`pairs` gives them as
    ``(true_id, pred_id, iou)`` tuples. Scores: ``precision``, ``recall``, ``f1``, ``ap_dsb``,
    ``sq``, ``rq``, ``panoptic_quality``, ``mean_matched_iou`` (= ``sq``), ``radius_error_nm``,
    ``relative_radius_error``, ``centroid_error_nm``; :meth:`scores` gives them as a dict.
    """

    iou_threshold: float
    pixel_size_nm: float
    n_true: int
    n_pred: int
    tp: int
    fp: int
    fn: int
    matched_true_ids: np.ndarray
    matched_pred_ids: np.ndarray
    matched_ious: np.ndarray
    matched_radius_true_nm: np.ndarray
    matched_radius_pred_nm: np.ndarray
    matched_centroid_distance_nm: np.ndarray
    precision: float
    recall: float
    f1: float
    ap_dsb: float
    sq: float
    rq: float
    panoptic_quality: float
    mean_matched_iou: float
    radius_error_nm: float
    relative_radius_error: float
    centroid_error_nm: float

    @property
    def pq(self) -> float:
        """Alias of :attr:`panoptic_quality`."""
        return self.panoptic_quality

    @property
    def pairs(self) -> list[tuple[int, int, float]]:
        """Matched pairs as ``(true_id, pred_id, iou)``, sorted by true id."""
        return [
            (int(t), int(p), float(i))
            for t, p, i in zip(
                self.matched_true_ids, self.matched_pred_ids, self.matched_ious, strict=True
            )
        ]

    def scores(self) -> dict[str, float]:
        """Counts and scalar scores as a flat dict (no arrays)."""
        keys = ("n_true", "n_pred", "tp", "fp", "fn", *_SCORE_KEYS)
        return {k: getattr(self, k) for k in keys}


_SCORE_KEYS = (
    "precision",
    "recall",
    "f1",
    "ap_dsb",
    "sq",
    "rq",
    "panoptic_quality",
    "mean_matched_iou",
    "radius_error_nm",
    "relative_radius_error",
    "centroid_error_nm",
)


def _match(paired: _Paired, threshold: float, px: float) -> Matching:
    r, c = _assign(paired.iou, threshold)
    n_true, n_pred, tp = paired.true_ids.size, paired.pred_ids.size, r.size
    ious = paired.iou[r, c]
    radius_true = np.sqrt(paired.area_true[r] / np.pi) * px
    radius_pred = np.sqrt(paired.area_pred[c] / np.pi) * px
    distance = np.hypot(*(paired.centroid_pred[c] - paired.centroid_true[r]).T) * px
    fp, fn = n_pred - tp, n_true - tp
    return Matching(
        iou_threshold=threshold,
        pixel_size_nm=px,
        n_true=n_true,
        n_pred=n_pred,
        tp=tp,
        fp=fp,
        fn=fn,
        matched_true_ids=_readonly(paired.true_ids[r]),
        matched_pred_ids=_readonly(paired.pred_ids[c]),
        matched_ious=_readonly(ious),
        matched_radius_true_nm=_readonly(radius_true),
        matched_radius_pred_nm=_readonly(radius_pred),
        matched_centroid_distance_nm=_readonly(distance),
        **_scores(tp, fp, fn, ious, radius_true, radius_pred, distance),
    )


def match_instances(
    true: np.ndarray,
    pred: np.ndarray,
    iou_threshold: float = 0.5,
    *,
    pixel_size_nm: float = 1.0,
) -> Matching:
    """Match predicted to true instances of one image one-to-one and score the result.

    A pair is a true positive when IoU >= ``iou_threshold`` (inclusive) and it belongs to the
    one-to-one matching with the largest IoU sum (Hungarian algorithm). See the module docstring
    for the formulas (detection scores; panoptic quality after Kirillov et al., CVPR 2019) and
    for the conventions in empty cases.

    Args:
        true: integer (row, col) ground-truth labels, 0 background.
        pred: integer (row, col) predicted labels of the same shape; ids need not be contiguous.
        iou_threshold: in (0, 1].
        pixel_size_nm: pixel size [nm] for the radius and centroid errors. The default 1 gives
            them in pixels.

    Returns:
        A frozen :class:`Matching`.

    Raises:
        InputError: non-integer or negative labels, shapes that differ or are not 2-D, a
            threshold outside (0, 1], or a non-positive pixel size.
    """
    threshold = _check_threshold(iou_threshold)
    px = _check_pixel_size(pixel_size_nm)
    return _match(_pair(true, pred), threshold, px)


def _key(name: str, threshold: float) -> str:
    return f"{name}@{threshold:g}"


def match_dataset(
    trues: Sequence[np.ndarray] | np.ndarray,
    preds: Sequence[np.ndarray] | np.ndarray,
    thresholds: Sequence[float] | float = DEFAULT_THRESHOLDS,
    *,
    pixel_size_nm: float | Sequence[float],
) -> dict[str, float]:
    """Scores of a whole dataset: micro-aggregated over images, at several IoU thresholds.

    Each image is matched on its own (:func:`match_instances`). TP, FP and FN are summed over the
    images and the scores are computed from the sums (micro average, the same formulas and
    empty-case conventions as for one image). The mean IoU and the size/position errors are
    means over the pooled matched pairs of all images (NaN when no image has a match).

    Args:
        trues: the ground-truth label images: a sequence of (row, col) integer arrays, or an
            (n_images, row, col) array. Images may differ in size.
        preds: the predictions, one per true image, each of the shape of its true image.
        thresholds: IoU thresholds, each in (0, 1] (a single float is allowed).
        pixel_size_nm: pixel size [nm], one for all images or one per image.

    Returns:
        ``n_images``, ``n_true``, ``n_pred`` and, for each threshold ``t`` (formatted with
        ``:g``, e.g. ``0.5``): ``tp@t``, ``fp@t``, ``fn@t``, ``precision@t``, ``recall@t``,
        ``f1@t``, ``ap@t`` (TP/(TP+FP+FN)), ``sq@t``, ``rq@t``, ``pq@t``, ``mean_iou@t``
        (= ``sq@t``), ``radius_error_nm@t``, ``relative_radius_error@t``,
        ``centroid_error_nm@t``. Counts are ints, the rest floats.

    Raises:
        InputError: no images, different numbers of true and predicted images or of pixel
            sizes, duplicate thresholds, or any error of :func:`match_instances`.
    """
    n = len(trues)
    if n != len(preds):
        raise InputError(f"{n} true images but {len(preds)} predictions")
    if n == 0:
        raise InputError("match_dataset needs at least one image")
    if np.ndim(thresholds) == 0:
        thresholds = (thresholds,)
    ts = [_check_threshold(t) for t in thresholds]
    if not ts:
        raise InputError("match_dataset needs at least one threshold")
    if len({_key("", t) for t in ts}) != len(ts):
        raise InputError(f"duplicate thresholds: {list(thresholds)}")
    if np.ndim(pixel_size_nm) == 0:
        pxs = [_check_pixel_size(pixel_size_nm)] * n
    else:
        pxs = [_check_pixel_size(p) for p in pixel_size_nm]
        if len(pxs) != n:
            raise InputError(f"{len(pxs)} pixel sizes for {n} images")

    paired = [_pair(t, p) for t, p in zip(trues, preds, strict=True)]
    out: dict[str, float] = {
        "n_images": n,
        "n_true": sum(p.true_ids.size for p in paired),
        "n_pred": sum(p.pred_ids.size for p in paired),
    }
    for t in ts:
        ms = [_match(p, t, px) for p, px in zip(paired, pxs, strict=True)]
        tp, fp, fn = (sum(getattr(m, k) for m in ms) for k in ("tp", "fp", "fn"))
        pooled = [
            np.concatenate([getattr(m, k) for m in ms])
            for k in (
                "matched_ious",
                "matched_radius_true_nm",
                "matched_radius_pred_nm",
                "matched_centroid_distance_nm",
            )
        ]
        s = _scores(tp, fp, fn, *pooled)
        values = {
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "precision": s["precision"],
            "recall": s["recall"],
            "f1": s["f1"],
            "ap": s["ap_dsb"],
            "sq": s["sq"],
            "rq": s["rq"],
            "pq": s["panoptic_quality"],
            "mean_iou": s["mean_matched_iou"],
            "radius_error_nm": s["radius_error_nm"],
            "relative_radius_error": s["relative_radius_error"],
            "centroid_error_nm": s["centroid_error_nm"],
        }
        out.update({_key(k, t): v for k, v in values.items()})
    return out
