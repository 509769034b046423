"""MLflow tracking of the training stage, against a real SQLite tracking store in tmp_path."""

import json
import math
import subprocess
from pathlib import Path

import mlflow
import mlflow.tracking.fluent
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from mlflow import MlflowClient
from mlflow.tracking._tracking_service import utils as tracking_utils
from torch import nn

from ltemfactory.errors import InputError
from ltemfactory.training import tracking
from ltemfactory.training.tracking import (
    PARAM_VALUE_LIMIT,
    TrackingConfig,
    flatten_params,
    lightning_logger,
    log_evaluation,
    log_images,
    log_metrics,
    log_model,
    log_run_context,
    resolve_artifact_location,
    resolve_tracking_uri,
    setup_tracking,
)

FINGERPRINT = "0123456789abcdef" * 4  # SHA-256 hex length


class TinyNet(nn.Module):
    """U-Net-like: pooling and an upsampling to the skip's size (shape-dependent, as in UNet)."""

    def __init__(self, out_channels: int = 3) -> None:
        super().__init__()
        self.enc = nn.Conv2d(1, 4, 3, padding=1)
        self.mid = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Conv2d(8, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.enc(x))
        b = F.interpolate(self.mid(F.max_pool2d(a, 2)), size=a.shape[-2:], mode="bilinear")
        return self.head(torch.cat([a, b], dim=1))


