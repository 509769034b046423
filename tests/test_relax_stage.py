"""The relax stage: sweep rows -> relaxed batch -> its own Zarr store, and the CLI around it."""

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from ltemfactory import cli
from ltemfactory.config import load_config
from ltemfactory.ovf import read_ovf
from ltemfactory.relax import relax_batch, write_relax_store
from ltemfactory.stores import open_store
from ltemfactory.sweep import draw_sweep, write_sweep_tsv

TINY = Path(__file__).parent / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def tiny():
    cfg = load_config(TINY)
    return cfg, draw_sweep(cfg)


@pytest.fixture(scope="module")
def relaxed(tiny):
    cfg, rows = tiny
    return relax_batch(rows[:2], cfg["sweep"]["grid"], cfg["relax"])


def test_same_config_gives_bit_identical_states(tiny, relaxed):
    cfg, rows = tiny
    again = relax_batch(copy.deepcopy(rows[:2]), cfg["sweep"]["grid"], cfg["relax"])
    assert np.array_equal(relaxed.m, again.m)
    assert np.array_equal(relaxed.Ms, again.Ms)
    assert np.array_equal(relaxed.iterations, again.iterations)


def test_store_holds_states_parameters_and_diagnostics(tmp_path, tiny, relaxed):
    cfg, rows = tiny
    path = tmp_path / "batch_0.zarr"
    write_relax_store(path, relaxed, cfg, 0)
    g = open_store(path)
    m = g["m"]
    assert m.shape == (2, 3, 1, 32, 32) and m.dtype == np.float32
    assert m.metadata.dimension_names == ("state", "component", "layer", "row", "col")
    assert np.allclose(np.linalg.norm(m[:], axis=1), 1.0, atol=1e-5)
    assert list(g["state_id"][:]) == [0, 1]
    assert g["Ms_A_per_m"].attrs["units"] == "A/m"
    assert list(g["initial_state"][:]) == [r["initial_state"] for r in rows[:2]]
    assert g["energy_demag"].attrs["units"] == "J"
    # grain disorder: per-cell Ms within ±disorder of the state's Ms, mean near it
    for i, row in enumerate(rows[:2]):
        ms = g["Ms"][i]
        spread = row["grain_disorder_pct"] / 100
        assert ms.min() >= row["Ms_A_per_m"] * (1 - spread) * (1 - 1e-6)
        assert ms.max() <= row["Ms_A_per_m"] * (1 + spread) * (1 + 1e-6)
    assert g["converged"][:].all()
    q, n = g["topological_charge"][:], g["skyrmion_count"][:]
    assert np.allclose(q, np.round(q), atol=1e-3)  # relaxed lattices: integer charges
    assert g.attrs["stage"] == "relax" and g.attrs["config"]["seed"] == cfg["seed"]
    assert (n >= 0).all() and (g["mean_radius_nm"][:] >= 0).all()


def test_out_of_budget_states_are_stored_as_not_converged(tmp_path, tiny):
    cfg, rows = tiny
    relax = dict(cfg["relax"], max_iterations=3, tolerance=1e-6)
    batch = relax_batch(rows[:2], cfg["sweep"]["grid"], relax)
    write_relax_store(tmp_path / "b.zarr", batch, cfg, 0)
    assert not open_store(tmp_path / "b.zarr")["converged"][:].any()


def test_interrupted_write_leaves_the_previous_store_intact(tmp_path, tiny, relaxed):
    cfg, _ = tiny
    path = tmp_path / "batch_0.zarr"
    write_relax_store(path, relaxed, cfg, 0)
    before = open_store(path)["m"][:]
    broken = copy.copy(relaxed)
    broken.energies = {"exchange": np.zeros((3, 3))}  # wrong shape: fails mid-write
    with pytest.raises(ValueError):
        write_relax_store(path, broken, cfg, 0)
    assert np.array_equal(open_store(path)["m"][:], before)
    assert [p.name for p in tmp_path.iterdir()] == ["batch_0.zarr"]  # no temporary left


def test_field_history_states_visit_the_field_sequence(tiny):
    """field_history = random start + relaxation at the listed field fractions first: with no
    fractions it is exactly a random start; with fractions it takes another path."""
    cfg, rows = tiny
    grid = cfg["sweep"]["grid"]
    row = dict(rows[0], initial_state="field_history")
    plain = relax_batch([dict(rows[0], initial_state="random")], grid, cfg["relax"])
    none = relax_batch([row], grid, dict(cfg["relax"], field_history_fraction=[]))
    assert np.array_equal(none.m, plain.m)
    hist = relax_batch([row], grid, dict(cfg["relax"], field_history_fraction=[0.0, 0.5]))
    assert not np.array_equal(hist.m, plain.m)


def test_cli_relax_montage_and_ovf_export(tmp_path):
    cfg_path = tmp_path / "tiny.yaml"
    cfg = yaml.safe_load(TINY.read_text())
    cfg_path.write_text(yaml.safe_dump(cfg))
    sweep = tmp_path / "sweep.tsv"
    assert cli.main(["sweep", "--config", str(cfg_path), "--out", str(sweep)]) == 0
    store = tmp_path / "batch_1.zarr"
    args = ["relax", "--config", str(cfg_path), "--sweep", str(sweep), "--batch", "1"]
    assert cli.main([*args, "--out", str(store), "--threads", "1"]) == 0
    assert list(open_store(store)["state_id"][:]) == [2, 3]
    png = tmp_path / "m.png"
    assert cli.main(["montage", str(store), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ovf = tmp_path / "s3.ovf"
    assert cli.main(["export-ovf", str(store), "--state", "3", "--out", str(ovf)]) == 0
    field = read_ovf(ovf)
    assert np.allclose(field.m, open_store(store)["m"][1], atol=1e-7)
    assert field.cell_size_m[0] == pytest.approx(3e-9) and field.cell_size_m[2] == pytest.approx(
        27.5e-9
    )


def test_cli_reports_bad_batch_and_state(tmp_path, capsys):
    sweep = tmp_path / "sweep.tsv"
    write_sweep_tsv(draw_sweep(load_config(TINY)), sweep)
    args = ["relax", "--config", str(TINY), "--sweep", str(sweep), "--batch", "7"]
    assert cli.main([*args, "--out", str(tmp_path / "x.zarr")]) == 2
    assert "no states in batch 7" in capsys.readouterr().err
    assert not (tmp_path / "x.zarr").exists()
    assert cli.main(["montage", str(tmp_path / "missing.zarr"), "--out", "x.png"]) == 2
    assert "no such Zarr store" in capsys.readouterr().err


def test_initial_state_density_follows_the_lattice_constant(tiny):
    from ltemfactory.micromagnetics.initial import hexagonal_centres, random_centres

    rng = np.random.default_rng(0)
    box = (600e-9, 600e-9)
    a = 50e-9
    expected = 2 * box[0] * box[1] / (math.sqrt(3) * a**2)
    hexes = hexagonal_centres(box, a, rng)
    assert len(hexes) == pytest.approx(expected, rel=0.1)
    rand = random_centres(box, a, rng)
    assert len(rand) == round(expected)
    d = np.abs(rand[:, None] - rand[None])
    d = np.minimum(d, np.array(box) - d)
    dist = np.hypot(d[..., 0], d[..., 1]) + np.eye(len(rand))
    assert dist.min() >= 0.7 * a
