"""Config loading, schema validation, consistency checks and `ltemfactory config check`."""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from ltemfactory import cli
from ltemfactory.config import load_config, load_schema, n_batches, validate_config
from ltemfactory.errors import ConfigError
from ltemfactory.sweep import PARAMETER_KEYS, PRESET_DISTRIBUTIONS

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "config.yaml"
PAPER = ROOT / "configs" / "paper.yaml"
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
SCHEMA_LINK = ROOT / "workflow" / "schemas" / "config.schema.yaml"


def raw(path: Path = TINY) -> dict:
    return yaml.safe_load(path.read_text())


def error_of(cfg: dict) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(cfg, source="cfg.yaml")
    return str(info.value)


# --------------------------------------------------------------------------------------------
# Good configs


@pytest.mark.parametrize("path", [DEMO, TINY, PAPER], ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    assert list(cfg["sweep"]["parameters"]) == list(PARAMETER_KEYS)
    assert set(cfg["relax"]) == {
        "tolerance",
        "max_iterations",
        "dtype",
        "device",
        "demag",
        "field_history_fraction",
        "preconditioner_scale",
    }
    # The resolved config is itself valid (idempotent) and still passes the plain schema.
    assert validate_config(cfg) == cfg
    assert not list(Draft202012Validator(load_schema()).iter_errors(cfg))


def test_schema_is_valid_and_linked_for_snakemake():
    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA_LINK.is_symlink()
    assert not Path(SCHEMA_LINK.readlink()).is_absolute()
    assert SCHEMA_LINK.resolve() == (ROOT / "src/ltemfactory/schemas/config.schema.yaml")
    assert SCHEMA_LINK.read_text().splitlines()[0].startswith("$schema:")


def test_specific_values():
    tiny = load_config(TINY)
    assert tiny["sweep"]["grid"] == {"nx": 32, "ny": 32, "nz": 1, "boundary": "periodic"}
    assert (tiny["sweep"]["n_states"], tiny["sweep"]["batch_size"]) == (4, 2)
    assert tiny["relax"]["tolerance"] == 5e-2 and tiny["relax"]["max_iterations"] == 2000
    assert n_batches(tiny) == 2
    paper = load_config(PAPER)
    assert paper["sweep"]["n_states"] == 1250 and paper["sweep"]["preset"] == "fe3gete2"
    assert paper["sweep"]["parameters"] == PRESET_DISTRIBUTIONS["fe3gete2"]
    assert n_batches(paper) == 79
    demo = load_config(DEMO)
    assert demo["sweep"]["parameters"]["Ms_A_per_m"]["low"] == 1.5e5


def test_input_not_mutated_and_defaults_filled():
    cfg = raw()
    del cfg["relax"]
    del cfg["sweep"]["grid"]["nz"]
    before = copy.deepcopy(cfg)
    out = validate_config(cfg)
    assert cfg == before
    assert out["relax"]["field_history_fraction"] == [0.0, 0.5]
    assert out["relax"]["tolerance"] == 1e-2
    assert out["sweep"]["grid"]["nz"] == 1
    # defaults are copies, not the cached schema's objects
    out["relax"]["field_history_fraction"].append(1.0)
    assert validate_config(cfg)["relax"]["field_history_fraction"] == [0.0, 0.5]


def test_defaults_match_snakemake_validate():
    from snakemake.utils import validate

    for cfg in (raw(), raw(TINY), raw(PAPER)):
        for drop in (
            [],
            ["tolerance", "demag"],
            ["field_history_fraction", "dtype", "device", "max_iterations"],
        ):
            for key in drop:
                cfg["relax"].pop(key)
            snake = copy.deepcopy(cfg)
            validate(snake, str(SCHEMA_LINK))
            ours = validate_config(cfg)
            assert snake["relax"] == ours["relax"]
            assert snake["sweep"]["grid"] == ours["sweep"]["grid"]
            assert snake["sweep"]["sampling"] == ours["sweep"]["sampling"]
    cfg = raw()
    del cfg["relax"]
    snake = copy.deepcopy(cfg)
    validate(snake, str(SCHEMA_LINK))
    assert snake["relax"] == validate_config(cfg)["relax"]


def test_preset_override_per_key():
    cfg = raw(PAPER)
    cfg["sweep"]["parameters"] = {"Ku_J_per_m3": {"distribution": "constant", "value": 1.5e6}}
    out = validate_config(cfg)
    assert out["sweep"]["parameters"]["Ku_J_per_m3"] == {"distribution": "constant", "value": 1.5e6}
    assert (
        out["sweep"]["parameters"]["Ms_A_per_m"] == PRESET_DISTRIBUTIONS["fe3gete2"]["Ms_A_per_m"]
    )
    del cfg["sweep"]["parameters"]
    assert validate_config(cfg)["sweep"]["parameters"] == PRESET_DISTRIBUTIONS["fe3gete2"]


@pytest.mark.parametrize("preset", sorted(PRESET_DISTRIBUTIONS))
def test_presets_are_complete_and_valid(preset):
    assert list(PRESET_DISTRIBUTIONS[preset]) == list(PARAMETER_KEYS)
    cfg = raw(PAPER)
    cfg["sweep"]["preset"] = preset
    out = validate_config(cfg)
    # a preset spelled out as explicit parameters must pass the schema on its own
    explicit = copy.deepcopy(out)
    del explicit["sweep"]["preset"]
    validate_config(explicit)


def test_integral_floats_become_ints():
    cfg = raw()
    cfg["sweep"]["n_states"] = 8.0
    cfg["seed"] = 3.0
    out = validate_config(cfg)
    assert type(out["sweep"]["n_states"]) is int and type(out["seed"]) is int


def test_radius_lattice_overlap_is_a_warning(caplog):
    cfg = raw()
    cfg["sweep"]["parameters"]["bubble_radius_nm"] = {"distribution": "constant", "value": 40}
    with caplog.at_level(logging.WARNING, logger="ltemfactory"):
        validate_config(cfg)
    assert "bubble_radius_nm" in caplog.text


# --------------------------------------------------------------------------------------------
# Mistakes


def _set(cfg: dict, dotted: str, value) -> dict:
    *parents, last = dotted.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    node[last] = value
    return cfg


def _del(cfg: dict, dotted: str) -> dict:
    *parents, last = dotted.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    del node[last]
    return cfg


P = "sweep.parameters."
BAD = {
    "string_n_states": (lambda c: _set(c, "sweep.n_states", "eight"), "sweep.n_states"),
    "negative_Ms_low": (
        lambda c: _set(c, P + "Ms_A_per_m.low", -3),
        "sweep.parameters.Ms_A_per_m.low: expected a number > 0, got -3",
    ),
    "disorder_150": (
        lambda c: _set(c, P + "grain_disorder_pct.value", 150),
        "sweep.parameters.grain_disorder_pct.value: expected a number <= 100",
    ),
    "unknown_top_level": (lambda c: _set(c, "rneder", {}), "rneder: unknown key (allowed: seed"),
    "unknown_parameter": (
        lambda c: _set(c, P + "foo", {"distribution": "constant", "value": 1}),
        "sweep.parameters.foo: unknown key (allowed: Ms_A_per_m",
    ),
    "unknown_spec_key": (
        lambda c: _set(c, P + "field_mT.value", 3),
        "sweep.parameters.field_mT.value: unknown key",
    ),
    "missing_nx": (lambda c: _del(c, "sweep.grid.nx"), "sweep.grid.nx: missing required key"),
    "missing_parameter": (
        lambda c: _del(c, P + "D_J_per_m2"),
        "sweep.parameters.D_J_per_m2: missing required key",
    ),
    "missing_seed": (lambda c: _del(c, "seed"), "seed: missing required key"),
    "uniform_low_gt_high": (
        lambda c: _set(
            c, P + "A_J_per_m", {"distribution": "uniform", "low": 2e-11, "high": 1e-11}
        ),
        "sweep.parameters.A_J_per_m: expected low < high",
    ),
    "weights_length": (
        lambda c: _set(c, P + "initial_state.weights", [1, 1]),
        "sweep.parameters.initial_state.weights: expected 3 weights",
    ),
    "weights_zero_sum": (
        lambda c: _set(c, P + "initial_state.weights", [0, 0, 0]),
        "sweep.parameters.initial_state.weights: expected a positive sum",
    ),
    "gaussian": (
        lambda c: _set(c, P + "field_mT.distribution", "gaussian"),
        "sweep.parameters.field_mT.distribution: expected one of constant, uniform",
    ),
    "bad_initial_state": (
        lambda c: _set(c, P + "initial_state.values", ["bubbles_hex", "skyrmion_soup"]),
        "sweep.parameters.initial_state.values[1]: expected one of random",
    ),
    "loguniform_zero_low": (
        lambda c: _set(c, P + "D_J_per_m2", {"distribution": "loguniform", "low": 0, "high": 1e-3}),
        "sweep.parameters.D_J_per_m2.low: expected a number > 0",
    ),
    "normal_without_clip": (
        lambda c: _set(c, P + "Ms_A_per_m", {"distribution": "normal", "mean": 2e5, "std": 1e4}),
        "sweep.parameters.Ms_A_per_m.low: missing required key: a normal distribution",
    ),
    "integer_float_bounds": (
        lambda c: _set(c, P + "field_mT", {"distribution": "integer", "low": 1.5, "high": 9}),
        "sweep.parameters.field_mT.low: expected an integer, got number 1.5",
    ),
    "bad_sampling": (lambda c: _set(c, "sweep.sampling", "sobol"), "sweep.sampling: expected one"),
    "bad_boundary": (lambda c: _set(c, "sweep.grid.boundary", "mirror"), "sweep.grid.boundary"),
    "grid_nx_too_small": (lambda c: _set(c, "sweep.grid.nx", 4), "sweep.grid.nx: expected an"),
    "tolerance_zero": (lambda c: _set(c, "relax.tolerance", 0), "relax.tolerance: expected a"),
    "demag_string": (lambda c: _set(c, "relax.demag", "yes"), "relax.demag: expected true or"),
    "fraction_out_of_range": (
        lambda c: _set(c, "relax.field_history_fraction", [0.0, 3.0]),
        "relax.field_history_fraction[1]: expected a number <= 2",
    ),
    "empty_fraction_with_field_history": (
        lambda c: _set(c, "relax.field_history_fraction", []),
        "relax.field_history_fraction: expected a non-empty list",
    ),
    "nan": (
        lambda c: _set(c, P + "D_J_per_m2", {"distribution": "constant", "value": math.nan}),
        "sweep.parameters.D_J_per_m2.value: expected a finite number",
    ),
    "yaml11_exponent_string": (
        lambda c: _set(c, P + "Ms_A_per_m.low", "1.5e5"),
        "write e.g. 1.5e+5",
    ),
    "grid_without_num": (
        lambda c: _set(c, "sweep.sampling", "grid"),
        "sweep.parameters.Ms_A_per_m.num: missing required key: grid sampling",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_mistakes_name_the_key_path(name):
    mutate, expected = BAD[name]
    message = error_of(mutate(raw()))
    assert expected in message
    assert all(line.startswith("cfg.yaml: ") for line in message.splitlines())


def test_all_errors_reported_one_per_line():
    cfg = raw()
    cfg["sweep"]["n_states"] = "eight"
    cfg["relax"]["dtype"] = "float16"
    cfg["bogus"] = 1
    lines = error_of(cfg).splitlines()
    assert len(lines) == 3
    assert any("sweep.n_states" in x for x in lines)
    assert any("relax.dtype" in x for x in lines)
    assert any("bogus: unknown key" in x for x in lines)


def test_grid_n_states_must_equal_product():
    cfg = raw()
    params = cfg["sweep"]["parameters"]
    cfg["sweep"]["sampling"] = "grid"
    for key, spec in params.items():
        if spec["distribution"] not in ("constant", "choice"):
            params[key] = {"distribution": "constant", "value": spec["low"]}
    params["Ms_A_per_m"] = {"distribution": "uniform", "low": 1.5e5, "high": 3e5, "num": 3}
    params["field_mT"] = {"distribution": "integer", "low": 100, "high": 200, "num": 2}
    # initial_state: 3 values -> 3 x 3 x 2 = 18
    message = error_of(cfg)
    assert "sweep.n_states: grid sampling gives 18 states" in message
    assert "n_states is 4" in message
    cfg["sweep"]["n_states"] = 18
    assert validate_config(cfg)["sweep"]["n_states"] == 18


def test_preset_entry_problem_names_preset():
    cfg = raw(PAPER)
    cfg["sweep"]["sampling"] = "grid"
    message = error_of(cfg)
    assert "sweep.parameters.Ms_A_per_m.num" in message and "preset fe3gete2" in message


def test_non_mapping_dict_input():
    with pytest.raises(ConfigError, match="expected a mapping"):
        validate_config([1, 2], source="x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("seed: [1, 2\nsweep: {}\n", "invalid YAML"),
        ("seed: 1\n\tsweep: 2\n", "invalid YAML"),
        ("- 1\n- 2\n", "expected a mapping of config sections at the top level, got list"),
        ("just a string\n", "got string"),
        ("", "got an empty file"),
        ("seed: 1\nseed: 2\n", "duplicate key 'seed'"),
    ],
)
def test_bad_yaml_files(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


# --------------------------------------------------------------------------------------------
# CLI


def test_cli_config_check(tmp_path, capsys):
    assert cli.main(["config", "check", str(DEMO), str(TINY), str(PAPER)]) == 0
    assert "OK" in capsys.readouterr().out
    cfg = raw()
    cfg["sweep"]["parameters"]["grain_disorder_pct"]["value"] = 150
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    assert cli.main(["config", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "sweep.parameters.grain_disorder_pct.value" in err
    assert str(bad) in err


# --------------------------------------------------------------------------------------------
# Fuzzing: validate_config returns a dict or raises ConfigError, nothing else.

_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "grid", "uniform", "choice", "normal", "bubbles_hex", "1.5e5", "x"]),
    st.text(max_size=5),
)
_value = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(["low", "high", "value", "num", "a", "mean"]), inner),
    ),
    max_leaves=6,
)
_key = st.sampled_from(
    [
        "seed",
        "sweep",
        "n_states",
        "sampling",
        "grid",
        "nx",
        "parameters",
        "distribution",
        "low",
        "high",
        "mean",
        "std",
        "value",
        "values",
        "weights",
        "num",
        "relax",
        "preset",
        "field_history_fraction",
        "Ms_A_per_m",
        "initial_state",
        "zzz",
    ]
)


def _containers(obj, out):
    if isinstance(obj, dict):
        out.append(obj)
        for v in obj.values():
            _containers(v, out)
    elif isinstance(obj, list):
        out.append(obj)
        for v in obj:
            _containers(v, out)
    return out


_BASES = [raw(DEMO), raw(TINY), raw(PAPER)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.integers(0, len(_BASES) - 1),
    mutations=st.lists(
        st.tuples(st.integers(0, 10**6), st.sampled_from(["set", "del", "add"]), _key, _value),
        min_size=1,
        max_size=4,
    ),
)
def test_fuzz_validate_config(base, mutations):
    cfg = copy.deepcopy(_BASES[base])
    for index, op, key, value in mutations:
        nodes = _containers(cfg, [])
        node = nodes[index % len(nodes)]
        if isinstance(node, list):
            if not node:
                node.append(value)
            elif op == "del":
                node.pop(index % len(node))
            else:
                node[index % len(node)] = value
        elif op == "add" or not node:
            node[key] = value
        else:
            existing = list(node)[index % len(node)]
            if op == "del":
                del node[existing]
            else:
                node[existing] = value
    try:
        out = validate_config(cfg)
    except ConfigError as exc:
        assert str(exc).strip()
    else:
        assert isinstance(out, dict)
