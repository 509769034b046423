"""Initial states and grain disorder."""

import numpy as np
import pytest

from ltemfactory.micromagnetics.grains import grain_ms_factor, voronoi_grains
from ltemfactory.micromagnetics.initial import bubble_state, random_state, stripe_state


def test_grains_have_the_requested_size_and_spread(rng):
    shape, cell, size = (128, 128), (2e-9, 2e-9), 32e-9
    grains = voronoi_grains(shape, cell, size, rng)
    n_expected = (128 * 2e-9) ** 2 / size**2
    assert len(np.unique(grains)) == pytest.approx(n_expected, rel=0.25)
    factor = grain_ms_factor(shape, cell, size, 0.25, np.random.default_rng(1))
    assert factor.min() >= 0.75 and factor.max() <= 1.25
    assert len(np.unique(factor)) > 5  # piecewise constant: one value per grain
    assert np.array_equal(grain_ms_factor(shape, cell, size, 0.0, rng), np.ones(shape))
    with pytest.raises(ValueError, match="disorder"):
        grain_ms_factor(shape, cell, size, 1.5, rng)


def test_periodic_grains_wrap_around_the_edges(rng):
    grains = voronoi_grains((64, 64), (1e-9, 1e-9), 40e-9, rng, periodic=True)
    # a grain touching the left edge continues at the right edge somewhere
    assert set(grains[:, 0]) & set(grains[:, -1])


@pytest.mark.parametrize("dmi_sign", [1.0, -1.0])
def test_bubble_walls_point_along_sign_D_times_grad_mz(dmi_sign):
    m = bubble_state(
        (1, 64, 64), (1e-9, 1e-9, 1e-9), np.array([[32e-9, 32e-9]]), 10e-9, 2e-9, dmi_sign=dmi_sign
    )
    mz = m[2, 0]
    gy, gx = np.gradient(mz)
    wall = np.abs(mz) < 0.5
    along = m[0, 0] * gx + m[1, 0] * gy
    assert (np.sign(along[wall]) == dmi_sign).all()
    assert mz[32, 32] < -0.99 and mz[0, 0] > 0.99


@pytest.mark.parametrize("seed", range(4))
def test_stripes_have_the_requested_period(seed):
    """The strongest Fourier component of m_z sits at |q| = 1/period (within the rounding to a
    wave vector commensurate with the periodic box) in a random direction."""
    n, dx, period = 128, 1e-9, 32e-9
    m = stripe_state((1, n, n), (dx, dx, dx), period, 2e-9, np.random.default_rng(seed))
    power = np.abs(np.fft.fft2(m[2, 0])) ** 2
    power[0, 0] = 0
    ky, kx = np.unravel_index(np.argmax(power), power.shape)
    q = np.fft.fftfreq(n, dx)
    assert np.hypot(q[kx], q[ky]) == pytest.approx(1 / period, rel=0.15)


def test_random_state_is_unit_and_seeded():
    a = random_state((2, 8, 8), np.random.default_rng(3))
    b = random_state((2, 8, 8), np.random.default_rng(3))
    assert np.array_equal(a, b) and np.allclose(np.linalg.norm(a, axis=0), 1)
    assert abs(a.mean(axis=(1, 2, 3))).max() < 0.2
