"""Per-image intensity normalisation shared by training and inference.

LTEM images differ in dose, gain, illumination and the experimentalist's post-processing, so the
network sees each image standardised on its own, over the last two axes (..., row, col):

1. isolated outlier pixels (hot and dead pixels, X-ray spikes) are replaced by their 3×3 median
   (:func:`remove_outliers`), as experimentalists do before any filtering;
2. the least-squares plane is removed (:func:`remove_plane`): an illumination gradient of a
   few per cent across the field is larger than the lobe contrast of a skyrmion (1–5 %), and
   a model trained on band-passed crops (which have no plane) missed every skyrmion of the
   simulated test images whose gradient exceeded ~4 % (README, Training);
3. optionally a Gaussian low-pass (inference's prior, not part of the stored spec);
4. a robust z-score: median and MAD ignore the bright/dark skyrmion contrast that would
   inflate a mean/std.

Inference must apply exactly the same transform, so the model stores :data:`NORMALISATION`
and calls :func:`normalise_from_spec`; specs of older models lack steps 1–2 and skip them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ltemfactory.errors import InputError

__all__ = [
    "MAD_TO_SIGMA",
    "NORMALISATION",
    "normalise_from_spec",
    "normalise_image",
    "remove_outliers",
    "remove_plane",
]

MAD_TO_SIGMA = 1.4826
"""1/Φ⁻¹(3/4): 1.4826·MAD estimates the standard deviation of Gaussian noise."""

OUTLIER_SIGMA = 6.0
"""Outlier bound of :func:`remove_outliers` in robust standard deviations: Gaussian noise
exceeds 6σ in ~2 pixels per 10⁹, a hot pixel sits tens of σ out."""

NORMALISATION: dict[str, Any] = {
    "method": "robust_zscore",
    "clip": 5.0,
    "outlier_sigma": OUTLIER_SIGMA,
    "detrend": "plane",
}
"""Description of the transform used in training (stored with the model for inference)."""

_SPEC_KEYS = {"method", "clip", "outlier_sigma", "detrend"}


def _robust_scale(dev: np.ndarray, axes: tuple[int, int]) -> np.ndarray:
    """1.4826·MAD of ``dev`` (already centred) per image; the standard deviation where the MAD is
    0 (more than half of the values equal), 1 where that is 0 too."""
    scale = MAD_TO_SIGMA * np.median(np.abs(dev), axis=axes, keepdims=True)
    std = dev.std(axis=axes, keepdims=True)
    return np.where(scale > 0, scale, np.where(std > 0, std, 1.0))


def remove_outliers(image: np.ndarray, sigma: float = OUTLIER_SIGMA) -> np.ndarray:
    """Replace isolated outlier pixels of each (..., row, col) image by their 3×3 median.

    A pixel is an outlier when it differs from the mean of its 8 neighbours (mirror borders)
    by more than a bound, ``sigma`` robust standard deviations of that difference over the
    image but at least the image's own standard deviation, and from its 3×3 median by more
    than the same bound (which clears the neighbours of a spike, pulled towards it by the
    mean). The floor at the standard deviation keeps smooth contrast in
    low-passed or noise-free images, whose differences are tiny everywhere (a lobe's peak
    stands ~5 % of its amplitude above its neighbours); clusters larger than ~2×2 pixels are
    not outliers. Only the flagged pixels' medians are computed (a full 3×3 median filter
    cost 0.6 s on a 2048² image). Returns float64 of the input's shape.
    """
    a = np.asarray(image, dtype=np.float64)
    if a.ndim < 2:
        raise InputError(f"image: expected (..., row, col), got shape {a.shape}")
    if not sigma > 0:
        raise InputError(f"outlier_sigma: expected a positive number, got {sigma!r}")
    if a.shape[-1] * a.shape[-2] == 0:
        return a
    from scipy import ndimage

    size = (1,) * (a.ndim - 2) + (3, 3)
    dev = a - (9.0 * ndimage.uniform_filter(a, size, mode="mirror") - a) / 8.0
    dev -= np.median(dev, axis=(-2, -1), keepdims=True)
    bound = np.maximum(sigma * _robust_scale(dev, (-2, -1)), a.std(axis=(-2, -1), keepdims=True))
    bad = np.nonzero(np.abs(dev) > bound)
    if bad[0].size == 0:
        return a
    padded = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(1, 1), (1, 1)], mode="reflect")
    lead, r, c = bad[:-2], bad[-2], bad[-1]
    windows = [padded[(*lead, r + dr, c + dc)] for dr in range(3) for dc in range(3)]
    med = np.median(np.stack(windows), axis=0)
    keep = np.abs(a[bad] - med) > np.broadcast_to(bound, a.shape)[bad]
    out = a.copy()
    out[tuple(i[keep] for i in bad)] = med[keep]
    return out


def remove_plane(image: np.ndarray) -> np.ndarray:
    """Residual of each (..., row, col) image after its least-squares plane a + b·row + c·col
    (mean 0). Centred coordinates make the three fits orthogonal. Returns float64."""
    a = np.asarray(image, dtype=np.float64)
    if a.ndim < 2:
        raise InputError(f"image: expected (..., row, col), got shape {a.shape}")
    if a.shape[-1] * a.shape[-2] == 0:
        return a.copy()
    r = np.arange(a.shape[-2]) - 0.5 * (a.shape[-2] - 1)
    c = np.arange(a.shape[-1]) - 0.5 * (a.shape[-1] - 1)
    mean = np.asarray(a.mean(axis=(-2, -1)))[..., None, None]
    slope_r = np.asarray((a.mean(axis=-1) @ r) / max(r @ r, 1e-300))[..., None, None]
    slope_c = np.asarray((a.mean(axis=-2) @ c) / max(c @ c, 1e-300))[..., None, None]
    return a - mean - slope_r * r[:, None] - slope_c * c[None, :]


def normalise_image(
    image: np.ndarray,
    *,
    clip: float | None = 5.0,
    outlier_sigma: float | None = OUTLIER_SIGMA,
    detrend: str | None = "plane",
    lowpass_sigma_px: float = 0.0,
) -> np.ndarray:
    """Each image over its last two axes (..., row, col): outliers removed, plane removed,
    low-passed, then robust z-score (the module docstring says why).

    ``(I - median) / (1.4826·MAD)``, clipped to ``±clip``. When the MAD is 0 (more than half
    of the pixels equal) the standard deviation is the scale, and 1 when the image is constant
    (it becomes all zeros). Invariant under ``a·I + b`` for ``a > 0`` (and, detrended, under
    adding a plane). Computed in float64.

    Args:
        image: real array (..., row, col) [any intensity units].
        clip: clip the result to [-clip, clip] [1]; ``None`` for no clipping.
        outlier_sigma: :func:`remove_outliers` threshold; ``None``: keep every pixel.
        detrend: ``"plane"`` (:func:`remove_plane`) or ``None``.
        lowpass_sigma_px: Gaussian low-pass sigma [px] (half-sample symmetric borders, as the
            training band-pass) before the z-score; 0: none.

    Returns:
        float32 array of the shape of ``image`` [1].
    """
    a = np.asarray(image)
    if a.ndim < 2:
        raise InputError(f"image: expected (..., row, col), got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise InputError(f"image: expected a real array, got dtype {a.dtype}")
    if clip is not None and not clip > 0:
        raise InputError(f"clip: expected a positive number or None, got {clip!r}")
    if detrend not in (None, "plane"):
        raise InputError(f"detrend: expected 'plane' or None, got {detrend!r}")
    if not lowpass_sigma_px >= 0:
        raise InputError(f"lowpass_sigma_px: expected >= 0, got {lowpass_sigma_px!r}")
    a = a.astype(np.float64, copy=False)
    if a.size and not np.isfinite(a).all():
        raise InputError("image: contains NaN or infinite values")
    if a.shape[-1] * a.shape[-2] == 0:
        return a.astype(np.float32)
    if outlier_sigma is not None:
        a = remove_outliers(a, outlier_sigma)
    if detrend == "plane":
        a = remove_plane(a)
    if lowpass_sigma_px > 0:
        from scipy import ndimage

        sigma = (0.0,) * (a.ndim - 2) + (float(lowpass_sigma_px),) * 2
        a = ndimage.gaussian_filter(a, sigma, mode="reflect")
    axes = (-2, -1)
    dev = a - np.median(a, axis=axes, keepdims=True)
    out = dev / _robust_scale(dev, axes)
    if clip is not None:
        np.clip(out, -clip, clip, out=out)
    return out.astype(np.float32)


def normalise_from_spec(
    image: np.ndarray, spec: Mapping[str, Any], *, lowpass_sigma_px: float = 0.0
) -> np.ndarray:
    """Apply the normalisation described by ``spec`` (e.g. :data:`NORMALISATION`), with an
    optional Gaussian low-pass [px] before the z-score. Steps a spec does not name (older
    models) are skipped.

    Raises:
        InputError: unknown ``method`` or key (a model from a newer version, or a typo).
    """
    if not isinstance(spec, Mapping):
        raise InputError(f"normalisation: expected a mapping with 'method', got {spec!r}")
    method = spec.get("method")
    if method != "robust_zscore":
        raise InputError(f"normalisation.method: expected 'robust_zscore', got {method!r}")
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        raise InputError(f"normalisation: unknown key(s) {unknown} for method 'robust_zscore'")
    return normalise_image(
        image,
        clip=spec.get("clip", NORMALISATION["clip"]),
        outlier_sigma=spec.get("outlier_sigma"),
        detrend=spec.get("detrend"),
        lowpass_sigma_px=lowpass_sigma_px,
    )
