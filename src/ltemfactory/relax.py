"""The relax stage: turn rows of the sweep table into relaxed magnetisation states.

One call relaxes one batch of states together (:func:`relax_batch`) and
:func:`write_relax_store` writes them as that batch's own Zarr store:

=====================  ===========================================  =======
array                  dims                                         units
=====================  ===========================================  =======
m                      state, component, layer, row, col (float32)  1
Ms                     state, layer, row, col (float32, grains)     A/m
<parameter>            state (one per sweep column)                 in name
energy_<term>          state                                        J
iterations, converged, max_torque, topological_charge,
skyrmion_count, mean_radius_nm                 state
=====================  ===========================================  =======
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ltemfactory import __version__
from ltemfactory.constants import MU0
from ltemfactory.micromagnetics import initial
from ltemfactory.micromagnetics.energy import TERMS, EnergyModel
from ltemfactory.micromagnetics.film import Film, field_from_mT
from ltemfactory.micromagnetics.grains import grain_ms_factor
from ltemfactory.micromagnetics.minimize import minimize
from ltemfactory.micromagnetics.topology import reversed_domains, topological_charge
from ltemfactory.stores import Variable, atomic_store, write_variable

log = logging.getLogger(__name__)

PARAMETER_UNITS = {
    "Ms_A_per_m": "A/m",
    "A_J_per_m": "J/m",
    "D_J_per_m2": "J/m^2",
    "Ku_J_per_m3": "J/m^3",
    "field_mT": "mT",
    "thickness_nm": "nm",
    "cell_size_nm": "nm",
    "grain_size_nm": "nm",
    "grain_disorder_pct": "%",
    "initial_state": "",
    "lattice_constant_nm": "nm",
    "bubble_radius_nm": "nm",
    "seed": "",
}


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from ltemfactory.errors import ConfigError

        raise ConfigError("relax.device: 'cuda' requested but no CUDA device is available")
    return torch.device(name)


def wall_width(row: dict[str, Any]) -> float:
    """Bloch/Néel wall width sqrt(A/K_eff) [m], K_eff = Ku − μ0Ms²/2 (at least two cells)."""
    k_eff = row["Ku_J_per_m3"] - 0.5 * MU0 * row["Ms_A_per_m"] ** 2
    cell = row["cell_size_nm"] * 1e-9
    if k_eff <= 0:
        return 2 * cell
    return max(math.sqrt(row["A_J_per_m"] / k_eff), 2 * cell)


def initial_state(
    row: dict[str, Any], shape: tuple[int, int, int], periodic: bool, rng: np.random.Generator
) -> np.ndarray:
    """Start field (3, nz, ny, nx) for one sweep row (its ``initial_state`` kind).

    The background points along the applied field; ``field_history`` starts from a random
    ('hot') state that the relax stage then takes through a sequence of fields.
    """
    nz, ny, nx = shape
    dx = row["cell_size_nm"] * 1e-9
    cell = (dx, dx, row["thickness_nm"] * 1e-9 / nz)
    box = (ny * dx, nx * dx)
    background = 1.0 if row["field_mT"] >= 0 else -1.0
    dmi_sign = 1.0 if row["D_J_per_m2"] >= 0 else -1.0
    a = row["lattice_constant_nm"] * 1e-9
    kind = row["initial_state"]
    if kind in ("random", "field_history"):
        return initial.random_state(shape, rng)
    if kind == "stripes":
        return initial.stripe_state(shape, cell, a, wall_width(row), rng, dmi_sign=dmi_sign)
    if kind == "bubbles_hex":
        centres = initial.hexagonal_centres(box, a, rng)
    elif kind == "bubbles_random":
        centres = initial.random_centres(box, a, rng)
    else:
        raise ValueError(f"initial_state: unknown kind {kind!r}")
    return initial.bubble_state(
        shape,
        cell,
        centres,
        row["bubble_radius_nm"] * 1e-9,
        wall_width(row),
        background=background,
        dmi_sign=dmi_sign,
        periodic=periodic,
    )


def build_batch(
    rows: list[dict[str, Any]], grid: dict[str, Any], demag: bool
) -> tuple[Film, torch.Tensor]:
    """Film batch (float64, CPU) and start fields for sweep ``rows`` on the config ``grid``.

    Each row's ``seed`` drives two independent streams: grains and initial state.
    """
    shape = (grid["nz"], grid["ny"], grid["nx"])
    periodic = grid["boundary"] == "periodic"
    ms_maps, m0s, cells = [], [], []
    for row in rows:
        grain_rng, state_rng = (
            np.random.default_rng(s) for s in np.random.SeedSequence(int(row["seed"])).spawn(2)
        )
        dx = row["cell_size_nm"] * 1e-9
        factor = grain_ms_factor(
            shape[1:],
            (dx, dx),
            row["grain_size_nm"] * 1e-9,
            row["grain_disorder_pct"] / 100.0,
            grain_rng,
            periodic,
        )
        ms_maps.append(np.broadcast_to(row["Ms_A_per_m"] * factor, shape))
        m0s.append(initial_state(row, shape, periodic, state_rng))
        cells.append((dx, dx, row["thickness_nm"] * 1e-9 / shape[0]))
    f64 = torch.float64
    col = lambda key: torch.tensor([r[key] for r in rows], dtype=f64)  # noqa: E731
    h = torch.zeros(len(rows), 3, dtype=f64)
    h[:, 2] = field_from_mT(col("field_mT"))
    film = Film(
        Ms=torch.tensor(np.stack(ms_maps), dtype=f64),
        A=col("A_J_per_m"),
        D=col("D_J_per_m2"),
        Ku=col("Ku_J_per_m3"),
        H=h,
        cell=torch.tensor(cells, dtype=f64),
        periodic=periodic,
        demag=demag,
    )
    return film, torch.tensor(np.stack(m0s), dtype=f64)


@dataclass
class RelaxedBatch:
    """Relaxed states of one batch and their diagnostics (numpy, batch first)."""

    rows: list[dict[str, Any]]
    m: np.ndarray
    Ms: np.ndarray
    energies: dict[str, np.ndarray]
    iterations: np.ndarray
    converged: np.ndarray
    max_torque: np.ndarray
    topological_charge: np.ndarray
    skyrmion_count: np.ndarray
    mean_radius_nm: np.ndarray


def relax_batch(
    rows: list[dict[str, Any]],
    grid: dict[str, Any],
    relax: dict[str, Any],
    *,
    progress: bool = False,
) -> RelaxedBatch:
    """Relax the states of sweep ``rows`` together (config sections ``grid`` and ``relax``).

    States whose kind is ``field_history`` are first relaxed at the fractions
    ``relax.field_history_fraction`` of their field, in order, then all states at their own
    field. Diagnostics are evaluated in float64 on the CPU.
    """
    device = resolve_device(relax["device"])
    dtype = {"float32": torch.float32, "float64": torch.float64}[relax["dtype"]]
    film64, m0 = build_batch(rows, grid, relax["demag"])
    film = film64.to(device=device, dtype=dtype)
    m = m0.to(device=device, dtype=dtype)
    iterations = torch.zeros(len(rows), dtype=torch.long, device=device)
    history = [i for i, r in enumerate(rows) if r["initial_state"] == "field_history"]
    if history:
        idx = torch.tensor(history, device=device)
        sub = film.select(idx)
        m_sub = m[idx]
        for frac in relax["field_history_fraction"]:
            res = minimize(
                sub.with_field(sub.H * frac),
                m_sub,
                relax["tolerance"],
                relax["max_iterations"],
                progress=progress,
                description=f"field history {frac:g}",
                preconditioner_scale=relax["preconditioner_scale"],
            )
            m_sub = res.m
            iterations[idx] += res.iterations
        m[idx] = m_sub
    res = minimize(
        film,
        m,
        relax["tolerance"],
        relax["max_iterations"],
        progress=progress,
        preconditioner_scale=relax["preconditioner_scale"],
    )
    iterations += res.iterations

    m64 = res.m.detach().to("cpu", torch.float64)
    energies = EnergyModel(film64).energies(m64)
    periodic = film64.periodic
    mean_layer = m64.mean(dim=2)  # (B, 3, ny, nx)
    charge = topological_charge(m64[:, :, 0], periodic).numpy()
    counts, radii = [], []
    for b, row in enumerate(rows):
        background = 1.0 if row["field_mT"] >= 0 else -1.0
        _, n, areas = reversed_domains(mean_layer[b, 2].numpy(), periodic, background)
        counts.append(n)
        cell_area = (row["cell_size_nm"]) ** 2
        radii.append(float(np.sqrt(areas * cell_area / np.pi).mean()) if n else 0.0)
    return RelaxedBatch(
        rows=rows,
        m=m64.numpy().astype(np.float32),
        Ms=film64.Ms.numpy().astype(np.float32),
        energies={k: energies[k].numpy() for k in TERMS},
        iterations=iterations.cpu().numpy(),
        converged=res.converged.cpu().numpy(),
        max_torque=res.max_torque.detach().cpu().double().numpy(),
        topological_charge=charge,
        skyrmion_count=np.array(counts, dtype=np.int32),
        mean_radius_nm=np.array(radii),
    )


def write_relax_store(
    path: str | Path, batch: RelaxedBatch, config: dict[str, Any], batch_index: int
) -> None:
    """Write ``batch`` as its own Zarr store at ``path`` (atomically; see module docstring)."""
    s = len(batch.rows)
    state_dims = ("state",)
    variables: dict[str, Variable] = {
        "state_id": Variable(
            np.array([r["state_id"] for r in batch.rows], dtype=np.int64), state_dims
        ),
        "m": Variable(
            batch.m,
            ("state", "component", "layer", "row", "col"),
            "1",
            {"components": ["mx", "my", "mz"], "description": "relaxed unit magnetisation"},
            chunks=(1, *batch.m.shape[1:]),
        ),
        "Ms": Variable(
            batch.Ms,
            ("state", "layer", "row", "col"),
            "A/m",
            {"description": "saturation magnetisation per cell (grain disorder)"},
            chunks=(1, *batch.Ms.shape[1:]),
        ),
    }
    for key, unit in PARAMETER_UNITS.items():
        values = [r[key] for r in batch.rows]
        arr = np.array(values, dtype=str if key == "initial_state" else None)
        variables[key] = Variable(arr, state_dims, unit or None)
    for term, e in batch.energies.items():
        variables[f"energy_{term}"] = Variable(e, state_dims, "J", {"term": term})
    variables.update(
        iterations=Variable(batch.iterations.astype(np.int64), state_dims),
        converged=Variable(batch.converged.astype(bool), state_dims),
        max_torque=Variable(
            batch.max_torque, state_dims, "1", {"definition": "max |m x H_eff| / Ms"}
        ),
        topological_charge=Variable(batch.topological_charge, state_dims, "1"),
        skyrmion_count=Variable(batch.skyrmion_count, state_dims, "1"),
        mean_radius_nm=Variable(batch.mean_radius_nm, state_dims, "nm"),
    )
    with atomic_store(path) as group:
        for name, var in variables.items():
            write_variable(group, name, var)
        group.attrs.update(
            {
                "stage": "relax",
                "batch": batch_index,
                "n_states": s,
                "ltemfactory_version": __version__,
                "config": config,
                "axes": "x along col, y along row, z out of plane (right-handed)",
            }
        )
    log.info("wrote %d states to %s (%d converged)", s, path, int(batch.converged.sum()))
