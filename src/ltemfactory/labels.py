"""Ground-truth instance labels of simulated LTEM images (physics.md §6).

A skyrmion (or bubble) *instance* is one connected region of reversed core: the cells where the
layer-mean m_z is reversed relative to the background, m_z·b < threshold with b = ±1 the
background sign (threshold 0: the m_z = 0 contour). Regions are found with
:func:`ltemfactory.micromagnetics.topology.label_periodic` (4-connectivity), joined across the
periodic edges of the sample.

Frames. The *sample frame* is the (ny, nx) micromagnetic grid (periodic). The *image frame* is
the (ny, nx) lab pixel grid of the simulated LTEM image of the tilted film; a sample-frame label
map is carried into it with :meth:`ProjectionGeometry.sample_to_image` (nearest neighbour, the
mid-plane projection with exactly the foreshortening of the simulated image). The image is a
finite window onto the infinite periodic tilted film, so **image-frame instances are never
joined across the image border** (whatever the tilt): every connected piece of the image (4-
connectivity, pixels of one sample instance only) is its own instance; a sample instance may
appear more than once (the window spans more than one projected period) or be cut by the border
(``touches_border``). Untilted images may ask for ``periodic=True`` to recover the sample frame.

Topological charge. The Berg–Lüscher plaquette density of a skyrmion sits in its wall, half of
it outside the m_z = 0 contour, so summing over the core alone does not give ±1. The charge of an
instance is therefore the sum of the density over its *catchment*: every cell belongs to its
nearest instance (Euclidean, periodic in the sample frame), so the instance charges add up to the
total charge. In the image frame an instance carries the charge of the whole sample instance it
shows (computed in the sample frame and mapped by id): a piece cut by the border, or a repeat,
reports the charge of the full object.

Kinds (:func:`classify`): a skyrmion is a reversed region of charge |Q| ≈ 1 *without holes*
(its core is a disc); a trivial bubble a round, hole-free region of Q ≈ 0; anything else —
stripes, labyrinths, merged regions, rings around holes — is ``other``.

The labels mark the magnetic core, not the contrast: in a tilted image of a Néel skyrmion the
foreshortened radial wall moment gains a curl, which displaces the dark/bright lobe pair from
the projected core by roughly 1.3·w·tan α perpendicular to the tilt axis (w the wall width,
α the tilt; about 1 px for w = 4 nm, α = 20°, 2 nm pixels).

Arrays are (..., row, col); x runs along columns, y along rows; pixel (row, col) has its centre
at x = (col + 0.5)·px, y = (row + 0.5)·px (the convention of
:mod:`ltemfactory.micromagnetics.initial`). Angles are measured from +x toward +y (counter-
clockwise in a plot with ``origin="lower"``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from skimage.measure import label as _cc_label

from ltemfactory.errors import InputError
from ltemfactory.instances import touches_border
from ltemfactory.ltem.geometry import ProjectionGeometry, Tilt
from ltemfactory.micromagnetics.topology import charge_density, reversed_domains
from ltemfactory.stores import open_store

__all__ = [
    "KIND_CODES",
    "ROUNDNESS_MIN",
    "SKYRMION_Q_TOLERANCE",
    "TABLE_COLUMNS",
    "boundary_class",
    "classify",
    "image_geometry",
    "image_instances",
    "instance_charges",
    "instance_holes",
    "instance_table",
    "label_render_store",
    "region_ellipses",
    "sample_instances",
    "semantic_mask",
]

KIND_CODES = {"other": 0, "skyrmion": 1, "bubble": 2}
"""Integer code of each instance kind (for Zarr storage)."""

SKYRMION_Q_TOLERANCE = 0.5
"""An instance is a skyrmion when ||Q| − 1| < this; a (trivial) bubble needs |Q| < this."""

ROUNDNESS_MIN = 0.5
"""A trivial bubble must be round: ellipse minor/major axis ratio above this."""

TABLE_COLUMNS = {
    "image_index": np.int64,
    "instance_id": np.int32,
    "centroid_row_px": np.float64,
    "centroid_col_px": np.float64,
    "centroid_x_nm": np.float64,
    "centroid_y_nm": np.float64,
    "area_nm2": np.float64,
    "equivalent_radius_nm": np.float64,
    "major_axis_nm": np.float64,
    "minor_axis_nm": np.float64,
    "orientation_deg": np.float64,
    "topological_charge": np.float64,
    "holes": np.int32,
    "touches_border": np.bool_,
    "kind": np.dtype("<U8"),
    "kind_code": np.int8,
}
"""Columns of :func:`instance_table` and their dtypes (one row per instance)."""


# ---------------------------------------------------------------------------- sample frame
def _background_sign(mz: np.ndarray, background: float | None) -> float:
    if background is None:
        return 1.0 if float(np.mean(mz)) >= 0 else -1.0
    return 1.0 if background >= 0 else -1.0


def sample_instances(
    mz: np.ndarray,
    periodic: bool = True,
    background: float | None = None,
    threshold: float = 0.0,
) -> np.ndarray:
    """Instance labels of reversed cores in the sample frame.

    Args:
        mz: (ny, nx) layer-mean out-of-plane magnetisation m_z [1].
        periodic: join regions across the periodic edges of the grid.
        background: background direction (its sign is used); default the sign of mean(m_z),
            as in :func:`~ltemfactory.micromagnetics.topology.reversed_domains`.
        threshold: a cell is reversed where m_z·sign(background) < threshold (0: the m_z = 0
            contour; e.g. −0.5 keeps only the inner core).

    Returns:
        int32 (ny, nx): 0 background, instances 1..N in raster order of first appearance.
    """
    mz = np.asarray(mz, dtype=np.float64)
    if mz.ndim != 2:
        raise InputError(f"mz: expected (ny, nx), got shape {mz.shape}")
    b = _background_sign(mz, background)
    labels, _, _ = reversed_domains(mz * b - threshold, periodic, background=1.0)
    return labels.astype(np.int32, copy=False)


def _layer_mean(m: np.ndarray, ms: np.ndarray | None = None) -> np.ndarray:
    """Normalised layer mean (3, ny, nx) of m (3, nz, ny, nx); 0 where no layer is magnetic."""
    m = np.asarray(m, dtype=np.float64)
    if ms is not None:
        m = m * (np.asarray(ms) > 0)[None]
    mean = m.mean(axis=1)
    norm = np.linalg.norm(mean, axis=0, keepdims=True)
    return np.divide(mean, norm, out=np.zeros_like(mean), where=norm > 0)


def _catchment(labels: np.ndarray, periodic: bool) -> np.ndarray:
    """Every cell assigned to its nearest instance (Euclidean; periodic: minimum image)."""
    labels = np.asarray(labels)
    if not (labels > 0).any():
        return np.zeros_like(labels)
    if not (labels == 0).any():
        return labels
    ny, nx = labels.shape
    if periodic:
        # the nearest periodic image lies within half a period along each axis
        py, px = ny // 2 + 1, nx // 2 + 1
        work = np.pad(labels, ((py, py), (px, px)), mode="wrap")
    else:
        py = px = 0
        work = labels
    _, (ir, ic) = ndimage.distance_transform_edt(work == 0, return_indices=True)
    near = work[ir, ic]
    return near[py : py + ny, px : px + nx]


def instance_charges(
    labels: np.ndarray, charge_density: np.ndarray, periodic: bool = False
) -> np.ndarray:
    """Topological charge of every instance, (N,) float64 for labels 1..N.

    Sum of the plaquette density (e.g. :func:`~ltemfactory.micromagnetics.topology.
    charge_density`, same (ny, nx) frame; plaquette (r, c) is attributed to cell (r, c)) over each
    instance's catchment: every cell belongs to its nearest instance (periodic minimum image
    when ``periodic``), so the charges add up to the total charge of the map.
    """
    labels = np.asarray(labels)
    rho = np.asarray(charge_density, dtype=np.float64)
    if rho.shape != labels.shape:
        raise InputError(
            f"charge_density: expected the labels' shape {labels.shape}, got {rho.shape}"
        )
    n = int(labels.max(initial=0))
    if n == 0:
        return np.zeros(0)
    catch = _catchment(labels, periodic)
    return np.bincount(catch.ravel(), weights=rho.ravel(), minlength=n + 1)[1:]


# ---------------------------------------------------------------------------- image frame
def image_geometry(
    shape_zyx: tuple[int, int, int],
    cell_size_nm: float,
    thickness_nm: float,
    tilt_deg: float = 0.0,
    tilt_axis_deg: float = 0.0,
) -> ProjectionGeometry:
    """The projection used for an image of the render stage, without simulating it.

    Same construction as :func:`ltemfactory.render.render_store` (square cells of
    ``cell_size_nm``, layer thickness ``thickness_nm``/nz, ``Tilt.about_axis(tilt_deg,
    tilt_axis_deg)``, axis azimuth from +x toward +y), so it is the very (cached) geometry of
    the simulated image.
    """
    nz = int(shape_zyx[0])
    dx = float(np.float64(cell_size_nm) * 1e-9)
    cell = (dx, dx, float(np.float64(thickness_nm) * 1e-9) / nz)
    return ProjectionGeometry.cached(shape_zyx, cell, Tilt.about_axis(tilt_deg, tilt_axis_deg))


def _relabel_raster(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ids 1..K in raster order of first appearance; returns (labels int32, old id of each)."""
    flat = labels.ravel()
    _, first = np.unique(flat, return_index=True)
    order = flat[np.sort(first)]
    order = order[order != 0]
    lut = np.zeros(int(flat.max(initial=0)) + 1, dtype=np.int32)
    lut[order] = np.arange(1, len(order) + 1, dtype=np.int32)
    return lut[labels], order


