"""Image formation: exit wave → image intensity through the transfer function (physics.md §3).

    I = |F⁻¹[ F[ψ] T(q) ]|²

The exit wave lives on the projected grid of a (possibly tilted) sample, where it is exactly
periodic (see :mod:`ltemfactory.ltem.geometry`); the transfer function is evaluated at the
physical frequencies q = K/2π of that grid, and the image wave is evaluated at the lab pixels
before taking |·|² (exact for the band-limited image wave). At zero tilt both grids coincide.

Through-focal series share one forward FFT of the exit wave. A flipped sample (turned upside
down) reverses the sign of the magnetic phase and keeps the electrostatic one.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch

from ltemfactory.errors import InputError
from ltemfactory.ltem.geometry import ProjectionGeometry, Tilt
from ltemfactory.ltem.microscope import Microscope
from ltemfactory.ltem.phase import ProjectedPhases
from ltemfactory.ltem.transfer import transfer_function

__all__ = [
    "flip_series",
    "focal_series",
    "image_intensity",
    "image_wave",
    "lab_geometry",
]


def lab_geometry(shape: tuple[int, int], pixel_size_m: float) -> ProjectionGeometry:
    """Identity (untilted, single-slice) geometry of a plain (ny, nx) image grid."""
    p = float(pixel_size_m)
    return ProjectionGeometry.cached((1, int(shape[0]), int(shape[1])), (p, p, p), Tilt())


def _geometry_for(
    wave: torch.Tensor, geometry: ProjectionGeometry | None, pixel_size_m: float | None
):
    if geometry is None:
        if pixel_size_m is None:
            raise InputError("image formation: give either a ProjectionGeometry or pixel_size_m")
        geometry = lab_geometry(wave.shape[-2:], pixel_size_m)
    if tuple(wave.shape[-2:]) != (geometry.ny, geometry.nx):
        raise InputError(
            f"wave: expected (..., {geometry.ny}, {geometry.nx}), got {tuple(wave.shape)}"
        )
    return geometry


def _frequencies(geometry: ProjectionGeometry, device) -> tuple[torch.Tensor, torch.Tensor]:
    kx = geometry.tensor(
        "qx_full", device, torch.float64, lambda: geometry.wavevectors_np(False)[0] / (2 * math.pi)
    )
    ky = geometry.tensor(
        "qy_full", device, torch.float64, lambda: geometry.wavevectors_np(False)[1] / (2 * math.pi)
    )
    return kx, ky


_CTF_CACHE_SIZE = 32


def _transfer(geometry: ProjectionGeometry, microscope: Microscope, device, cdtype) -> torch.Tensor:
    """T(q) on the geometry's grid, cached per geometry (LRU of the last few microscopes)."""
    cache = geometry._cache.setdefault("ctf_lru", OrderedDict())
    key = (microscope, str(torch.device(device)), cdtype)
    hit = cache.get(key)
    if hit is None:
        qx, qy = _frequencies(geometry, device)
        t = transfer_function(qx, qy, microscope).to(cdtype)
        hit = (t, bool((t == 1).all()))
        cache[key] = hit
        if len(cache) > _CTF_CACHE_SIZE:
            cache.popitem(last=False)
    else:
        cache.move_to_end(key)
    return hit


def _transfer_stack(
    geometry: ProjectionGeometry, microscope: Microscope, defoci: Sequence[float], device, cdtype
) -> tuple[torch.Tensor, bool]:
    """Stacked T (n, ny, nx) and whether every T is exactly 1 (in focus, no aberrations)."""
    hits = [_transfer(geometry, microscope.with_defocus(d), device, cdtype) for d in defoci]
    ident = all(h[1] for h in hits)
    if len(hits) == 1:
        return hits[0][0].unsqueeze(0), ident
    return torch.stack([h[0] for h in hits]), ident


def _abs2(w: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(w.resolve_conj()).square().sum(dim=-1)


def _as_defoci(defocus_m) -> list[float]:
    if isinstance(defocus_m, torch.Tensor):
        return [float(v) for v in defocus_m.flatten().tolist()]
    if isinstance(defocus_m, int | float):
        return [float(defocus_m)]
    return [float(v) for v in defocus_m]


def image_wave(
    wave: torch.Tensor,
    microscope: Microscope,
    geometry: ProjectionGeometry | None = None,
    *,
    pixel_size_m: float | None = None,
    defocus_m: float | Sequence[float] | torch.Tensor | None = None,
    to_lab: bool = True,
) -> torch.Tensor:
    """Image-plane wave F⁻¹[F[ψ] T] for ψ (B, ny, nx) complex; same shape, lab frame.

    ``defocus_m`` overrides the microscope defocus: a scalar, or one value per image (length B).
    Without ``geometry`` the wave is taken on a plain grid of ``pixel_size_m``. ``to_lab=False``
    returns the image wave on the projected grid of a tilted sample instead of the lab grid.
    """
    g = _geometry_for(wave, geometry, pixel_size_m)
    df = _as_defoci(microscope.defocus_m if defocus_m is None else defocus_m)
    if len(df) > 1 and (wave.ndim < 3 or len(df) != wave.shape[0]):
        raise InputError(
            f"defocus_m: expected a scalar or one value per image ({wave.shape[0]}), got {len(df)}"
        )
    t, identity = _transfer_stack(g, microscope, df, wave.device, wave.dtype)
    if identity:  # T ≡ 1: skip the FFT round trip (and its rounding)
        out = wave
    else:
        out = torch.fft.ifft2(torch.fft.fft2(wave).mul_(t[0] if len(df) == 1 else t))
    return g.to_lab(out) if to_lab else out


def image_intensity(
    wave: torch.Tensor,
    microscope: Microscope,
    geometry: ProjectionGeometry | None = None,
    *,
    pixel_size_m: float | None = None,
    defocus_m: float | Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Image intensity |F⁻¹[F[ψ] T]|² (B, ny, nx) on the lab grid (incident intensity 1)."""
    w = image_wave(wave, microscope, geometry, pixel_size_m=pixel_size_m, defocus_m=defocus_m)
    return _abs2(w)


def focal_series(
    wave: torch.Tensor,
    microscope: Microscope,
    defocus_m: Sequence[float] | torch.Tensor,
    geometry: ProjectionGeometry | None = None,
    *,
    pixel_size_m: float | None = None,
) -> torch.Tensor:
    """Through-focal series: intensity (B, n_defocus, ny, nx), one forward FFT shared."""
    g = _geometry_for(wave, geometry, pixel_size_m)
    df = _as_defoci(defocus_m)
    spec = torch.fft.fft2(wave).unsqueeze(-3)  # (B, 1, ny, nx)
    t, _ = _transfer_stack(g, microscope, df, wave.device, wave.dtype)  # (nf, ny, nx)
    return _abs2(g.to_lab(torch.fft.ifft2(spec * t)))


def flip_series(
    phases: ProjectedPhases,
    microscope: Microscope,
    defocus_m: Sequence[float] | torch.Tensor,
) -> torch.Tensor:
    """Focal series of the sample and of the flipped sample: (B, 2, n_defocus, ny, nx).

    Index 1 of axis 1 is the flipped sample (magnetic phase reversed, electrostatic kept).
    """
    a = focal_series(phases.exit_wave(flip=False), microscope, defocus_m, phases.geometry)
    b = focal_series(phases.exit_wave(flip=True), microscope, defocus_m, phases.geometry)
    return torch.stack([a, b], dim=1)
