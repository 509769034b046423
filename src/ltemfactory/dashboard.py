"""``ltemfactory dashboard``: the MLflow UI on the training runs, lean enough for a login node.

A plain ``mlflow server`` starts 4 uvicorn workers plus a job runner with 7 Huey consumer
processes (GenAI evaluation, scorers, trace rollups; ~2.8 GB resident, and the consumers outlive
a SIGTERM to the server). The training stage needs none of the jobs, so they are switched off
with ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` (read by ``mlflow.server._run_server``) and one
uvicorn worker serves the UI: two processes, ~0.5 GB. The server binds to 127.0.0.1 by default
(reach it from elsewhere through ``ssh -L 5000:127.0.0.1:5000``) with MLflow's host/CORS checks on.

Any other bind address (``0.0.0.0``, ``::``, a LAN address, a host name that does not resolve to
loopback only) needs authentication: MLflow's ``basic-auth`` app (``mlflow server --app-name
basic-auth``, which needs the ``Flask-WTF`` package of the ``mlflow[auth]`` extra), else
:func:`start_dashboard` refuses before starting anything. The admin credentials come from the
environment only, never from the project config: ``MLFLOW_AUTH_ADMIN_USERNAME`` /
``MLFLOW_AUTH_ADMIN_PASSWORD`` or, when those are unset, ``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD`` (the variables MLflow clients, ``ltemfactory train`` included, log in
with), or from an MLflow auth config file given explicitly (:func:`auth_settings`). They reach
the server through its environment; nothing here logs them or writes them to a file. The
password creates the admin user on the first start against a new user store (``mlflow_auth.db``
beside the SQLite tracking database); later changes go through MLflow's update-password API.

The server runs as ``python -m mlflow server`` from this interpreter (the project's environment)
in a session of its own, so :func:`stop_dashboard` can end every process it started. POSIX only.
MLflow is not imported here: the waiting process stays small.
"""

from __future__ import annotations

import configparser
import importlib.util
import ipaddress
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ltemfactory.errors import InputError
from ltemfactory.files import write_text_atomic
from ltemfactory.training.tracking import (
    is_remote,
    resolve_artifact_location,
    resolve_tracking_uri,
)

