"""The render stage: LTEM images of relaxed states, several imaging variants per state.

For every state of one relax store, :func:`render_store` draws ``render.variants_per_state``
imaging conditions from the ``render.parameters`` distributions (seeded by the state's seed and
the variant index) and simulates the detected image with :func:`ltemfactory.ltem.simulate_images`.
Tilt and defocus signs are drawn at random when ``render.random_signs`` is set, and the tilt axis
azimuth spans 0–360°, so a model trained on the images needs no contrast or tilt convention.

The batch's own store holds, per image (``image`` dimension, N = states × variants):

===========================  ==========================  ======
array                        dims                        units
===========================  ==========================  ======
image                        image, row, col (float32)   1 (normalised detector counts)
clean_image                  image, row, col (float32)   1 (noise-free intensity, unit beam)
magnetic_phase               image, row, col (float32)   rad (ground truth for TIE work)
state_id, variant, state_index       image               –
<imaging parameter>          image                       in name
pixel_size_nm                image                       nm
===========================  ==========================  ======
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ltemfactory import __version__
from ltemfactory.ltem import Detector, Electrostatics, Microscope, Tilt, simulate_images
from ltemfactory.stores import Variable, atomic_store, open_store, write_variable
from ltemfactory.sweep import inverse_cdf

log = logging.getLogger(__name__)

RENDER_UNITS = {
    "defocus_mm": "mm",
    "tilt_deg": "deg",
    "tilt_axis_deg": "deg",
    "voltage_kV": "kV",
    "cs_mm": "mm",
    "theta_c_mrad": "mrad",
    "defocus_spread_nm": "nm",
    "dose_e_per_px": "e/px",
    "read_noise_counts": "counts",
    "mtf_nu0_cyc_per_px": "cycles/px",
    "gradient_max_rel": "1",
    "hot_pixel_fraction": "1",
    "inner_potential_V": "V",
    "extinction_length_nm": "nm",
    "support_phase_rms_rad": "rad",
}
"""Imaging parameters drawn per image (``render.parameters``) and their units."""


def draw_imaging(render: dict[str, Any], seed: int, variant: int) -> dict[str, float]:
    """Imaging parameters of one image, a pure function of (config, state seed, variant).

    Magnitudes come from the distributions; with ``random_signs`` the defocus and tilt signs are
    drawn independently with probability 1/2 each.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(variant), 0x4C54454D]))
    u = rng.random(len(RENDER_UNITS) + 2)
    out = {
        key: float(inverse_cdf(render["parameters"][key], u[i : i + 1])[0])
        for i, key in enumerate(RENDER_UNITS)
    }
    if render["random_signs"]:
        out["defocus_mm"] *= 1.0 if u[-2] < 0.5 else -1.0
        out["tilt_deg"] *= 1.0 if u[-1] < 0.5 else -1.0
    return out


def optics_setup(p: Mapping[str, float]) -> tuple[Microscope, Tilt]:
    """Microscope and tilt (SI) from parameters in config units: voltage_kV, defocus_mm,
    cs_mm, theta_c_mrad, defocus_spread_nm, tilt_deg, tilt_axis_deg."""
    microscope = Microscope(
        voltage_V=p["voltage_kV"] * 1e3,
        defocus_m=p["defocus_mm"] * 1e-3,
        cs_m=p["cs_mm"] * 1e-3,
        theta_c_rad=p["theta_c_mrad"] * 1e-3,
        defocus_spread_m=p["defocus_spread_nm"] * 1e-9,
    )
    return microscope, Tilt.about_axis(p["tilt_deg"], p["tilt_axis_deg"])


def imaging_setup(p: dict[str, float]) -> tuple[Microscope, Tilt, Electrostatics, Detector]:
    """The simulation parameter groups (SI) for drawn imaging parameters ``p``."""
    microscope, tilt = optics_setup(p)
    electrostatics = Electrostatics(
        inner_potential_V=p["inner_potential_V"],
        extinction_length_m=p["extinction_length_nm"] * 1e-9,
        support_phase_rms_rad=p["support_phase_rms_rad"],
        support_correlation_m=2e-9,
    )
    detector = Detector(
        dose_e_per_px=p["dose_e_per_px"],
        read_noise_counts=p["read_noise_counts"],
        mtf_nu0_cyc_per_px=p["mtf_nu0_cyc_per_px"],
        mtf_floor=0.05,
        gradient_max_rel=p["gradient_max_rel"],
        hot_pixel_fraction=p["hot_pixel_fraction"],
        dead_pixel_fraction=p["hot_pixel_fraction"],
        normalize="mean",
    )
    return microscope, tilt, electrostatics, detector


