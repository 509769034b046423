"""Tilt conventions, projected lattice and lab-frame resampling (physics.md §2)."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from ltemfactory.errors import ConfigError
from ltemfactory.ltem.geometry import (
    ProjectionGeometry,
    Tilt,
    periodic_sinc_matrix,
    residual_image_rotation_rad,
)

F64 = torch.float64


def test_rotation_matrix_is_x_then_y():
    t = Tilt(20.0, -10.0)
    ref = Rotation.from_euler("XY", [0, 0]).as_matrix()  # identity, for shape
    ref = (
        Rotation.from_rotvec([0, math.radians(-10.0), 0]).as_matrix()
        @ Rotation.from_rotvec([math.radians(20.0), 0, 0]).as_matrix()
    )
    assert np.allclose(t.rotation_matrix(), ref)


def test_projection_formulas_follow_from_the_rotation():
    """(i, j) and (mx', my') of physics.md §2 are the x, y rows of R = R_y(γ) R_x(θ)."""
    t = Tilt(23.0, 17.0)
    g = ProjectionGeometry((3, 8, 8), (1e-9, 1e-9, 1e-9), t)
    p = np.array([1.3, -0.7, 2.1])
    i, j = g.project_points_m(*p)
    assert np.allclose([i, j], (t.rotation_matrix() @ p)[:2])


@pytest.mark.parametrize(
    ("alpha", "beta"), [(20.0, 0.0), (20.0, 90.0), (25.0, 30.0), (-15.0, 120.0)]
)
def test_tilt_about_an_in_plane_axis(alpha, beta):
    t = Tilt.about_axis(alpha, beta)
    axis = np.array([math.cos(math.radians(beta)), math.sin(math.radians(beta)), 0.0])
    rn = Rotation.from_rotvec(math.radians(alpha) * axis).as_matrix()
    # same beam direction in the sample frame
    assert np.allclose(t.beam_direction_in_sample(), rn.T @ [0, 0, 1])
    # and the same rotation up to an in-plane rotation ψ about the beam
    psi = residual_image_rotation_rad(alpha, beta)
    rz = Rotation.from_rotvec([0, 0, psi]).as_matrix()
    assert np.allclose(rz @ t.rotation_matrix(), rn)
    assert abs(psi) < math.radians(alpha) ** 2  # second order
    if beta == 0.0:
        assert t == Tilt(alpha, 0.0)
    if beta == 90.0:
        assert t.tilt_x_deg == pytest.approx(0.0, abs=1e-12) and t.tilt_y_deg == pytest.approx(
            alpha
        )


def test_periodic_sinc_matrix_interpolates_trigonometric_polynomials_exactly():
    for n in (16, 17):
        u = np.linspace(-3.2, n + 2.7, 41)
        x = np.arange(n)

        def f(s, n=n):
            return np.cos(2 * np.pi * 3 * s / n + 0.3) + 0.5 * np.sin(2 * np.pi * 5 * s / n)

        assert np.allclose(periodic_sinc_matrix(u, n) @ f(x), f(u), atol=1e-12)
        assert np.allclose(periodic_sinc_matrix(x.astype(float), n), np.eye(n), atol=1e-12)


@pytest.mark.parametrize("tilt", [Tilt(25.0, 0.0), Tilt(0.0, 25.0), Tilt(15.0, -20.0)])
def test_to_lab_evaluates_a_projected_plane_wave_at_the_lab_pixels(tilt):
    ny, nx, dx = 24, 20, 1.5e-9
    g = ProjectionGeometry((1, ny, nx), (dx, dx, 4e-9), tilt)
    kx, ky = g.wavevectors_np(half=False)
    kx0, ky0 = kx[3, 2], ky[3, 2]  # a wave vector of the projected reciprocal lattice

    def field(x, y):
        return np.cos(kx0 * x + ky0 * y + 0.4)

    yy, xx = np.meshgrid(
        (np.arange(ny) - (ny - 1) / 2) * dx, (np.arange(nx) - (nx - 1) / 2) * dx, indexing="ij"
    )
    # projected grid: sample column (col, row) of the mid-plane at r = L (x, y)
    i, j = g.project_points_m(xx, yy)
    proj = torch.as_tensor(field(i, j))[None]
    lab = g.to_lab(proj)[0].numpy()
    assert np.allclose(lab, field(xx, yy), atol=1e-10)
    # complex plane wave exp(i K·r)
    wave = torch.as_tensor(np.exp(1j * (kx0 * i + ky0 * j)))[None]
    lab_wave = g.to_lab(wave)[0].numpy()
    assert np.allclose(lab_wave, np.exp(1j * (kx0 * xx + ky0 * yy)), atol=1e-10)


def test_sample_to_image_foreshortens_by_cos_theta():
    n = 64
    y, x = torch.meshgrid(
        torch.arange(n, dtype=F64) - 31.5, torch.arange(n, dtype=F64) - 31.5, indexing="ij"
    )
    disc = ((x**2 + y**2) < 12.0**2).long() * 7
    g = ProjectionGeometry((1, n, n), (1e-9, 1e-9, 1e-9), Tilt(40.0, 0.0))
    img = g.sample_to_image(disc, order=0)
    assert img.dtype == disc.dtype and set(img.unique().tolist()) == {0, 7}
    rows = (img == 7).any(dim=1).sum().item()
    cols = (img == 7).any(dim=0).sum().item()
    assert rows == pytest.approx(cols * math.cos(math.radians(40.0)), abs=2)
    assert (img == 7).sum().item() == pytest.approx(
        (disc == 7).sum().item() * math.cos(math.radians(40.0)), rel=0.05
    )
    lin = g.sample_to_image(disc.double(), order=1)
    assert float(lin.max()) <= 7.0 and float(lin.min()) >= 0.0
    assert torch.equal(
        ProjectionGeometry((1, n, n), (1e-9,) * 3, Tilt()).sample_to_image(disc), disc
    )


def test_projected_lattice_and_area_factor():
    g = ProjectionGeometry((2, 10, 20), (1e-9, 1e-9, 3e-9), Tilt(30.0, 20.0))
    a = g.projected_lattice_m()
    assert abs(np.linalg.det(a)) == pytest.approx(200e-18 * g.area_factor)
    ct, cg = math.cos(math.radians(30)), math.cos(math.radians(20))
    assert g.area_factor == pytest.approx(ct * cg)


def test_tilt_validation():
    with pytest.raises(ConfigError, match="tilt_x_deg"):
        Tilt(90.0, 0.0)
    with pytest.raises(ConfigError, match="tilt_y_deg"):
        Tilt(0.0, float("nan"))
