"""The demo workflow on a real (single-node) SLURM cluster through configs/profiles/slurm.

tests/integration/slurm_single_node.sh installs Debian's munge + slurmctld + slurmd (Slurm 22.05)
when missing and starts them on loopback with 2 CPUs and all state in a pytest tmp dir; the
fixture stops every daemon it started, also when a test fails. The workflow runs twice on a
config derived from configs/config.yaml (sweep, relax, render and dataset exactly as in the
demo; the train section bounded by epochs instead of wall time, so that two runs train the
same model): once with the SLURM executor plugin and `-j 4`, once with the local profile, each
in its own scratch copy of the workflow. The tests check that every job was submitted with
sbatch, ran under slurmd with the profile's resources and completed, that every rule's outputs
exist, and that the dataset fingerprint and the test metrics equal those of the local run.

Needs root (apt-get, slurmd); deselect with `-m 'integration and not cluster'` otherwise.
On 2 shared cores both runs together take about 15-25 minutes.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("slurm_single_node.sh")
DEMO_CONFIG = ROOT / "configs" / "config.yaml"
SLURM_PROFILE = ROOT / "configs" / "profiles" / "slurm"
LOCAL_PROFILE = ROOT / "configs" / "profiles" / "local"
BIN = Path(sys.executable).parent
NODE_CPUS = 2
RUN_TIMEOUT_S = 30 * 60
# Epoch-bounded training: max_time_min far above the expected time so it never binds.
TRAIN_OVERRIDES = {"max_epochs": 2, "samples_per_epoch": 256, "max_time_min": 60}
# Threads the rule files declare above 1 (relax, assemble, train, evaluate, infer: 2); the
# profile raises them for real clusters and the test caps them at the node's CPUs.
MULTI_THREADED = {"relax", "assemble", "train", "evaluate", "infer"}
SUBMITTED = re.compile(
    r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+/rule_(\w+)/\S*)\)\."
)


@dataclass
class Run:
    workdir: Path
    proc: subprocess.CompletedProcess[str]
    seconds: float

    @property
    def results(self) -> Path:
        return self.workdir / "results"

    def output(self) -> str:
        return f"--- stdout ---\n{self.proc.stdout}\n--- stderr ---\n{self.proc.stderr}"


def derived_config() -> dict:
    """configs/config.yaml with only the train section changed (see TRAIN_OVERRIDES)."""
    cfg = yaml.safe_load(DEMO_CONFIG.read_text())
    cfg["train"] = {**cfg["train"], **TRAIN_OVERRIDES}
    return cfg


def expected_jobs(cfg: dict) -> dict[str, int]:
    """Jobs per rule of the whole workflow (the target rule `all` runs no job)."""
    n_batches = math.ceil(cfg["sweep"]["n_states"] / cfg["sweep"]["batch_size"])
    per_batch = {"relax": n_batches, "montage": n_batches, "render": n_batches}
    once = ["sweep", "assemble", "dataset_check", "dataset_card", "train", "evaluate"]
    return {**per_batch, **dict.fromkeys([*once, "infer", "report"], 1)}


def scratch_workflow(dest: Path, cfg: dict) -> Path:
    """A copy of the workflow (symlinked schema copied as a file) and the shipped data, with
    the config as dest/config.yaml."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / "Snakefile", dest / "Snakefile")
    shutil.copytree(ROOT / "workflow", dest / "workflow")
    shutil.copytree(ROOT / "envs", dest / "envs")
    shutil.copytree(ROOT / "data", dest / "data")
    (dest / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dest


def run_snakemake(workdir: Path, *args: str) -> Run:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SNAKEMAKE_PROFILE"))
    }
    # Rule shells (and, through sbatch --export=ALL, the SLURM jobs) find `ltemfactory` here.
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    cmd = [sys.executable, "-m", "snakemake", "--configfile", "config.yaml", *args]
    start = time.monotonic()
    proc = subprocess.run(
        cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    return Run(workdir, proc, time.monotonic() - start)


def cluster_script(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout
    )


def jobcomp_records(cluster_dir: Path) -> dict[str, dict[str, str]]:
    """slurmctld's job completion log (jobcomp/filetxt): JobId -> its KEY=VALUE fields."""
    records = {}
    for line in (cluster_dir / "log" / "jobcomp.log").read_text().splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if "JobId" in fields:
            records[fields["JobId"]] = fields
    return records


@pytest.fixture(scope="module")
def config() -> dict:
    """The derived config, read once: both runs get the same one even if configs/config.yaml
    is edited meanwhile."""
    return derived_config()


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory, timings):
    """A running single-node cluster; yields its state directory. Stops it afterwards."""
    if os.geteuid() != 0:
        pytest.fail(
            "the SLURM cluster test installs packages and runs slurmd: run it as root, or "
            "deselect it with -m 'integration and not cluster'"
        )
    start = time.monotonic()
    install = cluster_script("install")
    assert install.returncode == 0, install.stdout + install.stderr
    cluster_dir = tmp_path_factory.mktemp("slurm")
    try:
        started = cluster_script("start", str(cluster_dir), timeout=180)
        assert started.returncode == 0, started.stdout + started.stderr
        timings["cluster install + start"] = time.monotonic() - start
        yield cluster_dir
    finally:
        stopped = cluster_script("stop", str(cluster_dir), timeout=180)
        status = cluster_script("status", str(cluster_dir))
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert "running" not in status.stdout.replace("not running", ""), status.stdout
        assert not Path("/etc/slurm/slurm.conf").is_symlink() or (
            os.readlink("/etc/slurm/slurm.conf") != str(cluster_dir / "slurm.conf")
        )


