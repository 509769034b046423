"""Lightning module: losses, optimiser and instance metrics for the skyrmion segmenter.

The module is handed its network (:class:`ltemfactory.training.unet.UNet`); checkpoints carry
the network's config next to the hyper-parameters, so :func:`load_checkpoint` rebuilds it
(:func:`load_checkpoint`). Validation decodes every val image to instance labels with the same
functions inference uses (:mod:`ltemfactory.training.predictor`) and logs the metrics of
:func:`ltemfactory.metrics.match_dataset` per epoch as ``val/<name>_<IoU×100>`` (e.g.
``val/f1_50``, ``val/ap_70``), plus ``val/f1`` (= ``val/f1_50``, the monitored metric). For the
instance formulation it also logs ``val/baseline_f1_50``: the same foreground map decoded by
connected components (the ``binary`` decoder, same size filters), the ablation of the earlier
binary approach. ``val/loss`` is the mean of
the per-image losses and ``val/n_images`` the number of val images scored.

Under DDP every rank validates its share of the split (Lightning's ``DistributedSampler`` pads
the shares with repeated images); the per-image results are gathered, de-duplicated by store
index and scored on every rank, so the logged values equal a single-process validation.

Batches are dicts: ``image`` (N, 1, row, col) normalised; targets ``foreground``,
``distance``, ``boundary`` (N, 1, row, col); ``labels`` (N, row, col) int; for val/test also
``pixel_size_nm`` (N,) and ``index`` (N,).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from ltemfactory.errors import InputError
from ltemfactory.metrics import DEFAULT_THRESHOLDS, match_dataset
from ltemfactory.training.predictor import (
    FORMULATIONS,
    Predictor,
    check_formulation,
    decode_maps,
    decode_params,
    maps_from_logits,
    size_prior_px,
)
from ltemfactory.training.unet import UNet, UNetConfig, pad_to_multiple

__all__ = ["LOSS_WEIGHT_DEFAULTS", "SkyrmionSegmenter", "load_checkpoint", "metric_logs"]

LOSS_WEIGHT_DEFAULTS = {"foreground": 1.0, "distance": 2.0, "boundary": 0.5}
"""Weights of the per-map losses: BCE on foreground, MSE on the normalised distance (in
probability space), BCE on the boundary (instance formulation only)."""

_METRIC_NAMES = (
    "precision",
    "recall",
    "f1",
    "ap",
    "pq",
    "sq",
    "mean_iou",
    "radius_error_nm",
    "relative_radius_error",
    "centroid_error_nm",
)


def metric_logs(
    scores: Mapping[str, float], split: str, thresholds: Sequence[float] = DEFAULT_THRESHOLDS
) -> dict[str, float]:
    """``match_dataset`` scores renamed for logging: ``f1@0.5`` → ``<split>/f1_50``.

    MLflow metric names may not contain ``@``; the IoU threshold becomes a percentage suffix.
    Adds ``<split>/f1`` (F1 at IoU 0.5) and the instance counts.
    """
    out = {f"{split}/n_true": float(scores["n_true"]), f"{split}/n_pred": float(scores["n_pred"])}
    for t in thresholds:
        suffix = f"{round(100 * t):d}"
        for name in _METRIC_NAMES:
            out[f"{split}/{name}_{suffix}"] = float(scores[f"{name}@{t:g}"])
    if f"{split}/f1_50" in out:
        out[f"{split}/f1"] = out[f"{split}/f1_50"]
    return out


class SkyrmionSegmenter(pl.LightningModule):
    """Trains a U-Net on the instance (or, for the ablation, binary) formulation.

    Args:
        network: the U-Net; its ``out_channels`` must match the formulation.
        formulation: ``instance`` or ``binary`` (see :mod:`ltemfactory.training.predictor`).
        learning_rate: AdamW peak learning rate (cosine decay after a 5 % linear warm-up).
        weight_decay: AdamW weight decay.
        loss_weights: per-map loss weights (:data:`LOSS_WEIGHT_DEFAULTS`).
        decode: decoder parameters for validation (``predictor.DECODE_DEFAULTS``).
        normalisation: the input normalisation spec the data module applied (stored with the
            model so that inference reproduces it).
        train_diameter_px: median training skyrmion diameter [px] (stored with the model).
        metadata: provenance stored with exported predictors (fingerprint, ...).
    """

    def __init__(
        self,
        network: UNet,
        *,
        formulation: str = "instance",
        learning_rate: float = 2e-3,
        weight_decay: float = 1e-4,
        loss_weights: Mapping[str, float] | None = None,
        decode: Mapping[str, Any] | None = None,
        normalisation: Mapping[str, Any] | None = None,
        train_diameter_px: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        check_formulation(formulation)
        n_out = len(FORMULATIONS[formulation])
        if network.config.out_channels != n_out:
            raise InputError(
                f"network.out_channels is {network.config.out_channels}; the {formulation} "
                f"formulation needs {n_out}"
            )
        weights = {**LOSS_WEIGHT_DEFAULTS, **dict(loss_weights or {})}
        unknown = sorted(set(weights) - set(LOSS_WEIGHT_DEFAULTS))
        if unknown:
            raise InputError(f"loss_weights: unknown key(s) {unknown}")
        self.network = network
        self.save_hyperparameters(ignore=["network"])
        self.hparams.loss_weights = weights
        self.hparams.decode = decode_params(decode)
        self.hparams.normalisation = dict(normalisation or {})
        self.hparams.metadata = dict(metadata or {})
        # (store index, true labels, predicted labels, baseline labels, pixel size, loss)
        self._val_outputs: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, float, float]] = []

    # ------------------------------------------------------------------ forward and loss
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def losses(
        self, logits: torch.Tensor, batch: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Per-map losses and their weighted sum ``loss`` (float32 even under autocast)."""
        logits = logits.float()
        w = self.hparams.loss_weights
        out = {
            "foreground": F.binary_cross_entropy_with_logits(
                logits[:, 0:1], batch["foreground"].float()
            )
        }
        if self.hparams.formulation == "instance":
            out["distance"] = F.mse_loss(torch.sigmoid(logits[:, 1:2]), batch["distance"].float())
            out["boundary"] = F.binary_cross_entropy_with_logits(
                logits[:, 2:3], batch["boundary"].float()
            )
        out["loss"] = sum(w[k] * v for k, v in out.items())
        return out

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        parts = self.losses(self(batch["image"]), batch)
        n = batch["image"].shape[0]
        self.log("train/loss", parts["loss"], prog_bar=True, batch_size=n)
        for k, v in parts.items():
            if k != "loss":
                self.log(f"train/loss_{k}", v, batch_size=n)
        return parts["loss"]

    def configure_optimizers(self) -> dict[str, Any]:
        opt = torch.optim.AdamW(
            self.parameters(), lr=self.hparams.learning_rate, weight_decay=self.hparams.weight_decay
        )
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = max(1, total // 20)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min((step - warmup) / max(total - warmup, 1), 1.0)
            return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------ validation
    def _predict_logits(self, image: torch.Tensor) -> torch.Tensor:
        x, (rows, cols) = pad_to_multiple(image, self.network.config.multiple)
        return self(x)[..., :rows, :cols]

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        logits = self._predict_logits(batch["image"])
        n = batch["image"].shape[0]
        # Per image, so that val/loss is the mean over the split's images whatever the batches
        # and ranks (a DistributedSampler pads ranks with repeated images; see _gathered).
        tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
        loss = []
        for i in range(n):
            one = {k: v[i : i + 1] for k, v in tensors.items()}
            loss.append(float(self.losses(logits[i : i + 1], one)["loss"]))
        maps = maps_from_logits(logits, self.hparams.formulation)
        prior = size_prior_px(self.hparams.train_diameter_px)
        pred = decode_maps(maps, self.hparams.formulation, self.hparams.decode, prior)
        base = decode_maps(maps, "binary", self.hparams.decode, prior)  # the earlier approach
        true = batch["labels"].cpu().numpy()
        px = batch["pixel_size_nm"].cpu().numpy()
        idx = batch["index"].cpu().numpy()
        for i in range(n):
            self._val_outputs.append(
                (int(idx[i]), true[i], pred[i], base[i], float(px[i]), loss[i])
            )

    def on_validation_epoch_start(self) -> None:
        self._val_outputs = []

    def on_validation_epoch_end(self) -> None:
        outputs = self._gathered(self._val_outputs)
        self._val_outputs = []
        if not outputs:
            return
        _, true, pred, base, px, loss = zip(*outputs, strict=True)
        logs = metric_logs(match_dataset(true, pred, pixel_size_nm=px), "val")
        logs["val/loss"] = float(np.mean(loss))
        logs["val/n_images"] = float(len(outputs))
        if self.hparams.formulation == "instance":
            b = match_dataset(true, base, 0.5, pixel_size_nm=px)
            logs["val/baseline_f1_50"] = float(b["f1@0.5"])
        # Identical on every rank (computed from the gathered outputs): the max over ranks is
        # the value itself (exact, unlike a mean), and the sync keeps Lightning from warning.
        finite = {k: v for k, v in logs.items() if math.isfinite(v)}
        self.log_dict(finite, sync_dist=True, reduce_fx="max")

    def _gathered(self, outputs: list) -> list:
        """All ranks' validation outputs, one per image index, sorted (DDP-safe)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            parts: list[list] = [None] * torch.distributed.get_world_size()  # type: ignore[list-item]
            torch.distributed.all_gather_object(parts, outputs)
            outputs = [o for part in parts for o in part]
        unique = {o[0]: o for o in outputs}  # DistributedSampler pads by repeating images
        return [unique[k] for k in sorted(unique)]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["network_config"] = self.network.config.to_dict()

    # ------------------------------------------------------------------ export
    def predictor(self) -> Predictor:
        """The trained network with its normalisation and decoder, for evaluation/inference."""
        network = UNet(self.network.config)
        network.load_state_dict({k: v.detach().cpu() for k, v in self.network.state_dict().items()})
        h = self.hparams
        return Predictor(
            network,
            formulation=h.formulation,
            normalisation=h.normalisation,
            decode=h.decode,
            train_diameter_px=h.train_diameter_px,
            metadata=h.metadata,
        )


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> SkyrmionSegmenter:
    """Rebuild a :class:`SkyrmionSegmenter` (and its network) from a Lightning checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint")
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    if "network_config" not in ckpt:
        raise InputError(f"{path}: not an ltemfactory training checkpoint (no network_config)")
    config = UNetConfig.from_dict(ckpt["network_config"])
    return SkyrmionSegmenter.load_from_checkpoint(
        path, network=UNet(config), map_location=map_location
    )
