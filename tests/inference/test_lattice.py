"""Lattice period from the power spectrum, and lattice statistics of centroids."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from skimage.transform import rescale

from ltemfactory.errors import InputError
from ltemfactory.inference.lattice import (
    estimate_lattice_period_px,
    lattice_statistics,
    scale_factor_to_training,
)
from ltemfactory.inference.readers import read_image

EXPERIMENTAL = Path(__file__).parents[2] / "data" / "experimental" / "FGT_190K_lf10_hf10.tif"


def hex_points(a: float, phi_deg: float, shape: tuple[int, int], rng, margin: float = 0.0):
    """(row, col) sites of a triangular lattice, NN distance a, a bond at phi from +x to +y."""
    phi = math.radians(phi_deg)
    a1 = a * np.array([math.cos(phi), math.sin(phi)])  # (x, y)
    a2 = a * np.array([math.cos(phi + math.pi / 3), math.sin(phi + math.pi / 3)])
    n = int(2 * max(shape) / a) + 3
    i, j = np.mgrid[-n : n + 1, -n : n + 1]
    xy = i.reshape(-1, 1) * a1 + j.reshape(-1, 1) * a2 + rng.uniform(0, a, 2)
    xy += np.array(shape[::-1]) / 2
    x, y = xy[:, 0], xy[:, 1]
    keep = (x >= -margin) & (x < shape[1] + margin) & (y >= -margin) & (y < shape[0] + margin)
    return np.stack([y[keep], x[keep]], axis=1)


def render(points: np.ndarray, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Sum of unit Gaussian blobs at sub-pixel (row, col) positions."""
    img = np.zeros(shape)
    h = int(4 * sigma) + 1
    for r, c in points:
        r0, c0 = int(round(r)), int(round(c))
        rs = slice(max(r0 - h, 0), min(r0 + h + 1, shape[0]))
        cs = slice(max(c0 - h, 0), min(c0 + h + 1, shape[1]))
        if rs.start >= rs.stop or cs.start >= cs.stop:
            continue
        rr, cc = np.mgrid[rs, cs]
        img[rs, cs] += np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * sigma**2))
    return img


def lattice_image(a, phi, shape, rng, noise=0.5):
    pts = hex_points(a, phi, shape, rng, margin=a)
    return render(pts, shape, a / 5) + rng.normal(0, noise, shape)


def angle_diff(a: float, b: float, period: float = 60.0) -> float:
    return abs((a - b + period / 2) % period - period / 2)


# --------------------------------------------------------------------------- spectrum estimate
@pytest.mark.parametrize(
    ("a", "shape"), [(12, (256, 256)), (20, (256, 256)), (38, (256, 256)), (20, (200, 330))]
)
def test_spacing_and_orientation_of_noisy_hexagonal_lattices(a, shape):
    rng = np.random.default_rng(a + shape[1])
    for phi in rng.uniform(0, 60, 3):
        est = estimate_lattice_period_px(lattice_image(a, phi, shape, rng))
        assert est.nn_distance_px == pytest.approx(a, rel=0.03)
        assert est.period_px == pytest.approx(math.sqrt(3) / 2 * a, rel=0.03)
        assert est.q_cycles_per_px == pytest.approx(1 / est.period_px)
        assert angle_diff(est.orientation_deg, phi) < 2.0
        assert 0.0 <= est.orientation_deg < 60.0
        assert est.reliable and est.orientation_order > 0.8


def test_white_noise_is_not_a_lattice():
    rng = np.random.default_rng(3)
    for shape in [(128, 128), (256, 256), (256, 190)]:
        est = estimate_lattice_period_px(rng.normal(size=shape))
        assert not est.reliable
        assert est.confidence < 0.6


def test_constant_image_has_no_ring():
    est = estimate_lattice_period_px(np.full((64, 64), 3.0))
    assert math.isnan(est.period_px) and est.confidence == 0.0 and not est.reliable
    assert est.to_dict()["period_px"] is None


