"""LTEM image simulation and TIE reconstruction (physics.md §1–4).

One module per physical concept (modelled on abTEM):

* :mod:`.microscope` — relativistic λ and σ, the :class:`Microscope` parameter group;
* :mod:`.geometry` — sample :class:`Tilt`, projection of the voxel grid, lab-frame resampling;
* :mod:`.transfer` — contrast transfer function: χ, spatial/temporal envelopes, aperture;
* :mod:`.phase` — magnetic (Mansuripur / tilted linear superposition) and electrostatic phase;
* :mod:`.image` — exit wave → image intensity, focal and flipped-sample series;
* :mod:`.detector` — dose, shot noise, MTF, read noise, gain/offset, bad pixels, gradients;
* :mod:`.tie` — TIE / SITIE phase retrieval and the projected induction;
* :mod:`.colorwheel` — HSV rendering of in-plane vector fields;
* :mod:`.simulate` — :func:`simulate_images`, the one-call pipeline.

Conventions: arrays (..., row, col), x along columns, y along rows; SI units; batch first;
f̃(k) = Σ f(r) exp(−i k·r); ∫B_x dz = (ħ/e) ∂φ/∂y, ∫B_y dz = −(ħ/e) ∂φ/∂x.
"""

from ltemfactory.ltem.colorwheel import colorwheel_legend, vector_to_rgb
from ltemfactory.ltem.detector import Detector, apply_detector
from ltemfactory.ltem.geometry import ProjectionGeometry, Tilt, residual_image_rotation_rad
from ltemfactory.ltem.image import flip_series, focal_series, image_intensity, image_wave
from ltemfactory.ltem.microscope import (
    Microscope,
    electron_wavelength_m,
    interaction_constant,
)
from ltemfactory.ltem.phase import (
    Electrostatics,
    Phase,
    ProjectedPhases,
    magnetic_phase,
    magnetic_phase_direct,
    mansuripur_phase,
    projected_phases,
)
from ltemfactory.ltem.simulate import LtemImages, simulate_focal_series, simulate_images
from ltemfactory.ltem.tie import (
    TieResult,
    induction_from_phase,
    separate_flip_phases,
    sitie_phase,
    tie_from_series,
    tie_phase,
)
from ltemfactory.ltem.transfer import transfer_function

__all__ = [
    "Detector",
    "Electrostatics",
    "LtemImages",
    "Microscope",
    "Phase",
    "ProjectedPhases",
    "ProjectionGeometry",
    "Tilt",
    "TieResult",
    "apply_detector",
    "colorwheel_legend",
    "electron_wavelength_m",
    "flip_series",
    "focal_series",
    "image_intensity",
    "image_wave",
    "induction_from_phase",
    "interaction_constant",
    "magnetic_phase",
    "magnetic_phase_direct",
    "mansuripur_phase",
    "projected_phases",
    "residual_image_rotation_rad",
    "separate_flip_phases",
    "simulate_focal_series",
    "simulate_images",
    "sitie_phase",
    "tie_from_series",
    "tie_phase",
    "transfer_function",
    "vector_to_rgb",
]
