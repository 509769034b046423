"""The render stage and `ltemfactory simulate`."""

import copy
from pathlib import Path

import numpy as np
import pytest
import tifffile

from ltemfactory import cli
from ltemfactory.config import load_config, support
from ltemfactory.relax import relax_batch, write_relax_store
from ltemfactory.render import RENDER_UNITS, draw_imaging, render_store, write_render_store
from ltemfactory.stores import open_store
from ltemfactory.sweep import draw_sweep

TINY = Path(__file__).parent / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def relax_store(tmp_path_factory):
    cfg = load_config(TINY)
    rows = draw_sweep(cfg)[:2]
    path = tmp_path_factory.mktemp("relax") / "batch_0.zarr"
    write_relax_store(path, relax_batch(rows, cfg["sweep"]["grid"], cfg["relax"]), cfg, 0)
    return cfg, path


def test_imaging_draws_are_seeded_in_range_and_cover_both_signs():
    render = load_config(TINY)["render"]
    draws = [draw_imaging(render, seed=11, variant=v) for v in range(200)]
    assert draws[3] == draw_imaging(render, seed=11, variant=3)
    assert draws[3] != draw_imaging(render, seed=12, variant=3)
    for key in RENDER_UNITS:
        lo, hi = support(render["parameters"][key])
        values = np.array([d[key] for d in draws])
        if key in ("defocus_mm", "tilt_deg"):
            values = np.abs(values)
        assert values.min() >= lo and values.max() <= hi, key
    for key in ("defocus_mm", "tilt_deg"):
        signs = np.sign([d[key] for d in draws])
        assert 0.35 < (signs > 0).mean() < 0.65, key
    axes = np.array([d["tilt_axis_deg"] for d in draws])
    assert axes.min() < 30 and axes.max() > 330  # azimuths span the full circle


def test_render_store_contents_and_determinism(tmp_path, relax_store):
    cfg, path = relax_store
    variables = render_store(path, cfg["render"])
    again = render_store(path, copy.deepcopy(cfg["render"]))
    assert np.array_equal(variables["image"].data, again["image"].data)
    out = tmp_path / "render.zarr"
    write_render_store(out, variables, cfg, str(path))
    g = open_store(out)
    k = cfg["render"]["variants_per_state"]
    assert g["image"].shape == (2 * k, 32, 32) and g["image"].dtype == np.float32
    assert g["image"].metadata.dimension_names == ("image", "row", "col")
    assert list(g["state_id"][:]) == [0] * k + [1] * k
    assert list(g["variant"][:]) == list(range(k)) * 2
    assert g["defocus_mm"].attrs["units"] == "mm" and g["magnetic_phase"].attrs["units"] == "rad"
    assert np.all(np.isfinite(g["image"][:])) and np.all(np.isfinite(g["magnetic_phase"][:]))
    # detector normalisation: every image has mean ~1; noise makes image != clean_image
    assert np.allclose(g["image"][:].mean(axis=(1, 2)), 1.0, atol=0.05)
    assert not np.array_equal(g["image"][:], g["clean_image"][:])
    # a tilted Néel lattice has magnetic phase contrast; variants of one state differ
    assert g["magnetic_phase"][:].std(axis=(1, 2)).min() > 0
    assert not np.array_equal(g["image"][0], g["image"][1])


def test_cli_render(tmp_path, relax_store):
    _, path = relax_store
    out = tmp_path / "r.zarr"
    args = ["render", "--config", str(TINY), "--relax", str(path), "--out", str(out)]
    assert cli.main(args) == 0
    assert open_store(out).attrs["stage"] == "render"


def test_simulate_writes_imagej_tiffs_and_figure(tmp_path, relax_store):
    _, path = relax_store
    ovf = tmp_path / "s0.ovf"
    assert cli.main(["export-ovf", str(path), "--state", "0", "--out", str(ovf)]) == 0
    out = tmp_path / "sim"
    args = ["simulate", str(ovf), "--out-dir", str(out), "--defocus-mm", "-1.5"]
    assert cli.main([*args, "--tilt-deg", "20", "--dose-e-per-px", "500"]) == 0
    with tifffile.TiffFile(out / "s0_ltem.tif") as tif:
        assert tif.is_imagej
        image = tif.asarray()
        x_res = tif.pages[0].tags["XResolution"].value
    assert image.shape == (32, 32) and image.dtype == np.float32
    assert x_res[0] / x_res[1] == pytest.approx(1 / 0.003, rel=1e-4)  # 3 nm = 0.003 µm pixels
    assert tifffile.imread(out / "s0_induction_Tnm.tif").shape == (2, 32, 32)
    assert (out / "s0_figure.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--defocus-mm", "0"], "defocus_mm"),
        (["--thickness-nm", "-5"], "thickness_nm"),
        (["--voltage-kV", "-200"], "voltage_kV"),
        (["--Ms-A-per-m", "nan"], "Ms_A_per_m"),
    ],
)
def test_simulate_rejects_impossible_values(tmp_path, capsys, extra, message):
    npy = tmp_path / "m.npy"
    m = np.zeros((3, 1, 16, 16))
    m[2] = 1.0
    np.save(npy, m)
    args = ["simulate", str(npy), "--out-dir", str(tmp_path / "o"), "--cell-size-nm", "2"]
    assert cli.main([*args, "--thickness-nm", "10", *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "array,message",
    [
        (np.full((3, 1, 8, 8), np.nan), "NaN"),
        (np.zeros((4, 8, 8)), "shape"),
    ],
)
def test_simulate_rejects_bad_magnetisation(tmp_path, capsys, array, message):
    npy = tmp_path / "m.npy"
    np.save(npy, array)
    args = ["simulate", str(npy), "--out-dir", str(tmp_path / "o"), "--cell-size-nm", "2"]
    assert cli.main([*args, "--thickness-nm", "10"]) == 2
    assert message in capsys.readouterr().err


def test_simulate_needs_cell_size_for_npy(tmp_path, capsys):
    npy = tmp_path / "m.npy"
    np.save(npy, np.ones((3, 1, 8, 8)) / np.sqrt(3))
    assert cli.main(["simulate", str(npy), "--out-dir", str(tmp_path / "o")]) == 2
    assert "--cell-size-nm" in capsys.readouterr().err


def test_simulate_rejects_unknown_ovf(tmp_path, capsys):
    bad = tmp_path / "x.ovf"
    bad.write_text("# OOMMF OVF 3.0\n")
    assert cli.main(["simulate", str(bad), "--out-dir", str(tmp_path / "o")]) == 2
    assert str(bad) in capsys.readouterr().err
