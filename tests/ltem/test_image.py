"""Image formation of skyrmions: Fresnel contrast, tilt, defocus and flip (physics.md §2–3)."""

import pytest
import torch

from ltemfactory.ltem.geometry import Tilt
from ltemfactory.ltem.image import flip_series, image_wave
from ltemfactory.ltem.microscope import Microscope
from ltemfactory.ltem.phase import Electrostatics, projected_phases
from ltemfactory.ltem.simulate import simulate_images

from .conftest import F64, skyrmion

N, DX, DZ, MS = 128, 2e-9, 20e-9, 4e5
R = 25e-9
CELL = (DX, DX, DZ)


def _lobes(img: torch.Tensor) -> tuple[float, float]:
    """(I(−R, 0) − I(+R, 0), I(0, −R) − I(0, +R)), x right, y down the rows, from the centre
    (N−1)/2; each value a 4×4-px mean over windows placed mirror-symmetrically about the centre."""
    k = round(R / DX)
    mid = slice(N // 2 - 2, N // 2 + 2)  # 4 px symmetric about (N−1)/2
    plus = slice(N // 2 + k - 2, N // 2 + k + 2)
    minus = slice(N // 2 - k - 2, N // 2 - k + 2)  # mirror image of `plus`

    def mean(rows, cols):
        return float(img[rows, cols].mean())

    return mean(mid, minus) - mean(mid, plus), mean(minus, mid) - mean(plus, mid)


def _neel_image(tilt_deg: float, defocus: float) -> torch.Tensor:
    m = skyrmion(N, DX, R, 6e-9, kind="neel")
    mic = Microscope(voltage_V=200e3, defocus_m=defocus)
    return simulate_images(m, MS, CELL, mic, Tilt(tilt_deg, 0.0)).intensity[0]


def test_tilted_neel_skyrmion_shows_a_lobe_pair_that_reverses_with_tilt_and_defocus():
    """Tilt θ about x: m_y' = m_y cosθ − m_z sinθ turns the reversed core into an effective
    in-plane moment Δm_y' = +2 sinθ along y. Its induction deflects the beam along x, so the
    dark/bright lobes sit at (∓R, 0): the dark|bright boundary is perpendicular to the tilt axis x
    (the line joining the lobes is parallel to it). Sign: ∇²φ = −(eμ0 Ms t/ħ)(∂x m_y' − ∂y m_x')
    < 0 on the left edge and I ≈ 1 − (λΔf/2π)∇²φ, so for θ > 0 and Δf > 0 the left lobe is
    bright: I(−R, 0) − I(+R, 0) > 0."""
    df = 200e-6
    base_x, base_y = _lobes(_neel_image(20.0, df))
    assert base_x > 0.02  # a clear lobe pair (fractional intensity difference)
    assert abs(base_y) < 0.05 * base_x  # and nothing along y
    assert _lobes(_neel_image(-20.0, df))[0] == pytest.approx(-base_x, rel=0.05)
    assert _lobes(_neel_image(20.0, -df))[0] == pytest.approx(-base_x, rel=0.05)
    assert _lobes(_neel_image(-20.0, -df))[0] == pytest.approx(base_x, rel=0.05)
    assert abs(_lobes(_neel_image(0.0, df))[0]) < 1e-6


def test_neel_lobes_for_tilt_about_y_lie_along_y():
    m = skyrmion(N, DX, R, 6e-9, kind="neel")
    img = simulate_images(m, MS, CELL, Microscope(defocus_m=200e-6), Tilt(0.0, 20.0)).intensity[0]
    lx, ly = _lobes(img)
    assert abs(ly) > 0.02 and abs(lx) < 0.05 * abs(ly)


def test_bloch_contrast_reverses_with_defocus_sign():
    m = skyrmion(N, DX, R, 6e-9, kind="bloch")
    for cs in (0.0, 1e-3):
        mic = Microscope(defocus_m=100e-6, cs_m=cs)
        plus = simulate_images(m, MS, CELL, mic).intensity[0] - 1
        minus = simulate_images(m, MS, CELL, mic.with_defocus(-100e-6)).intensity[0] - 1
        corr = float((plus * minus).sum() / (plus.norm() * minus.norm()))
        assert corr < -0.99
        # the core of a Bloch skyrmion is bright at one defocus sign and dark at the other
        c = slice(N // 2 - 2, N // 2 + 2)
        assert float(plus[c, c].mean()) * float(minus[c, c].mean()) < 0


def test_flipped_sample_series_reverses_magnetic_contrast():
    """φ_m → −φ_m with the electrostatic phase kept: for Cs = 0 (T even in Δf ↔ conj)
    I_flip(Δf) = I(−Δf) exactly, with or without a flat-film electrostatic phase."""
    m = skyrmion(N, DX, R, 6e-9, kind="bloch")
    es = Electrostatics(inner_potential_V=20.0, extinction_length_m=200e-9)
    ph = projected_phases(m, MS, CELL, Tilt(), 200e3, es)
    mic = Microscope(defocus_m=0.0, theta_c_rad=2e-5, defocus_spread_m=5e-8)
    dfs = [-150e-6, 0.0, 150e-6]
    s = flip_series(ph, mic, dfs)  # (B, 2, nf, ny, nx)
    assert s.shape == (1, 2, 3, N, N)
    assert torch.allclose(s[0, 1, 0], s[0, 0, 2], atol=1e-10)
    assert torch.allclose(s[0, 1, 2], s[0, 0, 0], atol=1e-10)
    contrast, contrast_flip = s[0, 0, 2] - s[0, 0, 2].mean(), s[0, 1, 2] - s[0, 1, 2].mean()
    corr = float((contrast * contrast_flip).sum() / (contrast.norm() * contrast_flip.norm()))
    assert corr < -0.95


def test_simulate_flip_negates_the_magnetic_phase_and_keeps_the_electrostatic():
    m = skyrmion(64, DX, 12e-9, 4e-9, kind="bloch")
    es = Electrostatics(inner_potential_V=20.0)
    kw = dict(electrostatic=es)
    a = simulate_images(m, MS, CELL, Microscope(), Tilt(15.0, 5.0), **kw)
    b = simulate_images(m, MS, CELL, Microscope(), Tilt(15.0, 5.0), flip=True, **kw)
    assert torch.allclose(b.magnetic_phase, -a.magnetic_phase)
    assert torch.allclose(b.total_phase - b.magnetic_phase, a.total_phase - a.magnetic_phase)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_pure_phase_object_in_focus_is_uniform(dtype):
    m = skyrmion(64, DX, 12e-9, 4e-9, kind="bloch").to(dtype)
    es = Electrostatics(inner_potential_V=20.0, support_phase_rms_rad=1e-2)
    img = simulate_images(m, MS, CELL, Microscope(defocus_m=0.0), electrostatic=es, generator=1)
    assert img.intensity.dtype == dtype
    assert torch.allclose(img.intensity, torch.ones_like(img.intensity), atol=1e-6, rtol=0)
    # tilted: exact on the projected grid, where the exit wave lives
    ph = projected_phases(m, MS, CELL, Tilt(20.0, -10.0), 200e3, es)
    w = image_wave(ph.exit_wave(), Microscope(defocus_m=0.0), ph.geometry, to_lab=False)
    assert torch.allclose(w.abs() ** 2, torch.ones(w.shape, dtype=dtype), atol=1e-6, rtol=0)
