"""The network, the Lightning module and the predictor: shapes, persistence, a few training
steps that must lower the loss, and a test-sized ablation instance vs binary formulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from ltemfactory.errors import InputError
from ltemfactory.metrics import match_dataset
from ltemfactory.training.module import SkyrmionSegmenter, load_checkpoint, metric_logs
from ltemfactory.training.normalisation import NORMALISATION
from ltemfactory.training.predictor import FORMULATIONS, Predictor, decode_maps
from ltemfactory.training.unet import UNet, UNetConfig, pad_to_multiple

from .synthetic import BatchList, batch, touching_disks


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_unet_keeps_the_image_size(depth):
    net = UNet(UNetConfig(depth=depth, width=4, groups=2))
    x = torch.randn(2, 1, 8 * 3, 8 * 5)
    assert net(x).shape == (2, 3, 24, 40)


def test_unet_rejects_sizes_that_do_not_pool_evenly():
    net = UNet(UNetConfig(depth=3, width=4))
    with pytest.raises(InputError, match="multiples of 4"):
        net(torch.randn(1, 1, 30, 32))


def test_unet_config_rejects_bad_values():
    with pytest.raises(InputError, match="network.width"):
        UNetConfig(width=0)
    with pytest.raises(InputError, match="unknown key"):
        UNetConfig.from_dict({"depht": 3})


def test_pad_to_multiple_reflects_and_crops_back():
    x = torch.arange(5 * 7, dtype=torch.float32).reshape(1, 1, 5, 7)
    y, (rows, cols) = pad_to_multiple(x, 4)
    assert y.shape[-2:] == (8, 8) and (rows, cols) == (5, 7)
    assert torch.equal(y[..., :rows, :cols], x)
    assert torch.equal(y[..., 5, :7], x[..., 3, :])  # reflection about the last row


def test_metric_logs_names_thresholds_as_percentages():
    true = touching_disks(32, 4, np.random.default_rng(0))
    logs = metric_logs(match_dataset([true], [true], pixel_size_nm=2.0), "val")
    assert logs["val/f1_50"] == logs["val/f1"] == 1.0
    assert logs["val/ap_70"] == 1.0 and logs["val/radius_error_nm_30"] == 0.0
    assert all("@" not in k for k in logs)


def test_predictor_round_trip_gives_identical_maps(tmp_path):
    torch.manual_seed(0)
    net = UNet(UNetConfig(depth=2, width=4, groups=2))
    p = Predictor(
        net,
        formulation="instance",
        normalisation=NORMALISATION,
        train_diameter_px=9.5,
        metadata={"dataset_fingerprint": "abc"},
        symmetrise=True,
    )
    path = p.save(tmp_path / "model.pt")
    q = Predictor.load(path)
    assert q.symmetrise
    image = np.random.default_rng(1).gamma(20, 1 / 20, (37, 50)).astype(np.float32)
    x = p.normalise(image)[None, None]
    a, b = p.maps(x), q.maps(x)
    assert set(a) == set(FORMULATIONS["instance"]) and a["distance"].shape == (1, 37, 50)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert q.train_diameter_px == 9.5 and q.metadata["dataset_fingerprint"] == "abc"
    assert q.segment(image).shape == image.shape


def test_a_model_saved_before_symmetrisation_existed_loads_without_it(tmp_path):
    p = Predictor(
        UNet(UNetConfig(depth=2, width=4, groups=2)),
        formulation="instance",
        normalisation=NORMALISATION,
        symmetrise=True,
    )
    state = p.state()
    del state["symmetrise"]
    torch.save(state, tmp_path / "old.pt")
    assert not Predictor.load(tmp_path / "old.pt").symmetrise


def _flipped(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    return np.ascontiguousarray(np.flip(a, axes)) if axes else a


def test_symmetrised_maps_average_the_four_flips_and_are_flip_equivariant():
    torch.manual_seed(0)
    net = UNet(UNetConfig(depth=3, width=4, groups=2))
    plain = Predictor(net, formulation="instance", normalisation=NORMALISATION)
    sym = Predictor(net, formulation="instance", normalisation=NORMALISATION, symmetrise=True)
    x = np.random.default_rng(3).normal(size=(2, 1, 36, 52)).astype(np.float32)  # 4-multiples
    flips = [(), (-2,), (-1,), (-2, -1)]
    got = sym.maps(x)
    for name in FORMULATIONS["instance"]:
        mean = np.mean([_flipped(plain.maps(_flipped(x, f))[name], f) for f in flips], axis=0)
        np.testing.assert_allclose(got[name], mean, atol=1e-6)
        for f in flips[1:]:  # the maps of a flipped image are the flipped maps
            np.testing.assert_allclose(
                sym.maps(_flipped(x, f))[name], _flipped(got[name], f), atol=1e-6
            )
    # a plain (random) network is not equivariant, so the checks above can fail
    fg = plain.maps(_flipped(x, (-1,)))["foreground"]
    assert not np.allclose(fg, _flipped(plain.maps(x)["foreground"], (-1,)), atol=1e-3)


def test_predictor_load_rejects_other_files(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(InputError, match="model.pt"):
        Predictor.load(bad)
    with pytest.raises(InputError, match="no such model"):
        Predictor.load(tmp_path / "missing.pt")


def test_decoder_size_prior_drops_small_instances_except_at_the_border():
    from ltemfactory.instances import encode_targets

    rr, cc = np.mgrid[:48, :48]
    labels = np.zeros((48, 48), np.int32)
    for k, (r, c, rad) in enumerate([(20, 20, 8), (38, 36, 2.5), (0, 40, 2.5)], start=1):
        labels[(rr - r) ** 2 + (cc - c) ** 2 <= rad**2] = k
    maps = encode_targets(labels)
    assert decode_maps(maps, "instance").max() == 3
    kept = decode_maps(maps, "instance", min_diameter_px=8.0)  # diameters ~16, ~5, ~3 (cut)
    assert kept.max() == 2 and kept[20, 20] > 0 and kept[38, 36] == 0 and kept[0, 40] > 0
    batch = decode_maps({k: np.stack([v, v]) for k, v in maps.items()}, "instance", None, 8.0)
    assert batch.shape == (2, 48, 48) and np.array_equal(batch[1], kept)
    p = Predictor(
        UNet(UNetConfig(depth=2, width=4, groups=2)),
        formulation="instance",
        normalisation=NORMALISATION,
        train_diameter_px=16.0,
    )
    assert p.min_diameter_px == 8.0
    p.train_diameter_px = None
    assert p.min_diameter_px == 0.0


def test_binary_decoder_merges_touching_disks_that_the_instance_decoder_separates():
    """Decoding exact targets: the ablation's mechanism without any training."""
    from ltemfactory.instances import encode_targets

    true = touching_disks(64, 5, np.random.default_rng(2))
    maps = encode_targets(true)
    inst = decode_maps(maps, "instance")
    binary = decode_maps(maps, "binary")
    f1 = {
        name: match_dataset([true], [pred], 0.5, pixel_size_nm=1.0)["f1@0.5"]
        for name, pred in (("instance", inst), ("binary", binary))
    }
    assert f1["instance"] > 0.95
    assert f1["binary"] < 0.2


