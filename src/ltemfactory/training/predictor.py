"""From network outputs to instance labels, shared by validation, evaluation and inference.

Two formulations (the ablation of issue [D]):

* ``instance``: three output maps — foreground logit, normalised-distance logit, boundary logit
  (targets from :func:`ltemfactory.instances.encode_targets`) — decoded by the
  marker-controlled watershed of :func:`ltemfactory.instances.decode_instances`, which keeps
  touching skyrmions apart;
* ``binary``: one foreground logit decoded by connected components
  (:func:`ltemfactory.instances.decode_binary_baseline`), the earlier public approach.

:class:`Predictor` bundles a trained network with everything inference must reproduce exactly:
the formulation, the input normalisation, the decoder parameters and the training scale (the
median skyrmion diameter [px] the network saw), and saves them in one ``torch.save`` file that
loads with ``weights_only=True`` (tensors and plain Python values only).

Arrays are (…, row, col); tensors (batch, channel, row, col).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ltemfactory.errors import InputError
from ltemfactory.files import atomic_path
from ltemfactory.instances import (
    MIN_DIAMETER_FRACTION,
    decode_binary_baseline,
    decode_instances,
    drop_small_instances,
    drop_undersized_instances,
)
from ltemfactory.training.normalisation import normalise_from_spec
from ltemfactory.training.unet import UNet, UNetConfig, pad_to_multiple

__all__ = [
    "DECODE_DEFAULTS",
    "FORMULATIONS",
    "Predictor",
    "decode_maps",
    "maps_from_logits",
    "maps_from_probabilities",
    "size_prior_px",
]

log = logging.getLogger(__name__)

FORMULATIONS = {"instance": ("foreground", "distance", "boundary"), "binary": ("foreground",)}
"""Output maps of each formulation, in channel order."""

DECODE_DEFAULTS = {
    "fg_threshold": 0.5,
    "seed_threshold": 0.6,
    "min_distance_px": 2.0,
    "min_area_px": 4,
    "sigma_px": 1.0,
}
"""Defaults of :func:`ltemfactory.instances.decode_instances` (the binary decoder uses only
``fg_threshold`` and ``min_area_px``)."""

_FORMAT = "ltemfactory-predictor-v1"


def check_formulation(formulation: str) -> str:
    if formulation not in FORMULATIONS:
        raise InputError(
            f"formulation: expected one of {sorted(FORMULATIONS)}, got {formulation!r}"
        )
    return formulation


def decode_params(decode: Mapping[str, Any] | None) -> dict[str, Any]:
    """Decoder parameters with defaults filled in; unknown keys raise ``InputError``."""
    decode = dict(decode or {})
    unknown = sorted(set(decode) - set(DECODE_DEFAULTS))
    if unknown:
        raise InputError(
            f"decode: unknown key(s) {unknown}; expected some of {list(DECODE_DEFAULTS)}"
        )
    return {**DECODE_DEFAULTS, **decode}


def maps_from_probabilities(probs: torch.Tensor, formulation: str) -> dict[str, np.ndarray]:
    """Named probability maps, float32 numpy (N, row, col) each, from (N, C, row, col)."""
    names = FORMULATIONS[check_formulation(formulation)]
    if probs.ndim != 4 or probs.shape[1] != len(names):
        raise InputError(
            f"maps: expected (N, {len(names)}, row, col) for the {formulation} formulation, "
            f"got {tuple(probs.shape)}"
        )
    out = probs.detach().float().cpu().numpy()
    return {name: out[:, i] for i, name in enumerate(names)}


def maps_from_logits(logits: torch.Tensor, formulation: str) -> dict[str, np.ndarray]:
    """Probability maps, float32 numpy (N, row, col) each, from (N, C, row, col) logits."""
    return maps_from_probabilities(torch.sigmoid(logits.detach().float()), formulation)


def size_prior_px(train_diameter_px: float | None) -> float:
    """Smallest instance a model trained on skyrmions of median diameter ``train_diameter_px``
    [px] reports: :data:`~ltemfactory.instances.MIN_DIAMETER_FRACTION` of it [px]; 0 (no
    prior) when the diameter is unknown."""
    return MIN_DIAMETER_FRACTION * float(train_diameter_px) if train_diameter_px else 0.0


def decode_maps(
    maps: Mapping[str, np.ndarray],
    formulation: str,
    decode: Mapping[str, Any] | None = None,
    min_diameter_px: float = 0.0,
) -> np.ndarray:
    """Instance labels, int32 (…, row, col), from probability maps (…, row, col).

    ``min_diameter_px`` > 0: each image loses the instances whose equivalent diameter is below
    it, unless they touch its border (:func:`~ltemfactory.instances.drop_undersized_instances`;
    :attr:`Predictor.min_diameter_px` is the trained model's value).
    """
    p = decode_params(decode)
    fg = maps["foreground"]
    if check_formulation(formulation) == "binary":
        labels = decode_binary_baseline(fg, p["fg_threshold"])
        labels = drop_small_instances(labels, p["min_area_px"])
    else:
        labels = decode_instances(fg, maps["distance"], **p)
    if min_diameter_px > 0:
        flat = labels.reshape(-1, *labels.shape[-2:])
        labels = np.stack([drop_undersized_instances(one, min_diameter_px) for one in flat])
        labels = labels.reshape(fg.shape).astype(np.int32)
    return labels


class Predictor:
    """A trained network plus the preprocessing and decoding that go with it.

    Args:
        network: the U-Net (its ``config`` must match the formulation's output maps).
        formulation: ``instance`` or ``binary``.
        normalisation: spec for :func:`ltemfactory.training.normalisation.normalise_from_spec`.
        decode: decoder parameters (see :data:`DECODE_DEFAULTS`).
        train_diameter_px: median skyrmion equivalent diameter [px] in the training split; an
            experimental image is best resampled so its skyrmions have about this size.
        metadata: free-form JSON-serialisable provenance (dataset fingerprint, run id, ...).
        symmetrise: average the probability maps over the image's four flips (see
            :meth:`maps`); 4× the network cost.
    """

    def __init__(
        self,
        network: UNet,
        *,
        formulation: str,
        normalisation: Mapping[str, Any],
        decode: Mapping[str, Any] | None = None,
        train_diameter_px: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        symmetrise: bool = False,
    ) -> None:
        self.formulation = check_formulation(formulation)
        n_out = len(FORMULATIONS[formulation])
        if network.config.out_channels != n_out:
            raise InputError(
                f"network has {network.config.out_channels} outputs; the {formulation} "
                f"formulation needs {n_out}"
            )
        self.network = network.eval()
        self.normalisation = dict(normalisation)
        self.decode = decode_params(decode)
        self.train_diameter_px = None if train_diameter_px is None else float(train_diameter_px)
        self.metadata = dict(metadata or {})
        self.symmetrise = bool(symmetrise)

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @property
    def min_diameter_px(self) -> float:
        """Smallest instance reported [px] (:func:`size_prior_px` of the training diameter).
        Validation, decoder tuning, evaluation and inference all apply it (inference can
        change the fraction)."""
        return size_prior_px(self.train_diameter_px)

    @property
    def target_kinds(self) -> tuple[str, ...] | None:
        """Instance kinds the model was trained to find (``metadata["target_kinds"]``); ``None``
        for models trained on every reversed domain."""
        kinds = self.metadata.get("target_kinds")
        return None if kinds is None else tuple(kinds)

    def to(self, device: str | torch.device) -> Predictor:
        self.network.to(device)
        return self

    def normalise(self, images: np.ndarray, lowpass_sigma_px: float = 0.0) -> np.ndarray:
        """Raw images (…, row, col) → the network's input scale (float32), optionally
        low-passed (Gaussian sigma [px]) after outlier and plane removal."""
        return normalise_from_spec(
            np.asarray(images, dtype=np.float32),
            self.normalisation,
            lowpass_sigma_px=lowpass_sigma_px,
        )

    @torch.inference_mode()
    def maps(self, normalised: np.ndarray) -> dict[str, np.ndarray]:
        """Probability maps (N, row, col) of normalised images (N, 1, row, col), any size.

        The images are reflect-padded to the network's size multiple and cropped back. With
        :attr:`symmetrise`, the four flips of each image (identity, rows, columns, both: the
        symmetries of a rectangle, which keep any image shape) go through the network as one
        batch, each output is flipped back, and the probabilities are averaged: the maps are
        then flip-equivariant (exactly for sizes that are multiples of the network's size
        multiple; others are padded at the bottom/right first). Adding the 90° rotations (the
        eight symmetries of the square) lost skyrmions in the experimental image (measured;
        README, Training).
        """
        x = torch.as_tensor(np.asarray(normalised, dtype=np.float32), device=self.device)
        if x.ndim != 4 or x.shape[1] != 1:
            raise InputError(f"images: expected (N, 1, row, col), got {tuple(x.shape)}")
        x, (rows, cols) = pad_to_multiple(x, self.network.config.multiple)
        if not self.symmetrise:
            return maps_from_logits(self.network(x)[..., :rows, :cols], self.formulation)
        flips = ((), (-2,), (-1,), (-2, -1))
        out = self.network(torch.cat([x.flip(f) if f else x for f in flips]))
        probs = sum(
            torch.sigmoid(part.float()).flip(f) if f else torch.sigmoid(part.float())
            for f, part in zip(flips, out.chunk(len(flips)), strict=True)
        )
        return maps_from_probabilities(probs[..., :rows, :cols] / len(flips), self.formulation)

    def segment(self, image: np.ndarray) -> np.ndarray:
        """Instance labels int32 (row, col) of one raw image (row, col), in one network pass."""
        image = np.asarray(image)
        if image.ndim != 2:
            raise InputError(f"image: expected (row, col), got shape {image.shape}")
        maps = self.maps(self.normalise(image)[None, None])
        return decode_maps(
            {k: v[0] for k, v in maps.items()}, self.formulation, self.decode, self.min_diameter_px
        )

    # ------------------------------------------------------------------ persistence
    def state(self) -> dict[str, Any]:
        """Everything :meth:`load` needs: tensors and plain values (``weights_only`` safe)."""
        return {
            "format": _FORMAT,
            "network_config": self.network.config.to_dict(),
            "state_dict": {k: v.detach().cpu() for k, v in self.network.state_dict().items()},
            "formulation": self.formulation,
            "normalisation": self.normalisation,
            "decode": self.decode,
            "train_diameter_px": self.train_diameter_px,
            "metadata": self.metadata,
            "symmetrise": self.symmetrise,
        }

    def save(self, path: str | Path) -> Path:
        """Write :meth:`state` atomically to ``path`` (a ``.pt`` file)."""
        path = Path(path)
        with atomic_path(path) as tmp:
            torch.save(self.state(), tmp)
        return path

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Predictor:
        if state.get("format") != _FORMAT:
            raise InputError(f"not an ltemfactory predictor (format {state.get('format')!r})")
        network = UNet(UNetConfig.from_dict(state["network_config"]))
        network.load_state_dict(state["state_dict"])
        return cls(
            network,
            formulation=state["formulation"],
            normalisation=state["normalisation"],
            decode=state["decode"],
            train_diameter_px=state["train_diameter_px"],
            metadata=state["metadata"],
            symmetrise=bool(state.get("symmetrise", False)),  # absent before it existed
        )

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> Predictor:
        """Load a file written by :meth:`save` (``weights_only=True``: no code is unpickled)."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such model file")
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
            raise InputError(f"{path}: not a readable model file ({exc})") from exc
        if not isinstance(state, dict):
            raise InputError(f"{path}: not an ltemfactory predictor")
        return cls.from_state(state)
