"""Read experimental LTEM images (TIFF, DM3/DM4, PNG/JPEG, NPY) into one calibrated container.

Whatever the format, the result is an :class:`LtemImage`: one 2-D float32 frame (row, col) and the
pixel size [nm] when the file records a physical calibration. Bad input (missing, unreadable or
corrupt file, unknown extension, data that is not one finite real 2-D image of at least
:data:`MIN_SIZE_PX` pixels per side, a TIFF header announcing frames above
:data:`MAX_FRAME_PIXELS`) raises :class:`~ltemfactory.errors.InputError` naming the file and what
was expected.

Calibration sources, in order:

* the ``pixel_size_nm`` argument (overrides everything);
* TIFF written by ImageJ/Fiji: ``unit=`` in the ImageJ description and XResolution (pixels per
  unit). ImageJ's ``spacing`` is the z step of a stack, not the pixel size, so it is only kept
  in the metadata;
* other TIFF: XResolution with ResolutionUnit INCH or CENTIMETER. Resolutions coarser than
  :data:`MAX_TAG_PIXEL_NM` per pixel (72 or 300 dpi written by image editors) are display
  resolutions, not microscope calibrations, and are ignored (logged);
* DM3/DM4: the scale and unit of the two image axes (read with RosettaSciIO, an optional
  dependency: ``pip install rosettasciio``);
* PNG/JPEG and NPY carry no calibration.

Stacks (a multi-page TIFF, a 3-D NPY or DM array, an animated PNG/GIF) are read one frame at a
time: ``frame`` picks it (0-based). RGB(A) images become their luminance (ITU-R BT.709 weights,
the ones of :func:`skimage.color.rgb2gray`) on the scale of the stored values.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ltemfactory.errors import InputError

__all__ = [
    "MAX_FRAME_PIXELS",
    "MAX_TAG_PIXEL_NM",
    "MIN_SIZE_PX",
    "SUFFIXES",
    "LtemImage",
    "read_image",
    "unit_to_nm",
]

_log = logging.getLogger(__name__)

MIN_SIZE_PX = 32
"""Smallest accepted image side [px]: below it no skyrmion lattice can be measured."""

MAX_FRAME_PIXELS = 1 << 28
"""Largest accepted frame [px] (268 M, e.g. 16384 x 16384): a larger size read from a TIFF header
is a corrupt header (refused before decoding, which would allocate gigabytes)."""

MAX_TAG_PIXEL_NM = 1.0e4
"""Largest pixel size [nm] believed from inch/cm TIFF resolution tags (10 µm per pixel)."""

SUFFIXES = {
    ".tif": "tiff",
    ".tiff": "tiff",
    ".dm3": "dm",
    ".dm4": "dm",
    ".png": "pil",
    ".jpg": "pil",
    ".jpeg": "pil",
    ".gif": "pil",
    ".bmp": "pil",
    ".npy": "npy",
}
"""Recognised file suffixes (lower case) and the reader that handles each."""

_BT709 = np.array([0.2125, 0.7154, 0.0721])
"""Luminance weights of RGB (ITU-R BT.709, as :func:`skimage.color.rgb2gray`)."""

_UNITS_NM = {
    "pm": 1e-3,
    "å": 0.1,
    "a": 0.1,
    "angstrom": 0.1,
    "angstroms": 0.1,
    "nm": 1.0,
    "nanometer": 1.0,
    "nanometers": 1.0,
    "nanometre": 1.0,
    "nanometres": 1.0,
    "um": 1e3,
    "µm": 1e3,
    "μm": 1e3,
    "micron": 1e3,
    "microns": 1e3,
    "micrometer": 1e3,
    "micrometers": 1e3,
    "micrometre": 1e3,
    "micrometres": 1e3,
    "mm": 1e6,
    "millimeter": 1e6,
    "cm": 1e7,
    "centimeter": 1e7,
    "m": 1e9,
    "meter": 1e9,
    "metre": 1e9,
    "inch": 2.54e7,
    "in": 2.54e7,
}


@dataclass(frozen=True, eq=False)
class LtemImage:
    """One experimental image frame with its calibration.

    Attributes:
        data: float32 (row, col), read-only.
        pixel_size_nm: pixel size [nm], None when the file records no physical calibration.
        source: the file the frame was read from.
        metadata: JSON-serialisable facts about the read (format, frame, number of frames,
            original dtype, where the pixel size came from, raw calibration fields).
    """

    data: np.ndarray
    pixel_size_nm: float | None
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) [px]."""
        return (int(self.data.shape[0]), int(self.data.shape[1]))


