"""High-level LTEM simulation: magnetisation → phases → exit wave → images → detector.

:func:`simulate_images` is the single entry point for the dataset stages; it chains
:func:`ltemfactory.ltem.phase.projected_phases` (magnetic + electrostatic phase on the projected
grid of the tilted film), :mod:`ltemfactory.ltem.image` (transfer function, lab-frame image) and
:func:`ltemfactory.ltem.detector.apply_detector`. Everything is batched (batch first) and runs on
the device and in the precision of ``m`` (float32 → complex64, float64 → complex128).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ltemfactory.ltem.detector import Detector, apply_detector, as_generator
from ltemfactory.ltem.geometry import ProjectionGeometry, Tilt
from ltemfactory.ltem.image import _as_defoci, focal_series, image_intensity
from ltemfactory.ltem.microscope import Microscope
from ltemfactory.ltem.phase import Electrostatics, ProjectedPhases, projected_phases

__all__ = ["LtemImages", "simulate_focal_series", "simulate_images"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class LtemImages:
    """Simulated LTEM images on the lab grid (pixel = cell size).

    Attributes:
        intensity: detected images (B, ny, nx) — or (B, n_defocus, ny, nx) for a focal series;
            equal to ``clean_intensity`` when no detector is given.
        clean_intensity: noise-free intensity (unit incident intensity), same shape.
        pixel_size_m: pixel size [m].
        defocus_m: the defocus of every image, (B,) — or (n_defocus,) for a focal series [m].
        tilt: the sample tilt.
        phases: magnetic/total phase and amplitude on the projected grid.
        flipped: whether the flipped sample was imaged.

    Properties (computed on first access, then cached):
        magnetic_phase: φ_m (B, ny, nx) [rad] on the lab grid (sign reversed when flipped).
        total_phase: φ_m + φ_e + support (B, ny, nx) [rad], the exit-wave phase on the lab
            grid (the thickness wedge is not included, see :class:`Electrostatics`).
    """

    intensity: torch.Tensor
    clean_intensity: torch.Tensor
    pixel_size_m: float
    defocus_m: torch.Tensor
    tilt: Tilt
    phases: ProjectedPhases = field(repr=False)
    flipped: bool = False
    _lab: dict = field(default_factory=dict, repr=False)

    def _lab_phases(self) -> tuple[torch.Tensor, torch.Tensor]:
        if "mag" not in self._lab:
            ph = self.phases
            both = ph.geometry.to_lab(torch.stack([ph.magnetic, ph.total], dim=1))
            mag, tot = both[:, 0], both[:, 1]
            if self.flipped:
                tot = tot - 2 * mag
                mag = -mag
            self._lab["mag"], self._lab["tot"] = mag, tot
        return self._lab["mag"], self._lab["tot"]

    @property
    def geometry(self) -> ProjectionGeometry:
        """The projection (use ``geometry.sample_to_image`` to carry labels into the image)."""
        return self.phases.geometry

    @property
    def magnetic_phase(self) -> torch.Tensor:
        """φ_m (B, ny, nx) [rad], lab grid."""
        return self._lab_phases()[0]

    @property
    def total_phase(self) -> torch.Tensor:
        """Exit-wave phase φ_m + φ_e + support (B, ny, nx) [rad], lab grid."""
        return self._lab_phases()[1]


def _wedge_factor(es: Electrostatics, g: ProjectionGeometry, device, dtype) -> torch.Tensor | None:
    """Intensity factor exp(−Δt_proj/ξ) of the linear thickness wedge on the lab grid."""
    if not es.has_wedge or es.extinction_length_m is None:
        return None
    gx, gy = (float(v) for v in es.thickness_gradient_per_m)
    t = (es.thickness_m if es.thickness_m is not None else g.nz * g.dz) / g.area_factor
    x = (np.arange(g.nx) - (g.nx - 1) / 2) * g.dx
    y = (np.arange(g.ny) - (g.ny - 1) / 2) * g.dy
    dt = t * (gx * x[None, :] + gy * y[:, None])
    return torch.as_tensor(np.exp(-dt / es.extinction_length_m), dtype=dtype, device=device)


def _phases(m, Ms, cell_size_m, microscope, tilt, electrostatic, generator, in_plane_box):
    tilt = tilt if tilt is not None else Tilt()
    es = electrostatic if electrostatic is not None else Electrostatics()
    dev = m.device if isinstance(m, torch.Tensor) else torch.device("cpu")
    gen = as_generator(generator, dev)
    ph = projected_phases(
        m, Ms, cell_size_m, tilt, microscope.voltage_V, es, gen, in_plane_box=in_plane_box
    )
    return tilt, es, gen, ph


def simulate_images(
    m: torch.Tensor,
    Ms: torch.Tensor | float,
    cell_size_m: tuple[float, float, float],
    microscope: Microscope,
    tilt: Tilt | None = None,
    *,
    electrostatic: Electrostatics | None = None,
    detector: Detector | None = None,
    generator: torch.Generator | np.random.Generator | int | None = None,
    defocus_m: float | Sequence[float] | torch.Tensor | None = None,
    flip: bool = False,
    in_plane_box: bool = False,
) -> LtemImages:
    """Simulate one LTEM image per magnetisation in the batch.

    Args:
        m: unit magnetisation (B, 3, nz, ny, nx) or (3, nz, ny, nx); dtype float32/float64.
        Ms: saturation magnetisation [A/m], broadcastable to (B, nz, ny, nx), 0 outside the sample.
        cell_size_m: (dx, dy, dz) [m] with dx == dy; total thickness nz·dz.
        microscope: voltage, defocus, aberrations, coherence, aperture.
        tilt: sample tilt (θ about x, then γ about y); default none.
        electrostatic: inner potential, absorption, thickness map/wedge, support texture.
        detector: camera model; None returns the clean intensity.
        generator: torch/numpy generator or int seed for all random draws (support texture,
            detector nuisances). Same seed → same images.
        defocus_m: override of the microscope defocus, scalar or one value per image [m].
        flip: image the flipped sample (magnetic phase reversed, electrostatic kept).
        in_plane_box: include the in-plane box voxel form factor (see :mod:`.phase`).

    Returns:
        :class:`LtemImages` with intensity (B, ny, nx).
    """
    tilt, es, gen, ph = _phases(
        m, Ms, cell_size_m, microscope, tilt, electrostatic, generator, in_plane_box
    )
    g = ph.geometry
    b = ph.total.shape[0]
    df = _as_defoci(microscope.defocus_m if defocus_m is None else defocus_m)
    clean = image_intensity(
        ph.exit_wave(flip=flip), microscope, g, defocus_m=df if len(df) > 1 else df[0]
    )
    wedge = _wedge_factor(es, g, clean.device, clean.dtype)
    if wedge is not None:
        clean = clean * wedge
    out = apply_detector(clean, detector, gen) if detector is not None else clean
    dfs = torch.as_tensor(df if len(df) > 1 else df * b, dtype=torch.float64)
    log.debug("simulated %d images %s at tilt %s", b, tuple(clean.shape[-2:]), tilt)
    return LtemImages(out, clean, g.dx, dfs, tilt, ph, flip)


def simulate_focal_series(
    m: torch.Tensor,
    Ms: torch.Tensor | float,
    cell_size_m: tuple[float, float, float],
    microscope: Microscope,
    defocus_m: Sequence[float] | torch.Tensor,
    tilt: Tilt | None = None,
    *,
    electrostatic: Electrostatics | None = None,
    detector: Detector | None = None,
    generator: torch.Generator | np.random.Generator | int | None = None,
    flip: bool = False,
    in_plane_box: bool = False,
) -> LtemImages:
    """Through-focal series of every sample: intensity (B, n_defocus, ny, nx).

    Same arguments as :func:`simulate_images`; ``defocus_m`` lists the defoci [m] (e.g.
    (−Δf, 0, +Δf) for :func:`ltemfactory.ltem.tie.tie_from_series`).
    """
    tilt, es, gen, ph = _phases(
        m, Ms, cell_size_m, microscope, tilt, electrostatic, generator, in_plane_box
    )
    g = ph.geometry
    df = _as_defoci(defocus_m)
    clean = focal_series(ph.exit_wave(flip=flip), microscope, df, g)
    wedge = _wedge_factor(es, g, clean.device, clean.dtype)
    if wedge is not None:
        clean = clean * wedge
    out = apply_detector(clean, detector, gen) if detector is not None else clean
    dfs = torch.as_tensor(df, dtype=torch.float64)
    return LtemImages(out, clean, g.dx, dfs, tilt, ph, flip)
