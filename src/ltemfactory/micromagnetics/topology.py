"""Topological charge and reversed-domain statistics of 2-D magnetisation fields.

Fields are (..., 3, ny, nx) with x along columns and y along rows.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage

from ltemfactory.micromagnetics.reductions import cell_sum


def _solid_angle(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Signed solid angle of the spherical triangle (a, b, c) (Berg & Lüscher, Nucl. Phys. B 190,
    412 (1981)): tan(Ω/2) = a·(b × c) / (1 + a·b + b·c + c·a)."""
    triple = (a * torch.linalg.cross(b, c, dim=-3)).sum(dim=-3)
    denom = 1 + (a * b).sum(dim=-3) + (b * c).sum(dim=-3) + (c * a).sum(dim=-3)
    return 2 * torch.atan2(triple, denom)


def charge_density(m: torch.Tensor, periodic: bool = True) -> torch.Tensor:
    """Lattice topological charge per plaquette, (..., ny, nx), in units of the full charge.

    Plaquette (y, x) spans cells (y, x), (y, x+1), (y+1, x+1), (y+1, x), split into two
    counter-clockwise triangles, so Σ = (1/4π)∫ m·(∂x m × ∂y m) dx dy in the continuum limit and
    every skyrmion counts exactly ±1 on a periodic grid. Without ``periodic``, plaquettes that
    wrap around the edges are dropped; plaquettes touching empty (zero) cells always are.
    """
    m = torch.as_tensor(m)
    m00 = m
    m10 = torch.roll(m, -1, dims=-1)
    m11 = torch.roll(m10, -1, dims=-2)
    m01 = torch.roll(m, -1, dims=-2)
    omega = _solid_angle(m00, m10, m11) + _solid_angle(m00, m11, m01)
    norm = torch.linalg.vector_norm(m, dim=-3) > 0
    valid = norm & torch.roll(norm, -1, -1) & torch.roll(norm, -1, -2)
    valid = valid & torch.roll(torch.roll(norm, -1, -1), -1, -2)
    if not periodic:
        valid[..., -1, :] = False
        valid[..., :, -1] = False
    return torch.where(valid, omega, torch.zeros_like(omega)) / (4 * math.pi)


def topological_charge(m: torch.Tensor, periodic: bool = True) -> torch.Tensor:
    """Total topological charge Q of (..., 3, ny, nx) fields, shape (...,) (Berg–Lüscher)."""
    return cell_sum(charge_density(m, periodic), 2)


def label_periodic(mask: np.ndarray, periodic: bool = True) -> tuple[np.ndarray, int]:
    """Connected regions (4-connectivity) of a 2-D boolean ``mask``, joined across the periodic
    edges when ``periodic``. Labels are 1..N in raster order of first appearance; 0 is
    background. Returns (labels int32 (ny, nx), N).
    """
    labels, n = ndimage.label(mask)
    if periodic and n > 1:
        parent = np.arange(n + 1)

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        pairs = [
            np.stack([labels[:, 0], labels[:, -1]], axis=1),
            np.stack([labels[0, :], labels[-1, :]], axis=1),
        ]
        for a, b in np.concatenate(pairs):
            if a and b:
                ra, rb = find(int(a)), find(int(b))
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
        roots = np.array([find(i) for i in range(n + 1)])
        labels = roots[labels]
    # relabel 1..N in raster order
    flat = labels.ravel()
    _, first = np.unique(flat, return_index=True)
    order = flat[np.sort(first)]
    order = order[order != 0]
    lut = np.zeros(flat.max() + 1 if flat.size else 1, dtype=np.int32)
    lut[order] = np.arange(1, len(order) + 1, dtype=np.int32)
    return lut[labels], len(order)


def reversed_domains(mz: np.ndarray, periodic: bool = True, background: float | None = None):
    """Regions where m_z is reversed relative to the background (the m_z = 0 contour).

    Args:
        mz: (ny, nx) out-of-plane component.
        periodic: join regions across the periodic edges.
        background: sign of the background magnetisation; default the sign of mean(m_z).

    Returns:
        (labels (ny, nx) int32, N, areas (N,) in cells).
    """
    if background is None:
        background = 1.0 if float(np.mean(mz)) >= 0 else -1.0
    labels, n = label_periodic(mz * background < 0, periodic)
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    return labels, n, areas
