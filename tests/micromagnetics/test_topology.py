"""Topological charge and periodic domain labelling."""

import math

import numpy as np
import pytest
import torch

from ltemfactory.micromagnetics.initial import bubble_state, stripe_state, uniform_state
from ltemfactory.micromagnetics.topology import (
    label_periodic,
    reversed_domains,
    topological_charge,
)


def test_uniform_and_stripe_states_have_zero_charge(rng):
    assert topological_charge(torch.tensor(uniform_state((1, 16, 16))[:, 0])).item() == 0.0
    m = stripe_state((1, 64, 64), (2e-9, 2e-9, 2e-9), 30e-9, 3e-9, rng)
    assert topological_charge(torch.tensor(m[:, 0])).item() == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("radius_nm", [3.0, 6.0, 15.0])
def test_bubble_charge_is_an_integer_even_when_small(radius_nm):
    """Berg–Lüscher counts a small, coarsely sampled skyrmion exactly; core down → Q = −1."""
    m = bubble_state(
        (1, 32, 32), (2e-9, 2e-9, 2e-9), np.array([[30e-9, 34e-9]]), radius_nm * 1e-9, 2e-9
    )
    assert topological_charge(torch.tensor(m[:, 0])).item() == pytest.approx(-1.0, abs=1e-9)


def test_charge_reverses_with_the_magnetisation():
    m = bubble_state((1, 32, 32), (2e-9, 2e-9, 2e-9), np.array([[32e-9, 32e-9]]), 8e-9, 2e-9)
    q = topological_charge(torch.tensor(m[:, 0])).item()
    assert topological_charge(torch.tensor(-m[:, 0])).item() == pytest.approx(-q, abs=1e-12)


def test_continuum_integral_agrees_for_a_well_resolved_skyrmion():
    m = torch.tensor(
        bubble_state((1, 128, 128), (0.5e-9, 0.5e-9, 1e-9), np.array([[32e-9, 32e-9]]), 8e-9, 3e-9)[
            :, 0
        ]
    )
    dmx = (torch.roll(m, -1, -1) - torch.roll(m, 1, -1)) / 2
    dmy = (torch.roll(m, -1, -2) - torch.roll(m, 1, -2)) / 2
    q = (m * torch.linalg.cross(dmx, dmy, dim=0)).sum() / (4 * math.pi)
    assert q.item() == pytest.approx(-1.0, abs=0.02)


def test_regions_join_across_periodic_edges():
    mask = np.zeros((8, 8), bool)
    mask[3:5, 0:2] = True
    mask[3:5, 6:8] = True  # the same domain, wrapped around the x edge
    mask[0, 4] = mask[7, 4] = True  # and one wrapped around the y edge
    labels, n = label_periodic(mask, periodic=True)
    assert n == 2 and labels[3, 0] == labels[3, 7] and labels[0, 4] == labels[7, 4]
    labels, n = label_periodic(mask, periodic=False)
    assert n == 4


def test_reversed_domains_count_bubbles_and_areas():
    m = bubble_state(
        (1, 64, 64), (1e-9, 1e-9, 1e-9), np.array([[10e-9, 10e-9], [40e-9, 45e-9]]), 6e-9, 1e-9
    )
    _, n, areas = reversed_domains(m[2, 0])
    assert n == 2
    assert np.allclose(areas, math.pi * 36, rtol=0.1)
