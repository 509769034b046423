"""Physics-respecting augmentation: geometry alignment, exact crops, noise, band-pass, config."""

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from skimage.measure import label as cc_label

from ltemfactory.errors import InputError
from ltemfactory.training.augment import (
    AugmentConfig,
    augment_sample,
    bandpass,
    illumination_ramp,
    renoise,
)

NO_INTENSITY = {
    "blur_probability": 0.0,
    "gradient_probability": 0.0,
    "gamma_probability": 0.0,
    "dose_probability": 0.0,
    "bandpass_probability": 0.0,
}
ALL_ON = {k: 1.0 for k in NO_INTENSITY}


def rng(seed):
    return np.random.default_rng(seed)


def geometry_only(**kw):
    return AugmentConfig(**{**NO_INTENSITY, **kw})


def disks(shape, centres, radius):
    """Label image with disks 1..K (touching ones allowed: later ids win)."""
    r, c = np.indices(shape)
    lab = np.zeros(shape, dtype=np.int32)
    for k, (y, x) in enumerate(centres, start=1):
        lab[(r - y) ** 2 + (c - x) ** 2 <= radius**2] = k
    return lab


def random_disks(seed, shape=(96, 96), n=14, radius=6.5):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, shape[0], size=(n, 2))
    return disks(shape, centres, radius)


def is_clean_partition(lab):
    """ids 1..K, each one 4-connected region."""
    ids = np.unique(lab[lab > 0])
    if ids.size and not np.array_equal(ids, np.arange(1, ids.size + 1)):
        return False
    return cc_label(lab, background=0, connectivity=1).max() == ids.size


# ------------------------------------------------------------------------------------ geometry
def _find_crop(src, out):
    n = out.shape[0]
    hits = [
        (r, c)
        for r in range(src.shape[0] - n + 1)
        for c in range(src.shape[1] - n + 1)
        if np.array_equal(src[r : r + n, c : c + n], out)
    ]
    return hits


@pytest.mark.parametrize(
    "cfg",
    [
        AugmentConfig.none(24),
        geometry_only(crop_px=24, rotate=False, flip=False, rescale_range=(1.0, 1.0)),
    ],
)
def test_no_rotation_unit_scale_is_an_exact_crop(cfg):
    rng = np.random.default_rng(0)
    image = rng.random((40, 37)).astype(np.float32)
    labels = random_disks(1, (40, 37), n=6, radius=5)
    seen = set()
    for seed in range(12):
        img, lab = augment_sample(image, labels, cfg, np.random.default_rng(seed))
        (hit,) = _find_crop(image, img)  # bit-identical pixels, at one position
        seen.add(hit)
        r, c = hit
        crop = labels[r : r + 24, c : c + 24]
        # same partition (ids are relabelled to 1..K in raster order)
        pairs = {(int(a), int(b)) for a, b in zip(crop.ravel(), lab.ravel(), strict=True)}
        assert len({a for a, _ in pairs}) == len(pairs) == len({b for _, b in pairs})
        assert np.array_equal(crop == 0, lab == 0)
    assert len(seen) > 6  # the position is random


def test_dihedral_without_rotation_is_exact():
    image = np.random.default_rng(2).random((30, 30)).astype(np.float32)
    cfg = geometry_only(crop_px=30, rotate=False, flip=True, rescale_range=(1.0, 1.0))
    variants = [np.rot90(m, k) for m in (image, image[:, ::-1]) for k in range(4)]
    found = set()
    for seed in range(40):
        img, _ = augment_sample(
            image, np.zeros((30, 30), np.int32), cfg, np.random.default_rng(seed)
        )
        (k,) = [i for i, v in enumerate(variants) if np.array_equal(v, img)]
        found.add(k)
    assert found == set(range(8))


def grid_disks(seed, shape=(96, 96), spacing=24.0, radius=5.5):
    """Separated disks (gaps >= 7 px) on a jittered grid."""
    rng = np.random.default_rng(seed)
    g = np.arange(spacing / 2, shape[0], spacing)
    centres = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2) + rng.uniform(-3, 3, (g.size**2, 2))
    return disks(shape, centres, radius)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), lab_seed=st.integers(0, 50))
def test_geometry_keeps_image_and_labels_aligned(seed, lab_seed):
    labels = grid_disks(lab_seed)
    image = (labels > 0).astype(np.float32)
    cfg = geometry_only(crop_px=40)
    img, lab = augment_sample(image, labels, cfg, np.random.default_rng(seed))
    assert img.shape == lab.shape == (40, 40)
    assert img.dtype == np.float32 and lab.dtype == np.int32
    assert is_clean_partition(lab)
    fg = lab > 0
    mismatch = (img > 0.5) != fg
    band = np.ones((3, 3), bool)
    near_edge = ndimage.binary_dilation(fg, band, 2) & ndimage.binary_dilation(~fg, band, 2)
    crop_border = np.ones_like(fg)
    crop_border[2:-2, 2:-2] = False
    # away from label edges the image agrees; near the crop border, slivers of a disk that grazes
    # it can come out as tiny dropped fragments of nearest-neighbour resampling
    assert not (mismatch & ~near_edge & ~crop_border).any()
    assert mismatch.mean() < 0.03
    for err in centroid_errors(img, lab):
        assert np.hypot(*err) < 0.75  # nearest-neighbour quantisation: up to ~0.5 px


