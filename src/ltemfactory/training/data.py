"""Lazy, deterministic data loading from the dataset store for training (PyTorch Lightning).

Images are (row, col); the store holds (image, row, col) arrays sharded along ``image`` by input
batch (:mod:`ltemfactory.dataset`). Nothing loads the whole store.

Training (:class:`TrainShardDataset`, an ``IterableDataset``) reads whole *runs*: contiguous
images of the train split within one input batch and one storage shard, one read each, since
random access per image is 3-4x slower. Per epoch the runs are permuted (same permutation on every
rank) and dealt round-robin to the slots (rank, worker), slot ``g = rank·num_workers + worker``
of ``G = world_size·num_workers``; if there are fewer runs than slots, runs are halved until
each slot has one (when there are fewer train images than slots, slots share images). Each slot
shuffles the images of its runs, cycling over its runs until it has yielded exactly
``samples_per_epoch // G`` samples (rounded down to a multiple of the batch size), so every rank
yields the same number of full batches (DDP would hang otherwise). Each slot draws from its own
``numpy`` generator seeded by (seed, epoch, rank, worker): the same seed gives the same batches
whatever the timing.

How the epoch reaches the workers: the train loader is a :class:`EpochDataLoader`, whose
``__iter__`` (in the main process, before any worker starts) calls ``dataset.set_epoch(epoch)``
with ``trainer.current_epoch`` (or the epoch given to :meth:`SkyrmionDataModule.set_epoch` when no
trainer is attached) and resolves the distributed rank. Workers are not persistent, so each epoch
forks fresh workers that receive a copy of the dataset with that epoch set.

Validation/test (:class:`EvalDataset`, map-style): full images in store order, no augmentation,
one image read per item.

Targets. The store labels every reversed domain (``instances/kind``: skyrmion, bubble or other,
e.g. a stripe or labyrinth domain; :mod:`ltemfactory.labels`). Training and scoring keep the
instances of ``target_kinds`` (default :data:`TARGET_KINDS_DEFAULT`: skyrmions and bubbles) and
turn the others into background, so a stripe domain is something the model must learn *not* to
report, and a stripe reported as a skyrmion counts as a false positive.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import zarr
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from ltemfactory.dataset.split import SPLIT_CODES
from ltemfactory.errors import InputError
from ltemfactory.instances import TARGET_KEYS, encode_targets
from ltemfactory.stores import quiet_consolidated
from ltemfactory.training.augment import AugmentConfig, augment_sample, check_fits
from ltemfactory.training.normalisation import NORMALISATION, normalise_from_spec

log = logging.getLogger(__name__)

__all__ = [
    "REQUIRED",
    "TARGET_KINDS_DEFAULT",
    "EpochDataLoader",
    "EvalDataset",
    "SkyrmionDataModule",
    "TrainShardDataset",
    "distributed_rank",
    "open_dataset_store",
    "split_dataset",
    "split_runs",
    "untargeted_ids",
]

REQUIRED = ("images", "labels", "split", "image_batch", "pixel_size_nm")
"""Arrays the loaders read."""

TARGET_KINDS_DEFAULT = ("skyrmion", "bubble")
"""Instance kinds the segmenter is trained to find and scored on."""

_EPOCH_SALT = 0x45504F43  # "EPOC": the shared permutation of runs
_SLOT_SALT = 0x534C4F54  # "SLOT": each slot's sample stream


def open_dataset_store(store: str | Path) -> zarr.Group:
    """Open the store read-only and check the arrays the loaders need (InputError if not)."""
    path = Path(store)
    if not path.is_dir():
        raise InputError(f"{path}: no such dataset store (run `ltemfactory assemble`)")
    try:
        with quiet_consolidated():
            group = zarr.open_group(str(path), mode="r")
    except Exception as err:  # zarr raises several types for unreadable stores
        raise InputError(f"{path}: not a readable Zarr group ({err})") from err
    missing = [name for name in REQUIRED if name not in group]
    if missing:
        raise InputError(f"{path}: missing array(s) {missing} (expected {list(REQUIRED)})")
    images, labels = group["images"], group["labels"]
    if images.ndim != 3 or labels.shape != images.shape:
        raise InputError(
            f"{path}: images/labels must be (image, row, col) of one shape, got {images.shape} "
            f"and {labels.shape}"
        )
    if not np.issubdtype(images.dtype, np.floating):
        raise InputError(f"{path}/images: expected a float array, got {images.dtype}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"{path}/labels: expected an integer array, got {labels.dtype}")
    for name in ("split", "image_batch", "pixel_size_nm"):
        if group[name].shape != (images.shape[0],):
            raise InputError(
                f"{path}/{name}: expected shape ({images.shape[0]},), got {group[name].shape}"
            )
    return group


def _shard_len(array: zarr.Array) -> int:
    shards = getattr(array, "shards", None)
    return int((shards or array.chunks)[0])


def untargeted_ids(
    group: zarr.Group, target_kinds: tuple[str, ...] | list[str] | None
) -> dict[int, np.ndarray]:
    """Label ids that are not of ``target_kinds``, per store image index (images without any
    are left out). ``None``: every instance is a target (an empty dict).

    Reads ``instances/image``, ``instances/instance_id`` and ``instances/kind_code`` (with its
    ``codes`` attribute, kind name -> code); InputError when the store lacks them or a kind is
    unknown.
    """
    if target_kinds is None:
        return {}
    need = ("instances/image", "instances/instance_id", "instances/kind_code")
    missing = [name for name in need if name not in group]
    if missing:
        raise InputError(
            f"dataset store: missing array(s) {missing}, needed to keep only the instances of "
            f"train.target_kinds {list(target_kinds)}"
        )
    image = np.asarray(group["instances/image"][:], dtype=np.int64)
    ids = np.asarray(group["instances/instance_id"][:], dtype=np.int64)
    other = ~_of_kinds(group, target_kinds)
    return {int(i): ids[other & (image == i)] for i in np.unique(image[other])}


def _of_kinds(group: zarr.Group, target_kinds: tuple[str, ...] | list[str]) -> np.ndarray:
    """Per row of the instance table: is its ``instances/kind_code`` one of ``target_kinds``
    (names decoded by the array's ``codes`` attribute)? InputError for an unknown kind."""
    codes = dict(group["instances/kind_code"].attrs.get("codes", {}))
    unknown = sorted(set(target_kinds) - set(codes))
    if unknown:
        raise InputError(
            f"train.target_kinds: unknown kind(s) {unknown}; the store has {sorted(codes)}"
        )
    kind = np.asarray(group["instances/kind_code"][:])
    return np.isin(kind, [codes[k] for k in target_kinds])


def _targets_only(labels: np.ndarray, drop: np.ndarray | None) -> np.ndarray:
    """``labels`` with the ids in ``drop`` set to background (0)."""
    if drop is None or drop.size == 0:
        return labels
    return np.where(np.isin(labels, drop), 0, labels).astype(labels.dtype, copy=False)


def split_runs(
    split: np.ndarray, image_batch: np.ndarray, shard_len: int, code: int
) -> list[tuple[int, int]]:
    """[start, stop) runs of consecutive images with split ``code``, each within one input batch
    and one storage shard of ``shard_len`` images, in store order."""
    idx = np.flatnonzero(np.asarray(split) == code)
    if idx.size == 0:
        return []
    batch = np.asarray(image_batch)[idx]
    new = np.r_[True, (np.diff(idx) != 1) | (np.diff(batch) != 0) | (idx[1:] % shard_len == 0)]
    starts = idx[new]
    stops = np.r_[idx[np.flatnonzero(new)[1:] - 1], idx[-1]] + 1
    return [(int(a), int(b)) for a, b in zip(starts, stops, strict=True)]


def _halve_until(runs: list[tuple[int, int]], n: int) -> list[tuple[int, int]]:
    """Split the longest runs in halves until there are ``n`` runs or all are single images."""
    runs = list(runs)
    while len(runs) < n:
        k = max(range(len(runs)), key=lambda i: (runs[i][1] - runs[i][0], -i))
        a, b = runs[k]
        if b - a < 2:
            break
        m = (a + b) // 2
        runs[k : k + 1] = [(a, m), (m, b)]
    return runs


def distributed_rank() -> tuple[int, int]:
    """(rank, world_size) of torch.distributed if initialised, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class _StoreReader:
    """Opens the store lazily in each process (zarr handles are not sent to workers)."""

    def __init__(self, store: str | Path) -> None:
        self.store = str(store)
        self._group: zarr.Group | None = None

    @property
    def group(self) -> zarr.Group:
        if self._group is None:
            with quiet_consolidated():
                self._group = zarr.open_group(self.store, mode="r")
        return self._group

    def __getstate__(self) -> dict[str, Any]:
        return {"store": self.store, "_group": None}


def _sample(
    image: np.ndarray, labels: np.ndarray, normalisation: Mapping[str, Any] = NORMALISATION
) -> dict[str, torch.Tensor]:
    """Normalised image (1, row, col), targets (1, row, col) and labels (row, col) int32."""
    targets = encode_targets(labels)
    item = {"image": torch.from_numpy(normalise_from_spec(image, normalisation)[None])}
    for key in TARGET_KEYS:
        item[key] = torch.from_numpy(targets[key][None])
    item["labels"] = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int32))
    return item


class TrainShardDataset(IterableDataset):
    """Endless-source, fixed-length stream of augmented training crops (see module docstring).

    Items: ``image``, ``foreground``, ``distance``, ``boundary`` float32 (1, crop, crop);
    ``labels`` int32 (crop, crop); ``index`` int, the store image index of the source.

    Args:
        store: path of the dataset store.
        augment: augmentation (its ``crop_px`` is the crop size).
        samples_per_epoch: samples of one epoch over all ranks and workers.
        seed: base seed; the stream is a function of (seed, epoch, rank, worker, counts).
        batch_size: samples per slot are rounded down to a multiple of it (full batches).
        num_workers: DataLoader workers, only for ``len()``.
        rank, world_size: override torch.distributed (for tests).
        target_kinds: instance kinds kept as targets (module docstring); ``None``: all.
    """

    def __init__(
        self,
        store: str | Path,
        *,
        augment: AugmentConfig,
        samples_per_epoch: int,
        seed: int,
        batch_size: int = 1,
        num_workers: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        split: str = "train",
        target_kinds: tuple[str, ...] | None = TARGET_KINDS_DEFAULT,
    ) -> None:
        super().__init__()
        group = open_dataset_store(store)
        self._reader = _StoreReader(store)
        self._untargeted = untargeted_ids(group, target_kinds)
        self.augment = augment
        self.samples_per_epoch = int(samples_per_epoch)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.epoch = 0
        if self.seed < 0 or split not in SPLIT_CODES:
            raise InputError(
                f"seed, split: expected seed >= 0 and a split name, got {seed}, {split}"
            )
        if (rank is None) != (world_size is None):
            raise InputError("rank and world_size: give both or neither")
        if world_size is not None and not 0 <= rank < world_size:
            raise InputError(f"rank: expected 0 <= rank < world_size, got {rank}/{world_size}")
        self._override = None if rank is None else (int(rank), int(world_size))
        self._dist: tuple[int, int] | None = None
        self.runs = split_runs(
            group["split"][:],
            group["image_batch"][:],
            _shard_len(group["images"]),
            SPLIT_CODES[split],
        )
        if not self.runs:
            raise InputError(f"{store}: split '{split}' has no images")
        check_fits(group["images"].shape[1:], augment)

    # -- epoch and partition
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's stream; call before iterating (before workers start)."""
        self.epoch = int(epoch)

    def bind_distributed(self) -> None:
        """Fix (rank, world_size) now, in the main process (workers may not see the group)."""
        self._dist = self._override or distributed_rank()

    def rank_world(self) -> tuple[int, int]:
        return self._override or self._dist or distributed_rank()

    def samples_per_slot(self, n_slots: int) -> int:
        """Samples each (rank, worker) yields per epoch (>= one batch)."""
        per = self.samples_per_epoch // (n_slots * self.batch_size) * self.batch_size
        return max(per, self.batch_size)

    def slot_runs(self, epoch: int, slot: int, n_slots: int) -> list[tuple[int, int]]:
        """Runs dealt to ``slot`` of ``n_slots`` in ``epoch``, in the epoch's order."""
        runs = _halve_until(self.runs, n_slots)
        rng = np.random.default_rng([self.seed, epoch, _EPOCH_SALT])
        order = rng.permutation(len(runs))
        mine = order[slot::n_slots]
        if mine.size == 0:  # fewer train images than slots: share
            mine = order[[slot % len(runs)]]
        return [runs[i] for i in mine]

    def __len__(self) -> int:
        """Samples per rank, assuming the DataLoader has ``num_workers`` workers."""
        _, world = self.rank_world()
        workers = max(self.num_workers, 1)
        return self.samples_per_slot(world * workers) * workers

    # -- iteration
    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rank, world = self.rank_world()
        n_slots = world * workers
        slot = rank * workers + worker
        runs = self.slot_runs(self.epoch, slot, n_slots)
        rng = np.random.default_rng([self.seed, self.epoch, rank, worker, _SLOT_SALT])
        n = self.samples_per_slot(n_slots)
        group = self._reader.group
        images, labels = group["images"], group["labels"]
        done = 0
        while True:
            for k in rng.permutation(len(runs)) if done else range(len(runs)):
                a, b = runs[k]
                imgs, labs = images[a:b], labels[a:b]
                for j in rng.permutation(b - a):
                    lab = _targets_only(labs[j], self._untargeted.get(a + int(j)))
                    img, lab = augment_sample(imgs[j], lab, self.augment, rng)
                    item = _sample(img, lab)
                    item["index"] = a + int(j)
                    yield item
                    done += 1
                    if done == n:
                        return


class EvalDataset(Dataset):
    """Full images of one split in store order, no augmentation; read one image per item.

    Items: ``image`` and targets float32 (1, row, col) (image normalised as ``normalisation``
    says: a model's own spec, so that older models are scored on the input they were trained
    on), ``labels`` int32 (row, col), ``pixel_size_nm`` float [nm], ``index`` int (store image
    index). Instances not of ``target_kinds`` are background (``None``: all instances are kept).
    """

    def __init__(
        self,
        store: str | Path,
        split: str,
        target_kinds: tuple[str, ...] | None = TARGET_KINDS_DEFAULT,
        normalisation: Mapping[str, Any] = NORMALISATION,
    ) -> None:
        self.normalisation = dict(normalisation)
        group = open_dataset_store(store)
        self._reader = _StoreReader(store)
        self._untargeted = untargeted_ids(group, target_kinds)
        self.split = split
        self.indices = np.flatnonzero(group["split"][:] == SPLIT_CODES[split])
        self._pixel = np.asarray(group["pixel_size_nm"][:], dtype=np.float64)

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, i: int) -> dict[str, Any]:
        idx = int(self.indices[i])
        group = self._reader.group
        labels = _targets_only(np.asarray(group["labels"][idx]), self._untargeted.get(idx))
        item = _sample(np.asarray(group["images"][idx]), labels, self.normalisation)
        item["pixel_size_nm"] = float(self._pixel[idx])
        item["index"] = idx
        return item


