"""Prediction over overlapping tiles with smooth blending, and resampling to the training scale.

A network sees a limited field of view and errs near the edges of its input (zero padding,
missing context). :func:`predict_tiled` runs any per-pixel predictor over overlapping tiles of
an image of any size and blends the tiles with a weight that falls smoothly to ~0 at tile edges
inside the image, so a translation-equivariant predictor with a receptive field shorter than the
overlap gives (to rounding) the same maps as one call on the whole image, and a constant
predictor gives exactly its constant.

Arrays are (row, col); batches are (N, 1, row, col) like a PyTorch NCHW input.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping

import numpy as np
from skimage.transform import rescale, resize

from ltemfactory.errors import InputError

__all__ = [
    "PredictFn",
    "blend_ramp",
    "predict_tiled",
    "resample_image",
    "resize_labels",
    "tile_starts",
]

_log = logging.getLogger(__name__)

PredictFn = Callable[[np.ndarray], Mapping[str, np.ndarray]]
"""float32 (N, 1, h, w) batch → {map name: float32 (N, h, w)}."""


def blend_ramp(n: int) -> np.ndarray:
    """Rising weights (n,) in (0, 1) over an overlap of n px; ramp[i] + ramp[n − 1 − i] = 1.

    The C∞ step s(t) = f(t)/(f(t) + f(1 − t)), f(t) = exp(−1/t), sampled at pixel centres
    t = (i + ½)/n: flatter at the tile edge than a raised cosine (s ~ exp(−1/t)), so edge
    pixels, where a network sees the least context, get almost no weight, yet never zero.
    Two neighbouring tiles that overlap by exactly n px have weights that add up to 1.
    """
    if n <= 0:
        return np.zeros(0)
    t = (np.arange(n) + 0.5) / n
    f0 = np.exp(-1.0 / t)
    f1 = np.exp(-1.0 / (1.0 - t))
    return f0 / (f0 + f1)


def tile_starts(length: int, tile: int, overlap: int) -> np.ndarray:
    """First pixel of each tile along one axis: evenly spread, the last tile flush with the end.

    Requires ``length >= tile``; consecutive tiles overlap by at least ``overlap`` px.
    """
    if length <= tile:
        return np.zeros(1, dtype=np.int64)
    n = math.ceil((length - overlap) / (tile - overlap))
    return np.rint(np.linspace(0, length - tile, n)).astype(np.int64)


def _axis_weight(start: int, tile: int, length: int, overlap: int) -> np.ndarray:
    """Weights of one tile along one axis: ramps only on sides that lie inside the image."""
    w = np.ones(tile)
    ramp = blend_ramp(min(overlap, tile // 2))
    if start > 0:
        w[: len(ramp)] = ramp
    if start + tile < length:
        w[tile - len(ramp) :] = ramp[::-1]
    return w


def _check_int(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise InputError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def predict_tiled(
    image: np.ndarray,
    predict_fn: PredictFn,
    *,
    tile_px: int = 256,
    overlap_px: int = 32,
    multiple: int = 8,
    batch_size: int = 4,
) -> dict[str, np.ndarray]:
    """Run ``predict_fn`` over overlapping tiles of a (row, col) image and blend the maps.

    Along an axis shorter than ``tile_px`` the image is reflection-padded at its end to the
    next multiple of ``multiple`` and one tile spans it; along longer axes tiles of ``tile_px``
    are spread evenly with at least ``overlap_px`` of overlap and stay inside the image (no
    padding). Each tile's maps are weighted by the product of two 1-D profiles that ramp
    smoothly (:func:`blend_ramp`) over ``overlap_px`` on every side that faces another tile
    and are 1 on sides at the image border; the blend is Σ wᵢ·mapᵢ / Σ wᵢ in float64.

    Args:
        image: (row, col) real array, any size ≥ 1×1, finite.
        predict_fn: float32 (N, 1, h, w) → {name: (N, h, w) or (N, 1, h, w)}; every call must
            return the same names. h and w are multiples of ``multiple``.
        tile_px: tile side [px], a multiple of ``multiple``.
        overlap_px: overlap between neighbouring tiles [px], 0 ≤ overlap ≤ tile_px/2; make it
            at least the predictor's receptive-field radius.
        multiple: tile sides must be multiples of this (the network's total down-sampling).
        batch_size: tiles per ``predict_fn`` call.

    Returns:
        {name: float32 (row, col)} maps of the image's shape.

    Raises:
        InputError: bad image or arguments, or outputs of the wrong shape or names.
    """
    img = np.asarray(image)
    if img.ndim != 2 or img.size == 0:
        raise InputError(f"image: expected a non-empty (row, col) array, got shape {img.shape}")
    if np.iscomplexobj(img) or img.dtype.kind not in "biuf":
        raise InputError(f"image: expected real numbers, got dtype {img.dtype}")
    img = img.astype(np.float32)
    if not np.isfinite(img).all():
        raise InputError("image: contains NaN or infinite pixels")
    multiple = _check_int("multiple", multiple, 1)
    tile_px = _check_int("tile_px", tile_px, multiple)
    overlap_px = _check_int("overlap_px", overlap_px, 0)
    batch_size = _check_int("batch_size", batch_size, 1)
    if tile_px % multiple:
        raise InputError(f"tile_px: expected a multiple of {multiple}, got {tile_px}")
    if 2 * overlap_px > tile_px:
        raise InputError(
            f"overlap_px: expected at most tile_px/2 = {tile_px // 2}, got {overlap_px}"
        )

    rows, cols = img.shape
    padded, tiles = [], []
    for n in (rows, cols):
        if n < tile_px:
            p = -(-n // multiple) * multiple
            padded.append(p)
            tiles.append(p)
        else:
            padded.append(n)
            tiles.append(tile_px)
    pad = ((0, padded[0] - rows), (0, padded[1] - cols))
    if any(after for _, after in pad):
        mode = "reflect" if min(rows, cols) > 1 else "symmetric"
        img = np.pad(img, pad, mode=mode)
    th, tw = tiles
    r_starts = tile_starts(padded[0], th, overlap_px)
    c_starts = tile_starts(padded[1], tw, overlap_px)
    wr = {int(r): _axis_weight(int(r), th, padded[0], overlap_px) for r in r_starts}
    wc = {int(c): _axis_weight(int(c), tw, padded[1], overlap_px) for c in c_starts}
    corners = [(int(r), int(c)) for r in r_starts for c in c_starts]
    _log.debug("predict_tiled: %d tiles of %dx%d over %s", len(corners), th, tw, img.shape)

    weight_sum = np.zeros(img.shape, dtype=np.float64)
    for r, c in corners:
        weight_sum[r : r + th, c : c + tw] += np.outer(wr[r], wc[c])
    acc: dict[str, np.ndarray] = {}
    names: set[str] | None = None
    for b in range(0, len(corners), batch_size):
        chunk = corners[b : b + batch_size]
        batch = np.stack([img[r : r + th, c : c + tw] for r, c in chunk])[:, None]
        out = predict_fn(np.ascontiguousarray(batch, dtype=np.float32))
        if not isinstance(out, Mapping) or not out:
            raise InputError(f"predict_fn: expected a non-empty dict of maps, got {type(out)}")
        if names is None:
            names = set(out)
            acc = {k: np.zeros(img.shape, dtype=np.float64) for k in names}
        elif set(out) != names:
            raise InputError(f"predict_fn: names changed from {sorted(names)} to {sorted(out)}")
        for name, value in out.items():
            maps = np.asarray(value, dtype=np.float64)
            if maps.ndim == 4 and maps.shape[1] == 1:
                maps = maps[:, 0]
            if maps.shape != (len(chunk), th, tw):
                raise InputError(
                    f"predict_fn: map {name!r} has shape {maps.shape}, expected "
                    f"{(len(chunk), th, tw)}"
                )
            for (r, c), m in zip(chunk, maps, strict=True):
                acc[name][r : r + th, c : c + tw] += np.outer(wr[r], wc[c]) * m
    return {k: (v / weight_sum)[:rows, :cols].astype(np.float32) for k, v in acc.items()}


def resample_image(image: np.ndarray, factor: float) -> np.ndarray:
    """Image (row, col) zoomed by ``factor`` (bilinear; Gaussian anti-aliasing when shrinking).

    With ``factor`` from :func:`ltemfactory.inference.lattice.scale_factor_to_training` the
    lattice takes the training spacing. Output float32 of shape round(factor·shape).
    """
    s = float(factor)
    if not (math.isfinite(s) and s > 0):
        raise InputError(f"factor: expected a positive finite number, got {factor!r}")
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise InputError(f"image: expected (row, col), got shape {img.shape}")
    out = rescale(img, s, order=1, mode="reflect", anti_aliasing=s < 1, preserve_range=True)
    return out.astype(np.float32)


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Integer label image (row, col) resized to ``shape`` by nearest neighbour (ids kept).

    Takes labels predicted on a resampled image back to the original pixel grid.
    """
    lab = np.asarray(labels)
    if lab.ndim != 2 or not np.issubdtype(lab.dtype, np.integer):
        raise InputError(f"labels: expected integer (row, col), got {lab.dtype} {lab.shape}")
    if len(shape) != 2 or min(shape) <= 0:
        raise InputError(f"shape: expected (rows, cols) > 0, got {shape}")
    out = resize(
        lab,
        tuple(int(s) for s in shape),
        order=0,
        mode="edge",
        anti_aliasing=False,
        preserve_range=True,
    )
    return out.astype(lab.dtype)
