"""Tests for ltemfactory.ovf: OVF 1.0/2.0 reading and OVF 2.0 writing."""

from __future__ import annotations

import logging
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ltemfactory.errors import InputError
from ltemfactory.ovf import OvfField, read_magnetization, read_ovf, write_ovf

CELL = (1.0e-9, 2.0e-9, 3.5e-9)
ORIGIN = (1.0e-8, -2.0e-8, 5.0e-9)


def _random_field(shape=(3, 2, 5, 7), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape)


# ------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("fmt", ["text", "binary4", "binary8"])
def test_round_trip(tmp_path: Path, fmt: str) -> None:
    m = _random_field()
    path = tmp_path / f"m_{fmt}.ovf"
    write_ovf(path, m, CELL, fmt=fmt, origin_m=ORIGIN, title="my field", value_unit="A/m")
    field = read_ovf(path)
    assert isinstance(field, OvfField)
    assert field.m.shape == (3, 2, 5, 7)
    assert field.m.dtype == np.float64
    assert field.shape == (2, 5, 7)
    if fmt == "binary4":
        np.testing.assert_array_equal(field.m, m.astype(np.float32).astype(np.float64))
        np.testing.assert_allclose(field.m, m, rtol=np.finfo(np.float32).eps, atol=0)
    else:
        np.testing.assert_array_equal(field.m, m)
    assert field.cell_size_m == CELL
    assert field.origin_m == ORIGIN
    assert field.title == "my field"
    assert field.value_unit == "A/m"
    assert field.value_multiplier == 1.0
    assert field.version == 2


@settings(max_examples=25, deadline=None)
@given(
    nz=st.integers(1, 3),
    ny=st.integers(1, 6),
    nx=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
    fmt=st.sampled_from(["text", "binary4", "binary8"]),
    cell=st.tuples(*[st.floats(1e-12, 1e-3, allow_nan=False)] * 3),
    scale=st.sampled_from([1e-300, 1e-3, 1.0, 8e5, 1e30]),
)
def test_round_trip_random_shapes(nz, ny, nx, seed, fmt, cell, scale) -> None:
    m = np.random.default_rng(seed).normal(size=(3, nz, ny, nx)) * scale
    if fmt == "binary4":
        m = np.clip(m, -1e30, 1e30)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.ovf"
        write_ovf(path, m, cell, fmt=fmt)
        field = read_ovf(path)
    expected = m.astype(np.float32).astype(np.float64) if fmt == "binary4" else m
    np.testing.assert_array_equal(field.m, expected)
    assert field.cell_size_m == tuple(cell)
    assert field.origin_m == (0.0, 0.0, 0.0)


def test_write_accepts_single_layer(tmp_path: Path) -> None:
    m = _random_field((3, 4, 6))
    write_ovf(tmp_path / "m.ovf", m, CELL, fmt="binary8")
    field = read_ovf(tmp_path / "m.ovf")
    assert field.m.shape == (3, 1, 4, 6)
    np.testing.assert_array_equal(field.m[:, 0], m)


def test_binary4_header_and_check_value(tmp_path: Path) -> None:
    m = _random_field((3, 1, 2, 3))
    path = tmp_path / "m.ovf"
    write_ovf(path, m, CELL, origin_m=ORIGIN, description=["line one", "line two"])
    raw = path.read_bytes()
    assert raw.startswith(b"# OOMMF OVF 2.0\n# Segment count: 1\n# Begin: Segment\n")
    marker = b"# Begin: Data Binary 4\n"
    start = raw.index(marker) + len(marker)
    assert raw[start : start + 4] == struct.pack("<f", 1234567.0) == bytes.fromhex("38b49649")
    values = np.frombuffer(raw, dtype="<f4", count=18, offset=start + 4)
    # file order is x fastest, then y, then z = C order of (nz, ny, nx, 3)
    np.testing.assert_array_equal(values, m.transpose(1, 2, 3, 0).astype(np.float32).ravel())
    assert raw[start + 4 + 18 * 4 :] == b"\n# End: Data Binary 4\n# End: Segment\n"
    header = raw[:start].decode("ascii")
    for record in [
        "# Title: ltemfactory",
        "# meshtype: rectangular",
        "# meshunit: m",
        "# xmin: 1e-08",
        "# ymin: -2e-08",
        "# zmin: 5e-09",
        "# xmax: ",
        "# ymax: ",
        "# zmax: ",
        "# valuedim: 3",
        "# valuelabels: m_x m_y m_z",
        "# valueunits: 1 1 1",
        "# Desc: line one\n# Desc: line two",
        "# xbase: 1.05e-08",
        "# ybase: -1.9e-08",
        "# zbase: 6.75e-09",
        "# xnodes: 3",
        "# ynodes: 2",
        "# znodes: 1",
        "# xstepsize: 1e-09",
        "# ystepsize: 2e-09",
        "# zstepsize: 3.5e-09",
        "# End: Header",
    ]:
        assert record in header, record