def centroid_errors(img, lab):
    """Image-blob centroid minus label centroid [px] of each instance off the crop border."""
    r, c = np.indices(lab.shape)
    out = []
    for k in range(1, lab.max() + 1):
        mine = lab == k
        if mine[:2].any() or mine[-2:].any() or mine[:, :2].any() or mine[:, -2:].any():
            continue
        w = img * ndimage.binary_dilation(mine, np.ones((3, 3), bool), 2)
        blob = np.array([(w * r).sum(), (w * c).sum()]) / w.sum()
        out.append(blob - [r[mine].mean(), c[mine].mean()])
    return out


def test_geometry_has_no_subpixel_bias_between_image_and_labels():
    errs = []
    for seed in range(120):
        labels = grid_disks(seed)
        img, lab = augment_sample(
            (labels > 0).astype(np.float32), labels, geometry_only(crop_px=40), rng(seed)
        )
        errs += centroid_errors(img, lab)
    errs = np.array(errs)
    assert len(errs) > 100  # whole instances inside the crops
    assert np.abs(errs.mean(axis=0)).max() < 0.05  # a half-pixel offset would show as 0.5
    assert errs.std(axis=0).max() < 0.15


@settings(max_examples=20, deadline=None)
@given(s=st.floats(1 / 1.3, 1.3), seed=st.integers(0, 2**32 - 1))
def test_isolated_disk_count_kept_and_area_scales_as_inverse_square(s, seed):
    n, radius = 32, 8.0
    size = math.ceil(s * (n - 1) * math.sqrt(2)) + 3  # the window stays near the centre
    labels = disks((size, size), [((size - 1) / 2, (size - 1) / 2)], radius)
    cfg = geometry_only(crop_px=n, rescale_range=(s, s))
    _, lab = augment_sample(labels.astype(np.float32), labels * 7, cfg, np.random.default_rng(seed))
    assert lab.max() == 1  # one instance, not cut, not split
    area = np.count_nonzero(lab)
    expected = np.count_nonzero(labels) / s**2
    assert area == pytest.approx(expected, rel=0.08)


def test_scale_lowered_where_it_does_not_fit_and_impossible_crop_raises():
    labels = disks((64, 64), [(31.5, 31.5)], 10.0)
    # at 45° a 1.3 scale of a 40-px crop needs 1.3·39·√2 = 72 > 63 px: it is lowered, never padded
    cfg = geometry_only(crop_px=40, rescale_range=(1.3, 1.3))
    for seed in range(10):
        img, lab = augment_sample(
            labels.astype(np.float32), labels, cfg, np.random.default_rng(seed)
        )
        assert img.shape == (40, 40)
    with pytest.raises(InputError, match="too small for crop_px=40"):
        augment_sample(np.ones((30, 30)), np.zeros((30, 30), int), AugmentConfig(crop_px=40), None)
    small = AugmentConfig(crop_px=40, rescale_range=(1.2, 1.3))  # 1.2·39 > 45
    with pytest.raises(InputError, match="crop_px"):
        augment_sample(np.ones((46, 46)), np.zeros((46, 46), int), small, None)


def test_downscaling_prefilters_against_aliasing():
    # a checkerboard at the Nyquist frequency must average out, not alias into a pattern
    r, c = np.indices((120, 120))
    board = (1.0 + 0.5 * (-1.0) ** (r + c)).astype(np.float32)
    cfg = geometry_only(crop_px=40, rotate=False, flip=False, rescale_range=(1.3, 1.3))
    img, _ = augment_sample(board, np.zeros(board.shape, np.int32), cfg, np.random.default_rng(0))
    assert img.mean() == pytest.approx(1.0, abs=0.02)
    assert img.std() < 0.2  # 0.5 without the pre-blur (sampling aliased checkerboard)


# ------------------------------------------------------------------------------------ seeding
def test_same_seed_identical_different_seed_differs():
    labels = random_disks(3)
    image = (1.0 + 0.4 * (labels > 0)).astype(np.float32)
    cfg = AugmentConfig(crop_px=48, **ALL_ON)
    a = augment_sample(image, labels, cfg, np.random.default_rng(11))
    b = augment_sample(image, labels, cfg, np.random.default_rng(11))
    c = augment_sample(image, labels, cfg, np.random.default_rng(12))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


