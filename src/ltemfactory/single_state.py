"""Single-state LTEM simulation for users: ``ltemfactory simulate``.

Reads one magnetisation (OVF 1/2 or .npy), simulates the LTEM image at the given imaging
conditions, reconstructs the projected induction by TIE from a noise-free (−Δf, 0, +Δf) series,
and writes ImageJ-readable TIFFs (pixel size in µm) and a three-panel PNG in the style of
Fig. 1 of McCray et al. (2022): magnetisation colour wheel | LTEM image | induction.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tifffile
import torch

from ltemfactory.errors import InputError
from ltemfactory.files import atomic_path
from ltemfactory.ltem import (
    Detector,
    Electrostatics,
    simulate_focal_series,
    simulate_images,
    tie_from_series,
)
from ltemfactory.ovf import read_magnetization
from ltemfactory.render import optics_setup

log = logging.getLogger(__name__)

MIN_CELLS = 2
"""Fewest cells per in-plane side of a simulated state (the TIE gradients need two)."""


@dataclass(frozen=True)
class Imaging:
    """Imaging conditions of ``ltemfactory simulate`` (units in the names)."""

    defocus_mm: float = 1.0
    tilt_deg: float = 0.0
    tilt_axis_deg: float = 0.0
    voltage_kV: float = 200.0
    cs_mm: float = 1.0
    theta_c_mrad: float = 0.005
    defocus_spread_nm: float = 100.0
    dose_e_per_px: float | None = None
    inner_potential_V: float = 20.0
    seed: int = 0


def _positive(name: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise InputError(f"{name}: expected a positive finite number, got {value!r}")


def load_state(
    path: str | Path, cell_size_nm: float | None, thickness_nm: float | None, Ms_A_per_m: float
) -> tuple[torch.Tensor, torch.Tensor, tuple[float, float, float]]:
    """(m (1, 3, nz, ny, nx), Ms (1, nz, ny, nx), cell (dx, dy, dz) [m]) from a file.

    OVF files carry their cell size; ``cell_size_nm`` (in-plane) and ``thickness_nm`` (total)
    override it and are required for .npy input.
    """
    _positive("Ms_A_per_m", Ms_A_per_m)
    _positive("cell_size_nm", cell_size_nm)
    _positive("thickness_nm", thickness_nm)
    m, cell = read_magnetization(path)
    nz, ny, nx = m.shape[1:]
    if min(ny, nx) < MIN_CELLS:
        raise InputError(
            f"{path}: the magnetisation has {ny} x {nx} cells in-plane (rows x cols); the LTEM "
            f"simulation needs at least {MIN_CELLS} x {MIN_CELLS}"
        )
    if cell is None and (cell_size_nm is None or thickness_nm is None):
        raise InputError(f"{path}: .npy input needs --cell-size-nm and --thickness-nm")
    dx = cell_size_nm * 1e-9 if cell_size_nm is not None else cell[0]
    dy = cell_size_nm * 1e-9 if cell_size_nm is not None else cell[1]
    dz = thickness_nm * 1e-9 / nz if thickness_nm is not None else cell[2]
    if not math.isclose(dx, dy, rel_tol=1e-6):
        raise InputError(f"{path}: cells must be square in-plane, got dx={dx!r} m, dy={dy!r} m")
    norm = np.linalg.norm(m, axis=0)
    Ms = torch.from_numpy(np.where(norm > 0, Ms_A_per_m, 0.0))[None]
    return torch.from_numpy(m)[None], Ms, (dx, dy, dz)


def _write_tiff(path: Path, image: np.ndarray, pixel_size_m: float) -> None:
    """ImageJ TIFF (float32) with the pixel size in µm, written atomically."""
    px_um = pixel_size_m * 1e6
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp,
            image.astype(np.float32),
            imagej=True,
            resolution=(1 / px_um, 1 / px_um),
            metadata={"unit": "um", "axes": "YX" if image.ndim == 2 else "CYX"},
        )


def simulate_file(
    path: str | Path,
    out_dir: str | Path,
    imaging: Imaging,
    *,
    cell_size_nm: float | None = None,
    thickness_nm: float | None = None,
    Ms_A_per_m: float = 2.0e5,
) -> dict[str, Path]:
    """Simulate one magnetisation file; returns the written files by kind."""
    _positive("voltage_kV", imaging.voltage_kV)
    _positive("dose_e_per_px", imaging.dose_e_per_px)
    if not math.isfinite(imaging.defocus_mm) or imaging.defocus_mm == 0:
        raise InputError(f"defocus_mm: expected a non-zero defocus, got {imaging.defocus_mm!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"out_dir {out_dir}: exists and is not a directory")
    m, Ms, cell = load_state(path, cell_size_nm, thickness_nm, Ms_A_per_m)
    m, Ms = m.float(), Ms.float()
    microscope, tilt = optics_setup(asdict(imaging))
    es = Electrostatics(inner_potential_V=imaging.inner_potential_V)
    detector = Detector(dose_e_per_px=imaging.dose_e_per_px) if imaging.dose_e_per_px else None
    image = simulate_images(
        m, Ms, cell, microscope, tilt, electrostatic=es, detector=detector, generator=imaging.seed
    )
    # TIE on a small-defocus, noise-free, coherent series (the 'reconstructed induction')
    tie_df = min(abs(microscope.defocus_m), 100e-6)
    series = simulate_focal_series(
        m, Ms, cell, microscope.coherent(), (-tie_df, 0.0, tie_df), tilt, electrostatic=es
    )
    tie = tie_from_series(
        series.intensity.double(), tie_df, microscope.wavelength_m, image.pixel_size_m
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(path).stem
    files = {
        "image": out_dir / f"{stem}_ltem.tif",
        "phase": out_dir / f"{stem}_magnetic_phase.tif",
        "induction": out_dir / f"{stem}_induction_Tnm.tif",
        "figure": out_dir / f"{stem}_figure.png",
    }
    px = image.pixel_size_m
    _write_tiff(files["image"], image.intensity[0].numpy(), px)
    _write_tiff(files["phase"], image.magnetic_phase[0].numpy(), px)
    induction = tie.induction[0].numpy() * 1e9  # [T m] -> [T nm]
    _write_tiff(files["induction"], induction, px)
    from ltemfactory.plotting import ltem_figure

    title = (
        f"{Path(path).name}: Δf = {imaging.defocus_mm:g} mm, tilt {imaging.tilt_deg:g}° about "
        f"{imaging.tilt_axis_deg:g}°, {imaging.voltage_kV:g} kV"
    )
    ltem_figure(
        m[0].mean(dim=1).numpy(), image.intensity[0].numpy(), induction, px, files["figure"], title
    )
    log.info("wrote %s", ", ".join(str(p) for p in files.values()))
    return files
