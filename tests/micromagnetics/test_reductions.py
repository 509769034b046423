"""Cell sums are exact to rounding and do not depend on the CPU thread count."""

import contextlib

import numpy as np
import pytest
import torch

from ltemfactory.micromagnetics.initial import bubble_state, hexagonal_centres
from ltemfactory.micromagnetics.minimize import minimize
from ltemfactory.micromagnetics.reductions import cell_sum

from .conftest import make_film
from .test_minimize import SKYRMION


@contextlib.contextmanager
def torch_threads(n):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def test_cell_sum_is_the_sum_over_the_trailing_dimensions():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 1, 40, 56, dtype=torch.float64, generator=gen)
    assert torch.allclose(cell_sum(x, 4), x.sum(dim=(1, 2, 3, 4)), rtol=1e-13, atol=0)
    assert torch.allclose(cell_sum(x, 2), x.sum(dim=(-2, -1)), rtol=1e-13, atol=0)
    assert cell_sum(x, 2).shape == (2, 3, 1)
    with pytest.raises(ValueError, match="ndim"):
        cell_sum(x, 1)


def test_a_single_member_sums_to_the_same_bits_with_one_and_two_threads():
    # one member of 3 x 128 x 128 cells: torch splits a plain sum of it between threads
    x = torch.randn(1, 3, 1, 128, 128, generator=torch.Generator().manual_seed(1))
    sums = []
    for n in (1, 2):
        with torch_threads(n):
            sums.append(cell_sum(x, 4))
    assert torch.equal(sums[0], sums[1])


def test_a_float32_relaxation_does_not_depend_on_the_thread_count():
    """The Barzilai–Borwein steps come from cell sums; a last-bit difference in them changes the
    whole path (a demo batch took 296 vs 301 iterations with 1 vs 2 threads before)."""
    n, dx = 128, 1e-9
    centres = hexagonal_centres((n * dx, n * dx), 32e-9, np.random.default_rng(3))
    m0 = torch.tensor(bubble_state((1, n, n), (dx, dx, 2e-9), centres, 8e-9, 3e-9))[None]
    film = make_film((1, n, n), **SKYRMION, cell=(dx, dx, 2e-9)).to(dtype=torch.float32)
    runs = []
    for threads in (1, 2):
        with torch_threads(threads):
            runs.append(minimize(film, m0.float(), tolerance=1e-3, max_iterations=150))
    assert torch.equal(runs[0].m, runs[1].m)
    assert torch.equal(runs[0].iterations, runs[1].iterations)
