"""Files of an inference run: label TIFF, per-instance CSV, overlay PNGs and JSON summaries.

Every file is written atomically (:mod:`ltemfactory.files`): a reader never sees half a file.

Label images are integer (row, col), 0 the matrix and every other value one skyrmion instance
(ids need not be contiguous). Geometry follows :mod:`ltemfactory.labels`: pixel (row, col) has its
centre at x = (col + ½)·px, y = (row + ½)·px [nm]; x runs along columns, y along rows; angles
from +x toward +y.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from skimage.segmentation import find_boundaries

from ltemfactory.errors import InputError
from ltemfactory.files import atomic_path, write_text_atomic
from ltemfactory.instances import touches_border
from ltemfactory.labels import region_ellipses

__all__ = [
    "INSTANCE_COLUMNS",
    "instance_rows",
    "mask_layer_png",
    "overlay_png",
    "overlay_rgb",
    "write_instance_csv",
    "write_label_tiff",
]

INSTANCE_COLUMNS = (
    "instance_id",
    "centroid_row_px",
    "centroid_col_px",
    "centroid_x_nm",
    "centroid_y_nm",
    "area_px2",
    "area_nm2",
    "equivalent_radius_px",
    "equivalent_radius_nm",
    "equivalent_diameter_px",
    "equivalent_diameter_nm",
    "major_axis_px",
    "minor_axis_px",
    "major_axis_nm",
    "minor_axis_nm",
    "orientation_deg",
    "eccentricity",
    "touches_border",
    "mean_intensity",
)
"""Columns of :func:`instance_rows` and of the CSV header (units in the names)."""

RED = (1.0, 0.0, 0.0)
OUTLINE = (1.0, 0.85, 0.0)


def _check_labels(labels: np.ndarray) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim != 2 or not np.issubdtype(lab.dtype, np.integer):
        raise InputError(
            f"labels: expected an integer (row, col) array, got {lab.dtype} {lab.shape}"
        )
    if lab.size and lab.min() < 0:
        raise InputError("labels: expected non-negative ids (0 = matrix)")
    if lab.size and lab.max() > np.iinfo(np.int32).max:
        raise InputError("labels: ids must fit in int32")
    return lab


def _check_pixel_size(pixel_size_nm: float | None) -> float | None:
    if pixel_size_nm is None:
        return None
    px = float(pixel_size_nm)
    if not (math.isfinite(px) and px > 0):
        raise InputError(f"pixel_size_nm: expected a positive length, got {pixel_size_nm!r}")
    return px


# ----------------------------------------------------------------------------- label TIFF
def write_label_tiff(path: str | Path, labels: np.ndarray, pixel_size_nm: float | None) -> None:
    """Labels as an int32 TIFF that ImageJ/Fiji opens with its calibration.

    ImageJ's own TIFF flavour has no int32, so the file is a plain int32 TIFF with an ImageJ
    description (``unit=nm``, display range 0..max id) and XResolution = pixels per nm
    (ResolutionUnit NONE), which is how ImageJ stores a calibration; ImageJ opens it as 32-bit.
    """
    import tifffile

    lab = _check_labels(labels).astype(np.int32)
    px = _check_pixel_size(pixel_size_nm)
    desc = f"ImageJ=1.11a\nmin=0.0\nmax={float(lab.max(initial=0))}\n"
    kwargs: dict[str, Any] = {}
    if px is not None:
        desc += "unit=nm\n"
        kwargs = {"resolution": (1.0 / px, 1.0 / px), "resolutionunit": 1}
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, lab, description=desc, metadata=None, **kwargs)


# ----------------------------------------------------------------------------- instance table
def instance_rows(
    labels: np.ndarray, pixel_size_nm: float | None, image: np.ndarray | None = None
) -> list[dict[str, Any]]:
    """One dict per instance (ascending id) with the columns of :data:`INSTANCE_COLUMNS`.

    Centroid = mean pixel index; area = pixel count; equivalent radius r = √(area/π) and
    diameter 2r; ellipse axes = full axes of the ellipse of equal second moments and the
    orientation of its major axis from +x (columns) toward +y (rows) in (−90, 90]
    (:func:`ltemfactory.labels.region_ellipses`, the convention of
    :func:`ltemfactory.labels.instance_table`); eccentricity of that ellipse;
    ``touches_border``: a pixel on the first/last row/column. nm columns are None without a
    pixel size, ``mean_intensity`` is None without an image. Vectorised over instances
    (thousands per image).
    """
    lab = _check_labels(labels)
    px = _check_pixel_size(pixel_size_nm)
    intensity = None
    if image is not None:
        intensity = np.asarray(image, dtype=np.float64)
        if intensity.shape != lab.shape:
            raise InputError(
                f"image: expected the labels' shape {lab.shape}, got {intensity.shape}"
            )
    if not lab.any():
        return []
    e = region_ellipses(lab)
    ids = np.flatnonzero(e["count"]) + 1
    pick = {k: v[ids - 1] for k, v in e.items()}
    border = touches_border(lab)[ids]
    mean_intensity = None
    if intensity is not None:
        sums = np.bincount(lab.ravel(), weights=intensity.ravel(), minlength=ids[-1] + 1)[ids]
        mean_intensity = sums / pick["count"]
    major, minor = pick["major_axis_px"], pick["minor_axis_px"]
    with np.errstate(invalid="ignore", divide="ignore"):
        ecc = np.where(major > 0, np.sqrt(np.clip(1 - (minor / major) ** 2, 0, 1)), 0.0)

    def nm(v: float, power: int = 1) -> float | None:
        return None if px is None else v * px**power

    out = []
    for i, label in enumerate(ids):
        r0, c0 = float(pick["centroid_row_px"][i]), float(pick["centroid_col_px"][i])
        area = float(pick["count"][i])
        radius = math.sqrt(area / math.pi)
        out.append(
            {
                "instance_id": int(label),
                "centroid_row_px": r0,
                "centroid_col_px": c0,
                "centroid_x_nm": nm(c0 + 0.5),
                "centroid_y_nm": nm(r0 + 0.5),
                "area_px2": area,
                "area_nm2": nm(area, 2),
                "equivalent_radius_px": radius,
                "equivalent_radius_nm": nm(radius),
                "equivalent_diameter_px": 2 * radius,
                "equivalent_diameter_nm": nm(2 * radius),
                "major_axis_px": float(major[i]),
                "minor_axis_px": float(minor[i]),
                "major_axis_nm": nm(float(major[i])),
                "minor_axis_nm": nm(float(minor[i])),
                "orientation_deg": float(pick["orientation_deg"][i]),
                "eccentricity": float(ecc[i]),
                "touches_border": bool(border[i]),
                "mean_intensity": None if mean_intensity is None else float(mean_intensity[i]),
            }
        )
    return out


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float | np.floating):
        v = float(value)
        return "" if not math.isfinite(v) else repr(v)
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_instance_csv(
    path: str | Path,
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] = INSTANCE_COLUMNS,
) -> None:
    """Rows as CSV with a header of ``columns`` (header only when there are no rows).

    Floats are written with full precision (``repr``); None and NaN as empty cells.
    """
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=list(columns), lineterminator="\n", extrasaction="raise"
    )
    writer.writeheader()
    for i, row in enumerate(rows):
        missing = [c for c in columns if c not in row]
        if missing:
            raise InputError(f"rows[{i}]: missing columns {missing}")
        try:
            writer.writerow({k: _cell(v) for k, v in row.items()})
        except ValueError as exc:
            raise InputError(f"rows[{i}]: {exc}") from exc
    write_text_atomic(path, buf.getvalue())


# ----------------------------------------------------------------------------- overlays
def _grey(image: np.ndarray) -> np.ndarray:
    """Image scaled to [0, 1] between its 1st and 99th percentiles (robust to hot pixels)."""
    img = np.asarray(image, dtype=np.float64)
    lo, hi = np.percentile(img, [1.0, 99.0])
    if hi <= lo:
        lo, hi = float(img.min()), float(img.max())
    if hi <= lo:
        return np.full(img.shape, 0.5)
    return np.clip((img - lo) / (hi - lo), 0.0, 1.0)


def overlay_rgb(
    image: np.ndarray, labels: np.ndarray, *, alpha: float = 0.4, outlines: bool = True
) -> np.ndarray:
    """The overlay as float RGB (row, col, 3) in [0, 1], without annotations.

    Grey image; on the matrix (label 0) blended with red, (1 − α)·grey + α·red; instance
    pixels keep the plain grey so detected skyrmions show through untouched; with
    ``outlines`` the instance pixels on an instance boundary are drawn in yellow.
    """
    lab = _check_labels(labels)
    img = np.asarray(image)
    if img.shape != lab.shape:
        raise InputError(f"image: expected the labels' shape {lab.shape}, got {img.shape}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise InputError(f"alpha: expected a value in [0, 1], got {alpha}")
    grey = _grey(img)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    matrix = lab == 0
    rgb[matrix] = (1.0 - alpha) * rgb[matrix] + alpha * np.asarray(RED)
    if outlines:
        edge = find_boundaries(lab, mode="inner") & ~matrix
        rgb[edge] = OUTLINE
    return rgb


def _nice_length(target: float) -> float:
    """Largest 1, 2 or 5 × 10^k not above ``target``."""
    k = math.floor(math.log10(target))
    for m in (5.0, 2.0, 1.0):
        if m * 10**k <= target:
            return m * 10**k
    return 10.0**k


def _annotation_layer(
    shape: tuple[int, int],
    pixel_size_nm: float | None,
    centroids_rc: np.ndarray | None,
    title: str | None,
) -> np.ndarray:
    """Transparent RGBA (row, col, 4) in [0, 1] with scale bar, centroid marks and title."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    h, w = shape
    dpi = 100.0
    fig = Figure(figsize=((w + 0.25) / dpi, (h + 0.25) / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    fig.patch.set_alpha(0.0)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(-0.5, w - 0.5 + 0.25)
    ax.set_ylim(h - 0.5 + 0.25, -0.5)
    ax.set_axis_off()
    ax.patch.set_alpha(0.0)
    fontsize = max(6.0, min(14.0, 0.035 * min(h, w)))
    if centroids_rc is not None and len(centroids_rc):
        c = np.asarray(centroids_rc, dtype=float)
        ax.plot(
            c[:, 1],
            c[:, 0],
            "+",
            color="cyan",
            markersize=max(3.0, 0.012 * min(h, w)),
            markeredgewidth=0.8,
        )
    if pixel_size_nm is not None:
        length_nm = _nice_length(0.2 * w * pixel_size_nm)
        length_px = length_nm / pixel_size_nm
        bar_h = max(2.0, 0.012 * h)
        x0, y0 = 0.04 * w, h - 0.05 * h - bar_h
        ax.add_patch(
            Rectangle(
                (x0, y0), length_px, bar_h, facecolor="white", edgecolor="black", linewidth=0.8
            )
        )
        label = f"{length_nm / 1000:g} µm" if length_nm >= 1000 else f"{length_nm:g} nm"
        ax.text(
            x0 + length_px / 2,
            y0 - 0.01 * h,
            label,
            color="white",
            ha="center",
            va="bottom",
            fontsize=fontsize,
            bbox={"facecolor": "black", "alpha": 0.5, "pad": 1.5, "linewidth": 0},
        )
    if title:
        ax.text(
            0.01 * w,
            0.01 * h,
            title,
            color="white",
            ha="left",
            va="top",
            fontsize=fontsize,
            bbox={"facecolor": "black", "alpha": 0.5, "pad": 1.5, "linewidth": 0},
        )
    canvas.draw()
    layer = np.asarray(canvas.buffer_rgba(), dtype=np.float64)[:h, :w] / 255.0
    if layer.shape[:2] != (h, w):  # cannot happen with the 0.25 px margin; keep it safe
        full = np.zeros((h, w, 4))
        full[: layer.shape[0], : layer.shape[1]] = layer
        layer = full
    return layer


def _write_png(path: str | Path, rgb8: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:  # zlib level 1: ~4x faster than the default 6, ~20 % larger
        Image.fromarray(rgb8).save(tmp, format="PNG", compress_level=1)


def overlay_png(
    path: str | Path,
    image: np.ndarray,
    labels: np.ndarray,
    *,
    alpha: float = 0.4,
    pixel_size_nm: float | None = None,
    outlines: bool = True,
    centroids: bool = False,
    title: str | None = None,
) -> None:
    """PNG (one pixel per image pixel, RGB): skyrmions clear, the matrix between them red.

    :func:`overlay_rgb` plus, drawn with matplotlib (Agg) on a transparent layer and composited
    on top: a scale bar (bottom left, a 1-2-5 length near a fifth of the width) when the pixel
    size is known, cyan '+' centroid marks with ``centroids``, and a ``title`` (top left).
    """
    px = _check_pixel_size(pixel_size_nm)
    rgb = overlay_rgb(image, labels, alpha=alpha, outlines=outlines)
    lab = np.asarray(labels)
    cents = None
    if centroids and lab.any():
        rows = instance_rows(lab, None)
        cents = np.array([[r["centroid_row_px"], r["centroid_col_px"]] for r in rows])
    if px is not None or cents is not None or title:
        layer = _annotation_layer(lab.shape, px, cents, title)
        a = layer[..., 3:4]
        rgb = rgb * (1.0 - a) + layer[..., :3] * a
    _write_png(path, np.rint(np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8))


def mask_layer_png(path: str | Path, labels: np.ndarray, *, alpha: float = 0.5) -> None:
    """RGBA PNG layer to lay over the image: fully transparent on skyrmion instances, red with
    opacity ``alpha`` on the matrix between them (for viewers that stack layers)."""
    lab = _check_labels(labels)
    if not 0.0 <= float(alpha) <= 1.0:
        raise InputError(f"alpha: expected a value in [0, 1], got {alpha}")
    rgba = np.zeros((*lab.shape, 4), dtype=np.uint8)
    matrix = lab == 0
    rgba[matrix] = (255, 0, 0, int(round(255 * float(alpha))))
    _write_png(path, rgba)
