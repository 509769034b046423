"""MLflow experiment tracking for the training stage (``ltemfactory train`` / ``evaluate``).

Backend: a SQLite database (default ``sqlite:///results/mlflow.db``, artifacts under
``results/mlartifacts``) or a tracking server (``http(s)://``), which then stores the artifacts
itself. The file store (``./mlruns``) is deprecated in MLflow 3 and rejected. Relative SQLite and
artifact paths are taken relative to the current directory, made absolute and created.

The run is created (or resumed) by the Lightning logger of :func:`lightning_logger`, not by
``mlflow.start_run``, so every function takes ``run_id`` (default: the active MLflow run).

Per run: the full config (``config.yaml`` artifact and flattened params, values cut at
:data:`PARAM_VALUE_LIMIT` characters), the dataset (``log_input``: digest = fingerprint prefix,
source = store path, full fingerprint as input and run tag), the dataset card (artifacts),
git commit and dirty flag, package versions (tags), metrics without NaN/inf, images, the model
(``torch.export`` graph with a signature, registered under ``registered_model``) and the
checkpoint.

MLflow, torch and Lightning are imported inside the functions: ``ltemfactory dashboard`` only
needs :func:`resolve_tracking_uri` and its waiting process stays ~350 MB lighter without them.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import platform
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np

from ltemfactory.errors import InputError

if TYPE_CHECKING:
    import torch
    from mlflow import MlflowClient
    from pytorch_lightning.loggers import MLFlowLogger

__all__ = [
    "DEFAULT_ARTIFACT_LOCATION",
    "DEFAULT_TRACKING_URI",
    "HEADLINE_METRICS",
    "PARAM_VALUE_LIMIT",
    "TrackingConfig",
    "flatten_params",
    "is_remote",
    "lightning_logger",
    "log_evaluation",
    "log_images",
    "log_metrics",
    "log_model",
    "log_run_context",
    "resolve_artifact_location",
    "resolve_tracking_uri",
    "setup_tracking",
]

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///results/mlflow.db"
DEFAULT_ARTIFACT_LOCATION = "results/mlartifacts"

#: Param values are cut to this length: every MLflow server since 1.28 accepts it, and the full
#: config is logged as the ``config.yaml`` artifact anyway.
PARAM_VALUE_LIMIT = 500
_KEY_LIMIT = 250  # MLflow's limit for param, metric and tag keys
#: MLflow's dataset digest column holds 36 characters; the SHA-256 fingerprint has 64.
DIGEST_LENGTH = 36
#: Metric name endings copied as tags onto the registered model version by log_evaluation.
HEADLINE_METRICS = ("f1_50", "ap_50", "pq_50")
#: Distributions whose versions are logged as ``versions.<name>`` tags.
VERSION_PACKAGES = ("ltemfactory", "torch", "pytorch-lightning", "numpy", "zarr")

_REMOTE_SCHEMES = ("http", "https", "databricks")
_BAD_KEY_CHARS = re.compile(r"[^/\w.\- ]")  # MLflow's allowed set, minus ':' (not on Windows)


@dataclass(frozen=True)
class TrackingConfig:
    """Where runs go: the ``train.tracking`` config section.

    Attributes:
        tracking_uri: ``sqlite:///relative/or/absolute.db`` (or another SQLAlchemy URI), or
            ``http(s)://`` of a tracking server.
        artifact_location: artifact directory of the experiment for database backends (ignored
            for a tracking server, which stores artifacts itself).
        experiment: MLflow experiment name.
        registered_model: model registry name the trained model is registered under (None:
            log the model without registering it).
    """

    tracking_uri: str = DEFAULT_TRACKING_URI
    artifact_location: str = DEFAULT_ARTIFACT_LOCATION
    experiment: str = "ltemfactory"
    registered_model: str | None = "ltemfactory-skyrmion"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.name == "registered_model":
                continue
            if not isinstance(value, str) or not value.strip():
                raise InputError(f"tracking.{f.name}: expected a non-empty string, got {value!r}")
        _reject_file_store(self.tracking_uri)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> TrackingConfig:
        """Build from the config section; unknown keys are errors (a typo would otherwise
        silently log to the default store)."""
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(
                f"tracking: unknown key(s) {unknown}; expected some of {sorted(known)}"
            )
        return cls(**d)

    @property
    def remote(self) -> bool:
        """True for a tracking server: it chooses where artifacts go."""
        return is_remote(self.tracking_uri)


def is_remote(uri: str) -> bool:
    """True for a tracking server (``http(s)://``, ``databricks``) rather than a database."""
    return urlparse(uri).scheme in _REMOTE_SCHEMES


def _reject_file_store(uri: str) -> None:
    scheme = urlparse(uri).scheme
    # A one-letter "scheme" is a Windows drive letter, i.e. a plain path.
    if scheme in ("", "file") or len(scheme) == 1:
        raise InputError(
            f"tracking.tracking_uri: {uri!r} is an MLflow file store, which is deprecated and "
            "not supported; use sqlite:///path/to/mlflow.db or http(s)://host:port"
        )


def resolve_tracking_uri(uri: str) -> str:
    """``uri`` with a relative SQLite path made absolute (against the current directory) and
    its directory created; other URIs unchanged. Raises InputError for a file store.

    Absolute paths keep the run, the dashboard and DataLoader subprocesses on the same database
    whatever their working directory.
    """
    _reject_file_store(uri)
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return uri
    path, sep, query = uri[len(prefix) :].partition("?")
    if path in ("", ":memory:"):
        return uri
    p = Path(path)
    if not p.is_absolute():
        p = Path.cwd() / p
    p.parent.mkdir(parents=True, exist_ok=True)
    return f"{prefix}{p.as_posix()}{sep}{query}"


def resolve_artifact_location(location: str) -> str:
    """Absolute ``file://`` URI of a local artifact directory (created); URIs of other
    schemes (``s3://``, ...) unchanged."""
    parsed = urlparse(location)
    if parsed.scheme == "file":
        p = Path(parsed.path)
    elif parsed.scheme and len(parsed.scheme) > 1:
        return location
    else:
        p = Path(location)
    p = p if p.is_absolute() else Path.cwd() / p
    p.mkdir(parents=True, exist_ok=True)
    return p.as_uri()


def setup_tracking(cfg: TrackingConfig) -> str:
    """Point MLflow at ``cfg`` (tracking URI, experiment) and return the experiment id.

    The experiment is created on first use, with ``cfg.artifact_location`` for database
    backends; an existing experiment keeps the location it was created with (logged when it
    differs). Concurrent training jobs may race to create it; the loser uses the winner's.
    A tracking server that refuses the login (HTTP 401/403) raises InputError: its user and
    password come from ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = resolve_tracking_uri(cfg.tracking_uri)
    mlflow.set_tracking_uri(uri)
    location = None if cfg.remote else resolve_artifact_location(cfg.artifact_location)
    client = mlflow.MlflowClient(uri)
    try:
        exp = client.get_experiment_by_name(cfg.experiment)
    except MlflowException as exc:
        if exc.get_http_status_code() not in (401, 403):
            raise
        raise InputError(
            f"tracking.tracking_uri: {uri} refused access (HTTP {exc.get_http_status_code()}); "
            "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in the environment to a "
            "user of that server (the config never holds credentials)"
        ) from None
    if exp is None:
        try:
            exp_id = client.create_experiment(cfg.experiment, artifact_location=location)
        except MlflowException:
            exp = client.get_experiment_by_name(cfg.experiment)
            if exp is None:
                raise
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise InputError(
                f"tracking.experiment: {cfg.experiment!r} is deleted in {uri}; restore it "
                "(mlflow experiments restore) or choose another name"
            )
        exp_id = exp.experiment_id
        if location is not None and exp.artifact_location != location:
            log.warning(
                "experiment %r keeps its artifact location %s (config: %s)",
                cfg.experiment,
                exp.artifact_location,
                location,
            )
    mlflow.set_experiment(experiment_id=exp_id)
    log.info("MLflow: %s, experiment %r (id %s)", uri, cfg.experiment, exp_id)
    return exp_id


def lightning_logger(run_id: str | None, cfg: TrackingConfig) -> MLFlowLogger:
    """Lightning's MLflow logger on run ``run_id`` (resumed: status set back to RUNNING), or on a
    new run of ``cfg.experiment`` when None; its ``run_id`` property creates that run.

    ``log_model=False``: the model is logged once, by :func:`log_model`. Metric names must use
    MLflow's characters (``val/f1_50``, not ``val/f1@0.5``: Lightning would drop the ``@``).
    """
    from pytorch_lightning.loggers import MLFlowLogger

    uri = resolve_tracking_uri(cfg.tracking_uri)
    if run_id is not None:
        import mlflow

        client = mlflow.MlflowClient(uri)
        _existing_run(client, run_id)
        client.update_run(run_id, status="RUNNING")
    return MLFlowLogger(
        experiment_name=cfg.experiment,
        tracking_uri=uri,
        run_id=run_id,
        artifact_location=None if cfg.remote else resolve_artifact_location(cfg.artifact_location),
        log_model=False,
    )


def flatten_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config → ``{"section.key": value}`` strings fit for ``log_params``.

    Scalars other than strings and all lists are JSON (``true``, ``null``, ``[0.8, 0.1]``);
    values longer than :data:`PARAM_VALUE_LIMIT` are cut (ending in ``...``); characters MLflow
    rejects in keys become ``_``.
    """
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, f"{name}."))
            continue
        text = value if isinstance(value, str) else json.dumps(_plain(value))
        if len(text) > PARAM_VALUE_LIMIT:
            text = text[: PARAM_VALUE_LIMIT - 3] + "..."
        out[_BAD_KEY_CHARS.sub("_", name)[:_KEY_LIMIT]] = text
    return out


