"""Detector model: shot noise statistics, reproducibility, nuisances (physics.md §3)."""

import math

import numpy as np
import pytest
import torch

from ltemfactory.errors import ConfigError
from ltemfactory.ltem.detector import Detector, apply_detector, as_generator, mtf

SHOT_ONLY = dict(normalize="none")


@pytest.mark.parametrize("dose", [3.0, 50.0, 2000.0])
def test_counts_are_poisson(dose):
    n = 256 * 256
    img = torch.ones(1, 256, 256, dtype=torch.float64)
    counts = apply_detector(img, Detector(dose_e_per_px=dose, **SHOT_ONLY), generator=123)
    c = counts.flatten()
    assert torch.equal(c, c.round())  # integer counts
    mean, var = float(c.mean()), float(c.var())
    # 3σ bounds: σ(mean) = sqrt(D/N), σ(s²) = sqrt((μ4 − σ⁴)/N) = sqrt((D + 2D²)/N)
    assert abs(mean - dose) < 3 * math.sqrt(dose / n)
    assert abs(var - dose) < 3 * math.sqrt((dose + 2 * dose**2) / n)


def test_normal_approximation_above_a_rate_keeps_poisson_moments():
    n, dose = 256 * 256, 2000.0
    img = torch.ones(1, 256, 256, dtype=torch.float64)
    img[0, :8] = 0.01  # rate 20: stays exact Poisson
    det = Detector(dose_e_per_px=dose, poisson_normal_above=1000.0, **SHOT_ONLY)
    c = apply_detector(img, det, generator=4)
    assert torch.equal(c, c.round())
    big = c[0, 8:].flatten()
    nb = big.numel()
    assert abs(float(big.mean()) - dose) < 3 * math.sqrt(dose / nb)
    assert abs(float(big.var()) - dose) < 3 * math.sqrt((dose + 2 * dose**2) / nb)
    assert abs(float(c[0, :8].mean()) - 20.0) < 3 * math.sqrt(20.0 / (8 * 256))
    del n


def test_counts_follow_the_intensity():
    img = torch.linspace(0.5, 1.5, 64, dtype=torch.float64)[None, None, :].expand(1, 4096, 64)
    counts = apply_detector(img, Detector(dose_e_per_px=100.0, **SHOT_ONLY), generator=5)
    col_mean = counts[0].mean(dim=0)
    assert torch.allclose(col_mean, 100 * img[0, 0], rtol=0.03)


def test_same_seed_same_images_and_independent_draws_per_image():
    det = Detector(
        dose_e_per_px=80.0,
        dose_rel_spread=0.2,
        read_noise_counts=2.0,
        mtf_nu0_cyc_per_px=0.3,
        hot_pixel_fraction=1e-3,
        dead_pixel_fraction=1e-3,
        gradient_max_rel=0.1,
        gain_rel_spread=0.1,
        offset_counts=10.0,
    )
    img = torch.ones(3, 64, 64)
    a = apply_detector(img, det, generator=42)
    b = apply_detector(img, det, generator=torch.Generator().manual_seed(42))
    c = apply_detector(img, det, generator=43)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])
    r1 = apply_detector(img, det, generator=np.random.default_rng(7))
    r2 = apply_detector(img, det, generator=np.random.default_rng(7))
    assert torch.equal(r1, r2)
    assert a.dtype == torch.float32 and a.shape == img.shape


def test_mean_normalisation_and_zscore():
    img = 1 + 0.1 * torch.rand(4, 32, 32, generator=torch.Generator().manual_seed(0))
    a = apply_detector(img, Detector(dose_e_per_px=500.0, normalize="mean"), generator=1)
    assert torch.allclose(a.mean(dim=(-2, -1)), torch.ones(4), atol=1e-5)
    z = apply_detector(img, Detector(dose_e_per_px=500.0, normalize="zscore"), generator=1)
    assert torch.allclose(z.mean(dim=(-2, -1)), torch.zeros(4), atol=1e-5)
    assert torch.allclose(z.std(dim=(-2, -1)), torch.ones(4), atol=1e-4)


def test_noise_free_chain_with_gain_offset_and_bad_pixels():
    img = torch.ones(2, 100, 100, dtype=torch.float64)
    det = Detector(
        dose_e_per_px=None,
        gain_counts_per_e=2.0,
        offset_counts=5.0,
        hot_pixel_fraction=0.01,
        dead_pixel_fraction=0.01,
        hot_pixel_factor=10.0,
        normalize="none",
    )
    out = apply_detector(img, det, generator=3)
    vals = set(out.flatten().tolist())
    assert vals <= {7.0, 25.0, 5.0}  # normal (1·2+5), hot (10·1·2+5), dead (offset)
    hot = (out == 25.0).sum(dim=(-2, -1)).double()
    dead = (out == 5.0).sum(dim=(-2, -1)).double()
    assert torch.all((hot > 50) & (hot < 150)) and torch.all((dead > 50) & (dead < 150))


def test_mtf_low_pass_reduces_noise_variance_and_keeps_the_mean():
    img = torch.ones(1, 128, 128, dtype=torch.float64)
    det = Detector(dose_e_per_px=100.0, mtf_nu0_cyc_per_px=0.1, normalize="none")
    out = apply_detector(img, det, generator=9)
    assert float(out.mean()) == pytest.approx(100.0, rel=0.01)
    assert float(out.var()) < 0.5 * 100.0
    f = mtf((128, 128), 0.1)
    assert float(f[0, 0]) == 1.0 and float(f.max()) <= 1.0


def test_gradient_and_dose_spread_are_drawn_per_image():
    img = torch.ones(8, 64, 64, dtype=torch.float64)
    det = Detector(dose_e_per_px=None, gradient_max_rel=0.2, dose_rel_spread=0.3, normalize="none")
    out = apply_detector(img, det, generator=11)
    means = out.mean(dim=(-2, -1))
    assert float(means.min()) >= 0.7 - 1e-9 and float(means.max()) <= 1.3 + 1e-9
    assert float(means.std()) > 0.01
    # a linear ramp: opposite corners differ
    assert float((out[:, 0, 0] - out[:, -1, -1]).abs().max()) > 1e-3


def test_validation_and_generators():
    with pytest.raises(ConfigError, match="normalize"):
        Detector(normalize="max")
    with pytest.raises(ConfigError, match="dose_e_per_px"):
        Detector(dose_e_per_px=0)
    with pytest.raises(ConfigError, match="generator"):
        as_generator("seed", "cpu")
    assert as_generator(None, "cpu") is None
    g = torch.Generator().manual_seed(0)
    assert as_generator(g, "cpu") is g
