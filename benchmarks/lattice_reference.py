"""A model-independent reference for an experimental lobe-pair lattice (default: the shipped
Fe3GeTe2 image): template-matched lattice sites, the count and spacings they give against the
FFT lattice constant (issue 6's self-consistency targets), and how the skyrmions of inference
runs compare with them.

A tilted Néel skyrmion images as a bright and a dark lobe side by side; the lobes are elongated
across the pair axis. The axis is the direction in which the image's autocorrelation falls
lowest at lags of 0.15–0.35 a (a bright lobe next to a dark one). Sites are the peaks of the
correlation with a template: first the derivative of a Gaussian (σ = 0.2 a) along the axis,
then twice the mean patch around the peaks found (peaks ≥ 0.4 a apart, above
``threshold_rel`` × the highest, ≥ a/2 from the border). The two template signs give two
interleaved site sets about a/2 apart: a skyrmion's centre lies between its own lobes, and the
same sign change occurs between the lobes of neighbours. Without the imaging convention
(tilt sign, defocus sign, core polarity) the lattice alone cannot say which set holds the
skyrmions, so both are reported; an inference run is scored against the set most of its
skyrmions sit on (within 0.35 a).

``--synthetic SCATTER`` checks the method instead on a 512² hexagonal lattice of lobe pairs
(a = 37.4 px like the shipped image, sites scattered by SCATTER × a per coordinate, white
noise at the shipped image's contrast-to-noise) whose sites are known: the truth's own count
and spacings are reported beside the reference's, and the truth is compared with both sets
like an inference run.

Usage: ``python benchmarks/lattice_reference.py [--image FILE | --synthetic 0.08]
[--instances CSV ...] [--thresholds 0.05 0.1 0.2 0.3]``; prints JSON. ``--instances`` takes
``instances.csv`` files of ``ltemfactory infer`` runs on the same image.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree
from skimage.feature import peak_local_max

from ltemfactory.inference.lattice import estimate_lattice_period_px, lattice_statistics
from ltemfactory.inference.readers import read_image

SHIPPED = Path(__file__).resolve().parents[1] / "data/experimental/FGT_190K_lf10_hf10.tif"
MATCH_FRACTION = 0.35
"""A skyrmion sits on a reference site when their centres are closer than this × a."""


def synthetic_lattice(scatter: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(512, 512) image of lobe pairs along the columns at scattered hexagonal sites, and the
    (N, 2) row, col sites [px]: each pair is the derivative of an elliptical Gaussian (σ 0.12 a
    along the pair, 0.2 a across), plus white noise of 4× the lattice signal's std (the
    shipped image: ~90 % of its variance at periods of 3–10 px)."""
    rng = np.random.default_rng(seed)
    a, n = 37.4, 512
    rows = np.arange(-a, n + a, a * math.sqrt(3) / 2)
    sites = np.array(
        [(r, c + (i % 2) * a / 2) for i, r in enumerate(rows) for c in np.arange(-a, n + a, a)]
    )
    sites = sites + rng.normal(0.0, scatter * a, sites.shape)
    yy, xx = np.mgrid[0:n, 0:n].astype(float)
    image = np.zeros((n, n))
    for r, c in sites:
        dy, dx = (yy - r) / (0.2 * a), (xx - c) / (0.12 * a)
        image += -dx * np.exp(-0.5 * (dx * dx + dy * dy))
    image = image / image.std() + rng.normal(0.0, 4.0, image.shape)
    inside = (sites[:, 0] >= 0) & (sites[:, 0] < n) & (sites[:, 1] >= 0) & (sites[:, 1] < n)
    return image, sites[inside]


def lobe_axis_deg(image: np.ndarray, a: float) -> float:
    """Angle [deg, 0–180, from the column axis towards increasing rows] of the lobe-pair axis:
    where the autocorrelation of the (row, col) image is lowest at lags 0.15–0.35 a."""
    img = image - image.mean()
    acf = np.fft.fftshift(np.fft.irfft2(np.abs(np.fft.rfft2(img)) ** 2, s=img.shape))
    centre = np.array(img.shape) // 2
    angles = np.arange(0.0, 180.0, 2.5)
    lags = np.linspace(0.15 * a, 0.35 * a, 9)
    theta = np.radians(angles)[:, None]
    rows = centre[0] + lags[None, :] * np.sin(theta)
    cols = centre[1] + lags[None, :] * np.cos(theta)
    mean = ndi.map_coordinates(acf, [rows.ravel(), cols.ravel()], order=1).reshape(rows.shape)
    return float(angles[np.argmin(mean.mean(axis=1))])


