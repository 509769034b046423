"""``train.tracking.tracking_uri: http://...`` end to end: ``ltemfactory train`` against a real
MLflow server (the dashboard's) on a loopback port; the run, its metrics, the logged and
registered model are found through the REST API, and every artifact went through the server
(artifact proxying) into its artifact directory, none into the client's directory."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from mlflow.tracking._tracking_service import utils as tracking_utils

from ltemfactory.dashboard import (
    AuthSettings,
    auth_settings,
    start_dashboard,
    stop_dashboard,
    wait_until_healthy,
)
from ltemfactory.errors import InputError
from ltemfactory.training.tracking import TrackingConfig, setup_tracking

from .trainstore import cli_env, free_port, rest, run_train, write_config, write_train_store

PASSWORD = "ltem-Train-Pw-" + "c0ffee5eed42"  # only ever in the environment


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@contextlib.contextmanager
def _serve(root: Path, auth: AuthSettings | None = None) -> Iterator[tuple[int, Path, Path]]:
    """A dashboard server over a fresh SQLite store in ``root`` (the current directory):
    (port, artifact directory, log path)."""
    port, log = free_port(), root / "server.log"
    with open(log, "wb") as out:
        proc = start_dashboard(
            backend_store_uri="sqlite:///mlflow.db",
            artifacts_destination="artifacts",
            port=port,
            auth=auth,
            stdout=out,
            stderr=out,
        )
    try:
        assert wait_until_healthy(proc, "127.0.0.1", port, timeout=90), log.read_text()[-3000:]
        yield port, root / "artifacts", log
    finally:
        stop_dashboard(proc)


@pytest.fixture
def server_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    root = tmp_path / "server"
    root.mkdir()
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def server(server_root):
    with _serve(server_root) as running:
        yield running


def test_training_logs_everything_through_the_tracking_server(tmp_path, server):
    port, artifacts, log = server
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    store = write_train_store(client_dir / "dataset.zarr")
    config = write_config(
        client_dir / "config.yaml", {"max_epochs": 1}, tracking_uri=f"http://127.0.0.1:{port}"
    )
    before = _files(client_dir)
    start = time.monotonic()
    proc = run_train(client_dir, config, store)
    print(f"ltemfactory train against the server: {time.monotonic() - start:.1f} s")
    assert proc.returncode == 0, proc.stdout[-5000:] + log.read_text()[-3000:]

    status, body = rest(port, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=ltemfactory")
    assert status == 200, body
    exp_id = body["experiment"]["experiment_id"]
    assert body["experiment"]["artifact_location"].startswith("mlflow-artifacts:/")

    status, body = rest(port, "/api/2.0/mlflow/runs/search", {"experiment_ids": [exp_id]})
    assert status == 200, body
    (run,) = body["runs"]
    run_id = run["info"]["run_id"]
    assert run["info"]["status"] == "FINISHED"
    assert run["info"]["artifact_uri"].startswith("mlflow-artifacts:/")
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert {"train/loss", "val/loss", "val/f1", "val/n_images"} <= set(metrics)
    assert metrics["val/n_images"] == 5
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["train.tracking.tracking_uri"] == f"http://127.0.0.1:{port}"
    status, body = rest(
        port, f"/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key=train/loss"
    )
    assert status == 200 and len(body["metrics"]) == 4, body  # 1 epoch of 4 steps

    status, body = rest(port, "/api/2.0/mlflow/registered-models/get?name=ltemfactory-skyrmion")
    assert status == 200, body
    (version,) = body["registered_model"]["latest_versions"]
    assert version["run_id"] == run_id and version["source"].startswith("models:/m-")
    model_id = version["source"].removeprefix("models:/")
    status, body = rest(port, f"/api/2.0/mlflow/logged-models/{quote(model_id)}")
    assert status == 200, body
    logged = body["model"]["info"]
    assert logged["source_run_id"] == run_id
    assert logged["artifact_uri"].startswith("mlflow-artifacts:/")

    status, body = rest(port, f"/api/2.0/mlflow/artifacts/list?run_id={run_id}")
    assert status == 200, body
    assert {"config.yaml", "checkpoints"} <= {f["path"] for f in body["files"]}
    # the server's artifact proxy (mlflow-artifacts:/) serves them
    path = f"{exp_id}/{run_id}/artifacts/checkpoints"
    status, body = rest(port, f"/api/2.0/mlflow-artifacts/artifacts?path={path}")
    assert status == 200 and [f["path"] for f in body["files"]] == ["best.ckpt"], body

    # Where the bytes are: in the server's artifact directory...
    stored = _files(artifacts)
    assert f"{exp_id}/{run_id}/artifacts/config.yaml" in stored
    assert f"{exp_id}/{run_id}/artifacts/checkpoints/best.ckpt" in stored
    model_files = [p for p in stored if p.startswith(f"{exp_id}/models/{model_id}/")]
    assert any(p.endswith("/MLmodel") for p in model_files), sorted(stored)
    # ... and nothing besides the stage's own outputs in the client's directory.
    new = _files(client_dir) - before
    assert {p.split("/")[0] for p in new} == {"model", "checkpoints"}, sorted(new)
    assert not any(p.endswith(("MLmodel", "config.yaml")) for p in new)


def test_training_logs_in_to_an_auth_server_and_writes_no_secret(
    tmp_path, server_root, monkeypatch
):
    """Dashboard with basic auth; ``ltemfactory train`` logs in with MLFLOW_TRACKING_USERNAME
    and MLFLOW_TRACKING_PASSWORD. The password is in no log, config or file of either side."""
    creds = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": PASSWORD}
    auth = auth_settings(backend_store_uri="sqlite:///mlflow.db", environ=creds)
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    store = write_train_store(client_dir / "dataset.zarr")
    with _serve(server_root, auth) as (port, _, log):
        config = write_config(
            client_dir / "config.yaml", {"max_epochs": 1}, tracking_uri=f"http://127.0.0.1:{port}"
        )
        search = "/api/2.0/mlflow/runs/search"
        assert rest(port, search, {"experiment_ids": ["0"]})[0] == 401
        # without credentials the training stage stops at once with one clear error
        for var in creds:
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setattr(tracking_utils, "_tracking_uri", None)  # restored after the test
        with pytest.raises(InputError, match=r"refused access \(HTTP 401\); set MLFLOW_TRACKING_"):
            setup_tracking(TrackingConfig(tracking_uri=f"http://127.0.0.1:{port}"))

        start = time.monotonic()
        proc = run_train(client_dir, config, store, env=cli_env(**creds))
        print(f"ltemfactory train against the auth server: {time.monotonic() - start:.1f} s")
        assert proc.returncode == 0, proc.stdout[-5000:] + log.read_text()[-3000:]
        status, body = rest(
            port,
            "/api/2.0/mlflow/experiments/get-by-name?experiment_name=ltemfactory",
            auth=("admin", PASSWORD),
        )
        assert status == 200, body
        exp_id = body["experiment"]["experiment_id"]
        status, body = rest(port, search, {"experiment_ids": [exp_id]}, auth=("admin", PASSWORD))
        assert status == 200 and len(body["runs"]) == 1, body
        (run,) = body["runs"]
        assert run["info"]["status"] == "FINISHED"
        status, body = rest(
            port,
            "/api/2.0/mlflow/registered-models/get?name=ltemfactory-skyrmion",
            auth=("admin", PASSWORD),
        )
        assert status == 200 and body["registered_model"]["latest_versions"], body

    secret = PASSWORD.encode()
    assert secret not in proc.stdout.encode()
    for root in (client_dir, server_root):
        for path in root.rglob("*"):
            if path.is_file():
                assert secret not in path.read_bytes(), path  # logs, configs, stores, artifacts