@pytest.fixture(scope="module")
def cluster_run(slurm_cluster, config, tmp_path_factory, timings) -> Run:
    workdir = scratch_workflow(tmp_path_factory.mktemp("cluster_run"), config)
    run = run_snakemake(
        workdir,
        "--profile",
        str(SLURM_PROFILE),
        "--jobs",
        "4",
        # Test-cluster settings on top of the profile: a 2-CPU node, no accounting database
        # (job states from squeue; the cluster keeps finished jobs for an hour), quick polls,
        # and the jobs' SLURM logs kept as evidence.
        "--max-threads",
        str(NODE_CPUS),
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "5",
        "--slurm-keep-successful-logs",
    )
    timings["SLURM run"] = run.seconds
    return run


@pytest.fixture(scope="module")
def local_run(config, tmp_path_factory, timings) -> Run:
    workdir = scratch_workflow(tmp_path_factory.mktemp("local_run"), config)
    run = run_snakemake(workdir, "--profile", str(LOCAL_PROFILE))
    timings["local run"] = run.seconds
    return run


def test_workflow_runs_through_slurm(cluster_run):
    assert cluster_run.proc.returncode == 0, cluster_run.output()


def test_every_job_was_an_sbatch_job_with_the_profile_resources(cluster_run, slurm_cluster, config):
    """Snakemake's log names one SLURM job id per workflow job; slurmctld recorded each of
    them as COMPLETED on the node, with the CPUs, time limit and memory of the profile, and
    slurmd wrote its output (the jobstep's log of the rule) to the job's SLURM log file."""
    profile = yaml.safe_load((SLURM_PROFILE / "config.yaml").read_text())
    submitted = SUBMITTED.findall(cluster_run.proc.stderr + cluster_run.proc.stdout)
    rules = {jobid: rule for jobid, _, rule in submitted}
    assert len(rules) == len(submitted), submitted  # one submission per job id
    counts = {rule: list(rules.values()).count(rule) for rule in set(rules.values())}
    assert counts == expected_jobs(config), cluster_run.output()

    records = jobcomp_records(slurm_cluster)
    assert set(records) == set(rules), (sorted(records), sorted(rules))
    assert len({r["Name"] for r in records.values()}) == 1  # the plugin's run id
    for jobid, rule in rules.items():
        record = records[jobid]
        resources = profile["set-resources"][rule]
        cpus = NODE_CPUS if rule in MULTI_THREADED else 1
        assert record["JobState"] == "COMPLETED", (rule, record)
        assert record["NodeList"] == "ltemnode", (rule, record)
        assert record["ExitCode"] == "0:0", (rule, record)
        assert int(record["ProcCnt"]) == cpus, (rule, record)
        assert int(record["TimeLimit"]) == resources["runtime"], (rule, record)
        assert f"mem={resources['mem_mb']}M" in record["Tres"], (rule, record)
    for jobid, log, rule in submitted:
        assert Path(log).name == f"{jobid}.log", log
        assert f"rule {rule}:" in Path(log).read_text(), log


