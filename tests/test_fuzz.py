"""Property-based fuzzing of the two user-facing readers: the config loader and the image readers.

Config (:func:`ltemfactory.config.load_config` on a YAML file): targeted mutations of
``tests/configs/tiny.yaml`` (a wrong type, a negative number, low >= high, an unknown key, a
missing required key, NaN/inf written as numbers or strings) must raise ``ConfigError`` naming
the mutated key path; random edits of the YAML text must give a config or a ``ConfigError``,
never another exception. (``tests/test_config.py`` fuzzes :func:`validate_config` on dicts; here
the file path, the YAML layer and the key path in the message are checked too.)

Images (:func:`ltemfactory.inference.readers.read_image`): random bytes under every suffix,
truncated headers, truncated files and flipped bytes of valid TIFF/PNG/JPEG/NPY/DM3/DM4 files must
raise ``InputError`` starting with the file path, or return a valid image — never anything else.

Hypothesis settings are modest (at most 60 examples per test, no deadline): the file runs in
well under a minute.
"""

from __future__ import annotations

import copy
import io
import math
import string
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from ltemfactory import cli
from ltemfactory.config import dotted, load_config
from ltemfactory.errors import ConfigError, InputError
from ltemfactory.inference.readers import MIN_SIZE_PX, SUFFIXES, LtemImage, read_image

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
BASE: dict[str, Any] = yaml.safe_load(TINY.read_text())

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """One directory for all examples (hypothesis reuses it; each example overwrites its file)."""
    return tmp_path_factory.mktemp("fuzz")


# --------------------------------------------------------------------------------------------
# Config: the leaves and mappings of tiny.yaml