# ------------------------------------------------------------------------------------ intensity
def _intensity_only(**on):
    return AugmentConfig(
        crop_px=64, rotate=False, flip=False, rescale_range=(1.0, 1.0), **{**NO_INTENSITY, **on}
    )


def test_gradient_and_gamma_keep_the_mean():
    labels = random_disks(4, (64, 64))
    image = 1.0 + 0.5 * (labels > 0) + 0.1 * np.random.default_rng(0).random((64, 64))
    zeros = np.zeros((64, 64), np.int32)
    for on in ({"gradient_probability": 1.0}, {"gamma_probability": 1.0}):
        cfg = _intensity_only(**on, gradient_max_rel=0.3, gamma_range=(0.5, 2.0))
        for seed in range(5):
            img, _ = augment_sample(
                image.astype(np.float32), zeros, cfg, np.random.default_rng(seed)
            )
            assert img.min() >= 0
            assert img.mean() == pytest.approx(image.mean(), rel=0.02)
            assert not np.allclose(img, image)
            # never a contrast inversion: the skyrmions stay brighter than the background
            assert img[labels > 0].mean() > img[labels == 0].mean()


def test_illumination_ramp_is_linear_with_given_amplitude():
    ramp = illumination_ramp((50, 50), 0.2, math.pi / 2)  # along columns
    assert ramp.mean() == pytest.approx(1.0, abs=1e-12)
    assert ramp.min() == pytest.approx(0.8) and ramp.max() == pytest.approx(1.2)
    np.testing.assert_allclose(np.diff(ramp, axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.diff(ramp, 2, axis=1), 0.0, atol=1e-12)


@pytest.mark.parametrize("dose", [5.0, 50.0])
def test_poisson_renoise_variance_is_mean_over_dose(dose):
    rng = np.random.default_rng(5)
    image = np.full((256, 256), 2.0)
    out = renoise(image, dose, rng)
    assert out.mean() == pytest.approx(2.0, rel=0.01)
    assert out.var() == pytest.approx(2.0 / dose, rel=0.03)
    # counts are integers at that dose
    np.testing.assert_allclose(out * dose, np.round(out * dose), atol=1e-9)
    with_read = renoise(image, dose, rng, read_noise_counts=3.0)
    assert with_read.var() == pytest.approx(2.0 / dose + 9.0 / dose**2, rel=0.03)


def test_bandpass_removes_constant_and_ramp_keeps_the_band():
    r, c = np.indices((64, 80)).astype(float)
    assert np.abs(bandpass(np.full((64, 80), 5.0), 2.0, 40.0)).max() < 1e-9
    ramp = 3.0 + 0.05 * r - 0.02 * c
    assert np.abs(bandpass(ramp, 2.0, 40.0)).max() < 1e-3 * np.ptp(ramp)
    inside = (slice(10, -10), slice(10, -10))

    def gain(period, small, large):
        wave = np.sin(2 * np.pi * c / period)
        return bandpass(wave, small, large)[inside].std() / wave[inside].std()

    assert gain(12.0, 1.0, 40.0) > 0.9  # inside the band
    assert gain(3.0, 6.0, 40.0) < 0.05  # smaller than small_px
    assert gain(64.0, 1.0, 8.0) < 0.1  # larger than large_px


def test_all_intensity_augmentations_keep_positive_contrast():
    labels = random_disks(6, (64, 64))
    image = (1.0 + 0.5 * (labels > 0)).astype(np.float32)
    cfg = _intensity_only(**ALL_ON, dose_e_per_px_range=(200.0, 1000.0))
    for seed in range(10):
        img, lab = augment_sample(image, labels, cfg, np.random.default_rng(seed))
        assert np.corrcoef(img.ravel(), image.ravel())[0, 1] > 0.5
        assert np.array_equal(lab > 0, labels > 0)  # intensity never touches the labels


# ------------------------------------------------------------------------------------ config
def test_config_from_dict_and_errors():
    cfg = AugmentConfig.from_dict({"crop_px": 32, "rescale_range": [0.9, 1.1]})
    assert cfg.crop_px == 32 and cfg.rescale_range == (0.9, 1.1)
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
    assert AugmentConfig.from_dict(None) == AugmentConfig()
    assert not AugmentConfig.none(16).enabled
    with pytest.raises(InputError, match="train.augment.rotation"):
        AugmentConfig.from_dict({"rotation": True})
    with pytest.raises(InputError, match="rescale_range"):
        AugmentConfig.from_dict({"rescale_range": [1.3, 0.7]})
    with pytest.raises(InputError, match="dose_probability"):
        AugmentConfig(dose_probability=1.5)
    with pytest.raises(InputError, match="crop_px"):
        AugmentConfig(crop_px=1)
    with pytest.raises(InputError, match="bandpass"):
        AugmentConfig(bandpass_small_px_range=(1.0, 30.0), bandpass_large_px_range=(20.0, 40.0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.crop_px = 3
