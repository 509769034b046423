"""Catalogue of bad inputs at the command line: configs, sweep tables, OVF/.npy magnetisation
files, experimental images and Zarr stores.

Every case runs one ``ltemfactory`` command (``cli.main``, as the console script does) against a
workspace whose outputs were written by earlier, successful commands, and checks

* the exit status is 2 and stderr holds one ``ltemfactory <command>: error: ...`` line (for
  ``infer``: the failure is listed with its error in ``summary.json`` and on stderr);
* the message names the file or config field and says what is wrong (``expect``);
* nothing written before is damaged: the output the command would have written (``protect``)
  is byte-identical afterwards and no file appeared or vanished beside it (no half-written or
  temporary store left behind).

The library-level tests of the same readers (tests/test_config.py, tests/test_ovf.py,
tests/inference/test_readers.py, tests/test_dataset.py) check other bad inputs; the cases here
are the ones they do not cover, seen from the command line. Two cases also run through the
installed ``ltemfactory`` executable to check the real process exit status.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from PIL import Image

from ltemfactory import cli, dataset
from ltemfactory.config import load_config
from ltemfactory.ovf import write_ovf
from ltemfactory.relax import relax_batch, write_relax_store
from ltemfactory.render import render_store, write_render_store
from ltemfactory.sweep import draw_sweep

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
EXE = Path(sys.executable).parent / "ltemfactory"


# --------------------------------------------------------------------------------------------
# The workspace: outputs of successful runs that a failed rerun must leave alone


@dataclass
class Workspace:
    root: Path
    config: Path
    sweep: Path
    relax: list[Path]
    render: list[Path]
    dataset: Path
    card: Path
    montage: Path
    ovf: Path
    sim: Path
    model: Path
    inference: Path


def _lattice_image(shape=(96, 96), nn=16.0) -> np.ndarray:
    """Gaussian blobs on a hexagonal lattice (nearest-neighbour distance ``nn`` px)."""
    rr, cc = np.mgrid[: shape[0], : shape[1]].astype(float)
    img = np.zeros(shape)
    for i in range(-2, int(shape[0] / nn) + 3):
        for j in range(-2, int(shape[1] / nn) + 3):
            r = i * nn * np.sqrt(3) / 2
            c = j * nn + (i % 2) * nn / 2
            img += np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * (nn / 4) ** 2))
    return (img + np.random.default_rng(0).normal(0, 0.01, shape)).astype(np.float32)


def _run(argv: list[str]) -> tuple[int, str]:
    err, out = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(out):
        rc = cli.main([str(a) for a in argv])
    return rc, err.getvalue()


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    root = tmp_path_factory.mktemp("workspace")
    res = root / "results"
    config = root / "config.yaml"
    shutil.copy2(TINY, config)
    cfg = load_config(config)
    rows = draw_sweep(cfg)
    assert _run(["sweep", "--config", config, "--out", res / "sweep.tsv"])[0] == 0
    relax, render = [], []
    for b in range(2):
        r, q = res / "relax" / f"batch_{b}.zarr", res / "render" / f"batch_{b}.zarr"
        batch = relax_batch(rows[2 * b : 2 * b + 2], cfg["sweep"]["grid"], cfg["relax"])
        write_relax_store(r, batch, cfg, b)
        write_render_store(q, render_store(r, cfg["render"]), cfg, str(r))
        relax.append(r)
        render.append(q)
    data = res / "dataset.zarr"
    dataset.assemble(list(zip(relax, render, strict=True)), data, cfg, scheduler="synchronous")
    dataset.card(data, res / "dataset_card")
    montage, ovf, sim = res / "relax" / "batch_0_mz.png", res / "state.ovf", res / "sim"
    assert _run(["montage", relax[0], "--out", montage])[0] == 0
    assert _run(["export-ovf", relax[0], "--state", "0", "--out", ovf])[0] == 0
    assert _run(["simulate", ovf, "--out-dir", sim])[0] == 0

    from ltemfactory.training.normalisation import NORMALISATION
    from ltemfactory.training.predictor import Predictor
    from ltemfactory.training.unet import UNet, UNetConfig

    model = root / "model"
    model.mkdir()
    Predictor(
        UNet(UNetConfig(depth=2, width=4, groups=2)),
        formulation="instance",
        normalisation=NORMALISATION,
        train_diameter_px=8.0,
        metadata={"train_nn_distance_px": 16.0},
    ).save(model / "model.pt")
    (model / "train_summary.json").write_text(json.dumps({"run_id": "r", "model_uri": "m"}))
    np.save(root / "good.npy", _lattice_image())
    inference = res / "inference"
    rc, err = _run(["infer", root / "good.npy", "--model", model, "--out", inference])
    assert rc == 0, err
    assert (inference / "good").is_dir() and (sim / "state_ltem.tif").is_file()
    return Workspace(
        root, config, res / "sweep.tsv", relax, render, data, res / "dataset_card", montage,
        ovf, sim, model, inference,
    )  # fmt: skip


def _snapshot(path: Path) -> dict[str, bytes] | None:
    """Every file under ``path`` (or ``path`` itself) by relative name, with its bytes."""
    if path.is_file():
        return {"": path.read_bytes()}
    if not path.exists():
        return None
    return {
        str(p.relative_to(path)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(path.rglob("*"))
    }


# --------------------------------------------------------------------------------------------
# Helpers that write bad inputs


def _bad_config(d: Path, edit: Callable[[dict], None]) -> Path:
    cfg = yaml.safe_load(TINY.read_text())
    edit(cfg)
    path = d / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _set(dotted: str, value) -> Callable[[dict], None]:
    def edit(cfg: dict) -> None:
        *parents, last = dotted.split(".")
        node = cfg
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value

    return edit


def _ovf(d: Path, m: np.ndarray, cell=(3e-9, 3e-9, 27.5e-9), **replace: str) -> Path:
    """An OVF 2.0 text file named ``state.ovf`` (the stem of the workspace's simulate outputs),
    with header records replaced (``replace={"xnodes: 2": "xnodes: 1000"}`` style)."""
    path = d / "state.ovf"
    write_ovf(path, m, cell, fmt="text")
    text = path.read_text()
    for old, new in replace.items():
        assert f"# {old}\n" in text, old
        text = text.replace(f"# {old}\n", f"# {new}\n")
    path.write_text(text)
    return path


def _uniform(shape) -> np.ndarray:
    m = np.zeros((3, *shape))
    m[2] = 1.0
    return m


def _truncate_first_chunk(store: Path, array: str) -> None:
    chunk = next(p for p in sorted((store / array / "c").rglob("*")) if p.is_file())
    chunk.write_bytes(chunk.read_bytes()[:40])


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def _huge_tiff(path: Path) -> Path:
    """A zlib TIFF whose header was corrupted to claim 60000 x 60000 px."""
    tifffile.imwrite(path, np.ones((40, 48), np.float32), compression="zlib")
    raw = bytearray(path.read_bytes())
    ifd = struct.unpack("<I", raw[4:8])[0]
    for i in range(struct.unpack("<H", raw[ifd : ifd + 2])[0]):
        entry = ifd + 2 + 12 * i
        tag, kind = struct.unpack("<HH", raw[entry : entry + 4])
        if tag in (256, 257, 278):  # ImageWidth, ImageLength, RowsPerStrip
            fmt = "<H" if kind == 3 else "<I"
            raw[entry + 8 : entry + 8 + struct.calcsize(fmt)] = struct.pack(fmt, 60000)
    path.write_bytes(bytes(raw))
    return path


# --------------------------------------------------------------------------------------------
# The catalogue


@dataclass
class Case:
    what: str
    """The file or field at fault (documentation)."""
    setup: Callable[[Workspace, Path], tuple[list, Path | str, list[Path]]]
    """(argv, the bad file or field named in the message, outputs that must stay intact)."""
    expect: list[str] = field(default_factory=list)
    """Fragments of the error message; ``{bad}`` is replaced by the bad file or field."""


def _sweep_with(cfg_edit=None, path=None):
    def setup(ws: Workspace, d: Path):
        bad = path(d) if path else _bad_config(d, cfg_edit)
        return ["sweep", "--config", bad, "--out", ws.sweep], bad, [ws.sweep]

    return setup


def _simulate(make: Callable[[Path], Path], *options: str, out: Callable | None = None):
    def setup(ws: Workspace, d: Path):
        bad = make(d)
        target = out(ws) if out else ws.sim
        return ["simulate", bad, "--out-dir", target, *options], bad, [target]

    return setup


def _infer(make: Callable[[Path], Path], *options: str):
    def setup(ws: Workspace, d: Path):
        bad = make(d)
        argv = ["infer", bad, "--model", ws.model, "--out", ws.inference, *options]
        return argv, bad, [ws.inference / "good"]

    return setup


def _npy(array: np.ndarray, name: str = "state.npy") -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        np.save(d / name, array)
        return d / name

    return make


def _write(name: str, content: bytes) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        (d / name).write_bytes(content)
        return d / name

    return make


def _mkdir(name: str) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        (d / name).mkdir()
        return d / name

    return make


def _png(shape, name="small.png", frames=1) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        ims = [Image.fromarray(np.full(shape, 40 * k, np.uint8)) for k in range(frames)]
        ims[0].save(d / name, save_all=frames > 1, append_images=ims[1:])
        return d / name

    return make


def _npz_as_npy(d: Path) -> Path:
    np.savez(d / "state.npz", m=_uniform((1, 8, 8)))
    return (d / "state.npz").rename(d / "state.npy")


def _relax_with_bad_sweep(ws: Workspace, d: Path):
    lines = ws.sweep.read_text().splitlines()
    header = lines[0].split("\t")
    row = lines[1].split("\t")
    row[header.index("Ms_A_per_m")] = "nan"
    bad = d / "sweep.tsv"
    bad.write_text("\n".join([lines[0], "\t".join(row), *lines[2:]]) + "\n")
    argv = ["relax", "--config", ws.config, "--sweep", bad, "--batch", "0", "--out", ws.relax[0]]
    return argv, bad, [ws.relax[0]]


def _relax_missing_batch(ws: Workspace, d: Path):
    argv = ["relax", "--config", ws.config, "--sweep", ws.sweep, "--batch", "7"]
    return [*argv, "--out", ws.relax[0]], ws.sweep, [ws.relax[0]]


def _relax_null_section(ws: Workspace, d: Path):
    bad = _bad_config(d, _set("relax", None))
    argv = ["relax", "--config", bad, "--sweep", ws.sweep, "--batch", "0", "--out", ws.relax[0]]
    return argv, bad, [ws.relax[0]]


def _render_string_variants(ws: Workspace, d: Path):
    bad = _bad_config(d, _set("render.variants_per_state", "4"))
    argv = ["render", "--config", bad, "--relax", ws.relax[0], "--out", ws.render[0]]
    return argv, bad, [ws.render[0]]


def _render_from(kind: str):
    def setup(ws: Workspace, d: Path):
        if kind == "render store":
            bad = ws.render[1]
        else:
            bad = _copy(ws.relax[1], d / "relax.zarr")
            _truncate_first_chunk(bad, "m")
        argv = ["render", "--config", ws.config, "--relax", bad, "--out", ws.render[0]]
        return argv, bad, [ws.render[0]]

    return setup


def _assemble(kind: str):
    def setup(ws: Workspace, d: Path):
        relax, render = [str(p) for p in ws.relax], [str(p) for p in ws.render]
        if kind == "swapped":
            relax, render = render, relax
            bad = relax[0]  # a render store, opened first as a relax store
        elif kind == "count":
            render = render[:1]
            bad = "--relax and --render"
        else:  # relax store with unreadable metadata
            bad = _copy(ws.relax[0], d / "relax.zarr")
            (bad / "zarr.json").write_text('{"zarr_format": 3, "node_type": ')
            relax[0] = str(bad)
        argv = ["assemble", "--config", ws.config, "--relax", *relax, "--render", *render]
        return [*argv, "--out", ws.dataset], bad, [ws.dataset]

    return setup


def _check(kind: str):
    def setup(ws: Workspace, d: Path):
        bad = _copy(ws.dataset, d / "dataset.zarr")
        if kind == "chunk":
            _truncate_first_chunk(bad, "images")
        else:
            (bad / "zarr.json").write_bytes(b"\x00\x01 not json")
        return ["dataset", "check", bad], bad, [bad]

    return setup


def _card(kind: str):
    def setup(ws: Workspace, d: Path):
        if kind == "relax store":
            bad = ws.relax[0]
        else:  # the leftover of an interrupted write: a directory without zarr.json
            bad = d / "dataset.zarr"
            (bad / "images").mkdir(parents=True)
        return ["dataset", "card", bad, "--out", ws.card], bad, [ws.card]

    return setup


def _export(kind: str):
    def setup(ws: Workspace, d: Path):
        if kind == "state":
            bad, state = ws.relax[0], "99"
        else:
            bad, state = d / "relax.zarr", "0"
            bad.write_text("not a directory")
        return ["export-ovf", bad, "--state", state, "--out", ws.ovf], bad, [ws.ovf]

    return setup


def _montage_corrupt(ws: Workspace, d: Path):
    bad = _copy(ws.relax[0], d / "relax.zarr")
    _truncate_first_chunk(bad, "m")
    return ["montage", bad, "--out", ws.montage], bad, [ws.montage]


CASES: dict[str, Case] = {
    # ---- configs
    "config_is_a_directory": Case(
        "--config", _sweep_with(path=lambda d: d), ["{bad}: cannot read config file", "directory"]
    ),
    "config_not_utf8": Case(
        "--config",
        _sweep_with(path=_write("latin1.yaml", "seed: 7\n# réglages\n".encode("latin-1"))),
        ["{bad}: cannot read config file", "utf-8"],
    ),
    "config_undefined_yaml_alias": Case(
        "--config",
        _sweep_with(path=_write("alias.yaml", b"seed: *nope\n")),
        ["{bad}:1:7: invalid YAML", "undefined alias"],
    ),
    "config_section_is_a_list": Case(
        "sweep", _sweep_with(_set("sweep", [1, 2])), ["{bad}: sweep: expected a mapping, got list"]
    ),
    "config_seed_boolean": Case(
        "seed", _sweep_with(_set("seed", True)), ["{bad}: seed: expected an integer, got boolean"]
    ),
    "config_batch_size_zero": Case(
        "sweep.batch_size",
        _sweep_with(_set("sweep.batch_size", 0)),
        ["{bad}: sweep.batch_size: expected an integer >= 1, got 0"],
    ),
    "config_split_fractions_sum": Case(
        "dataset.split_fractions",
        _sweep_with(_set("dataset.split_fractions", [0.5, 0.5, 0.5])),
        ["{bad}: dataset.split_fractions: expected [train, val, test] fractions summing to 1"],
    ),
    "config_crop_larger_than_images": Case(
        "train.augment.crop_px",
        _sweep_with(_set("train.augment.crop_px", 64)),
        ["{bad}: train.augment: image of 32x32 px is too small for crop_px=64"],
    ),
    "config_render_low_above_high": Case(
        "render.parameters.defocus_mm",
        _sweep_with(
            _set("render.parameters.defocus_mm", {"distribution": "uniform", "low": 3, "high": 1})
        ),
        ["{bad}: render.parameters.defocus_mm: expected low < high"],
    ),
    "config_render_variants_string": Case(
        "render.variants_per_state",
        _render_string_variants,
        ["{bad}: render.variants_per_state: expected an integer, got string '4'"],
    ),
    "config_relax_section_null": Case(
        "relax", _relax_null_section, ["{bad}: relax: expected a mapping, got null"]
    ),
    # ---- sweep table
    "sweep_table_nan_parameter": Case(
        "sweep.tsv Ms_A_per_m",
        _relax_with_bad_sweep,
        ["{bad}:2: column 'Ms_A_per_m': expected a finite number, got 'nan'"],
    ),
    "sweep_table_without_the_batch": Case(
        "--batch", _relax_missing_batch, ["{bad}: no states in batch 7"]
    ),
    # ---- OVF / .npy magnetisation files (named state.* like the workspace's simulate outputs)
    "ovf_is_a_directory": Case(
        "OVF file", _simulate(_mkdir("state.ovf")), ["{bad}: is a directory, expected an OVF file"]
    ),
    "ovf_one_cell": Case(
        "OVF mesh",
        _simulate(lambda d: _ovf(d, _uniform((1, 1, 1)))),
        ["{bad}: the magnetisation has 1 x 1 cells in-plane", "at least 2 x 2"],
    ),
    "ovf_non_square_cells": Case(
        "OVF xstepsize/ystepsize",
        _simulate(lambda d: _ovf(d, _uniform((1, 4, 4)), cell=(2e-9, 3e-9, 5e-9))),
        ["{bad}: cells must be square in-plane"],
    ),
    "ovf_header_larger_than_data": Case(
        "OVF xnodes/ynodes",
        _simulate(lambda d: _ovf(d, _uniform((1, 2, 2)), **{"xnodes: 2": "xnodes: 1000"})),
        ["{bad}: data block (Text) is truncated: expected 6000 values"],
    ),
    "ovf_negative_znodes": Case(
        "OVF znodes",
        _simulate(lambda d: _ovf(d, _uniform((1, 2, 2)), **{"znodes: 1": "znodes: -3"})),
        ["{bad}: header record 'znodes' must be >= 1, got -3"],
    ),
    "npy_is_an_npz_archive": Case(
        ".npy file",
        _simulate(_npz_as_npy, "--cell-size-nm", "3", "--thickness-nm", "20"),
        ["{bad}: expected one array in an .npy file, got NpzFile"],
    ),
    "npy_complex": Case(
        ".npy dtype",
        _simulate(
            _npy(_uniform((8, 8)).astype(complex)), "--cell-size-nm", "3", "--thickness-nm", "20"
        ),
        ["{bad}: array must be real numeric, got dtype complex128"],
    ),
    "npy_two_dimensional": Case(
        ".npy shape",
        _simulate(_npy(np.ones((3, 16))), "--cell-size-nm", "3", "--thickness-nm", "20"),
        ["{bad}: array shape (3, 16) is not a magnetisation"],
    ),
    "npy_without_cell_size": Case(
        "--cell-size-nm",
        _simulate(_npy(_uniform((8, 8)))),
        ["{bad}: .npy input needs --cell-size-nm"],
    ),
    "npy_zero_cell_size": Case(
        "--cell-size-nm",
        _simulate(_npy(_uniform((8, 8))), "--cell-size-nm", "0", "--thickness-nm", "20"),
        ["cell_size_nm: expected a positive finite number, got 0.0"],
    ),
    "simulate_out_dir_is_a_file": Case(
        "--out-dir",
        _simulate(lambda d: _ovf(d, _uniform((1, 4, 4))), out=lambda ws: ws.montage),
        ["out_dir {out}: exists and is not a directory"],
    ),
    # ---- experimental images (infer: every failure listed, exit 2)
    "image_is_a_directory": Case(
        "image file", _infer(_mkdir("dir.tif")), ["{bad}: is a directory, expected an image file"]
    ),
    "tiff_two_samples_per_pixel": Case(
        "TIFF samples",
        _infer(lambda d: _two_sample_tiff(d / "ga.tif")),
        ["{bad}: expected grey or RGB(A) samples, got 2 per pixel"],
    ),
    "tiff_corrupt_huge_header": Case(
        "TIFF ImageWidth/ImageLength",
        _infer(lambda d: _huge_tiff(d / "huge.tif")),
        ["{bad}: the TIFF header gives frames of 3600000000 px", "corrupt header"],
    ),
    "png_too_small": Case(
        "PNG size", _infer(_png((16, 16))), ["{bad}: image (16, 16) is smaller than 32×32 px"]
    ),
    "gif_frame_out_of_range": Case(
        "--frame",
        _infer(_png((40, 40), "anim.gif", 2), "--frame", "5"),
        ["{bad}: frame 5 out of range, the file has 2 frame(s)"],
    ),
    "jpeg_truncated": Case(
        "JPEG data",
        _infer(lambda d: _truncated_jpeg(d / "cut.jpg")),
        ["{bad}: cannot read as pil", "Truncated"],
    ),
    "dm4_not_a_dm_file": Case(
        "DM4 file",
        _infer(_write("notes.dm4", b"Gatan? no, plain text\n" * 8)),
        ["{bad}: not a readable DM3/DM4 file"],
    ),
    "npy_image_structured_dtype": Case(
        "NPY dtype",
        _infer(_npy(np.zeros((40, 40), dtype=[("a", "f4"), ("b", "f4")]), "rec.npy")),
        ["{bad}: expected a numeric array, got dtype"],
    ),
    # ---- Zarr stores
    "render_from_a_render_store": Case(
        "--relax", _render_from("render store"), ["{bad}: no array 'm' (a 'render' store holds"]
    ),
    "render_from_corrupt_relax_chunk": Case(
        "relax store m chunk",
        _render_from("corrupt"),
        ["{bad}/m: cannot read", "truncated or corrupt chunk file"],
    ),
    "montage_corrupt_chunk": Case(
        "relax store m chunk", _montage_corrupt, ["{bad}/m: cannot read", "corrupt chunk"]
    ),
    "assemble_relax_and_render_swapped": Case(
        "--relax", _assemble("swapped"), ["{bad}: no array 'm' (not a relax store?)"]
    ),
    "assemble_store_counts_differ": Case(
        "--relax/--render",
        _assemble("count"),
        ["{bad}: expected one render store per relax store, got 2 and 1"],
    ),
    "assemble_unreadable_metadata": Case(
        "relax zarr.json", _assemble("metadata"), ["{bad}: unreadable Zarr store metadata"]
    ),
    "check_truncated_image_chunk": Case(
        "dataset images chunk",
        _check("chunk"),
        ["{bad}: images: chunk file c/0/0/0 unreadable", "fingerprint: not verified"],
    ),
    "check_unreadable_root_metadata": Case(
        "dataset zarr.json", _check("metadata"), ["{bad}: cannot open as a Zarr v3 group"]
    ),
    "card_of_a_relax_store": Case(
        "dataset store", _card("relax store"), ["{bad}: no array 'split' (a 'relax' store holds"]
    ),
    "card_of_an_interrupted_store": Case(
        "dataset store", _card("interrupted"), ["{bad}: not a Zarr store (no zarr.json)"]
    ),
    "export_unknown_state": Case("--state", _export("state"), ["{bad}: no state 99"]),
    "export_from_a_file": Case("store path", _export("file"), ["{bad}: not a Zarr store (a file"]),
}


def _two_sample_tiff(path: Path) -> Path:
    data = np.random.default_rng(0).normal(100, 10, (40, 48, 2)).astype(np.float32)
    tifffile.imwrite(path, data, photometric="minisblack", planarconfig="contig", extrasamples=[2])
    return path


def _truncated_jpeg(path: Path) -> Path:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(buf, format="JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def test_catalogue_is_large_and_covers_every_kind_of_input():
    assert len(CASES) >= 20
    kinds = {name.split("_")[0] for name in CASES}
    assert {"config", "sweep", "ovf", "npy", "image", "tiff", "png", "check", "card"} <= kinds


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_refused_clearly_and_damages_nothing(ws, tmp_path, name):
    case = CASES[name]
    argv, bad, protect = case.setup(ws, tmp_path)
    before = {p: _snapshot(p) for p in protect}
    around = {p.parent: sorted(os.listdir(p.parent)) for p in protect}
    assert all(v is not None for v in before.values()), "protected outputs must exist"

    rc, err = _run(argv)

    command = argv[0]
    assert rc == 2, f"exit status {rc}\n{err}"
    if command == "infer":
        summary = json.loads((ws.inference / "summary.json").read_text())
        assert summary["n_failed"] == 1 and summary["n_ok"] == 0, summary
        message = summary["failed"][0]["error"]
        assert "ltemfactory infer: error: 1 of 1 image(s) failed" in err
    elif command == "dataset" and argv[1] == "check":
        message = err
        assert "ltemfactory dataset check: " in err and "problem(s) in" in err
    else:
        # one error line (a progress bar may precede it on the same terminal line)
        assert err.count(f"ltemfactory {command}: error: ") == 1, err
        message = err.split(f"ltemfactory {command}: error: ", 1)[1]
        assert "Traceback" not in err
    for fragment in case.expect:
        fragment = fragment.format(bad=bad, out=protect[0] if protect else "")
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    for p, snap in before.items():
        assert _snapshot(p) == snap, f"{p} changed after the failed {command}"
    for parent, names in around.items():
        if command == "infer" and parent == ws.inference:
            continue  # summary.json is rewritten (it lists the failure); nothing else
        assert sorted(os.listdir(parent)) == names, f"files appeared or vanished in {parent}"


@pytest.mark.parametrize("name", ["config_batch_size_zero", "assemble_relax_and_render_swapped"])
def test_console_script_exits_2_with_one_error_line(ws, tmp_path, name):
    assert EXE.is_file(), f"{EXE}: the ltemfactory console script is not installed"
    argv, bad, protect = CASES[name].setup(ws, tmp_path)
    before = _snapshot(protect[0])
    env = dict(os.environ, PATH=f"{EXE.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run(
        [str(EXE), *map(str, argv)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 2, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and str(bad) in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert _snapshot(protect[0]) == before


def test_infer_lists_every_bad_image_and_keeps_earlier_results(ws, tmp_path):
    """Several bad images in one run: each failure names its file, the exit status is 2."""
    bad = [
        _png((16, 16))(tmp_path),
        _write("junk.tif", b"II*\x00" + b"\xff" * 40)(tmp_path),
        _npy(np.full((40, 40), np.nan), "nan.npy")(tmp_path),
    ]
    before = _snapshot(ws.inference / "good")
    rc, err = _run(["infer", *bad, "--model", ws.model, "--out", ws.inference])
    assert rc == 2 and "3 of 3 image(s) failed" in err, err
    failed = json.loads((ws.inference / "summary.json").read_text())["failed"]
    assert [f["file"] for f in failed] == [str(p) for p in bad]
    assert all(f["error"].startswith(f["file"]) for f in failed), failed
    assert _snapshot(ws.inference / "good") == before


def test_read_only_commands_do_not_touch_a_bad_store(ws, tmp_path):
    """``dataset check`` reports a damaged store and leaves it exactly as it was."""
    store = _copy(ws.dataset, tmp_path / "d.zarr")
    (store / "labels" / "c" / "1" / "0" / "0").unlink()
    snap = _snapshot(store)
    rc, err = _run(["dataset", "check", store])
    assert rc == 2 and "labels: chunk file c/1/0/0 missing" in err, err
    assert _snapshot(store) == snap


def test_store_errors_are_input_errors_and_key_errors(ws):
    """Code that probes a store with ``except KeyError`` keeps working; the CLI sees an
    InputError naming the store."""
    from ltemfactory.errors import InputError
    from ltemfactory.stores import open_store

    group = open_store(ws.relax[0])
    assert "m" in group and "image" not in group
    with pytest.raises(KeyError):
        group["image"]
    with pytest.raises(InputError, match=f"^{ws.relax[0]}: no array 'image' \\(a 'relax' store"):
        group["image"]
    m = group["m"]
    assert np.array_equal(np.asarray(m), m[...]) and np.isfinite(m[0]).all()
    with pytest.raises(IndexError):  # a bad selection is the caller's error, not the store's
        m[99]
