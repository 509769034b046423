"""Read and write OOMMF Vector Field (OVF) files, the exchange format of mumax3, OOMMF and ubermag.

Supported on reading: OVF 2.0 (``# OOMMF OVF 2.0``) and OVF 1.0 (``# OOMMF: rectangular mesh
v1.0``, also v0.99, v0.0a0 and ``# OOMMF OVF 1.0``), rectangular meshes only, with
data blocks ``Text``, ``Binary 4`` or ``Binary 8``. Binary data are little-endian in OVF 2.0 and
big-endian (network byte order) in OVF 1.0; the first binary value is a check value
(1234567.0 for Binary 4, 123456789012345.0 for Binary 8) that catches byte-order mix-ups and
corrupted files. Only the first segment of a file is read. Writing always produces OVF 2.0 with
the same header records mumax3 writes.

Array convention: a magnetisation array is ``(3, nz, ny, nx)`` = (component, layer, row, col)
with components (mx, my, mz); x runs along columns, y along rows. OVF stores the vectors with x
fastest, then y, then z, which is exactly C order of an ``(nz, ny, nx, 3)`` array, so reading
is ``values.reshape(nz, ny, nx, 3).transpose(3, 0, 1, 2)``.

All problems with a file raise :class:`ltemfactory.errors.InputError` with a message that
starts with the file path; problems with arguments to :func:`write_ovf` raise ``InputError``
naming the argument.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ltemfactory.errors import InputError
from ltemfactory.files import write_bytes_atomic

log = logging.getLogger(__name__)

__all__ = ["OvfField", "read_magnetization", "read_ovf", "write_ovf"]

CHECK_VALUE_4 = 1234567.0
"""Check value that starts a ``Binary 4`` data block."""
CHECK_VALUE_8 = 123456789012345.0
"""Check value that starts a ``Binary 8`` data block."""

_FORMATS = {"text": "Text", "binary4": "Binary 4", "binary8": "Binary 8"}
_MESH_UNITS = {
    "m": 1.0,
    "cm": 1e-2,
    "mm": 1e-3,
    "um": 1e-6,
    "µm": 1e-6,  # micro sign
    "μm": 1e-6,  # Greek mu
    "nm": 1e-9,
    "a": 1e-10,
    "å": 1e-10,
    "angstrom": 1e-10,
}
_OVF1_REVISIONS = ("v1.0", "v0.99", "v0.0a0")
_END_DATA_RE = re.compile(rb"#[ \t]*end[ \t]*:[ \t]*data", re.IGNORECASE)
_UNIT_NORM_RTOL = 1e-3
"""Relative tolerance for "all nonzero vectors have unit length" (float32 files give ~1e-7)."""


@dataclass(frozen=True, eq=False)
class OvfField:
    """The content of one OVF file (first segment), values as stored.

    ``eq=False``: instances compare by identity (``==`` on arrays would be ambiguous).
    """

    m: np.ndarray
    """Vector values, shape (3, nz, ny, nx), float64, exactly as stored (not normalised and not
    multiplied by ``value_multiplier``)."""
    cell_size_m: tuple[float, float, float]
    """(dx, dy, dz) [m]."""
    origin_m: tuple[float, float, float]
    """(xmin, ymin, zmin) [m]: the corner of the mesh bounding box (not the first cell centre)."""
    title: str
    """The ``Title`` header record ("" if absent)."""
    value_unit: str
    """Unit of the values, e.g. "A/m" or "1" ("" if the file does not say). OVF 2.0 files may list
    one unit per component; if they differ they are joined with spaces."""
    value_multiplier: float = 1.0
    """OVF 1.0 ``valuemultiplier`` (true value = stored value * multiplier); 1.0 for OVF 2.0."""
    description: tuple[str, ...] = ()
    """The ``Desc`` header records, in order."""
    version: int = 2
    """OVF version of the file read: 1 or 2."""

    @property
    def shape(self) -> tuple[int, int, int]:
        """(nz, ny, nx)."""
        _, nz, ny, nx = self.m.shape
        return nz, ny, nx


# --------------------------------------------------------------------------------------------
# reading


def _split_record(line: str) -> tuple[str, str] | None:
    """Parse one ``# label: value ## comment`` line; None for blank and comment-only lines.

    Following the OVF specification the label is case-insensitive and loses all spaces and
    tabs; the value runs from the first colon to a ``##`` comment marker or the end of line.
    """
    if line.startswith("##"):
        return None
    body = line[1:]
    cut = body.find("##")
    if cut >= 0:
        body = body[:cut]
    if not body.strip():
        return None
    label, colon, value = body.partition(":")
    if not colon:
        return ("".join(label.split()).lower(), "")
    return ("".join(label.split()).lower(), value.strip())


def _tcl_list(value: str) -> list[str]:
    """Split a simple Tcl list (whitespace-separated words, ``{...}`` groups words)."""
    return [a if a else b for a, b in re.findall(r"\{([^}]*)\}|(\S+)", value)]


def _identify(path: Path, first_line: str) -> int:
    """Return the OVF version from the file type identification line."""
    words = " ".join(first_line.lower().split())
    if words == "# oommf ovf 2.0":
        return 2
    if words == "# oommf ovf 1.0":
        return 1
    record = _split_record(first_line) if first_line.startswith("#") else None
    if record is not None and record[0] == "oommf":
        value = " ".join(record[1].lower().split())
        for rev in _OVF1_REVISIONS:
            if value == f"rectangular mesh {rev}":
                return 1
            if value == f"irregular mesh {rev}":
                raise InputError(
                    f"{path}: irregular-mesh OVF files are not supported (only rectangular meshes)"
                )
    shown = first_line if len(first_line) <= 60 else first_line[:57] + "..."
    raise InputError(
        f"{path}: not an OVF file: first line is {shown!r}, expected '# OOMMF OVF 2.0' or "
        "'# OOMMF: rectangular mesh v1.0'"
    )


def _parse_header(path: Path, raw: bytes) -> tuple[int, dict[str, str], list[str], str, int]:
    """Scan the header lines of ``raw``.

    Returns (version, records, desc lines, data representation as written, offset of the first
    byte after the ``# Begin: Data ...`` line).
    """
    records: dict[str, str] = {}
    desc: list[str] = []
    version = 0
    pos = 0
    lineno = 0
    while pos < len(raw):
        nl = raw.find(b"\n", pos)
        end = len(raw) if nl < 0 else nl
        line = raw[pos:end].decode("latin-1").rstrip("\r")
        pos = end + 1
        lineno += 1
        if lineno == 1:
            version = _identify(path, line)
            continue
        if not line.strip():
            continue
        if not line.startswith("#"):
            shown = line if len(line) <= 60 else line[:57] + "..."
            raise InputError(
                f"{path}: line {lineno} of the header does not start with '#': {shown!r}"
            )
        record = _split_record(line)
        if record is None:
            continue
        label, value = record
        if label == "begin" and value.lower().startswith("data"):
            return version, records, desc, value[4:].strip(), min(pos, len(raw))
        if label in ("begin", "end"):
            continue
        if label == "desc":
            desc.append(value)
        else:
            records.setdefault(label, value)
    if version == 0:
        raise InputError(f"{path}: not an OVF file: the file is empty")
    raise InputError(f"{path}: no '# Begin: Data ...' line: the file is truncated or not OVF")


def _require(path: Path, records: dict[str, str], key: str) -> str:
    if key not in records:
        raise InputError(f"{path}: header record '{key}' is missing")
    return records[key]


def _header_int(path: Path, records: dict[str, str], key: str) -> int:
    text = _require(path, records, key)
    try:
        value = int(text)
    except ValueError:
        raise InputError(
            f"{path}: header record '{key}' must be an integer, got {text!r}"
        ) from None
    if value < 1:
        raise InputError(f"{path}: header record '{key}' must be >= 1, got {value}")
    return value


def _header_float(path: Path, records: dict[str, str], key: str) -> float:
    text = _require(path, records, key)
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{path}: header record '{key}' must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise InputError(f"{path}: header record '{key}' must be finite, got {text!r}")
    return value


def _read_binary(
    path: Path, raw: bytes, offset: int, width: int, big_endian: bool, n: int, fmt_name: str
) -> np.ndarray:
    dtype = np.dtype(f"{'>' if big_endian else '<'}f{width}")
    check = CHECK_VALUE_4 if width == 4 else CHECK_VALUE_8
    # the data end at the newline before the last '# End: Data' line (or at the end of a
    # truncated file)
    last = None
    for last in _END_DATA_RE.finditer(raw, offset):  # noqa: B007 - keep the last match
        pass
    stop = len(raw)
    if last is not None:
        stop = last.start()
        if raw[stop - 2 : stop] == b"\r\n":
            stop -= 2
        elif raw[stop - 1 : stop] == b"\n":
            stop -= 1
    region = memoryview(raw)[offset:stop]
    if len(region) < width:
        raise InputError(
            f"{path}: data block ({fmt_name}) is truncated: expected {n} values "
            "(xnodes*ynodes*znodes*3) after the check value, found 0"
        )
    found_check = float(np.frombuffer(region, dtype=dtype, count=1)[0])
    if found_check != check:
        swapped = float(np.frombuffer(region, dtype=dtype.newbyteorder(), count=1)[0])
        expected_order = "big-endian (OVF 1.0)" if big_endian else "little-endian (OVF 2.0)"
        hint = (
            f"wrong byte order: this OVF version must be {expected_order}"
            if swapped == check
            else "the file is corrupted or was not written by an OVF-conforming program"
        )
        raise InputError(
            f"{path}: wrong {fmt_name} check value: expected {check!r}, found {found_check!r} "
            f"({hint})"
        )
    found = (len(region) - width) // width
    if found < n:
        raise InputError(
            f"{path}: data block ({fmt_name}) is truncated: expected {n} values "
            f"(xnodes*ynodes*znodes*3) after the check value, found {found}"
        )
    if bytes(region[width * (n + 1) :]).strip():
        raise InputError(
            f"{path}: data block ({fmt_name}) holds more than the expected {n} values "
            f"(xnodes*ynodes*znodes*3), found {found}: header and data disagree"
        )
    return np.frombuffer(region, dtype=dtype, count=n, offset=width).astype(np.float64)


def _read_text(path: Path, raw: bytes, offset: int, n: int) -> np.ndarray:
    tokens: list[str] = []
    for line in raw[offset:].decode("latin-1").splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            record = _split_record(stripped)
            if record is not None and record[0] == "end" and record[1].lower().startswith("data"):
                break
            continue  # comment lines are allowed inside text data blocks
        cut = stripped.find("#")
        if cut >= 0:
            stripped = stripped[:cut]
        tokens.extend(stripped.split())
    if len(tokens) != n:
        what = "is truncated" if len(tokens) < n else "holds too many values"
        raise InputError(
            f"{path}: data block (Text) {what}: expected {n} values (xnodes*ynodes*znodes*3), "
            f"found {len(tokens)}"
        )
    try:
        return np.array(tokens, dtype=np.float64)
    except ValueError:
        bad = next(t for t in tokens if not _is_float(t))
        raise InputError(f"{path}: data block (Text) holds a non-number: {bad!r}") from None


def _is_float(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _read_file(path: Path) -> bytes:
    """The bytes of ``path``; a missing file raises FileNotFoundError (as documented), any
    other failure to read it (a directory, no permission, an I/O error) InputError."""
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected an OVF file")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise InputError(f"{path}: cannot read the file ({exc.strerror or exc})") from None


def read_ovf(path: str | os.PathLike[str]) -> OvfField:
    """Read an OVF 1.0 or 2.0 file with a rectangular mesh.

    Required header records: ``meshtype`` (must be ``rectangular``), ``meshunit`` (m, cm, mm,
    um, nm or angstrom; lengths are converted to metres), ``xnodes``/``ynodes``/``znodes``,
    ``xstepsize``/``ystepsize``/``zstepsize`` and, for OVF 2.0, ``valuedim`` (must be 3). The
    origin is taken from ``xmin``/``ymin``/``zmin``, else from ``xbase - xstepsize/2`` etc., else
    0. Header labels are case-insensitive; ``##`` comments are ignored.

    Raises:
        InputError: the file cannot be read (a directory, no permission), is not OVF, uses an
            unsupported variant (irregular mesh, valuedim other than 3, unknown data format),
            lacks a header record, has a wrong binary check value, too few or too many values,
            or non-finite values. The message starts with the path.
        FileNotFoundError: the file does not exist.
    """
    path = Path(path)
    raw = _read_file(path)
    version, records, desc, representation, offset = _parse_header(path, raw)

    meshtype = _require(path, records, "meshtype").lower()
    if meshtype != "rectangular":
        raise InputError(
            f"{path}: meshtype {records['meshtype']!r} is not supported (only rectangular meshes)"
        )
    if version == 2:
        valuedim = _header_int(path, records, "valuedim")
        if valuedim != 3:
            raise InputError(
                f"{path}: valuedim is {valuedim}; only valuedim 3 (vector fields) is supported"
            )
    meshunit = _require(path, records, "meshunit")
    scale = _MESH_UNITS.get(meshunit.lower())
    if scale is None:
        raise InputError(
            f"{path}: meshunit {meshunit!r} is not supported (use one of "
            f"{', '.join(sorted(_MESH_UNITS))})"
        )
    nx, ny, nz = (_header_int(path, records, f"{a}nodes") for a in "xyz")
    steps = [_header_float(path, records, f"{a}stepsize") for a in "xyz"]
    for axis, step in zip("xyz", steps, strict=True):
        if step <= 0:
            raise InputError(f"{path}: header record '{axis}stepsize' must be > 0, got {step!r}")
    origin = []
    for axis, step in zip("xyz", steps, strict=True):
        if f"{axis}min" in records:
            origin.append(_header_float(path, records, f"{axis}min"))
        elif f"{axis}base" in records:
            origin.append(_header_float(path, records, f"{axis}base") - step / 2)
        else:
            origin.append(0.0)

    if version == 2:
        units = _tcl_list(records.get("valueunits", ""))
        value_unit = units[0] if units and all(u == units[0] for u in units) else " ".join(units)
        multiplier = 1.0
    else:
        value_unit = records.get("valueunit", "")
        multiplier = 1.0
        if "valuemultiplier" in records:
            multiplier = _header_float(path, records, "valuemultiplier")

    n = nx * ny * nz * 3
    rep = " ".join(representation.lower().split())
    if rep == "text":
        values = _read_text(path, raw, offset, n)
    elif rep in ("binary 4", "binary 8"):
        width = int(rep[-1])
        values = _read_binary(
            path, raw, offset, width, big_endian=version == 1, n=n, fmt_name=f"Binary {width}"
        )
    else:
        raise InputError(
            f"{path}: unknown data format {representation!r} in '# Begin: Data' "
            "(expected Text, Binary 4 or Binary 8)"
        )
    bad = int(np.count_nonzero(~np.isfinite(values)))
    if bad:
        raise InputError(f"{path}: data block holds {bad} non-finite values (NaN or inf)")

    if records.get("segmentcount", "1").strip() not in ("1", ""):
        log.warning(
            "%s: 'Segment count' is %s; only the first segment is read",
            path,
            records["segmentcount"],
        )

    m = np.ascontiguousarray(values.reshape(nz, ny, nx, 3).transpose(3, 0, 1, 2))
    return OvfField(
        m=m,
        cell_size_m=(steps[0] * scale, steps[1] * scale, steps[2] * scale),
        origin_m=(origin[0] * scale, origin[1] * scale, origin[2] * scale),
        title=records.get("title", ""),
        value_unit=value_unit,
        value_multiplier=multiplier,
        description=tuple(desc),
        version=version,
    )


# --------------------------------------------------------------------------------------------
# writing


def _validated_triple(name: str, value: object, *, positive: bool) -> tuple[float, float, float]:
    try:
        triple = tuple(float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise InputError(f"{name} must be three numbers (x, y, z), got {value!r}") from None
    if len(triple) != 3:
        raise InputError(f"{name} must be three numbers (x, y, z), got {len(triple)} values")
    if not all(math.isfinite(v) for v in triple):
        raise InputError(f"{name} must be finite, got {triple!r}")
    if positive and not all(v > 0 for v in triple):
        raise InputError(f"{name} must be > 0 in every direction, got {triple!r}")
    return triple  # type: ignore[return-value]


def _header_text(value: str, name: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{name} must be a string, got {type(value).__name__}")
    if "\n" in value or "\r" in value or "##" in value:
        raise InputError(f"{name} must be a single line without '##', got {value!r}")
    return value.strip()


def _fmt(x: float) -> str:
    return repr(float(x))


def write_ovf(
    path: str | os.PathLike[str],
    m: np.ndarray,
    cell_size_m: Sequence[float],
    *,
    fmt: str = "binary4",
    title: str = "ltemfactory",
    origin_m: Sequence[float] = (0.0, 0.0, 0.0),
    value_unit: str = "1",
    description: str | Sequence[str] | None = None,
) -> None:
    """Write a vector field as an OVF 2.0 file (rectangular mesh, valuedim 3).

    Args:
        path: output file; an existing file is replaced atomically (the data go to a temporary
            file in the same directory that is renamed over ``path`` only when complete).
        m: (3, nz, ny, nx) or (3, ny, nx) (one layer) array of (mx, my, mz), finite values.
        cell_size_m: (dx, dy, dz) [m], all > 0.
        fmt: "binary4" (float32, what mumax3 writes by default), "binary8" (float64, exact) or
            "text" (shortest repr of each float64, exact).
        title: the ``Title`` record.
        origin_m: (xmin, ymin, zmin) [m], corner of the mesh bounding box.
        value_unit: unit of the values, e.g. "1" for reduced magnetisation or "A/m".
        description: one string (may span several lines) or a sequence of lines, each written
            as a ``Desc`` record.

    Raises:
        InputError: an argument is invalid; the message names it. Nothing is written then.
    """
    if fmt not in _FORMATS:
        raise InputError(f"fmt must be one of {', '.join(_FORMATS)}, got {fmt!r}")
    arr = np.asarray(m)
    if arr.dtype.kind not in "biuf":
        raise InputError(f"m must be a real numeric array, got dtype {arr.dtype}")
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4 or arr.shape[0] != 3 or 0 in arr.shape:
        raise InputError(
            f"m must have shape (3, nz, ny, nx) or (3, ny, nx) with non-zero sizes, "
            f"got {np.asarray(m).shape}"
        )
    arr = arr.astype(np.float64, copy=False)
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise InputError(f"m holds {bad} non-finite values (NaN or inf)")
    dx, dy, dz = _validated_triple("cell_size_m", cell_size_m, positive=True)
    x0, y0, z0 = _validated_triple("origin_m", origin_m, positive=False)
    title = _header_text(title, "title")
    unit = _header_text(value_unit, "value_unit")
    if not unit:
        raise InputError("value_unit must not be empty")
    unit_word = unit if len(unit.split()) == 1 else "{" + unit + "}"
    if description is None:
        desc_lines: list[str] = []
    elif isinstance(description, str):
        desc_lines = description.splitlines()
    else:
        desc_lines = [line for item in description for line in str(item).splitlines()]
    desc_lines = [_header_text(line, "description") for line in desc_lines]

    _, nz, ny, nx = arr.shape
    records = (
        "OOMMF OVF 2.0",
        "Segment count: 1",
        "Begin: Segment",
        "Begin: Header",
        f"Title: {title}",
        "meshtype: rectangular",
        "meshunit: m",
        f"xmin: {_fmt(x0)}",
        f"ymin: {_fmt(y0)}",
        f"zmin: {_fmt(z0)}",
        f"xmax: {_fmt(x0 + nx * dx)}",
        f"ymax: {_fmt(y0 + ny * dy)}",
        f"zmax: {_fmt(z0 + nz * dz)}",
        "valuedim: 3",
        "valuelabels: m_x m_y m_z",
        f"valueunits: {unit_word} {unit_word} {unit_word}",
        *(f"Desc: {line}" for line in desc_lines),
        f"xbase: {_fmt(x0 + dx / 2)}",
        f"ybase: {_fmt(y0 + dy / 2)}",
        f"zbase: {_fmt(z0 + dz / 2)}",
        f"xnodes: {nx}",
        f"ynodes: {ny}",
        f"znodes: {nz}",
        f"xstepsize: {_fmt(dx)}",
        f"ystepsize: {_fmt(dy)}",
        f"zstepsize: {_fmt(dz)}",
        "End: Header",
        f"Begin: Data {_FORMATS[fmt]}",
    )
    header = "".join(f"# {r}\n" for r in records).encode("ascii", errors="backslashreplace")
    vectors = arr.transpose(1, 2, 3, 0).reshape(-1, 3)  # x fastest, then y, then z
    if fmt == "text":
        body = "".join(f"{a!r} {b!r} {c!r}\n" for a, b, c in vectors.tolist()).encode("ascii")
    else:
        width = 4 if fmt == "binary4" else 8
        check = CHECK_VALUE_4 if width == 4 else CHECK_VALUE_8
        dtype = np.dtype(f"<f{width}")
        with np.errstate(over="ignore"):
            data = vectors.astype(dtype)
        if not np.isfinite(data).all():
            raise InputError("m holds values beyond the float32 range; use fmt='binary8'")
        body = np.array([check], dtype=dtype).tobytes() + data.tobytes() + b"\n"
    footer = f"# End: Data {_FORMATS[fmt]}\n# End: Segment\n".encode("ascii")
    write_bytes_atomic(path, header + body + footer)


# --------------------------------------------------------------------------------------------
# convenience


def _npy_to_m(path: Path, arr: np.ndarray) -> np.ndarray:
    """Bring a .npy array to (3, nz, ny, nx): channel-first if the first axis has length 3,
    else channel-last if the last axis has length 3 (moved to the front)."""
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{path}: array must be real numeric, got dtype {arr.dtype}")
    if arr.ndim not in (3, 4) or 3 not in (arr.shape[0], arr.shape[-1]):
        raise InputError(
            f"{path}: array shape {arr.shape} is not a magnetisation; expected (3, ny, nx), "
            "(3, nz, ny, nx), (ny, nx, 3) or (nz, ny, nx, 3)"
        )
    if arr.shape[0] != 3:
        arr = np.moveaxis(arr, -1, 0)
    if arr.ndim == 3:
        arr = arr[:, None]
    if 0 in arr.shape:
        raise InputError(f"{path}: array shape {arr.shape} has an empty axis")
    return np.array(arr, dtype=np.float64)


def read_magnetization(
    path: str | os.PathLike[str],
) -> tuple[np.ndarray, tuple[float, float, float] | None]:
    """Load a magnetisation from an OVF file or a ``.npy`` array, normalised to unit length.

    ``.npy`` layouts: (3, ny, nx) and (3, nz, ny, nx) are channel-first; (ny, nx, 3) and
    (nz, ny, nx, 3) are channel-last. Rule: if the first axis has length 3 the array is taken
    as channel-first (also when the last axis has length 3 too); otherwise, if the last axis
    has length 3, it is moved to the front. Any other file suffix is read as OVF.

    Zero vectors (empty cells) are allowed and stay zero; every other vector is divided by its
    length. If the file's vectors are not of unit length and the OVF value unit is A/m, the
    saturation magnetisation Ms (median length times the OVF 1.0 value multiplier) is logged at
    INFO level; for other units a WARNING says that the vectors were normalised.

    Returns:
        (m, cell_size_m): m of shape (3, nz, ny, nx) (always 4-d), float64; cell_size_m is
        (dx, dy, dz) [m] for OVF files and None for ``.npy``.

    Raises:
        InputError: unreadable or malformed file, wrong shape, NaN or inf values.
    """
    path = Path(path)
    cell: tuple[float, float, float] | None
    if path.suffix.lower() == ".npy":
        try:
            loaded = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(f"{path}: not a readable .npy file: {exc}") from None
        if not isinstance(loaded, np.ndarray):  # an .npz archive under a .npy name
            close = getattr(loaded, "close", None)
            if close is not None:
                close()
            raise InputError(
                f"{path}: expected one array in an .npy file, got {type(loaded).__name__} "
                "(an .npz archive? save the magnetisation with numpy.save)"
            )
        m = _npy_to_m(path, loaded)
        unit, multiplier, cell = "", 1.0, None
    else:
        field = read_ovf(path)
        m = field.m.copy()
        unit, multiplier, cell = field.value_unit, field.value_multiplier, field.cell_size_m

    bad = int(np.count_nonzero(~np.isfinite(m)))
    if bad:
        raise InputError(f"{path}: magnetisation holds {bad} non-finite values (NaN or inf)")
    norms = np.sqrt(np.einsum("c...,c...->...", m, m))
    filled = norms > 0
    if not filled.any():
        log.warning("%s: all magnetisation vectors are zero", path)
        return m, cell
    lengths = norms[filled] * abs(multiplier)
    if not np.allclose(lengths, 1.0, rtol=0.0, atol=_UNIT_NORM_RTOL):
        lo, med, hi = float(lengths.min()), float(np.median(lengths)), float(lengths.max())
        if unit.replace(" ", "").lower() == "a/m":
            log.info(
                "%s: values in A/m; normalising, inferred Ms = %.6g A/m (median |M| over "
                "%d non-empty cells; range %.6g to %.6g)",
                path,
                med,
                lengths.size,
                lo,
                hi,
            )
        else:
            log.warning(
                "%s: vectors are not unit length (|m| from %.6g to %.6g, unit %r); normalising",
                path,
                lo,
                hi,
                unit,
            )
    m[:, filled] /= norms[filled]
    return m, cell
