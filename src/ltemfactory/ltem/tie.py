"""Phase retrieval with the transport-of-intensity equation (physics.md §4).

TIE (Teague, JOSA 73, 1434 (1983)): ∇·(I ∇φ) = −(2π/λ) ∂I/∂z, with the defocus convention of
:mod:`ltemfactory.ltem.microscope` (Δf > 0 propagates downstream). For I ≈ I0 in focus

    φ = −(2π / (λ I0)) ∇⁻² ∂I/∂z,     ∂I/∂z ≈ (I(+Δf) − I(−Δf)) / (2Δf).

The inverse Laplacian is applied in Fourier space (∇² ↔ −4π² q², q in cycles/m) with Tikhonov
regularisation 1/q² → q²/(q² + qc²)², after mirror padding (the image and its reflections form
an even, seamlessly periodic 2ny × 2nx field), which suppresses edge artefacts.

SITIE (Chess et al., Ultramicroscopy 177, 78 (2017)): for samples of uniform in-focus
intensity, ∂I/∂z ≈ (I − ⟨I⟩)/Δf from a single defocused image.

Induction from the phase: ∫B_x dz = (ħ/e) ∂φ/∂y, ∫B_y dz = −(ħ/e) ∂φ/∂x [T m].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ltemfactory.constants import E_CHARGE, HBAR
from ltemfactory.errors import ConfigError, InputError

__all__ = [
    "TieResult",
    "induction_from_phase",
    "inverse_laplacian",
    "phase_gradient",
    "separate_flip_phases",
    "sitie_phase",
    "tie_from_series",
    "tie_phase",
]


@dataclass(frozen=True)
class TieResult:
    """TIE reconstruction.

    Attributes:
        phase: (B, ny, nx) [rad].
        induction: (B, 2, ny, nx) [T m]: (∫B_x dz, ∫B_y dz).
        pixel_size_m: [m].
    """

    phase: torch.Tensor
    induction: torch.Tensor
    pixel_size_m: float


def _mirror_pad(f: torch.Tensor) -> torch.Tensor:
    g = torch.cat([f, f.flip(-1)], dim=-1)
    return torch.cat([g, g.flip(-2)], dim=-2)


def _q2(shape: tuple[int, int], pixel_size_m: float, device) -> torch.Tensor:
    ny, nx = shape
    qx = torch.fft.rfftfreq(nx, d=pixel_size_m, dtype=torch.float64, device=device)[None, :]
    qy = torch.fft.fftfreq(ny, d=pixel_size_m, dtype=torch.float64, device=device)[:, None]
    return qx * qx + qy * qy


def inverse_laplacian(
    f: torch.Tensor, pixel_size_m: float, qc_per_m: float = 0.0, *, pad: str = "mirror"
) -> torch.Tensor:
    """Regularised ∇⁻² f of (..., ny, nx) real data [units of f × m²].

    ∇⁻² f = −F⁻¹[F[f] · q²/(q² + qc²)²] / (4π²); the q = 0 term is dropped. ``qc_per_m`` [cycles/m];
    ``pad`` is "mirror" (symmetric padding) or "periodic" (none).
    """
    if pad not in ("mirror", "periodic"):
        raise ConfigError(f"pad: expected 'mirror' or 'periodic', got {pad!r}")
    if qc_per_m < 0 or not math.isfinite(qc_per_m):
        raise ConfigError(
            f"qc_per_m: expected a non-negative frequency [cycles/m], got {qc_per_m!r}"
        )
    ny, nx = f.shape[-2:]
    work = _mirror_pad(f) if pad == "mirror" else f
    q2 = _q2(work.shape[-2:], pixel_size_m, f.device)
    den = (q2 + qc_per_m**2) ** 2
    filt = torch.where(
        q2 > 0, q2 / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(q2)
    )
    filt = (-filt / (4 * math.pi**2)).to(f.dtype)
    out = torch.fft.irfft2(torch.fft.rfft2(work) * filt, s=work.shape[-2:])
    return out[..., :ny, :nx]


def tie_phase(
    intensity_minus: torch.Tensor,
    intensity_focus: torch.Tensor,
    intensity_plus: torch.Tensor,
    defocus_m: float,
    wavelength_m: float,
    pixel_size_m: float,
    qc_per_m: float = 0.0,
    *,
    pad: str = "mirror",
) -> torch.Tensor:
    """TIE phase [rad] from images at −Δf, 0, +Δf (each (..., ny, nx)), Δf > 0 [m].

    φ = −(2π/(λ I0)) ∇⁻² [(I₊ − I₋)/(2Δf)], I0 = mean of the in-focus image (per image).
    """
    if not defocus_m > 0:
        raise ConfigError(
            f"defocus_m: expected the positive defocus step Δf [m], got {defocus_m!r}"
        )
    if not (intensity_minus.shape == intensity_focus.shape == intensity_plus.shape):
        raise InputError("tie_phase: the three images must have the same shape")
    didz = (intensity_plus - intensity_minus) / (2.0 * defocus_m)
    i0 = intensity_focus.mean(dim=(-2, -1), keepdim=True)
    return _phase_from_dIdz(didz, i0, wavelength_m, pixel_size_m, qc_per_m, pad)


def sitie_phase(
    intensity: torch.Tensor,
    defocus_m: float,
    wavelength_m: float,
    pixel_size_m: float,
    qc_per_m: float = 0.0,
    *,
    pad: str = "mirror",
) -> torch.Tensor:
    """Single-image TIE phase [rad] from one image at defocus Δf (either sign) [m]."""
    if defocus_m == 0:
        raise ConfigError("defocus_m: SITIE needs a non-zero defocus")
    i0 = intensity.mean(dim=(-2, -1), keepdim=True)
    didz = (intensity - i0) / defocus_m
    return _phase_from_dIdz(didz, i0, wavelength_m, pixel_size_m, qc_per_m, pad)


def _phase_from_dIdz(
    didz: torch.Tensor,
    i0: torch.Tensor,
    wavelength_m: float,
    pixel_size_m: float,
    qc_per_m: float,
    pad: str,
) -> torch.Tensor:
    """The TIE with uniform in-focus intensity I0: φ = −(2π/(λ I0)) ∇⁻² ∂I/∂z [rad]."""
    return (
        -(2 * math.pi / wavelength_m)
        * inverse_laplacian(didz, pixel_size_m, qc_per_m, pad=pad)
        / i0
    )


def phase_gradient(
    phase: torch.Tensor, pixel_size_m: float, *, method: str = "central"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(∂φ/∂x, ∂φ/∂y) [rad/m] of (..., ny, nx); x along columns, y along rows.

    ``method``: "central" (second-order differences, one-sided at the edges) or "spectral"
    (periodic Fourier derivative; Nyquist terms dropped).
    """
    if method == "central":
        gy, gx = torch.gradient(phase, spacing=float(pixel_size_m), dim=(-2, -1))
        return gx, gy
    if method == "spectral":
        ny, nx = phase.shape[-2:]
        kx = (
            2
            * math.pi
            * torch.fft.rfftfreq(nx, d=pixel_size_m, dtype=torch.float64, device=phase.device)
        )
        ky = (
            2
            * math.pi
            * torch.fft.fftfreq(ny, d=pixel_size_m, dtype=torch.float64, device=phase.device)
        )
        if nx % 2 == 0:
            kx[-1] = 0
        if ny % 2 == 0:
            ky[ny // 2] = 0
        spec = torch.fft.rfft2(phase)
        cdt = spec.dtype
        gx = torch.fft.irfft2(spec * (1j * kx[None, :]).to(cdt), s=(ny, nx))
        gy = torch.fft.irfft2(spec * (1j * ky[:, None]).to(cdt), s=(ny, nx))
        return gx, gy
    raise ConfigError(f"method: expected 'central' or 'spectral', got {method!r}")


def induction_from_phase(
    phase: torch.Tensor, pixel_size_m: float, *, method: str = "central"
) -> torch.Tensor:
    """Projected in-plane induction (∫B_x dz, ∫B_y dz) [T m], shape (..., 2, ny, nx).

    ∫B_x dz = (ħ/e) ∂φ/∂y, ∫B_y dz = −(ħ/e) ∂φ/∂x. Divide by the thickness for B [T].
    """
    gx, gy = phase_gradient(phase, pixel_size_m, method=method)
    c = HBAR / E_CHARGE
    return torch.stack([c * gy, -c * gx], dim=-3)


def tie_from_series(
    series: torch.Tensor,
    defocus_m: float,
    wavelength_m: float,
    pixel_size_m: float,
    qc_per_m: float = 0.0,
    *,
    pad: str = "mirror",
    gradient: str = "central",
) -> TieResult:
    """TIE from a three-image focal series (B, 3, ny, nx) at (−Δf, 0, +Δf)."""
    if series.ndim < 3 or series.shape[-3] != 3:
        raise InputError(
            f"series: expected (..., 3, ny, nx) at (-Δf, 0, +Δf), got {tuple(series.shape)}"
        )
    phi = tie_phase(
        series[..., 0, :, :], series[..., 1, :, :], series[..., 2, :, :],
        defocus_m, wavelength_m, pixel_size_m, qc_per_m, pad=pad,
    )  # fmt: skip
    return TieResult(
        phi, induction_from_phase(phi, pixel_size_m, method=gradient), float(pixel_size_m)
    )


def separate_flip_phases(
    phase: torch.Tensor, phase_flipped: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(magnetic, electrostatic) = ((φ − φ_flip)/2, (φ + φ_flip)/2) from a flipped-sample pair."""
    return 0.5 * (phase - phase_flipped), 0.5 * (phase + phase_flipped)
