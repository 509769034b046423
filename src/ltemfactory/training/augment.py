"""On-the-fly augmentation of LTEM training samples that respects the imaging physics.

Arrays are (row, col). One sample is an intensity image (normalised detector counts, >= 0, mean
~1) and its instance label image (int, 0 background). :func:`augment_sample` applies, with a
``numpy.random.Generator``:

Geometry (image and labels alike, one affine resampling of the source):

* a rotation about the beam axis by an arbitrary angle (``rotate``) and a mirror (``flip``);
  without ``rotate``, ``flip`` gives the 8 dihedral symmetries of the pixel grid. The image of a
  rotated/mirrored film is the rotated/mirrored image (the tilt axis turns with it, and the
  rendered dataset already spans all tilt-axis azimuths), so labels stay valid;
* a rescale, i.e. a change of pixel size: ``s`` = output pixel size / input pixel size [1], drawn
  log-uniformly in ``rescale_range`` (s > 1 shrinks the features);
* a random crop to ``crop_px`` x ``crop_px`` output pixels.

The output square, rotated and scaled into the source, always lies inside the source image:
nothing is padded or invented. Its axis-aligned extent is ``s·(crop_px-1)·(|cos θ|+|sin θ|)``
source pixels between the outermost pixel centres, so at angles near 45° a large ``s`` may not
fit; it is then lowered to the largest that fits, possibly below ``rescale_range[0]``. This biases
rotated samples toward magnification when the crop is large relative to the image; keep
``crop_px - 1 <= (min(H, W) - 1) / (√2 · rescale_range[1])`` to avoid it. When ``s > 1`` the
source is pre-blurred with a Gaussian of sigma ``0.5·sqrt(s² - 1)`` [source px] against aliasing.
The image is resampled bilinearly, the labels by nearest neighbour; afterwards every 4-connected
piece of a label is its own instance (ids 1..K in raster order), except that pieces of at most
:data:`FRAGMENT_MAX_PX` pixels which are not the largest piece of their id (nearest-neighbour
stair-step artefacts) become background. Instances cut by the crop border stay partial.

Intensity (image only, after geometry, in the order of the imaging chain): Gaussian blur
(partial coherence / MTF), multiplicative illumination ramp, gamma, Poisson re-noise at a lower
dose plus Gaussian read noise, and an FFT-style band-pass like the one experimentalists apply.
Contrast sign and tilt/defocus conventions are never changed: the dataset already spans both
tilt signs and both defocus signs, and flipping contrast would break that physics.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import fft as sfft
from scipy import ndimage
from skimage.measure import label as _cc_label

from ltemfactory.errors import InputError
from ltemfactory.instances import relabel_raster
from ltemfactory.training.normalisation import remove_plane

__all__ = [
    "FRAGMENT_MAX_PX",
    "SIZE_TO_SIGMA",
    "AugmentConfig",
    "augment_sample",
    "bandpass",
    "check_fits",
    "illumination_ramp",
    "renoise",
]

FRAGMENT_MAX_PX = 2
"""Pieces of a resampled label of at most this many pixels (not its largest piece) are dropped."""

SIZE_TO_SIGMA = math.sqrt(2.0) / math.pi
"""Gaussian sigma [px] per structure size [px] of a band-pass edge. ImageJ's "FFT bandpass"
multiplies the spectrum by exp(-(2·size·f)²) (f [cycles/px]); a Gaussian of sigma
``size·√2/π`` has that transfer function."""

_RANGES = (
    "rescale_range",
    "blur_sigma_px_range",
    "gamma_range",
    "dose_e_per_px_range",
    "read_noise_counts_range",
    "bandpass_small_px_range",
    "bandpass_large_px_range",
)
_PROBABILITIES = (
    "blur_probability",
    "gradient_probability",
    "gamma_probability",
    "dose_probability",
    "bandpass_probability",
)


@dataclass(frozen=True)
class AugmentConfig:
    """Knobs of :func:`augment_sample`; field names are the keys of ``train.augment``.

    Ranges are (low, high) tuples; a value is drawn uniformly unless said log-uniformly.
    Probabilities are per sample and independent.
    """

    crop_px: int = 64
    """Side of the output square [px]."""
    enabled: bool = True
    """False: only a random axis-aligned crop (exact pixels), nothing else."""
    rotate: bool = True
    """Rotate by an angle uniform in [0, 360°) about the beam axis."""
    flip: bool = True
    """Mirror with probability 1/2 (and, without ``rotate``, rotate by k·90°)."""
    rescale_range: tuple[float, float] = (1 / 1.3, 1.3)
    """Output / input pixel size [1], log-uniform (lowered where it does not fit, see module)."""
    blur_probability: float = 0.3
    blur_sigma_px_range: tuple[float, float] = (0.3, 1.2)
    """Gaussian blur sigma [output px]."""
    gradient_probability: float = 0.5
    gradient_max_rel: float = 0.2
    """Illumination ramp: relative amplitude uniform in [0, this] [1], edge to edge ±amplitude."""
    gamma_probability: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.4)
    """Exponent γ of (I/mean)^γ [1], log-uniform; the mean is kept."""
    dose_probability: float = 0.3
    dose_e_per_px_range: tuple[float, float] = (500.0, 20000.0)
    """Dose of the Poisson re-noise [electrons/px], log-uniform."""
    read_noise_counts_range: tuple[float, float] = (0.0, 2.0)
    """Gaussian read noise sigma [counts/px] added with the re-noise."""
    bandpass_probability: float = 0.2
    bandpass_small_px_range: tuple[float, float] = (0.0, 3.0)
    """Remove structures smaller than this [px] (0: no low-pass)."""
    bandpass_large_px_range: tuple[float, float] = (24.0, 80.0)
    """Remove structures larger than this [px]."""

    def __post_init__(self) -> None:
        for name in _RANGES:
            object.__setattr__(self, name, _as_range(name, getattr(self, name)))
        crop = self.crop_px
        if isinstance(crop, bool) or not isinstance(crop, int | np.integer) or crop < 2:
            raise InputError(f"train.augment.crop_px: expected an integer >= 2, got {crop!r}")
        object.__setattr__(self, "crop_px", int(crop))
        for name in ("enabled", "rotate", "flip"):
            if not isinstance(getattr(self, name), bool | np.bool_):
                raise InputError(f"train.augment.{name}: expected true or false")
            object.__setattr__(self, name, bool(getattr(self, name)))
        for name in _PROBABILITIES:
            p = getattr(self, name)
            if not (isinstance(p, int | float) and 0.0 <= p <= 1.0):
                raise InputError(f"train.augment.{name}: expected a number in [0, 1], got {p!r}")
        g = self.gradient_max_rel
        if not (isinstance(g, int | float) and 0.0 <= g < 1.0):
            raise InputError(f"train.augment.gradient_max_rel: expected [0, 1), got {g!r}")
        for name in ("rescale_range", "gamma_range", "dose_e_per_px_range"):
            if getattr(self, name)[0] <= 0:
                raise InputError(f"train.augment.{name}: expected positive values")
        for name in ("blur_sigma_px_range", "read_noise_counts_range", "bandpass_small_px_range"):
            if getattr(self, name)[0] < 0:
                raise InputError(f"train.augment.{name}: expected non-negative values")
        if self.bandpass_small_px_range[1] >= self.bandpass_large_px_range[0]:
            raise InputError(
                "train.augment.bandpass_small_px_range: must lie below bandpass_large_px_range, "
                f"got {self.bandpass_small_px_range} and {self.bandpass_large_px_range}"
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> AugmentConfig:
        """Config from the ``train.augment`` mapping; missing keys take the defaults."""
        d = dict(d or {})
        names = {f.name for f in dataclasses.fields(cls)}
        for key in d:
            if key not in names:
                raise InputError(
                    f"train.augment.{key}: unknown key (expected one of {sorted(names)})"
                )
        return cls(**d)

    @classmethod
    def none(cls, crop_px: int) -> AugmentConfig:
        """No augmentation: a random axis-aligned crop of ``crop_px`` [px] only."""
        return cls(crop_px=crop_px, enabled=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping (ranges as lists), e.g. to log as hyper-parameters."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }


def _as_range(name: str, value: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(
            f"train.augment.{name}: expected two numbers (low, high), got {value!r}"
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise InputError(f"train.augment.{name}: expected finite low <= high, got {value!r}")
    return (lo, hi)


def _uniform(rng: np.random.Generator, r: tuple[float, float]) -> float:
    return float(r[0] + (r[1] - r[0]) * rng.random())


def _loguniform(rng: np.random.Generator, r: tuple[float, float]) -> float:
    return float(np.exp(_uniform(rng, (math.log(r[0]), math.log(r[1])))))


# ---------------------------------------------------------------------------- geometry
def _scale_bounds(cfg: AugmentConfig) -> tuple[float, float]:
    return cfg.rescale_range if cfg.enabled else (1.0, 1.0)


def check_fits(shape: tuple[int, ...], cfg: AugmentConfig) -> None:
    """Raise InputError if a (row, col) image of ``shape`` [px] cannot give one crop.

    The smallest scale ``rescale_range[0]`` must fit unrotated:
    ``s_min·(crop_px - 1) <= min(H, W) - 1``.
    """
    h, w = int(shape[-2]), int(shape[-1])
    s_min = _scale_bounds(cfg)[0]
    if s_min * (cfg.crop_px - 1) > min(h, w) - 1 + 1e-9:
        need = math.ceil(s_min * (cfg.crop_px - 1) - 1e-9) + 1
        raise InputError(
            f"image of {h}x{w} px is too small for crop_px={cfg.crop_px} at scale {s_min:.4g} "
            f"(needs at least {need}x{need} px; lower train.augment.crop_px)"
        )


def _draw_geometry(
    shape: tuple[int, int], cfg: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, float]:
    """(matrix, offset, s) mapping output (row, col) indices o to source ``matrix @ o + offset``."""
    h, w = shape
    n = cfg.crop_px
    if cfg.enabled and cfg.rotate:
        theta = 2.0 * math.pi * rng.random()
        c, sn = math.cos(theta), math.sin(theta)
    elif cfg.enabled and cfg.flip:
        c, sn = ((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))[int(rng.integers(4))]
    else:
        c, sn = 1.0, 0.0
    rot = np.array([[c, -sn], [sn, c]])
    if cfg.enabled and cfg.flip and rng.random() < 0.5:
        rot = rot @ np.diag([1.0, -1.0])
    s_lo, s_hi = _scale_bounds(cfg)
    s = _loguniform(rng, (s_lo, s_hi)) if s_hi > s_lo else s_lo
    spread = abs(c) + abs(sn)
    s_fit = (min(h, w) - 1) / ((n - 1) * spread)
    s = min(s, s_fit)
    integral = s == 1.0 and np.all(rot == np.round(rot))
    matrix = s * rot
    half = 0.5 * s * (n - 1) * spread  # source half-extent of the output pixel centres [px]
    centre = np.empty(2)
    for ax, size in enumerate((h, w)):
        room = max(size - 1 - 2 * half, 0.0)
        if integral:  # keep source coordinates on pixel centres: an exact crop
            centre[ax] = half + int(rng.integers(int(math.floor(room + 1e-9)) + 1))
        else:
            centre[ax] = half + room * rng.random()
    offset = centre - matrix @ np.full(2, 0.5 * (n - 1))
    return matrix, offset, s


def _resample(
    image: np.ndarray, labels: np.ndarray, matrix: np.ndarray, offset: np.ndarray, s: float, n: int
) -> tuple[np.ndarray, np.ndarray]:
    corners = np.array([[0, 0], [0, n - 1], [n - 1, 0], [n - 1, n - 1]], dtype=float)
    src = corners @ matrix.T + offset
    sigma = 0.5 * math.sqrt(s * s - 1.0) if s > 1.0 else 0.0
    margin = int(math.ceil(4.0 * sigma)) + 2
    lo = np.maximum(np.floor(src.min(axis=0)).astype(int) - margin, 0)
    hi = np.minimum(np.ceil(src.max(axis=0)).astype(int) + margin + 1, image.shape)
    box = (slice(lo[0], hi[0]), slice(lo[1], hi[1]))
    sub = image[box].astype(np.float64)
    if sigma > 0:
        sub = ndimage.gaussian_filter(sub, sigma, mode="reflect")
    off = offset - lo
    img = ndimage.affine_transform(
        sub, matrix, offset=off, output_shape=(n, n), order=1, mode="nearest"
    )
    lab = ndimage.affine_transform(
        labels[box].astype(np.int32),
        matrix,
        offset=off,
        output_shape=(n, n),
        order=0,
        mode="nearest",
        output=np.int32,
    )
    return img, lab


def _split_pieces(labels: np.ndarray) -> np.ndarray:
    """Each 4-connected piece of each id its own instance (1..K, raster order); small non-largest
    pieces become background."""
    pieces = _cc_label(labels, background=0, connectivity=1)
    k = int(pieces.max())
    if k == 0:
        return pieces.astype(np.int32)
    counts = np.bincount(pieces.ravel(), minlength=k + 1)
    old = np.zeros(k + 1, dtype=np.int64)
    old[pieces.ravel()] = labels.ravel()
    ids = np.arange(1, k + 1)
    order = np.lexsort((-counts[ids], old[ids]))  # by old id, then largest piece first
    largest = np.zeros(k + 1, dtype=bool)
    first = np.r_[True, old[ids][order][1:] != old[ids][order][:-1]]
    largest[ids[order][first]] = True
    drop = (counts <= FRAGMENT_MAX_PX) & ~largest
    drop[0] = False
    if drop.any():
        pieces = np.where(drop[pieces], 0, pieces)
        return relabel_raster(pieces)
    return pieces.astype(np.int32)


# ---------------------------------------------------------------------------- intensity
def illumination_ramp(shape: tuple[int, int], amplitude: float, angle: float) -> np.ndarray:
    """Multiplicative linear ramp 1 + amplitude·p [1], p in [-1, 1] along direction ``angle``
    [rad] (0 along rows), p = 0 at the image centre. float64 (row, col)."""
    r = np.arange(shape[0]) - 0.5 * (shape[0] - 1)
    c = np.arange(shape[1]) - 0.5 * (shape[1] - 1)
    p = math.cos(angle) * r[:, None] + math.sin(angle) * c[None, :]
    peak = np.abs(p).max()
    return 1.0 + amplitude * (p / peak if peak > 0 else p)


def renoise(
    image: np.ndarray, dose_e_per_px: float, rng: np.random.Generator, read_noise_counts: float = 0
) -> np.ndarray:
    """Shot noise of ``dose_e_per_px`` [e/px] on the non-negative intensity [1]: Poisson(I·d)/d,
    plus Gaussian read noise of ``read_noise_counts`` [counts/px]. Variance added ≈ I/d; on top
    of the stored image's own noise (effective dose 1/(1/d0 + 1/d)). float64 (row, col)."""
    lam = np.maximum(image, 0.0) * dose_e_per_px
    out = rng.poisson(lam).astype(np.float64)
    if read_noise_counts > 0:
        out += rng.normal(0.0, read_noise_counts, size=out.shape)
    return out / dose_e_per_px