def split_dataset(
    store: str | Path,
    split: str,
    target_kinds: tuple[str, ...] | None = TARGET_KINDS_DEFAULT,
    normalisation: Mapping[str, Any] = NORMALISATION,
) -> EvalDataset:
    """Full images of ``split`` (``train``, ``val`` or ``test``) in store order (may be empty),
    labels restricted to ``target_kinds`` (``None``: all instances), images normalised as
    ``normalisation`` says (a model's stored spec)."""
    if split not in SPLIT_CODES:
        raise InputError(f"split: expected one of {sorted(SPLIT_CODES)}, got {split!r}")
    return EvalDataset(store, split, target_kinds, normalisation)


class EpochDataLoader(DataLoader):
    """DataLoader that sets the dataset's epoch and rank in ``__iter__``, before workers start.

    Lightning calls ``set_epoch`` only on samplers, which an ``IterableDataset`` has none of.
    """

    def __init__(self, dataset: TrainShardDataset, *, epoch_fn: Callable[[], int], **kw) -> None:
        kw["persistent_workers"] = False  # fresh workers each epoch carry the epoch
        super().__init__(dataset, **kw)
        self.epoch_fn = epoch_fn

    def __iter__(self):
        self.dataset.set_epoch(self.epoch_fn())
        self.dataset.bind_distributed()
        return super().__iter__()