class FixedSizeNet(TinyNet):
    """Python branching on the input size: torch.export freezes H and W."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return y if x.shape[-1] == 64 else -y


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh current directory and MLflow process state (tracking URI and experiment live in
    module globals and environment variables), restored after the test."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    yield tmp_path
    while mlflow.active_run() is not None:
        mlflow.end_run()


def _git_repo(path: Path) -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=path, check=True, capture_output=True, text=True
        ).stdout.strip()

    git("init", "-q")
    (path / "README").write_text("x\n")
    git("add", "README")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    return git("rev-parse", "HEAD")


def test_config_defaults_and_unknown_key():
    cfg = TrackingConfig.from_dict({})
    assert cfg.tracking_uri == "sqlite:///results/mlflow.db"
    assert cfg.artifact_location == "results/mlartifacts"
    assert (cfg.experiment, cfg.registered_model) == ("ltemfactory", "ltemfactory-skyrmion")
    assert TrackingConfig.from_dict({"tracking_uri": "http://h:5000"}).remote
    with pytest.raises(InputError, match="trackinguri"):
        TrackingConfig.from_dict({"trackinguri": "sqlite:///x.db"})


@pytest.mark.parametrize("uri", ["file:///tmp/mlruns", "mlruns", "./results/mlruns"])
def test_file_store_rejected(uri):
    with pytest.raises(InputError, match="file store"):
        TrackingConfig(tracking_uri=uri)


def test_uris_resolved_against_cwd(workdir):
    uri = resolve_tracking_uri("sqlite:///results/sub/mlflow.db")
    assert uri == f"sqlite:///{(workdir / 'results/sub/mlflow.db').as_posix()}"
    assert (workdir / "results" / "sub").is_dir()
    absolute = f"sqlite:///{(workdir / 'abs.db').as_posix()}"
    assert resolve_tracking_uri(absolute) == absolute
    for uri in ("http://127.0.0.1:5000", "postgresql://u@h/db", "sqlite:///:memory:"):
        assert resolve_tracking_uri(uri) == uri
    assert resolve_artifact_location("art") == (workdir / "art").as_uri()
    assert (workdir / "art").is_dir()
    assert resolve_artifact_location("s3://bucket/a") == "s3://bucket/a"


def test_setup_tracking_creates_experiment_once(workdir):
    cfg = TrackingConfig()
    exp_id = setup_tracking(cfg)
    assert setup_tracking(cfg) == exp_id
    assert (workdir / "results" / "mlflow.db").is_file()
    exp = MlflowClient().get_experiment(exp_id)
    assert exp.name == "ltemfactory"
    assert exp.artifact_location == (workdir / "results" / "mlartifacts").as_uri()
    assert mlflow.get_tracking_uri().startswith(f"sqlite:///{workdir.as_posix()}")


def test_flatten_params():
    params = flatten_params(
        {
            "seed": 7,
            "train": {"lr": 1e-3, "on": True, "none": None, "ranges": [0.5, 2.0], "empty": {}},
            "note": "x" * 10_000,
            "bad@key": np.float32(0.5),
        }
    )
    assert params["seed"] == "7"
    assert params["train.lr"] == "0.001"
    assert params["train.on"] == "true"
    assert params["train.none"] == "null"
    assert json.loads(params["train.ranges"]) == [0.5, 2.0]
    assert params["train.empty"] == "{}"
    assert len(params["note"]) == PARAM_VALUE_LIMIT and params["note"].endswith("...")
    assert params["bad_key"] == "0.5"


def test_run_context(workdir):
    commit = _git_repo(workdir)
    store = workdir / "dataset.zarr"
    store.mkdir()
    card = workdir / "card"
    card.mkdir()
    (card / "README.md").write_text("# card\n")
    config = {"seed": 1, "train": {"learning_rate": 3e-3, "network": {"depth": 3}}}
    cfg = TrackingConfig()
    setup_tracking(cfg)
    run_id = lightning_logger(None, cfg).run_id  # the training CLI's way to create the run

    log_run_context(
        run_id=run_id, config=config, dataset_store=store, fingerprint=FINGERPRINT, card_dir=card
    )

    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.data.params["train.learning_rate"] == "0.003"
    assert run.data.params["train.network.depth"] == "3"
    tags = run.data.tags
    assert tags["git.commit"] == commit == tags["mlflow.source.git.commit"]
    assert tags["git.dirty"] == "false"
    assert tags["dataset.fingerprint"] == FINGERPRINT
    for pkg in ("ltemfactory", "torch", "pytorch-lightning", "numpy", "zarr", "mlflow"):
        assert tags[f"versions.{pkg}"] not in ("", "not installed"), pkg
    (inp,) = run.inputs.dataset_inputs
    assert inp.dataset.digest == FINGERPRINT[: tracking.DIGEST_LENGTH]
    assert json.loads(inp.dataset.source) == {"uri": str(store)}
    assert inp.dataset.name == "dataset.zarr"
    input_tags = {t.key: t.value for t in inp.tags}
    assert input_tags == {"mlflow.data.context": "training", "fingerprint": FINGERPRINT}
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "dataset_card"} <= artifacts
    assert [a.path for a in client.list_artifacts(run_id, "dataset_card")] == [
        "dataset_card/README.md"
    ]
    assert run.info.artifact_uri.startswith((workdir / "results" / "mlartifacts").as_uri())
    saved = Path(run.info.artifact_uri.removeprefix("file://")) / "config.yaml"
    assert yaml.safe_load(saved.read_text()) == config

    with pytest.raises(InputError, match="missing"):
        log_run_context(
            run_id=run_id,
            config=config,
            dataset_store=store,
            fingerprint=FINGERPRINT,
            card_dir=workdir / "missing",
        )


def test_metrics_drop_nonfinite_and_lightning_logger_resumes(workdir):
    cfg = TrackingConfig()
    setup_tracking(cfg)
    client = MlflowClient()
    run_id = lightning_logger(None, cfg).run_id
    client.set_terminated(run_id, "FAILED")  # as after a crash

    logged = log_metrics(
        {"val/f1_50": np.float32(0.75), "val/loss": math.nan, "val/ap_50": torch.tensor(math.inf)},
        step=3,
        run_id=run_id,
    )
    assert logged == {"val/f1_50": 0.75}

    logger = lightning_logger(run_id, cfg)
    assert client.get_run(run_id).info.status == "RUNNING"
    assert logger.run_id == run_id
    logger.log_metrics({"train/loss": 0.5}, step=4)
    logger.log_hyperparams({"learning_rate": 0.003, "decode": {"sigma_px": 1.0}})
    run = client.get_run(run_id)
    assert run.data.metrics == {"val/f1_50": 0.75, "train/loss": 0.5}
    assert [m.step for m in client.get_metric_history(run_id, "val/f1_50")] == [3]
    assert client.get_metric_history(run_id, "val/loss") == []
    assert run.data.params["decode/sigma_px"] == "1.0"

    with pytest.raises(InputError, match="not found"):
        lightning_logger("0" * 32, cfg)


def test_log_images(workdir):
    setup_tracking(TrackingConfig())
    with mlflow.start_run() as run:
        rgb = np.zeros((16, 16, 3), np.uint8)
        rgb[4:8, 4:8] = (255, 0, 0)
        log_images({"val/overlay": rgb}, step=2)
    files = [a.path for a in MlflowClient().list_artifacts(run.info.run_id, "images")]
    # MLflow stores the key "val/overlay" as "val~overlay" in file names
    assert any(f.startswith("images/val~overlay+step+2") and f.endswith(".png") for f in files)


def test_log_model_registers_and_loads(workdir):
    cfg = TrackingConfig()
    setup_tracking(cfg)
    client = MlflowClient()
    torch.manual_seed(0)
    net = TinyNet()
    net.train()
    ckpt = workdir / "best.ckpt"
    torch.save(net.state_dict(), ckpt)
    run_id = lightning_logger(None, cfg).run_id
    meta = {"normalisation": {"method": "zscore"}, "train_diameter_px": np.float64(12.5)}

    uri = log_model(
        net,
        run_id=run_id,
        example_input=np.zeros((1, 1, 64, 64), np.float32),
        metadata=meta,
        registered_model=cfg.registered_model,
        checkpoint=ckpt,
    )

    assert net.training  # the caller's network is left as it was
    assert uri.startswith("models:/m-")  # MLflow 3 logged-model URI
    (version,) = client.search_model_versions(f"name = '{cfg.registered_model}'")
    assert version.source == uri and version.run_id == run_id
    info = mlflow.models.get_model_info(uri)
    assert info.run_id == run_id
    assert info.metadata == {"normalisation": {"method": "zscore"}, "train_diameter_px": 12.5}
    (inp,) = info.signature.inputs.inputs
    assert inp.shape == (-1, 1, -1, -1) and inp.type == np.dtype(np.float32)
    assert info.signature.outputs.inputs[0].shape == (-1, 3, -1, -1)
    assert "checkpoints/best.ckpt" in {a.path for a in client.list_artifacts(run_id, "checkpoints")}

    loaded = mlflow.pytorch.load_model(f"models:/{cfg.registered_model}/{version.version}")
    x = torch.randn(3, 1, 96, 128)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net.eval()(x), rtol=1e-5, atol=1e-6)

    logged = log_evaluation(
        run_id=run_id,
        tracking={},
        metrics={"test/f1_50": 0.9, "test/ap_50": 0.8, "test/n_true": 10.0, "test/pq_50": math.nan},
        artifacts=[ckpt],
        registered_model=cfg.registered_model,
        model_uri=uri,
    )
    assert "test/pq_50" not in logged
    run = client.get_run(run_id)
    assert run.data.metrics["test/f1_50"] == 0.9
    assert "evaluation/best.ckpt" in {a.path for a in client.list_artifacts(run_id, "evaluation")}
    tags = client.get_model_version(cfg.registered_model, version.version).tags
    assert tags == {"test/f1_50": "0.9", "test/ap_50": "0.8"}


def test_log_model_rejects_frozen_sizes(workdir):
    setup_tracking(TrackingConfig())
    with mlflow.start_run(), pytest.raises(RuntimeError, match="froze the sizes"):
        log_model(
            FixedSizeNet(),
            example_input=np.zeros((2, 1, 64, 64), np.float32),
            metadata={},
            registered_model="never",
        )
    assert MlflowClient().search_registered_models() == []
