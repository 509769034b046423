"""Inference on experimental LTEM images: read, rescale to the training scale, segment in tiles,
measure, and write one output directory per image plus a run summary.

Per image (one frame of a file), :func:`infer_image`:

1. **Read** with :func:`~ltemfactory.inference.readers.read_image` (pixel size [nm] from the
   argument, else from the file's calibration, else unknown).
2. **Scale.** The network works best at the scale it was trained on. The image is resampled by
   a factor s (new size = s·old size):

   * ``pixel_size``: a pixel size is known and the model records its training pixel size
     (``metadata["train_pixel_size_nm"]``): s = pixel_size_nm / train_pixel_size_nm, so one
     pixel covers the same length as in training;
   * ``fft_lattice``: otherwise the nearest-neighbour distance a of the lattice is read off the
     first ring of the power spectrum (:func:`~ltemfactory.inference.lattice.
     estimate_lattice_period_px`) and s = a_train / a, a_train the median nearest-neighbour
     distance of the training skyrmions (``metadata["train_nn_distance_px"]``; for models
     without it 2 × ``train_diameter_px``);
   * no pixel size and no reliable ring: the image is refused (:class:`InputError`);
   * ``none`` (s = 1): the model records no training scale at all (logged as a warning).

   Both the factor and the method are logged and stored in ``lattice.json`` and the summary.
   The resampled image must be at least :data:`MIN_MODEL_SIZE_PX` per side (the network's
   receptive field), else the image is refused.
3. **Tilt axis.** The training images span tilt axes of every azimuth (``render.tilt_axis_deg``
   is drawn uniformly from 0–360° by default), so the model has no canonical axis and the image
   is not rotated: a given ``tilt_axis_deg`` is only recorded, with ``rotation_deg = 0``.
4. **Segment.** The resampled image is normalised once (``predictor.normalise``, whole image,
   so every tile sees the same intensity scale: outlier pixels and the illumination plane
   removed, then a Gaussian low-pass of sigma ``lowpass_sigma_a`` times the training lattice
   constant, which removes experimental noise at periods far below the lattice), predicted in
   overlapping tiles (:func:`~ltemfactory.inference.tiling.predict_tiled`), decoded into
   instances once on the stitched maps (so an instance crossing a tile border is decoded
   once); instances narrower than ``min_diameter_fraction`` of the training skyrmion diameter
   and not cut by the border are dropped (noise blobs; both lengths are in ``lattice.json``),
   and the labels are resized back to the original pixel grid (nearest neighbour) and
   renumbered 1..N.
5. **Measure and write**, atomically into ``out_dir/<name>/`` (written to a hidden temporary
   directory that is renamed into place only when every file is complete):

   * ``labels.tif``: int32 instance labels (ImageJ calibration when the pixel size is known);
   * ``instances.csv``: the columns of :data:`~ltemfactory.inference.outputs.INSTANCE_COLUMNS`
     plus ``confidence`` (mean foreground probability over the instance, in [0, 1]),
     ``coordination`` (Delaunay neighbours), ``psi6_abs`` and ``psi6_angle_deg`` (the local
     bond-orientational order ψ6 of the skyrmion) and ``lattice_interior`` (the site is used by
     the lattice statistics: far enough from the border, bounded Voronoi cell);
   * ``overlay.png``: skyrmions clear, the matrix between them red (paper Fig. 2e style);
   * ``psi6.png``: the skyrmions coloured by |ψ6|, 5- and 7-fold sites marked;
   * ``lattice.json``: scale decision, FFT lattice estimate, the lattice statistics of
     :func:`~ltemfactory.inference.lattice.lattice_statistics`, and two self-consistency
     checks (:func:`count_check`): the detected count against the count a hexagonal lattice of
     the FFT lattice constant a puts in the image (N = area·2/(√3 a²)), and the median
     nearest-neighbour distance against a.

Stacks: :func:`infer_images` processes **every frame** of a stack (a multi-page TIFF, a 3-D NPY,
an animated PNG/GIF), each into ``<stem>_frame<k>/``, unless ``frame`` picks one. A single
image goes to ``<stem>/``.

Bad input of one image (unreadable, truncated or unknown file, NaN pixels, a frame out of
range, too small, no pixel size and no lattice ring) is logged and recorded in ``summary.json``
with the file name and the message; the other images are still processed, and no output
directory of the failed image remains.

Arrays are (row, col); lengths are in px unless the key says nm.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ltemfactory.errors import InputError
from ltemfactory.files import atomic_path, to_jsonable, write_json
from ltemfactory.inference.lattice import (
    LatticeEstimate,
    estimate_lattice_period_px,
    lattice_statistics,
)
from ltemfactory.inference.outputs import (
    INSTANCE_COLUMNS,
    instance_rows,
    overlay_png,
    write_instance_csv,
    write_label_tiff,
)
from ltemfactory.inference.readers import LtemImage, read_image
from ltemfactory.inference.tiling import predict_tiled, resample_image, resize_labels
from ltemfactory.instances import MIN_DIAMETER_FRACTION

__all__ = [
    "EXTRA_COLUMNS",
    "LOWPASS_SIGMA_A",
    "MIN_DIAMETER_FRACTION",
    "MIN_MODEL_SIZE_PX",
    "OUTPUT_FILES",
    "PredictorLike",
    "choose_scale",
    "count_check",
    "infer_image",
    "infer_images",
    "load_predictor",
    "model_scale",
    "segment_image",
]

log = logging.getLogger(__name__)

MIN_MODEL_SIZE_PX = 32
"""Smallest side [px] of the image after rescaling: about the network's receptive field."""

