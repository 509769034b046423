"""Figures for humans: montages of relaxed states (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ltemfactory.files import atomic_path  # noqa: E402
from ltemfactory.stores import open_store  # noqa: E402


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 110) -> None:
    """Save ``fig`` to ``path`` through a temporary file and a rename, then close it."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)


def relax_montage(store: str | Path, out: str | Path, max_states: int = 64) -> None:
    """PNG grid of m_z (layer mean) for the states of one relax store.

    Each panel is titled with the state id, its topological charge Q, the number of reversed
    domains and whether it converged; x is right and y is up (``origin="lower"``).
    """
    group = open_store(store)
    m = group["m"]
    n = min(m.shape[0], max_states)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.2 * rows), squeeze=False)
    ids = group["state_id"][:]
    q = group["topological_charge"][:]
    count = group["skyrmion_count"][:]
    conv = group["converged"][:]
    kind = group["initial_state"][:]
    cell = group["cell_size_nm"][:]
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        ax = axes.ravel()[i]
        mz = np.asarray(m[i, 2]).mean(axis=0)
        ny, nx = mz.shape
        extent = (0, nx * cell[i], 0, ny * cell[i])
        ax.imshow(mz, cmap="RdBu_r", vmin=-1, vmax=1, origin="lower", extent=extent)
        flag = "" if conv[i] else "  NOT CONVERGED"
        ax.set_title(f"state {ids[i]} ({kind[i]})\nQ={q[i]:.2f} N={count[i]}{flag}", fontsize=8)
    fig.suptitle(f"{Path(store).name}: m_z (red +1, blue −1), axes in nm", fontsize=9)
    save_figure(fig, out)


def ltem_figure(
    m: np.ndarray,
    image: np.ndarray,
    induction: np.ndarray,
    pixel_size_m: float,
    out: str | Path,
    title: str = "",
) -> None:
    """Three panels: in-plane m on a colour wheel (brightness |m_perp|, white m_z = ±1),
    the LTEM image, and the projected induction B⊥·t on the same colour wheel.

    Args:
        m: (3, ny, nx) layer-mean magnetisation.
        image: (ny, nx) LTEM intensity.
        induction: (2, ny, nx) projected induction (B_x t, B_y t) [T nm].
        pixel_size_m: pixel size [m] for the axes [nm].
    """
    from ltemfactory.ltem import colorwheel_legend, vector_to_rgb

    ny, nx = image.shape
    extent = (0, nx * pixel_size_m * 1e9, 0, ny * pixel_size_m * 1e9)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6))
    panels = [
        (vector_to_rgb(m[0], m[1], max_norm=1.0, background="white").numpy(), "magnetisation m⊥"),
        (image, "LTEM image"),
        (vector_to_rgb(induction[0], induction[1]).numpy(), "TIE induction B⊥·t"),
    ]
    for ax, (data, label) in zip(axes, panels, strict=True):
        ax.imshow(data, origin="lower", extent=extent, cmap="gray" if data.ndim == 2 else None)
        ax.set_title(label)
        ax.set_xlabel("x [nm]")
    axes[0].set_ylabel("y [nm]")
    legend = colorwheel_legend(64).numpy()
    inset = axes[2].inset_axes([0.78, 0.78, 0.2, 0.2])
    inset.imshow(legend, origin="lower")
    inset.axis("off")
    bmax = float(np.hypot(induction[0], induction[1]).max())
    axes[2].text(0.02, 0.02, f"max {bmax:.2f} T nm", transform=axes[2].transAxes, color="w")
    fig.suptitle(title, fontsize=10)
    save_figure(fig, out)


def _label_colors(seed: int = 0):
    """A fixed random colour table so neighbouring instance ids get distinct colours."""
    from matplotlib.colors import ListedColormap

    return ListedColormap(np.random.default_rng(seed).uniform(0.2, 1.0, size=(256, 3)))


def prediction_grid(
    out: str | Path,
    images: list[np.ndarray],
    truths: list[np.ndarray],
    preds: list[np.ndarray],
    *,
    title: str = "image | truth | prediction",
) -> Path:
    """PNG with one row per image: the image, its true and its predicted instance labels
    (each overlaid on the image in random colours; the title counts instances).

    Arrays are (row, col); row 0 is drawn at the top, as detectors read out.
    """
    n = len(images)
    if not (n == len(truths) == len(preds)) or n == 0:
        raise ValueError(f"prediction_grid: {n} images, {len(truths)} truths, {len(preds)} preds")
    colors = _label_colors()
    fig, axes = plt.subplots(n, 3, figsize=(9, 3.1 * n), squeeze=False)
    for row, (img, true, pred) in enumerate(zip(images, truths, preds, strict=True)):
        lo, hi = np.percentile(img, [1, 99])
        panels = zip(axes[row], (None, true, pred), ("image", "truth", "prediction"), strict=True)
        for ax, lab, name in panels:
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi)
            if lab is not None:
                shown = np.ma.masked_equal(lab % 256, 0)
                ax.imshow(shown, cmap=colors, alpha=0.55, vmin=0, vmax=255, interpolation="nearest")
                name = f"{name}: {np.count_nonzero(np.unique(lab))} instances"
            ax.set_title(name, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, out)
    return Path(out)
