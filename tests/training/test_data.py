"""Streaming the dataset store: shapes, target consistency, determinism, rank/worker partition."""

import types

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import zarr
from skimage.measure import label as cc_label
from torch.utils.data import DataLoader

from ltemfactory.errors import InputError
from ltemfactory.instances import encode_targets
from ltemfactory.labels import KIND_CODES
from ltemfactory.stores import quiet_consolidated
from ltemfactory.training.augment import AugmentConfig
from ltemfactory.training.data import (
    SkyrmionDataModule,
    TrainShardDataset,
    split_dataset,
    split_runs,
)
from ltemfactory.training.normalisation import normalise_image

SIZE = 40
SHARD = 4
#        batch 0 (shards [0,4) [4,8))  batch 1 (shards [8,12) [12,14))
SPLIT = [0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 1, 1, 0, 0]
BATCH = [0] * 8 + [1] * 6
PIXEL = [2.0] * 8 + [4.0] * 6
TRAIN = [i for i, s in enumerate(SPLIT) if s == 0]
RUNS = [(0, 2), (3, 4), (4, 6), (7, 8), (8, 10), (12, 14)]
CROP = AugmentConfig(crop_px=24)


def _labels(rng):
    r, c = np.indices((SIZE, SIZE))
    lab = np.zeros((SIZE, SIZE), np.int32)
    radii = []
    for k, (y, x) in enumerate(rng.uniform(6, SIZE - 6, size=(5, 2)), start=1):
        radius = rng.uniform(3.0, 5.0)
        mine = ((r - y) ** 2 + (c - x) ** 2 <= radius**2) & (lab == 0)
        lab[mine] = k
        radii.append(radius)
    return lab, radii


def write_store(path, split=SPLIT, drop=(), kinds=None):
    """Tiny store with the loader's arrays, dtypes, chunks (1 image) and shards (4 images).

    ``kinds``: {instance id: kind} for ids 1..5 of every image (default all skyrmions); the
    table gives instances of kind "other" a radius of 1000 nm.
    """
    rng = np.random.default_rng(0)
    n = len(split)
    kinds = kinds or {}
    labels = np.zeros((n, SIZE, SIZE), np.int32)
    inst = {"image": [], "equivalent_radius_nm": [], "touches_border": [], "id": [], "kind": []}
    for i in range(n):
        labels[i], radii = _labels(rng)
        for k in range(1, 6):  # the table need not match the pixels here
            kind = kinds.get(k, "skyrmion")
            inst["image"].append(i)
            inst["id"].append(k)
            inst["kind"].append(KIND_CODES[kind])
            # analytic diameters: image i has instances of 2·(i+1) px (pixel size folded in)
            inst["equivalent_radius_nm"].append(1000.0 if kind == "other" else (i + 1) * PIXEL[i])
            inst["touches_border"].append(k == 1)  # left out of the median
    images = (1.0 + 0.6 * (labels > 0) + 0.2 * rng.random(labels.shape)).astype(np.float32)
    g = zarr.open_group(str(path), mode="w")

    def put(name, data, chunks=None, shards=None):
        if name in drop:
            return
        a = g.create_array(
            name, shape=data.shape, dtype=data.dtype, chunks=chunks or data.shape, shards=shards
        )
        a[...] = data

    put("images", images, (1, SIZE, SIZE), (SHARD, SIZE, SIZE))
    put("labels", labels, (1, SIZE, SIZE), (SHARD, SIZE, SIZE))
    put("split", np.asarray(split, np.uint8))
    put("image_batch", np.asarray(BATCH, np.int64))
    put("pixel_size_nm", np.asarray(PIXEL, np.float64))
    put("instances/image", np.asarray(inst["image"], np.int64))
    put("instances/equivalent_radius_nm", np.asarray(inst["equivalent_radius_nm"], np.float64))
    put("instances/touches_border", np.asarray(inst["touches_border"], bool))
    put("instances/instance_id", np.asarray(inst["id"], np.int32))
    put("instances/kind_code", np.asarray(inst["kind"], np.int8))
    if "instances/kind_code" not in drop:
        g["instances/kind_code"].attrs["codes"] = dict(KIND_CODES)
    with quiet_consolidated():
        zarr.consolidate_metadata(str(path))
    return path, images, labels


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("data") / "dataset.zarr")


def module(path, **kw):
    args = {"augment": CROP, "batch_size": 4, "samples_per_epoch": 32, "seed": 7} | kw
    dm = SkyrmionDataModule(path, **args)
    dm.setup("fit")
    return dm


def batches(loader):
    return [{k: v.clone() for k, v in b.items()} for b in loader]


def same(a, b):
    return len(a) == len(b) and all(
        torch.equal(x[k], y[k]) for x, y in zip(a, b, strict=True) for k in x
    )


# ------------------------------------------------------------------------------ layout
def test_runs_stay_within_split_batch_and_shard():
    assert split_runs(np.array(SPLIT), np.array(BATCH), SHARD, 0) == RUNS
    assert split_runs(np.array(SPLIT), np.array(BATCH), SHARD, 1) == [(2, 3), (10, 12)]
    assert split_runs(np.array(SPLIT), np.array(BATCH), SHARD, 2) == [(6, 7)]


