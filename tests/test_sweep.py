"""Parameter sweep drawing and the sweep TSV."""

from __future__ import annotations

import copy
import logging
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.stats import norm

from ltemfactory import cli
from ltemfactory.config import validate_config
from ltemfactory.errors import InputError
from ltemfactory.sweep import (
    INITIAL_STATES,
    PARAMETER_KEYS,
    SWEEP_COLUMNS,
    draw_sweep,
    read_sweep_tsv,
    state_seed,
    write_sweep_tsv,
)

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "config.yaml"
TINY = ROOT / "tests" / "configs" / "tiny.yaml"


def raw(path: Path = TINY) -> dict:
    return yaml.safe_load(path.read_text())


def with_params(n: int, sampling: str, **specs) -> dict:
    """Demo config with n states, all parameters constant except the given ones."""
    cfg = raw()
    cfg["sweep"]["n_states"] = n
    cfg["sweep"]["sampling"] = sampling
    params = cfg["sweep"]["parameters"]
    for key, spec in params.items():
        if key == "initial_state":
            params[key] = {"distribution": "constant", "value": "bubbles_hex"}
        elif spec["distribution"] != "constant":
            params[key] = {"distribution": "constant", "value": spec["low"]}
    params.update(specs)
    return cfg


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


def test_row_layout():
    cfg = validate_config(raw(TINY))
    rows = draw_sweep(cfg)
    assert len(rows) == 4
    for i, row in enumerate(rows):
        assert tuple(row) == SWEEP_COLUMNS
        assert row["state_id"] == i and row["batch"] == i // 2
        assert row["seed"] == state_seed(cfg["seed"], i)
        assert 0 <= row["seed"] < 2**32
        assert row["initial_state"] in INITIAL_STATES
        for key in PARAMETER_KEYS:
            if key != "initial_state":
                assert type(row[key]) is float
    assert len({r["seed"] for r in rows}) == 4


def test_deterministic_and_independent_of_batch_size():
    cfg = raw()
    a, b = draw_sweep(cfg), draw_sweep(copy.deepcopy(cfg))
    assert [[bits(v) if isinstance(v, float) else v for v in r.values()] for r in a] == [
        [bits(v) if isinstance(v, float) else v for v in r.values()] for r in b
    ]
    cfg["sweep"]["batch_size"] = 3
    c = draw_sweep(cfg)
    strip = [{k: v for k, v in r.items() if k != "batch"} for r in a]
    assert strip == [{k: v for k, v in r.items() if k != "batch"} for r in c]
    assert [r["batch"] for r in c] == [0, 0, 0, 1]
    cfg["seed"] += 1
    assert draw_sweep(cfg)[0]["Ms_A_per_m"] != a[0]["Ms_A_per_m"]


@pytest.mark.parametrize("n", [1, 7, 50])
def test_latin_hypercube_stratification(n):
    specs = {
        "Ms_A_per_m": {"distribution": "uniform", "low": 1e5, "high": 3e5},
        "A_J_per_m": {"distribution": "loguniform", "low": 1e-12, "high": 1e-10},
        "field_mT": {"distribution": "normal", "mean": 100, "std": 30},
        "D_J_per_m2": {"distribution": "normal", "mean": 1e-3, "std": 5e-4, "low": 0, "high": 2e-3},
    }
    cdfs = {
        "Ms_A_per_m": lambda x: (x - 1e5) / 2e5,
        "A_J_per_m": lambda x: math.log(x / 1e-12) / math.log(100),
        "field_mT": lambda x: norm.cdf((x - 100) / 30),
        "D_J_per_m2": lambda x: (
            (norm.cdf((x - 1e-3) / 5e-4) - norm.cdf(-2)) / (norm.cdf(2) - norm.cdf(-2))
        ),
    }
    rows = draw_sweep(with_params(n, "latin_hypercube", **specs))
    for key, cdf in cdfs.items():
        strata = sorted(min(int(cdf(r[key]) * n), n - 1) for r in rows)
        assert strata == list(range(n)), key
    assert all(0 <= r["D_J_per_m2"] <= 2e-3 for r in rows)


def test_latin_hypercube_integer_and_choice_strata():
    n = 30
    rows = draw_sweep(
        with_params(
            n,
            "latin_hypercube",
            grain_size_nm={"distribution": "integer", "low": 1, "high": 3},
            initial_state={
                "distribution": "choice",
                "values": ["stripes", "random", "bubbles_hex"],
            },
        )
    )
    counts = np.unique([r["grain_size_nm"] for r in rows], return_counts=True)
    assert counts[0].tolist() == [1.0, 2.0, 3.0] and counts[1].tolist() == [10, 10, 10]
    states = [r["initial_state"] for r in rows]
    assert {s: states.count(s) for s in set(states)} == {
        "stripes": 10,
        "random": 10,
        "bubbles_hex": 10,
    }


def test_grid_product_and_coverage():
    cfg = with_params(
        3 * 2 * 4 * 2,
        "grid",
        Ms_A_per_m={"distribution": "uniform", "low": 1e5, "high": 3e5, "num": 3},
        A_J_per_m={"distribution": "loguniform", "low": 1e-12, "high": 1e-10, "num": 2},
        grain_size_nm={"distribution": "integer", "low": 10, "high": 13, "num": 9},
        initial_state={"distribution": "choice", "values": ["stripes", "random"], "num": 99},
    )
    rows = draw_sweep(cfg)
    assert len(rows) == 48
    combos = {
        (r["Ms_A_per_m"], r["A_J_per_m"], r["grain_size_nm"], r["initial_state"]) for r in rows
    }
    assert len(combos) == 48
    assert sorted({r["Ms_A_per_m"] for r in rows}) == [1e5, 2e5, 3e5]
    assert sorted({r["A_J_per_m"] for r in rows}) == pytest.approx([1e-12, 1e-10])
    assert sorted({r["grain_size_nm"] for r in rows}) == [10.0, 11.0, 12.0, 13.0]
    assert {r["initial_state"] for r in rows} == {"stripes", "random"}
    # first varying parameter varies slowest
    assert [r["Ms_A_per_m"] for r in rows[:16]] == [1e5] * 16


