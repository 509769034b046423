"""Kill-and-resume and determinism of the demo's data pipeline (configs/config.yaml).

Targets ``results/dataset_check.txt`` and ``results/dataset_card``: sweep -> relax (16 batches)
-> render -> assemble -> dataset check and card; no training. Snakemake runs with 2 cores in a
scratch copy of the workflow, in its own session (process group), with this interpreter's bin
directory first on PATH.

1. Reference: one uninterrupted run. Its job starts and finishes, read live from Snakemake's
   log, give each stage's job durations; its dataset fingerprint is the reference.
2. Kill chain, in a fresh directory, one kill per entry of ``KILLS``: the whole process group
   gets SIGKILL either a seeded fraction (``KILL_FRACTION``) into a seeded job of the stage
   (which of its jobs, by start order; the fraction is of the same job's duration in the
   reference run), or while the stage writes a store (its ``<name>.tmp-<host>-<pid>`` exists
   and its writer is alive; for assemble after a further seeded delay). The killed job must
   still have been running, a write kill must leave the writer's temporary store (else it is
   repeated, at most ``WRITE_ATTEMPTS`` times), no process of the session may survive, and every
   store present under its final name must be complete (opens, every array decodes). The next
   run (``--unlock``, then ``--rerun-incomplete``) is the next victim; the last one runs to the
   end.
3. The resumed result must equal the reference bit for bit (dataset fingerprint, stored and
   recomputed, and every relax and render store array by array: a from-scratch, interrupted
   rerun is also the determinism check), ``ltemfactory dataset check`` must pass and must have
   read every chunk file of the store, and no temporary store (``<name>.tmp-<host>-<pid>``,
   ``<name>.old-...``) or temporary file (``.<name>.<pid>-<hex>.tmp<suffix>``) may be left.

Runtime on 2 free cores: about two data runs (the kill chain redoes only the killed jobs).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "config.yaml"
BIN = Path(sys.executable).parent
TARGETS = ("results/dataset_check.txt", "results/dataset_card")
KILLS = (
    ("relax", "write"),
    ("relax", "job"),
    ("render", "write"),
    ("render", "job"),
    ("assemble", "write"),
    ("dataset_card", "job"),
)
"""(stage, moment): ``job`` = a seeded fraction into a seeded job of the stage; ``write`` = while
the stage's temporary store exists (relax, render: as soon as one is seen; assemble: a seeded
delay after its temporary store appears)."""
KILL_FRACTION = (0.15, 0.6)
WRITE_ATTEMPTS = 3
"""A write kill that came too late (the store was already renamed) is repeated, at most so often."""
OUTPUT_DIRS = {
    "relax": "relax/batch_*.zarr",
    "render": "render/batch_*.zarr",
    "assemble": "dataset.zarr",
}
SEED = 20261125
RUN_TIMEOUT_S = 1500
TEMP_PATTERNS = ("*.tmp-*", "*.old-*", ".*.tmp*")


# --------------------------------------------------------------------------------------------
# Running Snakemake and following its jobs


def copy_workflow(dest: Path) -> Path:
    """The workflow and the demo config (symlinks, e.g. the schema, copied as files)."""
    shutil.copy2(ROOT / "Snakefile", dest / "Snakefile")
    shutil.copytree(ROOT / "workflow", dest / "workflow")
    shutil.copytree(ROOT / "envs", dest / "envs")
    shutil.copytree(ROOT / "configs" / "profiles", dest / "configs" / "profiles")
    shutil.copy2(CONFIG, dest / "configs" / "config.yaml")
    shutil.copytree(ROOT / "data", dest / "data")
    return dest


def _env() -> dict[str, str]:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("SNAKEMAKE_PROFILE", None)
    return env


def _snakemake(workdir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "snakemake",
        *TARGETS,
        "--cores",
        "2",
        "--show-failed-logs",
        "--directory",
        str(workdir),
        *extra,
        "--configfile",  # last: it takes several values
        "configs/config.yaml",
    ]


@dataclass
class Job:
    rule: str
    jobid: int
    wildcards: str = ""
    start: float = 0.0
    end: float | None = None


@dataclass
class Run:
    """One Snakemake process in its own session; its log is parsed as it is written."""

    proc: subprocess.Popen
    log: Path
    t0: float
    jobs: dict[int, Job] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def started(self, rule: str) -> list[Job]:
        return sorted((j for j in self.jobs.values() if j.rule == rule), key=lambda j: j.start)

    def text(self) -> str:
        return "".join(self.lines[-200:])


_RULE = re.compile(r"^(?:local)?rule (\w+):$")
_JOBID = re.compile(r"^\s+jobid: (\d+)$")
_WILDCARDS = re.compile(r"^\s+wildcards: (.*)$")
_FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)")
_COUNT = re.compile(r"^(\w+)\s+(\d+)$")


def _follow(run: Run) -> None:
    pending: Job | None = None
    in_stats = False
    with open(run.log, "w") as out:
        for line in run.proc.stdout:  # type: ignore[union-attr]
            now = time.monotonic() - run.t0
            out.write(line)
            out.flush()
            run.lines.append(line)
            text = line.rstrip("\n")
            if text.startswith("Job stats:"):
                in_stats = True
            elif in_stats and (m := _COUNT.match(text)):
                if m.group(1) != "total":
                    run.counts[m.group(1)] = int(m.group(2))
                else:
                    in_stats = False
            if m := _RULE.match(text):
                pending = Job(m.group(1), -1, start=now)
            elif pending is not None and (m := _JOBID.match(text)):
                pending.jobid = int(m.group(1))
                run.jobs[pending.jobid] = pending
            elif pending is not None and (m := _WILDCARDS.match(text)):
                pending.wildcards = m.group(1)
            elif m := _FINISHED.match(text):
                job = run.jobs.get(int(m.group(1)))
                if job is not None:
                    job.end = now


def start(workdir: Path, name: str, *extra: str) -> Run:
    proc = subprocess.Popen(
        _snakemake(workdir, *extra),
        cwd=workdir,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own session and process group: jobs included
    )
    run = Run(proc, workdir / f"snakemake-{name}.log", time.monotonic())
    run.reader = threading.Thread(target=_follow, args=(run,), daemon=True)
    run.reader.start()
    return run


def finish(run: Run) -> int:
    try:
        rc = run.proc.wait(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        kill_session(run)
        raise
    run.reader.join(timeout=30)  # type: ignore[union-attr]
    return rc


def _session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getsid(int(entry)) != sid:
                continue
            stat = Path(f"/proc/{entry}/stat").read_text()
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
        if stat.rsplit(")", 1)[1].split()[0] != "Z":
            out.append(int(entry))
    return out


def kill_session(run: Run) -> list[int]:
    """SIGKILL Snakemake's process group (and any straggler of its session); returns the
    session's processes that were still there after the group kill (should be none)."""
    sid = run.proc.pid
    os.killpg(sid, signal.SIGKILL)
    run.proc.wait(timeout=60)
    deadline = time.monotonic() + 10
    left = _session_members(sid)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = _session_members(sid)
    stragglers = list(left)
    for pid in left:  # escaped the process group: kill it too, then fail the test
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    run.reader.join(timeout=30)  # type: ignore[union-attr]
    return stragglers


