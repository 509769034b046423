"""A Markdown report of one workflow run: dataset, trained model, test metrics, inference.

:func:`write_report` writes ``out_dir/report.md`` and copies its figures into
``out_dir/figures/`` (so the pictures show wherever the report directory is opened). Everything
else — the dataset card, ``train_summary.json``, the metrics JSON, each image's
``lattice.json``/``instances.csv``/``labels.tif`` and the inference ``summary.json`` — is linked
with paths relative to ``out_dir``, so the links work as long as the results tree stays together
(e.g. ``results/report`` beside ``results/dataset_card``, ``results/model``, ...).

A section whose input is not given says so; an input that is given but missing or unreadable
raises :class:`~ltemfactory.errors.InputError` naming it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ltemfactory import __version__
from ltemfactory.errors import InputError
from ltemfactory.files import atomic_path, write_text_atomic

__all__ = ["REPORT_FILE", "write_report"]

log = logging.getLogger(__name__)

REPORT_FILE = "report.md"
FIGURES_DIR = "figures"

_MODEL_FIELDS = (
    ("run_id", "MLflow run"),
    ("model_uri", "model URI"),
    ("registered_model", "registered model"),
    ("formulation", "formulation"),
    ("epochs", "epochs"),
    ("global_step", "optimiser steps"),
    ("best_val_f1", "best validation F1@0.5"),
    ("train_diameter_px", "median training skyrmion diameter [px]"),
    ("precision", "precision"),
    ("devices", "devices"),
    ("wall_s", "training time [s]"),
)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable JSON file ({exc})") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _in_dir(path: Path, name: str, what: str) -> Path:
    """``path/name`` for a directory, ``path`` for a file; InputError when neither exists."""
    if path.is_dir():
        return path / name
    if not path.exists():
        raise InputError(f"{path}: no such {what} directory (expected {name} in it) or file")
    return path


def _cell(value: Any) -> str:
    """A Markdown table cell: numbers to 4 significant digits, '|' escaped, one line."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _qty(value: Any, unit: str) -> str:
    """A value with its unit, or 'unknown'."""
    return "unknown" if value is None else f"{_cell(value)} {unit}"


def _pct(value: Any) -> str:
    if value is None or not isinstance(value, int | float) or not math.isfinite(value):
        return "–"
    return f"{100 * value:+.1f} %"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


