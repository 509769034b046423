"""Skyrmion-lattice geometry: the period from the power spectrum, and statistics of centroids.

Two independent measurements, so that a segmentation can be checked against the image itself:

* :func:`estimate_lattice_period_px` reads the lattice period off the first ring of the 2-D
  power spectrum of the image (physics.md §6), without any model. Its nearest-neighbour distance
  gives the factor by which to resample an experimental image to the training scale
  (:func:`scale_factor_to_training`).
* :func:`lattice_statistics` measures the lattice formed by detected skyrmion centroids: number
  density, nearest-neighbour distances, Delaunay coordination, the hexatic bond-orientational
  order ψ6 (Nelson & Halperin, Phys. Rev. B 19, 2457 (1979)) and 5–7 defects.

Hexagonal lattice of nearest-neighbour distance a: the first ring of its power spectrum lies at
q1 = 2/(√3 a) [cycles/px], i.e. the spacing of the {10} lattice planes (the *ring period*) is
d = 1/q1 = (√3/2)·a; the number density is 2/(√3 a²).

Coordinates are (row, col) pixel indices, pixel centres at integers (the image covers
[−0.5, rows − 0.5] × [−0.5, cols − 0.5]); x runs along columns and y along rows; angles are
measured from +x toward +y (the convention of :mod:`ltemfactory.labels`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import fft as sfft
from scipy.signal import find_peaks
from scipy.signal.windows import hann
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching
from scipy.spatial import Delaunay, QhullError, Voronoi, cKDTree

from ltemfactory.errors import InputError

__all__ = [
    "LOW_CONFIDENCE",
    "MIN_SIGNIFICANCE",
    "LatticeEstimate",
    "estimate_lattice_period_px",
    "lattice_statistics",
    "scale_factor_to_training",
]

_log = logging.getLogger(__name__)

LOW_CONFIDENCE = 0.6
"""Below this :attr:`LatticeEstimate.confidence` the ring is not distinguishable from noise."""

MIN_SIGNIFICANCE = 10.0
"""Below this :attr:`LatticeEstimate.significance` the ring may be a noise fluctuation.

