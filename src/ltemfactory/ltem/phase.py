"""Electron phase shift of a magnetic film: magnetic (Aharonov–Bohm) and electrostatic parts.

Conventions (physics.md §2, binding): f̃(k) = Σ f(r) exp(−i k·r); k in rad/m;
∫B_x dz = (ħ/e) ∂φ/∂y, ∫B_y dz = −(ħ/e) ∂φ/∂x.

Magnetic phase, untilted (Mansuripur, J. Appl. Phys. 69, 2455 (1991); Beleggia & Zhu,
Phil. Mag. 83, 1045 (2003)), m uniform through the thickness t:

    φ̃_m(k) = i (e μ0 Ms t / ħ) (k_x m̃_y − k_y m̃_x) / k²,     φ̃_m(0) = 0.

Tilted sample, linear superposition (McCray et al., Phys. Rev. Applied 15, 044025 (2021)):
every voxel n contributes at its projected position (i_n, j_n) with its projected moment
(mx'_n, my'_n) (see :mod:`ltemfactory.ltem.geometry`),

    φ̃_m(K) = i C Σ_n Ms_n F(K) exp(−i K·(i_n, j_n)) (K_x my'_n − K_y mx'_n) / K²,

with C = e μ0 dz / (ħ cosθ cosγ) = e μ0 V_voxel / (ħ × projected pixel area) and the voxel form
factor F(K) = sinc(k'_z dz/2), k'_z = cosθ sinγ K_x − sinθ K_y (projection-slice theorem for the
voxel's thickness; optionally also the in-plane box factor). The sum runs over the reciprocal
lattice of the projected periodic film, on which each z-slice is the mid-plane slice shifted by
o(z): the fast path is one real FFT per slice, a Fourier shift exp(−i K·o(z)) and the kernel
above. It equals the brute-force sum :func:`magnetic_phase_direct` to rounding and, at zero tilt
(F = 1), the Mansuripur formula :func:`mansuripur_phase`. The Nyquist row/column of even grids
is set to zero in every phase spectrum (the symmetric band), so that fractional shifts and the
lab-frame resampling are unambiguous and the phase stays real.

Electrostatic phase and absorption: φ_e = σ V0 t_proj, A = exp(−t_proj / (2ξ)); t_proj is the
projected path length through the sample voxels (t / (cosθ cosγ) for a flat film), computed with
the same projection as the magnetic phase.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from ltemfactory.constants import E_CHARGE, HBAR, MU0
from ltemfactory.errors import ConfigError, InputError
from ltemfactory.ltem.geometry import ProjectionGeometry, Tilt
from ltemfactory.ltem.microscope import interaction_constant

__all__ = [
    "MAGNETIC_PHASE_CONSTANT",
    "Electrostatics",
    "Phase",
    "ProjectedPhases",
    "magnetic_phase",
    "magnetic_phase_direct",
    "magnetic_phase_spectrum",
    "mansuripur_phase",
    "prepare_magnetisation",
    "projected_magnetisation",
    "projected_phases",
    "projected_thickness",
    "support_phase",
]

log = logging.getLogger(__name__)

MAGNETIC_PHASE_CONSTANT = E_CHARGE * MU0 / HBAR
"""e μ0 / ħ [rad / (A)]: φ̃ = i (e μ0/ħ) Ms t (k × m̃)_z / k²; (2π/Φ0) μ0 = e μ0/ħ."""


@dataclass(frozen=True)
class Phase:
    """A phase map on the lab image grid.

    Attributes:
        phase: (B, ny, nx) [rad].
        pixel_size_m: pixel size [m] (= cell size dx = dy).
    """

    phase: torch.Tensor
    pixel_size_m: float


# ---------------------------------------------------------------------------- inputs
def _working_dtype(t: torch.Tensor) -> torch.dtype:
    return t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32


def prepare_magnetisation(
    m: torch.Tensor, Ms: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate and broadcast inputs: m → (B, 3, nz, ny, nx), Ms → (B, nz, ny, nx) [A/m].

    ``m`` is (B, 3, nz, ny, nx) or (3, nz, ny, nx) of unit vectors (mx, my, mz); ``Ms`` is
    broadcastable to (B, nz, ny, nx) and zero outside the sample. The working dtype is m's
    (float32 or float64; other dtypes become float32); Ms is cast to it.
    """
    if not isinstance(m, torch.Tensor):
        m = torch.as_tensor(np.asarray(m))
    if m.ndim == 4:
        m = m.unsqueeze(0)
    if m.ndim != 5 or m.shape[1] != 3:
        raise InputError(
            f"m: expected shape (B, 3, nz, ny, nx) or (3, nz, ny, nx), got {tuple(m.shape)}"
        )
    dtype = _working_dtype(m)
    m = m.to(dtype)
    b, _, nz, ny, nx = m.shape
    ms = torch.as_tensor(Ms, dtype=dtype, device=m.device)
    try:
        ms = torch.broadcast_to(ms, (b, nz, ny, nx))
    except RuntimeError:
        raise InputError(
            f"Ms: expected a tensor broadcastable to (B, nz, ny, nx) = {(b, nz, ny, nx)}, "
            f"got {tuple(ms.shape)}"
        ) from None
    # one reduction each: a NaN/inf anywhere makes the sum non-finite
    if not bool(torch.isfinite(m.sum())) or not bool(torch.isfinite(ms.sum())):
        raise InputError("m / Ms: contain non-finite values")
    return m, ms