def bandpass(image: np.ndarray, small_px: float, large_px: float) -> np.ndarray:
    """FFT-bandpass-like difference of Gaussians of a (row, col) image: removes structures
    larger than ``large_px`` and smaller than ``small_px`` [px] (0: none), sigmas
    ``size·√2/π`` (ImageJ's transfer function, see :data:`SIZE_TO_SIGMA`).

    The least-squares plane (mean and linear ramp) is removed first, since a band-pass maps
    it to zero, and the residual is filtered with mirror borders (half-sample symmetric, like
    ImageJ's mirror padding) exactly in the DCT-II domain. Returns float64 (row, col), mean 0.
    """
    a = np.asarray(image, dtype=np.float64)
    if a.ndim != 2:
        raise InputError(f"image: expected (row, col), got shape {a.shape}")
    resid = remove_plane(a)
    f2 = (np.arange(a.shape[0])[:, None] / (2.0 * a.shape[0])) ** 2 + (
        np.arange(a.shape[1])[None, :] / (2.0 * a.shape[1])
    ) ** 2  # squared spatial frequency of each DCT-II coefficient [cycles²/px²]

    def transfer(size_px: float) -> np.ndarray:
        return np.exp(-2.0 * (math.pi * SIZE_TO_SIGMA * size_px) ** 2 * f2)

    gain = (transfer(small_px) if small_px > 0 else 1.0) - transfer(large_px)
    return sfft.idctn(sfft.dctn(resid, type=2, norm="ortho") * gain, type=2, norm="ortho")


