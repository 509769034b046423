"""Batched minimiser behaviour: batching is exact, convergence is honest, lattices count."""

import numpy as np
import pytest
import torch

from ltemfactory.micromagnetics.energy import EnergyModel
from ltemfactory.micromagnetics.initial import bubble_state, hexagonal_centres, random_state
from ltemfactory.micromagnetics.minimize import minimize
from ltemfactory.micromagnetics.topology import reversed_domains, topological_charge

from .conftest import F64, make_film

SKYRMION = dict(Ms=0.86e6, A=13e-12, D=3e-3, Ku=0.4e6, demag=True, field_mT=(0.0, 0.0, 100.0))


def lattice_start(n, dx, a, seed):
    rng = np.random.default_rng(seed)
    centres = hexagonal_centres((n * dx, n * dx), a, rng)
    m0 = bubble_state((1, n, n), (dx, dx, 2e-9), centres, a / 4, 3e-9)
    return torch.tensor(m0)[None], len(centres)


def test_periodic_lattice_of_n_skyrmions_has_charge_n():
    n, dx = 96, 1e-9
    m0, count = lattice_start(n, dx, 24e-9, seed=0)
    film = make_film((1, n, n), **SKYRMION, cell=(dx, dx, 2e-9))
    res = minimize(film, m0, tolerance=1e-4, max_iterations=20000)
    assert bool(res.converged.all())
    assert topological_charge(res.m[0, :, 0]).item() == pytest.approx(-count, abs=1e-6)
    assert reversed_domains(res.m[0, 2, 0].numpy())[1] == count


def test_batch_members_relax_as_they_would_alone():
    """Each member has its own step size and leaves the batch when converged: a batch of
    different films follows the single-film paths to rounding (batched FFTs round differently,
    and the non-monotone BB iteration amplifies that slowly), and ends in the same states."""
    n, dx = 32, 1e-9
    a, _ = lattice_start(n, dx, 16e-9, seed=1)
    b = torch.tensor(random_state((1, n, n), np.random.default_rng(2)))[None]
    film = make_film((1, n, n), batch=2, **SKYRMION, cell=(dx, dx, 2e-9))
    film = film.with_field(film.H * torch.tensor([[1.0], [2.0]], dtype=F64))
    model = EnergyModel(film)
    early = minimize(film, torch.cat([a, b]), tolerance=1e-3, max_iterations=30)
    final = minimize(film, torch.cat([a, b]), tolerance=1e-3, max_iterations=20000)
    assert bool(final.converged.all()) and final.iterations[0] != final.iterations[1]
    for i, m0 in enumerate((a, b)):
        single = film.select(torch.tensor([i]))
        alone = minimize(single, m0, tolerance=1e-3, max_iterations=30)
        assert torch.allclose(early.m[i], alone.m[0], atol=1e-12, rtol=0)
        alone = minimize(single, m0, tolerance=1e-3, max_iterations=20000)
        e_batch = model.total_energy(final.m)[i]
        e_alone = EnergyModel(single).total_energy(alone.m)[0]
        assert e_batch.item() == pytest.approx(e_alone.item(), rel=1e-4)
        q_batch = topological_charge(final.m[i, :, 0]).item()
        assert q_batch == pytest.approx(topological_charge(alone.m[0, :, 0]).item(), abs=1e-6)


def test_relaxation_lowers_the_energy_and_reaches_the_tolerance():
    n, dx = 32, 1e-9
    m0 = torch.tensor(random_state((1, n, n), np.random.default_rng(4)))[None]
    film = make_film((1, n, n), **SKYRMION, cell=(dx, dx, 2e-9))
    model = EnergyModel(film)
    res = minimize(film, m0, tolerance=1e-3, max_iterations=20000)
    assert bool(res.converged.all()) and res.max_torque.item() < 1e-3
    assert model.total_energy(res.m) < model.total_energy(m0)
    h = model.effective_field(res.m) / film.Ms_ref.view(-1, 1, 1, 1, 1)
    torque = torch.linalg.vector_norm(torch.linalg.cross(res.m, h, dim=1), dim=1).max()
    assert torque.item() == pytest.approx(res.max_torque.item(), rel=1e-9)


