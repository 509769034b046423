"""``ltemfactory train`` with ``strategy: ddp`` on 2 CPU processes (gloo): one MLflow run, one
exported model, and validation metrics equal to a single-process validation of the same weights
(gathered over ranks, not doubled by the padding of the DistributedSampler)."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from mlflow import MlflowClient

from ltemfactory.training.augment import AugmentConfig
from ltemfactory.training.data import SkyrmionDataModule
from ltemfactory.training.module import load_checkpoint

from .trainstore import SPLIT, run_train, val_labels, write_config, write_train_store

N_VAL = SPLIT.count(1)


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")  # Lightning
@pytest.mark.parametrize("strategy", ["ddp", pytest.param("ddp_spawn", marks=pytest.mark.slow)])
def test_ddp_on_two_cpu_processes(tmp_path, strategy):
    store = write_train_store(tmp_path / "dataset.zarr")
    db = tmp_path / "mlflow.db"
    config = write_config(
        tmp_path / "config.yaml",
        {"devices": 2, "strategy": strategy, "max_epochs": 2},
        tracking_uri=f"sqlite:///{db}",
        artifact_location=str(tmp_path / "mlartifacts"),
    )
    start = time.monotonic()
    proc = run_train(tmp_path, config, store)
    print(f"ltemfactory train (2 ranks, {strategy}): {time.monotonic() - start:.1f} s")
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stdout
    assert "distributed_backend=gloo" in proc.stdout
    assert proc.stdout.count("registered as ltemfactory-skyrmion version") == 1  # rank 0 only

    summary = json.loads((tmp_path / "model" / "train_summary.json").read_text())
    assert summary["devices"] == 2
    # 8 samples per epoch over 2 ranks x batch 2: 2 steps per epoch
    assert (summary["epochs"], summary["global_step"]) == (2, 4)
    client = MlflowClient(f"sqlite:///{db}")
    f1 = client.get_metric_history(summary["run_id"], "val/f1")
    assert summary["best_val_f1"] == max(m.value for m in f1)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (1, 4)  # the end of the last epoch
    assert (tmp_path / "model" / "model.pt").is_file()
    assert (tmp_path / "model" / "best.ckpt").is_file()

    exp = client.get_experiment_by_name("ltemfactory")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_id == summary["run_id"] and run.info.status == "FINISHED"
    (version,) = client.search_model_versions("name = 'ltemfactory-skyrmion'")
    assert version.run_id == run.info.run_id and version.source == summary["model_uri"]
    assert len(client.search_logged_models([exp.experiment_id])) == 1

    metrics = run.data.metrics
    for key in metrics:
        history = client.get_metric_history(run.info.run_id, key)
        assert all(math.isfinite(m.value) for m in history), key
    assert {"train/loss", "val/loss", "val/f1", "val/ap_50", "lr-AdamW"} <= set(metrics)
    # one validation per epoch, each scoring every val image once (not the padded 6)
    n_images = client.get_metric_history(run.info.run_id, "val/n_images")
    assert [m.value for m in n_images] == [N_VAL, N_VAL]
    true = val_labels(store)
    assert metrics["val/n_true"] == sum(len(np.unique(lab[lab > 0])) for lab in true)

    # The same weights validated in this (single) process give the same numbers.
    module = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    dm = SkyrmionDataModule(
        store, augment=AugmentConfig(crop_px=16), batch_size=2, samples_per_epoch=8, seed=0
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    (single,) = trainer.validate(module, datamodule=dm, verbose=False)
    assert set(single) <= set(metrics)
    for key, value in single.items():
        assert metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    for key in ("val/n_images", "val/n_true", "val/n_pred"):
        assert metrics[key] == single[key], key