def _plain(obj: Any) -> Any:
    """JSON/YAML-safe copy: numpy scalars and arrays, Paths and tuples become plain types."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return str(obj)


def _client_and_run(run_id: str | None) -> tuple[MlflowClient, str]:
    import mlflow

    if run_id is None:
        active = mlflow.active_run()
        if active is None:
            raise RuntimeError("no run_id given and no active MLflow run")
        run_id = active.info.run_id
    return mlflow.MlflowClient(), run_id


def _existing_run(client: MlflowClient, run_id: str) -> Any:
    """The run, or InputError when the store has no such (undeleted) run — e.g. a
    ``resume.json`` from another database."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        run = None
    if run is None or run.info.lifecycle_stage == "deleted":
        raise InputError(f"MLflow run {run_id}: not found (or deleted) in {client.tracking_uri}")
    return run


def _versions() -> dict[str, str]:
    import mlflow

    out = {"versions.python": platform.python_version(), "versions.mlflow": mlflow.__version__}
    for dist in VERSION_PACKAGES:
        try:
            out[f"versions.{dist}"] = version(dist)
        except PackageNotFoundError:
            out[f"versions.{dist}"] = "not installed"
    return out


def log_run_context(
    *,
    config: Mapping[str, Any],
    dataset_store: str | Path,
    fingerprint: str,
    card_dir: str | Path | None = None,
    run_id: str | None = None,
) -> None:
    """Log what makes the run reproducible: config (artifact + params), dataset (input, tags,
    card), git commit and package versions.

    Args:
        config: the full, validated config.
        dataset_store: the dataset store trained on (its absolute path is the input's source).
        fingerprint: the store's content fingerprint (:func:`ltemfactory.dataset.fingerprint`).
        card_dir: the dataset card directory, logged under ``dataset_card/`` (None: skipped).
        run_id: the run (default: the active run).
    """
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource
    from mlflow.entities import Dataset, DatasetInput, InputTag, Param, RunTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_GIT_COMMIT

    from ltemfactory.dataset.assembly import _git_info

    client, run_id = _client_and_run(run_id)
    if card_dir is not None and not Path(card_dir).is_dir():
        raise InputError(f"{card_dir}: dataset card directory not found")
    store = Path(dataset_store).absolute()
    plain = _plain(config)
    client.log_dict(run_id, plain, "config.yaml")
    params = [Param(k, v) for k, v in flatten_params(plain).items()]
    commit, dirty = _git_info()
    tags = {
        "git.commit": commit,
        "git.dirty": str(dirty).lower() if dirty is not None else "unknown",
        "dataset.fingerprint": fingerprint,
        "dataset.path": str(store),
        **_versions(),
    }
    if commit != "unknown":
        tags[MLFLOW_GIT_COMMIT] = commit  # shown as "Git commit" in the UI
    client.log_batch(run_id, params=params, tags=[RunTag(k, v) for k, v in tags.items()])
    source = LocalArtifactDatasetSource(str(store))
    dataset = MetaDataset(source, name=store.name, digest=fingerprint[:DIGEST_LENGTH])
    input_tags = [
        InputTag(MLFLOW_DATASET_CONTEXT, "training"),
        InputTag("fingerprint", fingerprint),
    ]
    client.log_inputs(run_id, [DatasetInput(Dataset(**dataset.to_dict()), tags=input_tags)])
    if card_dir is not None:
        client.log_artifacts(run_id, str(card_dir), "dataset_card")
    log.debug(
        "run %s: logged %d params, %d tags, dataset %s", run_id, len(params), len(tags), store
    )