def image_instances(
    sample_labels: np.ndarray,
    geometry: ProjectionGeometry,
    *,
    periodic: bool = False,
    return_sources: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Instance labels on the LTEM image grid of ``geometry``.

    The sample-frame labels (ny, nx) are carried into the image frame with
    ``geometry.sample_to_image(order=0)`` (nearest neighbour; the same pixel grid and tilt
    projection as the simulated image). Every connected piece (4-connectivity) made of pixels of
    one sample instance becomes its own image instance, numbered 1..K in raster order; sample
    instances that do not survive the resampling are dropped.

    Args:
        sample_labels: (ny, nx) int sample-frame labels (0 background).
        geometry: the image's :class:`ProjectionGeometry` (e.g. ``LtemImages.geometry`` or
            :func:`image_geometry`).
        periodic: join pieces across the image border. Only meaningful, and only allowed, for an
            untilted geometry (there the image is the periodic sample grid); by default the
            image is treated as a finite window.
        return_sources: also return, for each image instance, the sample instance it shows.

    Returns:
        int32 (ny, nx) labels, or (labels, sources (K,) int32) with ``return_sources``.
    """
    sample_labels = np.asarray(sample_labels)
    if sample_labels.shape != (geometry.ny, geometry.nx):
        raise InputError(
            f"sample_labels: expected the geometry's grid {(geometry.ny, geometry.nx)}, "
            f"got {sample_labels.shape}"
        )
    if periodic and not geometry.is_identity:
        raise InputError("image_instances: periodic=True needs an untilted geometry")
    warped = geometry.sample_to_image(torch.from_numpy(sample_labels.astype(np.int64)), order=0)
    warped = np.array(warped.numpy(), copy=True)
    if periodic:
        # untilted: the image is the sample grid, whose instances are already periodic regions
        pieces = warped
    else:
        pieces = _cc_label(warped, background=0, connectivity=1)
    labels, old = _relabel_raster(pieces)
    if not return_sources:
        return labels
    sources = np.zeros(len(old), dtype=np.int32)
    if len(old):
        flat_pieces, flat_src = pieces.ravel(), warped.ravel()
        src_of = np.zeros(int(flat_pieces.max()) + 1, dtype=np.int64)
        src_of[flat_pieces] = flat_src
        sources = src_of[old].astype(np.int32)
    return labels, sources


# ---------------------------------------------------------------------------- measurements
def classify(
    charge: np.ndarray,
    major_axis: np.ndarray,
    minor_axis: np.ndarray,
    holes: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Instance kinds from topological charge Q, ellipse axes (any common length unit) and the
    number of holes of the reversed region (:func:`instance_holes`; ``None``: none).

    * ``skyrmion``: ||Q| − 1| < 0.5 and no hole (a skyrmion or antiskyrmion of either polarity,
      any shape: its reversed core is a disc, however deformed);
    * ``bubble``: |Q| < 0.5, no hole and round (minor/major > 0.5; a single pixel counts as
      round) — a topologically trivial bubble;
    * ``other``: everything else: |Q| ≥ 1.5 merged/biskyrmion regions, elongated trivial
      domains and stripes, domains with holes (a ring around one hole has Q ≈ 0, a domain
      around two holes Q ≈ ∓1 like a skyrmion, yet neither is one), and instances of unknown
      (NaN) charge.

    Returns (kind strings ``<U8``, codes int8 per :data:`KIND_CODES`).
    """
    q = np.abs(np.asarray(charge, dtype=np.float64))
    major = np.asarray(major_axis, dtype=np.float64)
    minor = np.asarray(minor_axis, dtype=np.float64)
    simple = np.ones(q.shape, bool) if holes is None else np.asarray(holes) == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        round_ = np.where(major > 0, minor / np.where(major > 0, major, 1.0), 1.0) > ROUNDNESS_MIN
        skyrmion = (np.abs(q - 1.0) < SKYRMION_Q_TOLERANCE) & simple
        bubble = ~skyrmion & (q < SKYRMION_Q_TOLERANCE) & round_ & simple
    code = np.where(skyrmion, KIND_CODES["skyrmion"], KIND_CODES["other"])
    code = np.where(bubble, KIND_CODES["bubble"], code).astype(np.int8)
    names = np.array(sorted(KIND_CODES, key=KIND_CODES.get), dtype="<U8")
    return names[code], code