def unit_to_nm(unit: str | None) -> float | None:
    """Nanometres in one ``unit`` (ImageJ/DM/TIFF spellings), None if it is not a length.

    Accepts e.g. 'nm', 'micron', 'µm', 'um', ImageJ's escaped '\\u00B5m', 'Å', 'cm', 'inch';
    'pixel', '' and unknown strings give None.
    """
    if unit is None:
        return None
    text = str(unit).strip().replace("\\u00B5", "µ").replace("\\u00b5", "µ")
    if text in ("Å", "Å"):
        return 0.1
    return _UNITS_NM.get(text.lower())


# ----------------------------------------------------------------------------- format readers
@dataclass
class _Raw:
    """What a format reader hands to the common checks."""

    frames: np.ndarray  # (n_frames, row, col) or (row, col); any dtype
    pixel_size_nm: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """Luminance of (..., 3|4) RGB(A), alpha dropped, on the scale of the stored values."""
    return np.asarray(rgb[..., :3], dtype=np.float64) @ _BT709


def _ratio(value: Any) -> float | None:
    """A TIFF RATIONAL tag value (num, den) or a number as float; None if unusable."""
    try:
        if isinstance(value, tuple | list):
            num, den = value[0], value[1]
            return float(num) / float(den) if den else None
        return float(value)
    except (TypeError, ValueError, IndexError):
        return None


def _tiff_calibration(tif: Any, path: Path) -> tuple[float | None, dict[str, Any]]:
    """Pixel size [nm] from ImageJ description or resolution tags; see the module docstring."""
    page = tif.pages[0]
    tags = page.tags
    xres = _ratio(tags["XResolution"].value) if "XResolution" in tags else None
    yres = _ratio(tags["YResolution"].value) if "YResolution" in tags else None
    res_unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
    meta: dict[str, Any] = {"x_resolution": xres, "y_resolution": yres, "resolution_unit": res_unit}
    ij = tif.imagej_metadata if tif.is_imagej else None
    if ij:
        unit = ij.get("unit")
        meta["imagej_unit"] = None if unit is None else str(unit)
        if "spacing" in ij:
            meta["imagej_spacing"] = float(ij["spacing"])
        nm = unit_to_nm(unit)
        if nm is not None and xres:
            if yres and not math.isclose(xres, yres, rel_tol=1e-6):
                _log.warning(
                    "%s: non-square pixels (x %g, y %g per unit); using x", path, xres, yres
                )
            meta["pixel_size_source"] = "imagej"
            return nm / xres, meta
        return None, meta
    if res_unit in (2, 3) and xres:
        per = 2.54e7 if res_unit == 2 else 1e7
        px = per / xres
        if px <= MAX_TAG_PIXEL_NM:
            meta["pixel_size_source"] = "tiff_resolution"
            return px, meta
        _log.info("%s: resolution tag gives %.3g nm/px, taken as a display resolution", path, px)
    return None, meta


def _check_tiff_size(series: Any, path: Path) -> None:
    """Refuse frames larger than :data:`MAX_FRAME_PIXELS` before decoding them."""
    shape = tuple(int(n) for n in series.shape)
    axes = str(series.axes)
    if "Y" in axes and "X" in axes:
        frame = shape[axes.index("Y")] * shape[axes.index("X")]
    else:
        frame = math.prod(shape[-2:])
    if frame > MAX_FRAME_PIXELS:
        raise InputError(
            f"{path}: the TIFF header gives frames of {frame} px (shape {shape}, axes {axes}), "
            f"more than the {MAX_FRAME_PIXELS} px accepted: a corrupt header or an image too "
            "large to process"
        )


