"""Robust per-image normalisation shared by training and inference."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from ltemfactory.errors import InputError
from ltemfactory.training.normalisation import (
    MAD_TO_SIGMA,
    NORMALISATION,
    normalise_from_spec,
    normalise_image,
    remove_outliers,
    remove_plane,
)

PLAIN = {"outlier_sigma": None, "detrend": None}
"""The z-score alone (the normalisation of models trained before outlier and plane removal)."""


def _image(seed=0, shape=(48, 40)):
    rng = np.random.default_rng(seed)
    return rng.gamma(4.0, 0.25, size=shape).astype(np.float32)  # positive counts, mean ~1


@pytest.mark.parametrize(("a", "b"), [(1e-3, 0.0), (3.7, -2.0), (250.0, 1e4)])
def test_invariant_under_affine_intensity(a, b):
    img = _image(1).astype(np.float64)
    np.testing.assert_allclose(normalise_image(a * img + b), normalise_image(img), atol=2e-5)


def test_zero_median_unit_mad_and_gaussian_unit_std():
    img = _image(2)
    out = normalise_image(img, clip=None).astype(np.float64)
    assert abs(np.median(out)) < 1e-6
    assert MAD_TO_SIGMA * np.median(np.abs(out)) == pytest.approx(1.0, abs=1e-6)
    # for Gaussian noise 1.4826·MAD estimates sigma: the z-score has unit std
    g = np.random.default_rng(3).normal(7.0, 0.3, size=(256, 256))
    assert normalise_image(g, clip=None).std() == pytest.approx(1.0, abs=0.02)


def test_constant_image_gives_zeros_and_mad_zero_falls_back_to_std():
    assert not normalise_image(np.full((8, 9), 3.5)).any()
    img = np.zeros((10, 10))
    img[0, :3] = 10.0  # MAD is 0 (97 % of the pixels equal the median)
    out = normalise_image(img, clip=None, **PLAIN)
    np.testing.assert_allclose(out, img / img.std(), rtol=1e-6)


def test_clip_and_dtype():
    img = _image(4)
    img[5, 5] = 1e6  # a hot pixel, kept when outliers are not removed
    out = normalise_image(img, **PLAIN)
    assert out.dtype == np.float32 and out.shape == img.shape
    assert out.max() == np.float32(5.0) and out[5, 5] == np.float32(5.0)
    assert np.abs(normalise_image(img, clip=2.0)).max() <= 2.0
    assert normalise_image(img)[5, 5] < 5.0  # removed by default


def test_batched_equals_per_image():
    stack = np.stack([_image(s) * (s + 1) for s in range(5)]).reshape(5, 1, 48, 40)
    batched = normalise_image(stack)
    for i in range(5):
        np.testing.assert_array_equal(batched[i, 0], normalise_image(stack[i, 0]))


def test_spec_round_trip_and_errors():
    img = _image(5)
    np.testing.assert_array_equal(normalise_from_spec(img, NORMALISATION), normalise_image(img))
    np.testing.assert_array_equal(  # an older model's spec: the z-score alone
        normalise_from_spec(img, {"method": "robust_zscore", "clip": 2.0}),
        normalise_image(img, clip=2.0, **PLAIN),
    )
    np.testing.assert_array_equal(
        normalise_from_spec(img, NORMALISATION, lowpass_sigma_px=1.5),
        normalise_image(img, lowpass_sigma_px=1.5),
    )
    with pytest.raises(InputError, match="detrend"):
        normalise_from_spec(img, {**NORMALISATION, "detrend": "quadratic"})
    with pytest.raises(InputError, match="method"):
        normalise_from_spec(img, {"method": "minmax"})
    with pytest.raises(InputError, match="scale"):
        normalise_from_spec(img, {"method": "robust_zscore", "scale": 2})
    with pytest.raises(InputError, match="NaN"):
        normalise_image(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(InputError, match="row, col"):
        normalise_image(np.ones(5))


def _lobe_lattice(shape=(96, 96), period=24.0, sigma=3.0, amp=0.05):
    """Smooth bright/dark lobe pairs on a square grid [1], mean ~1 (row, col)."""
    r, c = np.mgrid[: shape[0], : shape[1]].astype(float)
    img = np.ones(shape)
    for r0 in np.arange(period / 2, shape[0], period):
        for c0 in np.arange(period / 2, shape[1], period):
            for dc, sign in ((-sigma, 1.0), (sigma, -1.0)):
                img += sign * amp * np.exp(-((r - r0) ** 2 + (c - c0 - dc) ** 2) / (2 * sigma**2))
    return img


def test_plane_is_removed_exactly_and_adding_one_changes_nothing():
    r, c = np.mgrid[:40, :50].astype(float)
    plane = 2.0 + 0.03 * r - 0.05 * c
    assert np.abs(remove_plane(plane)).max() < 1e-12
    img = _image(6, (40, 50)).astype(np.float64)
    resid = remove_plane(img)
    # the residual is orthogonal to 1, row and col: its own plane fit is zero
    for basis in (np.ones_like(r), r - r.mean(), c - c.mean()):
        assert abs((resid * basis).sum()) < 1e-9 * np.abs(img).sum() * 50
    np.testing.assert_allclose(normalise_image(img + plane), normalise_image(img), atol=1e-5)
    # a gradient larger than the lobe contrast: the plain z-score scales to the ramp
    ramp = _lobe_lattice() + 0.004 * np.mgrid[:96, :96][1]
    assert np.abs(normalise_image(ramp, detrend=None) - normalise_image(_lobe_lattice())).max() > 1
    np.testing.assert_allclose(normalise_image(ramp), normalise_image(_lobe_lattice()), atol=0.05)


def test_outliers_replaced_by_their_median_and_smooth_contrast_kept():
    rng = np.random.default_rng(7)
    clean = _lobe_lattice()
    img = rng.poisson(clean * 1000.0) / 1000.0  # 1,000 e/px shot noise
    hot, dead = (10, 17), (50, 61)
    img[hot], img[dead] = 12.0, 0.0
    out = remove_outliers(img)
    changed = np.argwhere(out != img)
    assert {tuple(p) for p in changed} == {hot, dead}
    for p in (hot, dead):
        window = img[p[0] - 1 : p[0] + 2, p[1] - 1 : p[1] + 2]
        assert out[p] == np.median(window)
    np.testing.assert_array_equal(remove_outliers(clean), clean)  # smooth: nothing flagged
    smooth = gaussian_filter(rng.poisson(clean * 1000.0) / 1000.0, 3.0)  # low-passed: kept
    np.testing.assert_array_equal(remove_outliers(smooth), smooth)
    other = rng.poisson(clean * 50.0) / 50.0  # a noisier image beside it: thresholds per image
    np.testing.assert_array_equal(remove_outliers(np.stack([img, other]))[0], out)
    with pytest.raises(InputError, match="outlier_sigma"):
        remove_outliers(img, 0.0)


def test_lowpass_sits_between_detrending_and_the_zscore():
    img = _image(8, (64, 64)).astype(np.float64)
    img[3, 4] = 50.0
    want = normalise_image(
        gaussian_filter(remove_plane(remove_outliers(img)), 2.0, mode="reflect"), **PLAIN
    )
    np.testing.assert_allclose(normalise_image(img, lowpass_sigma_px=2.0), want, atol=1e-5)
    with pytest.raises(InputError, match="lowpass_sigma_px"):
        normalise_image(img, lowpass_sigma_px=-1.0)