def test_train_items_shapes_dtypes_and_targets_match_labels(store):
    path, _, _ = store
    dm = module(path)
    loader = dm.train_dataloader()
    got = batches(loader)
    assert len(got) == len(loader) == 8  # 32 samples / batch 4
    b = got[0]
    assert set(b) == {"image", "foreground", "distance", "boundary", "labels", "index"}
    for key in ("image", "foreground", "distance", "boundary"):
        assert b[key].shape == (4, 1, 24, 24) and b[key].dtype == torch.float32
    assert b["labels"].shape == (4, 24, 24) and b["labels"].dtype == torch.int32
    for b in got:
        assert set(b["index"].tolist()) <= set(TRAIN)
        for i in range(4):
            lab = b["labels"][i].numpy()
            ids = np.unique(lab[lab > 0])
            assert cc_label(lab, background=0, connectivity=1).max() == ids.size
            targets = encode_targets(lab)
            for key, value in targets.items():
                np.testing.assert_array_equal(b[key][i, 0].numpy(), value)
            # the image is robust-normalised: median 0
            assert abs(float(b["image"][i].median())) < 0.1


def test_two_workers_same_seed_same_batches_epochs_differ(store):
    path, _, _ = store
    dm = module(path, num_workers=2)
    first = batches(dm.train_dataloader())
    again = batches(dm.train_dataloader())
    other = batches(module(path, num_workers=2).train_dataloader())
    assert same(first, again) and same(first, other)
    dm.set_epoch(1)
    assert not same(first, batches(dm.train_dataloader()))
    # the trainer's epoch reaches the workers the same way
    dm.trainer = types.SimpleNamespace(current_epoch=1)
    ref = module(path, num_workers=2)
    ref.set_epoch(1)
    assert same(batches(dm.train_dataloader()), batches(ref.train_dataloader()))
    assert not same(first, batches(module(path, num_workers=2, seed=8).train_dataloader()))


