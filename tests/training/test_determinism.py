"""Same seed, same CPU training: ``ltemfactory train`` run twice (separate processes, each with
its own random hash seed) logs identical metric histories to MLflow and exports identical
weights, with the data loaded in the main process and with one DataLoader worker."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from ltemfactory.training.predictor import Predictor

from .trainstore import cli_env, run_train, write_config, write_train_store


def _histories(workdir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every metric of the (only) run as [(step, value), ...], in logging order."""
    client = MlflowClient(f"sqlite:///{workdir / 'results' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ltemfactory")
    (run,) = client.search_runs([exp.experiment_id])
    return {
        key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
        for key in sorted(run.data.metrics)
    }


def _weights(workdir: Path) -> dict[str, torch.Tensor]:
    return Predictor.load(workdir / "model" / "model.pt").network.state_dict()


@pytest.mark.parametrize("num_workers", [0, 1])
def test_same_seed_same_metrics_and_weights(tmp_path, num_workers):
    store = write_train_store(tmp_path / "dataset.zarr")
    workdirs = [tmp_path / "a", tmp_path / "b"]
    for w in workdirs:
        w.mkdir()
        # relative tracking paths: each run gets its own store under its working directory
        write_config(w / "config.yaml", {"num_workers": num_workers, "max_epochs": 2})
    start = time.monotonic()
    env = cli_env()
    env.pop("PYTHONHASHSEED")  # a different hash seed per process must not matter
    with ThreadPoolExecutor(2) as pool:  # one core each
        procs = list(pool.map(lambda w: run_train(w, w / "config.yaml", store, env=env), workdirs))
    print(f"2 concurrent runs, num_workers={num_workers}: {time.monotonic() - start:.1f} s")
    for proc in procs:
        assert proc.returncode == 0, proc.stdout[-5000:]

    a, b = (_histories(w) for w in workdirs)
    assert {"train/loss", "val/loss", "val/f1", "val/n_pred", "lr-AdamW"} <= set(a)
    assert len(a["train/loss"]) == 8  # 2 epochs x 4 steps, each step logged
    assert len(a["val/loss"]) == 2
    assert a == b  # same keys, steps and values, bit for bit

    wa, wb = (_weights(w) for w in workdirs)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    assert any(not torch.equal(v, torch.zeros_like(v)) for v in wa.values())
