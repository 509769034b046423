"""HSV colour wheel."""

import math

import torch

from ltemfactory.ltem.colorwheel import colorwheel_legend, hsv_to_rgb, vector_to_rgb


def test_primary_directions():
    ang = torch.tensor([0.0, 120.0, 240.0, 180.0, 90.0]) * math.pi / 180
    rgb = vector_to_rgb(torch.cos(ang), torch.sin(ang))
    expected = torch.tensor(
        [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 1], [0.5, 1, 0]], dtype=torch.float32
    )
    assert torch.allclose(rgb, expected, atol=1e-6)


def test_magnitude_maps_to_value_or_saturation():
    vx = torch.tensor([0.0, 0.5, 1.0])
    vy = torch.zeros(3)
    black = vector_to_rgb(vx, vy, max_norm=1.0)
    assert torch.allclose(black[0], torch.zeros(3)) and torch.allclose(
        black[1], torch.tensor([0.5, 0.0, 0.0])
    )
    white = vector_to_rgb(vx, vy, max_norm=1.0, background="white")
    assert torch.allclose(white[0], torch.ones(3)) and torch.allclose(
        white[1], torch.tensor([1.0, 0.5, 0.5])
    )


def test_hsv_matches_colorsys():
    import colorsys

    h = torch.linspace(0, 0.999, 37)
    s = torch.rand(37, generator=torch.Generator().manual_seed(0))
    v = torch.rand(37, generator=torch.Generator().manual_seed(1))
    ours = hsv_to_rgb(h, s, v)
    ref = torch.tensor(
        [colorsys.hsv_to_rgb(*x) for x in zip(h.tolist(), s.tolist(), v.tolist(), strict=True)]
    )
    assert torch.allclose(ours, ref.float(), atol=1e-5)


def test_legend():
    leg = colorwheel_legend(65)
    assert leg.shape == (65, 65, 3)
    assert torch.allclose(leg[32, 32], torch.zeros(3))  # centre: zero vector → black
    assert torch.allclose(leg[0, 0], torch.zeros(3))  # outside the disc
    assert torch.allclose(leg[32, 64], torch.tensor([1.0, 0.0, 0.0]))  # +x → red
    # +y (higher row index) has hue 90°
    assert torch.allclose(leg[64, 32], torch.tensor([0.5, 1.0, 0.0]), atol=1e-6)
    white = colorwheel_legend(33, background="white")
    assert torch.allclose(white[0, 0], torch.ones(3))
