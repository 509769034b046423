"""Synthetic training data for the model tests: dense lattices of touching disks.

The image of each disk is a ring (a bright rim, dark centre) plus noise, so a pixel's
foreground and distance-to-border can be read off a small neighbourhood, and touching disks
share a bright rim: a binary mask merges them, the instance formulation must not.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from ltemfactory.instances import encode_targets


def touching_disks(size: int, radius: float, rng: np.random.Generator) -> np.ndarray:
    """int32 (size, size) labels: a randomly shifted hexagonal lattice of disks whose spacing
    equals their diameter, so neighbours touch along a line."""
    a = 2 * radius
    rows = np.arange(-2, size / (a * np.sqrt(3) / 2) + 2)
    shift = rng.uniform(0, a, size=2)
    centres = [
        (r * a * np.sqrt(3) / 2 + shift[0], c * a + (r % 2) * a / 2 + shift[1])
        for r in rows
        for c in np.arange(-2, size / a + 2)
    ]
    rr, cc = np.mgrid[:size, :size] + 0.5
    d2 = np.stack([(rr - r) ** 2 + (cc - c) ** 2 for r, c in centres])
    nearest = d2.argmin(axis=0)
    inside = d2.min(axis=0) < (0.95 * radius) ** 2
    return np.where(inside, nearest + 1, 0).astype(np.int32)


def ring_image(labels: np.ndarray, rng: np.random.Generator, noise: float = 0.1) -> np.ndarray:
    """float32 image: bright on instance borders (and background), dark inside, plus noise."""
    edt = encode_targets(labels)["distance"]
    image = 1.0 - edt + 0.1 * (labels == 0)
    image = ndimage.gaussian_filter(image, 0.7) + noise * rng.standard_normal(labels.shape)
    return ((image - image.mean()) / image.std()).astype(np.float32)


def batch(n: int, size: int, radius: float, seed: int) -> dict[str, torch.Tensor]:
    """A training/validation batch in the layout of :mod:`ltemfactory.training.data`."""
    rng = np.random.default_rng(seed)
    labels = np.stack([touching_disks(size, radius, rng) for _ in range(n)])
    images = np.stack([ring_image(lab, rng) for lab in labels])
    targets = encode_targets(labels)
    out = {k: torch.as_tensor(v[:, None]) for k, v in targets.items()}
    out["image"] = torch.as_tensor(images[:, None])
    out["labels"] = torch.as_tensor(labels)
    out["pixel_size_nm"] = torch.full((n,), 2.0, dtype=torch.float64)
    out["index"] = torch.arange(n)
    return out


class BatchList(torch.utils.data.Dataset):
    """A fixed list of pre-made batches (DataLoader with batch_size=None)."""

    def __init__(self, batches: list[dict[str, torch.Tensor]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.batches[i]
