"""``ltemfactory dashboard``: the MLflow UI on the training runs, lean enough for a login node.

A plain ``mlflow server`` starts 4 uvicorn workers plus a job runner with 7 Huey consumer
processes (GenAI evaluation, scorers, trace rollups; ~2.8 GB resident, and the consumers outlive
a SIGTERM to the server). The training stage needs none of the jobs, so they are switched off
with ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` (read by ``mlflow.server._run_server``) and one
uvicorn worker serves the UI: two processes, ~0.5 GB. The server binds to 127.0.0.1 by default
(reach it from elsewhere through ``ssh -L 5000:127.0.0.1:5000``) with MLflow's host/CORS checks on.

The server runs as ``python -m mlflow server`` from this interpreter (the project's environment)
in a session of its own, so :func:`stop_dashboard` can end every process it started. POSIX only.
MLflow is not imported here: the waiting process stays small.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import IO, Any

from ltemfactory.errors import InputError
from ltemfactory.training.tracking import (
    is_remote,
    resolve_artifact_location,
    resolve_tracking_uri,
)

__all__ = [
    "JOB_EXECUTION_ENV",
    "dashboard_command",
    "dashboard_env",
    "run_dashboard",
    "start_dashboard",
    "stop_dashboard",
    "wait_until_healthy",
]

log = logging.getLogger(__name__)

#: Environment variable that enables MLflow's background job runner (default true).
JOB_EXECUTION_ENV = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000


def dashboard_command(
    *,
    backend_store_uri: str,
    artifacts_destination: str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    workers: int = 1,
) -> list[str]:
    """The ``mlflow server`` command line for the tracking store.

    A relative SQLite path or artifact directory is made absolute against the current directory
    (and created). Raises InputError for a file store or a tracking server URI (a tracking
    server has its own UI).
    """
    if is_remote(backend_store_uri):
        raise InputError(
            f"tracking.tracking_uri: {backend_store_uri} is a tracking server; open it in a "
            "browser instead of starting a dashboard"
        )
    if workers < 1:
        raise InputError(f"dashboard workers: expected >= 1, got {workers}")
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        resolve_tracking_uri(backend_store_uri),
        "--artifacts-destination",
        resolve_artifact_location(artifacts_destination),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]


def dashboard_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with MLflow's job execution disabled."""
    env = dict(os.environ if base is None else base)
    env[JOB_EXECUTION_ENV] = "false"
    return env


def start_dashboard(
    *,
    backend_store_uri: str,
    artifacts_destination: str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    workers: int = 1,
    stdout: IO[Any] | int | None = None,
    stderr: IO[Any] | int | None = None,
) -> subprocess.Popen[bytes]:
    """Start the server in a new session (process group) and return at once; see
    :func:`wait_until_healthy` and :func:`stop_dashboard`. Raises InputError when the port is
    taken (``mlflow server`` would exit 0 and another server would answer the health checks)."""
    cmd = dashboard_command(
        backend_store_uri=backend_store_uri,
        artifacts_destination=artifacts_destination,
        host=host,
        port=port,
        workers=workers,
    )
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("dashboard: binding to %s exposes the runs beyond this machine", host)
    _check_port_free(host, port)
    log.debug("dashboard: %s", " ".join(cmd))
    return subprocess.Popen(
        cmd, env=dashboard_env(), stdout=stdout, stderr=stderr, start_new_session=True
    )


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise InputError(
                f"dashboard: cannot listen on {host}:{port} ({exc.strerror})"
            ) from None


def _url(host: str, port: int) -> str:
    connect = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # wildcard bind
    return f"http://{connect}:{port}"


def wait_until_healthy(
    proc: subprocess.Popen[bytes], host: str, port: int, *, timeout: float = 60.0
) -> bool:
    """Poll ``GET /health`` until it answers 200 (True), the server exits or ``timeout``
    seconds pass (False)."""
    url = f"{_url(host, port)}/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a reused group id of someone else's
        return False
    return True


def stop_dashboard(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGTERM to the server's process group, SIGKILL after ``timeout`` s; waits until no
    process of the group is left. Returns the server's exit status."""
    pgid = proc.pid  # start_dashboard made it a session (and group) leader
    if proc.poll() is None or _group_alive(pgid):
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (proc.poll() is None or _group_alive(pgid)):
        time.sleep(0.1)
    if proc.poll() is None or _group_alive(pgid):
        log.warning("dashboard: still running after %.0f s; killing it", timeout)
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return proc.wait()


def run_dashboard(
    *,
    backend_store_uri: str,
    artifacts_destination: str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    workers: int = 1,
) -> int:
    """Serve the MLflow UI until the server exits or this process gets SIGINT/SIGTERM (passed
    on to the server, which shuts down cleanly). Returns the server's exit status."""
    proc = start_dashboard(
        backend_store_uri=backend_store_uri,
        artifacts_destination=artifacts_destination,
        host=host,
        port=port,
        workers=workers,
    )
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, _frame: proc.send_signal(signum))
    try:
        if wait_until_healthy(proc, host, port, timeout=120):
            log.info("MLflow UI at %s (Ctrl-C stops it)", _url(host, port))
        status = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc.poll() is None or _group_alive(proc.pid):
            stop_dashboard(proc)
    if status:
        log.error("dashboard: mlflow server exited with status %d", status)
    return status