@pytest.mark.parametrize(("world", "workers"), [(1, 2), (2, 2), (3, 2), (4, 2), (7, 2)])
def test_ranks_and_workers_partition_the_runs_and_yield_equal_counts(store, world, workers):
    path, _, _ = store
    slots = world * workers
    ds = TrainShardDataset(
        path, augment=CROP, samples_per_epoch=slots, seed=1, rank=0, world_size=world
    )
    for epoch in (0, 1):
        dealt = [ds.slot_runs(epoch, g, slots) for g in range(slots)]
        images = [{i for a, b in runs for i in range(a, b)} for runs in dealt]
        if slots <= len(TRAIN):  # disjoint cover of the train images
            assert sum(map(len, images)) == len(TRAIN)
            assert set().union(*images) == set(TRAIN)
        else:  # more slots than images: every image used, slots share
            assert set().union(*images) == set(TRAIN)
    assert [ds.slot_runs(0, g, slots) for g in range(slots)] != [
        ds.slot_runs(1, g, slots) for g in range(slots)
    ]  # the deal changes per epoch
    # real loaders: every rank yields the same number of batches; ranks see disjoint images
    counts, seen = [], []
    for rank in range(world):
        ds = TrainShardDataset(
            path,
            augment=CROP,
            samples_per_epoch=4 * slots,
            seed=1,
            batch_size=2,
            num_workers=workers,
            rank=rank,
            world_size=world,
        )
        got = list(DataLoader(ds, batch_size=2, num_workers=workers))
        counts.append(len(got))
        assert len(got) == len(ds) // 2
        seen.append({int(i) for b in got for i in b["index"]})
    assert counts == [4 * workers // 2] * world
    if slots <= len(TRAIN):
        assert sum(map(len, seen)) == len(set().union(*seen))


def test_samples_per_epoch_rounds_to_full_batches(store):
    path, _, _ = store
    dm = module(path, samples_per_epoch=30, batch_size=4, num_workers=0)
    got = batches(dm.train_dataloader())
    assert [len(b["index"]) for b in got] == [4] * 7  # 28 samples: full batches only
    # a slot cycles over its runs when it has fewer images than samples
    assert len({int(i) for b in got for i in b["index"]}) == len(TRAIN)


# ------------------------------------------------------------------------------ val / test
def test_val_loader_returns_val_images_in_order_untouched(store):
    path, images, labels = store
    dm = module(path, val_batch_size=2)
    got = batches(dm.val_dataloader())
    assert [i for b in got for i in b["index"].tolist()] == [2, 10, 11]
    flat = {k: torch.cat([b[k] for b in got]) for k in got[0]}
    np.testing.assert_array_equal(flat["image"][:, 0].numpy(), normalise_image(images[[2, 10, 11]]))
    np.testing.assert_array_equal(flat["labels"].numpy(), labels[[2, 10, 11]])
    np.testing.assert_array_equal(flat["pixel_size_nm"].numpy(), [2.0, 4.0, 4.0])
    targets = encode_targets(labels[[2, 10, 11]])
    for key, value in targets.items():
        np.testing.assert_array_equal(flat[key][:, 0].numpy(), value)
    test = batches(dm.test_dataloader())
    assert [i for b in test for i in b["index"].tolist()] == [6]
    assert len(split_dataset(path, "train")) == len(TRAIN)
    # an older model's spec (z-score only) is reproduced, so it is scored on its own input
    old = split_dataset(path, "val", normalisation={"method": "robust_zscore", "clip": 5.0})
    np.testing.assert_array_equal(
        old[0]["image"][0].numpy(), normalise_image(images[2], outlier_sigma=None, detrend=None)
    )


def test_summaries(store):
    path, _, _ = store
    dm = module(path)
    assert dm.pixel_size_nm == {"min": 2.0, "median": 2.0, "max": 4.0}
    assert dm.image_shape == (SIZE, SIZE)
    # train images 0,1,3,4,5,7,8,9,12,13 each have 4 inner instances of diameter 2·(i+1) px
    assert dm.train_diameter_px == pytest.approx(np.median([2 * (i + 1) for i in TRAIN]))


def test_only_instances_of_the_target_kinds_are_labels(tmp_path):
    # instance 4 of every image is a bubble, instance 5 a stripe-like domain ("other")
    path, _, labels = write_store(tmp_path / "k.zarr", kinds={4: "bubble", 5: "other"})
    val = [2, 10, 11]

    def without(ids, lab):
        return np.where(np.isin(lab, ids), 0, lab)

    for kinds, dropped in ((None, []), (("skyrmion", "bubble"), [5]), (("skyrmion",), [4, 5])):
        ds = split_dataset(path, "val", kinds)
        for n, i in enumerate(val):
            want = without(dropped, labels[i])
            np.testing.assert_array_equal(ds[n]["labels"].numpy(), want)
            np.testing.assert_array_equal(ds[n]["foreground"][0].numpy(), want > 0)
    # the default is skyrmions and bubbles, for training crops too (whole-image crops)
    np.testing.assert_array_equal(split_dataset(path, "val")[0]["labels"], without([5], labels[2]))
    dm = module(path, augment=AugmentConfig.none(SIZE), samples_per_epoch=len(TRAIN))
    for item in dm.train_dataset:
        want = without([5], labels[item["index"]]) > 0
        np.testing.assert_array_equal(item["labels"].numpy() > 0, want)
    # the 1000 nm "other" instances stay out of the diameter median (18 px if they counted)
    assert dm.train_diameter_px == pytest.approx(np.median([2 * (i + 1) for i in TRAIN]))
    with pytest.raises(InputError, match=r"target_kinds: unknown kind\(s\) \['vortex'\]"):
        split_dataset(path, "val", ("vortex",))
    old = write_store(tmp_path / "old.zarr", drop=("instances/kind_code",))[0]
    with pytest.raises(InputError, match="instances/kind_code"):
        split_dataset(old, "val")
    assert len(split_dataset(old, "val", None)) == len(val)


# ------------------------------------------------------------------------------ errors
def test_setup_errors(store, tmp_path):
    path, _, _ = store
    with pytest.raises(InputError, match="no such dataset store"):
        module(tmp_path / "missing.zarr")
    with pytest.raises(InputError, match="image_batch"):
        module(write_store(tmp_path / "a.zarr", drop=("image_batch",))[0])
    with pytest.raises(InputError, match="too small for crop_px=48"):
        module(path, augment=AugmentConfig.none(48))
    no_val = [0 if s == 1 else s for s in SPLIT]
    with pytest.raises(InputError, match="split 'val'"):
        module(write_store(tmp_path / "b.zarr", split=no_val)[0])
    no_test = [0 if s == 2 else s for s in SPLIT]
    dm = module(write_store(tmp_path / "c.zarr", split=no_test)[0])  # fine until test is asked
    with pytest.raises(InputError, match="split 'test'"):
        dm.test_dataloader()
    only_val = [1] * len(SPLIT)
    with pytest.raises(InputError, match="split 'train'"):
        module(write_store(tmp_path / "d.zarr", split=only_val)[0])
    with pytest.raises(InputError, match="batch_size"):
        SkyrmionDataModule(path, augment=CROP, batch_size=0, samples_per_epoch=4, seed=0)


# ------------------------------------------------------------------------------ with Lightning
class _Recorder(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen = {}

    def training_step(self, batch, batch_idx):
        self.seen.setdefault(self.current_epoch, []).append(batch["index"].clone())
        return (self.w * batch["image"].mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")  # Lightning
def test_lightning_trainer_passes_the_epoch(store):
    path, _, _ = store
    dm = module(path, samples_per_epoch=8)
    rec = _Recorder()
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(rec, datamodule=dm)
    for epoch in (0, 1):
        ref = module(path, samples_per_epoch=8)
        ref.set_epoch(epoch)
        expected = [b["index"] for b in ref.train_dataloader()]
        assert torch.equal(torch.cat(rec.seen[epoch]), torch.cat(expected))
    assert not torch.equal(torch.cat(rec.seen[0]), torch.cat(rec.seen[1]))