def _walk(node: Any, path: tuple = ()) -> list[tuple[tuple, Any]]:
    """(path, value) of every node below ``node`` (mappings, lists and leaves)."""
    out = [(path, node)]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _walk(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _walk(v, (*path, i))
    return out


NODES = _walk(BASE)
MAPPINGS = [p for p, v in NODES if isinstance(v, dict)]
NUMBER_LEAVES = [p for p, v in NODES if isinstance(v, int | float) and not isinstance(v, bool)]
STRING_LEAVES = [p for p, v in NODES if isinstance(v, str)]  # all enums in tiny.yaml
INTEGER_LEAVES = [
    ("seed",),
    ("sweep", "n_states"),
    ("sweep", "batch_size"),
    ("sweep", "grid", "nx"),
    ("sweep", "grid", "ny"),
    ("sweep", "grid", "nz"),
    ("relax", "max_iterations"),
    ("train", "network", "depth"),
    ("train", "network", "width"),
    ("train", "network", "groups"),
    ("train", "batch_size"),
    ("train", "samples_per_epoch"),
    ("train", "max_epochs"),
    ("train", "num_workers"),
    ("train", "log_every_n_steps"),
    ("train", "augment", "crop_px"),
]
# Leaves the schema bounds below by zero (ranges of physical quantities, counts, sizes): a
# negative value is an error there (D, Ku, field and the field-history fractions may be < 0).
NONNEGATIVE_LEAVES = INTEGER_LEAVES + [
    p
    for p in NUMBER_LEAVES
    if p[:2] == ("dataset", "split_fractions")
    or p[:3] == ("sweep", "parameters", "initial_state")
    or p == ("relax", "tolerance")
    or (p[:2] == ("sweep", "parameters") and p[2] not in ("D_J_per_m2", "Ku_J_per_m3", "field_mT"))
]
UNIFORM_SPECS = [
    p
    for p, v in NODES
    if isinstance(v, dict)
    and v.get("distribution") == "uniform"
    and p[:2] == ("sweep", "parameters")
]
REQUIRED_KEYS = [
    ("seed",),
    ("sweep",),
    ("sweep", "n_states"),
    ("sweep", "batch_size"),
    ("sweep", "grid"),
    ("sweep", "grid", "nx"),
    ("sweep", "grid", "ny"),
    ("sweep", "parameters"),
    *[("sweep", "parameters", k) for k in BASE["sweep"]["parameters"]],
    *[
        ("sweep", "parameters", k, f)
        for k, spec in BASE["sweep"]["parameters"].items()
        for f in spec
        if f != "weights"  # optional
    ],
]


def _get(cfg: Any, path: tuple) -> Any:
    for part in path:
        cfg = cfg[part]
    return cfg


def _set(cfg: Any, path: tuple, value: Any) -> None:
    _get(cfg, path[:-1])[path[-1]] = value


def _write(scratch: Path, cfg: Any) -> Path:
    path = scratch / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def _config_error(path: Path) -> str:
    """The message of the ConfigError that loading ``path`` must raise (any other outcome fails)."""
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert all(line.startswith(f"{path}: ") for line in message.splitlines()), message
    return message


_text = st.text(alphabet=string.ascii_letters + string.digits + " _-.", max_size=12)
_not_number = st.one_of(
    _text,
    st.sampled_from(["1.5e5", "ten", "", "0x10", "1,5"]),
    st.booleans(),
    st.none(),
    st.lists(st.integers(0, 9), max_size=3),
    st.dictionaries(st.sampled_from(["low", "value", "x"]), st.integers(0, 9), max_size=2),
)
_not_string = st.one_of(
    st.integers(-5, 5),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.lists(_text, max_size=2),
    st.dictionaries(st.sampled_from(["a", "value"]), _text, max_size=2),
)


@FUZZ
@given(data=st.data())
def test_wrong_type_names_the_key(scratch, data):
    """A number, integer or enum leaf replaced by a value of another type."""
    kind = data.draw(st.sampled_from(["number", "integer", "string"]), label="kind")
    if kind == "number":
        path = data.draw(st.sampled_from(NUMBER_LEAVES), label="path")
        value = data.draw(_not_number, label="value")
    elif kind == "integer":
        path = data.draw(st.sampled_from(INTEGER_LEAVES), label="path")
        value = data.draw(
            st.one_of(_not_number, st.floats(allow_nan=False).filter(lambda x: not x.is_integer()))
        )
    else:
        path = data.draw(st.sampled_from(STRING_LEAVES), label="path")
        value = data.draw(_not_string, label="value")
    cfg = copy.deepcopy(BASE)
    _set(cfg, path, value)
    assert dotted(path) in _config_error(_write(scratch, cfg))


@FUZZ
@given(
    path=st.sampled_from(NONNEGATIVE_LEAVES),
    value=st.one_of(
        st.integers(max_value=-1),
        st.floats(max_value=-1e-300, allow_nan=False, allow_infinity=False),
    ),
)
def test_negative_number_names_the_key(scratch, path, value):
    cfg = copy.deepcopy(BASE)
    _set(cfg, path, value)
    assert dotted(path) in _config_error(_write(scratch, cfg))


@FUZZ
@given(spec=st.sampled_from(UNIFORM_SPECS), a=st.floats(0, 1), b=st.floats(0, 1))
def test_low_not_below_high_names_the_entry(scratch, spec, a, b):
    """low >= high (both inside the schema's range, so only the consistency check sees it)."""
    cfg = copy.deepcopy(BASE)
    entry = _get(cfg, spec)
    lo, hi = float(entry["low"]), float(entry["high"])
    x, y = lo + a * (hi - lo), lo + b * (hi - lo)
    entry["low"], entry["high"] = max(x, y), min(x, y)
    message = _config_error(_write(scratch, cfg))
    assert f"{dotted(spec)}: expected low < high" in message


@FUZZ
@given(where=st.sampled_from(MAPPINGS), key=st.text(string.ascii_letters + "_", max_size=10))
def test_unknown_key_names_the_key(scratch, where, key):
    cfg = copy.deepcopy(BASE)
    key = "zz" + key  # never a key the schema allows
    _get(cfg, where)[key] = 1
    assert f"{dotted((*where, key))}: unknown key" in _config_error(_write(scratch, cfg))


@FUZZ
@given(path=st.sampled_from(REQUIRED_KEYS))
def test_missing_required_key_is_named(scratch, path):
    cfg = copy.deepcopy(BASE)
    del _get(cfg, path[:-1])[path[-1]]
    assert f"{dotted(path)}: missing required key" in _config_error(_write(scratch, cfg))


@FUZZ
@given(
    path=st.sampled_from(NUMBER_LEAVES),
    value=st.one_of(
        st.sampled_from([math.nan, math.inf, -math.inf]),
        st.sampled_from(["NaN", "nan", ".nan", "inf", "-inf", ".inf", "Infinity", "NaN "]),
    ),
)
def test_nan_and_inf_are_refused(scratch, path, value):
    """Written as YAML numbers (.nan, .inf) or as strings: never accepted."""
    cfg = copy.deepcopy(BASE)
    _set(cfg, path, value)
    assert dotted(path) in _config_error(_write(scratch, cfg))


@FUZZ
@given(
    optional=st.sets(
        st.sampled_from(
            [
                ("relax",),
                ("dataset",),
                ("train",),
                ("sweep", "sampling"),
                ("sweep", "grid", "nz"),
                ("sweep", "grid", "boundary"),
                ("sweep", "parameters", "initial_state", "weights"),
                ("relax", "field_history_fraction"),
            ]
        ),
        max_size=3,
    )
)
def test_missing_optional_sections_give_defaults_or_a_config_error(scratch, optional):
    """Optional sections have defaults; a default that does not fit the rest (train.augment's
    64 px crop on 32 px images) is a ConfigError naming the section."""
    cfg = copy.deepcopy(BASE)
    for path in sorted(optional, key=len, reverse=True):  # children before their parents
        del _get(cfg, path[:-1])[path[-1]]
    path = _write(scratch, cfg)
    try:
        out = load_config(path)
    except ConfigError as exc:
        assert ("train",) in optional, exc
        assert str(exc) == f"{path}: train.augment: " + str(exc).split("train.augment: ", 1)[1]
    else:
        assert out["relax"]["max_iterations"] >= 1 and len(out["dataset"]["split_fractions"]) == 3


@FUZZ
@given(data=st.data())
def test_random_yaml_edits_give_a_config_or_a_config_error(scratch, data):
    """Random edits of the YAML text: cut it, insert or delete characters, swap lines."""
    text = TINY.read_text()
    for _ in range(data.draw(st.integers(1, 4), label="n_edits")):
        op = data.draw(st.sampled_from(["cut", "insert", "delete", "swap"]), label="op")
        i = data.draw(st.integers(0, len(text)), label="at")
        if op == "cut":
            text = text[:i]
        elif op == "insert":
            text = (
                text[:i] + data.draw(st.sampled_from(list(":-[]{}\t\n #'\"&*!|>%@`,?"))) + text[i:]
            )
        elif op == "delete":
            text = text[:i] + text[i + 1 :]
        else:
            lines = text.splitlines(keepends=True)
            if len(lines) > 1:
                j = data.draw(st.integers(0, len(lines) - 2))
                lines[j], lines[j + 1] = lines[j + 1], lines[j]
                text = "".join(lines)
    path = scratch / "edited.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        out = load_config(path)
    except ConfigError as exc:
        assert str(exc).startswith(f"{path}"), exc
    else:
        assert isinstance(out, dict) and out["sweep"]["n_states"] >= 1


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    path=st.sampled_from(NUMBER_LEAVES + STRING_LEAVES),
    value=st.sampled_from(["oops", None, [1, 2], -1.5, math.nan]),
)
def test_cli_config_check_exits_2_naming_file_and_key(scratch, capsys, path, value):
    cfg = copy.deepcopy(BASE)
    _set(cfg, path, value)
    written = _write(scratch, cfg)
    try:
        load_config(written)
    except ConfigError:
        pass
    else:
        assume(False)  # e.g. -1.5 for the DMI constant is a valid value
    capsys.readouterr()
    assert cli.main(["config", "check", str(written)]) == 2
    err = capsys.readouterr().err
    # a bound that breaks low < high (e.g. high = -1.5 for a parameter that may be negative)
    # is a problem of the pair: the entry is named (test_low_not_below_high_names_the_entry)
    pair = path[-1] in ("low", "high") and f"{dotted(path[:-1])}: expected low < high" in err
    assert f"ltemfactory config: error: {written}: " in err, err
    assert dotted(path) in err or pair, err