LOWPASS_SIGMA_A = 0.13
"""Default Gaussian low-pass sigma before segmentation, in units of the training lattice
constant a [1]. Experimental images carry far more noise at short periods than the simulated
training images (the shipped one: ~90 % of its variance at periods of 3-10 px against a
~37 px lattice); sigma = 0.13·a keeps 77 % of the amplitude of the first lattice ring
(period √3·a/2) and removes noise of periods below a/4 (amplitude < 0.5 %)."""

MAX_MODEL_PIXELS = 2**28
"""Largest image after rescaling [px] (16384²): a larger one means an absurd scale factor."""

EXTRA_COLUMNS = ("confidence", "coordination", "psi6_abs", "psi6_angle_deg", "lattice_interior")
"""Columns of ``instances.csv`` after :data:`INSTANCE_COLUMNS`."""

OUTPUT_FILES = {
    "labels": "labels.tif",
    "instances": "instances.csv",
    "overlay": "overlay.png",
    "psi6_map": "psi6.png",
    "lattice": "lattice.json",
}
"""Files written per image, relative to its output directory."""

SUMMARY_FILE = "summary.json"

COUNT_TOLERANCE = 0.10
"""Relative tolerance of the count check (detected vs FFT-expected)."""

NN_TOLERANCE = 0.05
"""Relative tolerance of the median-NN-distance check (vs the FFT lattice constant)."""

ROTATION_NOTE = (
    "not rotated: the training images span tilt axes of all azimuths "
    "(render.tilt_axis_deg uniform in 0-360 deg), so the model has no canonical tilt axis"
)

_SQRT3 = math.sqrt(3.0)


class PredictorLike(Protocol):
    """What the pipeline needs of a model (:class:`ltemfactory.training.predictor.Predictor`)."""

    formulation: str
    decode: Mapping[str, Any]
    train_diameter_px: float | None
    metadata: Mapping[str, Any]

    def normalise(self, images: np.ndarray, lowpass_sigma_px: float = 0.0) -> np.ndarray: ...

    def maps(self, normalised: np.ndarray) -> Mapping[str, np.ndarray]: ...


# ----------------------------------------------------------------------------- model loading
def _is_mlflow_uri(model: str) -> bool:
    return model.startswith(("models:/", "runs:/"))


def load_predictor(
    model: str | os.PathLike[str],
    *,
    tracking_uri: str | None = None,
    device: str = "cpu",
) -> Any:
    """Load a trained model for inference.

    Args:
        model: a model directory written by ``ltemfactory train`` (holding ``model.pt``), a
            ``.pt`` file of :meth:`Predictor.save`, or an MLflow URI ``models:/<name>/<version
            |latest>``, ``models:/<name>@<alias>``, ``models:/m-<id>`` or ``runs:/<run>/model``.
            An MLflow model is the ``torch.export`` graph logged by
            :func:`ltemfactory.training.tracking.log_model`; its MLmodel ``metadata`` holds the
            predictor settings (network config, normalisation, decoder, training scale), and its
            weights are loaded into a fresh U-Net, so both routes give the same
            :class:`~ltemfactory.training.predictor.Predictor`.
        tracking_uri: MLflow tracking URI for ``models:/``/``runs:/`` (default: the
            ``MLFLOW_TRACKING_URI`` environment variable, else ``sqlite:///results/mlflow.db``).
        device: ``cpu``, ``cuda`` or ``auto`` (CUDA when available).

    Raises:
        InputError: no such file, not a predictor, or the URI cannot be resolved.
    """
    import torch

    from ltemfactory.training.predictor import Predictor

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    text = os.fspath(model)
    if _is_mlflow_uri(text):
        predictor = _load_mlflow(text, tracking_uri)
    else:
        path = Path(text)
        if path.is_dir():
            path = path / "model.pt"
        predictor = Predictor.load(path)
        summary = path.parent / "train_summary.json"
        if summary.is_file():
            import json

            try:
                info = json.loads(summary.read_text())
            except (OSError, ValueError) as exc:
                log.warning("%s: unreadable training summary (%s)", summary, exc)
            else:
                for key in ("run_id", "model_uri"):
                    if info.get(key):
                        predictor.metadata.setdefault(key, info[key])
        predictor.metadata.setdefault("source", str(path))
    return predictor.to(device)


def _load_mlflow(uri: str, tracking_uri: str | None) -> Any:
    import mlflow

    from ltemfactory.training.predictor import Predictor
    from ltemfactory.training.tracking import DEFAULT_TRACKING_URI, resolve_tracking_uri

    tracking = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(resolve_tracking_uri(tracking))
    try:
        info = mlflow.models.get_model_info(uri)
        meta = dict(info.metadata or {})
        if "network_config" not in meta:
            raise InputError(
                f"{uri}: not an ltemfactory model (its MLmodel metadata has no network_config)"
            )
        graph = mlflow.pytorch.load_model(uri, map_location="cpu")
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - MLflow raises many types for a bad URI
        raise InputError(f"{uri}: cannot load the model from {tracking} ({exc})") from exc
    finally:
        mlflow.set_tracking_uri(previous)
    state = {**meta, "state_dict": graph.state_dict()}
    predictor = Predictor.from_state(state)
    predictor.metadata.setdefault("source", uri)
    predictor.metadata.setdefault("model_uri", uri)
    log.info("loaded %s from %s", uri, tracking)
    return predictor


