"""Markdown run report: sections from each input, relative links that resolve, copied figures."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from ltemfactory.errors import InputError
from ltemfactory.inference.report import write_report

LINK = re.compile(r"!?\[[^\]]*\]\(([^)]+)\)")


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4), value, np.uint8)).save(path)


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A results tree as the workflow leaves it (with an image name containing a space)."""
    r = tmp_path / "results"
    (r / "dataset_card").mkdir(parents=True)
    (r / "dataset_card" / "README.md").write_text("# Dataset card: tiny\n\ntext\n")
    (r / "model").mkdir()
    (r / "model" / "train_summary.json").write_text(
        json.dumps(
            {"run_id": "run123", "model_uri": "models:/m-1", "epochs": 2, "best_val_f1": 0.5}
        )
    )
    (r / "evaluation").mkdir()
    (r / "evaluation" / "test_metrics.json").write_text(
        json.dumps(
            {
                "split": "test",
                "n_images": 4,
                "metrics": {"test/f1_50": 0.8125, "test/ap_50": 0.75},
                "baseline_connected_components": {"test_baseline/f1_50": 0.625},
            }
        )
    )
    _png(r / "evaluation" / "test_grid.png", 10)
    inf = r / "inference"
    files = {
        "overlay": "my img/overlay.png",
        "psi6_map": "my img/psi6.png",
        "lattice": "my img/lattice.json",
        "instances": "my img/instances.csv",
        "labels": "my img/labels.tif",
    }
    _png(inf / files["overlay"], 20)
    _png(inf / files["psi6_map"], 30)
    for k in ("lattice", "instances", "labels"):
        (inf / files[k]).write_text("x")
    summary = {
        "model": {"source": "results/model/model.pt", "train_nn_distance_px": 16.0},
        "settings": {"tile_px": 256, "overlap_px": 32},
        "n_images": 2,
        "n_ok": 1,
        "n_failed": 1,
        "images": [
            {
                "file": "data/my img.tif",
                "frame": 0,
                "status": "ok",
                "output_dir": "my img",
                "files": files,
                "n_instances": 201,
                "scale_method": "fft_lattice",
                "scale_factor": 0.428,
                "count_rel_diff": -0.0312,
                "nn_rel_diff": 0.011,
                "psi6_global": 0.91,
            },
            {
                "file": "bad|file.tif",
                "frame": None,
                "status": "error",
                "error": "bad|file.tif: cannot read as tiff (truncated)",
            },
        ],
    }
    (inf / "summary.json").write_text(json.dumps(summary))
    return r


def test_report_links_every_input_and_copies_figures(results: Path):
    out = results / "report"
    path = write_report(
        out,
        dataset_card=results / "dataset_card",
        model=results / "model",
        evaluation=results / "evaluation",
        inference=results / "inference",
    )
    assert path == out / "report.md"
    text = path.read_text()
    targets = [unquote(t) for t in LINK.findall(text)]
    # every link is relative and resolves from the report directory
    assert targets and all(not Path(t).is_absolute() for t in targets)
    missing = [t for t in targets if not (out / t).exists()]
    assert not missing, missing
    resolved = {(out / t).resolve() for t in targets}
    for expected in (
        results / "dataset_card" / "README.md",
        results / "model" / "train_summary.json",
        results / "evaluation" / "test_metrics.json",
        results / "inference" / "summary.json",
        results / "inference" / "my img" / "lattice.json",
        results / "inference" / "my img" / "instances.csv",
    ):
        assert expected.resolve() in resolved, expected
    # figures are copies inside the report directory, byte for byte
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert figures == ["my img_overlay.png", "my img_psi6_map.png", "test_grid.png"]
    assert (out / "figures" / "test_grid.png").read_bytes() == (
        results / "evaluation" / "test_grid.png"
    ).read_bytes()
    # content: the card's title, model and metric values, the image row, the failure
    assert "Dataset card: tiny" in text and "run123" in text
    assert "| f1_50 | 0.8125 | 0.625 |" in text
    assert "| my img | 201 | fft_lattice ×0.428 |" in text and "-3.1 %" in text
    assert "bad\\|file.tif: cannot read as tiff (truncated)" in text

    # the report survives being moved together with the results tree
    moved = shutil.copytree(results, results.parent / "moved")
    text2 = (moved / "report" / "report.md").read_text()
    assert all((moved / "report" / unquote(t)).exists() for t in LINK.findall(text2))


def test_missing_sections_and_inputs(results: Path, tmp_path: Path):
    text = write_report(tmp_path / "r", inference=results / "inference").read_text()
    assert text.count("Not provided.") == 3 and "my img" in text
    with pytest.raises(InputError, match="train_summary.json"):
        write_report(tmp_path / "r2", model=tmp_path / "nowhere")
    (results / "model" / "train_summary.json").write_text("{broken")
    with pytest.raises(InputError, match="not a readable JSON"):
        write_report(tmp_path / "r3", model=results / "model")