With :data:`LOW_CONFIDENCE`, calibrated on white noise: of 900 images of 64–256 px none passed
both (the largest joint score reached 0.96 of the thresholds); of 300 images of 48 px two did.
Lattices of Gaussian blobs with SNR ~1 per pixel score 0.9 and 30–200.
"""

_HARMONICS = (math.sqrt(3.0), 2.0, math.sqrt(7.0), 3.0)
"""Ratios of the outer hexagonal rings to the first one (|G|/|G1| of the reciprocal lattice)."""

_SQRT3 = math.sqrt(3.0)


@dataclass(frozen=True)
class LatticeEstimate:
    """The lattice seen in an image's power spectrum.

    Attributes:
        period_px: ring period d = 1/q1 [px], the spacing of the {10} lattice planes.
        nn_distance_px: nearest-neighbour distance a = 2/(√3 q1) [px] of a hexagonal lattice.
        orientation_deg: direction of a nearest-neighbour bond in real space, in [0, 60) [deg]
            from +x (columns) toward +y (rows); the spectrum's spots lie 30° from it.
        confidence: prominence/height of the ring in the radial power profile, in [0, 1]
            (1 − background/peak); below :data:`LOW_CONFIDENCE` there is no usable ring (NaN
            lengths: no peak at all).
        significance: prominence/background times √(π q1'/2), q1' the ring radius in bins of
            the unpadded spectrum: the peak in units of the expected relative fluctuation of a
            radial mean of white-noise power (≈ π q1'/2 independent samples per bin); a noise
            bump reaches 5–9. Needed because small rings hold few samples.
        orientation_order: |⟨exp(6iθ)⟩| of the power on the ring, in [0, 1]: 1 for one
            single-crystal lattice, near 0 for a powder ring (orientation meaningless).
        q_cycles_per_px: ring radius q1 [cycles/px].
    """

    period_px: float
    nn_distance_px: float
    orientation_deg: float
    confidence: float
    significance: float
    orientation_order: float
    q_cycles_per_px: float

    @property
    def reliable(self) -> bool:
        """A ring was found with :data:`LOW_CONFIDENCE` and :data:`MIN_SIGNIFICANCE` met."""
        return (
            math.isfinite(self.period_px)
            and self.confidence >= LOW_CONFIDENCE
            and self.significance >= MIN_SIGNIFICANCE
        )

    def to_dict(self) -> dict[str, float | bool | None]:
        """JSON-ready fields (NaN → None) plus ``reliable``."""
        out: dict[str, float | bool | None] = {
            k: (None if not math.isfinite(v) else float(v)) for k, v in asdict(self).items()
        }
        out["reliable"] = self.reliable
        return out


_NO_RING = LatticeEstimate(math.nan, math.nan, math.nan, 0.0, 0.0, 0.0, math.nan)


def _check_image(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise InputError(f"image: expected a 2-D (row, col) array, got shape {img.shape}")
    if min(img.shape) < 8:
        raise InputError(f"image: expected at least 8×8 px, got {img.shape}")
    if not np.isfinite(img).all():
        raise InputError("image: contains NaN or infinite pixels")
    return img


def _power_spectrum(
    img: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Half-plane power of the Hann-windowed image zero-padded to n×n; radius [bins], angle, mult.

    The window-weighted mean is removed first so the windowed image sums to zero (no DC leak).
    ``mult`` counts each rfft column for itself and its conjugate mirror.
    """
    w = np.outer(hann(img.shape[0], sym=False), hann(img.shape[1], sym=False))
    x = (img - np.sum(w * img) / np.sum(w)) * w
    power = np.abs(sfft.rfft2(x, s=(n, n), workers=-1)) ** 2
    qr = sfft.fftfreq(n)[:, None] * n
    qc = sfft.rfftfreq(n)[None, :] * n
    radius = np.hypot(qr, qc)
    angle = np.arctan2(qr, qc)
    mult = np.full(power.shape[1], 2.0)
    mult[0] = 1.0
    if n % 2 == 0:
        mult[-1] = 1.0
    return (
        power,
        np.broadcast_to(radius, power.shape),
        np.broadcast_to(angle, power.shape),
        np.broadcast_to(mult, power.shape),
    )


def estimate_lattice_period_px(
    image: np.ndarray,
    *,
    min_period_px: float = 4.0,
    max_period_px: float | None = None,
) -> LatticeEstimate:
    """Lattice period and orientation of a (row, col) image from its power spectrum.

    The image minus its (window-weighted) mean is Hann-windowed, zero-padded to twice its size
    (for finer spectral sampling) and Fourier transformed. The power summed over annuli of one
    bin, S(q) ∝ q·P̄(q), is searched for its most prominent peak between 1/max_period_px and
    1/min_period_px; when a lower peak of at least a tenth of its prominence (and confidence
    :data:`LOW_CONFIDENCE` of its own) sits at q/√3, q/2, q/√7 or q/3, that is the first ring
    (the form factor of lobe-pair contrast can make an outer ring the strongest) and is taken.
    The ring radius is refined below the bin size by a mean shift of the background-subtracted
    power in a narrow annulus (the power-weighted mean radius of the spots, unbiased by the 1/q
    dilution of a radial average), and the orientation is the 6-fold circular mean of the same
    power, arg⟨exp(6iθ)⟩/6, turned by 30° into real space.

    Args:
        image: (row, col) array, at least 8×8, finite.
        min_period_px: smallest ring period searched [px] (default 4; Nyquist is 2).
        max_period_px: largest ring period searched [px]; default a third of the shorter side
            (at least three periods across the image).

    Returns:
        A :class:`LatticeEstimate`; with NaN lengths and zero confidence when the profile has no
        peak in the band. Check :attr:`LatticeEstimate.reliable` before using it.
    """
    img = _check_image(image)
    max_period = min(img.shape) / 3.0 if max_period_px is None else float(max_period_px)
    if not (2.0 <= min_period_px < max_period):
        raise InputError(
            f"period band: expected 2 <= min_period_px < max_period_px, got {min_period_px}, "
            f"{max_period}"
        )
    if float(np.ptp(img)) <= 1e-9 * max(float(np.max(np.abs(img))), np.finfo(float).tiny):
        return _NO_RING  # constant image: only rounding noise is left
    pad = 2 if max(img.shape) <= 1024 else 1
    n = sfft.next_fast_len(pad * max(img.shape), real=True)
    power, radius, angle, mult = _power_spectrum(img, n)
    bins = np.rint(radius).astype(np.int64).ravel()
    weights = (power * mult).ravel()
    total = np.bincount(bins, weights=weights)
    count = np.bincount(bins, weights=mult.ravel())
    mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)

    lo = max(int(math.floor(n / max_period)), 1)
    hi = min(int(math.ceil(n / min_period_px)), len(total) - 2)
    if hi - lo < 3:
        return _NO_RING
    band = total[lo : hi + 1]
    peaks, props = find_peaks(band, prominence=0.0)
    if len(peaks) == 0:
        _log.info("no peak in the radial power profile between %d and %d bins", lo, hi)
        return _NO_RING
    prom = props["prominences"]
    best = int(np.argmax(prom))
    chosen = best
    for j in np.argsort(peaks):
        own = prom[j] / band[peaks[j]] if band[peaks[j]] > 0 else 0.0
        if j == best or peaks[j] >= peaks[best] or prom[j] < 0.1 * prom[best]:
            continue
        if own < LOW_CONFIDENCE:
            continue
        ratio = (peaks[best] + lo) / (peaks[j] + lo)
        if any(abs(ratio / h - 1.0) < 0.04 for h in _HARMONICS):
            chosen = int(j)
            break
    i = int(peaks[chosen]) + lo
    height = band[peaks[chosen]]
    confidence = float(prom[chosen] / height) if height > 0 else 0.0
    base = max(height - prom[chosen], 1e-12 * height)
    n_indep = math.pi * i / pad / 2.0
    significance = float(prom[chosen] / base * math.sqrt(n_indep)) if height > 0 else 0.0
    left = int(props["left_bases"][chosen]) + lo
    right = int(props["right_bases"][chosen]) + lo

    # per-pixel background: the radial mean power interpolated between the peak's two bases
    r = radius.ravel()
    p = power.ravel()
    m = mult.ravel()
    th = angle.ravel()
    half = max(1.5, min(2.0 * pad, (right - left) / 2.0))
    q = float(i)
    for _ in range(20):
        sel = np.abs(r - q) <= half
        bg = np.interp(r[sel], [left, right], [mean[left], mean[right]])
        wgt = np.clip(p[sel] - bg, 0.0, None) * m[sel]
        if wgt.sum() <= 0:
            break
        new = float(np.sum(wgt * r[sel]) / wgt.sum())
        if abs(new - q) < 1e-4:
            q = new
            break
        q = new
    sel = np.abs(r - q) <= half
    bg = np.interp(r[sel], [left, right], [mean[left], mean[right]])
    wgt = np.clip(p[sel] - bg, 0.0, None) * m[sel]
    z = np.sum(wgt * np.exp(6j * th[sel])) / max(wgt.sum(), np.finfo(float).tiny)
    spot_deg = math.degrees(np.angle(z)) / 6.0
    orientation = (spot_deg + 30.0) % 60.0
    q_cyc = q / n
    return LatticeEstimate(
        period_px=1.0 / q_cyc,
        nn_distance_px=2.0 / (_SQRT3 * q_cyc),
        orientation_deg=float(orientation),
        confidence=confidence,
        significance=significance,
        orientation_order=float(abs(z)),
        q_cycles_per_px=float(q_cyc),
    )


def scale_factor_to_training(nn_distance_px: float, training_nn_distance_px: float) -> float:
    """Zoom factor s that maps an image's lattice onto the training scale.

    Resampling the experimental image by s (new size = s·old size, e.g.
    ``skimage.transform.rescale(image, s)``) turns its nearest-neighbour distance
    ``nn_distance_px`` into ``training_nn_distance_px``: s = training / measured. s > 1
    enlarges. Labels predicted on the resampled image go back with 1/s; a pixel size [nm]
    becomes px/s.
    """
    a, b = float(nn_distance_px), float(training_nn_distance_px)
    if not (math.isfinite(a) and a > 0):
        raise InputError(f"nn_distance_px: expected a positive finite length, got {a}")
    if not (math.isfinite(b) and b > 0):
        raise InputError(f"training_nn_distance_px: expected a positive finite length, got {b}")
    return b / a


# --------------------------------------------------------------------------- centroid statistics
def _none(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _voronoi_inside(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """True where a point's Voronoi cell is bounded and lies inside the image."""
    vor = Voronoi(points)
    lo = -0.5
    hi_r, hi_c = shape[0] - 0.5, shape[1] - 0.5
    v = vor.vertices
    vin = (v[:, 0] >= lo) & (v[:, 0] <= hi_r) & (v[:, 1] >= lo) & (v[:, 1] <= hi_c)
    ok = np.zeros(len(points), dtype=bool)
    for j, reg in enumerate(vor.point_region):
        region = vor.regions[reg]
        ok[j] = len(region) > 0 and -1 not in region and bool(vin[region].all())
    return ok


def _stats(values: np.ndarray, scale: float | None, stem: str) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for unit, s in (("px", 1.0), ("nm", scale)):
        for name, f in (("mean", np.mean), ("std", np.std), ("median", np.median)):
            ok = s is not None and len(values) > 0
            out[f"{stem}_{name}_{unit}"] = _none(float(f(values)) * s) if ok else None
    return out


def lattice_statistics(
    centroids_rc: np.ndarray,
    image_shape: tuple[int, int],
    pixel_size_nm: float | None = None,
    *,
    exclude_border_px: float | None = None,
) -> dict:
    """Density, nearest-neighbour distances, coordination, ψ6 order and defects of centroids.

    Sites used for the local measures (NN distances, coordination, ψ6, defects) are those at
    least ``exclude_border_px`` from the image border whose Voronoi cell is bounded and inside the
    image; their neighbours may be any points. Neighbours are Delaunay neighbours.

    * ψ6_j = (1/z_j) Σ_k exp(6iθ_jk) over the z_j Delaunay neighbours k of site j, θ_jk the bond
      angle (Nelson & Halperin 1979). ``psi6_global`` = |⟨ψ6_j⟩| (1 for a perfect lattice, ~0
      for a liquid or a square lattice), ``psi6_local_mean`` = ⟨|ψ6_j|⟩; ``orientation_deg`` =
      arg⟨ψ6_j⟩/6 in [0, 60): the direction of a nearest-neighbour bond.
    * Defects: sites with coordination ≠ 6; ``n_dislocations`` is the largest number of disjoint
      bonded 5–7 pairs (maximum bipartite matching), unpaired 5s and 7s are counted apart.
    * Lattice constant: the median NN distance, the median Delaunay bond length of the sites,
      and √(2/(√3 ρ)) from the density ρ (the hexagonal lattice of that density). They answer
      different questions: a site's NN distance is the shortest of its ~6 bonds, so positional
      scatter biases it low (scatter of 5 % of a per coordinate: median −8.5 %; 10 %: −17 %),
      while the median bond is nearly unbiased by scatter (≤ 2 % up to 15 %) but long where
      sites are missing (a vacancy's neighbours bond across it: 30 % of the sites missing
      with 5 % scatter, +4 %). Measured on simulated lattices (``tests/inference/
      test_lattice.py``).

    Args:
        centroids_rc: (N, 2) centroids (row, col) [px].
        image_shape: (rows, cols) of the image [px].
        pixel_size_nm: pixel size [nm]; without it every nm/µm field is None.
        exclude_border_px: margin [px]; default the median NN distance.

    Returns:
        A JSON-serialisable dict (ints, floats, None for undefined values, dicts with str keys).
    """
    pts = np.asarray(centroids_rc, dtype=np.float64)
    if pts.size == 0:
        pts = pts.reshape(0, 2)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise InputError(f"centroids_rc: expected (N, 2) row/col pairs, got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise InputError("centroids_rc: contains NaN or infinite coordinates")
    if len(image_shape) != 2 or min(image_shape) <= 0:
        raise InputError(f"image_shape: expected (rows, cols) > 0, got {image_shape}")
    rows, cols = int(image_shape[0]), int(image_shape[1])
    px = None if pixel_size_nm is None else float(pixel_size_nm)
    if px is not None and not (math.isfinite(px) and px > 0):
        raise InputError(f"pixel_size_nm: expected a positive length, got {pixel_size_nm}")
    n = len(pts)
    area = float(rows * cols)
    rho = n / area
    out: dict = {
        "n_points": n,
        "image_shape": [rows, cols],
        "pixel_size_nm": px,
        "density_per_px2": rho,
        "density_per_um2": None if px is None else n / (area * (px * 1e-3) ** 2),
    }

    nn = np.full(n, np.nan)
    if n >= 2:
        nn = cKDTree(pts).query(pts, k=2)[0][:, 1]
    margin = float(np.median(nn)) if exclude_border_px is None and n >= 2 else 0.0
    if exclude_border_px is not None:
        margin = float(exclude_border_px)
        if not math.isfinite(margin) or margin < 0:
            raise InputError(f"exclude_border_px: expected >= 0, got {exclude_border_px}")
    d_border = (
        np.minimum.reduce(
            [pts[:, 0] + 0.5, rows - 0.5 - pts[:, 0], pts[:, 1] + 0.5, cols - 0.5 - pts[:, 1]]
        )
        if n
        else np.zeros(0)
    )
    valid = d_border >= margin
    out["exclude_border_px"] = margin

    z = np.zeros(n, dtype=np.int64)
    psi = np.full(n, np.nan + 0j)
    indptr = indices = None
    bond_len = np.zeros(0)
    if n >= 3:
        try:
            tri = Delaunay(pts)
            indptr, indices = tri.vertex_neighbor_vertices
            valid &= _voronoi_inside(pts, (rows, cols))
        except QhullError:  # all points collinear (or coincident)
            _log.info("lattice_statistics: degenerate point set, no triangulation")
            indptr = indices = None
    if indptr is None:
        valid &= False
    else:
        z = np.diff(indptr)
        src = np.repeat(np.arange(n), z)
        d = pts[indices] - pts[src]
        bonds = np.exp(6j * np.arctan2(d[:, 0], d[:, 1]))
        psi = np.bincount(src, weights=bonds.real, minlength=n) + 1j * np.bincount(
            src, weights=bonds.imag, minlength=n
        )
        psi = psi / np.maximum(z, 1)
        bond_len = np.hypot(d[:, 0], d[:, 1])[valid[src]]

    out["n_sites"] = int(valid.sum())
    out.update(_stats(nn[valid], px, "nn_distance"))
    out.update(_stats(bond_len, px, "bond_length"))
    a_nn = float(np.median(nn[valid])) if valid.any() else math.nan
    a_rho = math.sqrt(2.0 / (_SQRT3 * rho)) if n > 0 else math.nan
    a_bond = float(np.median(bond_len)) if bond_len.size else math.nan
    out["lattice_constant_nn_px"] = _none(a_nn)
    out["lattice_constant_bond_px"] = _none(a_bond)
    out["lattice_constant_density_px"] = _none(a_rho)
    out["lattice_constant_nn_nm"] = None if px is None else _none(a_nn * px)
    out["lattice_constant_bond_nm"] = None if px is None else _none(a_bond * px)
    out["lattice_constant_density_nm"] = None if px is None else _none(a_rho * px)

    zs = z[valid]
    keys = ("4", "5", "6", "7", "8")
    counts = {k: int(np.sum(zs == int(k))) for k in keys}
    counts["other"] = int(len(zs) - sum(counts.values()))
    out["coordination_counts"] = counts
    if len(zs):
        out["coordination_fractions"] = {k: v / len(zs) for k, v in counts.items()}
        ps = psi[valid]
        mean_psi = ps.mean()
        out["fraction_6fold"] = counts["6"] / len(zs)
        out["psi6_global"] = float(abs(mean_psi))
        out["psi6_local_mean"] = float(np.mean(np.abs(ps)))
        out["orientation_deg"] = float(math.degrees(np.angle(mean_psi)) / 6.0 % 60.0)
    else:
        out["coordination_fractions"] = {k: None for k in counts}
        out.update(
            fraction_6fold=None, psi6_global=None, psi6_local_mean=None, orientation_deg=None
        )

    five = np.flatnonzero(valid & (z == 5))
    seven = np.flatnonzero(valid & (z == 7))
    pairs = 0
    if len(five) and len(seven) and indptr is not None:
        col_of = np.full(n, -1)
        col_of[seven] = np.arange(len(seven))
        rr, cc = [], []
        for a, j in enumerate(five):
            nb = col_of[indices[indptr[j] : indptr[j + 1]]]
            nb = nb[nb >= 0]
            rr.extend([a] * len(nb))
            cc.extend(nb.tolist())
        if rr:
            graph = csr_matrix((np.ones(len(rr)), (rr, cc)), shape=(len(five), len(seven)))
            pairs = int(np.sum(maximum_bipartite_matching(graph, perm_type="column") >= 0))
    out["n_defect_sites"] = int(np.sum(zs != 6))
    out["n_5fold"] = len(five)
    out["n_7fold"] = len(seven)
    out["n_dislocations"] = pairs
    out["n_unpaired_5fold"] = len(five) - pairs
    out["n_unpaired_7fold"] = len(seven) - pairs
    return out