def template_sites(
    image: np.ndarray, a: float, axis_deg: float, sign: int, threshold_rel: float
) -> np.ndarray:
    """(N, 2) row, col [px] of the template-matched sites (module docstring)."""
    t = math.radians(axis_deg)
    sigma = 0.2 * a
    response = sign * (
        math.cos(t) * ndi.gaussian_filter(image, sigma, order=(0, 1))
        + math.sin(t) * ndi.gaussian_filter(image, sigma, order=(1, 0))
    )
    smooth = ndi.gaussian_filter(image, 0.05 * a)
    half = int(round(0.6 * a))
    keep = dict(min_distance=int(0.4 * a), threshold_rel=threshold_rel, exclude_border=int(a / 2))
    peaks = peak_local_max(response, **keep)
    for _ in range(2):
        patches = [
            image[r - half : r + half + 1, c - half : c + half + 1]
            for r, c in peaks
            if half <= r < image.shape[0] - half and half <= c < image.shape[1] - half
        ]
        template = np.mean(patches, axis=0)
        response = ndi.correlate(smooth, template - template.mean())
        peaks = peak_local_max(response, **keep)
    return peaks.astype(float)


def _interior(points: np.ndarray, shape: tuple[int, int], margin: float) -> np.ndarray:
    rows, cols = shape
    r, c = points[:, 0], points[:, 1]
    return (r >= margin) & (r < rows - margin) & (c >= margin) & (c < cols - margin)


def site_summary(sites: np.ndarray, shape: tuple[int, int], a: float) -> dict:
    """Count against the FFT-expected count of the interior (≥ a/2 from the border), median
    nearest-neighbour distance and Delaunay bond length against a, ψ6."""
    margin = int(a / 2)
    area = (shape[0] - 2 * margin) * (shape[1] - 2 * margin)
    expected = area * 2.0 / (math.sqrt(3.0) * a * a)
    nn = cKDTree(sites).query(sites, k=2)[0][:, 1]
    stats = lattice_statistics(sites, shape)
    return {
        "count": int(len(sites)),
        "expected_count": expected,
        "count_rel_diff": len(sites) / expected - 1.0,
        "nn_rel_diff": float(np.median(nn)) / a - 1.0,
        "nn_below_0p7a": int((nn < 0.7 * a).sum()),
        "bond_rel_diff": stats["lattice_constant_bond_px"] / a - 1.0,
        "psi6_global": stats["psi6_global"],
        "fraction_6fold": stats["fraction_6fold"],
    }


def compare_run(points: np.ndarray, sets: dict[str, np.ndarray], shape, a: float) -> dict:
    """Where the interior skyrmions of a run sit relative to both reference site sets."""
    inner = points[_interior(points, shape, int(a / 2))]
    on = {}
    for name, sites in sets.items():
        d, _ = cKDTree(sites).query(inner)
        on[name] = d < MATCH_FRACTION * a
    best = max(on, key=lambda k: on[k].sum())
    other = next(k for k in sets if k != best)
    d_sites, _ = cKDTree(inner).query(sets[best])
    nn = cKDTree(inner).query(inner, k=2)[0][:, 1]
    return {
        "interior_skyrmions": int(len(inner)),
        "reference_set": best,
        "on_reference_set": int(on[best].sum()),
        "on_other_set": int((on[other] & ~on[best]).sum()),
        "on_neither": int((~on[best] & ~on[other]).sum()),
        "reference_sites_found": float((d_sites < MATCH_FRACTION * a).mean()),
        "nn_rel_diff": float(np.median(nn)) / a - 1.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--image", type=Path, default=SHIPPED)
    source.add_argument("--synthetic", type=float, metavar="SCATTER")
    parser.add_argument("--instances", type=Path, nargs="*", default=[])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.3])
    args = parser.parse_args()

    truth = None
    if args.synthetic is not None:
        image, truth = synthetic_lattice(args.synthetic)
    else:
        image = read_image(args.image).data.astype(np.float64)
    image = (image - image.mean()) / image.std()
    a = estimate_lattice_period_px(image).nn_distance_px
    axis = lobe_axis_deg(ndi.gaussian_filter(image, 0.13 * a), a)
    name = f"synthetic, scatter {args.synthetic:g} a" if truth is not None else str(args.image)
    out: dict = {"image": name, "fft_nn_distance_px": a, "lobe_axis_deg": axis}
    sets = {}
    for threshold in args.thresholds:
        for sign in (1, -1):
            sites = template_sites(image, a, axis, sign, threshold)
            out[f"sign{sign:+d}_threshold{threshold:g}"] = site_summary(sites, image.shape, a)
            if threshold == args.thresholds[len(args.thresholds) // 2]:
                sets[f"sign{sign:+d}"] = sites
    if truth is not None:
        inner = truth[_interior(truth, image.shape, int(a / 2))]
        out["truth"] = site_summary(inner, image.shape, a)
        out["truth_vs_reference"] = compare_run(truth, sets, image.shape, a)
    for path in args.instances:
        import pandas as pd

        table = pd.read_csv(path)
        points = table[["centroid_row_px", "centroid_col_px"]].to_numpy(float)
        out[str(path)] = compare_run(points, sets, image.shape, a)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