class _Links:
    """Relative links from the report directory; figures copied into ``figures/``."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.figures = out_dir / FIGURES_DIR
        self.used: set[str] = set()

    def rel(self, target: Path) -> str:
        rel = os.path.relpath(Path(target).resolve(), self.out_dir.resolve())
        return Path(rel).as_posix().replace(" ", "%20")

    def link(self, text: str, target: Path) -> str:
        if not Path(target).exists():
            return f"{text} (missing)"
        return f"[{text}]({self.rel(target)})"

    def figure(self, alt: str, source: Path, name: str) -> str:
        """Copy ``source`` to figures/<name> (unique) and return a Markdown image."""
        if not Path(source).is_file():
            return f"*{alt}: missing ({source.name})*"
        stem, suffix = Path(name).stem, Path(name).suffix
        out, k = name, 2
        while out in self.used:
            out, k = f"{stem}-{k}{suffix}", k + 1
        self.used.add(out)
        dest = self.figures / out
        with atomic_path(dest) as tmp:
            shutil.copyfile(source, tmp)
        return f"![{alt}]({FIGURES_DIR}/{out})"


def _dataset_section(card: Path | None, links: _Links) -> list[str]:
    lines = ["## Dataset", ""]
    if card is None:
        return [*lines, "Not provided.", ""]
    readme = _in_dir(card, "README.md", "dataset card")
    if not readme.is_file():
        raise InputError(f"{readme}: no dataset card (expected a README.md)")
    title = next(
        (
            ln.lstrip("#").strip()
            for ln in readme.read_text(encoding="utf-8").splitlines()
            if ln.startswith("#")
        ),
        "dataset card",
    )
    lines.append(f"Dataset card: {links.link(title, readme)}.")
    return [*lines, ""]


def _model_section(model: Path | None, links: _Links) -> list[str]:
    lines = ["## Model", ""]
    if model is None:
        return [*lines, "Not provided.", ""]
    path = _in_dir(model, "train_summary.json", "model")
    summary = _read_json(path)
    rows = [[label, summary.get(key)] for key, label in _MODEL_FIELDS if key in summary]
    lines += _table(["", "value"], rows)
    lines += ["", f"Training summary: {links.link(path.name, path)}.", ""]
    return lines


def _evaluation_section(evaluation: Path | None, links: _Links) -> list[str]:
    lines = ["## Evaluation", ""]
    if evaluation is None:
        return [*lines, "Not provided.", ""]
    path = _in_dir(evaluation, "test_metrics.json", "evaluation")
    if evaluation.is_dir() and not path.is_file():
        path = next(iter(sorted(evaluation.glob("*_metrics.json"))), path)
    data = _read_json(path)
    split = str(data.get("split", "test"))
    lines.append(
        f"Split **{_cell(split)}**: {_cell(data.get('n_images'))} images, formulation "
        f"{_cell(data.get('formulation'))}, {_cell(data.get('seconds_per_image'))} s per image "
        f"({_cell(data.get('device'))}). Metrics: {links.link(path.name, path)}."
    )
    lines.append("")
    metrics: Mapping[str, Any] = data.get("metrics") or {}
    baseline: Mapping[str, Any] = data.get("baseline_connected_components") or {}
    base_by_name = {k.split("/", 1)[-1]: v for k, v in baseline.items()}
    rows = []
    for key, value in metrics.items():
        short = key.split("/", 1)[-1]
        rows.append([short, value, base_by_name.get(short)] if baseline else [short, value])
    header = ["metric", "model"] + (["connected-components baseline"] if baseline else [])
    if rows:
        lines += [*_table(header, rows), ""]
    grid = path.with_name(f"{split}_grid.png")
    lines += [links.figure(f"{split} split: image | truth | prediction", grid, grid.name), ""]
    return lines


def _inference_section(inference: Path | None, links: _Links) -> list[str]:
    lines = ["## Inference on experimental images", ""]
    if inference is None:
        return [*lines, "Not provided.", ""]
    path = _in_dir(inference, "summary.json", "inference")
    summary = _read_json(path)
    root = path.parent
    model = summary.get("model") or {}
    settings = summary.get("settings") or {}
    lines.append(
        f"{_cell(summary.get('n_ok'))} of {_cell(summary.get('n_images'))} image(s) processed, "
        f"{_cell(summary.get('n_failed'))} failed; model {_cell(model.get('source'))} "
        f"(training nearest-neighbour distance {_qty(model.get('train_nn_distance_px'), 'px')}, "
        f"training pixel size {_qty(model.get('train_pixel_size_nm'), 'nm')}); tiles "
        f"{_qty(settings.get('tile_px'), 'px')}, overlap {_qty(settings.get('overlap_px'), 'px')}. "
        f"Run summary: {links.link(path.name, path)}."
    )
    lines += [
        "",
        "Self-consistency: *expected* is the number of sites a hexagonal lattice with the FFT "
        "lattice constant a puts in the image (area·2/(√3 a²)); *detected* counts instances "
        "touching the border as ½. Δ NN compares the median nearest-neighbour distance of the "
        "detected skyrmions with a, Δ bond their median Delaunay bond length (scatter of the "
        "centroids shortens the NN distance, missed sites lengthen the bonds).",
        "",
    ]
    images = [e for e in summary.get("images", []) if e.get("status") == "ok"]
    failed = [e for e in summary.get("images", []) if e.get("status") != "ok"]
    if images:
        header = [
            "image",
            "skyrmions",
            "scale",
            "FFT a [px]",
            "median NN [px]",
            "expected",
            "detected",
            "Δ count",
            "Δ NN",
            "Δ bond",
            "ψ6",
            "6-fold",
            "confidence",
        ]
        rows = [
            [
                e.get("output_dir"),
                e.get("n_instances"),
                f"{e.get('scale_method')} ×{_cell(e.get('scale_factor'))}",
                e.get("fft_nn_distance_px"),
                e.get("median_nn_distance_px"),
                e.get("expected_count"),
                e.get("detected_count"),
                _pct(e.get("count_rel_diff")),
                _pct(e.get("nn_rel_diff")),
                _pct(e.get("bond_rel_diff")),
                e.get("psi6_global"),
                e.get("fraction_6fold"),
                e.get("mean_confidence"),
            ]
            for e in images
        ]
        lines += [*_table(header, rows), ""]
    if failed:
        lines += ["### Failed images", ""]
        rows = [[e.get("file"), e.get("frame"), e.get("error")] for e in failed]
        lines += [*_table(["file", "frame", "error"], rows), ""]
    for e in images:
        name = str(e.get("output_dir"))
        files = e.get("files") or {}
        lines += [f"### {name}", ""]
        lines.append(
            f"Input `{e.get('file')}`" + (f", frame {e['frame']}" if e.get("frame") else "")
        )
        lines.append("")
        for key, alt in (("overlay", "skyrmions (clear) and matrix (red)"), ("psi6_map", "|ψ6|")):
            if key in files:
                lines.append(links.figure(f"{name}: {alt}", root / files[key], f"{name}_{key}.png"))
        lines.append("")
        data_links = [
            links.link(Path(files[k]).name, root / files[k])
            for k in ("lattice", "instances", "labels")
            if k in files
        ]
        if data_links:
            lines += ["Data: " + ", ".join(data_links) + ".", ""]
    return lines


def write_report(
    out_dir: str | os.PathLike[str],
    *,
    dataset_card: str | os.PathLike[str] | None = None,
    model: str | os.PathLike[str] | None = None,
    evaluation: str | os.PathLike[str] | None = None,
    inference: str | os.PathLike[str] | None = None,
    title: str = "ltemfactory run report",
) -> Path:
    """Write ``out_dir/report.md`` (and ``out_dir/figures/``) and return its path.

    Args:
        out_dir: report directory (created).
        dataset_card: the dataset card directory (``README.md``) or the README itself.
        model: the model directory (``train_summary.json``) or the summary file.
        evaluation: the evaluation directory (``test_metrics.json``, ``test_grid.png``) or the
            metrics file.
        inference: the inference directory (``summary.json`` and one directory per image) or
            the summary file.
        title: the report's heading.

    Raises:
        InputError: an input that is given but missing or unreadable.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    links = _Links(out)

    def opt(p: str | os.PathLike[str] | None) -> Path | None:
        return None if p is None else Path(p)

    lines = [
        f"# {title}",
        "",
        f"Written by ltemfactory {__version__}. Links are relative to this directory; figures "
        f"are copies in `{FIGURES_DIR}/`.",
        "",
    ]
    lines += _dataset_section(opt(dataset_card), links)
    lines += _model_section(opt(model), links)
    lines += _evaluation_section(opt(evaluation), links)
    lines += _inference_section(opt(inference), links)
    path = out / REPORT_FILE
    write_text_atomic(path, "\n".join(lines).rstrip() + "\n")
    log.info("wrote the report %s", path)
    return path
