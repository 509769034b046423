"""TIE / SITIE reconstruction (physics.md §4)."""

import math

import pytest
import torch

from ltemfactory.constants import MU0
from ltemfactory.errors import ConfigError, InputError
from ltemfactory.ltem.microscope import Microscope
from ltemfactory.ltem.simulate import simulate_focal_series, simulate_images
from ltemfactory.ltem.tie import (
    induction_from_phase,
    inverse_laplacian,
    phase_gradient,
    separate_flip_phases,
    sitie_phase,
    tie_from_series,
)

from .conftest import F64, skyrmion

N, DX, DZ, MS = 128, 2e-9, 20e-9, 4e5
CELL = (DX, DX, DZ)


def test_inverse_laplacian_of_a_cosine():
    n = 64
    x = torch.arange(n, dtype=F64) * DX
    k = 2 * math.pi * 4 / (n * DX)
    f = torch.cos(k * x)[None, :].expand(n, n)
    out = inverse_laplacian(f, DX, pad="periodic")
    assert torch.allclose(out, -f / k**2, atol=1e-12 / k**2)
    # Tikhonov: 1/q² → q²/(q² + qc²)²
    qc = 0.5 * k / (2 * math.pi)
    q2 = (k / (2 * math.pi)) ** 2
    reg = inverse_laplacian(f, DX, qc, pad="periodic")
    factor = q2 / (q2 + qc**2) ** 2 * q2  # relative to the unregularised 1/q²
    assert torch.allclose(reg, -f / k**2 * factor, atol=1e-12 / k**2)


def test_mirror_padding_solves_the_neumann_problem_exactly():
    """u = cos(π(x+½)/n) cos(π(y+½)/n) has zero normal derivative at the image edges but is not
    periodic: mirror padding inverts ∇²u = −2(π/(nΔ))² u exactly, periodic wrapping does not."""
    n = 64
    c = torch.cos(math.pi * (torch.arange(n, dtype=F64) + 0.5) / n)
    u = c[:, None] * c[None, :]
    lap = -2 * (math.pi / (n * DX)) ** 2 * u
    mirror = inverse_laplacian(lap, DX, pad="mirror")
    assert torch.allclose(mirror, u, atol=1e-9)
    periodic = inverse_laplacian(lap, DX, pad="periodic")
    assert float((periodic - periodic.mean() - u).abs().max()) > 0.1


def test_tie_round_trip_recovers_the_induction_of_a_bloch_skyrmion():
    m = skyrmion(N, DX, 20e-9, 8e-9, kind="bloch")
    mic = Microscope(voltage_V=200e3)
    df = 20e-6
    series = simulate_focal_series(m, MS, CELL, mic, [-df, 0.0, df]).intensity  # (1, 3, N, N)
    res = tie_from_series(series, df, mic.wavelength_m, DX, qc_per_m=0.0)
    truth = MU0 * MS * DZ * m[:2, 0]  # Bloch: m_perp is divergence-free, B⊥ t = μ0 Ms t m⊥
    inner = (slice(16, -16), slice(16, -16))
    err = res.induction[0][(slice(None), *inner)] - truth[(slice(None), *inner)]
    rms_err = float(err.square().mean().sqrt())
    rms_truth = float(truth[(slice(None), *inner)].square().mean().sqrt())
    assert rms_err < 0.05 * rms_truth
    assert res.phase.shape == (1, N, N) and res.pixel_size_m == DX


def test_sitie_recovers_the_phase_roughly():
    m = skyrmion(N, DX, 20e-9, 8e-9, kind="bloch")
    mic = Microscope(defocus_m=-20e-6)
    img = simulate_images(m, MS, CELL, mic)
    phi = sitie_phase(img.intensity, -20e-6, mic.wavelength_m, DX)
    truth = img.magnetic_phase
    a, b = phi - phi.mean(), truth - truth.mean()
    assert float((a - b).square().mean().sqrt()) < 0.1 * float(b.square().mean().sqrt())


def test_induction_of_a_phase_ramp_and_spectral_gradient():
    n = 32
    y, x = torch.meshgrid(
        torch.arange(n, dtype=F64) * DX, torch.arange(n, dtype=F64) * DX, indexing="ij"
    )
    ax, ay = 2e7, -3e7  # rad/m
    b = induction_from_phase(ax * x + ay * y, DX)
    hbar_e = 1.054571817e-34 / 1.602176634e-19
    assert torch.allclose(b[0], torch.full_like(x, hbar_e * ay), rtol=1e-9)
    assert torch.allclose(b[1], torch.full_like(x, -hbar_e * ax), rtol=1e-9)
    k = 2 * math.pi * 3 / (n * DX)
    phi = torch.sin(k * x)
    gx, gy = phase_gradient(phi, DX, method="spectral")
    assert torch.allclose(gx, k * torch.cos(k * x), atol=1e-6 * k)
    assert float(gy.abs().max()) < 1e-6 * k


def test_flip_pair_separates_magnetic_and_electrostatic_phase():
    a, b = torch.randn(2, 8, 8, dtype=F64).unbind(0)
    mag, es = separate_flip_phases(a + b, -a + b)
    assert torch.allclose(mag, a) and torch.allclose(es, b)


def test_tie_input_validation():
    x = torch.ones(1, 3, 8, 8)
    with pytest.raises(ConfigError):
        tie_from_series(x, -1e-6, 2.5e-12, DX)
    with pytest.raises(InputError):
        tie_from_series(torch.ones(1, 2, 8, 8), 1e-6, 2.5e-12, DX)
    with pytest.raises(ConfigError):
        inverse_laplacian(x, DX, pad="zero")
