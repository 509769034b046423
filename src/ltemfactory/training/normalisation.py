"""Per-image intensity normalisation shared by training and inference.

LTEM images differ in dose, gain, illumination and the experimentalist's post-processing, so the
network sees each image standardised on its own: a robust z-score over the last two axes
(..., row, col). Median and MAD ignore the few saturated/hot pixels and the bright/dark skyrmion
contrast that would inflate a mean/std. Inference must apply exactly the same transform, so the
model stores :data:`NORMALISATION` and calls :func:`normalise_from_spec`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ltemfactory.errors import InputError

__all__ = ["MAD_TO_SIGMA", "NORMALISATION", "normalise_from_spec", "normalise_image"]

MAD_TO_SIGMA = 1.4826
"""1/Φ⁻¹(3/4): 1.4826·MAD estimates the standard deviation of Gaussian noise."""

NORMALISATION: dict[str, Any] = {"method": "robust_zscore", "clip": 5.0}
"""Description of the transform used in training (stored with the model for inference)."""


def normalise_image(image: np.ndarray, *, clip: float | None = 5.0) -> np.ndarray:
    """Robust z-score of each image over its last two axes (..., row, col).

    ``(I - median) / (1.4826·MAD)``, clipped to ``±clip``. When the MAD is 0 (more than half
    of the pixels equal) the standard deviation is the scale, and 1 when the image is constant
    (it becomes all zeros). Invariant under ``a·I + b`` for ``a > 0``. Computed in float64.

    Args:
        image: real array (..., row, col) [any intensity units].
        clip: clip the result to [-clip, clip] [1]; ``None`` for no clipping.

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
    a = a.astype(np.float64, copy=False)
    if a.size and not np.isfinite(a).all():
        raise InputError("image: contains NaN or infinite values")
    if a.shape[-1] * a.shape[-2] == 0:
        return a.astype(np.float32)
    axes = (-2, -1)
    med = np.median(a, axis=axes, keepdims=True)
    dev = a - med
    scale = MAD_TO_SIGMA * np.median(np.abs(dev), axis=axes, keepdims=True)
    std = a.std(axis=axes, keepdims=True)
    scale = np.where(scale > 0, scale, np.where(std > 0, std, 1.0))
    out = dev / scale
    if clip is not None:
        np.clip(out, -clip, clip, out=out)
    return out.astype(np.float32)


def normalise_from_spec(image: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
    """Apply the normalisation described by ``spec`` (e.g. :data:`NORMALISATION`).

    Raises:
        InputError: unknown ``method`` or key (a model from a newer version, or a typo).
    """
    if not isinstance(spec, Mapping):
        raise InputError(f"normalisation: expected a mapping with 'method', got {spec!r}")
    method = spec.get("method")
    if method != "robust_zscore":
        raise InputError(f"normalisation.method: expected 'robust_zscore', got {method!r}")
    unknown = sorted(set(spec) - {"method", "clip"})
    if unknown:
        raise InputError(f"normalisation: unknown key(s) {unknown} for method 'robust_zscore'")
    return normalise_image(image, clip=spec.get("clip", NORMALISATION["clip"]))
