"""DMI standard problems (Cortés-Ortuño et al., New J. Phys. 19, 083011 (2017)).

Material: A = 13 pJ/m, D = 3 mJ/m², Ku = 0.4 MJ/m³, Ms = 0.86 MA/m, no demag, no field.
Reference values are those of OOMMF/mumax3/fidimag quoted in the paper.
"""

import numpy as np
import pytest
import torch

from ltemfactory.micromagnetics.minimize import minimize
from ltemfactory.micromagnetics.topology import topological_charge

from .conftest import F64, make_film

MATERIAL = dict(Ms=0.86e6, A=13e-12, D=3e-3, Ku=0.4e6, demag=False, periodic=False)


@pytest.mark.parametrize("D", [3e-3, -3e-3])
def test_one_dimensional_wire_edge_canting(D):
    """100 nm × 1 nm × 1 nm wire, 1 nm cells: at the first cell centre (x = −49.5 nm)
    mz = 0.7897 and |mx| = 0.6135 within 1 %; the edge cants along +x for D > 0 (the sign of
    the boundary condition ∂x mx = −(D/2A) mz at the left end)."""
    film = make_film((1, 1, 100), **{**MATERIAL, "D": D}, cell=(1e-9, 1e-9, 1e-9))
    m0 = torch.zeros(1, 3, 1, 1, 100, dtype=F64)
    m0[:, 2] = 1.0
    m0[:, 0] = 0.01
    res = minimize(film, m0, tolerance=1e-7, max_iterations=50000)
    assert bool(res.converged.all())
    first, last = res.m[0, :, 0, 0, 0], res.m[0, :, 0, 0, -1]
    assert first[2].item() == pytest.approx(0.7897, rel=0.01)
    assert abs(first[0].item()) == pytest.approx(0.6135, rel=0.01)
    assert np.sign(first[0].item()) == np.sign(D)
    assert last[0].item() == pytest.approx(-first[0].item(), rel=1e-6)  # mirror symmetry


def relaxed_disk(D=3e-3, dx=2e-9):
    n = round(100e-9 / dx)
    c = (torch.arange(n, dtype=F64) + 0.5) * dx - n * dx / 2
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    r = torch.hypot(xx, yy)
    Ms = torch.where(r <= 50e-9, 0.86e6, 0.0).to(F64).view(1, 1, n, n)
    film = make_film((1, n, n), **{**MATERIAL, "Ms": Ms, "D": D}, cell=(dx, dx, 2e-9))
    m0 = torch.zeros(1, 3, 1, n, n, dtype=F64)
    m0[:, 2] = torch.where(r < 25e-9, 1.0, -1.0)
    m0[:, 0] = 0.01
    return minimize(film, m0, tolerance=1e-6, max_iterations=50000), c, xx, yy


def skyrmion_radius_nm(res, c):
    n = c.numel()
    row = res.m[0, 2, 0, n // 2 - 1 : n // 2 + 1].mean(dim=0).numpy()  # rows straddle the centre
    x = c.numpy()
    crossings = [
        x[i] - row[i] * (x[i + 1] - x[i]) / (row[i + 1] - row[i])
        for i in range(n - 1)
        if row[i] * row[i + 1] < 0
    ]
    assert len(crossings) == 2
    return [abs(xc) * 1e9 for xc in crossings]


@pytest.mark.slow
def test_disk_radius_converges_to_the_continuum_value_on_a_finer_mesh():
    """With 1 nm cells the radius moves from the 2 nm-mesh value (21.87 nm) towards the
    continuum (ODE) value 22.03 nm of the standard problem: within 0.5 % of it."""
    res, c, _, _ = relaxed_disk(dx=1e-9)
    assert bool(res.converged.all())
    for r in skyrmion_radius_nm(res, c):
        assert 21.87 < r == pytest.approx(22.03, rel=0.005)


def test_disk_skyrmion_radius():
    """100 nm disk, 2 nm thick, 2 nm cells, core up for r < R/2: the relaxed skyrmion radius
    (m_z = 0 along a row through the centre) is 21.87 nm within 1 %."""
    res, c, _, _ = relaxed_disk()
    assert bool(res.converged.all())
    for r in skyrmion_radius_nm(res, c):
        assert r == pytest.approx(21.87, rel=0.01)


@pytest.mark.parametrize("D,expected_sign", [(3e-3, -1.0), (-3e-3, 1.0)])
def test_neel_chirality_follows_the_sign_of_D(D, expected_sign):
    """Core up in a down background: D > 0 gives in-plane moments pointing radially inward
    (the m → −m image of 'core down, outward'), D < 0 outward."""
    res, c, xx, yy = relaxed_disk(D)
    m = res.m[0, :, 0]
    r = torch.hypot(xx, yy)
    wall = (m[2].abs() < 0.5) & (r < 40e-9)
    radial = (m[0] * xx + m[1] * yy) / r
    assert wall.sum() > 10
    assert torch.sign(radial[wall]).eq(expected_sign).all()


def test_relaxed_isolated_skyrmion_has_unit_charge():
    """Periodic film, one Néel skyrmion: Berg–Lüscher Q within 1e-3 of −1 (core down)."""
    from ltemfactory.micromagnetics.initial import bubble_state

    n, dx = 48, 1e-9
    film = make_film((1, n, n), **{**MATERIAL, "D": 2.5e-3, "periodic": True}, cell=(dx, dx, 2e-9))
    m0 = bubble_state((1, n, n), (dx, dx, 2e-9), np.array([[24e-9, 24e-9]]), 8e-9, 3e-9)
    res = minimize(film, torch.tensor(m0)[None], tolerance=1e-5, max_iterations=50000)
    assert bool(res.converged.all())
    q = topological_charge(res.m[0, :, 0], periodic=True).item()
    assert q == pytest.approx(-1.0, abs=1e-3)
