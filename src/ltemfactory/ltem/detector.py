"""Camera model: electron dose → counts with the usual nuisances (physics.md §3, "Detector").

Chain, per image (all random nuisances drawn independently per image from one generator):

1. dose D_i = D · U(1 − s_D, 1 + s_D) [e⁻/px at unit intensity];
2. slow illumination gradient: factor 1 + a_i (x cos φ_i + y sin φ_i) / R with a_i ~ U(0, a_max),
   φ_i ~ U(0, 2π), (x, y) pixel offsets from the centre, R = max(ny, nx)/2 (clamped ≥ 0);
3. shot noise: counts ~ Poisson(I · D_i · gradient);
4. camera MTF (low-pass, applied to signal and shot noise as in an integrating camera):
   MTF(ν) = f + (1 − f) / (1 + (ν/ν0)²), ν = radial frequency [cycles/px];
5. gain g_i = g · U(1 − s_g, 1 + s_g) [counts/e⁻], offset [counts], Gaussian read noise [counts];
6. hot pixels (Bernoulli fraction, value offset + g_i · factor · D_i) and dead pixels (offset);
7. per-image normalisation: "mean" (divide by the image mean), "zscore" or "none".

Generators: a ``torch.Generator`` (on the data's device), an int seed, a ``numpy.random.Generator``
(a seed is drawn from it) or None (torch's global RNG). The same seed gives the same images.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from ltemfactory.errors import ConfigError

__all__ = ["Detector", "apply_detector", "as_generator", "mtf"]

_NORMALIZE = ("none", "mean", "zscore")


def as_generator(
    generator: torch.Generator | np.random.Generator | int | None, device: torch.device | str
) -> torch.Generator | None:
    """A torch.Generator on ``device`` from a torch/numpy generator or an int seed (None → None).

    A torch.Generator on another device seeds a new one on ``device`` (one draw from it, so the
    result is still reproducible).
    """
    dev = torch.device(device)
    if generator is None:
        return None
    if isinstance(generator, torch.Generator):
        gdev = generator.device
        if gdev.type == dev.type and (dev.index is None or gdev.index in (None, dev.index)):
            return generator
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=gdev))
        return torch.Generator(device=dev).manual_seed(seed)
    if isinstance(generator, np.random.Generator):
        seed = int(generator.integers(0, 2**63 - 1))
    elif isinstance(generator, int | np.integer):
        seed = int(generator)
    else:
        raise ConfigError(
            "generator: expected a torch/numpy Generator or an int seed, "
            f"got {type(generator).__name__}"
        )
    return torch.Generator(device=dev).manual_seed(seed)


def _num(name: str, v, *, nonneg: bool = True, upper: float | None = None) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected a number, got {v!r}") from None
    if not math.isfinite(f) or (nonneg and f < 0) or (upper is not None and f > upper):
        rng = f"in [0, {upper}]" if upper is not None else "non-negative" if nonneg else "finite"
        raise ConfigError(f"{name}: expected a {rng} number, got {v!r}")
    return f


@dataclass(frozen=True)
class Detector:
    """Detector parameters (see the module docstring for the chain).

    Attributes:
        dose_e_per_px: mean electrons per pixel at unit image intensity; None = no shot noise.
        dose_rel_spread: per-image relative dose spread s_D (uniform).
        gain_counts_per_e: conversion gain g [counts/e⁻].
        gain_rel_spread: per-image relative gain spread s_g (uniform).
        offset_counts: dark offset [counts].
        read_noise_counts: Gaussian read-noise standard deviation [counts].
        mtf_nu0_cyc_per_px: MTF half-power frequency ν0 [cycles/px]; None = perfect MTF.
        mtf_floor: high-frequency MTF floor f in [0, 1].
        hot_pixel_fraction / dead_pixel_fraction: fractions of pixels, drawn per image.
        hot_pixel_factor: hot-pixel signal in units of the mean dose.
        gradient_max_rel: maximum relative illumination change a_max over half the field.
        normalize: "mean", "zscore" or "none".
        poisson_normal_above: above this rate [e⁻] draw the Gaussian N(λ, λ) (rounded)
            instead of the exact Poisson, for speed; None = always exact.
    """

    dose_e_per_px: float | None = 100.0
    dose_rel_spread: float = 0.0
    gain_counts_per_e: float = 1.0
    gain_rel_spread: float = 0.0
    offset_counts: float = 0.0
    read_noise_counts: float = 0.0
    mtf_nu0_cyc_per_px: float | None = None
    mtf_floor: float = 0.0
    hot_pixel_fraction: float = 0.0
    dead_pixel_fraction: float = 0.0
    hot_pixel_factor: float = 10.0
    gradient_max_rel: float = 0.0
    normalize: str = "mean"
    poisson_normal_above: float | None = None

    def __post_init__(self) -> None:
        if self.dose_e_per_px is not None and _num("dose_e_per_px", self.dose_e_per_px) <= 0:
            raise ConfigError(
                f"dose_e_per_px: expected a positive dose or None, got {self.dose_e_per_px!r}"
            )
        _num("dose_rel_spread", self.dose_rel_spread, upper=1.0)
        if _num("gain_counts_per_e", self.gain_counts_per_e) <= 0:
            raise ConfigError(
                f"gain_counts_per_e: expected a positive gain, got {self.gain_counts_per_e!r}"
            )
        _num("gain_rel_spread", self.gain_rel_spread, upper=1.0)
        _num("offset_counts", self.offset_counts, nonneg=False)
        _num("read_noise_counts", self.read_noise_counts)
        if (
            self.mtf_nu0_cyc_per_px is not None
            and _num("mtf_nu0_cyc_per_px", self.mtf_nu0_cyc_per_px) <= 0
        ):
            raise ConfigError(
                "mtf_nu0_cyc_per_px: expected a positive frequency or None, "
                f"got {self.mtf_nu0_cyc_per_px!r}"
            )
        _num("mtf_floor", self.mtf_floor, upper=1.0)
        _num("hot_pixel_fraction", self.hot_pixel_fraction, upper=1.0)
        _num("dead_pixel_fraction", self.dead_pixel_fraction, upper=1.0)
        _num("hot_pixel_factor", self.hot_pixel_factor)
        _num("gradient_max_rel", self.gradient_max_rel)
        if self.normalize not in _NORMALIZE:
            raise ConfigError(f"normalize: expected one of {_NORMALIZE}, got {self.normalize!r}")
        if self.poisson_normal_above is not None:
            _num("poisson_normal_above", self.poisson_normal_above)


@functools.lru_cache(maxsize=16)
def _mtf_cached(shape, nu0, floor, device: str, dtype: torch.dtype) -> torch.Tensor:
    """The MTF as a complex tensor (multiplying a spectrum by a real one re-casts it each call)."""
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    return mtf(shape, nu0, floor, device=device, dtype=dtype).to(cdtype)


def mtf(
    shape: tuple[int, int],
    nu0_cyc_per_px: float,
    floor: float = 0.0,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """MTF(ν) = f + (1 − f)/(1 + (ν/ν0)²) on the rfft2 grid of ``shape`` (ny, nx//2 + 1)."""
    ny, nx = shape
    fx = torch.fft.rfftfreq(nx, dtype=torch.float64, device=device)[None, :]
    fy = torch.fft.fftfreq(ny, dtype=torch.float64, device=device)[:, None]
    nu2 = fx * fx + fy * fy
    return (floor + (1.0 - floor) / (1.0 + nu2 / nu0_cyc_per_px**2)).to(dtype)


def _uniform(n: int, lo: float, hi: float, g, device, dtype) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, device=device, dtype=dtype)


