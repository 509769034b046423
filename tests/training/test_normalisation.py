"""Robust per-image normalisation shared by training and inference."""

import numpy as np
import pytest

from ltemfactory.errors import InputError
from ltemfactory.training.normalisation import (
    MAD_TO_SIGMA,
    NORMALISATION,
    normalise_from_spec,
    normalise_image,
)


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
    out = normalise_image(img, clip=None)
    np.testing.assert_allclose(out, img / img.std(), rtol=1e-6)


def test_clip_and_dtype():
    img = _image(4)
    img[5, 5] = 1e6  # a hot pixel
    out = normalise_image(img)
    assert out.dtype == np.float32 and out.shape == img.shape
    assert out.max() == np.float32(5.0) and out[5, 5] == np.float32(5.0)
    assert np.abs(normalise_image(img, clip=2.0)).max() <= 2.0


def test_batched_equals_per_image():
    stack = np.stack([_image(s) * (s + 1) for s in range(5)]).reshape(5, 1, 48, 40)
    batched = normalise_image(stack)
    for i in range(5):
        np.testing.assert_array_equal(batched[i, 0], normalise_image(stack[i, 0]))


def test_spec_round_trip_and_errors():
    img = _image(5)
    np.testing.assert_array_equal(normalise_from_spec(img, NORMALISATION), normalise_image(img))
    np.testing.assert_array_equal(
        normalise_from_spec(img, {"method": "robust_zscore", "clip": 2.0}),
        normalise_image(img, clip=2.0),
    )
    with pytest.raises(InputError, match="method"):
        normalise_from_spec(img, {"method": "minmax"})
    with pytest.raises(InputError, match="scale"):
        normalise_from_spec(img, {"method": "robust_zscore", "scale": 2})
    with pytest.raises(InputError, match="NaN"):
        normalise_image(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(InputError, match="row, col"):
        normalise_image(np.ones(5))