def test_every_rule_output_exists(cluster_run, config):
    results = cluster_run.results
    n_batches = expected_jobs(config)["relax"]
    expected = [results / "sweep.tsv", results / "dataset.zarr" / "zarr.json"]
    for b in range(n_batches):
        expected += [
            results / "relax" / f"batch_{b}.zarr" / "zarr.json",
            results / "relax" / f"batch_{b}_mz.png",
            results / "render" / f"batch_{b}.zarr" / "zarr.json",
        ]
    expected += [
        results / "dataset_check.txt",
        results / "dataset_card" / "README.md",
        results / "model" / "model.pt",
        results / "model" / "train_summary.json",
        results / "evaluation" / "test_metrics.json",
        results / "evaluation" / "test_grid.png",
        results / "inference" / "summary.json",
        results / "report" / "report.md",
    ]
    missing = [str(p.relative_to(results)) for p in expected if not p.is_file()]
    assert not missing, f"missing outputs: {missing}\n{cluster_run.output()}"
    for png in [*results.glob("relax/*_mz.png"), results / "evaluation" / "test_grid.png"]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert "OK" in (results / "dataset_check.txt").read_text()
    summary = json.loads((results / "inference" / "summary.json").read_text())
    assert summary["n_images"] == 1 and summary["n_ok"] == 1, summary
    overlay = results / "inference" / summary["images"][0]["files"]["overlay"]
    assert overlay.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", overlay
    report = (results / "report" / "report.md").read_text()
    assert "../inference/summary.json" in report and "../dataset_card/README.md" in report


def _without(mapping: dict, *keys: str) -> dict:
    return {k: v for k, v in mapping.items() if k not in keys}


def test_cluster_results_equal_local_run(cluster_run, local_run, config):
    """Same config, same threads per job: the SLURM run reproduces the local run exactly."""
    import zarr

    from ltemfactory.dataset import fingerprint

    assert local_run.proc.returncode == 0, local_run.output()
    assert cluster_run.proc.returncode == 0, cluster_run.output()
    slurm, local = cluster_run.results, local_run.results

    assert (slurm / "sweep.tsv").read_bytes() == (local / "sweep.tsv").read_bytes()
    slurm_fp = zarr.open_group(str(slurm / "dataset.zarr"), mode="r").attrs["fingerprint"]
    local_fp = zarr.open_group(str(local / "dataset.zarr"), mode="r").attrs["fingerprint"]
    assert slurm_fp == local_fp
    assert fingerprint(slurm / "dataset.zarr") == slurm_fp  # the stored one is the content's

    summaries = [
        json.loads((r / "model" / "train_summary.json").read_text()) for r in (slurm, local)
    ]
    steps = TRAIN_OVERRIDES["max_epochs"] * TRAIN_OVERRIDES["samples_per_epoch"]
    steps //= config["train"]["batch_size"]
    assert [s["global_step"] for s in summaries] == [steps, steps]  # bounded by epochs
    assert [s["dataset_fingerprint"] for s in summaries] == [slurm_fp, slurm_fp]
    # The same training: epochs, steps, best and last validation scores (not run ids, paths
    # or timings).
    same = ("epochs", "global_step", "best_val_f1", "last_val_metrics")
    assert [summaries[0][k] for k in same] == [summaries[1][k] for k in same]

    timing = ("seconds_per_image", "device")
    slurm_metrics, local_metrics = (
        _without(json.loads((r / "evaluation" / "test_metrics.json").read_text()), *timing)
        for r in (slurm, local)
    )
    assert slurm_metrics["n_images"] > 0 and slurm_metrics["metrics"]
    assert slurm_metrics == local_metrics

    slurm_images, local_images = (
        [
            _without(image, "seconds")
            for image in json.loads((r / "inference" / "summary.json").read_text())["images"]
        ]
        for r in (slurm, local)
    )
    assert slurm_images == local_images