def test_first_ring_is_chosen_over_a_stronger_second_ring():
    """Plane waves: a weak first ring and a 5× stronger √3 ring (a lobe-like form factor)."""
    a = 24.0
    q1 = 2 / (math.sqrt(3) * a)
    rr, cc = np.mgrid[0:256, 0:256].astype(float)
    img = np.zeros((256, 256))
    for k, amp, offset in [(q1, 1.0, 30.0), (math.sqrt(3) * q1, 2.2, 0.0)]:
        for m in range(3):
            t = math.radians(offset + 60 * m + 7.0)
            img += amp * np.cos(2 * math.pi * k * (cc * math.cos(t) + rr * math.sin(t)))
    est = estimate_lattice_period_px(img)
    assert est.nn_distance_px == pytest.approx(a, rel=0.01)
    assert angle_diff(est.orientation_deg, 7.0) < 1.0


def test_rescaling_by_the_training_factor_moves_the_lattice_to_the_training_spacing():
    rng = np.random.default_rng(11)
    img = lattice_image(20.0, 12.0, (256, 256), rng, noise=0.2)
    measured = estimate_lattice_period_px(img).nn_distance_px
    s = scale_factor_to_training(measured, 30.0)
    assert s == pytest.approx(1.5, rel=0.03)
    again = estimate_lattice_period_px(rescale(img, s, order=1))
    assert again.nn_distance_px == pytest.approx(30.0, rel=0.02)


@pytest.mark.parametrize(("measured", "training"), [(0.0, 10.0), (10.0, -1.0), (math.nan, 5.0)])
def test_scale_factor_rejects_bad_lengths(measured, training):
    with pytest.raises(InputError):
        scale_factor_to_training(measured, training)


def test_estimate_rejects_bad_images():
    with pytest.raises(InputError, match="2-D"):
        estimate_lattice_period_px(np.zeros((4, 64, 64)))
    with pytest.raises(InputError, match="NaN"):
        estimate_lattice_period_px(np.full((64, 64), np.nan))
    with pytest.raises(InputError, match="period band"):
        estimate_lattice_period_px(np.zeros((64, 64)), min_period_px=30, max_period_px=20)


def test_experimental_lattice():
    """The FGT image's ring: README of the data says roughly 38 px (measured 37.4 px)."""
    if not EXPERIMENTAL.exists():
        pytest.skip("experimental image not shipped")
    est = estimate_lattice_period_px(read_image(EXPERIMENTAL).data)
    assert est.reliable
    assert 35.0 < est.nn_distance_px < 40.0


# --------------------------------------------------------------------------- centroid statistics
def _inside(pts, shape):
    """Points within the image extent [−0.5, n − 0.5) (pixel centres at integers)."""
    r, c = pts[:, 0] + 0.5, pts[:, 1] + 0.5
    return pts[(r >= 0) & (r < shape[0]) & (c >= 0) & (c < shape[1])]


@pytest.mark.parametrize("phi", [0.0, 17.0, 44.5])
def test_perfect_hexagonal_lattice(phi):
    shape, a, px = (400, 400), 20.0, 2.5
    pts = _inside(hex_points(a, phi, shape, np.random.default_rng(1)), shape)
    s = lattice_statistics(pts, shape, px)
    assert s["fraction_6fold"] == 1.0 and s["coordination_counts"]["6"] == s["n_sites"] > 300
    assert s["psi6_global"] == pytest.approx(1.0, abs=1e-9)
    assert s["psi6_local_mean"] == pytest.approx(1.0, abs=1e-9)
    assert angle_diff(s["orientation_deg"], phi) < 1e-6
    for key in (
        "nn_distance_mean_px",
        "nn_distance_median_px",
        "lattice_constant_nn_px",
        "bond_length_median_px",
        "lattice_constant_bond_px",
    ):
        assert s[key] == pytest.approx(a, rel=1e-9)
    assert s["lattice_constant_bond_nm"] == pytest.approx(a * px, rel=1e-9)
    assert s["nn_distance_std_px"] == pytest.approx(0.0, abs=1e-9)
    assert s["nn_distance_mean_nm"] == pytest.approx(a * px, rel=1e-9)
    # count per area of a hexagonal lattice: 2/(√3 a²) (boundary effects ~ a/L)
    assert s["density_per_px2"] == pytest.approx(2 / (math.sqrt(3) * a**2), rel=0.05)
    assert s["density_per_um2"] == pytest.approx(s["density_per_px2"] / (px * 1e-3) ** 2)
    assert s["lattice_constant_density_px"] == pytest.approx(a, rel=0.03)
    assert s["n_defect_sites"] == 0 and s["n_dislocations"] == 0


