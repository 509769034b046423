"""The training stage end to end: data module, network, Lightning trainer, MLflow run, export.

:func:`train` is what ``ltemfactory train`` runs. It resumes: checkpoints live in their own
directory (outside the Snakemake output, which Snakemake deletes before a rerun) together with a
``resume.json`` naming the MLflow run and a digest of everything that determines the training
(the ``seed`` and ``train`` config sections and the dataset fingerprint). A rerun with the same
digest continues from ``last.ckpt`` in the same MLflow run; a different digest starts afresh.

Data-parallel training (``train.strategy: ddp``, ``devices: N``): Lightning re-runs the command
once for each extra rank, so :func:`train` runs in every process; rank 0 alone decides about
resuming (the other ranks read its decision), talks to MLflow and exports the model. ``last.ckpt``
is written at the end of every epoch.

The exported model directory holds ``model.pt`` (:class:`~ltemfactory.training.predictor.
Predictor`, loadable with ``weights_only=True``), ``best.ckpt`` (the Lightning checkpoint) and
``train_summary.json`` (run id, model URI, best validation metrics, timing).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_only

from ltemfactory.errors import InputError
from ltemfactory.files import atomic_path, write_json
from ltemfactory.training.augment import AugmentConfig
from ltemfactory.training.calibration import tune_predictor_on_split
from ltemfactory.training.data import SkyrmionDataModule, open_dataset_store
from ltemfactory.training.module import SkyrmionSegmenter, load_checkpoint
from ltemfactory.training.normalisation import NORMALISATION
from ltemfactory.training.predictor import FORMULATIONS
from ltemfactory.training.tracking import (
    TrackingConfig,
    lightning_logger,
    log_metrics,
    log_model,
    log_run_context,
    setup_tracking,
)
from ltemfactory.training.unet import UNet, UNetConfig

__all__ = ["TRAIN_SEED_SALT", "resolve_precision", "train", "training_digest"]

log = logging.getLogger(__name__)

TRAIN_SEED_SALT = 0x5452414E  # "TRAN": separates the training stream from other uses of the seed


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto`` → bf16 mixed precision on CUDA devices that support it (else fp16 mixed), full
    fp32 on the CPU (CPU autocast is slower than fp32 for these small convolutions)."""
    if precision != "auto":
        return precision
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if not on_gpu:
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def training_digest(config: Mapping[str, Any], fingerprint: str) -> str:
    """SHA-256 of what determines a training run: seed, ``train`` section (tracking excluded:
    where the run is recorded does not change it) and the dataset fingerprint."""
    train = {k: v for k, v in config["train"].items() if k != "tracking"}
    blob = json.dumps(
        {"seed": config["seed"], "train": train, "dataset": fingerprint}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _fingerprint(store: Path) -> str:
    fp = open_dataset_store(store).attrs.get("fingerprint")
    if not fp:
        raise InputError(f"{store}: dataset store has no fingerprint (was it assembled?)")
    return str(fp)


def _resume_state(
    checkpoints: Path, digest: str, *, clean: bool = True
) -> tuple[Path | None, str | None]:
    """(last checkpoint, MLflow run id) to resume from, or (None, None) to start afresh.

    Starting afresh deletes ``checkpoints`` when ``clean``. DDP ranks other than 0 pass
    ``clean=False``: Lightning starts them from inside rank 0's ``fit``, after rank 0 made the
    decision (and wrote ``resume.json``), so they read the same decision and must not delete
    what rank 0 wrote.
    """
    state_file = checkpoints / "resume.json"
    last = checkpoints / "last.ckpt"
    if state_file.is_file() and last.is_file():
        state = json.loads(state_file.read_text())
        if state.get("digest") == digest:
            if clean:
                log.info("resuming from %s (MLflow run %s)", last, state.get("run_id"))
            return last, state.get("run_id")
        if clean:
            log.warning("%s: config or dataset changed since the checkpoint; starting afresh", last)
    if clean and checkpoints.exists():
        shutil.rmtree(checkpoints)
    return None, None


def train(
    config: Mapping[str, Any],
    dataset: str | Path,
    out_dir: str | Path,
    *,
    checkpoint_dir: str | Path,
    card_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Train the segmenter on ``dataset`` as configured in ``config['train']``.

    Args:
        config: a validated config (:func:`ltemfactory.config.load_config`).
        dataset: the assembled dataset store.
        out_dir: model directory to write (``model.pt``, ``best.ckpt``, ``train_summary.json``).
        checkpoint_dir: where checkpoints and ``resume.json`` live between runs.
        card_dir: the dataset card directory, logged to MLflow when given.

    Returns:
        The training summary (also written to ``out_dir/train_summary.json``).
    """
    t = config["train"]
    dataset, out_dir, checkpoints = Path(dataset), Path(out_dir), Path(checkpoint_dir)
    fingerprint = _fingerprint(dataset)
    digest = training_digest(config, fingerprint)
    # With strategy ddp, Lightning re-runs the command (so this function) once per extra rank.
    rank_zero = rank_zero_only.rank == 0
    resume_ckpt, run_id = _resume_state(checkpoints, digest, clean=rank_zero)
    checkpoints.mkdir(parents=True, exist_ok=True)

    seed = (int(config["seed"]) ^ TRAIN_SEED_SALT) & 0xFFFFFFFF
    pl.seed_everything(seed, workers=True, verbose=False)
    dm = SkyrmionDataModule(
        dataset,
        augment=AugmentConfig.from_dict(t["augment"]),
        batch_size=t["batch_size"],
        num_workers=t["num_workers"],
        samples_per_epoch=t["samples_per_epoch"],
        seed=seed,
        target_kinds=tuple(t["target_kinds"]),
    )
    dm.setup("fit")
    formulation = t["formulation"]
    net_cfg = UNetConfig.from_dict({**t["network"], "out_channels": len(FORMULATIONS[formulation])})
    module = SkyrmionSegmenter(
        UNet(net_cfg),
        formulation=formulation,
        learning_rate=t["learning_rate"],
        weight_decay=t["weight_decay"],
        loss_weights=t["loss_weights"],
        decode=t["decode"],
        normalisation=NORMALISATION,
        train_diameter_px=dm.train_diameter_px,
        metadata={
            "dataset_fingerprint": fingerprint,
            "dataset": str(dataset),
            "train_nn_distance_px": dm.train_nn_distance_px,
            "train_pixel_size_nm": dm.pixel_size_nm["median"],
            "target_kinds": list(t["target_kinds"]),
        },
    )

    tracking = TrackingConfig.from_dict(t["tracking"])
    logger = None
    if rank_zero:  # only rank 0 talks to MLflow
        setup_tracking(tracking)
        logger = lightning_logger(run_id, tracking)
        run_id = logger.run_id
        write_json(checkpoints / "resume.json", {"digest": digest, "run_id": run_id})
        if resume_ckpt is None:
            log_run_context(
                run_id=run_id,
                config=dict(config),
                dataset_store=dataset,
                fingerprint=fingerprint,
                card_dir=Path(card_dir) if card_dir else None,
            )

    accelerator = t["accelerator"]
    precision = resolve_precision(t["precision"], accelerator)
    best_cb = ModelCheckpoint(
        dirpath=checkpoints,
        filename="best",
        monitor="val/f1",
        mode="max",
        save_top_k=1,
        enable_version_counter=False,
    )
    # last.ckpt after every epoch (what a rerun resumes from). Not save_last=True of best_cb:
    # Lightning (2.x) then writes last.ckpt only when a new best was saved in the same step.
    last_cb = ModelCheckpoint(
        dirpath=checkpoints,
        filename="last",
        save_top_k=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    callbacks: list[pl.Callback] = [best_cb, last_cb]
    if logger is not None:  # the LR monitor needs a logger (rank 0 only); it does no collectives
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=t["devices"],
        strategy=t["strategy"],
        precision=precision,
        max_epochs=t["max_epochs"],
        max_time={"minutes": t["max_time_min"]} if t.get("max_time_min") else None,
        check_val_every_n_epoch=t["check_val_every_n_epoch"],
        callbacks=callbacks,
        logger=logger if logger is not None else False,
        log_every_n_steps=t["log_every_n_steps"],
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic="warn",
        default_root_dir=checkpoints,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=resume_ckpt)
    wall_s = time.perf_counter() - start
    if not trainer.is_global_zero:
        return {}

    best_path = Path(best_cb.best_model_path or checkpoints / "last.ckpt")
    best = load_checkpoint(best_path)
    predictor = best.predictor()
    predictor.metadata.update({"run_id": run_id, "digest": digest})
    predictor.symmetrise = t["symmetrise"]  # before decoder tuning: tuned on the maps it will use
    tuned = {}
    if t["tune_decoder"]:
        predictor.decode, tuned_f1, default_f1 = tune_predictor_on_split(predictor, dataset, "val")
        tuned = {"val/f1_50_tuned_decoder": tuned_f1, "val/f1_50_config_decoder": default_f1}
        log_metrics(
            {**tuned, **{f"decode/{k}": v for k, v in predictor.decode.items()}}, run_id=run_id
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    predictor.save(out_dir / "model.pt")
    with atomic_path(out_dir / "best.ckpt") as tmp:
        shutil.copyfile(best_path, tmp)

    size = min(64, *dm.image_shape)
    example = np.zeros((1, 1, size - size % net_cfg.multiple, size - size % net_cfg.multiple))
    model_uri = log_model(
        predictor.network,
        run_id=run_id,
        example_input=example.astype(np.float32),
        metadata=_without_none(predictor.state() | {"state_dict": None}),
        registered_model=tracking.registered_model,
        checkpoint=out_dir / "best.ckpt",
    )
    epochs, global_step, best_score = _fit_state(trainer, best_cb, checkpoints / "last.ckpt")
    samples = global_step * t["batch_size"] * trainer.world_size
    summary = {
        "run_id": run_id,
        "model_uri": model_uri,
        "registered_model": tracking.registered_model,
        "dataset_fingerprint": fingerprint,
        "digest": digest,
        "formulation": formulation,
        "best_checkpoint": str(best_path),
        "best_val_f1": _float(best_score),
        "last_val_metrics": {
            k: _float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")
        },
        "epochs": epochs,
        "global_step": global_step,
        "precision": precision,
        "devices": trainer.num_devices,
        "wall_s": wall_s,
        "train_images_per_s": samples / wall_s if wall_s > 0 else None,
        "train_diameter_px": dm.train_diameter_px,
        "decode": predictor.decode,
        "symmetrise": predictor.symmetrise,
        "decoder_tuning": tuned,
    }
    write_json(out_dir / "train_summary.json", summary)
    return summary


def _fit_state(trainer: pl.Trainer, best_cb: ModelCheckpoint, last: Path) -> tuple[int, int, Any]:
    """(epochs, optimiser steps, best monitored score) of the finished fit.

    With ``ddp_spawn`` the fit ran in spawned processes and this process's trainer keeps its
    initial counters (Lightning sends back the weights, metrics and best path only), so they
    are read from the last checkpoint, which is written at the end of every epoch.
    """
    if trainer.global_step > 0 or not last.is_file():
        return trainer.current_epoch, trainer.global_step, best_cb.best_model_score
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    best = ckpt.get("callbacks", {}).get(best_cb.state_key, {}).get("best_model_score")
    return int(ckpt["epoch"]) + 1, int(ckpt["global_step"]), best


def _float(x: Any) -> float | None:
    """A Lightning score (0-d tensor, or None before any validation) as a float."""
    return None if x is None else float(x)


def _without_none(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}
