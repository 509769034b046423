"""Parameter sweep: draw one row of physical parameters per magnetisation state.

The sweep table (``sweep.tsv``) is the contract between the ``sweep`` rule and every later
stage. Columns, in order: ``state_id`` (0..n-1), ``batch`` (``state_id // batch_size``), the
twelve parameters of :data:`PARAMETER_KEYS`, then ``seed`` (a per-state seed derived from the
config seed and the state id). Floats are written with :func:`repr` and so read back bit for
bit.

Sampling (``sweep.sampling``):

* ``latin_hypercube``: a scrambled Latin hypercube over the non-constant parameters (in
  :data:`PARAMETER_KEYS` order); each unit coordinate goes through the inverse CDF of its
  distribution, so each parameter has exactly one sample in each of the ``n_states``
  equal-probability strata.
* ``random``: independent uniform unit coordinates through the same inverse CDFs.
* ``grid``: the Cartesian product of the grid points of the non-constant parameters, the first
  parameter of :data:`PARAMETER_KEYS` varying slowest.

Inverse CDFs: uniform (linear), loguniform (geometric), normal (``scipy.stats.norm.ppf`` of the
normal *truncated* to ``[low, high]`` where given, so no probability piles up at the bounds),
integer (floor over ``low..high`` inclusive), choice (weighted quantile bins, in the order of
``values``). The draws depend only on ``seed`` and ``sweep.parameters``/``n_states``/
``sampling``, never on ``batch_size``.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ltemfactory.errors import InputError
from ltemfactory.files import write_text_atomic

log = logging.getLogger(__name__)

PARAMETER_KEYS: tuple[str, ...] = (
    "Ms_A_per_m",
    "A_J_per_m",
    "D_J_per_m2",
    "Ku_J_per_m3",
    "field_mT",
    "thickness_nm",
    "cell_size_nm",
    "grain_size_nm",
    "grain_disorder_pct",
    "initial_state",
    "lattice_constant_nm",
    "bubble_radius_nm",
)
"""The swept physical parameters, in sweep-table column order (units in the names)."""

INITIAL_STATES: tuple[str, ...] = (
    "random",
    "bubbles_random",
    "bubbles_hex",
    "stripes",
    "field_history",
)
"""Allowed values of the ``initial_state`` parameter."""

SWEEP_COLUMNS: tuple[str, ...] = ("state_id", "batch", *PARAMETER_KEYS, "seed")
"""Columns of the sweep table, in order."""

_INT_COLUMNS = frozenset({"state_id", "batch", "seed"})
_STR_COLUMNS = frozenset({"initial_state"})

_DEFAULT_INITIAL_STATES = {
    "distribution": "choice",
    "values": ["bubbles_hex", "bubbles_random", "field_history"],
}

PRESET_DISTRIBUTIONS: dict[str, dict[str, dict[str, Any]]] = {
    # Fe3GeTe2 flakes: Ms, A, D, thickness, cells and grains are the ranges of the mumax3 sweep
    # of Bender & McCray (2022). Their Ku = 1.5e6 J/m^3 at B = 0.4 T gives no skyrmions in this
    # single-layer 27.5 nm film model (measured with `relax`: every seeded bubble collapses at
    # all corners of the Ms range, for 150-400 mT; so does Ku = 1.5e5 at Ms = 1.5e5 A/m), so Ku
    # and the field span the window where seeded lattices survive at every corner of the other
    # ranges: Ku 0.6-1.2e5 J/m^3, 50-150 mT (the experimental images were taken at 50 mT).
    "fe3gete2": {
        "Ms_A_per_m": {"distribution": "uniform", "low": 1.5e5, "high": 3.0e5},
        "A_J_per_m": {"distribution": "uniform", "low": 1.1e-11, "high": 1.9e-11},
        "D_J_per_m2": {"distribution": "uniform", "low": 1.0e-3, "high": 1.3e-3},
        "Ku_J_per_m3": {"distribution": "uniform", "low": 6.0e4, "high": 1.2e5},
        "field_mT": {"distribution": "uniform", "low": 50.0, "high": 150.0},
        "thickness_nm": {"distribution": "constant", "value": 27.5},
        "cell_size_nm": {"distribution": "constant", "value": 3.0},
        "grain_size_nm": {"distribution": "constant", "value": 300.0},
        "grain_disorder_pct": {"distribution": "constant", "value": 25.0},
        "initial_state": _DEFAULT_INITIAL_STATES,
        "lattice_constant_nm": {"distribution": "uniform", "low": 50.0, "high": 90.0},
        "bubble_radius_nm": {"distribution": "uniform", "low": 10.0, "high": 20.0},
    },
    # Co/Pt-multilayer-like thin film with interfacial DMI.
    "copt_multilayer": {
        "Ms_A_per_m": {"distribution": "uniform", "low": 0.9e6, "high": 1.2e6},
        "A_J_per_m": {"distribution": "uniform", "low": 1.0e-11, "high": 1.5e-11},
        "D_J_per_m2": {"distribution": "uniform", "low": 1.5e-3, "high": 2.5e-3},
        "Ku_J_per_m3": {"distribution": "uniform", "low": 0.8e6, "high": 1.2e6},
        "field_mT": {"distribution": "uniform", "low": 50.0, "high": 150.0},
        "thickness_nm": {"distribution": "constant", "value": 10.0},
        "cell_size_nm": {"distribution": "constant", "value": 2.0},
        "grain_size_nm": {"distribution": "constant", "value": 20.0},
        "grain_disorder_pct": {"distribution": "constant", "value": 5.0},
        "initial_state": _DEFAULT_INITIAL_STATES,
        "lattice_constant_nm": {"distribution": "uniform", "low": 30.0, "high": 60.0},
        "bubble_radius_nm": {"distribution": "uniform", "low": 5.0, "high": 15.0},
    },
}
"""Parameter distributions of each ``sweep.preset`` (defaults; ``sweep.parameters`` overrides)."""


# --------------------------------------------------------------------------------------------
# Distributions


def _as_value(key: str, value: Any) -> Any:
    """Sweep-table type of a parameter value: ``str`` for initial_state, ``float`` otherwise."""
    if key in _STR_COLUMNS:
        return str(value)
    return float(value)


def is_constant(spec: Mapping[str, Any]) -> bool:
    """Whether a distribution spec always gives the same value."""
    return spec["distribution"] == "constant"


def _normal_cdf_bounds(spec: Mapping[str, Any]) -> tuple[float, float]:
    from scipy.stats import norm

    mean, std = float(spec["mean"]), float(spec["std"])
    lo = float(norm.cdf((spec["low"] - mean) / std)) if spec.get("low") is not None else 0.0
    hi = float(norm.cdf((spec["high"] - mean) / std)) if spec.get("high") is not None else 1.0
    return lo, hi


def normal_mass(spec: Mapping[str, Any]) -> float:
    """Probability of ``[low, high]`` under the untruncated normal of a ``normal`` spec."""
    lo, hi = _normal_cdf_bounds(spec)
    return hi - lo


def choice_probabilities(spec: Mapping[str, Any]) -> np.ndarray:
    """Normalised probabilities of the ``values`` of a ``choice`` spec."""
    n = len(spec["values"])
    weights = spec.get("weights")
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    return w / w.sum()


def inverse_cdf(spec: Mapping[str, Any], u: np.ndarray) -> list[Any]:
    """Map unit coordinates ``u`` in [0, 1) through the inverse CDF of a distribution spec."""
    kind = spec["distribution"]
    u = np.asarray(u, dtype=float)
    if kind == "constant":
        return [spec["value"]] * len(u)
    if kind == "uniform":
        low, high = float(spec["low"]), float(spec["high"])
        x = np.clip(low + u * (high - low), low, high)
    elif kind == "loguniform":
        llow, lhigh = math.log(spec["low"]), math.log(spec["high"])
        x = np.clip(np.exp(llow + u * (lhigh - llow)), spec["low"], spec["high"])
    elif kind == "normal":
        from scipy.stats import norm

        lo, hi = _normal_cdf_bounds(spec)
        p = np.clip(lo + u * (hi - lo), np.finfo(float).tiny, 1.0 - np.finfo(float).eps / 2)
        x = float(spec["mean"]) + float(spec["std"]) * norm.ppf(p)
        x = np.clip(
            x,
            spec["low"] if spec.get("low") is not None else -np.inf,
            spec["high"] if spec.get("high") is not None else np.inf,
        )
    elif kind == "integer":
        low, high = int(spec["low"]), int(spec["high"])
        x = np.minimum(low + np.floor(u * (high - low + 1)), high)
    elif kind == "choice":
        cum = np.cumsum(choice_probabilities(spec))
        idx = np.minimum(np.searchsorted(cum, u, side="right"), len(cum) - 1)
        return [spec["values"][i] for i in idx]
    else:  # pragma: no cover - the schema rejects other names
        raise ValueError(f"unknown distribution {kind!r}")
    return [float(v) for v in x]


def grid_points(spec: Mapping[str, Any]) -> list[Any]:
    """Grid points of a distribution spec for ``sampling: grid``.

    constant → its value; uniform → ``linspace(low, high, num)``; loguniform →
    ``geomspace(low, high, num)``; integer → ``linspace(low, high, num)`` rounded, unique;
    normal → ``num`` equal-probability quantile midpoints of the (truncated) normal;
    choice → all ``values`` (``num`` ignored).
    """
    kind = spec["distribution"]
    if kind == "constant":
        return [spec["value"]]
    if kind == "choice":
        return list(spec["values"])
    num = int(spec["num"])
    if kind == "uniform":
        return [float(v) for v in np.linspace(spec["low"], spec["high"], num)]
    if kind == "loguniform":
        return [float(v) for v in np.geomspace(spec["low"], spec["high"], num)]
    if kind == "integer":
        pts = np.unique(np.rint(np.linspace(spec["low"], spec["high"], num)))
        return [float(v) for v in pts]
    if kind == "normal":
        return inverse_cdf(spec, (np.arange(num) + 0.5) / num)
    raise ValueError(f"unknown distribution {kind!r}")  # pragma: no cover


# --------------------------------------------------------------------------------------------
# Drawing


def state_seed(seed: int, state_id: int) -> int:
    """Per-state seed (uint32) derived from the config seed and the state id."""
    return int(np.random.SeedSequence([int(seed), int(state_id)]).generate_state(1)[0])


def _unit_samples(sampling: str, n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence(int(seed)))
    if d == 0:
        return np.empty((n, 0))
    if sampling == "latin_hypercube":
        from scipy.stats import qmc

        return qmc.LatinHypercube(d=d, rng=rng).random(n)
    if sampling == "random":
        return rng.random((n, d))
    raise ValueError(f"unknown sampling {sampling!r}")  # pragma: no cover


def draw_sweep(cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Draw the sweep table of a config: one row per state (see the module docstring).

    ``cfg`` is normally the resolved config of :func:`ltemfactory.config.load_config`; a raw
    config dict is validated and resolved first (raising :class:`ConfigError`). The same
    config always gives identical rows (bit-identical floats).
    """
    from ltemfactory.config import validate_config

    cfg = validate_config(cfg, warn=False)
    sweep = cfg["sweep"]
    params = sweep["parameters"]
    n, batch_size, seed = int(sweep["n_states"]), int(sweep["batch_size"]), int(cfg["seed"])
    varying = [k for k in PARAMETER_KEYS if not is_constant(params[k])]
    columns: dict[str, list[Any]] = {}
    for key in PARAMETER_KEYS:
        if key not in varying:
            columns[key] = [params[key]["value"]] * n

    if sweep["sampling"] == "grid":
        combos = list(itertools.product(*(grid_points(params[k]) for k in varying)))
        if len(combos) != n:  # pragma: no cover - validate_config checks this
            raise ValueError(f"grid gives {len(combos)} states, n_states is {n}")
        for j, key in enumerate(varying):
            columns[key] = [c[j] for c in combos]
    else:
        u = _unit_samples(sweep["sampling"], n, len(varying), seed)
        for j, key in enumerate(varying):
            columns[key] = inverse_cdf(params[key], u[:, j])

    rows = []
    for i in range(n):
        row: dict[str, Any] = {"state_id": i, "batch": i // batch_size}
        for key in PARAMETER_KEYS:
            row[key] = _as_value(key, columns[key][i])
        row["seed"] = state_seed(seed, i)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# TSV I/O


def _format_cell(column: str, value: Any) -> str:
    if column in _INT_COLUMNS:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise InputError(f"column {column!r}: expected an integer, got {value!r}")
        return str(int(value))
    if column in _STR_COLUMNS:
        text = str(value)
        if not text or any(c in text for c in "\t\r\n"):
            raise InputError(f"column {column!r}: empty or tab/newline in {text!r}")
        return text
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InputError(f"column {column!r}: expected a number, got {value!r}")
    return repr(float(value))


def write_sweep_tsv(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write sweep rows to a tab-separated file atomically; floats round-trip exactly.

    The header is :data:`SWEEP_COLUMNS`. The file is written to a temporary file in the same
    directory and moved into place with :func:`os.replace`, so readers never see half a table.
    """
    path = Path(path)
    lines = ["\t".join(SWEEP_COLUMNS)]
    for i, row in enumerate(rows):
        missing = [c for c in SWEEP_COLUMNS if c not in row]
        if missing:
            raise InputError(f"{path}: row {i} lacks column(s) {', '.join(missing)}")
        try:
            lines.append("\t".join(_format_cell(c, row[c]) for c in SWEEP_COLUMNS))
        except InputError as exc:
            raise InputError(f"{path}: row {i}: {exc}") from None
    text = "\n".join(lines) + "\n"
    write_text_atomic(path, text)
    return path


def _parse_cell(column: str, text: str) -> Any:
    if column in _INT_COLUMNS:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"column {column!r}: expected an integer, got {text!r}") from None
    if column in _STR_COLUMNS:
        if column == "initial_state" and text not in INITIAL_STATES:
            raise ValueError(
                f"column {column!r}: expected one of {', '.join(INITIAL_STATES)}, got {text!r}"
            )
        return text
    if column in PARAMETER_KEYS:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"column {column!r}: expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"column {column!r}: expected a finite number, got {text!r}")
        return value
    return text  # extra columns are kept as text


def read_sweep_tsv(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a sweep table written by :func:`write_sweep_tsv`, typed back.

    ``state_id``, ``batch`` and ``seed`` come back as ``int``, ``initial_state`` as ``str``,
    the other parameters as ``float``; extra columns are kept as ``str``. Raises
    :class:`InputError` naming the file (and line) when it is unreadable, lacks columns, or a
    value does not parse.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: sweep table not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read sweep table: {exc}") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines or not lines[0].strip():
        raise InputError(f"{path}: empty file, expected a header line")
    header = lines[0].rstrip("\r").split("\t")
    missing = [c for c in SWEEP_COLUMNS if c not in header]
    if missing:
        raise InputError(f"{path}:1: header lacks column(s) {', '.join(missing)}")
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        raise InputError(f"{path}:1: duplicate column(s) {', '.join(dupes)}")
    rows: list[dict[str, Any]] = []
    seen: set[int] = set()
    for lineno, line in enumerate(lines[1:], start=2):
        fields = line.rstrip("\r").split("\t")
        if len(fields) != len(header):
            raise InputError(
                f"{path}:{lineno}: expected {len(header)} tab-separated fields, got {len(fields)}"
            )
        try:
            row = {c: _parse_cell(c, f) for c, f in zip(header, fields, strict=True)}
        except ValueError as exc:
            raise InputError(f"{path}:{lineno}: {exc}") from None
        if row["state_id"] in seen:
            raise InputError(f"{path}:{lineno}: duplicate state_id {row['state_id']}")
        seen.add(row["state_id"])
        ordered = {c: row[c] for c in SWEEP_COLUMNS}
        ordered.update((c, row[c]) for c in header if c not in ordered)
        rows.append(ordered)
    return rows


def summarize(rows: Sequence[Mapping[str, Any]]) -> str:
    """One-line summary of a sweep table (for logs)."""
    n = len(rows)
    batches = len({r["batch"] for r in rows})
    states: dict[str, int] = {}
    for r in rows:
        states[r["initial_state"]] = states.get(r["initial_state"], 0) + 1
    mix = ", ".join(f"{k} {v}" for k, v in sorted(states.items()))
    return f"{n} states in {batches} batches (initial states: {mix or 'none'})"
