"""The CUDA path of training and prediction (run with ``pytest -m gpu`` on a GPU machine)."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from ltemfactory.training.module import SkyrmionSegmenter
from ltemfactory.training.normalisation import NORMALISATION
from ltemfactory.training.predictor import Predictor
from ltemfactory.training.run import resolve_precision
from ltemfactory.training.unet import UNet, UNetConfig

from .synthetic import BatchList, batch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_mixed_precision_training_on_cuda_lowers_the_loss():
    pl.seed_everything(0, verbose=False)
    precision = resolve_precision("auto", "gpu")
    assert precision in ("bf16-mixed", "16-mixed")
    train = BatchList([batch(8, 32, 4.0, seed=100 + i) for i in range(40)])
    val = BatchList([batch(4, 64, 4.0, seed=10_000)])
    module = SkyrmionSegmenter(UNet(UNetConfig(depth=3, width=8)), learning_rate=1e-2)
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="gpu",
        devices=1,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
    )
    before = trainer.validate(module, DataLoader(val, batch_size=None), verbose=False)[0]
    trainer.fit(module, DataLoader(train, batch_size=None))
    after = trainer.validate(module, DataLoader(val, batch_size=None), verbose=False)[0]
    assert trainer.strategy.root_device.type == "cuda"
    assert after["val/loss"] < 0.6 * before["val/loss"]
    assert 0 <= after["val/f1"] <= 1


def test_predictor_gives_the_same_maps_on_cuda_and_cpu():
    torch.manual_seed(0)
    p = Predictor(
        UNet(UNetConfig(depth=3, width=8)), formulation="instance", normalisation=NORMALISATION
    )
    x = p.normalise(np.random.default_rng(0).gamma(30, 1 / 30, (1, 1, 200, 136)))
    cpu = p.maps(x)
    gpu = p.to("cuda").maps(x)
    for key in cpu:
        np.testing.assert_allclose(gpu[key], cpu[key], atol=2e-3)