# ------------------------------------------------------------------------------ foreign files

MUMAX_TEXT = """\
# OOMMF OVF 2.0
# Segment count: 1
# Begin: Segment
# Begin: Header
# Title: m
# meshtype: rectangular
# meshunit: m
# xmin: 0
# ymin: 0
# zmin: 0
# xmax: 8e-09
# ymax: 8e-09
# zmax: 2e-09
# valuedim: 3
# valuelabels: m_x m_y m_z
# valueunits: 1 1 1
# Desc: Total simulation time:  0  s
# xbase: 2e-09
# ybase: 2e-09
# zbase: 1e-09
# xnodes: 2
# ynodes: 2
# znodes: 1
# xstepsize: 4e-09
# ystepsize: 4e-09
# zstepsize: 2e-09
# End: Header
# Begin: Data Text
1 0 0 
0 1 0 
0 0 1 
0.6 0.8 0 
# End: Data Text
# End: Segment
"""  # noqa: W291 - mumax3 ends every data line with a space


def test_mumax3_text_file_ordering(tmp_path: Path) -> None:
    path = tmp_path / "m000000.ovf"
    path.write_text(MUMAX_TEXT)
    field = read_ovf(path)
    assert field.m.shape == (3, 1, 2, 2)
    # x fastest: (row 0, col 0), (row 0, col 1), (row 1, col 0), (row 1, col 1)
    np.testing.assert_array_equal(field.m[:, 0, 0, 0], [1, 0, 0])
    np.testing.assert_array_equal(field.m[:, 0, 0, 1], [0, 1, 0])
    np.testing.assert_array_equal(field.m[:, 0, 1, 0], [0, 0, 1])
    np.testing.assert_array_equal(field.m[:, 0, 1, 1], [0.6, 0.8, 0])
    assert field.cell_size_m == (4e-9, 4e-9, 2e-9)
    assert field.origin_m == (0.0, 0.0, 0.0)
    assert field.title == "m"
    assert field.value_unit == "1"
    assert field.description == ("Total simulation time:  0  s",)


def test_crlf_and_case_insensitive_header(tmp_path: Path) -> None:
    text = MUMAX_TEXT.replace("# xnodes:", "#  XNodes :").replace("# Title: m", "## a comment")
    text = text.replace("# meshtype: rectangular", "# MeshType: Rectangular ## comment")
    path = tmp_path / "m.ovf"
    path.write_bytes(text.replace("\n", "\r\n").encode())
    field = read_ovf(path)
    assert field.m.shape == (3, 1, 2, 2)
    assert field.title == ""
    np.testing.assert_array_equal(field.m[:, 0, 1, 1], [0.6, 0.8, 0])


OVF1_HEADER = """\
# OOMMF: rectangular mesh v1.0
# Segment count: 1
# Begin: Segment
# Begin: Header
# Title: an OVF 1.0 file  ## comment
# Desc: written by hand
# meshtype: rectangular
# meshunit: nm
# xbase: 0.5
# ybase: 1
# zbase: 1.5
# xstepsize: 1
# ystepsize: 2
# zstepsize: 3
# xnodes: 3
# ynodes: 1
# znodes: 2
# xmin: 0
# ymin: 0
# zmin: 0
# xmax: 3
# ymax: 2
# zmax: 6
# boundary: 0 0 0 3 0 0 3 2 0 0 2 0 0 0 0
# valueunit: A/m
# valuemultiplier: 800000
# ValueRangeMinMag: 1e-8
# ValueRangeMaxMag: 1
# End: Header
"""

OVF1_VALUES = np.arange(18, dtype=np.float64).reshape(6, 3) / 20.0 - 0.4


def _expected_ovf1_m() -> np.ndarray:
    return OVF1_VALUES.reshape(2, 1, 3, 3).transpose(3, 0, 1, 2)