def instance_holes(labels: np.ndarray, periodic: bool = False) -> np.ndarray:
    """Number of holes of each instance 1..N of ``labels`` (int32, (N,)).

    A hole is a piece of the instance's complement (8-connected, the dual of the instances'
    4-connectivity) that the instance encloses; what fills it (background, other instances)
    does not matter. On a periodic grid the instance is unwrapped across the edges first, so a
    disc cut by an edge has none; a region that wraps around the whole box (e.g. a stripe
    through it) is counted as laid out in the box.
    """
    labels = np.asarray(labels)
    n = int(labels.max(initial=0))
    if n == 0:
        return np.zeros(0, dtype=np.int32)
    rows, cols = _unwrapped_coordinates(labels) if periodic else np.indices(labels.shape)
    flat = labels.ravel()
    order = np.argsort(flat, kind="stable")
    starts = np.searchsorted(flat[order], np.arange(1, n + 2))
    r_all, c_all = rows.ravel()[order].astype(np.int64), cols.ravel()[order].astype(np.int64)
    eight = np.ones((3, 3), dtype=bool)
    holes = np.zeros(n, dtype=np.int32)
    for k in range(n):
        r, c = r_all[starts[k] : starts[k + 1]], c_all[starts[k] : starts[k + 1]]
        if r.size == 0:
            continue
        box = np.zeros((r.max() - r.min() + 3, c.max() - c.min() + 3), dtype=bool)
        box[r - r.min() + 1, c - c.min() + 1] = True  # a 1-px frame of complement around it
        holes[k] = ndimage.label(~box, structure=eight)[1] - 1
    return holes


