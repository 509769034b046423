"""``ltemfactory dashboard``: a real MLflow server on a free port over a tmp SQLite store."""

import json
import os
import socket
import sys
import time
import urllib.request

import pytest

from ltemfactory.dashboard import (
    JOB_EXECUTION_ENV,
    dashboard_command,
    dashboard_env,
    start_dashboard,
    stop_dashboard,
    wait_until_healthy,
)
from ltemfactory.errors import InputError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(port: int, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_command_is_lean_and_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cmd = dashboard_command(
        backend_store_uri="sqlite:///results/mlflow.db", artifacts_destination="results/art"
    )
    assert cmd[:4] == [sys.executable, "-m", "mlflow", "server"]
    opts = dict(zip(cmd[4::2], cmd[5::2], strict=True))
    assert opts == {
        "--backend-store-uri": f"sqlite:///{(tmp_path / 'results/mlflow.db').as_posix()}",
        "--artifacts-destination": (tmp_path / "results" / "art").as_uri(),
        "--host": "127.0.0.1",
        "--port": "5000",
        "--workers": "1",
    }
    assert (tmp_path / "results" / "art").is_dir()
    assert dashboard_env({"PATH": "/bin", JOB_EXECUTION_ENV: "true"}) == {
        "PATH": "/bin",
        JOB_EXECUTION_ENV: "false",
    }
    with pytest.raises(InputError, match="file store"):
        dashboard_command(backend_store_uri="mlruns", artifacts_destination="a")
    with pytest.raises(InputError, match="tracking server"):
        dashboard_command(backend_store_uri="http://127.0.0.1:5000", artifacts_destination="a")


def test_taken_port_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(InputError, match="cannot listen"):
            start_dashboard(
                backend_store_uri="sqlite:///m.db",
                artifacts_destination="a",
                port=s.getsockname()[1],
            )


def test_dashboard_serves_runs_and_stops_cleanly(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient

    db = f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"
    client = MlflowClient(db)
    exp_id = client.create_experiment("ltemfactory", (tmp_path / "art").as_uri())
    run_id = client.create_run(exp_id).info.run_id
    client.log_param(run_id, "train.learning_rate", "0.003")
    (tmp_path / "note.txt").write_text("hello\n")
    client.log_artifact(run_id, str(tmp_path / "note.txt"))
    port = _free_port()

    start = time.monotonic()
    with open(tmp_path / "server.log", "wb") as out:
        proc = start_dashboard(
            backend_store_uri=db,
            artifacts_destination=str(tmp_path / "art"),
            port=port,
            stdout=out,
            stderr=out,
        )
    try:
        healthy = wait_until_healthy(proc, "127.0.0.1", port, timeout=60)
        startup_s = time.monotonic() - start
        assert healthy, (tmp_path / "server.log").read_text()[-3000:]
        print(f"dashboard healthy after {startup_s:.1f} s")
        try:
            import psutil
        except ImportError:
            psutil = None
        if psutil is not None:  # the server and one uvicorn worker, no job runner
            procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
            assert len(procs) == 2, [p.cmdline() for p in procs]
            rss = sum(p.memory_info().rss for p in procs) / 2**20
            print(f"dashboard RSS {rss:.0f} MiB")

        runs = _api(port, "/api/2.0/mlflow/runs/search", {"experiment_ids": [exp_id]})["runs"]
        assert [r["info"]["run_id"] for r in runs] == [run_id]
        assert runs[0]["data"]["params"] == [{"key": "train.learning_rate", "value": "0.003"}]
        files = _api(port, f"/api/2.0/mlflow/artifacts/list?run_id={run_id}")["files"]
        assert [f["path"] for f in files] == ["note.txt"]
    finally:
        t_stop = time.monotonic()
        status = stop_dashboard(proc, timeout=30)
        print(f"stopped in {time.monotonic() - t_stop:.1f} s, status {status}")
    assert proc.poll() is not None
    assert not _group_alive(proc.pid)  # no worker or job process left behind
    assert status in (0, -15), (tmp_path / "server.log").read_text()[-3000:]