def _read_tiff(path: Path) -> _Raw:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise InputError(f"{path}: TIFF holds no image")
        series = tif.series[0]
        axes = series.axes
        _check_tiff_size(series, path)
        data = series.asarray()
        px, meta = _tiff_calibration(tif, path)
    meta["axes"] = axes
    if axes.endswith("S"):
        if data.shape[-1] not in (3, 4):
            raise InputError(
                f"{path}: expected grey or RGB(A) samples, got {data.shape[-1]} per pixel"
            )
        data = _luminance(data)
        meta["rgb"] = True
    if data.ndim > 3:
        data = data.reshape((-1, *data.shape[-2:]))
    return _Raw(data, px, meta)


def _read_pil(path: Path, frame: int) -> _Raw:
    from PIL import Image

    with Image.open(path) as img:
        n = int(getattr(img, "n_frames", 1))
        if not 0 <= frame < n:
            raise InputError(f"{path}: frame {frame} out of range, the file has {n} frame(s)")
        img.seek(frame)
        mode = img.mode
        if mode in ("P", "PA", "LA", "RGBA", "RGBX", "CMYK", "YCbCr", "HSV", "LAB"):
            img = img.convert("RGBA" if mode in ("PA", "LA", "RGBA") else "RGB")
        data = np.asarray(img)
    rgb = data.ndim == 3 and data.shape[-1] in (3, 4)
    if rgb:
        data = _luminance(data)
    return _Raw(data, None, {"mode": mode, "rgb": rgb, "n_frames": n, "frame": frame})


def _read_npy(path: Path) -> _Raw:
    try:
        data = np.load(path, allow_pickle=False)
    except ValueError as exc:  # object arrays or a broken header
        raise InputError(f"{path}: not a plain numeric NPY array ({exc})") from exc
    if not isinstance(data, np.ndarray):
        raise InputError(f"{path}: expected one array in an .npy file, got {type(data).__name__}")
    if data.dtype.names is not None or data.dtype == object:
        raise InputError(f"{path}: expected a numeric array, got dtype {data.dtype}")
    return _Raw(data)


def _read_dm(path: Path) -> _Raw:
    try:
        from rsciio.digitalmicrograph import file_reader
    except ImportError as exc:
        raise InputError(
            f"{path}: reading DM3/DM4 needs RosettaSciIO, not installed (pip install rosettasciio)"
        ) from exc
    try:
        signals = file_reader(str(path), lazy=False)
    except InputError:
        raise
    except Exception as exc:  # the library raises many types on corrupt files
        raise InputError(f"{path}: not a readable DM3/DM4 file ({exc!r})") from exc
    images = [s for s in signals if np.ndim(s["data"]) >= 2]
    if not images:
        raise InputError(f"{path}: the DM file holds no image (only 0-D/1-D data)")
    signal = max(images, key=lambda s: np.size(s["data"]))
    data = np.asarray(signal["data"])
    if data.dtype.names is not None:  # RGBA images are structured (R, G, B, A)
        data = _luminance(np.stack([data[c] for c in ("R", "G", "B")], axis=-1))
    axes = signal["axes"]
    meta: dict[str, Any] = {
        "dm_axes": [
            {"name": str(a.get("name")), "scale": float(a["scale"]), "units": str(a["units"])}
            for a in axes
        ],
        "title": str(signal.get("metadata", {}).get("General", {}).get("title", "")),
    }
    px = None
    if len(axes) >= 2:
        y_axis, x_axis = axes[-2], axes[-1]
        nm_x, nm_y = unit_to_nm(x_axis["units"]), unit_to_nm(y_axis["units"])
        if nm_x is not None and float(x_axis["scale"]) > 0:
            px = float(x_axis["scale"]) * nm_x
            if nm_y is not None and not math.isclose(
                px, float(y_axis["scale"]) * nm_y, rel_tol=1e-6
            ):
                _log.warning("%s: non-square pixels in DM calibration; using x", path)
            meta["pixel_size_source"] = "dm_calibration"
    return _Raw(data, px, meta)


