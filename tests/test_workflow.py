"""End-to-end tests of the Snakemake workflow on tests/configs/tiny.yaml.

Each test runs ``python -m snakemake`` in a scratch copy of the workflow (Snakefile, workflow/,
configs/profiles/, envs/) with this interpreter's bin directory first on PATH, so the rule
shells find the ``ltemfactory`` command of the environment under test.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
BIN = Path(sys.executable).parent
N_STATES, N_BATCHES, BATCH_SIZE, NY, NX = 4, 2, 2, 32, 32
TIMEOUT_S = 1800


def copy_workflow(dest: Path) -> Path:
    """Copy the workflow into ``dest`` (symlinks, e.g. the schema, are copied as files), with
    the shipped data (the default input of the infer rule)."""
    shutil.copy2(ROOT / "Snakefile", dest / "Snakefile")
    shutil.copytree(ROOT / "workflow", dest / "workflow")
    shutil.copytree(ROOT / "configs" / "profiles", dest / "configs" / "profiles")
    shutil.copytree(ROOT / "envs", dest / "envs")
    shutil.copytree(ROOT / "data", dest / "data")
    return dest


def run_snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("SNAKEMAKE_PROFILE", None)
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--show-failed-logs"]
    cmd += ["--directory", str(workdir), *args]
    return subprocess.run(
        cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )


def output_of(proc: subprocess.CompletedProcess[str]) -> str:
    return f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"


def produced(path: Path, proc: subprocess.CompletedProcess[str]) -> Path:
    assert path.exists(), f"{path} was not produced\n{output_of(proc)}"
    return path


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Run the whole workflow once on the tiny config; return (workdir, first, second run)."""
    assert TINY.is_file(), f"missing {TINY}"
    workdir = copy_workflow(tmp_path_factory.mktemp("workflow"))
    # --keep-going: a failing rule leaves the other rules' outputs to check one by one.
    first = run_snakemake(workdir, "--configfile", str(TINY), "--keep-going")
    second = run_snakemake(workdir, "--configfile", str(TINY)) if first.returncode == 0 else None
    return workdir, first, second


def test_workflow_runs(tiny_run):
    _, first, _ = tiny_run
    assert first.returncode == 0, output_of(first)


def test_sweep_table_has_one_row_per_state(tiny_run):
    workdir, first, _ = tiny_run
    table = produced(workdir / "results" / "sweep.tsv", first)
    lines = [ln for ln in table.read_text().splitlines() if ln]
    assert len(lines) == 1 + N_STATES, lines  # header + one row per state


def test_relax_stores_hold_unit_magnetisation(tiny_run):
    import zarr

    workdir, first, _ = tiny_run
    for b in range(N_BATCHES):
        store = produced(workdir / "results" / "relax" / f"batch_{b}.zarr", first)
        group = zarr.open_group(str(store), mode="r")
        m = group["m"]
        assert m.shape == (BATCH_SIZE, 3, 1, NY, NX), store
        assert m.dtype == np.float32, store
        values = np.asarray(m[...])
        assert np.all(np.isfinite(values)), store
        np.testing.assert_allclose(np.linalg.norm(values, axis=1), 1.0, atol=1e-4)


def test_render_stores_hold_images_of_every_state(tiny_run):
    import zarr

    workdir, first, _ = tiny_run
    variants = 4  # render.variants_per_state default
    for b in range(N_BATCHES):
        store = produced(workdir / "results" / "render" / f"batch_{b}.zarr", first)
        group = zarr.open_group(str(store), mode="r")
        assert group["image"].shape == (BATCH_SIZE * variants, NY, NX), store
        assert group["magnetic_phase"].shape == (BATCH_SIZE * variants, NY, NX), store
        ids = list(group["state_id"][:])
        assert ids == [b * BATCH_SIZE + i for i in range(BATCH_SIZE) for _ in range(variants)]
        assert np.all(np.isfinite(group["image"][:])), store