# --------------------------------------------------------------------------------------------
# Image readers


def _dm_bytes(version: int, image: np.ndarray, scratch: Path) -> bytes:
    # tests/ is on sys.path under pytest's default (prepend) import mode: reuse the DM writer
    # of the reader tests rather than keeping a second copy of it.
    from inference.test_readers import _write_dm

    path = scratch / f"seed.dm{version}"
    _write_dm(path, image, 2.0, "nm", version)
    return path.read_bytes()


@pytest.fixture(scope="module")
def valid_files(scratch) -> dict[str, bytes]:
    """One valid, calibrated file per reader (name -> bytes); the suffix is the name's."""
    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 10.0, size=(40, 48)).astype(np.float32)
    grey = np.clip(image, 0, 255).astype(np.uint8)
    files: dict[str, bytes] = {}
    buf = io.BytesIO()
    tifffile.imwrite(
        buf, image, imagej=True, resolution=(1 / 2.5, 1 / 2.5), metadata={"unit": "nm"}
    )
    files["imagej.tif"] = buf.getvalue()
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.stack([image, image]), compression="zlib")
    files["stack.tiff"] = buf.getvalue()
    for name, fmt in (("grey.png", "PNG"), ("grey.jpg", "JPEG"), ("grey.gif", "GIF")):
        buf = io.BytesIO()
        Image.fromarray(grey).save(buf, format=fmt)
        files[name] = buf.getvalue()
    buf = io.BytesIO()
    np.save(buf, image)
    files["image.npy"] = buf.getvalue()
    pytest.importorskip("rsciio")
    files["image.dm3"] = _dm_bytes(3, image, scratch)
    files["image.dm4"] = _dm_bytes(4, image, scratch)
    for name, content in files.items():  # the seeds themselves are valid
        (scratch / name).write_bytes(content)
        assert read_image(scratch / name).shape == (40, 48), name
    return files


