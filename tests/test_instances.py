"""Instance targets and post-processing (ltemfactory.instances): encode, decode, baseline.

Synthetic label images: disks (some elliptical) on a rotated hexagonal lattice, radius up to
0.62 of the lattice constant so that neighbours overlap and the overlap is split between them
(they share borders), lattice running past the image border (instances cut by it), random ids.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage
from skimage.measure import label as cc_label

from ltemfactory.errors import InputError
from ltemfactory.instances import (
    decode_binary_baseline,
    decode_instances,
    drop_undersized_instances,
    encode_targets,
    relabel_raster,
)


# ---------------------------------------------------------------------------- helpers
def lattice_labels(
    rng,
    shape=(96, 112),
    a=14.0,
    radius_frac=(0.5, 0.62),
    elliptical=0.3,
    vacancies=0.05,
    min_piece=12,
):
    """Label image of disks/ellipses on a hexagonal lattice (constant ``a`` px).

    Every pixel inside at least one ellipse goes to the ellipse in whose normalised metric it
    is nearest, so overlapping neighbours touch along a shared border. Each id keeps its largest
    4-connected piece; pieces smaller than ``min_piece`` px (crumbs at the image border) become
    background. Ids are random distinct integers in [1, 10**6).
    """
    ny, nx = shape
    theta = rng.uniform(0, np.pi / 3)
    a1 = a * np.array([np.cos(theta), np.sin(theta)])
    a2 = a * np.array([np.cos(theta + np.pi / 3), np.sin(theta + np.pi / 3)])
    n = int(np.ceil(max(ny, nx) / a)) * 2 + 2
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    c = rng.uniform(0, a, 2) + i.reshape(-1, 1) * a1 + j.reshape(-1, 1) * a2  # (x, y) [px]
    c = c[(c[:, 0] > -a) & (c[:, 0] < nx + a) & (c[:, 1] > -a) & (c[:, 1] < ny + a)]
    c = c[rng.random(len(c)) >= vacancies]
    m = len(c)
    r = a * rng.uniform(*radius_frac, m)
    q = np.where(rng.random(m) < elliptical, rng.uniform(0.7, 0.85, m), 1.0)  # axis ratio
    phi = rng.uniform(0, np.pi, m)
    yy, xx = np.mgrid[0:ny, 0:nx] + 0.5
    dx = xx[None] - c[:, 0, None, None]
    dy = yy[None] - c[:, 1, None, None]
    cos, sin = np.cos(phi)[:, None, None], np.sin(phi)[:, None, None]
    u, v = dx * cos + dy * sin, -dx * sin + dy * cos
    rho = np.hypot(u / (r / np.sqrt(q))[:, None, None], v / (r * np.sqrt(q))[:, None, None])
    lab = np.where(rho.min(axis=0) < 1, rho.argmin(axis=0) + 1, 0)
    pieces = cc_label(lab, background=0, connectivity=1)
    area = np.bincount(pieces.ravel())
    best = {}
    for p in range(1, len(area)):
        owner = lab[pieces == p][0]
        if area[p] >= min_piece and (owner not in best or area[p] > area[best[owner]]):
            best[owner] = p
    keep = np.zeros(len(area), bool)
    keep[list(best.values())] = True
    lab = np.where(keep[pieces], lab, 0)
    ids = rng.choice(np.arange(1, 10**6), size=m + 1, replace=False)
    ids[0] = 0
    return ids[lab].astype(np.int32)


def iou_matrix(true, pred):
    """IoU of every true instance (rows, in sorted id order) with every predicted one."""
    tu, ti = np.unique(true, return_inverse=True)
    pu, pi = np.unique(pred, return_inverse=True)
    inter = np.zeros((len(tu), len(pu)))
    np.add.at(inter, (ti.ravel(), pi.ravel()), 1)
    union = inter.sum(1)[:, None] + inter.sum(0)[None] - inter
    iou = inter / union
    return iou[(tu != 0)][:, (pu != 0)]


def n_instances(labels):
    return len(np.unique(labels[labels != 0]))


def touching_pairs(labels):
    """Number of 4-adjacent pixel pairs belonging to two different instances."""
    h = (labels[:, 1:] != labels[:, :-1]) & (labels[:, 1:] > 0) & (labels[:, :-1] > 0)
    v = (labels[1:] != labels[:-1]) & (labels[1:] > 0) & (labels[:-1] > 0)
    return int(h.sum() + v.sum())


def noisy(maps, rng, sigma=0.1):
    return np.clip(maps + rng.normal(0, sigma, maps.shape), 0, 1).astype(np.float32)


SEEDS = [0, 1, 2]


# ---------------------------------------------------------------------------- generator
def test_lattice_generator_touches_and_is_cut_by_the_border():
    lab = lattice_labels(np.random.default_rng(0))
    assert lab.dtype == np.int32
    assert n_instances(lab) > 50
    assert touching_pairs(lab) > 500
    border = np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])
    assert n_instances(border) > 10
    assert lab.max() > 1000  # random, non-consecutive ids


# ---------------------------------------------------------------------------- encode
@pytest.mark.parametrize("seed", SEEDS)
def test_encode_properties(seed):
    lab = lattice_labels(np.random.default_rng(seed))
    t = encode_targets(lab)
    assert set(t) == {"foreground", "distance", "boundary"}
    for v in t.values():
        assert v.shape == lab.shape and v.dtype == np.float32
    np.testing.assert_array_equal(t["foreground"], (lab > 0).astype(np.float32))
    d = t["distance"]
    assert d.min() >= 0 and d.max() <= 1
    assert np.all(d[lab == 0] == 0)
    assert np.all(d[lab > 0] > 0)
    ids = np.unique(lab[lab > 0])
    np.testing.assert_array_equal(ndimage.maximum(d, lab, ids), 1.0)  # exactly 1 per instance
    b = t["boundary"]
    assert set(np.unique(b)) <= {0.0, 1.0}
    assert np.all(b[lab == 0] == 0)


@pytest.mark.parametrize("seed", SEEDS)
def test_boundary_separates_touching_instances(seed):
    lab = lattice_labels(np.random.default_rng(seed))
    b = encode_targets(lab)["boundary"] > 0
    inner = (lab > 0) & ~b
    for connectivity in (1, 2):
        comps = cc_label(inner, connectivity=connectivity)
        fg = comps > 0
        # every remaining component holds pixels of a single instance
        pairs = np.unique(np.stack([comps[fg], lab[fg]]), axis=1)
        assert len(np.unique(pairs[0])) == pairs.shape[1]
    # the boundary is 1 px thick: a pixel is on it iff a 4-neighbour has another label
    padded = np.pad(lab, 1, mode="edge")  # the image border is not a boundary
    nbrs = [padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]]
    expected = (lab > 0) & np.any([n != lab for n in nbrs], axis=0)
    np.testing.assert_array_equal(b, expected)


def test_distance_matches_full_image_edt():
    """The bounding-box EDT equals the per-instance EDT over the whole image."""
    lab = lattice_labels(np.random.default_rng(3))
    d = encode_targets(lab)["distance"]
    ref = np.zeros(lab.shape)
    for i in np.unique(lab[lab > 0]):
        m = lab == i
        e = ndimage.distance_transform_edt(m)
        ref[m] = e[m] / e[m].max()
    np.testing.assert_allclose(d, ref, rtol=0, atol=1e-6)


def test_distance_by_hand_touching_blocks_and_image_border():
    """Two touching blocks filling a 5×8 image: the image border is not foreign, so the
    distance grows toward it; the valley (1/4) is the shared border."""
    lab = np.zeros((5, 8), np.int32)
    lab[:, :4] = 7
    lab[:, 4:] = 3
    t = encode_targets(lab)
    row = np.array([4, 3, 2, 1, 1, 2, 3, 4], np.float32) / 4
    np.testing.assert_array_equal(t["distance"], np.tile(row, (5, 1)))
    boundary = np.zeros((5, 8), np.float32)
    boundary[:, 3:5] = 1
    np.testing.assert_array_equal(t["boundary"], boundary)
    np.testing.assert_array_equal(t["foreground"], np.ones((5, 8), np.float32))


def test_distance_disk_with_background():
    """Isolated disk: distance to the background, peak 1 at the centre, valley at the rim."""
    yy, xx = np.mgrid[0:21, 0:21]
    lab = ((yy - 10) ** 2 + (xx - 10) ** 2 <= 36).astype(np.int32) * 5
    d = encode_targets(lab)["distance"]
    assert d[10, 10] == 1.0 and np.argmax(d) == 10 * 21 + 10
    # nearest background to the centre: offset (6, 1) → peak √37 px; a rim pixel is 1 px deep
    np.testing.assert_allclose(d[10, 4], 1 / np.sqrt(37), rtol=1e-6)
    assert np.all(d[lab == 0] == 0)


def test_single_instance_filling_the_image():
    lab = np.full((6, 7), 9, np.int32)
    t = encode_targets(lab)
    np.testing.assert_array_equal(t["distance"], 1.0)
    np.testing.assert_array_equal(t["boundary"], 0.0)
    dec = decode_instances(t["foreground"], t["distance"])
    np.testing.assert_array_equal(dec, 1)


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.int32, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.integers(0, 4))
)
def test_encode_properties_on_arbitrary_labels(lab):
    t = encode_targets(lab)
    d, b = t["distance"], t["boundary"] > 0
    assert d.min() >= 0 and d.max() <= 1
    assert np.all(d[lab == 0] == 0)
    ids = np.unique(lab[lab > 0])
    if ids.size:
        np.testing.assert_array_equal(ndimage.maximum(d, lab, ids), 1.0)
    comps = cc_label((lab > 0) & ~b, connectivity=1)
    fg = comps > 0
    pairs = np.unique(np.stack([comps[fg], lab[fg]]), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1]


# ---------------------------------------------------------------------------- decode
@pytest.mark.parametrize("seed", SEEDS)
def test_round_trip_on_touching_lattice(seed):
    lab = lattice_labels(np.random.default_rng(seed))
    t = encode_targets(lab)
    dec = decode_instances(t["foreground"], t["distance"])
    assert dec.dtype == np.int32 and dec.shape == lab.shape
    iou = iou_matrix(lab, dec)
    good = iou >= 0.9
    assert np.all(good.sum(axis=1) == 1), "each true instance: exactly one decoded at IoU >= 0.9"
    assert np.all(good.sum(axis=0) == 1), "no extra decoded instances"
    assert n_instances(dec) == n_instances(lab)
    # the binary baseline merges touching instances
    base = decode_binary_baseline(t["foreground"])
    assert base.dtype == np.int32
    assert n_instances(base) < n_instances(lab)


def test_baseline_reproduces_isolated_instances():
    lab = lattice_labels(np.random.default_rng(4), radius_frac=(0.3, 0.4), elliptical=0.0)
    assert touching_pairs(lab) == 0
    base = decode_binary_baseline(encode_targets(lab)["foreground"])
    np.testing.assert_array_equal(base, relabel_raster(lab))


def test_noise_robustness():
    rng = np.random.default_rng(1234)
    matched = total = extra = 0
    for seed in SEEDS:
        lab = lattice_labels(np.random.default_rng(seed))
        t = encode_targets(lab)
        dec = decode_instances(noisy(t["foreground"], rng), noisy(t["distance"], rng))
        iou = iou_matrix(lab, dec)
        matched += int(((iou >= 0.5).sum(axis=1) == 1).sum())
        total += iou.shape[0]
        extra += int(((iou >= 0.5).sum(axis=0) == 0).sum())
    assert matched >= 0.95 * total
    assert extra <= 0.05 * total


def test_labels_are_raster_ordered():
    lab = lattice_labels(np.random.default_rng(5))
    t = encode_targets(lab)
    for out in (
        decode_instances(t["foreground"], t["distance"]),
        decode_binary_baseline(t["foreground"]),
    ):
        ids, first = np.unique(out.ravel(), return_index=True)
        np.testing.assert_array_equal(ids, np.arange(ids.size))
        assert np.all(np.diff(first[1:]) > 0)


def test_elongated_instance_cut_by_border_is_one_instance():
    """A long ellipse cut lengthwise by the border has its maximum along a ridge on the
    border; threshold seeds give it one seed."""
    yy, xx = np.mgrid[0:30, 0:60] + 0.5
    lab = ((((xx - 30) / 25) ** 2 + ((yy - 2) / 8) ** 2) < 1).astype(np.int32)
    t = encode_targets(lab)
    dec = decode_instances(t["foreground"], t["distance"])
    np.testing.assert_array_equal(dec, lab)


def test_min_distance_merges_close_seed_regions():
    fg = np.ones((9, 20), np.float32)
    d = np.full((9, 20), 0.3, np.float32)
    d[2:7, 3:8] = 1.0
    d[2:7, 9:14] = 1.0  # one-column gap: the regions are 2 px apart
    kw = {"sigma_px": 0}
    assert decode_instances(fg, d, **kw).max() == 2
    assert decode_instances(fg, d, min_distance_px=2, **kw).max() == 2
    assert decode_instances(fg, d, min_distance_px=2.5, **kw).max() == 1
    # regions touching only diagonally are joined by the default (√2 < 2), not by 1
    d = np.full((9, 20), 0.3, np.float32)
    d[1:4, 2:5] = 1.0
    d[4:7, 5:8] = 1.0
    assert decode_instances(fg, d, **kw).max() == 1
    assert decode_instances(fg, d, min_distance_px=1, **kw).max() == 2


def test_thresholds():
    lab = lattice_labels(np.random.default_rng(6))
    t = encode_targets(lab)
    assert decode_instances(t["foreground"] * 0.4, t["distance"]).max() == 0
    assert decode_instances(t["foreground"] * 0.4, t["distance"], fg_threshold=0.3).max() > 0
    # no seed above threshold: each foreground component becomes one instance (here one)
    merged = decode_instances(t["foreground"], t["distance"], seed_threshold=1.0)
    np.testing.assert_array_equal(merged, decode_binary_baseline(t["foreground"]))


def test_single_pixel_instance_is_encoded_and_dropped_by_min_area():
    lab = np.zeros((16, 16), np.int32)
    lab[3, 3] = 42
    yy, xx = np.mgrid[0:16, 0:16]
    lab[(yy - 10) ** 2 + (xx - 10) ** 2 <= 9] = 7
    t = encode_targets(lab)
    assert t["foreground"][3, 3] == 1 and t["distance"][3, 3] == 1 and t["boundary"][3, 3] == 1
    dec = decode_instances(t["foreground"], t["distance"])  # min_area_px=4 drops it
    assert dec[3, 3] == 0 and n_instances(dec) == 1
    np.testing.assert_array_equal(dec > 0, lab == 7)
    kept = decode_instances(t["foreground"], t["distance"], min_area_px=1)
    np.testing.assert_array_equal(kept, relabel_raster(lab))


# ---------------------------------------------------------------------------- shapes, edges
def test_batches():
    labs = np.stack([lattice_labels(np.random.default_rng(s)) for s in SEEDS])
    t = encode_targets(labs)
    for key, v in t.items():
        assert v.shape == labs.shape and v.dtype == np.float32
        for i in range(len(labs)):
            np.testing.assert_array_equal(v[i], encode_targets(labs[i])[key])
    dec = decode_instances(t["foreground"], t["distance"])
    base = decode_binary_baseline(t["foreground"])
    assert dec.shape == base.shape == labs.shape
    assert dec.dtype == base.dtype == np.int32
    for i in range(len(labs)):
        np.testing.assert_array_equal(
            dec[i], decode_instances(t["foreground"][i], t["distance"][i])
        )
        np.testing.assert_array_equal(base[i], decode_binary_baseline(t["foreground"][i]))
        assert n_instances(dec[i]) == n_instances(labs[i])


@pytest.mark.parametrize("shape", [(8, 9), (3, 8, 9), (0, 8, 9)])
def test_empty(shape):
    lab = np.zeros(shape, np.int32)
    t = encode_targets(lab)
    for v in t.values():
        assert v.shape == shape and v.dtype == np.float32 and not v.any()
    for out in (
        decode_instances(t["foreground"], t["distance"]),
        decode_binary_baseline(t["foreground"]),
    ):
        assert out.shape == shape and out.dtype == np.int32 and not out.any()


def test_relabel_raster():
    lab = np.array([[0, 9, 9], [5, 0, 2], [5, 2, 2]])
    np.testing.assert_array_equal(relabel_raster(lab), [[0, 1, 1], [2, 0, 3], [2, 3, 3]])


def test_input_errors():
    with pytest.raises(InputError):
        encode_targets(np.zeros((4, 4), np.float32))
    with pytest.raises(InputError):
        encode_targets(-np.ones((4, 4), np.int32))
    with pytest.raises(InputError):
        encode_targets(np.zeros(4, np.int32))
    with pytest.raises(InputError):
        decode_instances(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(InputError):
        decode_instances(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 4, 4)))
    with pytest.raises(InputError):
        decode_binary_baseline(np.zeros(4))


# ---------------------------------------------------------------------------- size filter
def test_drop_undersized_instances_keeps_large_and_border_cut_ones():
    r, c = np.indices((40, 40))
    lab = np.zeros((40, 40), np.int32)
    lab[(r - 10) ** 2 + (c - 10) ** 2 <= 36] = 7  # disk of radius 6: diameter ~12 px
    lab[(r - 30) ** 2 + (c - 30) ** 2 <= 4] = 3  # radius 2: diameter ~4.5 px
    lab[0:2, 20:23] = 9  # 6 px cut by the border: diameter ~2.8 px, kept
    out = drop_undersized_instances(lab, 8.0)
    assert out.dtype == np.int32 and out.max() == 2
    np.testing.assert_array_equal(out > 0, (lab == 7) | (lab == 9))
    # diameter exactly at the limit stays: a 2x2 square has d = 2·sqrt(4/π) ~ 2.26 px
    square = np.zeros((6, 6), np.int32)
    square[2:4, 2:4] = 5
    d = 2 * np.sqrt(4 / np.pi)
    assert drop_undersized_instances(square, d).max() == 1
    assert drop_undersized_instances(square, np.nextafter(d, 3)).max() == 0
    np.testing.assert_array_equal(drop_undersized_instances(lab, 0.0) > 0, lab > 0)
    with pytest.raises(InputError, match="row, col"):
        drop_undersized_instances(lab[None], 1.0)