def _poisson(rate: torch.Tensor, g, normal_above: float | None) -> torch.Tensor:
    """Poisson counts; with ``normal_above``, rates above it use round(N(λ, λ)) (≥ 0) instead."""
    if normal_above is None:
        return torch.poisson(rate, generator=g)
    noise = torch.randn(rate.shape, generator=g, device=rate.device, dtype=rate.dtype)
    out = torch.round(noise.mul_(rate.sqrt()).add_(rate)).clamp_min_(0)
    small = rate <= normal_above
    if bool(small.any()):
        out[small] = torch.poisson(rate[small], generator=g)
    return out


def _bad_pixels(n: int, npix: int, fraction: float, g, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Image and flat pixel indices of bad pixels: Binomial(npix, fraction) of them per image at
    uniform positions (a repeated position, probability ~ count²/npix, counts once)."""
    counts = torch.binomial(
        torch.full((n,), float(npix), dtype=torch.float64, device=device),
        torch.full((n,), float(fraction), dtype=torch.float64, device=device),
        generator=g,
    ).long()
    img = torch.repeat_interleave(torch.arange(n, device=device), counts)
    pix = torch.randint(0, npix, (img.numel(),), generator=g, device=device)
    return img, pix


def apply_detector(
    intensity: torch.Tensor,
    detector: Detector,
    generator: torch.Generator | np.random.Generator | int | None = None,
) -> torch.Tensor:
    """Detected image(s) from intensity (..., ny, nx) (unit incident intensity); same shape.

    Every image (every index of the leading dimensions) gets its own nuisance draws.
    """
    d = detector
    g = as_generator(generator, intensity.device)
    shape = intensity.shape
    ny, nx = shape[-2:]
    x = intensity.reshape(-1, ny, nx)
    n, dev, dt = x.shape[0], x.device, x.dtype
    if not dt.is_floating_point:
        x, dt = x.float(), torch.float32
    dose_base = 1.0 if d.dose_e_per_px is None else float(d.dose_e_per_px)
    dose = _uniform(n, 1 - d.dose_rel_spread, 1 + d.dose_rel_spread, g, dev, dt) * dose_base
    rate = x * dose[:, None, None]  # intensities are >= 0
    if d.gradient_max_rel > 0:
        amp = _uniform(n, 0.0, d.gradient_max_rel, g, dev, dt)
        ang = _uniform(n, 0.0, 2 * math.pi, g, dev, dt)
        r = max(ny, nx) / 2.0
        yy = (torch.arange(ny, device=dev, dtype=dt) - (ny - 1) / 2) / r
        xx = (torch.arange(nx, device=dev, dtype=dt) - (nx - 1) / 2) / r
        cx = (amp * torch.cos(ang))[:, None, None]
        cy = (amp * torch.sin(ang))[:, None, None]
        rate = rate.mul_((1 + cx * xx + cy * yy[:, None]).clamp_min_(0))
    if d.dose_e_per_px is not None:
        counts = _poisson(rate, g, d.poisson_normal_above)
    else:
        counts = rate
    if d.mtf_nu0_cyc_per_px is not None:
        f = _mtf_cached((ny, nx), d.mtf_nu0_cyc_per_px, d.mtf_floor, str(dev), dt)
        counts = torch.fft.irfft2(torch.fft.rfft2(counts).mul_(f), s=(ny, nx))
    gain = _uniform(n, 1 - d.gain_rel_spread, 1 + d.gain_rel_spread, g, dev, dt)
    gain = gain * d.gain_counts_per_e
    sig = counts * gain[:, None, None]
    if d.offset_counts:
        sig = sig.add_(d.offset_counts)
    if d.read_noise_counts > 0:
        noise = torch.randn(sig.shape, generator=g, device=dev, dtype=dt)
        sig = sig.add_(noise, alpha=d.read_noise_counts)
    flat = sig.view(n, ny * nx)
    if d.hot_pixel_fraction > 0:
        img, pix = _bad_pixels(n, ny * nx, d.hot_pixel_fraction, g, dev)
        hot_val = d.offset_counts + gain * d.hot_pixel_factor * dose
        flat[img, pix] = hot_val[img]
    if d.dead_pixel_fraction > 0:
        img, pix = _bad_pixels(n, ny * nx, d.dead_pixel_fraction, g, dev)
        flat[img, pix] = torch.full_like(pix, 0, dtype=dt) + d.offset_counts
    if d.normalize == "mean":
        sig = sig / sig.mean(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(dt).tiny)
    elif d.normalize == "zscore":
        mu = sig.mean(dim=(-2, -1), keepdim=True)
        sd = sig.std(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(dt).tiny)
        sig = (sig - mu) / sd
    return sig.reshape(shape)