def _read_or_input_error(path: Path) -> LtemImage | None:
    """read_image(path): a valid image, or None after an InputError naming the file."""
    try:
        image = read_image(path)
    except InputError as exc:
        assert str(exc).startswith(str(path)), exc
        return None
    assert image.data.dtype == np.float32 and image.data.ndim == 2
    assert min(image.shape) >= MIN_SIZE_PX and np.isfinite(image.data).all()
    assert image.pixel_size_nm is None or (
        math.isfinite(image.pixel_size_nm) and image.pixel_size_nm > 0
    )
    return image


@FUZZ
@given(content=st.binary(max_size=4096), suffix=st.sampled_from(sorted(SUFFIXES)))
def test_random_bytes_are_an_input_error(scratch, content, suffix):
    path = scratch / f"random{suffix}"
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        read_image(path)
    assert str(info.value).startswith(str(path))


@FUZZ
@given(
    name=st.sampled_from(
        [
            "imagej.tif",
            "stack.tiff",
            "grey.png",
            "grey.jpg",
            "grey.gif",
            "image.npy",
            "image.dm3",
            "image.dm4",
        ]
    ),
    cut=st.integers(0, 120),
)
def test_truncated_header_is_an_input_error(scratch, valid_files, name, cut):
    """A file cut inside its first 120 bytes (magic, header, first tags) cannot be an image."""
    path = scratch / f"cut_{name}"
    path.write_bytes(valid_files[name][:cut])
    with pytest.raises(InputError) as info:
        read_image(path)
    assert str(info.value).startswith(str(path))


@FUZZ
@given(data=st.data())
def test_truncated_file_is_an_input_error_or_intact(scratch, valid_files, data):
    name = data.draw(st.sampled_from(sorted(valid_files)), label="name")
    content = valid_files[name]
    cut = data.draw(st.integers(0, len(content) - 1), label="cut")
    path = scratch / f"trunc_{name}"
    path.write_bytes(content[:cut])
    image = _read_or_input_error(path)
    if image is not None:  # only trailing bytes no reader needs were cut (e.g. PNG's IEND)
        assert image.shape == (40, 48), (name, cut)


@FUZZ
@given(data=st.data())
def test_flipped_bytes_are_an_input_error_or_a_valid_image(scratch, valid_files, data):
    name = data.draw(st.sampled_from(sorted(valid_files)), label="name")
    content = bytearray(valid_files[name])
    header = data.draw(st.booleans(), label="in_header")
    top = min(len(content), 512) if header else len(content)
    for _ in range(data.draw(st.integers(1, 8), label="n_flips")):
        i = data.draw(st.integers(0, top - 1), label="at")
        content[i] = data.draw(st.integers(0, 255), label="byte")
    path = scratch / f"flip_{name}"
    path.write_bytes(bytes(content))
    _read_or_input_error(path)
