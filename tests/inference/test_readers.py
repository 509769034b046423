"""Round trips and bad-input handling of ltemfactory.inference.readers."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from ltemfactory.errors import InputError
from ltemfactory.inference.readers import LtemImage, read_image, unit_to_nm

EXPERIMENTAL = Path(__file__).parents[2] / "data" / "experimental" / "FGT_190K_lf10_hf10.tif"


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(100.0, 10.0, size=(40, 56)).astype(np.float32)


# ----------------------------------------------------------------------------- a DM3/DM4 writer
def _write_dm(path: Path, data: np.ndarray, scale: float, units: str, version: int) -> None:
    """Minimal Gatan DM3/DM4 file (tag tree after C. Boothroyd's format description).

    Header and tag structure big-endian, data little-endian; DM4 has 8-byte lengths and a byte
    count after each tag name.
    """
    q = ">q" if version == 4 else ">I"

    def entry(kind: int, name: str, body: bytes) -> bytes:
        head = struct.pack(">bH", kind, len(name)) + name.encode()
        return head + (struct.pack(">q", len(body)) if version == 4 else b"") + body

    def data_tag(name: str, info: list[int], payload: bytes) -> bytes:
        body = b"%%%%" + struct.pack(q, len(info)) + b"".join(struct.pack(q, i) for i in info)
        return entry(21, name, body + payload)

    def group(name: str, entries: list[bytes]) -> bytes:
        return entry(
            20, name, struct.pack(">bb", 0, 1) + struct.pack(q, len(entries)) + b"".join(entries)
        )

    def long(name: str, v: int) -> bytes:
        return data_tag(name, [3], struct.pack("<i", v))

    def f32(name: str, v: float) -> bytes:
        return data_tag(name, [6], struct.pack("<f", v))

    def text(name: str, s: str) -> bytes:
        return data_tag(name, [20, 4, len(s)], np.array([ord(c) for c in s], "<u2").tobytes())

    def cal(name: str, sc: float, un: str) -> bytes:
        return group(name, [f32("Origin", 0.0), f32("Scale", sc), text("Units", un)])

    codes = {np.dtype(np.float32): (6, 2), np.dtype(np.int16): (2, 1)}
    element, dm_type = codes[data.dtype]
    image = group(
        "",
        [
            group(
                "ImageData",
                [
                    group(
                        "Calibrations",
                        [
                            cal("Brightness", 1.0, ""),
                            group("Dimension", [cal("", scale, units) for _ in data.shape]),
                        ],
                    ),
                    data_tag(
                        "Data",
                        [20, element, data.size],
                        data.astype(data.dtype.newbyteorder("<")).tobytes(),
                    ),
                    long("DataType", dm_type),
                    group("Dimensions", [long("", n) for n in data.shape[::-1]]),
                ],
            ),
            group("ImageTags", []),
            text("Name", "test"),
        ],
    )
    root = struct.pack(">bb", 0, 1) + struct.pack(q, 1) + group("ImageList", [image])
    root += b"\0" * (8 if version == 4 else 4)
    head = struct.pack(">i", version) + struct.pack(q, len(root)) + struct.pack(">i", 1)
    path.write_bytes(head + root)


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize(
    ("unit", "per_unit", "expected_nm"),
    [
        ("nm", 1 / 2.5, 2.5),
        ("micron", 1 / 0.0031, 3.1),
        ("um", 1 / 0.0031, 3.1),
        ("\\u00B5m", 1 / 0.0031, 3.1),
    ],
)
def test_imagej_tiff_round_trip(tmp_path, image, unit, per_unit, expected_nm):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(
        path, image, imagej=True, resolution=(per_unit, per_unit), metadata={"unit": unit}
    )
    out = read_image(path)
    assert isinstance(out, LtemImage)
    assert out.data.dtype == np.float32 and out.data.shape == (40, 56)
    np.testing.assert_array_equal(out.data, image)
    assert out.pixel_size_nm == pytest.approx(expected_nm, rel=1e-5)
    assert out.metadata["pixel_size_source"] == "imagej"
    assert not out.data.flags.writeable


def test_imagej_stack_frames_and_spacing_is_not_pixel_size(tmp_path, image):
    stack = np.stack([image, image + 1, image + 2])
    path = tmp_path / "stack.tif"
    tifffile.imwrite(
        path,
        stack,
        imagej=True,
        resolution=(0.5, 0.5),
        metadata={"unit": "nm", "spacing": 7.0, "axes": "ZYX"},
    )
    out = read_image(path, frame=2)
    np.testing.assert_array_equal(out.data, image + 2)
    assert out.pixel_size_nm == pytest.approx(2.0)  # from XResolution, not from spacing
    assert out.metadata["n_frames"] == 3 and out.metadata["imagej_spacing"] == 7.0
    with pytest.raises(InputError, match="frame 3 out of range.*3 frame"):
        read_image(path, frame=3)
    with pytest.raises(InputError, match="frame -1"):
        read_image(path, frame=-1)


@pytest.mark.parametrize(
    ("unit", "per_unit", "expected_nm"),
    [("CENTIMETER", 1e7 / 4.0, 4.0), ("INCH", 2.54e7 / 0.8, 0.8)],
)
def test_tiff_resolution_tags(tmp_path, image, unit, per_unit, expected_nm):
    path = tmp_path / "res.tiff"
    tifffile.imwrite(path, image, resolution=(per_unit, per_unit), resolutionunit=unit)
    out = read_image(path)
    assert out.pixel_size_nm == pytest.approx(expected_nm, rel=1e-6)
    assert out.metadata["pixel_size_source"] == "tiff_resolution"


def test_tiff_display_dpi_and_unitless_resolution_are_not_calibrations(tmp_path, image):
    dpi = tmp_path / "dpi.tif"
    tifffile.imwrite(dpi, image, resolution=(72, 72), resolutionunit="INCH")
    assert read_image(dpi).pixel_size_nm is None
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(
        plain, image, resolution=(1, 1), resolutionunit="NONE", metadata={"unit": "nm"}
    )  # tifffile's JSON description, not ImageJ
    assert read_image(plain).pixel_size_nm is None


def test_argument_overrides_file_calibration(tmp_path, image):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, image, imagej=True, resolution=(0.5, 0.5), metadata={"unit": "nm"})
    out = read_image(path, pixel_size_nm=3.3)
    assert out.pixel_size_nm == 3.3 and out.metadata["pixel_size_source"] == "argument"
    assert out.metadata["file_pixel_size_nm"] == pytest.approx(2.0)


def test_rgb_tiff_becomes_luminance(tmp_path):
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, rgb, photometric="rgb")
    expected = 0.2125 * 200 + 0.7154 * 100 + 0.0721 * 50
    np.testing.assert_allclose(read_image(path).data, expected, rtol=1e-6)


def test_png_grey_and_rgb(tmp_path):
    grey = (np.arange(48 * 64) % 251).astype(np.uint8).reshape(48, 64)
    Image.fromarray(grey).save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    np.testing.assert_array_equal(out.data, grey.astype(np.float32))
    assert out.pixel_size_nm is None
    rgb = np.stack([grey, grey, grey], axis=-1)  # equal channels: luminance is the grey value
    Image.fromarray(rgb).save(tmp_path / "c.png")
    np.testing.assert_allclose(read_image(tmp_path / "c.png").data, grey, rtol=1e-6)
    deep = (np.arange(48 * 64) * 13).astype(np.uint16).reshape(48, 64)
    Image.fromarray(deep).save(tmp_path / "d.png")
    np.testing.assert_array_equal(read_image(tmp_path / "d.png").data, deep)


def test_jpeg_reads_close_to_original(tmp_path):
    y, x = np.mgrid[0:64, 0:64]
    smooth = (128 + 60 * np.sin(x / 9.0) * np.cos(y / 7.0)).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "s.jpg", quality=95)
    assert np.abs(read_image(tmp_path / "s.jpg").data - smooth).mean() < 2.0


def test_npy_round_trip_and_stack(tmp_path, image):
    np.save(tmp_path / "a.npy", image.astype(np.float64))
    out = read_image(tmp_path / "a.npy", pixel_size_nm=1.5)
    np.testing.assert_array_equal(out.data, image)
    assert out.pixel_size_nm == 1.5 and out.metadata["original_dtype"] == "float64"
    np.save(tmp_path / "s.npy", np.stack([image, 2 * image]))
    np.testing.assert_array_equal(read_image(tmp_path / "s.npy", frame=1).data, 2 * image)


@pytest.mark.parametrize("version", [3, 4])
def test_dm_round_trip(tmp_path, image, version):
    pytest.importorskip("rsciio")
    path = tmp_path / f"a.dm{version}"
    _write_dm(path, image, 0.0042, "µm", version)
    out = read_image(path)
    np.testing.assert_array_equal(out.data, image)
    assert out.pixel_size_nm == pytest.approx(4.2, rel=1e-6)
    assert out.metadata["pixel_size_source"] == "dm_calibration"
    stack = np.stack([np.zeros((40, 40), np.int16), np.full((40, 40), 7, np.int16)])
    _write_dm(tmp_path / "s.dm4", stack, 1.5, "nm", 4)
    out = read_image(tmp_path / "s.dm4", frame=1)
    assert out.pixel_size_nm == pytest.approx(1.5) and np.all(out.data == 7)


def test_corrupt_dm_is_a_clean_input_error(tmp_path):
    path = tmp_path / "broken.dm3"
    path.write_bytes(b"\x00\x00\x00\x03garbage" * 10)
    with pytest.raises(InputError, match="broken.dm3"):
        read_image(path)


def test_dm_without_library_says_what_to_install(tmp_path, monkeypatch):
    path = tmp_path / "x.dm4"
    path.write_bytes(b"\0" * 64)
    monkeypatch.setitem(sys.modules, "rsciio.digitalmicrograph", None)
    with pytest.raises(InputError, match="x.dm4.*rosettasciio"):
        read_image(path)


def test_unit_to_nm():
    assert unit_to_nm("micron") == 1e3 and unit_to_nm("µm") == 1e3 and unit_to_nm("μm") == 1e3
    assert unit_to_nm("nm") == 1.0 and unit_to_nm("Å") == pytest.approx(0.1)
    assert unit_to_nm("pixel") is None and unit_to_nm("") is None and unit_to_nm(None) is None


def test_experimental_image_reads():
    if not EXPERIMENTAL.exists():
        pytest.skip("experimental image not shipped")
    out = read_image(EXPERIMENTAL)
    assert out.shape == (512, 512) and out.pixel_size_nm is None
    assert out.metadata["original_dtype"] == "float64"


# ----------------------------------------------------------------------------- bad input
def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(InputError, match="nope.tif: no such file"):
        read_image(tmp_path / "nope.tif")
    (tmp_path / "a.xyz").write_bytes(b"1234")
    with pytest.raises(InputError, match=r"a.xyz: unknown image type '.xyz'"):
        read_image(tmp_path / "a.xyz")


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((40, 40, 40, 2)), "expected a 2-D image or a 3-D stack"),
        (np.zeros(100), "expected a 2-D image"),
        (np.zeros((40, 40), np.complex64), "complex"),
        (np.zeros((0, 40)), "empty"),
        (np.zeros((31, 64)), "smaller than 32"),
        (np.where(np.eye(40) > 0, np.nan, 0.0), "40 pixel\\(s\\) are NaN or infinite"),
        (np.full((40, 40), np.inf), "NaN or infinite"),
        (np.full((40, 40), 1e300), "overflow float32"),
    ],
)
def test_bad_arrays(tmp_path, array, message):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(InputError, match=f"bad.npy.*{message}"):
        read_image(path)


def test_pickled_npy_is_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="obj.npy"):
        read_image(tmp_path / "obj.npy")


@pytest.mark.parametrize("name", ["c.tif", "c.png", "c.jpg", "c.npy"])
def test_corrupt_files(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"this is not an image" * 20)
    with pytest.raises(InputError, match=name):
        read_image(path)


def test_truncated_tiff(tmp_path, image):
    path = tmp_path / "t.tif"
    tifffile.imwrite(path, image)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(InputError, match="t.tif"):
        read_image(path)


def test_bad_pixel_size_and_frame_arguments(tmp_path, image):
    np.save(tmp_path / "a.npy", image)
    with pytest.raises(InputError, match="pixel_size_nm must be positive"):
        read_image(tmp_path / "a.npy", pixel_size_nm=-1.0)
    with pytest.raises(InputError, match="frame must be an integer"):
        read_image(tmp_path / "a.npy", frame=0.5)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="frame 1 out of range"):
        read_image(tmp_path / "a.npy", frame=1)
