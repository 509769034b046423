"""Initial magnetisation states for relaxation, drawn from a seeded ``numpy.random.Generator``.

Seeded bubbles converge several times faster than random starts and set the skyrmion density,
so most dataset states start from bubbles at hexagonal or random positions. All functions
return float64 arrays (3, nz, ny, nx) of unit vectors, uniform through the layers; x runs along
columns, y along rows. Lengths are in metres.

Bubble walls are Néel walls whose in-plane moment points along +sign(D)·∇m_z, the chirality that
interfacial DMI with D > 0 prefers in the convention of :mod:`.energy` (core down in an up
background → moments point radially outward).
"""

from __future__ import annotations

import math

import numpy as np

SQRT3 = math.sqrt(3.0)


def _grid(shape: tuple[int, int, int], cell: tuple[float, float, float]):
    nz, ny, nx = shape
    y = (np.arange(ny) + 0.5) * cell[1]
    x = (np.arange(nx) + 0.5) * cell[0]
    return np.meshgrid(y, x, indexing="ij")


def _stack(mx: np.ndarray, my: np.ndarray, mz: np.ndarray, nz: int) -> np.ndarray:
    m = np.stack([mx, my, mz])[:, None]
    m = np.repeat(m, nz, axis=1)
    return m / np.linalg.norm(m, axis=0, keepdims=True)


def uniform_state(shape: tuple[int, int, int], sign: float = 1.0) -> np.ndarray:
    """m = sign·ẑ everywhere."""
    m = np.zeros((3, *shape))
    m[2] = 1.0 if sign >= 0 else -1.0
    return m


def random_state(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Independent directions uniform on the sphere in every cell (a 'hot' start)."""
    m = rng.standard_normal((3, *shape))
    return m / np.linalg.norm(m, axis=0, keepdims=True)


def hexagonal_centres(
    box: tuple[float, float], lattice_constant: float, rng: np.random.Generator
) -> np.ndarray:
    """Centres (N, 2) as (y, x) [m] of a hexagonal lattice made commensurate with the periodic
    ``box`` = (Ly, Lx) [m]: the number of columns and (even) rows are rounded, so the lattice is
    slightly strained when the box is not a multiple of the lattice constant. The lattice is
    shifted by a random offset.
    """
    ly, lx = box
    ncol = max(1, round(lx / lattice_constant))
    nrow = max(2, 2 * round(ly / (lattice_constant * SQRT3)))
    ax, ay = lx / ncol, ly / nrow
    j, i = np.meshgrid(np.arange(nrow), np.arange(ncol), indexing="ij")
    x = (i + 0.5 * (j % 2)) * ax
    y = j * ay
    offset = rng.uniform(0, 1, size=2) * np.array([ly, lx])
    centres = np.stack([y.ravel(), x.ravel()], axis=1) + offset
    return np.mod(centres, np.array([ly, lx]))


def random_centres(
    box: tuple[float, float],
    lattice_constant: float,
    rng: np.random.Generator,
    min_distance_fraction: float = 0.7,
    max_tries: int = 50,
) -> np.ndarray:
    """Centres (N, 2) as (y, x) [m] at random positions with the density of a hexagonal lattice
    of ``lattice_constant`` (2/(√3 a²) per area), no two closer than
    ``min_distance_fraction·a`` (periodic distance). Placement stops early when the box is full.
    """
    ly, lx = box
    target = max(1, round(2.0 * lx * ly / (SQRT3 * lattice_constant**2)))
    dmin = min_distance_fraction * lattice_constant
    centres: list[np.ndarray] = []
    fails = 0
    while len(centres) < target and fails < max_tries * target:
        c = rng.uniform(0, 1, size=2) * np.array([ly, lx])
        if centres:
            d = np.abs(np.array(centres) - c)
            d = np.minimum(d, np.array([ly, lx]) - d)
            if (np.hypot(d[:, 0], d[:, 1]) < dmin).any():
                fails += 1
                continue
        centres.append(c)
    return np.array(centres).reshape(-1, 2)


def bubble_state(
    shape: tuple[int, int, int],
    cell: tuple[float, float, float],
    centres: np.ndarray,
    radius: float,
    wall_width: float,
    *,
    background: float = 1.0,
    dmi_sign: float = 1.0,
    periodic: bool = True,
) -> np.ndarray:
    """Reversed-core bubbles of ``radius`` [m] at ``centres`` (N, 2) = (y, x) [m].

    Each cell takes the profile of its nearest bubble: θ(r) = 2 atan(exp(−(r − R)/w)), with
    m_z = background·cos θ and the in-plane moment ±sin θ along the radius (Néel chirality set
    by ``dmi_sign``). ``wall_width`` w ≈ sqrt(A/K_eff) [m].
    """
    nz, ny, nx = shape
    yy, xx = _grid(shape, cell)
    ly, lx = ny * cell[1], nx * cell[0]
    if len(centres) == 0:
        return uniform_state(shape, background)
    best = np.full((ny, nx), np.inf)
    vy = np.zeros((ny, nx))
    vx = np.zeros((ny, nx))
    for cy, cx in centres:
        dy, dx = yy - cy, xx - cx
        if periodic:
            dy -= ly * np.round(dy / ly)
            dx -= lx * np.round(dx / lx)
        r = np.hypot(dy, dx)
        closer = r < best
        best = np.where(closer, r, best)
        vy = np.where(closer, dy, vy)
        vx = np.where(closer, dx, vx)
    theta = 2.0 * np.arctan(np.exp(-(best - radius) / wall_width))
    rr = np.where(best > 0, best, 1.0)
    s = np.sin(theta) * np.sign(dmi_sign or 1.0) * background
    return _stack(s * vx / rr, s * vy / rr, background * np.cos(theta), nz)


def stripe_state(
    shape: tuple[int, int, int],
    cell: tuple[float, float, float],
    period: float,
    wall_width: float,
    rng: np.random.Generator,
    *,
    dmi_sign: float = 1.0,
) -> np.ndarray:
    """Up/down stripe domains of about ``period`` [m] (two domains per period) with Néel walls,
    along a random direction whose wave vector is commensurate with the periodic box.
    """
    nz, ny, nx = shape
    yy, xx = _grid(shape, cell)
    ly, lx = ny * cell[1], nx * cell[0]
    phi = rng.uniform(0, np.pi)
    kx_n = round(lx * np.cos(phi) / period)
    ky_n = round(ly * np.sin(phi) / period)
    if kx_n == 0 and ky_n == 0:
        kx_n = 1
    kx, ky = 2 * np.pi * kx_n / lx, 2 * np.pi * ky_n / ly
    psi = kx * xx + ky * yy + rng.uniform(0, 2 * np.pi)
    k = math.hypot(kx, ky)
    mz = np.tanh(np.sin(psi) / (k * wall_width))
    grad = np.sign(np.cos(psi)) * np.sign(dmi_sign or 1.0)
    s = np.sqrt(np.clip(1 - mz**2, 0, 1)) * grad
    return _stack(s * kx / k, s * ky / k, mz, nz)