def test_dataset_is_assembled_checked_and_carded(tiny_run):
    import zarr

    from ltemfactory.dataset import check

    workdir, first, _ = tiny_run
    results = workdir / "results"
    store = produced(results / "dataset.zarr", first)
    group = zarr.open_group(str(store), mode="r")
    n_images = N_STATES * 4
    assert group["images"].shape == (n_images, NY, NX)
    assert group["labels"].shape == (n_images, NY, NX)
    assert group["magnetization"].shape == (N_STATES, 3, NY, NX)
    assert check(store) == []
    sweep = (results / "sweep.tsv").read_bytes()
    assert group.attrs["sweep_sha256"] == hashlib.sha256(sweep).hexdigest()
    assert "OK" in produced(results / "dataset_check.txt", first).read_text()
    assert (produced(results / "dataset_card", first) / "README.md").exists()


def test_model_is_trained_tracked_and_evaluated(tiny_run):
    import json
    import math
    import sqlite3

    workdir, first, _ = tiny_run
    results = workdir / "results"
    model = produced(results / "model", first)
    assert (model / "model.pt").is_file() and (model / "best.ckpt").is_file()
    summary = json.loads((model / "train_summary.json").read_text())
    assert summary["global_step"] == 2 * 2  # 2 epochs x (8 samples / batch 4)
    assert summary["symmetrise"] is True  # the schema default, stored with the model
    from ltemfactory.training.predictor import Predictor

    assert Predictor.load(model / "model.pt").symmetrise
    evaluation = json.loads(
        produced(results / "evaluation" / "test_metrics.json", first).read_text()
    )
    assert evaluation["split"] == "test" and evaluation["n_images"] == 4  # 1 state x 4 variants
    f1 = evaluation["metrics"]["test/f1_50"]
    assert f1 is not None and 0 <= f1 <= 1 and math.isfinite(f1)
    assert (results / "evaluation" / "test_grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The run, its test metrics and the registered model are in the sqlite tracking store.
    with sqlite3.connect(results / "mlflow.db") as db:
        keys = {
            k
            for (k,) in db.execute(
                "SELECT key FROM metrics WHERE run_uuid = ?", (summary["run_id"],)
            )
        }
        versions = db.execute(
            "SELECT COUNT(*) FROM model_versions WHERE name = ?", ("ltemfactory-skyrmion",)
        ).fetchone()[0]
    assert {"train/loss", "val/f1", "test/f1_50", "test/ap_50"} <= keys
    assert versions == 1


def test_inference_and_report_are_wired(tiny_run):
    """The untrained tiny model only shows the wiring: the shipped image is processed or its
    error recorded, and the report links the results."""
    import json

    workdir, first, _ = tiny_run
    results = workdir / "results"
    summary = json.loads(produced(results / "inference" / "summary.json", first).read_text())
    assert summary["n_images"] == 1, summary
    entry = summary["images"][0]
    assert entry["file"] == "data/experimental/FGT_190K_lf10_hf10.tif", entry
    if entry["status"] == "ok":
        assert (results / "inference" / entry["files"]["overlay"]).is_file()
        assert (results / "inference" / entry["files"]["lattice"]).is_file()
    else:
        assert entry["error"] and summary["failed"], entry
    report = produced(results / "report" / "report.md", first).read_text()
    assert "../inference/summary.json" in report and "../dataset_card/README.md" in report


def test_montages_are_pngs(tiny_run):
    workdir, first, _ = tiny_run
    for b in range(N_BATCHES):
        png = produced(workdir / "results" / "relax" / f"batch_{b}_mz.png", first)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png


def test_logs_and_benchmarks_written(tiny_run):
    workdir, first, _ = tiny_run
    assert first.returncode == 0, output_of(first)
    results = workdir / "results"
    produced(results / "logs" / "sweep" / "sweep.log", first)
    for b in range(N_BATCHES):
        produced(results / "logs" / "relax" / f"batch_{b}.log", first)
        produced(results / "logs" / "montage" / f"batch_{b}.log", first)
        produced(results / "benchmarks" / "relax" / f"batch_{b}.tsv", first)


def test_second_run_is_a_no_op(tiny_run):
    _, first, second = tiny_run
    assert first.returncode == 0, output_of(first)
    assert second.returncode == 0, output_of(second)
    assert "Nothing to be done" in second.stdout + second.stderr, output_of(second)


def _assert_fails_before_any_job(workdir: Path, proc, *needles: str) -> None:
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, output_of(proc)
    for needle in needles:
        assert needle in text, output_of(proc)
    assert not (workdir / "results").exists(), "a job ran although the config is invalid"


def test_schema_error_stops_before_any_job(tmp_path):
    workdir = copy_workflow(tmp_path)
    cfg = yaml.safe_load(TINY.read_text())
    cfg["sweep"]["n_states"] = -1
    bad = write_config(tmp_path / "bad.yaml", cfg)
    proc = run_snakemake(workdir, "--configfile", str(bad))
    _assert_fails_before_any_job(workdir, proc, "n_states")


def test_consistency_error_stops_before_any_job(tmp_path):
    """low > high passes the schema; ltemfactory.config.validate_config must catch it."""
    workdir = copy_workflow(tmp_path)
    cfg = yaml.safe_load(TINY.read_text())
    name, spec = next(
        (k, v) for k, v in cfg["sweep"]["parameters"].items() if {"low", "high"} <= set(v)
    )
    spec["low"], spec["high"] = spec["high"], spec["low"]
    bad = write_config(tmp_path / "bad.yaml", cfg)
    proc = run_snakemake(workdir, "--configfile", str(bad))
    _assert_fails_before_any_job(workdir, proc, name)


def test_command_line_override_is_refused(tmp_path):
    """Jobs read the config file, so --config KEY=VALUE overrides must not pass silently."""
    workdir = copy_workflow(tmp_path)
    proc = run_snakemake(workdir, "--configfile", str(TINY), "--config", "seed=8")
    _assert_fails_before_any_job(workdir, proc, "seed", "--configfile")


def test_dry_run_lists_every_job(tmp_path):
    workdir = copy_workflow(tmp_path)
    proc = run_snakemake(workdir, "--configfile", str(TINY), "--dry-run", "--quiet", "rules")
    assert proc.returncode == 0, output_of(proc)
    counts = {}
    for line in proc.stdout.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[1].isdigit():
            counts[fields[0]] = int(fields[1])
    assert counts == {
        "sweep": 1,
        "relax": N_BATCHES,
        "montage": N_BATCHES,
        "render": N_BATCHES,
        "assemble": 1,
        "dataset_check": 1,
        "dataset_card": 1,
        "train": 1,
        "evaluate": 1,
        "infer": 1,
        "report": 1,
        "all": 1,
        "total": 9 + 3 * N_BATCHES,
    }, output_of(proc)


def test_configfile_replaces_default_config(tmp_path):
    """--configfile FILE replaces configs/config.yaml rather than being merged into it."""
    workdir = copy_workflow(tmp_path)
    shutil.copy2(ROOT / "configs" / "config.yaml", workdir / "configs" / "config.yaml")
    cfg = yaml.safe_load(TINY.read_text())
    cfg["sweep"]["preset"] = "fe3gete2"
    cfg["sweep"]["parameters"] = {}  # merged, the demo's twelve explicit entries would return
    preset = write_config(tmp_path / "preset.yaml", cfg)
    proc = run_snakemake(workdir, "--configfile", str(preset), "--dry-run")
    assert proc.returncode == 0, output_of(proc)
    assert f"batch_{N_BATCHES}.zarr" not in proc.stdout, output_of(proc)  # 4 states, not 8