def _intensity(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    img = image
    if rng.random() < cfg.blur_probability:
        img = ndimage.gaussian_filter(img, _uniform(rng, cfg.blur_sigma_px_range), mode="reflect")
    if rng.random() < cfg.gradient_probability:
        amp = cfg.gradient_max_rel * rng.random()
        img = img * illumination_ramp(img.shape, amp, 2.0 * math.pi * rng.random())
    if rng.random() < cfg.gamma_probability:
        gamma = _loguniform(rng, cfg.gamma_range)
        pos = np.maximum(img, 0.0)
        mean = pos.mean()
        if mean > 0:
            g = pos**gamma
            img = g * (mean / g.mean())
    if rng.random() < cfg.dose_probability:
        dose = _loguniform(rng, cfg.dose_e_per_px_range)
        img = renoise(img, dose, rng, _uniform(rng, cfg.read_noise_counts_range))
    if rng.random() < cfg.bandpass_probability:
        large = _uniform(rng, cfg.bandpass_large_px_range)
        small = _uniform(rng, cfg.bandpass_small_px_range)
        img = bandpass(img, small, large) + img.mean()
    return img


# ---------------------------------------------------------------------------- sample
def augment_sample(
    image: np.ndarray, labels: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One augmented crop of a training sample.

    Args:
        image: real (row, col) intensity [1], >= 0.
        labels: integer (row, col) instance ids, 0 background.
        cfg: the augmentation knobs.
        rng: source of randomness; the same generator state gives bit-identical output.

    Returns:
        (image float32 (crop_px, crop_px) [1], labels int32 (crop_px, crop_px), 1..K).
    """
    image = np.asarray(image)
    labels = np.asarray(labels)
    if image.ndim != 2 or labels.shape != image.shape:
        raise InputError(
            f"image/labels: expected two (row, col) arrays of one shape, got {image.shape} "
            f"and {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"labels: expected an integer array, got dtype {labels.dtype}")
    check_fits(image.shape, cfg)
    matrix, offset, s = _draw_geometry(image.shape, cfg, rng)
    img, lab = _resample(image, labels, matrix, offset, s, cfg.crop_px)
    lab = _split_pieces(lab)
    if cfg.enabled:
        img = _intensity(img, cfg, rng)
    return img.astype(np.float32), lab