__all__ = [
    "JOB_EXECUTION_ENV",
    "AuthSettings",
    "auth_settings",
    "check_exposure",
    "dashboard_command",
    "dashboard_env",
    "is_loopback",
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
#: Where the admin credentials are read from, in order of precedence (username, password).
CREDENTIAL_ENV = (
    ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD"),
    ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"),
)
MIN_PASSWORD_LENGTH = 12  # MLflow's basic-auth password policy
AUTH_CONFIG_NAME = "mlflow_auth.ini"
AUTH_DB_NAME = "mlflow_auth.db"
AUTH_CACHE_TTL_S = 60


def is_loopback(host: str) -> bool:
    """True when ``host`` (an IP address or a name) means this machine only: a loopback
    address, or a name all of whose addresses are loopback. Wildcards (``0.0.0.0``, ``::``,
    empty), other addresses and names that do not resolve are not."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if not host:
        return False
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(
        ipaddress.ip_address(a.split("%", 1)[0]).is_loopback for a in addresses
    )


@dataclass(frozen=True)
class AuthSettings:
    """How to start the server with MLflow's basic-auth app.

    Attributes:
        config_path: the MLflow auth config file (``MLFLOW_AUTH_CONFIG_PATH``); holds no secret
            when written by :func:`auth_settings`.
        env: variables for the server's environment (admin credentials, Flask secret key).
            Secret: not shown by ``repr`` and never logged.
    """

    config_path: Path
    env: Mapping[str, str] = field(repr=False)


def _check_local_backend(backend_store_uri: str) -> None:
    if is_remote(backend_store_uri):
        raise InputError(
            f"tracking.tracking_uri: {backend_store_uri} is a tracking server; open it in a "
            "browser instead of starting a dashboard"
        )


def _sqlite_dir(backend_store_uri: str) -> Path | None:
    _check_local_backend(backend_store_uri)
    resolved = resolve_tracking_uri(backend_store_uri)
    prefix = "sqlite:///"
    if not resolved.startswith(prefix):
        return None
    path = resolved[len(prefix) :].partition("?")[0]
    return None if path in ("", ":memory:") else Path(path).parent


def auth_settings(
    *,
    backend_store_uri: str,
    auth_config: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> AuthSettings:
    """Basic-auth settings for a dashboard on ``backend_store_uri``.

    Without ``auth_config`` the admin credentials must be in ``environ`` (default: this
    process's environment; see :data:`CREDENTIAL_ENV`), and a config file without secrets is
    written beside the SQLite tracking database (``mlflow_auth.ini``; users in
    ``mlflow_auth.db``). With ``auth_config``, that MLflow auth config file is used as it is
    (it may hold ``admin_password``; credentials in the environment still take precedence).
    ``MLFLOW_FLASK_SERVER_SECRET_KEY`` is taken from the environment or drawn at random.

    Raises InputError when Flask-WTF is missing, the credentials are missing or too short
    (the message names the variables, never a value), the config file is unreadable, or the
    backend is not SQLite and no config file is given.
    """
    env_in = os.environ if environ is None else environ
    if importlib.util.find_spec("flask_wtf") is None:
        raise InputError(
            "dashboard --auth: MLflow's basic-auth app needs the Flask-WTF package; install "
            "the auth extra (pip install 'mlflow[auth]')"
        )
    # the first pair with a value set; the client's pair (the last) named in messages otherwise
    user_var, password_var = next(
        (pair for pair in CREDENTIAL_ENV if env_in.get(pair[0]) or env_in.get(pair[1])),
        CREDENTIAL_ENV[-1],
    )
    username, password = env_in.get(user_var) or None, env_in.get(password_var) or None
    file_password = False
    if auth_config is not None:
        config_path = Path(auth_config).absolute()
        parser = configparser.ConfigParser()
        try:
            read = parser.read(config_path)
        except configparser.Error as exc:
            raise InputError(f"{config_path}: not a readable MLflow auth config ({exc})") from None
        if not read or "mlflow" not in parser:
            raise InputError(
                f"{config_path}: expected an MLflow auth config file with an [mlflow] section"
            )
        file_password = bool(parser["mlflow"].get("admin_password"))
        username = username or parser["mlflow"].get("admin_username")
    if not username or not (password or file_password):
        raise InputError(
            f"dashboard --auth: set the admin user name and password in the environment "
            f"({user_var} and {password_var}; the project config never holds them)"
            + ("" if auth_config is None else f" or admin_username/admin_password in {auth_config}")
        )
    if password is not None and len(password) < MIN_PASSWORD_LENGTH:
        raise InputError(
            f"dashboard --auth: the password in {password_var} is too short "
            f"(MLflow needs at least {MIN_PASSWORD_LENGTH} characters)"
        )
    if auth_config is None:
        db_dir = _sqlite_dir(backend_store_uri)
        if db_dir is None:
            raise InputError(
                f"tracking.tracking_uri: {backend_store_uri} is not a SQLite database; give "
                "the MLflow auth config file (its database_uri names the user store) with "
                "--auth-config"
            )
        config_path = db_dir / AUTH_CONFIG_NAME
        write_text_atomic(
            config_path,
            "# Written by ltemfactory dashboard --auth. No secrets: the admin credentials\n"
            "# reach the server through its environment.\n"
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = sqlite:///{(db_dir / AUTH_DB_NAME).as_posix()}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            "# Remember a verified login for a minute instead of re-hashing the password on\n"
            "# every request (3x faster training logs). One server worker: a password change\n"
            "# or deletion through the API applies at once.\n"
            f"auth_cache_ttl_seconds = {AUTH_CACHE_TTL_S}\n",
        )
    env = {
        "MLFLOW_FLASK_SERVER_SECRET_KEY": env_in.get("MLFLOW_FLASK_SERVER_SECRET_KEY")
        or secrets.token_hex(32)
    }
    if username:
        env["MLFLOW_AUTH_ADMIN_USERNAME"] = username
    if password:
        env["MLFLOW_AUTH_ADMIN_PASSWORD"] = password
    return AuthSettings(config_path=config_path, env=env)


def check_exposure(host: str, auth: AuthSettings | None) -> None:
    """InputError unless ``host`` is loopback or authentication is on."""
    if auth is None and not is_loopback(host):
        raise InputError(
            f"dashboard --host {host}: refusing to serve the runs beyond this machine without "
            "authentication. Either keep the default --host 127.0.0.1 (from elsewhere: ssh -L "
            "5000:127.0.0.1:5000 this-host) or add --auth with the admin user in "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (at least "
            f"{MIN_PASSWORD_LENGTH} characters) in the environment"
        )


def dashboard_command(
    *,
    backend_store_uri: str,
    artifacts_destination: str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    workers: int = 1,
    auth: bool = False,
) -> list[str]:
    """The ``mlflow server`` command line for the tracking store (``auth``: with MLflow's
    basic-auth app).

    A relative SQLite path or artifact directory is made absolute against the current directory
    (and created). Raises InputError for a file store or a tracking server URI (a tracking
    server has its own UI).
    """
    _check_local_backend(backend_store_uri)
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
    ] + (["--app-name", "basic-auth"] if auth else [])


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
    auth: AuthSettings | None = None,
    stdout: IO[Any] | int | None = None,
    stderr: IO[Any] | int | None = None,
) -> subprocess.Popen[bytes]:
    """Start the server in a new session (process group) and return at once; see
    :func:`wait_until_healthy` and :func:`stop_dashboard`.

    Raises InputError, before starting anything, when ``host`` is not loopback and ``auth`` is
    None (see :func:`is_loopback`), or when the port is taken (``mlflow server`` would exit 0
    and another server would answer the health checks)."""
    check_exposure(host, auth)
    cmd = dashboard_command(
        backend_store_uri=backend_store_uri,
        artifacts_destination=artifacts_destination,
        host=host,
        port=port,
        workers=workers,
        auth=auth is not None,
    )
    if not is_loopback(host):
        log.warning(
            "dashboard: binding to %s exposes the runs beyond this machine (login required)", host
        )
    _check_port_free(host, port)
    env = dashboard_env()
    if auth is not None:
        env.update(auth.env)
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(auth.config_path)
    log.debug("dashboard: %s", " ".join(cmd))  # no secret: those are in env only
    return subprocess.Popen(cmd, env=env, stdout=stdout, stderr=stderr, start_new_session=True)


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
    auth: AuthSettings | None = None,
) -> int:
    """Serve the MLflow UI until the server exits or this process gets SIGINT/SIGTERM (passed
    on to the server, which shuts down cleanly). Returns the server's exit status."""
    proc = start_dashboard(
        backend_store_uri=backend_store_uri,
        artifacts_destination=artifacts_destination,
        host=host,
        port=port,
        workers=workers,
        auth=auth,
    )
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, _frame: proc.send_signal(signum))
    try:
        if wait_until_healthy(proc, host, port, timeout=120):
            login = " (HTTP basic authentication)" if auth is not None else ""
            log.info("MLflow UI at %s%s (Ctrl-C stops it)", _url(host, port), login)
        status = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc.poll() is None or _group_alive(proc.pid):
            stop_dashboard(proc)
    if status:
        log.error("dashboard: mlflow server exited with status %d", status)
    return status