def test_random_within_bounds():
    cfg = with_params(
        500,
        "random",
        Ms_A_per_m={"distribution": "uniform", "low": 1e5, "high": 3e5},
        A_J_per_m={"distribution": "loguniform", "low": 1e-12, "high": 1e-10},
        grain_size_nm={"distribution": "integer", "low": 5, "high": 8},
        field_mT={"distribution": "normal", "mean": 100, "std": 50, "low": 80, "high": 130},
    )
    rows = draw_sweep(cfg)
    ms = np.array([r["Ms_A_per_m"] for r in rows])
    a = np.array([r["A_J_per_m"] for r in rows])
    g = np.array([r["grain_size_nm"] for r in rows])
    f = np.array([r["field_mT"] for r in rows])
    assert ms.min() >= 1e5 and ms.max() <= 3e5
    assert a.min() >= 1e-12 and a.max() <= 1e-10
    # loguniform: the log is uniform, so about half the samples lie below the geometric mean
    assert 0.4 < np.mean(a < 1e-11) < 0.6
    assert set(g.tolist()) == {5.0, 6.0, 7.0, 8.0}
    assert f.min() >= 80 and f.max() <= 130
    assert np.array_equal(g, np.floor(g))


def test_random_choice_frequencies_follow_weights():
    n = 4000
    rows = draw_sweep(
        with_params(
            n,
            "random",
            initial_state={
                "distribution": "choice",
                "values": ["bubbles_hex", "stripes", "random"],
                "weights": [6, 3, 1],
            },
            thickness_nm={"distribution": "choice", "values": [10, 20], "weights": [0, 1]},
        )
    )
    states = [r["initial_state"] for r in rows]
    for name, p in [("bubbles_hex", 0.6), ("stripes", 0.3), ("random", 0.1)]:
        assert states.count(name) / n == pytest.approx(p, abs=0.03)
    assert {r["thickness_nm"] for r in rows} == {20.0}


def test_tsv_round_trip_is_exact(tmp_path):
    rows = draw_sweep(raw())
    rows[0]["Ms_A_per_m"] = 0.1 + 0.2  # not representable in few digits
    rows[1]["D_J_per_m2"] = -5e-324
    path = write_sweep_tsv(rows, tmp_path / "sub" / "sweep.tsv")
    back = read_sweep_tsv(path)
    assert back == rows
    for r, b in zip(rows, back, strict=True):
        for key in SWEEP_COLUMNS:
            assert type(r[key]) is type(b[key])
            if isinstance(r[key], float):
                assert bits(r[key]) == bits(b[key])
    assert path.read_text().splitlines()[0].split("\t") == list(SWEEP_COLUMNS)
    assert [p.name for p in path.parent.iterdir()] == ["sweep.tsv"]  # no temp files left


def test_tsv_errors(tmp_path):
    good = write_sweep_tsv(draw_sweep(raw(TINY)), tmp_path / "good.tsv")
    lines = good.read_text().splitlines()

    def check(text: str, expected: str) -> None:
        path = tmp_path / "bad.tsv"
        path.write_text(text)
        with pytest.raises(InputError) as info:
            read_sweep_tsv(path)
        assert str(path) in str(info.value) and expected in str(info.value)

    check("", "empty file")
    check("state_id\tbatch\n0\t0\n", "lacks column(s) Ms_A_per_m")
    check("\n".join([lines[0], lines[1].replace("\t", "\t\t", 1)]) + "\n", ":2: expected 15")
    fields = lines[2].split("\t")
    fields[2] = "abc"
    check("\n".join([lines[0], lines[1], "\t".join(fields)]) + "\n", ":3: column 'Ms_A_per_m'")
    fields = lines[1].split("\t")
    fields[SWEEP_COLUMNS.index("initial_state")] = "soup"
    check("\n".join([lines[0], "\t".join(fields)]) + "\n", ":2: column 'initial_state'")
    check("\n".join([lines[0], lines[1], lines[1]]) + "\n", ":3: duplicate state_id 0")
    with pytest.raises(InputError, match="not found"):
        read_sweep_tsv(tmp_path / "missing.tsv")


def test_cli_sweep_writes_file(tmp_path, caplog):
    out = tmp_path / "results" / "sweep.tsv"
    with caplog.at_level(logging.INFO, logger="ltemfactory"):
        assert cli.main(["sweep", "--config", str(TINY), "--out", str(out)]) == 0
    rows = read_sweep_tsv(out)
    assert rows == draw_sweep(raw(TINY))
    assert "4 states in 2 batches" in caplog.text


def test_cli_sweep_bad_config(tmp_path, capsys):
    cfg = raw(TINY)
    cfg["sweep"]["batch_size"] = 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    assert cli.main(["sweep", "--config", str(bad), "--out", str(tmp_path / "s.tsv")]) == 2
    assert "sweep.batch_size" in capsys.readouterr().err
    assert not (tmp_path / "s.tsv").exists()