def test_ovf1_text(tmp_path: Path) -> None:
    lines = "\n".join(" ".join(repr(v) for v in row) for row in OVF1_VALUES.tolist())
    path = tmp_path / "m.omf"
    path.write_text(
        OVF1_HEADER
        + "# Begin: Data Text\n# a comment inside text data\n"
        + lines
        + "\n# End: Data Text\n# End: Segment\n"
    )
    field = read_ovf(path)
    assert field.version == 1
    np.testing.assert_array_equal(field.m, _expected_ovf1_m())
    assert field.value_unit == "A/m"
    assert field.value_multiplier == 800000.0
    assert field.title == "an OVF 1.0 file"
    np.testing.assert_allclose(field.cell_size_m, (1e-9, 2e-9, 3e-9), rtol=1e-15)
    assert field.origin_m == (0.0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("width", "code", "check"), [(4, ">f", 1234567.0), (8, ">d", 1.2345678901234500e14)]
)
def test_ovf1_binary_big_endian(tmp_path: Path, width: int, code: str, check: float) -> None:
    body = struct.pack(code, check) + struct.pack(
        f">{OVF1_VALUES.size}{code[1]}", *OVF1_VALUES.ravel()
    )
    path = tmp_path / "m.omf"
    path.write_bytes(
        OVF1_HEADER.encode()
        + f"# Begin: Data Binary {width}\n".encode()
        + body
        + f"\n# End: Data Binary {width}\n# End: Segment\n".encode()
    )
    field = read_ovf(path)
    expected = _expected_ovf1_m()
    if width == 4:
        expected = expected.astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(field.m, expected)


def test_origin_from_base_when_min_missing(tmp_path: Path) -> None:
    text = MUMAX_TEXT.replace("# xmin: 0\n", "").replace("# xbase: 2e-09", "# xbase: 3e-09")
    path = tmp_path / "m.ovf"
    path.write_text(text)
    assert read_ovf(path).origin_m == pytest.approx((1e-9, 0.0, 0.0), abs=1e-24)


# ------------------------------------------------------------------------------ read errors


def _write(tmp_path: Path, data: str | bytes, name: str = "bad.ovf") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _binary4_file(tmp_path: Path, m: np.ndarray | None = None) -> Path:
    path = tmp_path / "good.ovf"
    write_ovf(path, _random_field((3, 1, 2, 3)) if m is None else m, CELL, fmt="binary4")
    return path


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        ("hello world\n", "not an OVF file"),
        ("", "not an OVF file"),
        (MUMAX_TEXT.replace("# OOMMF OVF 2.0", "# OOMMF OVF 3.0"), "not an OVF file"),
        (OVF1_HEADER.replace("rectangular mesh", "irregular mesh"), "irregular"),
        (MUMAX_TEXT.replace("meshtype: rectangular", "meshtype: irregular"), "rectangular"),
        (MUMAX_TEXT.replace("# xnodes: 2\n", ""), "'xnodes' is missing"),
        (MUMAX_TEXT.replace("# zstepsize: 2e-09\n", ""), "'zstepsize' is missing"),
        (MUMAX_TEXT.replace("# valuedim: 3\n", ""), "'valuedim' is missing"),
        (MUMAX_TEXT.replace("# meshtype: rectangular\n", ""), "'meshtype' is missing"),
        (MUMAX_TEXT.replace("# valuedim: 3", "# valuedim: 1"), "valuedim is 1"),
        (MUMAX_TEXT.replace("# xnodes: 2", "# xnodes: two"), "'xnodes' must be an integer"),
        (MUMAX_TEXT.replace("# ystepsize: 4e-09", "# ystepsize: 0"), "'ystepsize' must be > 0"),
        (MUMAX_TEXT.replace("meshunit: m", "meshunit: furlong"), "meshunit 'furlong'"),
        (
            MUMAX_TEXT.replace("0.6 0.8 0 \n", ""),
            "expected 12 values (xnodes*ynodes*znodes*3), found 9",
        ),
        (MUMAX_TEXT.replace("0.6 0.8 0 ", "0.6 0.8 0 1"), "expected 12 values"),
        (MUMAX_TEXT.replace("0.6 0.8 0 ", "0.6 nan 0"), "non-finite"),
        (MUMAX_TEXT.replace("0.6 0.8 0 ", "0.6 inf 0"), "non-finite"),
        (MUMAX_TEXT.replace("0.6 0.8 0 ", "0.6 abc 0"), "non-number: 'abc'"),
        (MUMAX_TEXT.replace("Data Text", "Data Binary 2"), "unknown data format 'Binary 2'"),
        (MUMAX_TEXT.split("# Begin: Data")[0], "no '# Begin: Data"),
    ],
)
def test_read_errors(tmp_path: Path, content: str, phrase: str) -> None:
    path = _write(tmp_path, content)
    with pytest.raises(InputError, match="^" + str(path).replace("\\", "\\\\")) as info:
        read_ovf(path)
    assert phrase in str(info.value)


