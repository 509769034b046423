"""A small assembled-like dataset store and config for running ``ltemfactory train`` in tests,
and small helpers for the MLflow server tests (free port, REST calls).

The store has the arrays the training stage reads (images, labels, split, image_batch,
pixel_size_nm, the instance table with every instance a skyrmion) with the layout of an
assembled store (one image per chunk, shards of :data:`SHARD` images) and its content
fingerprint as attribute. Images are the ring
images of :mod:`tests.training.synthetic` (touching disks), so a few optimiser steps learn.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import yaml
import zarr
from skimage.measure import regionprops

from ltemfactory.dataset import fingerprint
from ltemfactory.labels import KIND_CODES
from ltemfactory.stores import quiet_consolidated

from .synthetic import ring_image, touching_disks

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
SIZE = 32
SHARD = 4
#: 6 train, 5 val (odd: a 2-rank DistributedSampler pads it with a repeated image), 1 test
SPLIT = [0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 2]
BATCH = [0] * 6 + [1] * 6
PIXEL_NM = 3.0

#: Training section shared by the stage tests: a few steps on 16 px crops, epoch-bounded.
TRAIN = {
    "network": {"depth": 2, "width": 4, "groups": 2},
    "batch_size": 2,
    "samples_per_epoch": 8,
    "max_epochs": 2,
    "num_workers": 0,
    "log_every_n_steps": 1,
    "accelerator": "cpu",
    "augment": {"crop_px": 16},
}


def write_train_store(path: Path) -> Path:
    """Write the store at ``path`` (returned)."""
    rng = np.random.default_rng(0)
    n = len(SPLIT)
    labels = np.stack([touching_disks(SIZE, 3.0 + 0.2 * (i % 3), rng) for i in range(n)])
    images = np.stack([ring_image(lab, rng) for lab in labels]) + 2.0  # positive intensities
    table: dict[str, list] = {
        k: []
        for k in (
            "image",
            "instance_id",
            "equivalent_radius_nm",
            "centroid_row_px",
            "centroid_col_px",
            "touches_border",
        )
    }
    for i, lab in enumerate(labels):
        for region in regionprops(lab):
            r0, c0, r1, c1 = region.bbox
            table["image"].append(i)
            table["instance_id"].append(region.label)
            table["equivalent_radius_nm"].append(np.sqrt(region.area / np.pi) * PIXEL_NM)
            table["centroid_row_px"].append(region.centroid[0])
            table["centroid_col_px"].append(region.centroid[1])
            table["touches_border"].append(r0 == 0 or c0 == 0 or r1 == SIZE or c1 == SIZE)
    g = zarr.open_group(str(path), mode="w")

    def put(name: str, data: np.ndarray, chunks=None, shards=None) -> None:
        a = g.create_array(
            name, shape=data.shape, dtype=data.dtype, chunks=chunks or data.shape, shards=shards
        )
        a[...] = data

    put("images", images.astype(np.float32), (1, SIZE, SIZE), (SHARD, SIZE, SIZE))
    put("labels", labels.astype(np.int32), (1, SIZE, SIZE), (SHARD, SIZE, SIZE))
    put("split", np.asarray(SPLIT, np.uint8))
    put("image_batch", np.asarray(BATCH, np.int64))
    put("pixel_size_nm", np.full(n, PIXEL_NM))
    put("instances/image", np.asarray(table["image"], np.int64))
    for key in ("equivalent_radius_nm", "centroid_row_px", "centroid_col_px"):
        put(f"instances/{key}", np.asarray(table[key], np.float64))
    put("instances/touches_border", np.asarray(table["touches_border"], bool))
    put("instances/instance_id", np.asarray(table["instance_id"], np.int32))
    put("instances/kind_code", np.full(len(table["image"]), KIND_CODES["skyrmion"], np.int8))
    g["instances/kind_code"].attrs["codes"] = dict(KIND_CODES)
    g.attrs["fingerprint"] = fingerprint(path)
    with quiet_consolidated():
        zarr.consolidate_metadata(str(path))
    return path


def val_labels(store: Path) -> np.ndarray:
    """Labels of the val split, in store order."""
    g = zarr.open_group(str(store), mode="r")
    return np.asarray(g["labels"][:])[np.asarray(g["split"][:]) == 1]


def write_config(path: Path, train: dict[str, Any] | None = None, **tracking: str) -> Path:
    """tests/configs/tiny.yaml with :data:`TRAIN` updated by ``train`` and ``tracking``."""
    cfg = yaml.safe_load(TINY.read_text())
    cfg["train"] = copy.deepcopy(TRAIN) | dict(train or {})
    if tracking:
        cfg["train"]["tracking"] = dict(tracking)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for an ``ltemfactory`` subprocess: the venv's bin first on PATH, no
    MLflow telemetry, no inherited MLflow run/experiment selection."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")
        and not k.startswith("MLFLOW_TRACKING_")
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["PYTHONHASHSEED"] = "0"
    env.update(extra)
    return env


def run_train(
    workdir: Path,
    config: Path,
    store: Path,
    *,
    out: str = "model",
    checkpoints: str = "checkpoints",
    threads: int = 1,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """``ltemfactory train`` in ``workdir``; stdout+stderr in the result's ``stdout``."""
    cmd = [
        str(Path(sys.executable).parent / "ltemfactory"),
        "train",
        "--config",
        str(config),
        "--dataset",
        str(store),
        "--out",
        out,
        "--checkpoints",
        checkpoints,
        "--threads",
        str(threads),
    ]
    return subprocess.run(
        cmd,
        cwd=workdir,
        env=env or cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rest(
    port: int,
    path: str,
    body: dict | None = None,
    *,
    auth: tuple[str, str] | None = None,
    method: str | None = None,
) -> tuple[int, dict]:
    """(HTTP status, JSON body) of an MLflow REST call to 127.0.0.1:``port``; HTTP errors are
    returned, not raised."""
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, headers=headers, method=method
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw, status = resp.read(), resp.status
    except urllib.error.HTTPError as err:
        raw, status = err.read(), err.code
    try:
        return status, json.loads(raw or b"{}")
    except json.JSONDecodeError:
        return status, {"text": raw.decode(errors="replace")}