def unlock(workdir: Path) -> None:
    proc = subprocess.run(
        _snakemake(workdir, "--unlock"), cwd=workdir, env=_env(), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def wait_for(run: Run, predicate, what: str, timeout: float = RUN_TIMEOUT_S, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if run.proc.poll() is not None:
            pytest.fail(f"snakemake ended (rc {run.proc.returncode}) before {what}\n{run.text()}")
        time.sleep(poll)
    kill_session(run)
    pytest.fail(f"timed out waiting for {what}\n{run.text()}")


# --------------------------------------------------------------------------------------------
# What the runs left behind


def temporaries(results: Path) -> list[str]:
    found = set()
    for pattern in TEMP_PATTERNS:
        found |= {str(p.relative_to(results)) for p in results.rglob(pattern)}
    return sorted(found)


def stage_stores(results: Path) -> list[Path]:
    return sorted(results.glob("relax/batch_*.zarr")) + sorted(results.glob("render/batch_*.zarr"))


def store_digest(path: Path) -> str:
    """SHA-256 of every array of a store (name, shape, dtype, data), sorted by name."""
    from ltemfactory.dataset.layout import _array_paths
    from ltemfactory.stores import open_store

    group = open_store(path)
    h = hashlib.sha256()
    for name in _array_paths(group):
        arr = np.asarray(group[name][...])
        h.update(json.dumps([name, arr.shape, str(arr.dtype)]).encode())
        h.update(arr.tobytes() if arr.dtype.kind != "U" else "\0".join(arr.ravel()).encode())
    return h.hexdigest()


def complete_stores(results: Path) -> list[str]:
    """Problems of the stores under their final names: each must open and fully decode."""
    problems = []
    stores = stage_stores(results) + [results / "dataset.zarr"]
    for path in stores:
        if not path.exists():
            continue
        try:
            store_digest(path)
        except Exception as exc:  # noqa: BLE001 - any failure is the finding
            problems.append(f"{path.relative_to(results)}: {type(exc).__name__}: {exc}")
    return problems


def chunks_read_by_check(store: Path) -> tuple[list[str], set[str], set[str]]:
    """(problems, chunk files in the store, chunk files that ``check`` read)."""
    import zarr.storage

    from ltemfactory.dataset import check

    read: set[str] = set()
    original = zarr.storage.LocalStore.get

    async def recording_get(self, key, *args, **kwargs):
        if Path(self.root).resolve() == store.resolve():
            read.add(key)
        return await original(self, key, *args, **kwargs)

    zarr.storage.LocalStore.get = recording_get
    try:
        problems = check(store)
    finally:
        zarr.storage.LocalStore.get = original
    files = {
        p.relative_to(store).as_posix()
        for p in store.rglob("*")
        if p.is_file() and p.name not in ("zarr.json", ".snakemake_timestamp")
    }
    return problems, files, read & files


# --------------------------------------------------------------------------------------------
# The test


def live_temporary(results: Path, stage: str) -> Path | None:
    """A temporary store of ``stage`` whose writer (``<name>.tmp-<host>-<pid>``) is alive."""
    for path in results.glob(OUTPUT_DIRS[stage] + ".tmp-*"):
        pid = path.name.rpartition("-")[2]
        if pid.isdigit():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                continue
            return path
    return None


def kill_once(workdir: Path, i: int, stage: str, moment: str, rng, reference: Run) -> dict:
    """Start Snakemake (resuming after the first kill), SIGKILL it at the chosen moment."""
    results = workdir / "results"
    if i:
        unlock(workdir)  # a killed Snakemake leaves its lock
    run = start(workdir, f"kill{i}-{stage}-{moment}", *(("--rerun-incomplete",) if i else ()))
    wait_for(run, lambda: stage in run.counts, "the job stats")
    same = {j.wildcards: j.end - j.start for j in reference.started(stage) if j.end is not None}
    median = statistics.median(same.values())
    if moment == "job":
        k = int(rng.integers(0, run.counts[stage]))
        job = wait_for(
            run, lambda: len(run.started(stage)) > k and run.started(stage)[k], f"{stage} #{k}"
        )
        # the same job (same batch) did the same work in the reference run
        time.sleep(float(rng.uniform(*KILL_FRACTION)) * same.get(job.wildcards, median))
    else:
        tmp = wait_for(
            run, lambda: live_temporary(results, stage), f"a {stage} store being written", poll=0.01
        )
        if stage == "assemble":
            time.sleep(float(rng.uniform(0.0, 0.25)) * median)
        name = tmp.name.split(".tmp-")[0]  # batch_<b>.zarr or dataset.zarr
        wildcards = f"batch={name[6:-5]}" if name.startswith("batch_") else ""
        job = next((j for j in run.started(stage) if j.wildcards == wildcards), None)
    at = time.monotonic() - run.t0
    stragglers = kill_session(run)
    return {
        "stage": stage,
        "moment": moment,
        "job": None if job is None else f"{job.rule}[{job.wildcards}]",
        "at_s": round(at, 1),
        "into_job_s": None if job is None else round(at - job.start, 1),
        "target_running": job is not None and job.end is None,
        "running": sorted(f"{j.rule}[{j.wildcards}]" for j in run.jobs.values() if j.end is None),
        "temporaries": temporaries(results),
        "killed_while_writing": None if moment == "job" else tmp.exists(),
        "stragglers": stragglers,
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("reference"))
    t0 = time.monotonic()
    run = start(workdir, "reference")
    rc = finish(run)
    wall = time.monotonic() - t0
    assert rc == 0, run.text()
    durations = {
        rule: [j.end - j.start for j in run.started(rule) if j.end is not None]
        for rule in ("sweep", "relax", "render", "assemble", "dataset_check", "dataset_card")
    }
    return workdir, run, durations, wall


def test_kill_and_resume_gives_the_uninterrupted_dataset(reference, tmp_path_factory):
    from ltemfactory.config import load_config, n_batches
    from ltemfactory.dataset import fingerprint
    from ltemfactory.stores import open_store

    ref_dir, ref_run, durations, ref_wall = reference
    ref_results = ref_dir / "results"
    ref_fp = open_store(ref_results / "dataset.zarr").attrs["fingerprint"]
    assert fingerprint(ref_results / "dataset.zarr") == ref_fp
    timing = {rule: (len(d), round(statistics.median(d), 1)) for rule, d in durations.items() if d}

    workdir = copy_workflow(tmp_path_factory.mktemp("killed"))
    results = workdir / "results"
    rng = np.random.default_rng(SEED)
    kills: list[dict] = []
    t_chain = time.monotonic()
    for stage, moment in KILLS:
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            record = kill_once(workdir, len(kills), stage, moment, rng, ref_run)
            record["attempt"] = attempt
            kills.append(record)
            assert not record["stragglers"], f"processes outside the process group: {record}"
            assert record["target_running"], (
                f"the {stage} job had finished before the kill: {record}"
            )
            problems = complete_stores(results)
            assert not problems, f"a store under its final name is incomplete: {problems}"
            if moment == "job" or record["killed_while_writing"]:
                break
        assert moment == "job" or kills[-1]["killed_while_writing"], f"missed the write: {kills}"
        if moment == "write":
            assert kills[-1]["temporaries"], kills[-1]  # the killed writer's store is left

    unlock(workdir)
    final = start(workdir, "resume", "--rerun-incomplete")
    rc = finish(final)
    chain_wall = time.monotonic() - t_chain
    report = json.dumps(
        {"reference_wall_s": round(ref_wall), "kill_chain_wall_s": round(chain_wall),
         "job_count_and_median_s": timing, "kills": kills},
        indent=1,
    )  # fmt: skip
    print(report)
    assert rc == 0, final.text()

    # the same dataset, bit for bit (also the determinism check: every job ran again)
    store = results / "dataset.zarr"
    assert open_store(store).attrs["fingerprint"] == ref_fp, report
    assert fingerprint(store) == ref_fp, report
    for path in stage_stores(ref_results):
        again = results / path.relative_to(ref_results)
        assert store_digest(again) == store_digest(path), f"{again} differs from the reference"
    n_stores = 2 * n_batches(load_config(CONFIG))
    assert len(stage_stores(results)) == len(stage_stores(ref_results)) == n_stores

    # the check passes, reads every chunk file, and its output says so
    problems, files, read = chunks_read_by_check(store)
    assert problems == [], problems
    assert files and read == files, f"chunk files not read by check: {sorted(files - read)[:10]}"
    cli = subprocess.run(
        [str(BIN / "ltemfactory"), "dataset", "check", str(store)],
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert cli.returncode == 0 and cli.stdout.strip() == f"{store}: OK", cli.stderr
    assert (results / "dataset_check.txt").read_text().strip() == "results/dataset.zarr: OK"
    assert ref_fp in (results / "dataset_card" / "README.md").read_text()

    # nothing temporary left behind, and nothing more than the uninterrupted run wrote
    assert temporaries(results) == [], report
    names = {p.relative_to(results) for p in results.rglob("*") if "logs" not in p.parts}
    ref_names = {
        p.relative_to(ref_results) for p in ref_results.rglob("*") if "logs" not in p.parts
    }
    assert names == ref_names, sorted(names ^ ref_names)[:20]