class SkyrmionDataModule(pl.LightningDataModule):
    """Train/val/test loaders streaming the dataset store lazily by split.

    Args:
        store: path of the dataset store (``ltemfactory assemble``).
        augment: training augmentation; ``augment.crop_px`` is the training crop [px].
        batch_size: training batch size.
        num_workers: DataLoader worker processes (train, val and test).
        samples_per_epoch: training samples per epoch over all ranks (rounded down to a multiple
            of ``world_size·max(num_workers, 1)·batch_size``, at least one batch per slot).
        seed: seed of the training stream.
        val_batch_size: val/test batch size (default ``batch_size``).
        target_kinds: instance kinds kept as targets (module docstring); ``None``: all.
    """

    def __init__(
        self,
        store: str | Path,
        *,
        augment: AugmentConfig,
        batch_size: int,
        num_workers: int = 0,
        samples_per_epoch: int,
        seed: int,
        val_batch_size: int | None = None,
        target_kinds: tuple[str, ...] | None = TARGET_KINDS_DEFAULT,
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("batch_size", batch_size, 1),
            ("num_workers", num_workers, 0),
            ("samples_per_epoch", samples_per_epoch, 1),
            ("val_batch_size", 1 if val_batch_size is None else val_batch_size, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
                raise InputError(f"{name}: expected an integer >= {low}, got {value!r}")
        if not isinstance(augment, AugmentConfig):
            raise InputError(f"augment: expected an AugmentConfig, got {type(augment).__name__}")
        self.store = Path(store)
        self.augment = augment
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.samples_per_epoch = int(samples_per_epoch)
        self.seed = int(seed)
        self.val_batch_size = int(val_batch_size or batch_size)
        self.target_kinds = None if target_kinds is None else tuple(target_kinds)
        self._epoch = 0
        self.train_dataset: TrainShardDataset | None = None
        self.val_dataset: EvalDataset | None = None
        self.test_dataset: EvalDataset | None = None
        self._diameter: float | None = None

    # -- setup and validation
    def setup(self, stage: str | None = None) -> None:
        """Check the store and build the datasets of ``stage`` (fit, validate, test or all)."""
        group = open_dataset_store(self.store)
        check_fits(group["images"].shape[1:], self.augment)
        if stage in (None, "fit") and self.train_dataset is None:
            self.train_dataset = TrainShardDataset(
                self.store,
                augment=self.augment,
                samples_per_epoch=self.samples_per_epoch,
                seed=self.seed,
                batch_size=self.batch_size,
                num_workers=self.num_workers,
                target_kinds=self.target_kinds,
            )
        if stage in (None, "fit", "validate") and self.val_dataset is None:
            self.val_dataset = self._eval("val")
        if stage == "test" and self.test_dataset is None:
            self.test_dataset = self._eval("test")

    def _eval(self, split: str) -> EvalDataset:
        ds = EvalDataset(self.store, split, self.target_kinds)
        if len(ds) == 0:
            raise InputError(f"{self.store}: split '{split}' has no images")
        return ds

    def set_epoch(self, epoch: int) -> None:
        """Epoch of the training stream when no trainer is attached (default 0)."""
        self._epoch = int(epoch)

    def _current_epoch(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(trainer.current_epoch) if trainer is not None else self._epoch

    # -- loaders
    def train_dataloader(self) -> EpochDataLoader:
        if self.train_dataset is None:
            self.setup("fit")
        self._log_epoch_size()
        return EpochDataLoader(
            self.train_dataset,
            epoch_fn=self._current_epoch,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
        )

    def _log_epoch_size(self) -> None:
        """Say when the epoch is not ``samples_per_epoch`` long. Called when the trainer asks for
        the loader, so that under DDP the process group (world size) is known."""
        rank, world = distributed_rank()
        slots = world * max(self.num_workers, 1)
        total = self.train_dataset.samples_per_slot(slots) * slots
        if total != self.samples_per_epoch and rank == 0:
            log.info(
                "%d training samples per epoch instead of %d (full batches of %d for each of "
                "%d rank(s) x %d worker(s))",
                total,
                self.samples_per_epoch,
                self.batch_size,
                world,
                max(self.num_workers, 1),
            )

    def _eval_loader(self, ds: EvalDataset) -> DataLoader:
        return DataLoader(
            ds, batch_size=self.val_batch_size, shuffle=False, num_workers=self.num_workers
        )

    def val_dataloader(self) -> DataLoader:
        if self.val_dataset is None:
            self.setup("validate")
        return self._eval_loader(self.val_dataset)

    def test_dataloader(self) -> DataLoader:
        if self.test_dataset is None:
            self.setup("test")
        return self._eval_loader(self.test_dataset)

    # -- summaries
    @property
    def image_shape(self) -> tuple[int, int]:
        """(row, col) size of the store's images [px]."""
        shape = open_dataset_store(self.store)["images"].shape
        return int(shape[1]), int(shape[2])

    def _train_mask(self, group: zarr.Group) -> np.ndarray:
        return np.asarray(group["split"][:]) == SPLIT_CODES["train"]

    def _target_rows(self, group: zarr.Group) -> np.ndarray:
        """Rows of the instance table that are targets: of ``target_kinds``, in a train image."""
        image = np.asarray(group["instances/image"][:], dtype=np.int64)
        keep = self._train_mask(group)[image]
        if self.target_kinds is not None and "instances/kind_code" in group:
            keep &= _of_kinds(group, self.target_kinds)
        return keep

    @property
    def pixel_size_nm(self) -> dict[str, float]:
        """min, median and max pixel size [nm] of the training images."""
        group = open_dataset_store(self.store)
        px = np.asarray(group["pixel_size_nm"][:], dtype=np.float64)[self._train_mask(group)]
        if px.size == 0:
            raise InputError(f"{self.store}: split 'train' has no images")
        return {"min": float(px.min()), "median": float(np.median(px)), "max": float(px.max())}

    @property
    def train_diameter_px(self) -> float:
        """Median equivalent diameter [px] of the training instances, 2·r_eq/pixel size.

        Only target instances count; those touching the image border are left out when
        ``instances/touches_border`` exists (their area is cut), unless that leaves none.
        Inference rescales experimental images so that their skyrmions have this diameter.
        """
        if self._diameter is None:
            group = open_dataset_store(self.store)
            need = ("instances/image", "instances/equivalent_radius_nm")
            missing = [n for n in need if n not in group]
            if missing:
                raise InputError(f"{self.store}: missing array(s) {missing}")
            image = np.asarray(group["instances/image"][:], dtype=np.int64)
            radius = np.asarray(group["instances/equivalent_radius_nm"][:], dtype=np.float64)
            px = np.asarray(group["pixel_size_nm"][:], dtype=np.float64)
            keep = self._target_rows(group)
            if "instances/touches_border" in group:
                inner = keep & ~np.asarray(group["instances/touches_border"][:], dtype=bool)
                keep = inner if inner.any() else keep
            if not keep.any():
                raise InputError(f"{self.store}: no instances in split 'train'")
            self._diameter = float(np.median(2.0 * radius[keep] / px[image[keep]]))
        return self._diameter

    @property
    def train_nn_distance_px(self) -> float | None:
        """Median nearest-neighbour distance [px] between target-instance centroids in the
        training images (periodic films are not wrapped: the image is a window). Inference
        rescales an experimental lattice so that its FFT nearest-neighbour distance equals
        this; ``None`` when no training image holds two instances."""
        from scipy.spatial import cKDTree

        group = open_dataset_store(self.store)
        image = np.asarray(group["instances/image"][:], dtype=np.int64)
        rc = np.stack(
            [
                np.asarray(group["instances/centroid_row_px"][:], dtype=np.float64),
                np.asarray(group["instances/centroid_col_px"][:], dtype=np.float64),
            ],
            axis=1,
        )
        keep = self._target_rows(group)
        distances = []
        for i in np.unique(image[keep]):
            pts = rc[keep & (image == i)]
            if len(pts) >= 2:
                distances.append(cKDTree(pts).query(pts, k=2)[0][:, 1])
        return float(np.median(np.concatenate(distances))) if distances else None

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self._epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._epoch = int(state_dict.get("epoch", 0))
