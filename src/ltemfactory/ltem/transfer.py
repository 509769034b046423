"""Contrast transfer function of the objective lens as a product of small parts (physics.md §3).

    T(q) = exp(−i χ(q)) · E_s(q) · E_t(q) · Aperture(q),      q = (qx, qy) [cycles/m]

* aberration phase (defocus, spherical aberration, two-fold astigmatism):
  χ(q) = π λ Δf q² + (π/2) Cs λ³ q⁴ + π λ Ca q² cos 2(φ_q − φ_a)
* spatial-coherence envelope (quasi-coherent approximation, Frank 1973; de Jong & Van Dyck,
  Ultramicroscopy 49, 66 (1993)): E_s(q) = exp[−(θc/(2λ))² |∇_q χ|²], which for Ca = 0 is the
  physics.md form exp[−(π θc/λ)² (Cs λ³ q³ + Δf λ q)²],
* temporal-coherence envelope: E_t(q) = exp[−(π λ Δ)² q⁴ / 2],
* objective aperture: 1 where λ|q| ≤ semi-angle, else 0.

All functions take frequency arrays in cycles per metre (any shape, e.g. the sheared projected
lattice of a tilted sample, see :mod:`ltemfactory.ltem.geometry`) and compute in float64: the
SI powers (q⁴ ~ 1e36 m⁻⁴) would overflow float32. Cast the result to the working dtype.
"""

from __future__ import annotations

import math

import torch

from ltemfactory.ltem.microscope import Microscope

__all__ = [
    "aberration_phase",
    "aberration_phase_gradient",
    "aperture_function",
    "spatial_envelope",
    "spatial_frequencies",
    "temporal_envelope",
    "transfer_function",
]


def _exp_neg(a: torch.Tensor) -> torch.Tensor:
    """exp(−a) for a ≥ 0, exactly 0 beyond a = 700 (no denormals, which are slow on CPUs)."""
    return torch.where(a < 700.0, torch.exp(-a.clamp_max(700.0)), torch.zeros_like(a))


def spatial_frequencies(
    shape: tuple[int, int],
    pixel_size_m: float | tuple[float, float],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frequencies (qx, qy) [cycles/m] of a square-pixel grid (ny, nx), fft layout, each (ny, nx).

    ``pixel_size_m`` is a float or (dy, dx).
    """
    ny, nx = shape
    if isinstance(pixel_size_m, tuple | list):
        dy, dx = (float(v) for v in pixel_size_m)
    else:
        dy = dx = float(pixel_size_m)
    qx = torch.fft.fftfreq(nx, d=dx, dtype=dtype, device=device)
    qy = torch.fft.fftfreq(ny, d=dy, dtype=dtype, device=device)
    return qx[None, :].expand(ny, nx), qy[:, None].expand(ny, nx)


def aberration_phase(
    qx: torch.Tensor,
    qy: torch.Tensor,
    wavelength_m: float,
    defocus_m: float,
    cs_m: float = 0.0,
    astigmatism_m: float = 0.0,
    astigmatism_angle_rad: float = 0.0,
) -> torch.Tensor:
    """χ(q) [rad] = π λ Δf q² + (π/2) Cs λ³ q⁴ + π λ Ca q² cos 2(φ_q − φ_a); q in cycles/m."""
    lam = float(wavelength_m)
    q2 = qx * qx + qy * qy
    chi = math.pi * lam * float(defocus_m) * q2 + 0.5 * math.pi * float(cs_m) * lam**3 * q2 * q2
    if astigmatism_m:
        c2, s2 = math.cos(2 * astigmatism_angle_rad), math.sin(2 * astigmatism_angle_rad)
        # q² cos 2(φ_q − φ_a) = (qx² − qy²) cos 2φ_a + 2 qx qy sin 2φ_a
        chi = chi + math.pi * lam * float(astigmatism_m) * (
            (qx * qx - qy * qy) * c2 + 2 * qx * qy * s2
        )
    return chi


def aberration_phase_gradient(
    qx: torch.Tensor,
    qy: torch.Tensor,
    wavelength_m: float,
    defocus_m: float,
    cs_m: float = 0.0,
    astigmatism_m: float = 0.0,
    astigmatism_angle_rad: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """∇_q χ = (∂χ/∂qx, ∂χ/∂qy) [rad m] of :func:`aberration_phase`."""
    lam = float(wavelength_m)
    q2 = qx * qx + qy * qy
    radial = 2 * math.pi * lam * float(defocus_m) + 2 * math.pi * float(cs_m) * lam**3 * q2
    gx, gy = radial * qx, radial * qy
    if astigmatism_m:
        c2, s2 = math.cos(2 * astigmatism_angle_rad), math.sin(2 * astigmatism_angle_rad)
        a = 2 * math.pi * lam * float(astigmatism_m)
        gx = gx + a * (qx * c2 + qy * s2)
        gy = gy + a * (-qy * c2 + qx * s2)
    return gx, gy


def spatial_envelope(qx: torch.Tensor, qy: torch.Tensor, microscope: Microscope) -> torch.Tensor:
    """E_s(q) = exp[−(θc/(2λ))² |∇_q χ|²] (= physics.md §3 form for Ca = 0); 1 when θc = 0."""
    if microscope.theta_c_rad == 0.0:
        return torch.ones_like(qx)
    lam = microscope.wavelength_m
    gx, gy = aberration_phase_gradient(
        qx,
        qy,
        lam,
        microscope.defocus_m,
        microscope.cs_m,
        microscope.astigmatism_m,
        microscope.astigmatism_angle_rad,
    )
    return _exp_neg(((microscope.theta_c_rad / (2 * lam)) ** 2) * (gx * gx + gy * gy))


def temporal_envelope(qx: torch.Tensor, qy: torch.Tensor, microscope: Microscope) -> torch.Tensor:
    """E_t(q) = exp[−(π λ Δ)² q⁴ / 2] with the defocus spread Δ [m]; 1 when Δ = 0."""
    if microscope.defocus_spread_m == 0.0:
        return torch.ones_like(qx)
    q2 = qx * qx + qy * qy
    return _exp_neg(
        0.5 * (math.pi * microscope.wavelength_m * microscope.defocus_spread_m) ** 2 * q2 * q2
    )


def aperture_function(qx: torch.Tensor, qy: torch.Tensor, microscope: Microscope) -> torch.Tensor:
    """Hard objective aperture: 1 where λ|q| ≤ aperture_rad, else 0 (all ones without aperture)."""
    if microscope.aperture_rad is None:
        return torch.ones_like(qx)
    qmax = microscope.aperture_rad / microscope.wavelength_m
    return ((qx * qx + qy * qy) <= qmax * qmax).to(qx.dtype)


def transfer_function(qx: torch.Tensor, qy: torch.Tensor, microscope: Microscope) -> torch.Tensor:
    """T(q) = exp(−iχ) E_s E_t Aperture, complex (complex128 for float64 q)."""
    chi = aberration_phase(
        qx,
        qy,
        microscope.wavelength_m,
        microscope.defocus_m,
        microscope.cs_m,
        microscope.astigmatism_m,
        microscope.astigmatism_angle_rad,
    )
    amp = (
        spatial_envelope(qx, qy, microscope)
        * temporal_envelope(qx, qy, microscope)
        * aperture_function(qx, qy, microscope)
    )
    # values below 1e-30 are set to 0: they would be denormal in float32 (slow, and meaningless)
    amp = torch.where(amp < 1e-30, torch.zeros_like(amp), amp)
    return torch.polar(amp, -chi)
