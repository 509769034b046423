"""The dataset card: a Markdown summary of a dataset store, with PNG figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ltemfactory.dataset.layout import _array_paths, _is_str
from ltemfactory.dataset.split import SPLIT_CODES
from ltemfactory.files import write_text_atomic

_INDEX_ARRAYS = {
    "state_id",
    "image_state",
    "image_batch",
    "state_batch",
    "split",
    "state_split",
    "variant",
    "seed",
    "image_state_id",
}


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _hist_figure(group, names: list[str], title: str, out: Path) -> bool:
    from ltemfactory.plotting import plt, save_figure

    if not names:
        return False
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, name in zip(axes.ravel(), names, strict=False):
        ax.axis("on")
        data = np.asarray(group[name][:], dtype=float)
        ax.hist(data[np.isfinite(data)], bins=min(30, max(5, len(data) // 2)), color="0.4")
        units = group[name].attrs.get("units") or ""
        ax.set_title(f"{name} [{units}]" if units else name, fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, out)
    return True


def _montage(group, out: Path, n_examples: int = 4) -> None:
    from matplotlib.colors import ListedColormap

    from ltemfactory.plotting import plt, save_figure

    n = group["images"].shape[0]
    image_state = np.asarray(group["image_state"][:])
    split = np.asarray(group["split"][:])
    picks: list[int] = []
    # one image per split first, then further states
    for code in SPLIT_CODES.values():
        idx = np.flatnonzero(split == code)
        if idx.size and len(picks) < n_examples:
            picks.append(int(idx[0]))
    seen = {image_state[i] for i in picks}
    for i in range(n):
        if len(picks) >= n_examples:
            break
        if image_state[i] not in seen:
            picks.append(i)
            seen.add(image_state[i])
    picks = sorted(picks) or [0]
    px = np.asarray(group["pixel_size_nm"][:])
    names = {v: k for k, v in SPLIT_CODES.items()}
    rng = np.random.default_rng(0)
    colors = ListedColormap(rng.uniform(0.2, 1.0, size=(256, 3)))
    fig, axes = plt.subplots(len(picks), 3, figsize=(9, 3.1 * len(picks)), squeeze=False)
    for row, i in enumerate(picks):
        img = np.asarray(group["images"][i])
        lab = np.asarray(group["labels"][i])
        st = int(image_state[i])
        mz = np.asarray(group["magnetization"][st, 2])
        ny, nx = img.shape
        ext = (0, nx * px[i], 0, ny * px[i])
        ax = axes[row]
        lo, hi = np.percentile(img, [1, 99])  # hot/dead pixels must not set the grey scale
        shown = {"cmap": "gray", "origin": "lower", "extent": ext, "vmin": lo, "vmax": hi}
        ax[0].imshow(img, **shown)
        ax[0].set_title(f"image {i} (state {st}, {names.get(int(split[i]), '?')})", fontsize=8)
        ax[1].imshow(img, **shown)
        masked = np.ma.masked_equal(lab % 256, 0) if lab.max() > 0 else np.ma.masked_all(lab.shape)
        ax[1].imshow(masked, cmap=colors, origin="lower", extent=ext, alpha=0.5, vmin=0, vmax=255)
        ax[1].set_title(f"labels: {int(lab.max())} instances", fontsize=8)
        ax[2].imshow(mz, cmap="RdBu_r", vmin=-1, vmax=1, origin="lower", extent=ext)
        ax[2].set_title("m_z (layer mean)", fontsize=8)
        for a in ax:
            a.tick_params(labelsize=7)
    fig.suptitle("examples: image | labels overlay | m_z (axes in nm, y up)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, out)


def card(store: str | Path, out_dir: str | Path) -> Path:
    """Write a Markdown dataset card ``out_dir/README.md`` with PNG figures; returns its path.

    The card has the counts of states, images and instances per split, a table of every
    per-state and per-image parameter (range and units), instance size statistics, the
    provenance and the fingerprint; figures: ``parameters_state.png``,
    ``parameters_image.png`` (histograms of the parameters that vary) and ``examples.png``
    (image | labels overlay | m_z for a few images). Every file is written atomically.
    """
    from ltemfactory.stores import open_store

    group = open_store(store)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    attrs = group.attrs.asdict()
    names = _array_paths(group)
    split = np.asarray(group["split"][:])
    state_split = np.asarray(group["state_split"][:]) if "state_split" in names else None
    inst_image = np.asarray(group["instances/image"][:])
    n_img = group["images"].shape[0]
    n_state = group["magnetization"].shape[0]
    lines = [
        f"# Dataset card: `{Path(store).name}`",
        "",
        f"Simulated Lorentz-TEM images of magnetic textures with instance labels "
        f"(ltemfactory {attrs.get('ltemfactory_version', '?')}). "
        f"{n_state} states, {n_img} images of {group['images'].shape[1]} x "
        f"{group['images'].shape[2]} px, {len(inst_image)} labelled instances.",
        "",
        "## Splits (by state: all images of a state share a split)",
        "",
        "| split | states | images | instances |",
        "|---|---:|---:|---:|",
    ]
    inst_split = split[inst_image] if len(inst_image) else np.zeros(0, np.uint8)
    for name, code in SPLIT_CODES.items():
        ns = int((state_split == code).sum()) if state_split is not None else "?"
        lines.append(
            f"| {name} | {ns} | {int((split == code).sum())} | {int((inst_split == code).sum())} |"
        )
    lines.append(f"| **all** | {n_state} | {n_img} | {len(inst_image)} |")

    varying: dict[str, list[str]] = {"state": [], "image": []}
    lines += ["", "## Parameters", "", "| parameter | per | units | min | median | max |"]
    lines.append("|---|---|---|---:|---:|---:|")
    for name in names:
        arr = group[name]
        dims = tuple(arr.metadata.dimension_names or ())
        if arr.ndim != 1 or dims[0] not in ("state", "image") or name in _INDEX_ARRAYS:
            continue
        units = arr.attrs.get("units") or ""
        data = np.asarray(arr[:])
        if _is_str(data.dtype):
            vals, counts = np.unique([str(x) for x in data.tolist()], return_counts=True)
            desc = ", ".join(f"{v} ({c})" for v, c in zip(vals, counts, strict=True))
            lines.append(f"| {name} | {dims[0]} | | {desc} | | |")
            continue
        data = data.astype(float)
        if not data.size:
            continue
        lo, med, hi = np.nanmin(data), np.nanmedian(data), np.nanmax(data)
        lines.append(f"| {name} | {dims[0]} | {units} | {_fmt(lo)} | {_fmt(med)} | {_fmt(hi)} |")
        if hi > lo and arr.dtype != bool:
            varying[dims[0]].append(name)

    lines += ["", "## Instance sizes", ""]
    stat_cols = [
        c
        for c in (
            "area_nm2",
            "equivalent_radius_nm",
            "major_axis_nm",
            "minor_axis_nm",
            "ellipse_major_nm",
            "ellipse_minor_nm",
        )
        if f"instances/{c}" in names
    ]
    if len(inst_image) and stat_cols:
        lines += ["| column | units | mean | std | p5 | p50 | p95 |", "|---|---|" + "---:|" * 5]
        for c in stat_cols:
            v = np.asarray(group[f"instances/{c}"][:], dtype=float)
            p5, p50, p95 = np.percentile(v, [5, 50, 95])
            units = group[f"instances/{c}"].attrs.get("units", "")
            lines.append(
                f"| {c} | {units} | {_fmt(v.mean())} | {_fmt(v.std())} | {_fmt(p5)} | "
                f"{_fmt(p50)} | {_fmt(p95)} |"
            )
        per_image = np.bincount(inst_image, minlength=n_img)
        lines += [
            "",
            f"Instances per image: mean {per_image.mean():.2f}, max {int(per_image.max())}, "
            f"{int((per_image == 0).sum())} images without instances.",
        ]
        if "instances/touches_border" in names:
            tb = np.asarray(group["instances/touches_border"][:]).astype(bool)
            lines.append(f"Instances touching the border: {int(tb.sum())}.")
    else:
        lines.append("No instances.")

    figures = []
    if _hist_figure(
        group, varying["state"], "per-state parameters", out_dir / "parameters_state.png"
    ):
        figures.append(("Per-state parameters", "parameters_state.png"))
    if _hist_figure(
        group, varying["image"], "per-image parameters", out_dir / "parameters_image.png"
    ):
        figures.append(("Per-image imaging parameters", "parameters_image.png"))
    _montage(group, out_dir / "examples.png")
    figures.append(("Examples: image, labels overlay, m_z", "examples.png"))
    lines += ["", "## Figures", ""]
    for title, fname in figures:
        lines += [f"### {title}", "", f"![{title}]({fname})", ""]

    cfg = attrs.get("config", {})
    lines += [
        "## Provenance",
        "",
        f"- created (UTC): {attrs.get('created_utc', '?')}",
        f"- ltemfactory version: {attrs.get('ltemfactory_version', '?')}",
        f"- git commit: `{attrs.get('git_commit', 'unknown')}`"
        + (" (uncommitted changes)" if attrs.get("git_dirty") else ""),
        f"- seed: {attrs.get('seed', '?')}; split fractions {attrs.get('split_fractions', '?')}",
        f"- inputs: {len(attrs.get('inputs', []))} batches, SHA-256 of paths + state ids "
        f"`{attrs.get('inputs_sha256', '?')}`",
        f"- sweep table SHA-256: `{attrs.get('sweep_sha256') or 'not recorded'}`",
        f"- shards: {attrs.get('image_shard', '?')} images, {attrs.get('state_shard', '?')} states",
        "",
        "## Fingerprint",
        "",
        f"`{attrs.get('fingerprint', '?')}` (SHA-256 of all array contents; recompute with "
        "`ltemfactory.dataset.fingerprint`)",
        "",
        "<details><summary>Config</summary>",
        "",
        "```json",
        json.dumps(cfg, indent=2, sort_keys=True),
        "```",
        "",
        "</details>",
        "",
    ]
    readme = out_dir / "README.md"
    write_text_atomic(readme, "\n".join(lines))
    return readme
