"""Ground-truth instance labels (ltemfactory.labels): sample frame, image frame, tables, stores."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.measure import regionprops

from ltemfactory.config import load_config
from ltemfactory.errors import InputError
from ltemfactory.labels import (
    KIND_CODES,
    TABLE_COLUMNS,
    boundary_class,
    classify,
    image_geometry,
    image_instances,
    instance_charges,
    instance_holes,
    instance_table,
    label_render_store,
    sample_instances,
    semantic_mask,
)
from ltemfactory.ltem import Microscope, Tilt, simulate_images
from ltemfactory.micromagnetics.initial import bubble_state, hexagonal_centres
from ltemfactory.micromagnetics.topology import charge_density, topological_charge
from ltemfactory.relax import relax_batch, write_relax_store
from ltemfactory.render import render_store, write_render_store
from ltemfactory.stores import open_store
from ltemfactory.sweep import draw_sweep

TINY = Path(__file__).parent / "configs" / "tiny.yaml"
DX = 2e-9  # cell size [m]
PX = DX * 1e9  # pixel size [nm]


def bubbles(n, centres_m, radius_m, wall_m=2e-9, thickness_m=2e-9, background=1.0):
    """Single-layer Néel bubbles (3, 1, n, n) and the cell (dx, dy, dz) [m]."""
    cell = (DX, DX, thickness_m)
    m = bubble_state(
        (1, n, n), cell, np.asarray(centres_m, float), radius_m, wall_m, background=background
    )
    return m, cell


def sample_table(m, periodic=True, **kw):
    mz = m[2].mean(axis=0)
    labels = sample_instances(mz, periodic=periodic)
    rho = charge_density(torch.from_numpy(m[:, 0]), periodic).numpy()
    return labels, instance_table(labels, PX, charge_density=rho, periodic=periodic, **kw)


def periodic_distance(a, b, period):
    d = np.abs(np.asarray(a) - np.asarray(b))
    return np.minimum(d, period - d)


# --------------------------------------------------------------------------- sample frame
def test_isolated_bubble_centroid_radius_and_charge():
    n, radius = 64, 12e-9
    centre = (50e-9, 74e-9)  # (y, x) [m]
    m, _ = bubbles(n, [centre], radius)
    labels, t = sample_table(m)
    assert labels.dtype == np.int32 and labels.shape == (n, n)
    assert labels.max() == 1 and len(t["instance_id"]) == 1
    # cell (row, col) has its centre at ((row + 0.5) dx, (col + 0.5) dx)
    assert t["centroid_y_nm"][0] == pytest.approx(centre[0] * 1e9, abs=0.5 * PX)
    assert t["centroid_x_nm"][0] == pytest.approx(centre[1] * 1e9, abs=0.5 * PX)
    assert t["centroid_row_px"][0] == pytest.approx(centre[0] / DX - 0.5, abs=0.5)
    # the m_z = 0 contour of θ(r) = 2 atan(exp(−(r − R)/w)) is r = R
    assert t["equivalent_radius_nm"][0] == pytest.approx(radius * 1e9, abs=PX)
    assert t["topological_charge"][0] == pytest.approx(-1.0, abs=1e-6)  # core down, up bkg
    assert t["kind"][0] == "skyrmion" and t["kind_code"][0] == KIND_CODES["skyrmion"]
    assert not t["touches_border"][0]
    assert t["minor_axis_nm"][0] / t["major_axis_nm"][0] > 0.95


def test_charge_counts_the_whole_wall_not_only_the_core():
    """Half of the Berg–Lüscher density lies outside the m_z = 0 contour: the instance charge
    is the catchment sum, equal to the total charge; the core alone falls well short of −1."""
    m, _ = bubbles(64, [(64e-9, 64e-9)], 10e-9, wall_m=4e-9)
    labels = sample_instances(m[2, 0])
    rho = charge_density(torch.from_numpy(m[:, 0])).numpy()
    assert instance_charges(labels, rho, periodic=True)[0] == pytest.approx(-1.0, abs=1e-6)
    core_only = rho[labels == 1].sum()
    assert -0.9 < core_only < -0.1


def test_bubble_across_the_periodic_edge_is_one_instance():
    n, radius = 64, 10e-9
    centre = (1e-9, 127e-9)  # straddles both edges (box 128 nm)
    m, _ = bubbles(n, [centre], radius)
    labels, t = sample_table(m)
    assert labels.max() == 1
    assert labels[0, 0] == labels[-1, -1] == labels[0, -1] == labels[-1, 0] == 1
    assert periodic_distance(t["centroid_y_nm"][0], centre[0] * 1e9, n * PX) < 0.5 * PX
    assert periodic_distance(t["centroid_x_nm"][0], centre[1] * 1e9, n * PX) < 0.5 * PX
    assert 0 <= t["centroid_row_px"][0] < n and 0 <= t["centroid_col_px"][0] < n
    assert t["equivalent_radius_nm"][0] == pytest.approx(radius * 1e9, abs=PX)
    assert t["minor_axis_nm"][0] / t["major_axis_nm"][0] > 0.95  # measured unwrapped
    assert t["topological_charge"][0] == pytest.approx(-1.0, abs=1e-6)
    assert not t["touches_border"][0]
    # without periodicity the four corner pieces are separate regions
    assert sample_instances(m[2, 0], periodic=False).max() == 4


def test_hexagonal_lattice_gives_one_instance_per_bubble():
    rng = np.random.default_rng(3)
    n, a, radius = 64, 32e-9, 8e-9
    centres = hexagonal_centres((n * DX, n * DX), a, rng)
    m, _ = bubbles(n, centres, radius)
    labels, t = sample_table(m)
    assert labels.max() == len(centres) == len(t["instance_id"]) == 16
    np.testing.assert_allclose(t["topological_charge"], -1.0, atol=1e-6)
    assert set(t["kind"]) == {"skyrmion"}
    total = topological_charge(torch.from_numpy(m[:, 0])).item()
    assert t["topological_charge"].sum() == pytest.approx(total, abs=1e-9)
    # every seeded centre is the centroid of exactly one instance (periodic distance)
    yx = np.stack([t["centroid_y_nm"], t["centroid_x_nm"]], axis=1)
    d = periodic_distance(yx[:, None, :], centres[None] * 1e9, n * PX)
    dist = np.hypot(d[..., 0], d[..., 1])
    assert np.all(dist.min(axis=0) < 0.5 * PX)
    assert sorted(dist.argmin(axis=0)) == list(range(len(centres)))


def test_background_and_threshold():
    m, _ = bubbles(64, [(64e-9, 64e-9)], 12e-9, wall_m=4e-9, background=-1.0)
    mz = m[2, 0]
    lab = sample_instances(mz)  # background from the mean: down, so cores point up
    assert lab.max() == 1 and mz[lab == 1].min() > 0
    assert np.array_equal(lab, sample_instances(-mz, background=1.0))
    inner = sample_instances(mz, threshold=-0.5)  # only m_z·b < −0.5: a smaller core
    assert inner.max() == 1 and (inner > 0).sum() < (lab > 0).sum()
    assert np.all(lab[inner > 0] == 1)


# --------------------------------------------------------------------------- image frame
def lobe_pair_centre(intensity, radius_px):
    """Centre of the dark/bright lobe pair: |I − 1|-weighted centroid in a disc of
    ``radius_px`` around the midpoint of the intensity maximum and minimum. (row, col) [px]."""
    a = intensity - 1.0
    hi = np.unravel_index(np.argmax(a), a.shape)
    lo = np.unravel_index(np.argmin(a), a.shape)
    mid = (np.array(hi) + np.array(lo)) / 2
    rows, cols = np.indices(a.shape)
    w = np.abs(a) * (np.hypot(rows - mid[0], cols - mid[1]) < radius_px)
    return np.array([(w * rows).sum(), (w * cols).sum()]) / w.sum()


@pytest.mark.parametrize(("alpha", "beta"), [(20.0, 0.0), (20.0, 60.0), (-25.0, 135.0)])
def test_tilted_neel_skyrmion_label_sits_on_its_lobe_pair(alpha, beta):
    """The image-frame label is the mid-plane projection of the core: its centroid is at the
    projected centre and at the centre of the tilted Néel contrast (dark/bright lobes).

    The wall is kept narrow (w = 1 cell): the radial wall moment, foreshortened across the
    tilt axis, acquires a curl that displaces the lobe pair from the core by ~1.3·w·tan α
    perpendicular to the axis (physics, not a labelling error), < 0.5 px here.
    """
    n, radius, thick = 96, 16e-9, 20e-9
    centre = (70e-9, 110e-9)  # (y, x) [m], away from the rotation centre
    m, cell = bubbles(n, [centre], radius, wall_m=2e-9, thickness_m=thick)
    tilt = Tilt.about_axis(alpha, beta)
    out = simulate_images(torch.from_numpy(m)[None], 4e5, cell, Microscope(defocus_m=1e-3), tilt)
    image = out.clean_intensity[0].numpy()

    geometry = image_geometry((1, n, n), PX, thick * 1e9, alpha, beta)
    assert geometry is out.geometry  # the very geometry of the simulated image
    labels = image_instances(sample_instances(m[2].mean(axis=0)), geometry)
    assert labels.shape == image.shape and labels.dtype == np.int32
    assert labels.max() == 1
    t = instance_table(labels, PX)
    c = np.array([t["centroid_row_px"][0], t["centroid_col_px"][0]])

    # projected centre: image (i, j) = (x cosγ + y sinγ sinθ, y cosθ) about the grid centre
    th, ga = tilt.theta_rad, tilt.gamma_rad
    x, y = centre[1] - n * DX / 2, centre[0] - n * DX / 2
    i = x * math.cos(ga) + y * math.sin(ga) * math.sin(th)
    j = y * math.cos(th)
    expected = np.array([j / DX + (n - 1) / 2, i / DX + (n - 1) / 2])
    assert np.hypot(*(c - expected)) < 0.5

    lobes = lobe_pair_centre(image, 2.5 * radius / DX)
    assert np.hypot(*(c - lobes)) < 1.0

    # foreshortening: the tilt axis u = (cos β, sin β) keeps its length, the in-plane
    # direction across it shrinks by cos α; in the image the axis appears along L·u
    # (L the in-plane projection, equal to R_n(α) up to a small in-plane rotation).
    u = geometry.L @ np.array([math.cos(math.radians(beta)), math.sin(math.radians(beta))])
    u /= np.linalg.norm(u)
    v = np.array([-u[1], u[0]])
    rows, cols = np.nonzero(labels == 1)
    xy = np.stack([cols - c[1], rows - c[0]], axis=1)  # (x, y) offsets [px]
    along, across = xy @ u, xy @ v
    cos_a = math.cos(math.radians(alpha))
    assert 4 * across.std() / (4 * along.std()) == pytest.approx(cos_a, abs=0.03)
    assert 4 * along.std() == pytest.approx(2 * radius / DX, abs=1.0)
    assert 4 * across.std() == pytest.approx(2 * radius / DX * cos_a, abs=1.0)
    extent_along = along.max() - along.min() + 1
    extent_across = across.max() - across.min() + 1
    assert extent_along == pytest.approx(2 * radius / DX, abs=2.0)
    assert extent_across == pytest.approx(2 * radius / DX * cos_a, abs=2.0)


def test_untilted_image_labels_are_the_sample_labels():
    n = 48
    m, cell = bubbles(n, [(30e-9, 40e-9), (60e-9, 70e-9)], 8e-9)
    sample = sample_instances(m[2, 0])
    out = simulate_images(torch.from_numpy(m)[None], 4e5, cell, Microscope(defocus_m=1e-3))
    geometry = image_geometry((1, n, n), PX, 2.0)
    assert geometry is out.geometry and geometry.is_identity
    assert np.array_equal(image_instances(sample, geometry), sample)
    assert image_instances(sample, geometry).shape == out.clean_intensity.shape[1:]


def test_image_window_cuts_and_repeats_instances():
    """Untilted, a bubble across the periodic edge is one sample instance but two image
    instances (the image is a finite window) unless periodic=True is asked for."""
    n = 48
    m, _ = bubbles(n, [(48e-9, 1e-9), (40e-9, 48e-9)], 8e-9)
    sample = sample_instances(m[2, 0])
    assert sample.max() == 2
    geometry = image_geometry((1, n, n), PX, 2.0)
    labels, sources = image_instances(sample, geometry, return_sources=True)
    assert labels.max() == 3 and sorted(np.bincount(sources)[1:]) == [1, 2]
    edge_id = sample[24, 0]  # the sample instance across the x edge is seen twice
    assert np.count_nonzero(sources == edge_id) == 2
    assert np.array_equal(image_instances(sample, geometry, periodic=True), sample)
    q = np.array([-1.0, -1.0])
    t = instance_table(labels, PX, charges=q[sources - 1])
    edge = np.zeros_like(labels, dtype=bool)
    edge[[0, -1], :] = edge[:, [0, -1]] = True
    expect = [bool(np.any(edge & (labels == k))) for k in range(1, 4)]
    assert list(t["touches_border"]) == expect and sum(expect) == 2
    assert set(t["kind"]) == {"skyrmion"}
    # a tilted window spans more than one projected period in y: a bubble near the top
    # edge of the sample reappears at the bottom of the image
    tilted = image_geometry((1, n, n), PX, 2.0, 40.0, 0.0)
    m2, _ = bubbles(n, [(6e-9, 48e-9)], 6e-9)
    lab2, src2 = image_instances(sample_instances(m2[2, 0]), tilted, return_sources=True)
    assert lab2.max() == 2 and list(src2) == [1, 1]
    with pytest.raises(InputError):
        image_instances(sample, tilted, periodic=True)
    with pytest.raises(InputError):
        image_instances(sample[:10], geometry)


# --------------------------------------------------------------------------- tables
def test_instance_table_consistency_on_a_tilted_lattice():
    rng = np.random.default_rng(5)
    n = 64
    centres = hexagonal_centres((n * DX, n * DX), 32e-9, rng)
    m, _ = bubbles(n, centres, 8e-9)
    sample = sample_instances(m[2, 0])
    rho = charge_density(torch.from_numpy(m[:, 0])).numpy()
    q = instance_charges(sample, rho, periodic=True)
    labels, src = image_instances(
        sample, image_geometry((1, n, n), PX, 2.0, 22.0, 200.0), return_sources=True
    )
    t = instance_table(labels, PX, charges=q[src - 1], image_index=7)
    k = labels.max()
    assert set(t) == set(TABLE_COLUMNS)
    for name, dtype in TABLE_COLUMNS.items():
        assert t[name].shape == (k,) and t[name].dtype == dtype, name
    assert list(t["instance_id"]) == list(range(1, k + 1))
    assert set(np.unique(labels)) == set(range(k + 1))  # contiguous ids
    # raster order of first appearance
    flat = labels.ravel()
    firsts = [np.flatnonzero(flat == i)[0] for i in range(1, k + 1)]
    assert firsts == sorted(firsts)
    assert np.all(t["image_index"] == 7)
    assert t["area_nm2"].sum() == pytest.approx((labels > 0).sum() * PX**2)
    np.testing.assert_allclose(t["equivalent_radius_nm"], np.sqrt(t["area_nm2"] / np.pi))
    np.testing.assert_allclose(t["centroid_x_nm"], (t["centroid_col_px"] + 0.5) * PX)
    np.testing.assert_allclose(t["centroid_y_nm"], (t["centroid_row_px"] + 0.5) * PX)
    edge = np.zeros_like(labels, dtype=bool)
    edge[[0, -1], :] = edge[:, [0, -1]] = True
    expect = np.array([np.any(edge & (labels == i)) for i in range(1, k + 1)])
    assert np.array_equal(t["touches_border"], expect) and expect.any() and not expect.all()
    np.testing.assert_allclose(t["topological_charge"], -1.0, atol=1e-6)
    # each sample instance is seen at least once
    assert set(src) == set(range(1, sample.max() + 1))
    # second moments as skimage.measure.regionprops
    for p in regionprops(labels):
        row = p.label - 1
        assert t["major_axis_nm"][row] == pytest.approx(p.axis_major_length * PX)
        assert t["minor_axis_nm"][row] == pytest.approx(p.axis_minor_length * PX)
        assert t["centroid_row_px"][row] == pytest.approx(p.centroid[0])


@pytest.mark.parametrize("angle", [30.0, -60.0, 90.0, 0.0])
def test_ellipse_axes_and_orientation(angle):
    """A rasterised ellipse, semi-axes 12 and 5 px, major axis at ``angle`` from +x toward +y."""
    rows, cols = np.indices((64, 64), dtype=float)
    x, y = cols - 31.3, rows - 30.8
    a = math.radians(angle)
    u = x * math.cos(a) + y * math.sin(a)
    v = -x * math.sin(a) + y * math.cos(a)
    labels = ((u / 12) ** 2 + (v / 5) ** 2 < 1).astype(np.int32)
    t = instance_table(labels, 1.0)
    assert t["major_axis_nm"][0] == pytest.approx(24.0, abs=0.5)
    assert t["minor_axis_nm"][0] == pytest.approx(10.0, abs=0.5)
    d = (t["orientation_deg"][0] - angle + 90) % 180 - 90
    assert abs(d) < 1.0
    assert -90 < t["orientation_deg"][0] <= 90


def test_classify_kinds():
    q = np.array([-1.02, 0.9, 0.1, 0.1, 2.0, np.nan, -0.6])
    major = np.array([10.0, 10, 10, 10, 10, 10, 10])
    minor = np.array([3.0, 9, 8, 3, 9, 9, 9])
    kind, code = classify(q, major, minor)
    assert list(kind) == ["skyrmion", "skyrmion", "bubble", "other", "other", "other", "skyrmion"]
    assert [KIND_CODES[k] for k in kind] == list(code)
    # a region with holes is neither a skyrmion nor a bubble, whatever its charge
    holes = np.array([2, 0, 1, 0, 0, 0, 0])
    kind, _ = classify(q, major, minor, holes)
    assert list(kind) == ["other", "skyrmion", "other", "other", "other", "other", "skyrmion"]


def _disc(shape, centre, radius):
    r, c = np.indices(shape)
    return (r - centre[0]) ** 2 + (c - centre[1]) ** 2 <= radius**2


def test_instance_holes_counts_enclosed_pieces_of_the_complement():
    shape = (48, 64)
    labels = np.zeros(shape, np.int32)
    labels[_disc(shape, (12, 12), 8)] = 1  # a disc: no hole
    ring = _disc(shape, (24, 40), 12) & ~_disc(shape, (24, 40), 5)
    labels[ring] = 2  # an annulus: one hole
    eight = _disc(shape, (38, 12), 9) & ~_disc(shape, (34, 12), 2) & ~_disc(shape, (42, 12), 2)
    labels[eight & (labels == 0)] = 3  # a figure eight: two holes
    np.testing.assert_array_equal(instance_holes(labels), [0, 1, 2])
    # a hole stays a hole when another instance fills it
    filled = labels.copy()
    filled[_disc(shape, (24, 40), 3)] = 4
    np.testing.assert_array_equal(instance_holes(filled), [0, 1, 2, 0])
    # a 1-px square wall encloses one hole; without its corner pixel the wall is 4-connected
    # only the long way round and the hole meets the outside diagonally: no hole (the
    # complement is 8-connected)
    square = np.zeros((9, 9), np.int32)
    square[1:8, 1:8] = 1
    square[2:7, 2:7] = 0
    assert instance_holes(square)[0] == 1
    square[1, 1] = 0
    assert instance_holes(square)[0] == 0


def test_instance_holes_on_a_periodic_grid():
    shape = (40, 40)
    ring = _disc(shape, (20, 20), 10) & ~_disc(shape, (20, 20), 4)
    disc = _disc(shape, (20, 20), 6)
    for shift in ((0, 0), (20, 0), (0, 20), (20, 20)):  # cut by one or both periodic edges
        labels = np.roll(ring, shift, axis=(0, 1)).astype(np.int32)
        assert instance_holes(labels, periodic=True)[0] == 1, shift
        labels = np.roll(disc, shift, axis=(0, 1)).astype(np.int32)
        assert instance_holes(labels, periodic=True)[0] == 0, shift
    stripe = np.zeros(shape, np.int32)
    stripe[:, 10:18] = 1  # through the whole box, along rows
    assert instance_holes(stripe, periodic=True)[0] == 0
    # the table counts them and classifies with them
    t = instance_table(np.roll(ring, (20, 20), axis=(0, 1)).astype(np.int32), 1.0, periodic=True)
    assert t["holes"][0] == 1 and t["kind"][0] == "other"


def test_empty_labels():
    t = instance_table(np.zeros((8, 8), np.int32), 1.0, charge_density=np.zeros((8, 8)))
    assert set(t) == set(TABLE_COLUMNS) and all(len(v) == 0 for v in t.values())
    assert sample_instances(np.ones((8, 8))).max() == 0
    g = image_geometry((1, 8, 8), 1.0, 1.0, 30.0, 10.0)
    assert image_instances(np.zeros((8, 8), np.int32), g).max() == 0


# --------------------------------------------------------------------------- masks
def test_boundary_class_separates_touching_instances():
    labels = np.zeros((24, 32), np.int32)
    labels[4:16, 3:14] = 1
    labels[6:20, 14:28] = 2  # shares an edge with instance 1
    labels[0:5, 29:32] = 3  # cut by the image border
    cls = boundary_class(labels)
    assert cls.dtype == np.uint8 and set(np.unique(cls)) == {0, 1, 2}
    assert np.array_equal(cls > 0, semantic_mask(labels))
    assert np.all(cls[labels == 0] == 0)
    assert np.all(cls[:, 13][labels[:, 13] == 1] == 2) and np.all(cls[6:16, 14] == 2)
    interior, n = ndimage.label(cls == 1)  # 4-connectivity
    for i in range(1, n + 1):
        assert len(np.unique(labels[interior == i])) == 1
    assert n == 3
    # the array edge does not make a boundary; a 1-px ring does
    assert cls[0, 31] == 1 and cls[4, 31] == 2 and cls[2, 29] == 2
    # without the separation the two touching instances would be one region
    assert ndimage.label(labels > 0)[1] == 2
    # periodic: neighbours wrap
    wrap = np.zeros((6, 6), np.int32)
    wrap[:, :2] = 1
    assert np.all(boundary_class(wrap, periodic=True)[:, 0] == 2)
    assert np.all(boundary_class(wrap)[:, 0] == 1)
    # batches of label maps
    assert boundary_class(np.stack([labels, labels])).shape == (2, 24, 32)


# --------------------------------------------------------------------------- stores
@pytest.fixture(scope="module")
def store_pair(tmp_path_factory):
    cfg = load_config(TINY)
    rows = draw_sweep(cfg)[:2]
    tmp = tmp_path_factory.mktemp("labels")
    relax = tmp / "relax.zarr"
    write_relax_store(relax, relax_batch(rows, cfg["sweep"]["grid"], cfg["relax"]), cfg, 0)
    render = tmp / "render.zarr"
    write_render_store(render, render_store(relax, cfg["render"]), cfg, str(relax))
    return cfg, relax, render


def test_label_render_store(store_pair):
    cfg, relax_path, render_path = store_pair
    labels, table = label_render_store(relax_path, render_path)
    render, relax = open_store(render_path), open_store(relax_path)
    n_img = render["image"].shape[0]
    assert n_img == 2 * cfg["render"]["variants_per_state"]
    assert labels.shape == (n_img, 32, 32) == render["image"].shape and labels.dtype == np.int32
    assert set(TABLE_COLUMNS) <= set(table)
    n_rows = len(table["instance_id"])
    assert all(v.shape == (n_rows,) for v in table.values())
    px = np.asarray(render["pixel_size_nm"][:])
    state_index = np.asarray(render["state_index"][:])
    assert labels.max() > 0
    for i in range(n_img):
        rows = table["image_index"] == i
        k = labels[i].max()
        assert list(table["instance_id"][rows]) == list(range(1, k + 1))
        assert set(np.unique(labels[i])) == set(range(k + 1))
        counts = np.bincount(labels[i].ravel(), minlength=k + 1)[1:]
        np.testing.assert_allclose(table["area_nm2"][rows], counts * px[i] ** 2)
        assert np.all(table["state_index"][rows] == state_index[i])
        # the same labelling as by hand through the image's own geometry
        s = state_index[i]
        m = np.asarray(relax["m"][s])
        sample = sample_instances(
            m[2].mean(axis=0), background=np.sign(relax["field_mT"][s]) or 1.0
        )
        geometry = image_geometry(
            m.shape[1:],
            relax["cell_size_nm"][s],
            relax["thickness_nm"][s],
            render["tilt_deg"][i],
            render["tilt_axis_deg"][i],
        )
        assert np.array_equal(labels[i], image_instances(sample, geometry))
        assert np.all(table["sample_instance_id"][rows] <= sample.max())
    codes = np.array([KIND_CODES[k] for k in table["kind"]])
    assert np.array_equal(codes, table["kind_code"])
    # per state: the charges of its sample instances add up to the state's total charge
    q_state = np.asarray(relax["topological_charge"][:])
    for s in range(2):
        rows = table["state_index"] == s
        ids, first = np.unique(table["sample_instance_id"][rows], return_index=True)
        n_sample = sample_instances(
            np.asarray(relax["m"][s])[2].mean(axis=0),
            background=np.sign(relax["field_mT"][s]) or 1.0,
        ).max()
        if len(ids) == n_sample:
            q = table["topological_charge"][rows][first].sum()
            assert q == pytest.approx(q_state[s], abs=1e-3)