def model_scale(predictor: PredictorLike) -> dict[str, Any]:
    """The training scale a model records: nearest-neighbour distance [px], pixel size [nm].

    ``train_nn_distance_px`` comes from ``metadata["train_nn_distance_px"]`` (source
    ``metadata``), else 2 × ``train_diameter_px`` (source ``2*train_diameter_px``, a touching
    lattice), else None.
    """
    meta = dict(getattr(predictor, "metadata", None) or {})
    nn, source = _positive(meta.get("train_nn_distance_px")), "metadata"
    diameter = _positive(getattr(predictor, "train_diameter_px", None))
    if nn is None and diameter is not None:
        nn, source = 2.0 * diameter, "2*train_diameter_px"
    return {
        "train_nn_distance_px": nn,
        "train_nn_distance_source": source if nn is not None else None,
        "train_diameter_px": diameter,
        "train_pixel_size_nm": _positive(meta.get("train_pixel_size_nm")),
    }


def _positive(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def _multiple(predictor: PredictorLike) -> int:
    network = getattr(predictor, "network", None)
    config = getattr(network, "config", None)
    return int(getattr(config, "multiple", 1))


def _check_priors(lowpass_sigma_a: float, min_diameter_fraction: float) -> None:
    """InputError unless both priors are finite numbers >= 0."""
    for name, value in (
        ("lowpass_sigma_a", lowpass_sigma_a),
        ("min_diameter_fraction", min_diameter_fraction),
    ):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise InputError(f"{name}: expected a number >= 0, got {value!r}")
        if not math.isfinite(value):
            raise InputError(f"{name}: expected a finite number, got {value!r}")


def size_priors(
    mscale: Mapping[str, Any], lowpass_sigma_a: float, min_diameter_fraction: float
) -> dict[str, Any]:
    """The two length priors of :func:`segment_image` at the model scale [px].

    The image is resampled so that its lattice (or pixel) scale is the training scale, so the
    training lattice constant a (``train_nn_distance_px``) and skyrmion diameter d
    (``train_diameter_px``) fix the lengths: the low-pass sigma is ``lowpass_sigma_a``·a and the
    smallest kept instance ``min_diameter_fraction``·d. A length the model does not record is
    ``None`` (that step is skipped, with a warning when it was asked for).
    """
    _check_priors(lowpass_sigma_a, min_diameter_fraction)
    out: dict[str, Any] = {
        "lowpass_sigma_a": float(lowpass_sigma_a),
        "lowpass_sigma_model_px": None,
        "min_diameter_fraction": float(min_diameter_fraction),
        "min_diameter_model_px": None,
    }
    for key, factor, length in (
        ("lowpass_sigma_model_px", lowpass_sigma_a, "train_nn_distance_px"),
        ("min_diameter_model_px", min_diameter_fraction, "train_diameter_px"),
    ):
        if factor > 0 and mscale.get(length):
            out[key] = float(factor) * float(mscale[length])
        elif factor > 0:
            log.warning("the model records no %s: %s skipped", length, key)
    return out


# ----------------------------------------------------------------------------- scale
def choose_scale(
    shape: tuple[int, int],
    pixel_size_nm: float | None,
    fft: LatticeEstimate,
    scale: Mapping[str, Any],
    source: str = "image",
) -> dict[str, Any]:
    """Resampling factor to the training scale and how it was chosen (see the module docs).

    Args:
        shape: (rows, cols) of the image [px].
        pixel_size_nm: pixel size [nm] of the image, None when unknown.
        fft: the image's power-spectrum lattice estimate.
        scale: :func:`model_scale` of the model.
        source: the image's name, for messages.

    Returns:
        ``factor`` (new size / old size), ``method`` (``pixel_size``, ``fft_lattice`` or
        ``none``), ``model_shape_px`` and ``model_pixel_size_nm`` (pixel size after
        resampling, None when unknown).

    Raises:
        InputError: no pixel size and no reliable lattice ring, or a resampled image smaller
            than :data:`MIN_MODEL_SIZE_PX` or larger than :data:`MAX_MODEL_PIXELS`.
    """
    train_px = scale.get("train_pixel_size_nm")
    train_nn = scale.get("train_nn_distance_px")
    if pixel_size_nm is not None and train_px is not None:
        factor, method = float(pixel_size_nm) / float(train_px), "pixel_size"
        log.info(
            "%s: pixel size %.4g nm, training %.4g nm -> resample by %.4f",
            source,
            pixel_size_nm,
            train_px,
            factor,
        )
        if fft.reliable and train_nn is not None:
            ratio = fft.nn_distance_px * factor / train_nn
            if not 0.5 <= ratio <= 2.0:
                log.warning(
                    "%s: at the training pixel size the lattice spacing is %.2f x the training "
                    "one; the skyrmions may lie outside the training distribution",
                    source,
                    ratio,
                )
    elif train_nn is not None:
        if not fft.reliable:
            ring = (
                f"no skyrmion-lattice ring found in the power spectrum (confidence "
                f"{fft.confidence:.2f}, significance {fft.significance:.1f})"
            )
            if pixel_size_nm is None:
                raise InputError(
                    f"{source}: no pixel size given or in the file, and {ring}; cannot choose "
                    "the scale: give the pixel size [nm] (--pixel-size-nm)"
                )
            raise InputError(
                f"{source}: the model records no training pixel size, and {ring}; cannot "
                "choose the scale for this image"
            )
        factor, method = float(train_nn) / fft.nn_distance_px, "fft_lattice"
        log.info(
            "%s: FFT lattice nearest-neighbour distance %.2f px, training %.2f px -> resample "
            "by %.4f",
            source,
            fft.nn_distance_px,
            train_nn,
            factor,
        )
    else:
        factor, method = 1.0, "none"
        log.warning("%s: the model records no training scale; the image is not resampled", source)
    new_shape = (max(1, round(shape[0] * factor)), max(1, round(shape[1] * factor)))
    if min(new_shape) < MIN_MODEL_SIZE_PX:
        raise InputError(
            f"{source}: after resampling by {factor:.3g} ({method}) the image is "
            f"{new_shape[0]}x{new_shape[1]} px, smaller than the model's receptive field "
            f"({MIN_MODEL_SIZE_PX} px per side); expected a larger image"
        )
    if new_shape[0] * new_shape[1] > MAX_MODEL_PIXELS:
        raise InputError(
            f"{source}: resampling by {factor:.3g} ({method}) would give a "
            f"{new_shape[0]}x{new_shape[1]} px image; check the pixel size"
        )
    return {
        "method": method,
        "factor": factor,
        "model_shape_px": list(new_shape),
        "model_pixel_size_nm": None if pixel_size_nm is None else pixel_size_nm / factor,
    }


# ----------------------------------------------------------------------------- segmentation
def segment_image(
    image: np.ndarray,
    predictor: PredictorLike,
    factor: float,
    *,
    tile_px: int = 256,
    overlap_px: int = 32,
    batch_size: int = 4,
    lowpass_sigma_px: float = 0.0,
    min_diameter_px: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Instance labels and foreground probability of a (row, col) image, on its own grid.

    The image is resampled by ``factor`` (skipped when |factor − 1| < 1e-6), normalised once
    by the model's normalisation with a Gaussian low-pass of ``lowpass_sigma_px`` (0: none)
    after its outlier and plane removal, predicted in tiles of
    ``tile_px`` with ``overlap_px`` overlap, decoded once on the stitched maps, cleared of
    instances narrower than ``min_diameter_px`` (:func:`~ltemfactory.instances.
    drop_undersized_instances`; 0: none) — all lengths [px at the model scale] — and brought
    back: labels by nearest neighbour (renumbered 1..N in raster order; an instance too small
    to survive the resize is dropped), the foreground probability bilinearly.

    Returns:
        (labels int32 (row, col), foreground probability float32 (row, col) in [0, 1]).
    """
    from skimage.segmentation import relabel_sequential
    from skimage.transform import resize

    from ltemfactory.training.predictor import decode_maps

    img = np.asarray(image, dtype=np.float32)
    resample = abs(float(factor) - 1.0) >= 1e-6
    model_img = resample_image(img, factor) if resample else img
    x = np.asarray(predictor.normalise(model_img, float(lowpass_sigma_px)), dtype=np.float32)
    multiple = _multiple(predictor)
    if tile_px % multiple:
        raise InputError(f"tile_px: expected a multiple of the network's {multiple}, got {tile_px}")
    maps = predict_tiled(
        x,
        predictor.maps,
        tile_px=tile_px,
        overlap_px=overlap_px,
        multiple=multiple,
        batch_size=batch_size,
    )
    labels = decode_maps(maps, predictor.formulation, predictor.decode, min_diameter_px)
    labels = labels.astype(np.int32)
    fg = maps["foreground"]
    if resample:
        labels = resize_labels(labels, img.shape)
        labels = relabel_sequential(labels)[0].astype(np.int32)
        fg = resize(fg, img.shape, order=1, mode="edge", anti_aliasing=False).astype(np.float32)
    return labels, np.clip(fg, 0.0, 1.0)


# ----------------------------------------------------------------------------- lattice
def _site_order(
    pts: np.ndarray, shape: tuple[int, int], margin: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-site Delaunay coordination z, ψ6 (complex) and interior flag (as lattice_statistics).

    ψ6_j = (1/z_j) Σ_k exp(6iθ_jk) over the Delaunay neighbours k of j; interior: at least
    ``margin`` from the border with a bounded Voronoi cell inside the image.
    """
    from scipy.spatial import Delaunay, QhullError

    from ltemfactory.inference.lattice import _voronoi_inside

    n = len(pts)
    z = np.zeros(n, dtype=np.int64)
    psi = np.full(n, np.nan + 0j)
    interior = np.zeros(n, dtype=bool)
    if n < 3:
        return z, psi, interior
    try:
        indptr, indices = Delaunay(pts).vertex_neighbor_vertices
        inside = _voronoi_inside(pts, shape)
    except QhullError:
        return z, psi, interior
    z = np.diff(indptr)
    src = np.repeat(np.arange(n), z)
    d = pts[indices] - pts[src]
    bonds = np.exp(6j * np.arctan2(d[:, 0], d[:, 1]))
    psi = (
        np.bincount(src, weights=bonds.real, minlength=n)
        + 1j * np.bincount(src, weights=bonds.imag, minlength=n)
    ) / np.maximum(z, 1)
    rows, cols = shape
    d_border = np.minimum.reduce(
        [pts[:, 0] + 0.5, rows - 0.5 - pts[:, 0], pts[:, 1] + 0.5, cols - 0.5 - pts[:, 1]]
    )
    interior = inside & (d_border >= margin)
    return z, psi, interior


def count_check(
    shape: tuple[int, int],
    fft_nn_distance_px: float | None,
    n_instances: int,
    n_touching_border: int,
    median_nn_distance_px: float | None,
    median_bond_length_px: float | None = None,
) -> dict[str, Any]:
    """Self-consistency of a segmentation with the image's own lattice constant.

    * Count: a hexagonal lattice of nearest-neighbour distance a puts N = A·2/(√3 a²) sites in
      an image of area A [px²]. The detected count is the number of instances with those
      touching the border weighted ½ (a border instance's site lies inside or outside the
      image with equal chance, so this estimates the number of sites inside), compared with N.
    * Spacing: the median nearest-neighbour distance of the detected centroids against a
      (within :data:`NN_TOLERANCE`), and, reported without a tolerance, the median Delaunay
      bond length against a. Scatter of the centroids (lattice disorder and localisation
      error alike) shortens the nearest-neighbour distance but hardly the bond length, and
      missing sites lengthen the bonds (:func:`~ltemfactory.inference.lattice.
      lattice_statistics`), so the two together tell scatter from missed sites.

    Returns:
        ``expected_count``, ``detected_count`` (border-weighted), ``n_instances``,
        ``n_touching_border``, ``count_rel_diff`` (detected/expected − 1), ``count_ok``
        (|diff| ≤ :data:`COUNT_TOLERANCE`), ``median_nn_distance_px``,
        ``fft_nn_distance_px``, ``nn_rel_diff``, ``nn_ok`` (≤ :data:`NN_TOLERANCE`),
        ``median_bond_length_px``, ``bond_rel_diff``; None where a length is unknown.
    """
    rows, cols = shape
    a = _positive(fft_nn_distance_px)
    detected = (n_instances - n_touching_border) + 0.5 * n_touching_border
    expected = rows * cols * 2.0 / (_SQRT3 * a * a) if a is not None else None
    count_diff = detected / expected - 1.0 if expected else None
    med = _positive(median_nn_distance_px)
    nn_diff = med / a - 1.0 if (a is not None and med is not None) else None
    bond = _positive(median_bond_length_px)
    bond_diff = bond / a - 1.0 if (a is not None and bond is not None) else None
    return {
        "expected_count": expected,
        "detected_count": detected,
        "n_instances": int(n_instances),
        "n_touching_border": int(n_touching_border),
        "count_rel_diff": count_diff,
        "count_tolerance": COUNT_TOLERANCE,
        "count_ok": None if count_diff is None else abs(count_diff) <= COUNT_TOLERANCE,
        "fft_nn_distance_px": a,
        "median_nn_distance_px": med,
        "nn_rel_diff": nn_diff,
        "nn_tolerance": NN_TOLERANCE,
        "nn_ok": None if nn_diff is None else abs(nn_diff) <= NN_TOLERANCE,
        "median_bond_length_px": bond,
        "bond_rel_diff": bond_diff,
    }


def _psi6_png(
    path: Path,
    image: np.ndarray,
    labels: np.ndarray,
    psi_abs: np.ndarray,
    interior: np.ndarray,
    z: np.ndarray,
    centroids: np.ndarray,
    title: str,
) -> None:
    """Skyrmions coloured by |ψ6| (viridis; border sites faint), 5-/7-fold interior sites
    marked; at most 1024 px on the long side plus a colour bar."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    rows, cols = labels.shape
    scale = min(1.0, 1024.0 / max(rows, cols))
    # composite at display resolution (nearest-neighbour subsampling): cheap for large images
    r_idx = np.minimum((np.arange(max(1, round(rows * scale))) + 0.5) / scale, rows - 1)
    c_idx = np.minimum((np.arange(max(1, round(cols * scale))) + 0.5) / scale, cols - 1)
    r_idx, c_idx = r_idx.astype(np.int64), c_idx.astype(np.int64)
    img = np.asarray(image, dtype=np.float64)
    lo, hi = np.percentile(img, [1.0, 99.0])
    small = img[np.ix_(r_idx, c_idx)]
    grey = np.clip((small - lo) / (hi - lo), 0, 1) if hi > lo else np.full(small.shape, 0.5)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    cmap = colormaps["viridis"]
    norm = Normalize(0.0, 1.0)
    if len(psi_abs):
        colour = np.zeros((len(psi_abs) + 1, 4))
        colour[1:] = cmap(norm(np.nan_to_num(psi_abs, nan=0.0)))
        colour[1:, 3] = np.where(interior, 0.75, 0.25)
        rgba = colour[labels[np.ix_(r_idx, c_idx)]]
        alpha = rgba[..., 3:]
        rgb = rgb * (1.0 - alpha) + rgba[..., :3] * alpha
    dpi = 100.0
    w_in, h_in = cols * scale / dpi, rows * scale / dpi
    fig = Figure(figsize=(w_in + 1.3, h_in + 0.4), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes(
        (0.1 / (w_in + 1.3), 0.05 / (h_in + 0.4), w_in / (w_in + 1.3), h_in / (h_in + 0.4))
    )
    ax.imshow(rgb, interpolation="nearest", extent=(-0.5, cols - 0.5, rows - 0.5, -0.5))
    for k, (marker, colour_) in {5: ("o", "red"), 7: ("s", "deepskyblue")}.items():
        sel = interior & (z == k)
        if sel.any():
            ax.plot(
                centroids[sel, 1],
                centroids[sel, 0],
                marker,
                markerfacecolor="none",
                markeredgecolor=colour_,
                markersize=max(3.0, 6.0 * scale * min(rows, cols) / 512),
                markeredgewidth=1.2,
                linestyle="none",
                label=f"{k}-fold",
            )
    if (interior & ((z == 5) | (z == 7))).any():
        ax.legend(loc="lower right", fontsize=7, framealpha=0.6)
    ax.set_axis_off()
    ax.set_title(title, fontsize=8)
    cax = fig.add_axes(((w_in + 0.3) / (w_in + 1.3), 0.1, 0.2 / (w_in + 1.3), 0.8))
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax)
    bar.set_label("|ψ6|")
    with atomic_path(path) as tmp:
        canvas.print_png(str(tmp))


# ----------------------------------------------------------------------------- per image
@contextlib.contextmanager
def _atomic_dir(dest: Path) -> Iterator[Path]:
    """Yield a hidden temporary directory beside ``dest``; rename it to ``dest`` on success
    (an existing ``dest`` is replaced). On error the temporary directory is removed."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    tmp.mkdir()
    try:
        yield tmp
        if dest.exists():
            old = dest.with_name(f".{dest.name}.{os.getpid()}-{secrets.token_hex(4)}.old")
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _check_tiling(tile_px: int, overlap_px: int) -> None:
    for name, value, low in (
        ("tile_px", tile_px, MIN_MODEL_SIZE_PX),
        ("overlap_px", overlap_px, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise InputError(f"{name}: expected an integer >= {low}, got {value!r}")
    if 2 * overlap_px > tile_px:
        raise InputError(
            f"overlap_px: expected at most tile_px/2 = {tile_px // 2}, got {overlap_px}"
        )


def _check_angle(tilt_axis_deg: float | None) -> float | None:
    if tilt_axis_deg is None:
        return None
    v = float(tilt_axis_deg)
    if not math.isfinite(v):
        raise InputError(f"tilt_axis_deg: expected a finite angle [deg], got {tilt_axis_deg!r}")
    return v


def _process(
    img: LtemImage,
    predictor: PredictorLike,
    dest: Path,
    *,
    tilt_axis_deg: float | None,
    tile_px: int,
    overlap_px: int,
    batch_size: int,
    lowpass_sigma_a: float,
    min_diameter_fraction: float,
) -> dict[str, Any]:
    start = time.perf_counter()
    name = dest.name
    source = f"{img.source}" + (
        f" (frame {img.metadata.get('frame', 0)})" if img.metadata.get("n_frames", 1) > 1 else ""
    )
    shape = img.shape
    px = img.pixel_size_nm
    fft = estimate_lattice_period_px(img.data)
    mscale = model_scale(predictor)
    decision = choose_scale(shape, px, fft, mscale, source)
    priors = size_priors(mscale, lowpass_sigma_a, min_diameter_fraction)
    labels, fg = segment_image(
        img.data,
        predictor,
        decision["factor"],
        tile_px=tile_px,
        overlap_px=overlap_px,
        batch_size=batch_size,
        lowpass_sigma_px=priors["lowpass_sigma_model_px"] or 0.0,
        min_diameter_px=priors["min_diameter_model_px"] or 0.0,
    )
    scale = {
        **decision,
        "shape_px": list(shape),
        "pixel_size_nm": px,
        "pixel_size_source": img.metadata.get("pixel_size_source") if px else None,
        **mscale,
        "fft_nn_distance_px": fft.nn_distance_px if fft.reliable else None,
        "tilt_axis_deg": tilt_axis_deg,
        "rotation_deg": 0.0,
        "rotation_note": ROTATION_NOTE,
        **priors,
    }

    rows = instance_rows(labels, px, img.data)
    ids = np.array([r["instance_id"] for r in rows], dtype=np.int64)
    centroids = np.array(
        [[r["centroid_row_px"], r["centroid_col_px"]] for r in rows], dtype=np.float64
    ).reshape(-1, 2)
    if len(ids):
        from scipy import ndimage

        confidence = np.asarray(ndimage.mean(fg, labels, ids), dtype=np.float64)
    else:
        confidence = np.zeros(0)
    margin = 0.0
    if len(centroids) >= 2:
        from scipy.spatial import cKDTree

        margin = float(np.median(cKDTree(centroids).query(centroids, k=2)[0][:, 1]))
    stats = lattice_statistics(centroids, shape, px, exclude_border_px=margin)
    z, psi, interior = _site_order(centroids, shape, margin)
    for j, row in enumerate(rows):
        finite = bool(np.isfinite(psi[j]))
        row["confidence"] = float(confidence[j])
        row["coordination"] = int(z[j])
        row["psi6_abs"] = float(abs(psi[j])) if finite else None
        row["psi6_angle_deg"] = (
            float(math.degrees(np.angle(psi[j])) / 6.0 % 60.0) if finite else None
        )
        row["lattice_interior"] = bool(interior[j])
    n_border = sum(bool(r["touches_border"]) for r in rows)
    check = count_check(
        shape,
        fft.nn_distance_px if fft.reliable else None,
        len(rows),
        n_border,
        stats.get("nn_distance_median_px"),
        stats.get("bond_length_median_px"),
    )
    fft_info = fft.to_dict()
    for key in ("period_px", "nn_distance_px"):
        v = fft_info.get(key)
        fft_info[key.replace("_px", "_nm")] = None if (px is None or v is None) else v * px
    lattice = {
        "image": img.source,
        "frame": img.metadata.get("frame", 0),
        "n_frames": img.metadata.get("n_frames", 1),
        "shape_px": list(shape),
        "pixel_size_nm": px,
        "n_instances": len(rows),
        "scale": scale,
        "fft": fft_info,
        "statistics": stats,
        "self_consistency": check,
        "mean_confidence": float(confidence.mean()) if len(confidence) else None,
        "psi6_per_skyrmion": f"{OUTPUT_FILES['instances']} columns psi6_abs, psi6_angle_deg",
    }

    title = f"{name}: {len(rows)} skyrmions"
    with _atomic_dir(dest) as tmp:
        write_label_tiff(tmp / OUTPUT_FILES["labels"], labels, px)
        write_instance_csv(
            tmp / OUTPUT_FILES["instances"], rows, columns=(*INSTANCE_COLUMNS, *EXTRA_COLUMNS)
        )
        overlay_png(tmp / OUTPUT_FILES["overlay"], img.data, labels, pixel_size_nm=px, title=title)
        _psi6_png(
            tmp / OUTPUT_FILES["psi6_map"],
            img.data,
            labels,
            np.abs(psi),
            interior,
            z,
            centroids,
            f"{name}: |ψ6| per skyrmion (global ψ6 = {_fmt(stats.get('psi6_global'))})",
        )
        write_json(tmp / OUTPUT_FILES["lattice"], lattice)
    seconds = time.perf_counter() - start
    log.info(
        "%s: %d skyrmions (%s, factor %.3f); expected %s from the FFT lattice constant -> %s",
        source,
        len(rows),
        decision["method"],
        decision["factor"],
        _fmt(check["expected_count"]),
        dest,
    )
    return {
        "status": "ok",
        "output_dir": name,
        "files": {k: f"{name}/{v}" for k, v in OUTPUT_FILES.items()},
        "n_instances": len(rows),
        "scale_method": decision["method"],
        "scale_factor": decision["factor"],
        "pixel_size_nm": px,
        "fft_nn_distance_px": check["fft_nn_distance_px"],
        "median_nn_distance_px": check["median_nn_distance_px"],
        "expected_count": check["expected_count"],
        "detected_count": check["detected_count"],
        "count_rel_diff": check["count_rel_diff"],
        "count_ok": check["count_ok"],
        "nn_rel_diff": check["nn_rel_diff"],
        "nn_ok": check["nn_ok"],
        "bond_rel_diff": check["bond_rel_diff"],
        "psi6_global": stats.get("psi6_global"),
        "fraction_6fold": stats.get("fraction_6fold"),
        "mean_confidence": lattice["mean_confidence"],
        "seconds": seconds,
    }


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):.3g}"


def _frame_name(stem: str, frame: int, n_frames: int) -> str:
    if n_frames <= 1:
        return stem
    return f"{stem}_frame{frame:0{len(str(n_frames - 1))}d}"


def infer_image(
    path: str | os.PathLike[str],
    predictor: PredictorLike,
    out_dir: str | os.PathLike[str],
    *,
    pixel_size_nm: float | None = None,
    tilt_axis_deg: float | None = None,
    tile_px: int = 256,
    overlap_px: int = 32,
    frame: int = 0,
    batch_size: int = 4,
    name: str | None = None,
    lowpass_sigma_a: float = LOWPASS_SIGMA_A,
    min_diameter_fraction: float = MIN_DIAMETER_FRACTION,
) -> dict[str, Any]:
    """Segment and measure one frame of one image; write ``out_dir/<name>/`` atomically.

    Args:
        path: image file (see :func:`~ltemfactory.inference.readers.read_image`).
        predictor: a loaded model (:func:`load_predictor`).
        out_dir: run directory; the image's files go to its sub-directory ``name``.
        pixel_size_nm: pixel size [nm]; overrides the file's calibration.
        tilt_axis_deg: tilt-axis azimuth [deg] from +x toward +y; recorded only (module docs).
        tile_px: tile side [px at the model scale], a multiple of the network's multiple.
        overlap_px: tile overlap [px at the model scale], at most ``tile_px / 2``.
        frame: 0-based frame of a stack.
        batch_size: tiles per network call.
        name: output sub-directory; default the file's stem, plus ``_frame<k>`` for a stack.
        lowpass_sigma_a: Gaussian low-pass before segmentation, sigma in units of the training
            lattice constant (:data:`LOWPASS_SIGMA_A`; 0: none).
        min_diameter_fraction: drop instances narrower than this fraction of the training
            skyrmion diameter, unless cut by the border (:data:`MIN_DIAMETER_FRACTION`; 0: none).

    Returns:
        The per-image summary (status ``ok``, output files relative to ``out_dir``, count,
        scale decision, self-consistency checks, seconds).

    Raises:
        InputError: bad file or arguments; nothing is written then.
    """
    _check_tiling(tile_px, overlap_px)
    _check_priors(lowpass_sigma_a, min_diameter_fraction)
    tilt = _check_angle(tilt_axis_deg)
    img = read_image(path, frame=frame, pixel_size_nm=pixel_size_nm)
    if name is None:
        name = _frame_name(Path(path).stem, frame, int(img.metadata.get("n_frames", 1)))
    entry = _process(
        img,
        predictor,
        Path(out_dir) / name,
        tilt_axis_deg=tilt,
        tile_px=tile_px,
        overlap_px=overlap_px,
        batch_size=batch_size,
        lowpass_sigma_a=lowpass_sigma_a,
        min_diameter_fraction=min_diameter_fraction,
    )
    return {"file": str(path), "frame": frame, **entry}


def _remove_stale(dest: Path) -> None:
    """Remove an earlier run's output directory of a now failed image (only if it is ours)."""
    if dest.is_dir() and (dest / OUTPUT_FILES["lattice"]).is_file():
        log.info("removing the earlier output %s of a failed image", dest)
        shutil.rmtree(dest, ignore_errors=True)


def _unique(name: str, used: set[str]) -> str:
    out, k = name, 2
    while out in used or out == SUMMARY_FILE:
        out, k = f"{name}-{k}", k + 1
    used.add(out)
    return out


def infer_images(
    paths: Sequence[str | os.PathLike[str]],
    model: PredictorLike | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    pixel_size_nm: float | None = None,
    tilt_axis_deg: float | None = None,
    tile_px: int = 256,
    overlap_px: int = 32,
    frame: int | None = None,
    batch_size: int = 4,
    device: str = "cpu",
    tracking_uri: str | None = None,
    lowpass_sigma_a: float = LOWPASS_SIGMA_A,
    min_diameter_fraction: float = MIN_DIAMETER_FRACTION,
) -> dict[str, Any]:
    """Run :func:`infer_image` on every image (every frame of a stack unless ``frame`` picks
    one) and write ``out_dir/summary.json``.

    An :class:`InputError` of one image is logged and recorded (``status: error`` with the file
    name and message, also listed under ``failed``); the run goes on. Bad arguments or an
    unloadable model raise before anything is written.

    Args:
        paths: image files.
        model: a loaded predictor, or what :func:`load_predictor` accepts.
        out_dir: output directory (created); one sub-directory per image frame.
        frame: process only this frame of each file (None: every frame).
        device, tracking_uri: for :func:`load_predictor`.
        pixel_size_nm, tilt_axis_deg, tile_px, overlap_px, batch_size, lowpass_sigma_a,
        min_diameter_fraction: see :func:`infer_image`.

    Returns:
        The summary written to ``summary.json``: ``model``, ``settings``, ``images`` (one entry
        per frame or failed file), ``failed``, ``n_ok``, ``n_failed``, ``seconds``.
    """
    start = time.perf_counter()
    _check_tiling(tile_px, overlap_px)
    _check_priors(lowpass_sigma_a, min_diameter_fraction)
    tilt = _check_angle(tilt_axis_deg)
    if pixel_size_nm is not None and _positive(pixel_size_nm) is None:
        raise InputError(f"pixel_size_nm: expected a positive length [nm], got {pixel_size_nm!r}")
    if frame is not None and (isinstance(frame, bool) or not isinstance(frame, int) or frame < 0):
        raise InputError(f"frame: expected a non-negative integer or None, got {frame!r}")
    if not paths:
        raise InputError("images: expected at least one image file")
    if isinstance(model, str | os.PathLike):
        predictor = load_predictor(model, tracking_uri=tracking_uri, device=device)
    else:
        predictor = model
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "pixel_size_nm": pixel_size_nm,
        "tilt_axis_deg": tilt,
        "tile_px": tile_px,
        "overlap_px": overlap_px,
        "frame": frame,
        "frames": "all" if frame is None else "one",
        "batch_size": batch_size,
        "lowpass_sigma_a": lowpass_sigma_a,
        "min_diameter_fraction": min_diameter_fraction,
    }
    meta = dict(getattr(predictor, "metadata", {}) or {})
    model_info = {
        "source": meta.get("source")
        or (os.fspath(model) if isinstance(model, str | os.PathLike) else None),
        "run_id": meta.get("run_id"),
        "model_uri": meta.get("model_uri"),
        "formulation": predictor.formulation,
        "decode": dict(predictor.decode),
        **model_scale(predictor),
    }

    images: list[dict[str, Any]] = []
    used: set[str] = set()
    kwargs = {
        "tilt_axis_deg": tilt,
        "tile_px": tile_px,
        "overlap_px": overlap_px,
        "lowpass_sigma_a": lowpass_sigma_a,
        "min_diameter_fraction": min_diameter_fraction,
    }
    for path in paths:
        path = Path(path)
        first_frame = 0 if frame is None else frame
        try:
            first = read_image(path, frame=first_frame, pixel_size_nm=pixel_size_nm)
        except InputError as exc:
            log.error("%s", exc)
            _remove_stale(out / path.stem)
            images.append(_error_entry(path, frame, exc))
            continue
        n_frames = int(first.metadata.get("n_frames", 1))
        frames = range(n_frames) if frame is None else [frame]
        if n_frames > 1:
            log.info(
                "%s: %d frames; processing %s",
                path,
                n_frames,
                "all" if frame is None else f"frame {frame}",
            )
        for k in frames:
            name = _unique(_frame_name(path.stem, k, n_frames), used)
            try:
                img = (
                    first
                    if k == first_frame
                    else read_image(path, frame=k, pixel_size_nm=pixel_size_nm)
                )
                entry = _process(img, predictor, out / name, batch_size=batch_size, **kwargs)
            except InputError as exc:
                log.error("%s", exc)
                _remove_stale(out / name)
                images.append(_error_entry(path, k, exc, name))
                continue
            images.append({"file": str(path), "frame": k, "n_frames": n_frames, **entry})

    failed = [
        {"file": e["file"], "frame": e["frame"], "error": e["error"]}
        for e in images
        if e["status"] == "error"
    ]
    summary = {
        "model": model_info,
        "settings": settings,
        "n_images": len(images),
        "n_ok": len(images) - len(failed),
        "n_failed": len(failed),
        "images": images,
        "failed": failed,
        "seconds": time.perf_counter() - start,
    }
    write_json(out / SUMMARY_FILE, summary)
    if failed:
        log.warning(
            "%d of %d image(s) failed; see %s", len(failed), len(images), out / SUMMARY_FILE
        )
    return to_jsonable(summary)


def _error_entry(path: Path, frame: int | None, exc: Exception, name: str | None = None) -> dict:
    return {
        "file": str(path),
        "frame": frame,
        "status": "error",
        "output_dir": None,
        "name": name or path.stem,
        "error": str(exc),
    }