def test_border_sites_are_excluded_by_margin_and_voronoi_cells():
    shape = (300, 300)
    pts = _inside(hex_points(15.0, 5.0, shape, np.random.default_rng(2), margin=1.0), shape)
    loose = lattice_statistics(pts, shape, exclude_border_px=0.0)
    default = lattice_statistics(pts, shape)
    strict = lattice_statistics(pts, shape, exclude_border_px=60.0)
    assert default["exclude_border_px"] == pytest.approx(15.0)
    # hull sites (unbounded cells, too few neighbours) never count; a missing neighbour just
    # beyond the border can still leave a bounded cell with 5 neighbours, hence the margin
    assert loose["coordination_counts"]["4"] == 0 and loose["fraction_6fold"] > 0.97
    assert default["fraction_6fold"] == 1.0
    assert strict["n_sites"] < default["n_sites"] < loose["n_sites"] < len(pts)


def test_scatter_shortens_nearest_neighbours_but_not_bonds():
    """Sites scattered by σ per coordinate: each bond length changes by the bond component of
    a N(0, 2σ²) difference (symmetric: the median bond stays at a to first order), while a
    site's NN distance is the shortest of its ~6 bonds, whose expected minimum lies ≈ 1.3
    standard deviations (√2σ) below a (for 6 independent ones)."""
    shape, a, sigma = (600, 600), 20.0, 1.0  # scatter 5 % of a
    rng = np.random.default_rng(3)
    pts = hex_points(a, 10.0, shape, rng)
    s = lattice_statistics(_inside(pts + rng.normal(0, sigma, pts.shape), shape), shape)
    assert s["n_sites"] > 600
    assert s["lattice_constant_nn_px"] < a - 1.0 * math.sqrt(2) * sigma  # measured −8.5 %
    assert s["lattice_constant_bond_px"] == pytest.approx(a, rel=0.02)
    # missing sites: their neighbours bond across them, so the bonds lengthen; the NN
    # distance of the remaining ones mostly stays
    kept = pts[rng.random(len(pts)) >= 0.3]
    holes = lattice_statistics(_inside(kept + rng.normal(0, sigma, kept.shape), shape), shape)
    assert holes["lattice_constant_bond_px"] > 1.02 * a
    assert holes["lattice_constant_nn_px"] < a


def test_jittered_square_lattice_has_no_hexatic_order():
    rng = np.random.default_rng(4)
    g = np.arange(10.0, 400.0, 20.0)
    pts = np.stack(np.meshgrid(g, g, indexing="ij"), axis=-1).reshape(-1, 2)
    pts += rng.normal(0, 0.01, pts.shape)  # breaks the co-circular ties of Delaunay
    s = lattice_statistics(pts, (400, 400), None)
    assert s["nn_distance_median_px"] == pytest.approx(20.0, abs=0.05)
    assert s["density_per_px2"] == pytest.approx(1 / 400)
    assert s["psi6_global"] < 0.1 and s["fraction_6fold"] < 0.6
    assert s["density_per_um2"] is None and s["nn_distance_mean_nm"] is None


