"""Train/val/test split of the dataset by state: all images of a state share a split."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ltemfactory.errors import ConfigError

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
"""Codes of the ``split`` array."""

DEFAULT_SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
"""Train, val, test fractions of the states when ``dataset.split_fractions`` is not set."""

_SPLIT_SALT = 0x53504C54  # "SPLT": separates the split stream from every other use of the seed


def split_fractions(config: dict[str, Any]) -> tuple[float, float, float]:
    """``dataset.split_fractions`` of ``config`` (normalised), default (0.8, 0.1, 0.1)."""
    ds = config.get("dataset") or {}
    raw = ds.get("split_fractions", DEFAULT_SPLIT_FRACTIONS) if isinstance(ds, dict) else None
    try:
        f = np.asarray(raw, dtype=float)
    except (TypeError, ValueError):
        f = np.array([np.nan])
    if f.shape != (3,) or not np.all(np.isfinite(f)) or np.any(f < 0) or f.sum() <= 0:
        raise ConfigError(
            f"dataset.split_fractions: expected three non-negative numbers (train, val, test) "
            f"with a positive sum, got {raw!r}"
        )
    f = f / f.sum()
    return (float(f[0]), float(f[1]), float(f[2]))


def split_seed(config: dict[str, Any]) -> int:
    """Seed of the split: ``dataset.seed`` if given, else the config's ``seed`` (else 0)."""
    ds = config.get("dataset") or {}
    seed = ds.get("seed") if isinstance(ds, dict) else None
    if seed is None:
        seed = config.get("seed")
    return int(seed or 0)


def split_states(
    state_ids: np.ndarray, seed: int, fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS
) -> np.ndarray:
    """Split code (0 train, 1 val, 2 test) of each state, in the order of ``state_ids``.

    A pure function of the seed and the *set* of state ids: the ids are sorted, permuted with
    a generator seeded by ``seed``, and cut at counts given by the fractions (largest
    remainder). With three or more states, every split whose fraction is positive gets at
    least one state (taken from the largest split).
    """
    ids = np.asarray(state_ids, dtype=np.int64)
    s = len(ids)
    f = np.asarray(fractions, dtype=float)
    f = f / f.sum()
    exact = f * s
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: s - counts.sum()]] += 1
    if s >= 3:
        for k in range(3):
            if f[k] > 0 and counts[k] == 0:
                counts[np.argmax(counts)] -= 1
                counts[k] += 1
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & (2**63 - 1), _SPLIT_SALT]))
    ranked = np.argsort(ids, kind="stable")[rng.permutation(s)]
    codes = np.empty(s, dtype=np.uint8)
    start = 0
    for k in range(3):
        codes[ranked[start : start + counts[k]]] = k
        start += counts[k]
    return codes