def _unwrapped_coordinates(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row/col coordinates of every pixel, unwrapped per instance across the periodic edges.

    The rows (cols) occupied by a periodically connected region form a circular interval; it
    is cut at an unoccupied row (col). A region that occupies every row (col), e.g. a stripe
    through the box, is left as it is.
    """
    ny, nx = labels.shape
    rows, cols = np.indices(labels.shape, dtype=np.float64)
    for axis, coord, size in ((0, rows, ny), (1, cols, nx)):
        first = labels.take(0, axis=axis)
        last = labels.take(size - 1, axis=axis)
        for k in np.intersect1d(first[first > 0], last[last > 0]):
            mask = labels == k
            occupied = mask.any(axis=1 - axis)
            gaps = np.flatnonzero(~occupied)
            if len(gaps) == 0:
                continue
            g = gaps[0]
            shift = np.where(mask & (coord <= g), size, 0)
            coord += shift
    return rows, cols


def _empty_table() -> dict[str, np.ndarray]:
    return {k: np.zeros(0, dtype=t) for k, t in TABLE_COLUMNS.items()}


def instance_table(
    labels: np.ndarray,
    pixel_size_nm: float,
    *,
    charge_density: np.ndarray | None = None,
    charges: np.ndarray | None = None,
    holes: np.ndarray | None = None,
    periodic: bool = False,
    image_index: int = 0,
) -> dict[str, np.ndarray]:
    """Per-instance measurements of a label map, as columns (1-D arrays, one row per instance).

    Args:
        labels: (ny, nx) int labels 1..N (0 background), e.g. from :func:`sample_instances` or
            :func:`image_instances`.
        pixel_size_nm: pixel (cell) size [nm].
        charge_density: plaquette charge density (ny, nx) in the same frame as ``labels``; the
            charge of an instance is its catchment sum (:func:`instance_charges`). Use it in
            the sample frame.
        charges: the charges (N,) directly (overrides ``charge_density``); in the image frame
            pass the sample-frame charges of each instance's source (see
            :func:`image_instances` ``return_sources``). Without either, the charge is NaN and
            the kind ``other``.
        holes: the number of holes (N,) of each instance (:func:`instance_holes`), e.g. those
            of the sample-frame source of each image instance; default: counted in ``labels``.
        periodic: ``labels`` live on a periodic grid (sample frame): centroids and shapes of
            instances that straddle the edges are measured unwrapped (centroids reduced into
            the grid), catchments are periodic and nothing touches a border.
        image_index: value of the ``image_index`` column.

    Columns (see :data:`TABLE_COLUMNS`):
        image_index, instance_id (1..N); centroid_row_px, centroid_col_px [px, pixel indices];
        centroid_x_nm = (col + 0.5)·px, centroid_y_nm = (row + 0.5)·px [nm]; area_nm2 (pixel
        count·px²); equivalent_radius_nm = sqrt(area/π); major_axis_nm, minor_axis_nm: full axes
        of the ellipse with the same second moments (4·sqrt(eigenvalue), as
        ``skimage.measure.regionprops`` axis_major/minor_length); orientation_deg: angle of the
        major axis from +x (columns) toward +y (rows), in (−90, 90]; topological_charge; holes;
        touches_border (some pixel on the first/last row/col; always False when periodic);
        kind, kind_code (:func:`classify`).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"labels: expected integer (ny, nx), got {labels.dtype} {labels.shape}")
    n = int(labels.max(initial=0))
    if n == 0:
        return _empty_table()
    if labels.min() < 0:
        raise InputError("labels: expected non-negative ids")
    px = float(pixel_size_nm)
    ny, nx = labels.shape
    ellipses = region_ellipses(labels, *(_unwrapped_coordinates(labels) if periodic else ()))
    count = ellipses["count"]
    if np.any(count == 0):
        raise InputError("labels: ids must be contiguous 1..N")
    r0, c0 = ellipses["centroid_row_px"], ellipses["centroid_col_px"]
    major, minor = ellipses["major_axis_px"] * px, ellipses["minor_axis_px"] * px
    orientation = ellipses["orientation_deg"]
    if periodic:
        r0, c0 = np.mod(r0, ny), np.mod(c0, nx)
        border = np.zeros(n, dtype=bool)
    else:
        border = touches_border(labels)[1:]
    if charges is not None:
        q = np.asarray(charges, dtype=np.float64).reshape(-1)
        if q.shape != (n,):
            raise InputError(f"charges: expected {n} values, got {q.shape}")
    elif charge_density is not None:
        q = instance_charges(labels, charge_density, periodic)
    else:
        q = np.full(n, np.nan)
    if holes is None:
        holes = instance_holes(labels, periodic)
    holes = np.asarray(holes, dtype=np.int32).reshape(-1)
    if holes.shape != (n,):
        raise InputError(f"holes: expected {n} values, got {holes.shape}")
    kind, code = classify(q, major, minor, holes)
    area = count * px * px
    return {
        "image_index": np.full(n, int(image_index), dtype=np.int64),
        "instance_id": np.arange(1, n + 1, dtype=np.int32),
        "centroid_row_px": r0,
        "centroid_col_px": c0,
        "centroid_x_nm": (c0 + 0.5) * px,
        "centroid_y_nm": (r0 + 0.5) * px,
        "area_nm2": area,
        "equivalent_radius_nm": np.sqrt(area / np.pi),
        "major_axis_nm": major,
        "minor_axis_nm": minor,
        "orientation_deg": orientation,
        "topological_charge": q,
        "holes": holes,
        "touches_border": border,
        "kind": kind,
        "kind_code": code,
    }