def test_poisson_points():
    """Poisson–Voronoi cells are 6-sided with probability ≈ 0.29; no orientational order."""
    rng = np.random.default_rng(6)
    s = lattice_statistics(rng.uniform(0, 500, (700, 2)), (500, 500))
    assert s["psi6_global"] < 0.1
    assert 0.2 < s["fraction_6fold"] < 0.4
    assert s["n_defect_sites"] > 0.5 * s["n_sites"]


def test_interstitial_makes_defects_with_zero_net_disclination_charge():
    shape = (400, 400)
    pts = _inside(hex_points(20.0, 0.0, shape, np.random.default_rng(1)), shape)
    centre = pts[np.argmin(np.hypot(*(pts - 200).T))]
    for offset in [(3.0, 2.0), (6.0, 3.0)]:
        s = lattice_statistics(np.vstack([pts, centre + offset]), shape)
        counts = s["coordination_counts"]
        assert s["n_defect_sites"] >= 3 and s["fraction_6fold"] < 1.0
        assert s["psi6_global"] < 1.0
        assert counts["other"] == 0
        # Σ(6 − z): a point defect carries no net disclination (Euler's theorem, interior)
        assert sum((6 - int(k)) * v for k, v in counts.items() if k != "other") == 0


def test_edge_dislocation_is_one_bonded_5_7_pair():
    """Triangular lattice displaced by the isotropic-elastic field of an edge dislocation
    (Burgers vector a along x, ν = 1/3; Hirth & Lothe, Theory of Dislocations, eq. 3-45)."""
    a, shape = 20.0, (400, 400)
    pts = hex_points(a, 0.0, (800, 800), np.random.default_rng(0))
    for dx, dy in [(0.25, 0.1), (0.1, 0.4)]:  # core inside a triangle, off any site
        x, y = pts[:, 1] - 400.0 - a * dx, pts[:, 0] - 400.0 - a * dy
        nu, theta, r2 = 1 / 3, np.arctan2(y, x), x * x + y * y
        ux = a / (2 * np.pi) * (theta + x * y / (2 * (1 - nu) * r2))
        uy = (
            -a
            / (2 * np.pi)
            * ((1 - 2 * nu) / (4 * (1 - nu)) * np.log(r2) + (x * x - y * y) / (4 * (1 - nu) * r2))
        )
        moved = _inside(np.stack([pts[:, 0] + uy - 200, pts[:, 1] + ux - 200], axis=1), shape)
        s = lattice_statistics(moved, shape)
        assert (s["n_5fold"], s["n_7fold"], s["n_dislocations"]) == (1, 1, 1)
        assert s["n_unpaired_5fold"] == s["n_unpaired_7fold"] == 0
        assert s["n_defect_sites"] == 2 and 0.95 < s["psi6_global"] < 1.0


@pytest.mark.parametrize(
    "points",
    [
        np.zeros((0, 2)),
        [[5.0, 5.0]],
        [[5.0, 5.0], [9.0, 8.0]],
        [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]],
    ],
)
def test_degenerate_point_sets(points):
    s = lattice_statistics(np.asarray(points, dtype=float), (64, 64), 2.0, exclude_border_px=0.0)
    json.dumps(s, allow_nan=False)
    assert s["n_points"] == len(points)
    assert s["psi6_global"] is None and s["fraction_6fold"] is None
    assert s["n_sites"] == 0 and s["n_dislocations"] == 0


def test_statistics_are_json_serialisable():
    shape = (200, 200)
    pts = _inside(hex_points(20.0, 3.0, shape, np.random.default_rng(0)), shape)
    s = lattice_statistics(pts, shape, 1.0)
    assert json.loads(json.dumps(s, allow_nan=False)) == s


def test_statistics_reject_bad_input():
    with pytest.raises(InputError, match="centroids_rc"):
        lattice_statistics(np.zeros((5, 3)), (64, 64))
    with pytest.raises(InputError, match="image_shape"):
        lattice_statistics(np.zeros((5, 2)), (0, 64))
    with pytest.raises(InputError, match="pixel_size_nm"):
        lattice_statistics(np.zeros((5, 2)), (64, 64), -1.0)