def _train(formulation: str, steps: int, seed: int = 0):
    pl.seed_everything(seed, verbose=False)
    train = BatchList([batch(8, 32, 4.0, seed=100 + i) for i in range(steps)])
    val = BatchList([batch(4, 64, 4.0, seed=10_000)])
    net = UNet(UNetConfig(depth=3, width=8, out_channels=len(FORMULATIONS[formulation])))
    module = SkyrmionSegmenter(net, formulation=formulation, learning_rate=1e-2)
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    before = trainer.validate(module, DataLoader(val, batch_size=None), verbose=False)[0]
    trainer.fit(module, DataLoader(train, batch_size=None), DataLoader(val, batch_size=None))
    after = trainer.validate(module, DataLoader(val, batch_size=None), verbose=False)[0]
    return module, trainer, before, after


def test_a_few_training_steps_lower_the_loss_and_give_finite_metrics():
    module, trainer, before, after = _train("instance", steps=40)
    assert trainer.global_step == 40
    assert after["val/loss"] < 0.6 * before["val/loss"]
    for key in ("val/f1", "val/ap_50", "val/pq_50", "val/precision_30", "val/recall_70"):
        assert math.isfinite(after[key]) and 0 <= after[key] <= 1, key
    assert "val/baseline_f1_50" in after


def test_checkpoint_rebuilds_the_module(tmp_path):
    module, trainer, _, _ = _train("instance", steps=2)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    again = load_checkpoint(path)
    x = torch.randn(1, 1, 32, 32)
    module.eval()
    torch.testing.assert_close(again(x), module(x))
    assert again.hparams.formulation == "instance"


def test_ablation_instance_formulation_beats_binary_on_touching_disks():
    """Test-sized version of the ablation in the README: same network, same data and budget;
    the binary mask + connected components merges touching disks."""
    scores = {f: _train(f, steps=60)[3] for f in ("instance", "binary")}
    assert scores["instance"]["val/f1"] > 0.8
    assert scores["instance"]["val/f1"] > scores["binary"]["val/f1"] + 0.5
