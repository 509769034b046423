"""Label TIFF, instance CSV, overlay PNG and JSON outputs."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import tifffile
from PIL import Image

from ltemfactory.errors import InputError
from ltemfactory.files import write_json
from ltemfactory.inference.outputs import (
    INSTANCE_COLUMNS,
    instance_rows,
    mask_layer_png,
    overlay_png,
    write_instance_csv,
    write_label_tiff,
)
from ltemfactory.inference.readers import read_image
from ltemfactory.labels import instance_table

DISKS = [(30.0, 40.0, 12.0), (90.0, 100.0, 8.0), (60.0, 160.0, 15.5)]  # row, col, radius [px]


def disks(shape=(128, 200), items=DISKS) -> np.ndarray:
    rr, cc = np.mgrid[0 : shape[0], 0 : shape[1]]
    lab = np.zeros(shape, np.int32)
    for i, (r, c, rad) in enumerate(items, start=1):
        lab[(rr - r) ** 2 + (cc - c) ** 2 <= rad**2] = i
    return lab


def test_label_tiff_round_trip_with_calibration(tmp_path):
    lab = disks()
    lab[lab == 3] = 70000  # beyond uint16
    path = tmp_path / "labels.tif"
    write_label_tiff(path, lab, 2.5)
    with tifffile.TiffFile(path) as tif:
        back = tif.asarray()
        assert tif.is_imagej and tif.imagej_metadata["unit"] == "nm"
    assert back.dtype == np.int32
    np.testing.assert_array_equal(back, lab)
    assert read_image(path).pixel_size_nm == pytest.approx(2.5)  # our reader agrees
    write_label_tiff(tmp_path / "raw.tif", lab, None)
    assert read_image(tmp_path / "raw.tif").pixel_size_nm is None
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write left no temporary file


def test_instance_rows_of_disks_match_geometry():
    px = 2.0
    lab = disks()
    rows = instance_rows(lab, px, image=lab * 10.0)
    assert [r["instance_id"] for r in rows] == [1, 2, 3]
    for row, (r, c, rad) in zip(rows, DISKS, strict=True):
        assert set(row) == set(INSTANCE_COLUMNS)
        # a disk centred on a pixel centre is symmetric: the centroid is exact
        assert (row["centroid_row_px"], row["centroid_col_px"]) == (r, c)
        assert row["centroid_x_nm"] == (c + 0.5) * px and row["centroid_y_nm"] == (r + 0.5) * px
        assert row["area_px2"] == pytest.approx(math.pi * rad**2, rel=0.03)
        assert row["area_nm2"] == row["area_px2"] * px**2
        assert row["equivalent_radius_px"] == pytest.approx(rad, rel=0.015)
        assert row["equivalent_diameter_nm"] == pytest.approx(2 * rad * px, rel=0.015)
        assert row["eccentricity"] < 0.1
        assert row["major_axis_px"] == pytest.approx(2 * rad, rel=0.05)
        assert row["mean_intensity"] == 10.0 * row["instance_id"]
        assert row["touches_border"] is False


def test_instance_rows_match_the_label_table_conventions():
    """Ellipses at several angles: same centroids, axes and orientation as labels.py."""
    rr, cc = np.mgrid[0:120, 0:160]
    lab = np.zeros((120, 160), np.int32)
    for i, (r0, c0, ang) in enumerate(
        [(30, 40, 0.0), (30, 110, 30.0), (85, 40, -55.0), (85, 115, 90.0)], start=1
    ):
        t = math.radians(ang)
        u = (cc - c0) * math.cos(t) + (rr - r0) * math.sin(t)  # along the major axis
        v = -(cc - c0) * math.sin(t) + (rr - r0) * math.cos(t)
        lab[(u / 18) ** 2 + (v / 8) ** 2 <= 1] = i
    rows = instance_rows(lab, 1.5)
    table = instance_table(lab, 1.5)
    for k, row in enumerate(rows):
        assert row["centroid_row_px"] == pytest.approx(table["centroid_row_px"][k])
        assert row["centroid_x_nm"] == pytest.approx(table["centroid_x_nm"][k])
        assert row["area_nm2"] == pytest.approx(table["area_nm2"][k])
        assert row["major_axis_nm"] == pytest.approx(table["major_axis_nm"][k], rel=1e-6)
        assert row["minor_axis_nm"] == pytest.approx(table["minor_axis_nm"][k], rel=1e-6)
        assert row["orientation_deg"] == pytest.approx(table["orientation_deg"][k], abs=1e-6)
    np.testing.assert_allclose([r["orientation_deg"] for r in rows], [0, 30, -55, 90], atol=1.5)


def test_border_flag_and_missing_pixel_size():
    lab = disks(items=[(5.0, 100.0, 10.0), (60.0, 100.0, 5.0)])
    rows = instance_rows(lab, None)
    assert [r["touches_border"] for r in rows] == [True, False]
    assert rows[0]["area_nm2"] is None and rows[0]["centroid_x_nm"] is None
    assert rows[0]["mean_intensity"] is None
    assert instance_rows(np.zeros((40, 40), np.int32), 1.0) == []


def test_csv_round_trip(tmp_path):
    rows = instance_rows(disks(), 2.0)
    path = tmp_path / "instances.csv"
    write_instance_csv(path, rows)
    with open(path, newline="") as fh:
        back = list(csv.DictReader(fh))
    assert len(back) == 3 and list(back[0]) == list(INSTANCE_COLUMNS)
    for got, want in zip(back, rows, strict=True):
        assert float(got["centroid_col_px"]) == want["centroid_col_px"]
        assert float(got["area_nm2"]) == want["area_nm2"]  # full precision
        assert got["touches_border"] == "False" and got["mean_intensity"] == ""
    write_instance_csv(tmp_path / "empty.csv", [])
    assert (tmp_path / "empty.csv").read_text() == ",".join(INSTANCE_COLUMNS) + "\n"
    with pytest.raises(InputError, match="missing columns"):
        write_instance_csv(tmp_path / "bad.csv", [{"instance_id": 1}])


def test_overlay_is_red_between_and_clear_on_instances(tmp_path):
    shape = (128, 200)
    lab = disks(shape)
    image = np.tile(np.linspace(0.0, 1.0, shape[1]), (shape[0], 1))
    path = tmp_path / "overlay.png"
    alpha = 0.4
    overlay_png(path, image, lab, alpha=alpha, pixel_size_nm=2.0, title="FGT")
    out = np.asarray(Image.open(path).convert("RGB")).astype(float)
    assert out.shape == (*shape, 3)
    grey = (
        np.clip((image - np.percentile(image, 1)) / np.ptp(np.percentile(image, [1, 99])), 0, 1)
        * 255
    )
    # instance interiors: plain grey (R = G = B = the grey value)
    for r, c, _ in DISKS:
        r, c = int(r), int(c)
        assert np.allclose(out[r, c], grey[r, c], atol=1.0)
    # matrix away from the scale bar and title: (1 − α)·grey + α·red
    r, c = 100, 150
    assert lab[r, c] == 0
    expected = [
        (1 - alpha) * grey[r, c] + alpha * 255,
        (1 - alpha) * grey[r, c],
        (1 - alpha) * grey[r, c],
    ]
    np.testing.assert_allclose(out[r, c], expected, atol=1.0)
    assert out[r, c, 0] > out[r, c, 1] + 50
    # outlines: yellow on the instance boundary
    r, c, rad = DISKS[0]
    assert tuple(out[int(r), int(c + rad)]) == (255.0, round(0.85 * 255), 0.0)
    # scale bar and title change only their corners
    overlay_png(tmp_path / "plain.png", image, lab, alpha=alpha)
    plain = np.asarray(Image.open(tmp_path / "plain.png").convert("RGB")).astype(float)
    changed = np.abs(out - plain).max(axis=-1) > 0
    rows, cols = np.nonzero(changed)
    bottom_left = (rows > 0.75 * shape[0]) & (cols < 0.4 * shape[1])
    top_left = (rows < 0.25 * shape[0]) & (cols < 0.4 * shape[1])
    assert bottom_left.any() and top_left.any() and np.all(bottom_left | top_left)


def test_mask_layer_is_transparent_on_instances(tmp_path):
    lab = disks()
    mask_layer_png(tmp_path / "layer.png", lab, alpha=0.5)
    rgba = np.asarray(Image.open(tmp_path / "layer.png"))
    assert rgba.shape == (*lab.shape, 4)
    assert np.all(rgba[lab > 0, 3] == 0)
    assert np.all(rgba[lab == 0] == (255, 0, 0, 128))


def test_overlay_rejects_mismatched_shapes(tmp_path):
    with pytest.raises(InputError, match="shape"):
        overlay_png(tmp_path / "x.png", np.zeros((10, 10)), np.zeros((10, 12), np.int32))
    with pytest.raises(InputError, match="integer"):
        overlay_png(tmp_path / "x.png", np.zeros((10, 10)), np.zeros((10, 10)))


def test_json_nan_becomes_null(tmp_path):
    path = tmp_path / "summary.json"
    obj = {
        "a": math.nan,
        "b": [1.0, math.inf, np.float32(2.5)],
        "c": np.arange(3),
        "d": {1: np.int64(4), "e": (np.bool_(True), None)},
    }
    write_json(path, obj)
    back = json.loads(path.read_text())
    assert back == {
        "a": None,
        "b": [1.0, None, 2.5],
        "c": [0, 1, 2],
        "d": {"1": 4, "e": [True, None]},
    }
    assert "NaN" not in path.read_text()
    with pytest.raises(InputError, match="object"):
        write_json(tmp_path / "bad.json", {"x": object()})