def log_metrics(
    metrics: Mapping[str, Any], *, step: int | None = None, run_id: str | None = None
) -> dict[str, float]:
    """Log the finite metrics (NaN and inf are dropped, with a debug message: MLflow stores them
    but plots and compares them badly). Values may be numpy or torch scalars.

    Returns what was logged.
    """
    from mlflow.entities import Metric

    client, run_id = _client_and_run(run_id)
    finite: dict[str, float] = {}
    for key, value in metrics.items():
        v = float(value.item() if hasattr(value, "item") else value)
        if math.isfinite(v):
            finite[key] = v
        else:
            log.debug("metric %s = %s not logged (not finite)", key, v)
    now = int(time.time() * 1000)
    entries = [Metric(k, v, now, step or 0) for k, v in finite.items()]
    if entries:
        client.log_batch(run_id, metrics=entries)
    return finite


def log_images(images: Mapping[str, np.ndarray], *, step: int, run_id: str | None = None) -> None:
    """Log images (e.g. prediction overlays) as MLflow step images, shown per step in the UI.

    Arrays are (row, col), (row, col, 3) or (row, col, 4), uint8 or float in [0, 1].
    """
    client, run_id = _client_and_run(run_id)
    for key, image in images.items():
        client.log_image(run_id, np.asarray(image), key=_BAD_KEY_CHARS.sub("_", key), step=step)


