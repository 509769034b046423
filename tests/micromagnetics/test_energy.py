"""Energy terms against analytic values and against autograd of the discrete energy."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ltemfactory.constants import MU0
from ltemfactory.micromagnetics.energy import TERMS, EnergyModel

from .conftest import F64, make_film, random_unit


def uniform(shape, direction, batch=1):
    m = torch.zeros(batch, 3, *shape, dtype=F64)
    for c, v in enumerate(direction):
        m[:, c] = v
    return m / torch.linalg.vector_norm(m, dim=1, keepdim=True)


def test_uniform_out_of_plane_energies_are_analytic():
    Ms, Ku, b_mT = 6e5, 3e5, 150.0
    shape, cell = (1, 8, 12), (2e-9, 3e-9, 5e-9)
    film = make_film(shape, Ms=Ms, Ku=Ku, field_mT=(0, 0, b_mT), cell=cell, demag=True, D=2e-3)
    e = EnergyModel(film).energies(uniform(shape, (0, 0, 1)))
    volume = math.prod(shape) * math.prod(cell)
    assert e["exchange"].item() == pytest.approx(0.0, abs=1e-30)
    assert e["dmi"].item() == pytest.approx(0.0, abs=1e-30)
    assert e["anisotropy"].item() == pytest.approx(-Ku * volume, rel=1e-12)
    assert e["zeeman"].item() == pytest.approx(-Ms * b_mT * 1e-3 * volume, rel=1e-12)
    # exact thin-film demag of a uniformly perpendicular film: μ0 Ms²/2 per volume
    assert e["demag"].item() == pytest.approx(0.5 * MU0 * Ms**2 * volume, rel=1e-12)


@pytest.mark.parametrize("direction", [(1, 0, 0), (0, 1, 0), (1, 1, 0)])
def test_uniform_in_plane_film_has_no_demag_energy(direction):
    film = make_film((1, 8, 8), demag=True)
    e = EnergyModel(film).energies(uniform((1, 8, 8), direction))
    assert abs(e["demag"].item()) < 1e-30


def spiral(nx, n_periods, batch=1, ny=2):
    """m = (cos kx, 0, sin kx) with k = 2π n_periods / (nx dx) at cell centres."""
    x = torch.arange(nx, dtype=F64) + 0.5
    phase = 2 * math.pi * n_periods * x / nx
    m = torch.zeros(batch, 3, 1, ny, nx, dtype=F64)
    m[:, 0] = torch.cos(phase)
    m[:, 2] = torch.sin(phase)
    return m


@settings(max_examples=25, deadline=None)
@given(n_periods=st.integers(-6, 6), nx=st.sampled_from([32, 48, 64]), dx_nm=st.floats(0.5, 3.0))
def test_spin_spiral_energy_matches_discrete_and_continuum_forms(n_periods, nx, dx_nm):
    A, D = 1.3e-11, 3e-3
    dx = dx_nm * 1e-9
    film = make_film((1, 2, nx), A=A, D=D, cell=(dx, dx, 1e-9))
    e = EnergyModel(film).energies(spiral(nx, n_periods))
    volume = 2 * nx * dx * dx * 1e-9
    k = 2 * math.pi * n_periods / (nx * dx)
    # exact densities of the bond discretisation
    ex = A * (2 - 2 * math.cos(k * dx)) / dx**2
    dmi = -D * math.sin(k * dx) / dx
    assert e["exchange"].item() / volume == pytest.approx(ex, rel=1e-9, abs=1e-9)
    assert e["dmi"].item() / volume == pytest.approx(dmi, rel=1e-9, abs=1e-9)
    # continuum limit A k² − D k when the spiral is well resolved
    if abs(k * dx) < 0.1:
        assert (e["exchange"] + e["dmi"]).item() / volume == pytest.approx(
            A * k**2 - D * k, rel=0.01, abs=1e-3 * D * abs(k) + 1e-12
        )


def test_spiral_energy_is_lowest_at_k_equal_D_over_2A():
    A, D, nx, dx = 1.3e-11, 3e-3, 256, 1e-9
    film = make_film((1, 2, nx), A=A, D=D, cell=(dx, dx, 1e-9))
    model = EnergyModel(film)
    energies = {n: (model.total_energy(spiral(nx, n))).item() for n in range(-4, 20)}
    best = min(energies, key=energies.get)
    k_best = 2 * math.pi * best / (nx * dx)
    k_step = 2 * math.pi / (nx * dx)
    assert abs(k_best - D / (2 * A)) <= k_step / 2


@pytest.mark.parametrize(
    "periodic,nz,demag", [(True, 1, True), (False, 1, True), (True, 3, True), (False, 2, False)]
)
def test_fields_are_minus_the_energy_gradient(periodic, nz, demag):
    """H_term = −(1/(μ0 Ms V)) ∂E_term/∂m for every term, with grains, holes and layers."""
    gen = torch.Generator().manual_seed(7)
    shape = (nz, 10, 12)
    Ms = 4e5 * (1 + 0.3 * torch.rand(2, *shape, generator=gen, dtype=F64))
    Ms[:, :, 3:5, 4:7] = 0.0  # a hole: broken bonds, no moment
    film = make_film(
        shape,
        batch=2,
        Ms=Ms,
        A=1.2e-11,
        D=-2.5e-3,
        Ku=2e5,
        field_mT=(10.0, -20.0, 80.0),
        cell=(2e-9, 3e-9, 1.5e-9),
        periodic=periodic,
        demag=demag,
    )
    model = EnergyModel(film)
    m = random_unit((2, 3, *shape), gen).requires_grad_(True)
    weight = MU0 * film.cell_volume.view(-1, 1, 1, 1, 1) * film.Ms.unsqueeze(1)
    fields = model.fields(m.detach())
    for term in TERMS:
        (grad,) = torch.autograd.grad(model.energies(m)[term].sum(), m)
        expected = torch.where(weight > 0, -grad / torch.where(weight > 0, weight, 1.0), 0.0)
        scale = expected.abs().max() + 1e-30
        assert torch.allclose(fields[term], expected, atol=1e-10 * scale, rtol=0), term


def test_in_place_total_field_equals_the_sum_of_the_terms():
    gen = torch.Generator().manual_seed(2)
    shape = (2, 10, 12)
    Ms = 4e5 * (1 + 0.3 * torch.rand(2, *shape, generator=gen, dtype=F64))
    Ms[:, :, 2:4, 3:5] = 0.0
    film = make_film(
        shape, batch=2, Ms=Ms, D=2e-3, Ku=1e5, field_mT=(1, 2, 3), periodic=False, demag=True
    )
    model = EnergyModel(film)
    m = random_unit((2, 3, *shape), gen)
    total = sum(model.fields(m).values())
    assert torch.allclose(model.effective_field(m), total, rtol=0, atol=1e-12 * total.abs().max())
