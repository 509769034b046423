"""Polycrystalline disorder: Voronoi grains with their own saturation magnetisation."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def voronoi_grains(
    shape: tuple[int, int],
    cell: tuple[float, float],
    grain_size: float,
    rng: np.random.Generator,
    periodic: bool = True,
) -> np.ndarray:
    """Grain index of every cell, (ny, nx) int: the nearest of N random seeds, N = area/size².

    Args:
        shape: (ny, nx) cells.
        cell: (dx, dy) [m].
        grain_size: mean grain diameter [m]; the seed density is 1/grain_size².
        rng: seeded generator.
        periodic: grains wrap around the edges (periodic Voronoi tessellation).
    """
    ny, nx = shape
    ly, lx = ny * cell[1], nx * cell[0]
    n = max(1, round(lx * ly / grain_size**2))
    seeds = rng.uniform(0, 1, size=(n, 2)) * np.array([ly, lx])
    yy, xx = np.meshgrid(
        (np.arange(ny) + 0.5) * cell[1], (np.arange(nx) + 0.5) * cell[0], indexing="ij"
    )
    points = np.stack([yy.ravel(), xx.ravel()], axis=1)
    tree = cKDTree(seeds, boxsize=[ly, lx] if periodic else None)
    _, idx = tree.query(points)
    return idx.reshape(ny, nx)


def grain_ms_factor(
    shape: tuple[int, int],
    cell: tuple[float, float],
    grain_size: float,
    disorder: float,
    rng: np.random.Generator,
    periodic: bool = True,
) -> np.ndarray:
    """Multiplicative Ms factor per cell, (ny, nx): 1 + disorder·u_g with u_g uniform in [−1, 1]
    per Voronoi grain, e.g. disorder = 0.25 for ±25 % Ms. No disorder gives exactly 1.
    """
    if disorder == 0:
        return np.ones(shape)
    if not 0 <= disorder < 1:
        raise ValueError(f"disorder: expected a fraction in [0, 1), got {disorder}")
    grains = voronoi_grains(shape, cell, grain_size, rng, periodic)
    factors = 1.0 + disorder * rng.uniform(-1.0, 1.0, size=grains.max() + 1)
    return factors[grains]
