"""The one-call pipeline simulate_images / simulate_focal_series."""

import pytest
import torch

from ltemfactory.ltem import (
    Detector,
    Electrostatics,
    Microscope,
    Tilt,
    magnetic_phase,
    simulate_focal_series,
    simulate_images,
)

from .conftest import F64, random_unit, skyrmion

DX, DZ, MS = 3e-9, 27.5e-9, 2e5
CELL = (DX, DX, DZ)
MIC = Microscope(
    voltage_V=200e3, defocus_m=-2e-3, cs_m=1e-3, theta_c_rad=1e-5, defocus_spread_m=1e-7
)
DET = Detector(
    dose_e_per_px=200.0,
    mtf_nu0_cyc_per_px=0.3,
    read_noise_counts=1.0,
    hot_pixel_fraction=1e-3,
    gradient_max_rel=0.05,
    dose_rel_spread=0.1,
)
ES = Electrostatics(inner_potential_V=20.0, extinction_length_m=200e-9, support_phase_rms_rad=5e-3)


def _batch(dtype=torch.float32, b=3, n=32):
    gen = torch.Generator().manual_seed(0)
    return random_unit((b, 3, 1, n, n), gen, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_shapes_dtypes_and_phase_outputs(dtype):
    m = _batch(dtype)
    tilt = Tilt(20.0, 0.0)
    out = simulate_images(m, MS, CELL, MIC, tilt, electrostatic=ES, detector=DET, generator=1)
    assert out.intensity.shape == (3, 32, 32) and out.intensity.dtype == dtype
    assert out.clean_intensity.shape == (3, 32, 32)
    assert out.magnetic_phase.shape == (3, 32, 32) and out.magnetic_phase.dtype == dtype
    assert out.pixel_size_m == DX and out.tilt == tilt
    assert torch.allclose(out.defocus_m, torch.full((3,), -2e-3, dtype=F64))
    ref = magnetic_phase(m, MS, CELL, tilt).phase
    assert torch.allclose(out.magnetic_phase, ref)
    assert torch.allclose(out.intensity.mean(dim=(-2, -1)), torch.ones(3, dtype=dtype), atol=1e-5)


def test_seeded_runs_are_reproducible():
    m = _batch()
    a = simulate_images(
        m, MS, CELL, MIC, Tilt(20.0, 0.0), electrostatic=ES, detector=DET, generator=7
    )
    b = simulate_images(
        m, MS, CELL, MIC, Tilt(20.0, 0.0), electrostatic=ES, detector=DET, generator=7
    )
    c = simulate_images(
        m, MS, CELL, MIC, Tilt(20.0, 0.0), electrostatic=ES, detector=DET, generator=8
    )
    assert torch.equal(a.intensity, b.intensity) and torch.equal(a.total_phase, b.total_phase)
    assert not torch.equal(a.intensity, c.intensity)


def test_batch_equals_single_images_and_per_image_defocus():
    m = _batch(F64)
    batch = simulate_images(m, MS, CELL, MIC, Tilt(10.0, 5.0))
    for i in range(3):
        one = simulate_images(m[i], MS, CELL, MIC, Tilt(10.0, 5.0))
        assert torch.allclose(one.intensity[0], batch.intensity[i], atol=1e-12)
    dfs = [-1e-3, 0.0, 1e-3]
    per = simulate_images(m, MS, CELL, MIC, defocus_m=dfs)
    for i, d in enumerate(dfs):
        one = simulate_images(m[i : i + 1], MS, CELL, MIC.with_defocus(d))
        assert torch.allclose(one.intensity[0], per.intensity[i], atol=1e-12)
    assert torch.allclose(per.defocus_m, torch.tensor(dfs, dtype=F64))


def test_focal_series_and_per_cell_ms():
    m = skyrmion(32, DX, 10e-9, 4e-9, kind="neel")
    ms = torch.full((1, 32, 32), MS, dtype=F64)
    ms[:, :, :4] = 0.0  # a vacuum strip
    series = simulate_focal_series(
        m, ms, CELL, MIC, [-1e-3, 0.0, 1e-3], Tilt(20.0, 0.0), electrostatic=ES, generator=3
    )
    assert series.intensity.shape == (1, 3, 32, 32)
    assert series.defocus_m.shape == (3,)
    single = simulate_images(
        m, ms, CELL, MIC.with_defocus(1e-3), Tilt(20.0, 0.0), electrostatic=ES, generator=3
    )
    assert torch.allclose(series.intensity[:, 2], single.intensity, atol=1e-12)


def test_thickness_wedge_dims_one_side():
    m = skyrmion(32, DX, 10e-9, 4e-9, kind="bloch")
    es = Electrostatics(extinction_length_m=100e-9, thickness_gradient_per_m=(1e6, 0.0))
    out = simulate_images(m, MS, CELL, Microscope(defocus_m=0.0), electrostatic=es)
    col = out.intensity[0].mean(dim=0)
    assert float(col[0]) > float(col[-1])  # thicker towards +x → darker


@pytest.mark.gpu
def test_cuda_matches_cpu():
    m = _batch()
    cpu = simulate_images(
        m, MS, CELL, MIC, Tilt(20.0, 0.0), electrostatic=Electrostatics(inner_potential_V=20.0)
    )
    gpu = simulate_images(
        m.cuda(),
        MS,
        CELL,
        MIC,
        Tilt(20.0, 0.0),
        electrostatic=Electrostatics(inner_potential_V=20.0),
    )
    assert gpu.intensity.is_cuda
    assert torch.allclose(cpu.intensity, gpu.intensity.cpu(), atol=1e-4)
    det = simulate_images(m.cuda(), MS, CELL, MIC, Tilt(20.0, 0.0), detector=DET, generator=1)
    assert det.intensity.is_cuda
