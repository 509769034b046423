"""The layered thin-film demagnetising tensor."""

import math

import pytest
import torch

from ltemfactory.micromagnetics.demag import demag_field, demag_tensor

from .conftest import F64, random_unit


def test_two_identical_layers_equal_one_layer_of_double_thickness():
    gen = torch.Generator().manual_seed(3)
    m = random_unit((1, 3, 1, 16, 16), gen) * 5e5
    d = 4e-9
    one = demag_field(m, demag_tensor(1, (16, 16), torch.tensor([[2e-9, 2e-9, 2 * d]])), True)
    two_layers = torch.cat([m, m], dim=2)
    two = demag_field(two_layers, demag_tensor(2, (16, 16), torch.tensor([[2e-9, 2e-9, d]])), True)
    assert torch.allclose(two.mean(dim=2, keepdim=True), one, atol=1e-9 * m.abs().max())


def test_field_of_a_lower_layer_matches_its_sheet_charges():
    """m_z = cos(kx) in layer 0 gives, averaged over layer 1 above it,
    H_x = Ms a sin(kx) with a = (1 − e^{−kd})² e^{−k(s−d)} / (2kd) (surface charges ±Ms m_z)."""
    nx, dx, d, ms = 32, 2e-9, 3e-9, 4e5
    x = (torch.arange(nx, dtype=F64) + 0.5) * dx
    k = 2 * math.pi * 2 / (nx * dx)
    M = torch.zeros(1, 3, 2, 4, nx, dtype=F64)
    M[:, 2, 0] = ms * torch.cos(k * x)
    H = demag_field(M, demag_tensor(2, (4, nx), torch.tensor([[dx, dx, d]])), True)
    a = (1 - math.exp(-k * d)) ** 2 / (2 * k * d)  # s = d: adjacent layers
    expected = ms * a * torch.sin(k * x)
    assert torch.allclose(H[0, 0, 1, 0], expected, atol=1e-9 * ms)
    # and the layer below sees the opposite sign (mirror symmetry)
    M2 = torch.flip(M, dims=[2])
    H2 = demag_field(M2, demag_tensor(2, (4, nx), torch.tensor([[dx, dx, d]])), True)
    assert torch.allclose(H2[0, 0, 0, 0], -expected, atol=1e-9 * ms)


@pytest.mark.parametrize("periodic", [True, False])
def test_demag_operator_is_symmetric(periodic):
    """Reciprocity: ⟨M1, N M2⟩ = ⟨M2, N M1⟩ for arbitrary fields (energy is a quadratic form)."""
    gen = torch.Generator().manual_seed(11)
    shape = (1, 3, 3, 8, 10)
    M1, M2 = random_unit(shape, gen), random_unit(shape, gen)
    grid = (8, 10) if periodic else (16, 20)
    kernel = demag_tensor(3, grid, torch.tensor([[1e-9, 2e-9, 1.5e-9]]))
    a = (M1 * demag_field(M2, kernel, periodic)).sum()
    b = (M2 * demag_field(M1, kernel, periodic)).sum()
    assert a.item() == pytest.approx(b.item(), rel=1e-10)


def test_demag_energy_is_positive_and_bounded():
    """0 ≤ E_d ≤ μ0 Ms² V / 2 for any unit field (N is positive semi-definite with trace 1)."""
    gen = torch.Generator().manual_seed(5)
    for nz in (1, 2):
        M = random_unit((4, 3, nz, 12, 12), gen)
        kernel = demag_tensor(nz, (12, 12), torch.tensor([[2e-9, 2e-9, 3e-9]] * 4))
        e = -0.5 * (M * demag_field(M, kernel, True)).flatten(1).sum(1) / M[0, 0].numel()
        assert (e >= -1e-12).all() and (e <= 0.5 + 1e-12).all()
