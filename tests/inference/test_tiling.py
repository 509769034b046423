"""Tiled prediction: exact for constants, equal to a whole-image call for local filters."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import center_of_mass, gaussian_filter, uniform_filter

from ltemfactory.errors import InputError
from ltemfactory.inference.tiling import (
    blend_ramp,
    predict_tiled,
    resample_image,
    resize_labels,
    tile_starts,
)

SHAPES = [(37, 250), (512, 512), (1000, 333), (64, 64), (5, 3)]


def gaussian_fn(batch: np.ndarray) -> dict[str, np.ndarray]:
    """A translation-equivariant 'network': two local linear filters of each tile."""
    x = batch[:, 0].astype(np.float64)
    return {
        "smooth": gaussian_filter(x, sigma=(0, 2, 2), mode="reflect", truncate=4.0),
        "box": uniform_filter(x, size=(1, 5, 5), mode="reflect"),
    }


class Recorder:
    def __init__(self, fn):
        self.fn, self.shapes = fn, []

    def __call__(self, batch):
        assert batch.dtype == np.float32 and batch.ndim == 4 and batch.shape[1] == 1
        self.shapes.append(batch.shape)
        return self.fn(batch)


def test_ramp_is_a_smooth_partition_of_unity():
    ramp = blend_ramp(32)
    assert np.all(ramp > 0) and np.all(ramp <= 1) and np.all(np.diff(ramp) >= 0)
    np.testing.assert_allclose(ramp + ramp[::-1], 1.0, atol=1e-15)
    assert ramp[0] < 1e-20  # edge pixels carry (almost) no weight


@pytest.mark.parametrize("shape", SHAPES)
def test_constant_predictor_gives_exactly_the_constant(shape):
    c = np.float32(0.7312)
    rec = Recorder(
        lambda b: {
            "p": np.full((b.shape[0], *b.shape[2:]), c, np.float32),
            "q": np.full((b.shape[0], 1, *b.shape[2:]), -3.0, np.float32),
        }
    )
    image = np.random.default_rng(0).normal(size=shape)
    out = predict_tiled(image, rec, tile_px=128, overlap_px=24, multiple=8, batch_size=3)
    assert out["p"].shape == shape and out["p"].dtype == np.float32
    assert np.all(out["p"] == c) and np.all(out["q"] == -3.0)
    for n, _, h, w in rec.shapes:
        assert n <= 3 and h % 8 == 0 and w % 8 == 0


@pytest.mark.parametrize("shape", SHAPES[:4])
def test_local_linear_filter_matches_a_whole_image_call(shape):
    rng = np.random.default_rng(1)
    image = gaussian_filter(rng.normal(size=shape), 1.0) * 10 + 5
    rec = Recorder(gaussian_fn)
    tiled = predict_tiled(image, rec, tile_px=128, overlap_px=32, batch_size=4)
    whole = gaussian_fn(image[None, None].astype(np.float32))
    m = 9  # 4σ + 1: beyond it the whole-image reference does not see the image border
    for name in ("smooth", "box"):
        ref = whole[name][0]
        diff = np.abs(tiled[name] - ref)[m:-m, m:-m]
        assert diff.size == 0 or diff.max() < 1e-3 * ref.std()
    if min(shape) >= 128:
        assert len(rec.shapes) > 1  # really tiled


def test_tile_larger_than_image_is_one_padded_call():
    rec = Recorder(gaussian_fn)
    image = np.random.default_rng(2).normal(size=(37, 50))
    out = predict_tiled(image, rec, tile_px=256, overlap_px=32, multiple=16)
    assert rec.shapes == [(1, 1, 48, 64)]
    assert out["smooth"].shape == (37, 50)
    ref = gaussian_fn(image[None, None].astype(np.float32))["smooth"][0]
    # away from the padded (bottom/right) edges the padding is invisible
    np.testing.assert_allclose(out["smooth"][:28, :41], ref[:28, :41], atol=1e-5)


def test_tiles_cover_with_at_least_the_overlap():
    for length in (128, 129, 300, 1000, 1001):
        starts = tile_starts(length, 128, 32)
        assert starts[0] == 0 and starts[-1] == length - 128
        assert np.all(np.diff(starts) <= 96)


def test_translation_equivariance_of_the_tiled_result():
    """Shifting the image by a whole number of pixels shifts the interior maps."""
    rng = np.random.default_rng(5)
    big = gaussian_filter(rng.normal(size=(300, 300)), 2.0)
    a = predict_tiled(big[:256, :256], gaussian_fn, tile_px=96, overlap_px=24)["smooth"]
    b = predict_tiled(big[13:269, 7:263], gaussian_fn, tile_px=96, overlap_px=24)["smooth"]
    np.testing.assert_allclose(
        a[13 + 10 : -10, 7 + 10 : -10], b[10 : -13 - 10, 10 : -7 - 10], atol=1e-3 * big.std()
    )


def test_bad_arguments_and_outputs():
    img = np.zeros((64, 64))
    ok = gaussian_fn
    with pytest.raises(InputError, match="tile_px: expected a multiple of 8"):
        predict_tiled(img, ok, tile_px=100)
    with pytest.raises(InputError, match="overlap_px"):
        predict_tiled(img, ok, tile_px=64, overlap_px=40)
    with pytest.raises(InputError, match="image"):
        predict_tiled(np.zeros((2, 8, 8)), ok)
    with pytest.raises(InputError, match="NaN"):
        predict_tiled(np.full((16, 16), np.nan), ok)
    with pytest.raises(InputError, match="shape"):
        predict_tiled(img, lambda b: {"x": np.zeros((1, 8, 8))}, tile_px=64)
    with pytest.raises(InputError, match="dict"):
        predict_tiled(img, lambda b: np.zeros((1, 64, 64)), tile_px=64)  # type: ignore[arg-type]
    calls = iter([{"a": np.zeros((1, 64, 64))}, {"b": np.zeros((1, 64, 64))}])
    with pytest.raises(InputError, match="names changed"):
        predict_tiled(
            np.zeros((64, 120)), lambda b: next(calls), tile_px=64, overlap_px=8, batch_size=1
        )


def test_resample_round_trip_keeps_geometry():
    rr, cc = np.mgrid[0:200, 0:300]
    disk = ((rr - 80.0) ** 2 + (cc - 170.0) ** 2 < 20.0**2).astype(np.int32)
    up = resample_image(disk.astype(float), 1.5)
    assert up.shape == (300, 450)
    area = (up > 0.5).sum()
    assert area == pytest.approx(np.pi * 30.0**2, rel=0.02)
    back = resize_labels((up > 0.5).astype(np.int32) * 7, disk.shape)
    assert set(np.unique(back)) == {0, 7}
    # pixel-centre convention: the centroid maps back within a fraction of a pixel
    np.testing.assert_allclose(center_of_mass(back > 0), (80.0, 170.0), atol=0.3)
    with pytest.raises(InputError):
        resample_image(disk, 0.0)
    with pytest.raises(InputError):
        resize_labels(disk.astype(float), (10, 10))