# ----------------------------------------------------------------------------- common checks
def _select_frame(data: np.ndarray, frame: int, path: Path) -> tuple[np.ndarray, int]:
    if data.ndim == 3:
        n = data.shape[0]
        if not 0 <= frame < n:
            raise InputError(f"{path}: frame {frame} out of range, the file has {n} frame(s)")
        return data[frame], n
    if data.ndim == 2:
        if frame != 0:
            raise InputError(f"{path}: frame {frame} out of range, the file has 1 frame")
        return data, 1
    raise InputError(
        f"{path}: expected a 2-D image or a 3-D stack (frame, row, col), got shape {data.shape}"
    )


def _check_pixels(data: np.ndarray, path: Path) -> np.ndarray:
    if np.iscomplexobj(data):
        raise InputError(f"{path}: expected real pixel values, got complex dtype {data.dtype}")
    if data.dtype.kind not in "biuf":
        raise InputError(f"{path}: expected numeric pixel values, got dtype {data.dtype}")
    if data.size == 0:
        raise InputError(f"{path}: the image is empty (shape {data.shape})")
    if min(data.shape) < MIN_SIZE_PX:
        raise InputError(
            f"{path}: image {data.shape} is smaller than {MIN_SIZE_PX}×{MIN_SIZE_PX} px"
        )
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.asarray(data, dtype=np.float32)
    bad = ~np.isfinite(out)
    if bad.any():
        raise InputError(
            f"{path}: {int(bad.sum())} pixel(s) are NaN or infinite (or overflow float32)"
        )
    out = np.array(out, copy=True)
    out.setflags(write=False)
    return out


def _check_pixel_size(value: float | None, path: Path) -> float | None:
    if value is None:
        return None
    try:
        px = float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: pixel_size_nm must be a number, got {value!r}") from exc
    if not math.isfinite(px) or px <= 0:
        raise InputError(f"{path}: pixel_size_nm must be positive and finite, got {value!r}")
    return px


def read_image(
    path: str | Path, *, frame: int = 0, pixel_size_nm: float | None = None
) -> LtemImage:
    """Read one frame of an experimental image as float32 (row, col) with its pixel size [nm].

    Args:
        path: .tif/.tiff, .dm3/.dm4, .png/.jpg/.jpeg/.gif/.bmp or .npy file.
        frame: 0-based frame of a stack (must be 0 for a single image).
        pixel_size_nm: pixel size [nm]; overrides any calibration in the file.

    Raises:
        InputError: see the module docstring.
    """
    path = Path(path)
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise InputError(
            f"{path}: unknown image type {path.suffix!r}; expected one of {sorted(SUFFIXES)}"
        )
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected an image file")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    override = _check_pixel_size(pixel_size_nm, path)
    if isinstance(frame, bool) or not isinstance(frame, int | np.integer):
        raise InputError(f"{path}: frame must be an integer, got {frame!r}")
    frame = int(frame)
    try:
        if fmt == "tiff":
            raw = _read_tiff(path)
        elif fmt == "pil":
            raw = _read_pil(path, frame)
        elif fmt == "npy":
            raw = _read_npy(path)
        else:
            raw = _read_dm(path)
    except InputError:
        raise
    except Exception as exc:  # tifffile, Pillow and numpy raise many types on corrupt files
        raise InputError(f"{path}: cannot read as {fmt} ({type(exc).__name__}: {exc})") from exc

    data = np.asarray(raw.frames)
    if fmt == "pil":
        n_frames = int(raw.metadata["n_frames"])
    else:
        data, n_frames = _select_frame(data, frame, path)
    original_dtype = str(np.asarray(raw.frames).dtype)
    pixels = _check_pixels(data, path)
    meta = {
        "format": fmt,
        "frame": frame,
        "n_frames": n_frames,
        "original_dtype": original_dtype,
        "pixel_size_source": raw.metadata.get("pixel_size_source") if raw.pixel_size_nm else None,
        "file_pixel_size_nm": raw.pixel_size_nm,
    }
    meta.update({k: v for k, v in raw.metadata.items() if k not in meta})
    px = raw.pixel_size_nm
    if override is not None:
        px = override
        meta["pixel_size_source"] = "argument"
    if px is not None and not (math.isfinite(px) and px > 0):
        _log.warning("%s: ignoring invalid pixel size %r from the file", path, px)
        px = None
        meta["pixel_size_source"] = None
    return LtemImage(data=pixels, pixel_size_nm=px, source=str(path), metadata=meta)
