"""``ltemfactory dashboard``: a real MLflow server on a free port over a tmp SQLite store;
loopback only unless authentication (MLflow's basic-auth app) is on."""

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ltemfactory import dashboard
from ltemfactory.cli import main
from ltemfactory.dashboard import (
    JOB_EXECUTION_ENV,
    auth_settings,
    dashboard_command,
    dashboard_env,
    is_loopback,
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


def _status(port: int, path: str, auth: tuple[str, str] | None = None) -> int | None:
    """HTTP status of GET ``path`` (None while nothing listens)."""
    headers = {}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, OSError):
        return None


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


# ------------------------------------------------------------------------------ exposure and auth
PASSWORD = "ltem-Test-Pw-" + "7f3a9c21e4b8"  # 25 characters, only ever in the environment
TINY = Path(__file__).parent / "configs" / "tiny.yaml"


@pytest.fixture
def no_server(monkeypatch):
    """Fail the test if anything tries to start a process or to bind a port."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a process was started: {args}")

    monkeypatch.setattr(dashboard.subprocess, "Popen", refuse)
    monkeypatch.setattr(dashboard, "_check_port_free", refuse)


def _resolve_to(monkeypatch, table: dict[str, list[str]]) -> None:
    """Resolve the host names of ``table`` to its addresses (no DNS in tests)."""
    real = socket.getaddrinfo

    def fake(host, *args, **kwargs):
        if host in table:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 0)) for a in table[host]]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(dashboard.socket, "getaddrinfo", fake)


def test_is_loopback(monkeypatch):
    _resolve_to(monkeypatch, {"lab-box": ["192.168.1.10"], "mixed": ["127.0.0.1", "10.0.0.2"]})
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "", "192.168.1.10", "10.0.0.2", "fe80::1", "lab-box", "mixed"):
        assert not is_loopback(host), host


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "lab-box"])
def test_non_loopback_host_refused_without_auth(tmp_path, monkeypatch, no_server, host):
    monkeypatch.chdir(tmp_path)
    _resolve_to(monkeypatch, {"lab-box": ["192.168.1.10"]})
    with pytest.raises(InputError, match=rf"--host {re.escape(host)}: refusing .* --auth"):
        start_dashboard(
            backend_store_uri="sqlite:///results/mlflow.db",
            artifacts_destination="results/art",
            host=host,
        )
    assert list(tmp_path.iterdir()) == []  # nothing created either


def test_cli_refuses_exposed_host_and_auth_without_credentials(
    tmp_path, monkeypatch, capsys, no_server
):
    monkeypatch.chdir(tmp_path)
    for var in ("USERNAME", "PASSWORD"):
        monkeypatch.delenv(f"MLFLOW_TRACKING_{var}", raising=False)
        monkeypatch.delenv(f"MLFLOW_AUTH_ADMIN_{var}", raising=False)
    assert main(["dashboard", "--config", str(TINY), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "ltemfactory dashboard: error: dashboard --host 0.0.0.0: refusing" in err
    assert "--auth" in err and "127.0.0.1" in err
    assert main(["dashboard", "--config", str(TINY), "--host", "0.0.0.0", "--auth"]) == 2
    err = capsys.readouterr().err
    assert "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in err
    assert not (tmp_path / "results" / "mlflow_auth.ini").exists()


def test_auth_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = "sqlite:///results/mlflow.db"
    with pytest.raises(InputError, match="MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"):
        auth_settings(backend_store_uri=db, environ={})
    with pytest.raises(InputError, match="MLFLOW_TRACKING_PASSWORD is too short") as info:
        auth_settings(
            backend_store_uri=db,
            environ={"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "short-pw"},
        )
    assert "short-pw" not in str(info.value)
    env = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": PASSWORD}

    auth = auth_settings(backend_store_uri=db, environ=env)
    assert auth.config_path == tmp_path / "results" / "mlflow_auth.ini"
    ini = auth.config_path.read_text()
    assert f"database_uri = sqlite:///{(tmp_path / 'results' / 'mlflow_auth.db').as_posix()}" in ini
    assert PASSWORD not in ini and "admin_password" not in ini
    assert auth.env["MLFLOW_AUTH_ADMIN_USERNAME"] == "admin"
    assert auth.env["MLFLOW_AUTH_ADMIN_PASSWORD"] == PASSWORD
    assert len(auth.env["MLFLOW_FLASK_SERVER_SECRET_KEY"]) == 64
    assert PASSWORD not in repr(auth)
    # MLflow's own variables win over the client's
    own = env | {"MLFLOW_AUTH_ADMIN_USERNAME": "root", "MLFLOW_AUTH_ADMIN_PASSWORD": "x" * 12}
    assert auth_settings(backend_store_uri=db, environ=own).env["MLFLOW_AUTH_ADMIN_USERNAME"] == (
        "root"
    )

    with pytest.raises(InputError, match="tracking server"):
        auth_settings(backend_store_uri="http://127.0.0.1:5000", environ=env)
    with pytest.raises(InputError, match="--auth-config"):
        auth_settings(backend_store_uri="postgresql://u@h/db", environ=env)
    own_ini = tmp_path / "basic_auth.ini"
    own_ini.write_text("[mlflow]\nadmin_username = boss\nadmin_password = from-the-file-1234\n")
    from_file = auth_settings(
        backend_store_uri="postgresql://u@h/db", auth_config=own_ini, environ={}
    )
    assert from_file.config_path == own_ini
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" not in from_file.env  # MLflow reads the file
    (tmp_path / "empty.ini").write_text("")
    with pytest.raises(InputError, match=r"empty.ini: expected an MLflow auth config"):
        auth_settings(backend_store_uri=db, auth_config=tmp_path / "empty.ini", environ=env)

    monkeypatch.setattr(dashboard.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InputError, match=r"Flask-WTF .*mlflow\[auth\]"):
        auth_settings(backend_store_uri=db, environ=env)


def test_cli_dashboard_with_auth_requires_login_and_never_shows_the_password(tmp_path):
    """``ltemfactory dashboard --auth`` on loopback: 401 without credentials, 200 with them,
    and the password is in no log and no file (the user store keeps a hash)."""
    port = _free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING_", "MLFLOW_AUTH"))
    }
    env |= {
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": PASSWORD,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    log = tmp_path / "dashboard.log"
    cmd = ["ltemfactory", "-v", "dashboard", "--config", str(TINY), "--auth", "--port", str(port)]
    start = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=out, stderr=out, start_new_session=True
        )
    try:
        url = "/api/2.0/mlflow/experiments/search?max_results=10"
        deadline = time.monotonic() + 90
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            status = _status(port, url)
            if status is not None:
                break
            time.sleep(0.3)
        print(f"auth dashboard answering after {time.monotonic() - start:.1f} s")
        assert status == 401, log.read_text()[-3000:]
        assert _status(port, url, ("admin", PASSWORD)) == 200
        assert _status(port, url, ("admin", PASSWORD[:-1] + "x")) == 401
        assert _status(port, "/health") == 200  # the health check needs no login
    finally:
        proc.send_signal(signal.SIGINT)  # the CLI passes it on and waits for the server
        try:
            proc.wait(timeout=30)
        finally:
            if _group_alive(proc.pid):
                os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert not _group_alive(proc.pid)
    text = log.read_text()
    assert "Created admin user 'admin'" in text and "HTTP basic authentication" in text
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert tmp_path / "results" / "mlflow_auth.db" in written
    assert not (tmp_path / "basic_auth.db").exists()  # not MLflow's default, in the cwd
    for path in written:
        assert PASSWORD.encode() not in path.read_bytes(), path