def test_wrong_check_value_endianness(tmp_path: Path) -> None:
    raw = _binary4_file(tmp_path).read_bytes()
    marker = b"# Begin: Data Binary 4\n"
    start = raw.index(marker) + len(marker)
    swapped = raw[:start] + struct.pack(">f", 1234567.0) + raw[start + 4 :]
    with pytest.raises(InputError, match=r"expected 1234567\.0, found .*wrong byte order"):
        read_ovf(_write(tmp_path, swapped))
    corrupted = raw[:start] + struct.pack("<f", 1.0) + raw[start + 4 :]
    with pytest.raises(InputError, match=r"expected 1234567\.0, found 1\.0 .*corrupted"):
        read_ovf(_write(tmp_path, corrupted))


def test_ovf1_little_endian_rejected(tmp_path: Path) -> None:
    body = struct.pack("<d", 123456789012345.0) + OVF1_VALUES.astype("<f8").tobytes()
    path = _write(
        tmp_path,
        OVF1_HEADER.encode() + b"# Begin: Data Binary 8\n" + body + b"\n# End: Data Binary 8\n",
    )
    with pytest.raises(InputError, match=r"expected 123456789012345\.0.*big-endian"):
        read_ovf(path)


def test_truncated_binary(tmp_path: Path) -> None:
    raw = _binary4_file(tmp_path).read_bytes()
    marker = b"# Begin: Data Binary 4\n"
    start = raw.index(marker) + len(marker)
    cut = raw[: start + 4 + 10 * 4]  # check value + 10 of 18 values, no trailer
    with pytest.raises(InputError, match="truncated: expected 18 values .* found 10"):
        read_ovf(_write(tmp_path, cut))
    # 17 values followed by a proper trailer: still truncated, not "too many"
    short = raw[: start + 4 + 17 * 4] + b"\n# End: Data Binary 4\n# End: Segment\n"
    with pytest.raises(InputError, match="truncated: expected 18 values .* found 17"):
        read_ovf(_write(tmp_path, short))
    with pytest.raises(InputError, match="found 0"):
        read_ovf(_write(tmp_path, raw[:start]))


def test_binary_more_values_than_header(tmp_path: Path) -> None:
    raw = _binary4_file(tmp_path).read_bytes()
    raw = raw.replace(b"# xnodes: 3", b"# xnodes: 2")
    with pytest.raises(InputError, match="more than the expected 12 values"):
        read_ovf(_write(tmp_path, raw))


def test_binary_non_finite(tmp_path: Path) -> None:
    raw = _binary4_file(tmp_path).read_bytes()
    marker = b"# Begin: Data Binary 4\n"
    start = raw.index(marker) + len(marker) + 4
    raw = raw[:start] + struct.pack("<f", float("nan")) + raw[start + 4 :]
    with pytest.raises(InputError, match="1 non-finite values"):
        read_ovf(_write(tmp_path, raw))


def test_missing_file() -> None:
    with pytest.raises(FileNotFoundError):
        read_ovf("/nonexistent/file.ovf")


# ------------------------------------------------------------------------------ writing


def test_write_is_atomic_on_validation_error(tmp_path: Path) -> None:
    path = _binary4_file(tmp_path)
    before = path.read_bytes()
    bad = _random_field((3, 1, 2, 3))
    bad[1, 0, 1, 2] = np.nan
    with pytest.raises(InputError, match="m holds 1 non-finite"):
        write_ovf(path, bad, CELL)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.ovf"]


def test_write_is_atomic_on_io_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _binary4_file(tmp_path)
    before = path.read_bytes()

    def failing_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_ovf(path, _random_field((3, 2, 4, 4)), CELL, fmt="binary8")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.ovf"]


def test_write_replaces_existing_file(tmp_path: Path) -> None:
    path = _binary4_file(tmp_path)
    m = _random_field((3, 2, 3, 4), seed=5)
    write_ovf(path, m, CELL, fmt="binary8")
    np.testing.assert_array_equal(read_ovf(path).m, m)