def test_states_out_of_budget_are_flagged_not_converged():
    n, dx = 32, 1e-9
    m0 = torch.tensor(random_state((1, n, n), np.random.default_rng(4)))[None]
    film = make_film((1, n, n), **SKYRMION, cell=(dx, dx, 2e-9))
    res = minimize(film, m0, tolerance=1e-6, max_iterations=5)
    assert not bool(res.converged.any())
    assert res.iterations.item() == 5 and res.max_torque.item() > 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_same_start_gives_bit_identical_states(dtype):
    n, dx = 32, 1e-9
    m0, _ = lattice_start(n, dx, 16e-9, seed=3)
    film = make_film((1, n, n), **SKYRMION, cell=(dx, dx, 2e-9)).to(dtype=dtype)
    r1 = minimize(film, m0.to(dtype), tolerance=1e-2)
    r2 = minimize(film, m0.to(dtype), tolerance=1e-2)
    assert torch.equal(r1.m, r2.m) and torch.equal(r1.iterations, r2.iterations)


def test_wrong_start_shape_is_rejected():
    film = make_film((1, 8, 8))
    with pytest.raises(ValueError, match="m0"):
        minimize(film, torch.zeros(1, 3, 1, 8, 9, dtype=F64))


@pytest.mark.gpu
def test_cuda_relaxation_matches_cpu():
    n, dx = 64, 1e-9
    m0, count = lattice_start(n, dx, 24e-9, seed=5)
    film = make_film((1, n, n), **SKYRMION, cell=(dx, dx, 2e-9))
    cpu = minimize(film, m0, tolerance=1e-4)
    gpu = minimize(film.to(device="cuda"), m0.cuda(), tolerance=1e-4)
    assert bool(gpu.converged.all()) and gpu.m.is_cuda
    assert topological_charge(gpu.m[0, :, 0].cpu()).item() == pytest.approx(-count, abs=1e-6)
    e_cpu = EnergyModel(film).total_energy(cpu.m)
    e_gpu = EnergyModel(film).total_energy(gpu.m.cpu())
    assert e_gpu.item() == pytest.approx(e_cpu.item(), rel=1e-6)


def test_exchange_preconditioner_reaches_the_same_kind_of_state_in_fewer_iterations():
    """Random-position seeds (slow positional creep under plain BB): with the preconditioner
    the lattice relaxes to the same topological charge in far fewer iterations."""
    from ltemfactory.micromagnetics.initial import random_centres

    n, dx = 64, 1e-9
    centres = random_centres((n * dx, n * dx), 20e-9, np.random.default_rng(8))
    m0 = torch.tensor(bubble_state((1, n, n), (dx, dx, 2e-9), centres, 5e-9, 3e-9))[None]
    film = make_film((1, n, n), **SKYRMION, cell=(dx, dx, 2e-9))
    plain = minimize(film, m0, tolerance=1e-3, preconditioner_scale=0.0)
    fast = minimize(film, m0, tolerance=1e-3, preconditioner_scale=0.1)
    assert bool(plain.converged.all()) and bool(fast.converged.all())
    q_plain = topological_charge(plain.m[0, :, 0]).item()
    assert topological_charge(fast.m[0, :, 0]).item() == pytest.approx(q_plain, abs=1e-6)
    assert fast.iterations.item() * 2 < plain.iterations.item()


def test_preconditioner_keeps_empty_cells_empty():
    n = 24
    Ms = torch.full((1, 1, n, n), 0.86e6, dtype=F64)
    Ms[..., 8:16, 8:16] = 0.0
    film = make_film((1, n, n), **{**SKYRMION, "Ms": Ms}, cell=(1e-9, 1e-9, 2e-9))
    m0 = torch.tensor(random_state((1, n, n), np.random.default_rng(1)))[None]
    res = minimize(film, m0, tolerance=1e-3, preconditioner_scale=1.0)
    assert torch.all(res.m[..., 8:16, 8:16] == 0)
    norms = torch.linalg.vector_norm(res.m, dim=1)[film.magnetic]
    assert torch.allclose(norms, torch.ones_like(norms))