def render_store(
    relax_store: str | Path, render: dict[str, Any], *, progress: bool = False
) -> dict[str, Variable]:
    """Simulate every imaging variant of every state in ``relax_store``; returns the variables
    of the render store (see the module docstring). Runs on the CPU in float32."""
    group = open_store(relax_store)
    m_arr, ms_arr = group["m"], group["Ms"]
    ids = np.asarray(group["state_id"][:])
    seeds = np.asarray(group["seed"][:])
    cells = np.asarray(group["cell_size_nm"][:]) * 1e-9
    thick = np.asarray(group["thickness_nm"][:]) * 1e-9
    nz = m_arr.shape[2]
    k = render["variants_per_state"]
    n = len(ids) * k
    ny, nx = m_arr.shape[-2:]
    images = np.empty((n, ny, nx), np.float32)
    clean = np.empty_like(images)
    phase = np.empty_like(images)
    params = {key: np.empty(n) for key in RENDER_UNITS}
    bar = tqdm(total=n, desc="render", disable=not progress, leave=False)
    for s in range(len(ids)):
        m = torch.from_numpy(np.asarray(m_arr[s]))[None]
        ms = torch.from_numpy(np.asarray(ms_arr[s]))[None]
        cell = (float(cells[s]), float(cells[s]), float(thick[s]) / nz)
        for v in range(k):
            i = s * k + v
            p = draw_imaging(render, int(seeds[s]), v)
            microscope, tilt, es, det = imaging_setup(p)
            gen = np.random.default_rng(np.random.SeedSequence([int(seeds[s]), v, 1]))
            out = simulate_images(
                m, ms, cell, microscope, tilt, electrostatic=es, detector=det, generator=gen
            )
            images[i] = out.intensity[0].numpy()
            clean[i] = out.clean_intensity[0].numpy()
            phase[i] = out.magnetic_phase[0].numpy()
            for key in RENDER_UNITS:
                params[key][i] = p[key]
            bar.update(1)
    bar.close()
    img_dims = ("image", "row", "col")
    chunks = (1, ny, nx)
    variables = {
        "image": Variable(images, img_dims, "1", {"description": "detected image"}, chunks),
        "clean_image": Variable(clean, img_dims, "1", {"description": "noise-free"}, chunks),
        "magnetic_phase": Variable(phase, img_dims, "rad", {}, chunks),
        "state_id": Variable(np.repeat(ids, k).astype(np.int64), ("image",)),
        "state_index": Variable(np.repeat(np.arange(len(ids)), k).astype(np.int64), ("image",)),
        "variant": Variable(np.tile(np.arange(k), len(ids)).astype(np.int64), ("image",)),
        "pixel_size_nm": Variable(np.repeat(cells * 1e9, k), ("image",), "nm"),
    }
    for key, unit in RENDER_UNITS.items():
        variables[key] = Variable(params[key], ("image",), unit)
    return variables


def write_render_store(
    path: str | Path, variables: dict[str, Variable], config: dict[str, Any], relax_store: str
) -> None:
    """Write the render variables as the batch's own Zarr store at ``path`` (atomically)."""
    with atomic_store(path) as group:
        for name, var in variables.items():
            write_variable(group, name, var)
        group.attrs.update(
            {
                "stage": "render",
                "relax_store": str(relax_store),
                "ltemfactory_version": __version__,
                "config": config,
                "axes": "x along col, y along row; tilt axis azimuth from +x toward +y",
            }
        )
    log.info("wrote %d images to %s", variables["image"].data.shape[0], path)


def render_batch(relax_store: str | Path, out: str | Path, config: dict[str, Any]) -> None:
    """Render one relax store into its own render store (the ``render`` rule)."""
    variables = render_store(relax_store, config["render"], progress=True)
    write_render_store(out, variables, config, str(relax_store))