def _check_cell(cell_size_m) -> tuple[float, float, float]:
    try:
        cell = tuple(float(c) for c in cell_size_m)
    except TypeError:
        raise ConfigError(f"cell_size_m: expected (dx, dy, dz) [m], got {cell_size_m!r}") from None
    if len(cell) != 3 or any(not math.isfinite(c) or c <= 0 for c in cell):
        raise ConfigError(
            f"cell_size_m: expected three positive sizes (dx, dy, dz) [m], got {cell_size_m!r}"
        )
    if not math.isclose(cell[0], cell[1], rel_tol=1e-9):
        raise ConfigError(
            f"cell_size_m: square pixels required (dx == dy), got dx={cell[0]}, dy={cell[1]}"
        )
    return cell


def _geometry(m: torch.Tensor, cell_size_m, tilt: Tilt | None) -> ProjectionGeometry:
    cell = _check_cell(cell_size_m)
    return ProjectionGeometry.cached(
        tuple(m.shape[-3:]), cell, tilt if tilt is not None else Tilt()
    )


def _complex_of(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


# ---------------------------------------------------------------------------- magnetic phase
def projected_magnetisation(
    m: torch.Tensor, tilt: Tilt | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mx', my') of physics.md §2 from m (..., 3, nz, ny, nx): each (..., nz, ny, nx).

    mx' = mx cosγ + my sinγ sinθ + mz sinγ cosθ,   my' = my cosθ − mz sinθ.
    """
    tilt = tilt if tilt is not None else Tilt()
    mx, my, mz = m.unbind(-4)
    if tilt.is_zero:
        return mx, my
    ct, st = math.cos(tilt.theta_rad), math.sin(tilt.theta_rad)
    cg, sg = math.cos(tilt.gamma_rad), math.sin(tilt.gamma_rad)
    return _lincomb((mx, my, mz), (cg, sg * st, sg * ct)), _lincomb((my, mz), (ct, -st))


def _lincomb(terms: tuple[torch.Tensor, ...], coefs: tuple[float, ...]) -> torch.Tensor:
    """Σ c_i t_i, skipping zero coefficients (a lone unit term is returned as is, not copied)."""
    pairs = [(t, c) for t, c in zip(terms, coefs, strict=True) if c != 0.0]
    if not pairs:
        return torch.zeros_like(terms[0])
    if len(pairs) == 1:
        t, c = pairs[0]
        return t if c == 1.0 else t * c
    t0, c0 = pairs[0]
    out = t0 * c0
    for t, c in pairs[1:]:
        out.add_(t, alpha=c)
    return out


def _magnetic_kernels_np(g: ProjectionGeometry, in_plane_box: bool) -> np.ndarray:
    """Per-slice kernels (2, nz, ny, nxh) complex128: φ̃ = Σ_l ker[0,l] X̃_l + ker[1,l] Ỹ_l."""
    kx, ky = g.wavevectors_np(half=True)
    k2 = kx * kx + ky * ky
    keep = g.nyquist_mask_np(half=True) & (k2 > 0)
    inv = np.where(keep, 1.0 / np.where(keep, k2, 1.0), 0.0)
    c = MAGNETIC_PHASE_CONSTANT * g.dz / g.area_factor
    ff = g.thickness_form_factor_np(half=True, in_plane_box=in_plane_box)
    base = 1j * c * ff * inv
    shift = g.slice_shift_np(half=True)  # (nz, ny, nxh)
    return np.stack([shift * (-base * ky), shift * (base * kx)])


def magnetic_phase_spectrum(
    m: torch.Tensor,
    Ms: torch.Tensor | float,
    cell_size_m: tuple[float, float, float],
    tilt: Tilt | None = None,
    *,
    in_plane_box: bool = False,
) -> torch.Tensor:
    """φ̃_m on the projected grid, rfft layout: complex (B, ny, nx//2 + 1) (see module docstring).

    Fast path: per-slice real FFTs, Fourier shift of each slice's projected offset, voxel form
    factor. ``irfft2`` gives the phase on the projected grid; :meth:`ProjectionGeometry.to_lab`
    puts it on the lab grid.
    """
    m, ms = prepare_magnetisation(m, Ms)
    g = _geometry(m, cell_size_m, tilt)
    return _magnetic_spectrum(m, ms, g, in_plane_box)


def _magnetic_spectrum(
    m: torch.Tensor, ms: torch.Tensor, g: ProjectionGeometry, in_plane_box: bool
):
    mxp, myp = projected_magnetisation(m, g.tilt)
    ker = g.tensor(
        f"mag_kernel_box{in_plane_box}",
        m.device,
        _complex_of(m.dtype),
        lambda: _magnetic_kernels_np(g, in_plane_box),
    )  # (2, nz, ny, nxh)
    sx = torch.fft.rfft2(mxp * ms)  # (B, nz, ny, nxh)
    sy = torch.fft.rfft2(myp * ms)
    spec = sx.mul_(ker[0]).add_(sy.mul_(ker[1]))
    return spec.sum(dim=1) if g.nz > 1 else spec[:, 0]


def magnetic_phase(
    m: torch.Tensor,
    Ms: torch.Tensor | float,
    cell_size_m: tuple[float, float, float],
    tilt: Tilt | None = None,
    *,
    in_plane_box: bool = False,
) -> Phase:
    """Magnetic phase φ_m [rad] on the lab grid, (B, ny, nx); see the module docstring.

    Args:
        m: unit magnetisation (B, 3, nz, ny, nx) or (3, nz, ny, nx).
        Ms: saturation magnetisation [A/m], broadcastable to (B, nz, ny, nx); 0 outside the sample.
        cell_size_m: (dx, dy, dz) [m], dx == dy.
        tilt: sample tilt (default none).
        in_plane_box: also apply the in-plane box form factor (default: in-plane band-limited).
    """
    m, ms = prepare_magnetisation(m, Ms)
    g = _geometry(m, cell_size_m, tilt)
    spec = _magnetic_spectrum(m, ms, g, in_plane_box)
    phi = torch.fft.irfft2(spec, s=(g.ny, g.nx))
    return Phase(g.to_lab(phi), g.dx)


def mansuripur_phase(
    m: torch.Tensor, Ms: torch.Tensor | float, cell_size_m: tuple[float, float, float]
) -> Phase:
    """Untilted reference: φ̃ = i (e μ0/ħ) (k_x M̃_y − k_y M̃_x) / k², M = Σ_z Ms m dz [A].

    Plain lab DFT grid, Nyquist row/column zeroed (same band as the fast path).
    """
    m, ms = prepare_magnetisation(m, Ms)
    dx, dy, dz = _check_cell(cell_size_m)
    _, _, _, ny, nx = m.shape
    mt = (ms.unsqueeze(1) * m).sum(dim=2) * dz  # (B, 3, ny, nx), Ms t m [A]
    kx = 2 * math.pi * torch.fft.fftfreq(nx, d=dx, dtype=torch.float64, device=m.device)[None, :]
    ky = 2 * math.pi * torch.fft.fftfreq(ny, d=dy, dtype=torch.float64, device=m.device)[:, None]
    k2 = kx**2 + ky**2
    keep = k2 > 0
    if nx % 2 == 0:
        keep = keep & (torch.arange(nx, device=m.device) != nx // 2)[None, :]
    if ny % 2 == 0:
        keep = keep & (torch.arange(ny, device=m.device) != ny // 2)[:, None]
    inv = torch.where(keep, 1.0 / torch.where(keep, k2, torch.ones_like(k2)), torch.zeros_like(k2))
    fx = torch.fft.fft2(mt[:, 0].to(torch.float64))
    fy = torch.fft.fft2(mt[:, 1].to(torch.float64))
    spec = 1j * MAGNETIC_PHASE_CONSTANT * (kx * fy - ky * fx) * inv
    return Phase(torch.fft.ifft2(spec).real.to(m.dtype), dx)


def magnetic_phase_direct(
    m: torch.Tensor,
    Ms: torch.Tensor | float,
    cell_size_m: tuple[float, float, float],
    tilt: Tilt | None = None,
    *,
    in_plane_box: bool = False,
    frame: str = "lab",
) -> Phase:
    """Brute-force linear superposition (validation reference, small grids only), float64.

    Sums every voxel at its projected position (i_n, j_n) with its projected moment
    (mx'_n, my'_n), written out from physics.md §2 without the slice factorisation, at every
    wave vector K of the projected reciprocal lattice (Nyquist excluded), with the same form
    factor as the fast path; then evaluates the Fourier series directly at the lab pixels
    (``frame="lab"``) or at the projected-grid points (``frame="projected"``).
    O(N_vox × N_K + N_K × N_pix) memory and time.
    """
    m, ms = prepare_magnetisation(m, Ms)
    g = _geometry(m, cell_size_m, tilt)
    mm = m.detach().to("cpu", torch.float64).numpy()
    msn = ms.detach().to("cpu", torch.float64).numpy()
    nz, ny, nx = g.shape
    th, ga = g.tilt.theta_rad, g.tilt.gamma_rad
    ct, st, cg, sg = math.cos(th), math.sin(th), math.cos(ga), math.sin(ga)
    z, y, x = np.meshgrid(
        (np.arange(nz) - (nz - 1) / 2) * g.dz,
        (np.arange(ny) - (ny - 1) / 2) * g.dy,
        (np.arange(nx) - (nx - 1) / 2) * g.dx,
        indexing="ij",
    )
    i_n = (z * sg * ct + y * sg * st + x * cg).ravel()
    j_n = (y * ct - z * st).ravel()
    kx, ky = g.wavevectors_np(half=False)
    keep = g.nyquist_mask_np(half=False) & ((kx**2 + ky**2) > 0)
    kxs, kys = kx[keep], ky[keep]
    ff = g.thickness_form_factor_np(half=False, in_plane_box=in_plane_box)[keep]
    c = MAGNETIC_PHASE_CONSTANT * g.dz / (ct * cg)
    phase_factor = np.exp(-1j * (np.outer(kxs, i_n) + np.outer(kys, j_n)))  # (NK, Nvox)
    out = []
    if frame == "lab":
        yy, xx = np.meshgrid(
            (np.arange(ny) - (ny - 1) / 2) * g.dy,
            (np.arange(nx) - (nx - 1) / 2) * g.dx,
            indexing="ij",
        )
    elif frame == "projected":
        yy0, xx0 = np.meshgrid(
            (np.arange(ny) - (ny - 1) / 2) * g.dy,
            (np.arange(nx) - (nx - 1) / 2) * g.dx,
            indexing="ij",
        )
        xx = xx0 * cg + yy0 * sg * st
        yy = yy0 * ct
    else:
        raise ConfigError(f"frame: expected 'lab' or 'projected', got {frame!r}")
    evaluate = np.exp(1j * (np.outer(xx.ravel(), kxs) + np.outer(yy.ravel(), kys)))  # (Npix, NK)
    for b in range(mm.shape[0]):
        mx, my, mz = mm[b, 0], mm[b, 1], mm[b, 2]
        mxp = (mx * cg + my * sg * st + mz * sg * ct).ravel()
        myp = (my * ct - mz * st).ravel()
        w = msn[b].ravel()
        sx = phase_factor @ (w * mxp)
        sy = phase_factor @ (w * myp)
        spec = 1j * c * ff * (kxs * sy - kys * sx) / (kxs**2 + kys**2)
        out.append((evaluate @ spec).real.reshape(ny, nx) / (nx * ny))
    return Phase(torch.as_tensor(np.stack(out), dtype=m.dtype, device=m.device), g.dx)


# ---------------------------------------------------------------------------- electrostatics
@dataclass(frozen=True, eq=False)
class Electrostatics:
    """Electrostatic phase / absorption of the sample and its support (physics.md §2).

    Attributes:
        inner_potential_V: mean inner potential V0 [V] (≈ 15–25 V); 0 = no electrostatic phase.
        extinction_length_m: absorption length ξ [m]; amplitude exp(−t_proj/(2ξ)); None = none.
        thickness_m: film thickness for the electrostatic part [m]; None = nz·dz. Scales the
            projected path length through the sample voxels (mask Ms > mask_threshold_A_per_m).
        thickness_map: optional relative thickness (ny, nx) or (B, ny, nx), sample frame,
            periodic, multiplies the thickness (e.g. 1 ± a few %).
        thickness_gradient_per_m: relative wedge (g_x, g_y) [1/m] in the lab frame:
            t → t (1 + g_x x + g_y y) about the image centre. Not periodic, so it is applied as a
            slowly varying absorption factor exp(−Δt_proj/ξ) on the image intensity; its phase
            ramp (a uniform beam deflection, image shift λΔf|∇φ|/2π ≪ 1 px) is left out.
        support_phase_rms_rad: rms [rad] of an amorphous support/contamination phase texture
            (≈ 1e-3–1e-2); drawn per image from the generator. 0 = none.
        support_correlation_m: Gaussian smoothing length (standard deviation) of that texture [m].
        mask_threshold_A_per_m: voxels with Ms above this are sample material.
    """

    inner_potential_V: float = 0.0
    extinction_length_m: float | None = None
    thickness_m: float | None = None
    thickness_map: torch.Tensor | None = None
    thickness_gradient_per_m: tuple[float, float] = (0.0, 0.0)
    support_phase_rms_rad: float = 0.0
    support_correlation_m: float = 1e-9
    mask_threshold_A_per_m: float = 0.0

    def __post_init__(self) -> None:
        def num(name, v, pos=False, nonneg=False):
            try:
                f = float(v)
            except (TypeError, ValueError):
                raise ConfigError(f"{name}: expected a number, got {v!r}") from None
            if not math.isfinite(f) or (pos and f <= 0) or (nonneg and f < 0):
                kind = "positive" if pos else "non-negative" if nonneg else "finite"
                raise ConfigError(f"{name}: expected a {kind} number, got {v!r}")

        num("inner_potential_V", self.inner_potential_V)
        if self.extinction_length_m is not None:
            num("extinction_length_m", self.extinction_length_m, pos=True)
        if self.thickness_m is not None:
            num("thickness_m", self.thickness_m, pos=True)
        if len(tuple(self.thickness_gradient_per_m)) != 2:
            raise ConfigError("thickness_gradient_per_m: expected (g_x, g_y) [1/m]")
        for v in self.thickness_gradient_per_m:
            num("thickness_gradient_per_m", v)
        num("support_phase_rms_rad", self.support_phase_rms_rad, nonneg=True)
        num("support_correlation_m", self.support_correlation_m, pos=True)
        num("mask_threshold_A_per_m", self.mask_threshold_A_per_m, nonneg=True)

    @property
    def has_wedge(self) -> bool:
        return any(float(v) != 0.0 for v in self.thickness_gradient_per_m)


def _scalar_kernel_np(g: ProjectionGeometry) -> np.ndarray:
    """Per-slice projection kernel (nz, ny, nxh): t̃_proj = Σ_l ker_l Õ_l (Nyquist zeroed)."""
    ff = g.thickness_form_factor_np(half=True) * g.nyquist_mask_np(half=True)
    return g.slice_shift_np(half=True) * (ff * g.dz / g.area_factor)


def projected_thickness(occupancy: torch.Tensor, geometry: ProjectionGeometry) -> torch.Tensor:
    """Projected path length [m] (B, ny, nx) on the projected grid of occupancy (B, nz, ny, nx).

    ``occupancy`` is 1 in sample voxels (may be fractional / scaled); a full flat film gives
    nz dz / (cosθ cosγ).
    """
    g = geometry
    flat = occupancy.flatten(1)
    lo, hi = torch.aminmax(flat, dim=1)
    if bool((lo == hi).all()):
        # laterally and vertically uniform: only the k = 0 term survives
        val = lo * (g.nz * g.dz / g.area_factor)
        return val[:, None, None].expand(occupancy.shape[0], g.ny, g.nx)
    ker = g.tensor(
        "scalar_kernel",
        occupancy.device,
        _complex_of(occupancy.dtype),
        lambda: _scalar_kernel_np(g),
    )
    spec = (torch.fft.rfft2(occupancy) * ker).sum(dim=1)
    return torch.fft.irfft2(spec, s=(g.ny, g.nx))


def support_phase(
    batch: int,
    geometry: ProjectionGeometry,
    rms_rad: float,
    correlation_m: float,
    generator: torch.Generator | None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Amorphous support phase texture (B, ny, nx) [rad] on the projected grid.

    White Gaussian noise smoothed by a Gaussian of standard deviation ``correlation_m`` (filter
    exp(−K² ℓ²/2) in physical units, isotropic in the lab frame), zero mean, rescaled to exactly
    ``rms_rad`` per image.
    """
    g = geometry
    noise = torch.randn((batch, g.ny, g.nx), generator=generator, device=device, dtype=dtype)
    filt = g.tensor(  # complex, so that the product does not re-cast it every call
        f"support_filter_{correlation_m}",
        device,
        _complex_of(dtype),
        lambda: np.exp(-0.5 * correlation_m**2 * sum(k**2 for k in g.wavevectors_np(half=True))),
    )
    spec = torch.fft.rfft2(noise) * filt
    spec[:, 0, 0] = 0
    tex = torch.fft.irfft2(spec, s=(g.ny, g.nx))
    std = tex.flatten(1).std(dim=1).clamp_min(torch.finfo(dtype).tiny)
    return tex * (rms_rad / std)[:, None, None]


@dataclass(frozen=True)
class ProjectedPhases:
    """Exit-wave ingredients on the projected grid (see :mod:`ltemfactory.ltem.geometry`).

    Attributes:
        magnetic: φ_m (B, ny, nx) [rad].
        total: φ_m + φ_e + support (B, ny, nx) [rad].
        amplitude: exp(−t_proj/(2ξ)) (B, ny, nx) or None (no absorption).
        geometry: the projection.
    """

    magnetic: torch.Tensor
    total: torch.Tensor
    amplitude: torch.Tensor | None
    geometry: ProjectionGeometry

    def exit_wave(self, flip: bool = False) -> torch.Tensor:
        """ψ = A exp(i φ), complex (B, ny, nx); ``flip`` reverses the sign of φ_m only."""
        phi = self.total - 2 * self.magnetic if flip else self.total
        if self.amplitude is not None:
            amp = self.amplitude
        else:
            amp = torch.ones((1, 1, 1), dtype=phi.dtype, device=phi.device).expand_as(phi)
        return torch.polar(amp, phi)


def _sample_thickness(ms: torch.Tensor, es: Electrostatics, g: ProjectionGeometry) -> torch.Tensor:
    """Projected path length [m] (B, ny, nx) through the sample voxels (Ms > threshold)."""
    b = ms.shape[0]
    scale = 1.0 if es.thickness_m is None else es.thickness_m / (g.nz * g.dz)
    if es.thickness_map is None and bool(ms.min() > es.mask_threshold_A_per_m):
        # flat, laterally full film: t_proj = t / (cosθ cosγ) everywhere (an expanded view)
        val = torch.full((b, 1, 1), scale * g.nz * g.dz / g.area_factor, dtype=ms.dtype)
        return val.to(ms.device).expand(b, g.ny, g.nx)
    occ = (ms > es.mask_threshold_A_per_m).to(ms.dtype) * scale
    if es.thickness_map is not None:
        tm = torch.as_tensor(es.thickness_map, dtype=ms.dtype, device=ms.device)
        bad_b = tm.ndim == 3 and tm.shape[0] not in (1, b)
        if tm.shape[-2:] != (g.ny, g.nx) or tm.ndim not in (2, 3) or bad_b:
            raise InputError(
                f"thickness_map: expected (ny, nx) or (B, ny, nx) with (B, ny, nx) = "
                f"{(b, g.ny, g.nx)}, got {tuple(tm.shape)}"
            )
        occ = occ * (tm if tm.ndim == 2 else tm[:, None])
    return projected_thickness(occ, g)


def projected_phases(
    m: torch.Tensor,
    Ms: torch.Tensor | float,
    cell_size_m: tuple[float, float, float],
    tilt: Tilt | None,
    voltage_V: float,
    electrostatics: Electrostatics | None = None,
    generator: torch.Generator | None = None,
    *,
    in_plane_box: bool = False,
) -> ProjectedPhases:
    """Magnetic phase, total phase and amplitude on the projected grid of the tilted film."""
    m, ms = prepare_magnetisation(m, Ms)
    g = _geometry(m, cell_size_m, tilt)
    es = electrostatics if electrostatics is not None else Electrostatics()
    mag_spec = _magnetic_spectrum(m, ms, g, in_plane_box)
    b = m.shape[0]
    t_proj = None
    if es.inner_potential_V != 0.0 or es.extinction_length_m is not None:
        t_proj = _sample_thickness(ms, es, g)
    if es.inner_potential_V != 0.0:
        sigma = interaction_constant(voltage_V)
        phi_es = (sigma * es.inner_potential_V) * t_proj
    else:
        phi_es = None
    phis = torch.fft.irfft2(mag_spec, s=(g.ny, g.nx))
    total = phis if phi_es is None else phis + phi_es
    if es.support_phase_rms_rad > 0:
        total = total + support_phase(
            b,
            g,
            es.support_phase_rms_rad,
            es.support_correlation_m,
            generator,
            device=m.device,
            dtype=m.dtype,
        )
    amp = None
    if es.extinction_length_m is not None:
        if t_proj.stride(-1) == 0:  # uniform: keep it an expanded (B, ny, nx) view
            amp = torch.exp(-t_proj[:, :1, :1] / (2 * es.extinction_length_m)).expand_as(t_proj)
        else:
            amp = torch.exp(-t_proj / (2 * es.extinction_length_m))
    return ProjectedPhases(magnetic=phis, total=total, amplitude=amp, geometry=g)
