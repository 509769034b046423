"""Transfer function and propagation: analytic limits (physics.md §3), property-based."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ltemfactory.ltem.image import focal_series, image_intensity
from ltemfactory.ltem.microscope import Microscope
from ltemfactory.ltem.transfer import (
    aberration_phase,
    spatial_envelope,
    spatial_frequencies,
    temporal_envelope,
    transfer_function,
)

PIX = 2e-9
N = 32

defocus = st.floats(-5e-3, 5e-3)
cs = st.floats(0.0, 5.0)
volt = st.sampled_from([80e3, 200e3, 300e3])
seeds = st.integers(0, 2**31 - 1)


def _phase_object(seed: int, amp: float, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    phi = torch.randn(2, N, N, generator=g, dtype=torch.float64)
    # smooth it a little so that the weak-phase checks are meaningful
    phi = torch.fft.ifft2(torch.fft.fft2(phi) * torch.exp(-0.02 * _k2())).real
    phi = phi / phi.abs().max() * amp
    return phi.to(dtype)


def _k2() -> torch.Tensor:
    q = torch.fft.fftfreq(N, dtype=torch.float64) * N
    return q[None, :] ** 2 + q[:, None] ** 2


@settings(max_examples=30, deadline=None)
@given(df=defocus, c=cs, v=volt, seed=seeds, amp=st.floats(0.01, 3.0))
def test_coherent_propagation_conserves_total_intensity(df, c, v, seed, amp):
    """|T| = 1 without envelopes/aperture, so Σ I = Σ |ψ|² (Parseval)."""
    psi = torch.polar(torch.ones(2, N, N, dtype=torch.float64), _phase_object(seed, amp))
    mic = Microscope(voltage_V=v, defocus_m=df, cs_m=c)
    img = image_intensity(psi, mic, pixel_size_m=PIX)
    assert torch.allclose(
        img.sum(dim=(-2, -1)), torch.full((2,), float(N * N), dtype=torch.float64), rtol=1e-12
    )


@settings(max_examples=20, deadline=None)
@given(seed=seeds, amp=st.floats(0.01, 10.0), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_pure_phase_object_in_focus_gives_uniform_intensity(seed, amp, dtype):
    psi = torch.polar(torch.ones(2, N, N, dtype=dtype), _phase_object(seed, amp, dtype))
    img = image_intensity(psi, Microscope(defocus_m=0.0, cs_m=0.0), pixel_size_m=PIX)
    assert img.dtype == dtype
    assert torch.allclose(img, torch.ones_like(img), atol=1e-6, rtol=0)


@settings(max_examples=25, deadline=None)
@given(df=defocus, c=cs, seed=seeds, amp=st.floats(0.01, 3.0))
def test_conjugate_wave_images_like_reversed_aberrations(df, c, seed, amp):
    """T(q) even ⇒ I[ψ*](Δf, Cs) = I[ψ](−Δf, −Cs): flipping the phase = reversing the focus."""
    psi = torch.polar(torch.ones(2, N, N, dtype=torch.float64), _phase_object(seed, amp))
    a = image_intensity(psi.conj(), Microscope(defocus_m=df, cs_m=c), pixel_size_m=PIX)
    b = image_intensity(psi, Microscope(defocus_m=-df, cs_m=-c), pixel_size_m=PIX)
    assert torch.allclose(a, b, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(df=st.floats(-2e-4, 2e-4), seed=seeds)
def test_weak_phase_object_follows_linear_transfer(df, seed):
    """ψ = e^{iφ}, |φ| ≪ 1: I − 1 = 2 F⁻¹[φ̃ sin χ] + O(φ²) (phase-contrast transfer)."""
    amp = 1e-4
    phi = _phase_object(seed, amp)
    psi = torch.polar(torch.ones_like(phi), phi)
    mic = Microscope(defocus_m=df, cs_m=1e-3)
    img = image_intensity(psi, mic, pixel_size_m=PIX)
    qx, qy = spatial_frequencies((N, N), PIX)
    chi = aberration_phase(qx, qy, mic.wavelength_m, df, 1e-3)
    lin = 1 + 2 * torch.fft.ifft2(torch.fft.fft2(phi) * torch.sin(chi)).real
    assert torch.allclose(img, lin, atol=5 * amp**2)


def test_small_defocus_reproduces_the_tie_sign():
    """I(Δf) ≈ 1 − (λΔf/2π) ∇²φ — the sign used by the TIE (physics.md §4)."""
    n, pix = 64, 2e-9
    x = torch.arange(n, dtype=torch.float64) * pix
    k = 2 * math.pi * 3 / (n * pix)
    phi = 1e-3 * torch.cos(k * x)[None, None, :].expand(1, n, n)
    mic = Microscope(defocus_m=1e-6)
    img = image_intensity(torch.polar(torch.ones_like(phi), phi), mic, pixel_size_m=pix)
    lap = -(k**2) * phi
    expected = 1 - mic.wavelength_m * 1e-6 / (2 * math.pi) * lap
    assert torch.allclose(img, expected, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(df=defocus, c=cs, tc=st.floats(0, 1e-3), spread=st.floats(0, 1e-6), v=volt)
def test_envelopes_are_in_unit_interval_and_one_at_zero_frequency(df, c, tc, spread, v):
    mic = Microscope(voltage_V=v, defocus_m=df, cs_m=c, theta_c_rad=tc, defocus_spread_m=spread)
    qx, qy = spatial_frequencies((N, N), PIX)
    for env in (spatial_envelope(qx, qy, mic), temporal_envelope(qx, qy, mic)):
        assert float(env.min()) >= 0.0 and float(env.max()) <= 1.0
        assert float(env[0, 0]) == 1.0
    t = transfer_function(qx, qy, mic)
    assert float(t.abs().max()) <= 1.0 + 1e-12
    assert t[0, 0] == 1


@settings(max_examples=25, deadline=None)
@given(df=defocus, c=cs, tc=st.floats(0, 1e-3), v=volt)
def test_spatial_envelope_equals_closed_form_without_astigmatism(df, c, tc, v):
    """E_s = exp[−(πθc/λ)² (Cs λ³ q³ + Δf λ q)²] (physics.md §3)."""
    mic = Microscope(voltage_V=v, defocus_m=df, cs_m=c, theta_c_rad=tc)
    qx, qy = spatial_frequencies((N, N), PIX)
    q = torch.sqrt(qx**2 + qy**2)
    lam = mic.wavelength_m
    ref = torch.exp(-((math.pi * tc / lam) ** 2) * (c * lam**3 * q**3 + df * lam * q) ** 2)
    assert torch.allclose(spatial_envelope(qx, qy, mic), ref, rtol=1e-9, atol=1e-300)


def test_temporal_envelope_closed_form_and_aperture():
    mic = Microscope(defocus_spread_m=100e-9, aperture_rad=2e-4)
    qx, qy = spatial_frequencies((N, N), 0.02e-9)
    q2 = qx**2 + qy**2
    ref = torch.exp(-0.5 * (math.pi * mic.wavelength_m * 100e-9) ** 2 * q2**2)
    assert torch.allclose(temporal_envelope(qx, qy, mic), ref, rtol=1e-12)
    t = transfer_function(qx, qy, mic)
    outside = mic.wavelength_m * q2.sqrt() > 2e-4
    assert bool(outside.any()) and bool((t[outside] == 0).all())


def test_astigmatism_phase_is_cos_2phi():
    lam = Microscope().wavelength_m
    qx = torch.tensor([1e8, 0.0, 1e8 / math.sqrt(2)], dtype=torch.float64)
    qy = torch.tensor([0.0, 1e8, 1e8 / math.sqrt(2)], dtype=torch.float64)
    chi = aberration_phase(qx, qy, lam, 0.0, 0.0, astigmatism_m=1e-6, astigmatism_angle_rad=0.0)
    base = math.pi * lam * 1e-6 * 1e16
    assert torch.allclose(
        chi, torch.tensor([base, -base, 0.0], dtype=torch.float64), atol=1e-9 * base
    )


def test_focal_series_matches_single_images():
    psi = torch.polar(torch.ones(2, N, N, dtype=torch.float64), _phase_object(1, 0.5))
    mic = Microscope(cs_m=1e-3, theta_c_rad=1e-5)
    dfs = [-1e-4, 0.0, 2e-4]
    series = focal_series(psi, mic, dfs, pixel_size_m=PIX)
    assert series.shape == (2, 3, N, N)
    for i, d in enumerate(dfs):
        single = image_intensity(psi, mic.with_defocus(d), pixel_size_m=PIX)
        assert torch.allclose(series[:, i], single, atol=1e-12)
    per_image = image_intensity(psi, mic, pixel_size_m=PIX, defocus_m=[dfs[0], dfs[2]])
    assert torch.allclose(per_image[0], series[0, 0], atol=1e-12)
    assert torch.allclose(per_image[1], series[1, 2], atol=1e-12)


@pytest.mark.gpu
def test_transfer_on_cuda_matches_cpu():
    psi = torch.polar(
        torch.ones(2, N, N, dtype=torch.float32), _phase_object(2, 0.5, torch.float32)
    )
    mic = Microscope(defocus_m=1e-4, cs_m=1e-3, theta_c_rad=1e-5, defocus_spread_m=1e-7)
    cpu = image_intensity(psi, mic, pixel_size_m=PIX)
    gpu = image_intensity(psi.cuda(), mic, pixel_size_m=PIX).cpu()
    assert torch.allclose(cpu, gpu, atol=1e-5)