@contextlib.contextmanager
def _fluent_run(run_id: str | None) -> Iterator[str]:
    """Make ``run_id`` the active run for fluent-only APIs (``mlflow.pytorch.log_model``)."""
    import mlflow

    active = mlflow.active_run()
    if run_id is None or (active is not None and active.info.run_id == run_id):
        yield _client_and_run(run_id)[1]
        return
    if active is not None:
        raise RuntimeError(f"cannot log to run {run_id}: run {active.info.run_id} is active")
    with mlflow.start_run(run_id=run_id):
        yield run_id


def _image_signature(x: np.ndarray, y: np.ndarray) -> Any:
    """Signature inferred from the example, with batch, row and column axes variable."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    def spec(a: np.ndarray) -> TensorSpec:
        return TensorSpec(a.dtype, (-1, a.shape[1], -1, -1))

    return ModelSignature(inputs=Schema([spec(x)]), outputs=Schema([spec(y)]))


def log_model(
    network: torch.nn.Module,
    *,
    example_input: np.ndarray,
    metadata: Mapping[str, Any],
    registered_model: str | None = None,
    checkpoint: str | Path | None = None,
    run_id: str | None = None,
    name: str = "model",
) -> str:
    """Log ``network`` as an MLflow model and return its URI (``models:/m-...``), loadable
    with ``mlflow.pytorch.load_model``.

    The model is a ``torch.export`` graph (MLflow's ``pt2`` format: no pickle, no ltemfactory
    import needed to load it) of a CPU copy in eval mode. Batch, row and column sizes stay
    variable: the example is repeated to a batch of 2 if needed (``torch.export`` fixes size-1
    axes), and the loaded graph is checked against the network on a (N+1, C, 2H, 2W) input
    before the model is registered, since shape-dependent Python in ``forward`` can silently
    freeze sizes.

    Args:
        network: maps (N, C, H, W) float32 to a single (N, C_out, H, W) tensor.
        example_input: a small (N, C, H, W) input (e.g. 1x1x64x64) with H, W sizes the network
            accepts; stored with the model.
        metadata: JSON-able facts inference needs (normalisation, training scale, decoder
            parameters); stored in the MLmodel file.
        registered_model: registry name to create a version under (None: not registered).
        checkpoint: a checkpoint file to log as an artifact under ``checkpoints/``.
        run_id: the run (default: the active run).
        name: name of the logged model.
    """
    import mlflow
    import torch

    x = np.asarray(example_input, dtype=np.float32)
    if x.ndim != 4:
        raise InputError(f"example_input: expected (N, C, H, W), got shape {x.shape}")
    if x.shape[0] < 2:
        x = np.concatenate([x, x])
    net = copy.deepcopy(network).cpu().eval()
    with torch.no_grad():
        y = net(torch.from_numpy(x))
    if not isinstance(y, torch.Tensor) or y.ndim != 4:
        raise InputError(f"network output: expected one (N, C, H, W) tensor, got {type(y)}")
    requirements = [f"torch=={torch.__version__.split('+')[0]}"]  # no local label (+cpu)
    with _fluent_run(run_id) as rid:
        info = mlflow.pytorch.log_model(
            net,
            name=name,
            signature=_image_signature(x, y.numpy()),
            input_example=x,
            metadata=_plain(metadata),
            pip_requirements=requirements,  # inferring them costs ~7 s
            serialization_format="pt2",
        )
    _check_variable_shapes(info.model_uri, net, x)
    client = mlflow.MlflowClient()
    if checkpoint is not None:
        client.log_artifact(rid, str(checkpoint), "checkpoints")
    if registered_model:
        mv = mlflow.register_model(info.model_uri, registered_model)
        log.info("model %s registered as %s version %s", info.model_uri, mv.name, mv.version)
    return info.model_uri


def _check_variable_shapes(model_uri: str, net: torch.nn.Module, x: np.ndarray) -> None:
    import mlflow
    import torch

    n, c, h, w = x.shape
    probe = torch.from_numpy(
        np.random.default_rng(0).standard_normal((n + 1, c, 2 * h, 2 * w)).astype(np.float32)
    )
    loaded = mlflow.pytorch.load_model(model_uri)
    try:
        with torch.no_grad():
            got, want = loaded(probe), net(probe)
        ok = got.shape == want.shape and torch.allclose(got, want, rtol=1e-4, atol=1e-5)
    except Exception as exc:  # the exported graph's shape guards raise various types
        raise RuntimeError(
            f"logged model {model_uri} rejects a {tuple(probe.shape)} input: shape-dependent "
            f"Python in forward() froze the sizes of the example {x.shape} ({exc})"
        ) from exc
    if not ok:
        raise RuntimeError(f"logged model {model_uri} differs from the network on {probe.shape}")


def log_evaluation(
    *,
    run_id: str,
    tracking: TrackingConfig | Mapping[str, Any],
    metrics: Mapping[str, Any],
    artifacts: Iterable[str | Path] = (),
    registered_model: str | None = None,
    model_uri: str | None = None,
    artifact_path: str = "evaluation",
) -> dict[str, float]:
    """Add evaluation results to the training run ``run_id``: finite metrics, artifact files
    under ``artifact_path``, and the :data:`HEADLINE_METRICS` as tags on the registered model
    version made from ``model_uri`` (so the registry shows test scores). Returns the metrics
    logged.
    """
    import mlflow

    cfg = tracking if isinstance(tracking, TrackingConfig) else TrackingConfig.from_dict(tracking)
    setup_tracking(cfg)
    client = mlflow.MlflowClient()
    _existing_run(client, run_id)
    logged = log_metrics(metrics, run_id=run_id)
    for path in artifacts:
        client.log_artifact(run_id, str(path), artifact_path)
    if registered_model and model_uri:
        versions = client.search_model_versions(f"name = '{registered_model}'")
        match = [mv for mv in versions if mv.source == model_uri]
        if not match:
            log.warning(
                "no version of %s was made from %s; not tagged", registered_model, model_uri
            )
        for mv in match:
            for key, value in logged.items():
                if key.rsplit("/", 1)[-1] in HEADLINE_METRICS:
                    client.set_model_version_tag(mv.name, mv.version, key, f"{value:.4g}")
    return logged