def region_ellipses(
    labels: np.ndarray, rows: np.ndarray | None = None, cols: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Pixel count, centroid and ellipse of equal second moments of every id 1..max(labels).

    Args:
        labels: integer label image (row, col), 0 background, ids >= 0.
        rows, cols: float pixel coordinates of every pixel (default: the indices); pass
            unwrapped ones to measure instances that straddle periodic edges.

    Returns:
        Arrays of length max(labels) for ids 1..max: ``count`` (pixels), ``centroid_row_px``,
        ``centroid_col_px``, the full axes ``major_axis_px`` >= ``minor_axis_px`` =
        4·sqrt(eigenvalue of the covariance) (skimage's ``axis_major_length``), and
        ``orientation_deg`` of the major axis from +x (columns) toward +y (rows) in (−90, 90].
        NaN for ids without pixels. One ``np.bincount`` per moment, no per-instance loop.
    """
    labels = np.asarray(labels)
    n = int(labels.max(initial=0))
    if rows is None or cols is None:
        rows, cols = np.indices(labels.shape, dtype=np.float64)
    flat = labels.ravel()
    count = np.bincount(flat, minlength=n + 1)[1:].astype(np.float64)

    def mean(values: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.bincount(flat, weights=values.ravel(), minlength=n + 1)[1:] / count

    r0, c0 = mean(rows), mean(cols)
    dr = rows - np.concatenate([[0.0], r0])[labels]
    dc = cols - np.concatenate([[0.0], c0])[labels]
    srr, scc, src = mean(dr * dr), mean(dc * dc), mean(dr * dc)
    half = np.sqrt(((scc - srr) / 2) ** 2 + src**2)
    return {
        "count": count,
        "centroid_row_px": r0,
        "centroid_col_px": c0,
        "major_axis_px": 4 * np.sqrt((scc + srr) / 2 + half),
        "minor_axis_px": 4 * np.sqrt(np.maximum((scc + srr) / 2 - half, 0.0)),
        "orientation_deg": 0.5 * np.degrees(np.arctan2(2 * src, scc - srr)),
    }


# ---------------------------------------------------------------------------- masks
def semantic_mask(labels: np.ndarray) -> np.ndarray:
    """Foreground mask (..., ny, nx) bool: True inside any instance."""
    return np.asarray(labels) > 0


def boundary_class(labels: np.ndarray, periodic: bool = False) -> np.ndarray:
    """Three-class map (..., ny, nx) uint8: 0 background, 1 interior, 2 boundary.

    Boundary = the 1-px inner boundary of every instance: instance pixels with a 4-neighbour of
    a different id (background or another instance), so touching instances are separated by
    boundary pixels and no 4-connected path of interior pixels joins two instances. Beyond the
    array edge the instance is assumed to continue (edge pixels are not boundary by
    themselves) unless ``periodic``, where neighbours wrap around.
    """
    lab = np.asarray(labels)
    fg = lab > 0
    diff = np.zeros(lab.shape, dtype=bool)
    for axis in (-2, -1):
        for shift in (1, -1):
            if periodic:
                nb = np.roll(lab, shift, axis=axis)
            else:
                pad = [(0, 0)] * lab.ndim
                pad[axis] = (1, 0) if shift == 1 else (0, 1)
                nb = np.pad(lab, pad, mode="edge")
                sl = [slice(None)] * lab.ndim
                sl[axis] = slice(0, -1) if shift == 1 else slice(1, None)
                nb = nb[tuple(sl)]
            diff |= nb != lab
    out = np.zeros(lab.shape, dtype=np.uint8)
    out[fg] = 1
    out[fg & diff] = 2
    return out


# ---------------------------------------------------------------------------- stores
def label_render_store(
    relax_store: str | Path, render_store: str | Path
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Ground-truth labels of every image of a render store.

    Each state of the relax store is labelled once in the sample frame (layer-mean m_z of the
    magnetic cells, background along the applied field as in the relax stage, periodic when
    the grid is; charges from the Berg–Lüscher density of the normalised layer-mean m); every
    image then gets its image-frame labels through the geometry of its own state, tilt, tilt
    axis and pixel size (:func:`image_geometry`, :func:`image_instances`).

    Returns:
        labels (N_images, ny, nx) int32 and the instance table of all images concatenated
        (:func:`instance_table` columns, ``image_index`` = index in the render store, plus
        ``state_index`` and ``sample_instance_id``, the sample-frame instance shown).
    """
    relax = open_store(relax_store)
    render = open_store(render_store)
    m_arr, ms_arr = relax["m"], relax["Ms"]
    _, _, nz, ny, nx = m_arr.shape
    state_ids = np.asarray(relax["state_id"][:])
    cell_nm = np.asarray(relax["cell_size_nm"][:], dtype=np.float64)
    thick_nm = np.asarray(relax["thickness_nm"][:], dtype=np.float64)
    field = np.asarray(relax["field_mT"][:], dtype=np.float64)
    grid = dict(relax.attrs.get("config", {})).get("sweep", {}).get("grid", {})
    periodic = grid.get("boundary", "periodic") == "periodic"

    state_index = np.asarray(render["state_index"][:], dtype=np.int64)
    image_state_id = np.asarray(render["state_id"][:])
    tilt = np.asarray(render["tilt_deg"][:], dtype=np.float64)
    axis = np.asarray(render["tilt_axis_deg"][:], dtype=np.float64)
    pixel = np.asarray(render["pixel_size_nm"][:], dtype=np.float64)
    if render["image"].shape[-2:] != (ny, nx):
        raise InputError(
            f"{render_store}: images {render['image'].shape[-2:]} do not match the relax grid "
            f"{(ny, nx)}"
        )
    if state_index.size and (
        state_index.max() >= len(state_ids)
        or not np.array_equal(state_ids[state_index], image_state_id)
    ):
        raise InputError(f"{render_store}: images do not belong to the states of {relax_store}")

    n_img = len(state_index)
    labels = np.zeros((n_img, ny, nx), dtype=np.int32)
    tables: list[dict[str, np.ndarray]] = []
    sample_cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for i in range(n_img):
        s = int(state_index[i])
        if s not in sample_cache:
            m = _layer_mean(np.asarray(m_arr[s]), np.asarray(ms_arr[s]))
            lab = sample_instances(m[2], periodic, background=1.0 if field[s] >= 0 else -1.0)
            rho = charge_density(torch.from_numpy(m), periodic).numpy()
            q = instance_charges(lab, rho, periodic)
            sample_cache[s] = (lab, q, instance_holes(lab, periodic))
        lab, q, holes = sample_cache[s]
        geometry = image_geometry((nz, ny, nx), cell_nm[s], thick_nm[s], tilt[i], axis[i])
        labels[i], sources = image_instances(lab, geometry, return_sources=True)
        table = instance_table(
            labels[i],
            pixel[i],
            charges=q[sources - 1] if len(sources) else np.zeros(0),
            holes=holes[sources - 1] if len(sources) else np.zeros(0, dtype=np.int32),
            image_index=i,
        )
        table["state_index"] = np.full(len(sources), s, dtype=np.int64)
        table["sample_instance_id"] = sources
        tables.append(table)
    if not tables:
        table = _empty_table()
        table["state_index"] = np.zeros(0, dtype=np.int64)
        table["sample_instance_id"] = np.zeros(0, dtype=np.int32)
        return labels, table
    return labels, {k: np.concatenate([t[k] for t in tables]) for k in tables[0]}
