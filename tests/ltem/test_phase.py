"""Magnetic and electrostatic phase (physics.md §2)."""

import math

import pytest
import torch

from ltemfactory.constants import E_CHARGE, HBAR, MU0, PHI0
from ltemfactory.errors import ConfigError, InputError
from ltemfactory.ltem.geometry import ProjectionGeometry, Tilt
from ltemfactory.ltem.microscope import interaction_constant
from ltemfactory.ltem.phase import (
    Electrostatics,
    magnetic_phase,
    magnetic_phase_direct,
    mansuripur_phase,
    projected_phases,
    support_phase,
)
from ltemfactory.ltem.tie import induction_from_phase

from .conftest import F64, random_unit, skyrmion, stripes_x

MS = 4e5
DX = 2e-9


W = 32  # stripe width [px]


def _stripe_case(nz=1, dz=20e-9, wall_px=1.5):
    m = stripes_x(128, 8, W, nz=nz, wall_px=wall_px)
    return m, (DX, DX, dz), nz * dz


def _interior_rows(margin: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows at least ``margin`` px from a wall and the sign of m_x there."""
    rows = torch.cat([torch.arange(s + margin, s + W - margin) for s in range(0, 128, W)])
    return rows, torch.where((rows // W) % 2 == 0, 1.0, -1.0).to(F64)


def test_stripe_phase_is_a_triangle_wave_with_the_aharonov_bohm_slope():
    """±x stripes (walls along x): ∂φ/∂y = (2π/Φ0) μ0 Ms t m_x, from ∫B_x dz = (ħ/e) ∂φ/∂y with
    ∫B_x dz = μ0 Ms t m_x — so the phase *rises* with the row index inside an m_x = +1 stripe."""
    m, cell, t = _stripe_case()
    phi = magnetic_phase(m, MS, cell).phase[0, :, 3]
    slope = 2 * math.pi / PHI0 * MU0 * MS * t
    assert slope == pytest.approx(E_CHARGE / HBAR * MU0 * MS * t, rel=1e-12)
    rows, sign = _interior_rows()
    d = (phi[rows + 1] - phi[rows - 1]) / (2 * DX)
    assert torch.allclose(d, sign * slope, rtol=0.01)
    assert float(phi[20] - phi[10]) > 0  # rising inside the first (+x) stripe
    # triangle: peak-to-peak = slope ∫ m_x dy over one stripe (= slope × W dy for sharp walls)
    assert float(phi.max() - phi.min()) == pytest.approx(
        slope * float(m[0, 0, :W, 0].sum()) * DX, rel=0.01
    )


def test_sharp_wall_stripes_have_the_same_mean_slope():
    """Unresolved (sharp) walls ring on the grid; the least-squares slope inside a stripe is still
    the Aharonov–Bohm slope."""
    m, cell, t = _stripe_case(wall_px=0.0)
    phi = magnetic_phase(m, MS, cell).phase[0, :, 3]
    slope = 2 * math.pi / PHI0 * MU0 * MS * t
    for start in range(0, 128, W):
        sign = 1.0 if (start // W) % 2 == 0 else -1.0
        r = torch.arange(start + 4, start + W - 4, dtype=F64)
        y = phi[start + 4 : start + W - 4]
        fit = float(((r - r.mean()) * (y - y.mean())).sum() / ((r - r.mean()) ** 2).sum()) / DX
        assert fit == pytest.approx(sign * slope, rel=0.01)


def test_induction_from_the_stripe_phase_is_mu0_ms_t():
    m, cell, t = _stripe_case()
    phi = magnetic_phase(m, MS, cell).phase
    bt = induction_from_phase(phi, DX)  # (B, 2, ny, nx) [T m]
    rows, sign = _interior_rows()
    assert torch.allclose(bt[0, 0, rows, 4], sign * MU0 * MS * t, rtol=0.01)
    assert float(bt[0, 1].abs().max()) < 1e-6 * MU0 * MS * t


def test_neel_skyrmion_has_no_phase_at_zero_tilt():
    cell = (DX, DX, 20e-9)
    kw = dict(n=128, dx=DX, radius=25e-9, wall=5e-9)
    neel = magnetic_phase(skyrmion(kind="neel", **kw), MS, cell).phase
    bloch = magnetic_phase(skyrmion(kind="bloch", **kw), MS, cell).phase
    assert float(bloch.abs().max()) > 0.1  # rad
    assert float(neel.abs().max()) <= 1e-6 * float(bloch.abs().max())


@pytest.mark.parametrize("tilt", [Tilt(20.0, 0.0), Tilt(15.0, -10.0), Tilt(0.0, 25.0)])
@pytest.mark.parametrize("box", [False, True])
def test_fast_tilted_phase_equals_brute_force_direct_sum(tilt, box):
    gen = torch.Generator().manual_seed(7)
    m = random_unit((2, 3, 3, 16, 16), gen)
    ms = MS * (0.5 + torch.rand((2, 3, 16, 16), generator=gen, dtype=F64))
    cell = (DX, DX, 5e-9)
    for frame in ("lab", "projected"):
        ref = magnetic_phase_direct(m, ms, cell, tilt, in_plane_box=box, frame=frame).phase
        if frame == "lab":
            fast = magnetic_phase(m, ms, cell, tilt, in_plane_box=box).phase
        else:
            g = ProjectionGeometry(m.shape[-3:], cell, tilt)
            from ltemfactory.ltem.phase import magnetic_phase_spectrum

            spec = magnetic_phase_spectrum(m, ms, cell, tilt, in_plane_box=box)
            fast = torch.fft.irfft2(spec, s=(g.ny, g.nx))
        err = float((fast - ref).abs().max()) / float(ref.abs().max())
        assert err < 1e-5, (frame, err)


def test_fast_path_on_an_odd_grid_equals_the_direct_sum():
    gen = torch.Generator().manual_seed(11)
    m = random_unit((1, 3, 2, 15, 17), gen)
    cell = (DX, DX, 6e-9)
    for tilt in (Tilt(20.0, 0.0), Tilt(15.0, -10.0)):
        ref = magnetic_phase_direct(m, MS, cell, tilt).phase
        fast = magnetic_phase(m, MS, cell, tilt).phase
        assert float((fast - ref).abs().max()) < 1e-5 * float(ref.abs().max())


def test_zero_tilt_fast_path_equals_mansuripur():
    gen = torch.Generator().manual_seed(3)
    m = random_unit((2, 3, 2, 24, 20), gen)
    ms = MS * torch.rand((2, 2, 24, 20), generator=gen, dtype=F64)
    cell = (DX, DX, 7e-9)
    fast = magnetic_phase(m, ms, cell, Tilt()).phase
    ref = mansuripur_phase(m, ms, cell).phase
    assert torch.allclose(fast, ref, atol=1e-12 * float(ref.abs().max()))
    direct = magnetic_phase_direct(m, ms, cell, Tilt()).phase
    assert torch.allclose(direct, ref, atol=1e-10 * float(ref.abs().max()))


@pytest.mark.parametrize("tilt", [Tilt(0.0, 0.0), Tilt(30.0, 0.0), Tilt(12.0, 20.0)])
def test_layers_of_a_z_uniform_film_add_up_to_one_thick_layer(tilt):
    """Σ of nz shifted slices × sinc(k'_z dz/2) = one slab × sinc(k'_z t/2): exact."""
    gen = torch.Generator().manual_seed(5)
    m1 = random_unit((1, 3, 1, 32, 32), gen)
    t = 24e-9
    one = magnetic_phase(m1, MS, (DX, DX, t), tilt).phase
    four = magnetic_phase(m1.expand(1, 3, 4, 32, 32), MS, (DX, DX, t / 4), tilt).phase
    assert torch.allclose(one, four, atol=1e-12 * float(one.abs().max()))


def test_tilt_about_x_steepens_stripes_along_y_by_one_over_cos():
    """Stripes varying along y, tilted by θ about x: projected thickness t/cosθ, m_x unchanged,
    so the slope along the image y axis becomes (2π/Φ0) μ0 Ms t / cosθ (period × cosθ)."""
    theta = 30.0
    m, cell, t = _stripe_case(dz=4e-9)  # thin film: wall smear t sinθ = 2 nm = 1 px
    phi = magnetic_phase(m, MS, cell, Tilt(theta, 0.0)).phase[0, :, 3]
    c = math.cos(math.radians(theta))
    slope = 2 * math.pi / PHI0 * MU0 * MS * t / c
    # image row r shows sample row (r − cy)/cosθ + cy; pick rows well inside the first stripe
    cy = 63.5
    rows = torch.tensor([r for r in range(128) if 8 <= (r - cy) / c + cy <= 23])
    d = (phi[rows + 1] - phi[rows - 1]) / (2 * DX)
    assert torch.allclose(d, torch.full_like(d, slope), rtol=0.01)
    # amplitude unchanged: peak-to-peak = (slope / cosθ) × projected width (W cosθ)
    untilted = magnetic_phase(m, MS, cell).phase[0, :, 3]
    assert float(phi.max() - phi.min()) == pytest.approx(
        float(untilted.max() - untilted.min()), rel=0.01
    )


def test_tilt_about_the_magnetisation_axis_keeps_the_stripe_slope():
    """Tilt by γ about y with m ∥ x: m_x' = cosγ, path t/cosγ — the slope along y is unchanged."""
    m, cell, t = _stripe_case(dz=4e-9)
    phi = magnetic_phase(m, MS, cell, Tilt(0.0, 35.0)).phase[0, :, 3]
    slope = 2 * math.pi / PHI0 * MU0 * MS * t
    rows, sign = _interior_rows(margin=10)  # the walls' m_z now projects onto x: stay clear
    d = (phi[rows + 1] - phi[rows - 1]) / (2 * DX)
    assert torch.allclose(d, sign * slope, rtol=0.01)


def test_flat_film_electrostatic_phase_and_absorption():
    tilt = Tilt(20.0, 10.0)
    t = 40e-9
    m = skyrmion(32, DX, 10e-9, 3e-9, kind="bloch", nz=2)
    es = Electrostatics(inner_potential_V=18.0, extinction_length_m=150e-9)
    ph = projected_phases(m, MS, (DX, DX, t / 2), tilt, 300e3, es)
    t_proj = t / (math.cos(math.radians(20.0)) * math.cos(math.radians(10.0)))
    phi_e = ph.total - ph.magnetic
    expected = interaction_constant(300e3) * 18.0 * t_proj
    assert torch.allclose(phi_e, torch.full_like(phi_e, expected), rtol=1e-12)
    amp = ph.amplitude
    assert torch.allclose(amp, torch.full_like(amp, math.exp(-t_proj / 300e-9)), rtol=1e-12)
    # the general (spectral) path gives the same for a full film
    es_map = Electrostatics(inner_potential_V=18.0, thickness_map=torch.ones(32, 32, dtype=F64))
    ph2 = projected_phases(m, MS, (DX, DX, t / 2), tilt, 300e3, es_map)
    assert torch.allclose(ph2.total - ph2.magnetic, phi_e, rtol=1e-9)


def test_thickness_map_scales_the_projected_thickness():
    n, t = 32, 30e-9
    x = torch.arange(n, dtype=F64)
    tmap = (1 + 0.1 * torch.cos(2 * torch.pi * 3 * x / n))[None, :].expand(n, n)
    m = torch.zeros(3, 1, n, n, dtype=F64)
    m[2] = 1.0
    es = Electrostatics(inner_potential_V=20.0, thickness_m=t, thickness_map=tmap)
    ph = projected_phases(m, MS, (DX, DX, 10e-9), Tilt(), 200e3, es)
    t_proj = (ph.total - ph.magnetic) / (interaction_constant(200e3) * 20.0)
    assert torch.allclose(t_proj[0], t * tmap, rtol=1e-9)
    with pytest.raises(InputError, match="thickness_map"):
        projected_phases(
            m,
            MS,
            (DX, DX, 10e-9),
            Tilt(),
            200e3,
            Electrostatics(inner_potential_V=1.0, thickness_map=torch.ones(3, 4, 4)),
        )


def test_island_projected_thickness_keeps_its_volume():
    """DC term of t_proj = V_sample / (projected image area), for any tilt."""
    tilt = Tilt(25.0, -15.0)
    m = torch.zeros(3, 1, 32, 32, dtype=F64)
    m[2] = 1.0
    ms = torch.zeros(1, 32, 32, dtype=F64)
    ms[0, 8:20, 10:26] = MS
    es = Electrostatics(inner_potential_V=20.0)
    ph = projected_phases(m, ms, (DX, DX, 30e-9), tilt, 200e3, es)
    g = ph.geometry
    t_proj = (ph.total - ph.magnetic) / (interaction_constant(200e3) * 20.0)
    frac = 12 * 16 / (32 * 32)
    assert float(t_proj.mean()) == pytest.approx(30e-9 * frac / g.area_factor, rel=1e-9)
    # mostly inside the island, near zero far from it
    assert float(t_proj[0, 14, 18]) == pytest.approx(30e-9 / g.area_factor, rel=0.1)
    assert abs(float(t_proj[0, 28, 2])) < 0.05 * 30e-9


def test_support_texture_is_seeded_zero_mean_with_the_requested_rms():
    g = ProjectionGeometry((1, 64, 64), (DX, DX, DX), Tilt())
    a = support_phase(3, g, 5e-3, 1e-9, torch.Generator().manual_seed(1), dtype=F64)
    b = support_phase(3, g, 5e-3, 1e-9, torch.Generator().manual_seed(1), dtype=F64)
    assert torch.equal(a, b)
    assert torch.allclose(a.std(dim=(-2, -1)), torch.full((3,), 5e-3, dtype=F64), rtol=1e-9)
    assert float(a.mean(dim=(-2, -1)).abs().max()) < 1e-12
    assert not torch.equal(a[0], a[1])  # drawn per image


def test_input_validation():
    m = stripes_x(16, 16, 4)
    with pytest.raises(InputError, match="m:"):
        magnetic_phase(m[:2], MS, (DX, DX, DX))
    with pytest.raises(InputError, match="Ms:"):
        magnetic_phase(m, torch.ones(5, 5), (DX, DX, DX))
    with pytest.raises(ConfigError, match="dx == dy"):
        magnetic_phase(m, MS, (DX, 2 * DX, DX))
    with pytest.raises(ConfigError, match="cell_size_m"):
        magnetic_phase(m, MS, (DX, DX, -1.0))
    bad = m.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="non-finite"):
        magnetic_phase(bad, MS, (DX, DX, DX))


def test_float32_matches_float64():
    m = skyrmion(64, DX, 15e-9, 4e-9, kind="bloch")
    tilt = Tilt(20.0, 0.0)
    p64 = magnetic_phase(m, MS, (DX, DX, 20e-9), tilt).phase
    p32 = magnetic_phase(m.float(), MS, (DX, DX, 20e-9), tilt).phase
    assert p32.dtype == torch.float32
    assert torch.allclose(p32.double(), p64, atol=1e-5 * float(p64.abs().max()))