@pytest.mark.parametrize(
    ("kwargs", "phrase"),
    [
        ({"m": np.zeros((2, 4, 4))}, "m must have shape"),
        ({"m": np.zeros((3, 4))}, "m must have shape"),
        ({"m": np.zeros((3, 0, 4))}, "m must have shape"),
        ({"m": np.zeros((3, 2, 2), dtype=complex)}, "m must be a real numeric array"),
        ({"cell_size_m": (1e-9, 0.0, 1e-9)}, "cell_size_m must be > 0"),
        ({"cell_size_m": (1e-9, 1e-9)}, "cell_size_m must be three numbers"),
        ({"cell_size_m": (1e-9, np.inf, 1e-9)}, "cell_size_m must be finite"),
        ({"origin_m": "abc"}, "origin_m must be three numbers"),
        ({"fmt": "binary2"}, "fmt must be one of"),
        ({"title": "two\nlines"}, "title must be a single line"),
        ({"value_unit": ""}, "value_unit must not be empty"),
        ({"m": np.full((3, 2, 2), 1e39), "fmt": "binary4"}, "float32 range"),
    ],
)
def test_write_argument_errors(tmp_path: Path, kwargs: dict, phrase: str) -> None:
    args = {"m": np.zeros((3, 2, 2)), "cell_size_m": CELL} | kwargs
    with pytest.raises(InputError, match=phrase):
        write_ovf(tmp_path / "m.ovf", **args)
    assert list(tmp_path.iterdir()) == []


def test_value_unit_with_space_round_trips(tmp_path: Path) -> None:
    write_ovf(tmp_path / "m.ovf", np.ones((3, 1, 1)), CELL, value_unit="kA / m", fmt="text")
    assert read_ovf(tmp_path / "m.ovf").value_unit == "kA / m"


# ------------------------------------------------------------------------------ read_magnetization


def test_read_magnetization_npy_layouts(tmp_path: Path) -> None:
    m = _random_field((3, 2, 4, 5))
    unit = m / np.linalg.norm(m, axis=0)
    cases = {
        "cf4.npy": m,
        "cl4.npy": m.transpose(1, 2, 3, 0),
        "cf3.npy": m[:, 0],
        "cl3.npy": m[:, 0].transpose(1, 2, 0),
    }
    for name, arr in cases.items():
        np.save(tmp_path / name, arr.astype(np.float32) if name.startswith("cl") else arr)
    for name in ("cf4.npy", "cl4.npy"):
        got, cell = read_magnetization(tmp_path / name)
        assert cell is None
        assert got.shape == (3, 2, 4, 5)
        np.testing.assert_allclose(got, unit, rtol=1e-6)
    for name in ("cf3.npy", "cl3.npy"):
        got, cell = read_magnetization(tmp_path / name)
        assert got.shape == (3, 1, 4, 5)
        np.testing.assert_allclose(got[:, 0], unit[:, 0], rtol=1e-6)


def test_read_magnetization_zero_cells_and_errors(tmp_path: Path) -> None:
    m = np.zeros((3, 3, 4))
    m[2, 1:, :] = 1.0
    np.save(tmp_path / "holes.npy", m)
    got, _ = read_magnetization(tmp_path / "holes.npy")
    np.testing.assert_array_equal(got[:, 0], m)

    m[0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", m)
    with pytest.raises(InputError, match="non-finite"):
        read_magnetization(tmp_path / "nan.npy")
    np.save(tmp_path / "shape.npy", np.zeros((4, 5, 6)))
    with pytest.raises(InputError, match="is not a magnetisation"):
        read_magnetization(tmp_path / "shape.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(InputError, match="not a readable .npy"):
        read_magnetization(tmp_path / "junk.npy")


def test_read_magnetization_ovf_in_a_per_m_logs_ms(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    m = _random_field((3, 1, 3, 4))
    m /= np.linalg.norm(m, axis=0)
    m[:, 0, 0, 0] = 0.0  # an empty cell
    path = tmp_path / "M.ovf"
    write_ovf(path, m * 5.8e5, CELL, value_unit="A/m", fmt="binary8")
    with caplog.at_level(logging.INFO, logger="ltemfactory.ovf"):
        got, cell = read_magnetization(path)
    assert cell == CELL
    np.testing.assert_allclose(got, m, atol=1e-15)
    assert "Ms = 580000 A/m" in caplog.text


def test_read_magnetization_ovf1_multiplier(tmp_path: Path, caplog) -> None:
    lines = "\n".join("0 0 1" for _ in range(6))
    path = _write(
        tmp_path,
        OVF1_HEADER + "# Begin: Data Text\n" + lines + "\n# End: Data Text\n# End: Segment\n",
        name="m.omf",
    )
    with caplog.at_level(logging.INFO, logger="ltemfactory.ovf"):
        got, cell = read_magnetization(path)
    assert got.shape == (3, 2, 1, 3)
    np.testing.assert_array_equal(got[2], 1.0)
    assert "Ms = 800000 A/m" in caplog.text
