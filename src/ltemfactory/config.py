"""Load, validate and resolve ltemfactory config files.

A config is checked in three steps; every problem found is reported, one per line, as
``<source>: <dotted.key.path>: <what was expected>``:

1. the JSON Schema ``ltemfactory/schemas/config.schema.yaml`` (draft 2020-12; the same file
   Snakemake's ``validate()`` reads through ``workflow/schemas/``), which also fills in the
   schema's ``default:`` values exactly as Snakemake does;
2. the sweep preset (``sweep.preset``) is merged: its distributions are the defaults and each
   entry of ``sweep.parameters`` replaces the preset's entry for that key;
3. consistency checks a schema cannot express (``low < high``, weights, grid size, finite
   numbers, ``field_history`` needs ``relax.field_history_fraction``, ...).

The functions here never print or exit; they raise :class:`~ltemfactory.errors.ConfigError`
and log warnings through :mod:`logging`.

YAML note: PyYAML (and so Snakemake) follows YAML 1.1, which reads ``1.5e5`` as a *string*;
write ``1.5e+5`` or ``150000.0``. The error message says so when it meets such a string.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import re
import reprlib
from collections.abc import Iterator, Mapping
from importlib.resources import files
from os import PathLike
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError, best_match

from ltemfactory.errors import ConfigError
from ltemfactory.sweep import (
    PARAMETER_KEYS,
    PRESET_DISTRIBUTIONS,
    choice_probabilities,
    grid_points,
    is_constant,
    normal_mass,
)

log = logging.getLogger(__name__)

SCHEMA_RESOURCE = "schemas/config.schema.yaml"
"""Location of the schema inside the ``ltemfactory`` package."""

MIN_NORMAL_MASS = 1e-6
"""Smallest probability a normal's clip interval [low, high] may hold."""

KeyPath = tuple[Any, ...]
_Problem = tuple[KeyPath, str]

_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60
_repr.maxlist = 8
_repr.maxdict = 6

_YAML11_STRING_NUMBER = re.compile(r"^[-+]?(\d[\d_]*\.?\d*|\.\d+)([eE][-+]?\d+)$")


# --------------------------------------------------------------------------------------------
# Schema and YAML


@functools.cache
def load_schema() -> dict[str, Any]:
    """The config JSON Schema as a dict (cached; do not mutate)."""
    text = files("ltemfactory").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _extend_with_default(validator_class: type) -> type:
    """A validator class that fills in ``default:`` values as Snakemake's ``validate()`` does.

    Same rule as Snakemake (jsonschema FAQ recipe): whenever a ``properties`` keyword is
    evaluated on a mapping, each missing property with a ``default`` is set. Defaults are
    deep-copied so the cached schema is never shared with (or mutated through) a config.
    """
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, subschema in properties.items():
                if isinstance(subschema, dict) and "default" in subschema:
                    instance.setdefault(prop, copy.deepcopy(subschema["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


_DefaultingValidator = _extend_with_default(Draft202012Validator)


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML SafeLoader (YAML 1.1, like Snakemake's) that rejects duplicate mapping keys."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: set[tuple[str, str]] = set()
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                ident = (key_node.tag, key_node.value)
                if ident in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {key_node.value!r}",
                        key_node.start_mark,
                    )
                seen.add(ident)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else f"{path}"
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        detail = f"{problem} ({context})" if context else problem
        raise ConfigError(f"{where}: invalid YAML: {detail}") from None


# --------------------------------------------------------------------------------------------
# Error messages


def dotted(path: KeyPath) -> str:
    """``("sweep", "parameters", "Ms_A_per_m", "low")`` → ``sweep.parameters.Ms_A_per_m.low``;
    list indices are written ``[i]``."""
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


_TYPE_WORDS = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "object": "a mapping",
    "array": "a list",
    "boolean": "true or false",
    "null": "null",
}


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, Mapping):
        return "mapping"
    return type(value).__name__


def _what(schema: Any) -> str:
    kind = schema.get("type") if isinstance(schema, dict) else None
    return "an integer" if kind == "integer" else "a number"


def _describe(error: ValidationError) -> Iterator[_Problem]:
    """Turn one jsonschema error into (path, message) problems."""
    path = tuple(error.absolute_path)
    kw, value, inst = error.validator, error.validator_value, error.instance
    got = _repr.repr(inst)
    if error.context:
        yield from _describe(best_match(error.context))
        return
    if kw == "type":
        kinds = [value] if isinstance(value, str) else list(value)
        want = " or ".join(_TYPE_WORDS.get(k, k) for k in kinds)
        msg = f"expected {want}, got {_type_name(inst)} {got}"
        if (
            isinstance(inst, str)
            and {"number", "integer"} & set(kinds)
            and _YAML11_STRING_NUMBER.match(inst.strip())
        ):
            msg += (
                " (YAML 1.1, as read by PyYAML and Snakemake, needs a '.' and a signed "
                "exponent: write e.g. 1.5e+5 or 150000.0)"
            )
        yield path, msg
    elif kw in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        op = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
        yield path, f"expected {_what(error.schema)} {op[kw]} {value!r}, got {got}"
    elif kw == "enum":
        yield path, f"expected one of {', '.join(map(str, value))}; got {got}"
    elif kw == "const":
        yield path, f"expected {value!r}, got {got}"
    elif kw == "required":
        hint = error.schema.get("x-hint") if isinstance(error.schema, dict) else None
        for key in value:
            if isinstance(inst, dict) and key not in inst:
                yield path + (key,), "missing required key" + (f": {hint}" if hint else "")
    elif kw == "additionalProperties" and value is False:
        props = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        allowed = ", ".join(str(p) for p in props) or "none"
        for key in inst:
            if key not in props:
                yield path + (key,), f"unknown key (allowed: {allowed})"
    elif kw == "minItems":
        yield path, f"expected at least {value} item(s), got {len(inst)}"
    elif kw == "maxItems":
        yield path, f"expected at most {value} item(s), got {len(inst)}"
    elif kw == "uniqueItems":
        yield path, f"expected unique items, got {got}"
    else:
        yield path, error.message


def _schema_problems(cfg: dict[str, Any]) -> list[_Problem]:
    validator = _DefaultingValidator(load_schema())
    problems: list[_Problem] = []
    for error in validator.iter_errors(cfg):
        problems.extend(_describe(error))
    return problems


def _raise(source: str, problems: list[_Problem]) -> None:
    if not problems:
        return
    lines = sorted({f"{source}: {dotted(p)}: {m}" for p, m in problems})
    raise ConfigError("\n".join(lines))


# --------------------------------------------------------------------------------------------
# Resolution and consistency


def _plain(obj: Any) -> Any:
    """Deep copy into plain dicts/lists (the input is never mutated)."""
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return copy.deepcopy(obj)


def _int_if_integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _coerce_integers(cfg: dict[str, Any]) -> None:
    """JSON Schema accepts 8.0 as an integer; make the integer fields real ``int``s."""
    cfg["seed"] = _int_if_integral(cfg["seed"])
    sweep = cfg["sweep"]
    for key in ("n_states", "batch_size"):
        sweep[key] = _int_if_integral(sweep[key])
    for key in ("nx", "ny", "nz"):
        if key in sweep["grid"]:
            sweep["grid"][key] = _int_if_integral(sweep["grid"][key])
    if "max_iterations" in cfg.get("relax", {}):
        cfg["relax"]["max_iterations"] = _int_if_integral(cfg["relax"]["max_iterations"])
    for spec in sweep.get("parameters", {}).values():
        if "num" in spec:
            spec["num"] = _int_if_integral(spec["num"])
        if spec["distribution"] == "integer":
            spec["low"], spec["high"] = (
                _int_if_integral(spec["low"]),
                _int_if_integral(spec["high"]),
            )


def _merge_preset(sweep: dict[str, Any]) -> dict[str, str]:
    """Merge the preset into ``sweep["parameters"]`` (canonical key order).

    Returns, for each parameter, where its spec came from (``"config"`` or ``"preset <name>"``).
    """
    given = sweep.get("parameters", {})
    preset = sweep.get("preset")
    defaults = PRESET_DISTRIBUTIONS[preset] if preset else {}
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for key in PARAMETER_KEYS:
        if key in given:
            merged[key], origin[key] = given[key], "config"
        elif key in defaults:
            merged[key], origin[key] = copy.deepcopy(defaults[key]), f"preset {preset}"
    sweep["parameters"] = merged
    return origin


def _nonfinite(obj: Any, path: KeyPath) -> Iterator[_Problem]:
    if isinstance(obj, float) and not math.isfinite(obj):
        yield path, f"expected a finite number, got {obj!r}"
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _nonfinite(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _nonfinite(v, path + (i,))


def support(spec: Mapping[str, Any]) -> tuple[float, float]:
    """Smallest and largest value a numeric distribution spec can give."""
    kind = spec["distribution"]
    if kind == "constant":
        return float(spec["value"]), float(spec["value"])
    if kind == "choice":
        return float(min(spec["values"])), float(max(spec["values"]))
    if kind == "normal":
        return float(spec.get("low", -math.inf)), float(spec.get("high", math.inf))
    return float(spec["low"]), float(spec["high"])


def _spec_problems(
    key: str,
    spec: dict[str, Any],
    sampling: str,
    origin: str,
    section: KeyPath = ("sweep", "parameters"),
) -> list[_Problem]:
    path: KeyPath = (*section, key)
    note = f" (entry from {origin})" if origin != "config" else ""
    kind = spec["distribution"]
    out: list[_Problem] = []
    if kind in ("uniform", "loguniform", "integer") and not spec["low"] < spec["high"]:
        out.append(
            (
                path,
                f"expected low < high, got low={spec['low']!r}, high={spec['high']!r} "
                f"(use distribution: constant for a fixed value){note}",
            )
        )
    if kind == "normal":
        if "low" in spec and "high" in spec and not spec["low"] < spec["high"]:
            out.append(
                (
                    path,
                    f"expected clip bounds low < high, got low={spec['low']!r}, "
                    f"high={spec['high']!r}{note}",
                )
            )
        else:
            mass = normal_mass(spec)
            if not mass >= MIN_NORMAL_MASS:
                out.append(
                    (
                        path,
                        f"the clip interval [low, high] holds only {mass:.3g} of the "
                        f"normal(mean={spec['mean']!r}, std={spec['std']!r}) probability; "
                        f"move it toward the mean or widen it{note}",
                    )
                )
    if kind == "choice" and "weights" in spec:
        weights, values = spec["weights"], spec["values"]
        if len(weights) != len(values):
            out.append(
                (
                    path + ("weights",),
                    f"expected {len(values)} weights (one per value), got {len(weights)}{note}",
                )
            )
        elif not sum(weights) > 0:
            out.append((path + ("weights",), f"expected a positive sum, got {weights!r}{note}"))
    if sampling == "grid" and kind not in ("constant", "choice") and "num" not in spec:
        out.append(
            (
                path + ("num",),
                f"missing required key: grid sampling needs the number of grid points of "
                f"every non-constant {kind} entry{note}",
            )
        )
    return out


def _can_draw(spec: Mapping[str, Any], value: Any) -> bool:
    if spec["distribution"] == "constant":
        return spec["value"] == value
    if value not in spec["values"]:
        return False
    if "weights" not in spec:
        return True
    return bool(choice_probabilities(spec)[spec["values"].index(value)] > 0)


def _consistency_problems(cfg: dict[str, Any], origin: dict[str, str]) -> list[_Problem]:
    problems = list(_nonfinite(cfg, ()))
    if problems:
        return problems  # the arithmetic below assumes finite numbers
    sweep, relax = cfg["sweep"], cfg["relax"]
    params = sweep["parameters"]
    for key in PARAMETER_KEYS:
        if key not in params:
            problems.append(
                (
                    ("sweep", "parameters", key),
                    "missing required key (give it under sweep.parameters or choose a "
                    "sweep.preset)",
                )
            )
    if problems:
        return problems
    for key in PARAMETER_KEYS:
        problems.extend(_spec_problems(key, params[key], sweep["sampling"], origin[key]))
    fractions = cfg["dataset"]["split_fractions"]
    if not math.isclose(sum(fractions), 1.0, abs_tol=1e-9) or fractions[0] <= 0:
        problems.append(
            (
                ("dataset", "split_fractions"),
                f"expected [train, val, test] fractions summing to 1 with train > 0, "
                f"got {fractions!r}",
            )
        )
    for key, spec in cfg["render"]["parameters"].items():
        problems.extend(_spec_problems(key, spec, "random", "config", ("render", "parameters")))
    if problems:
        return problems

    if sweep["sampling"] == "grid":
        counts = {
            k: len(grid_points(params[k])) for k in PARAMETER_KEYS if not is_constant(params[k])
        }
        product = math.prod(counts.values())
        if product != sweep["n_states"]:
            detail = " x ".join(f"{k} {c}" for k, c in counts.items()) or "all constant: 1"
            problems.append(
                (
                    ("sweep", "n_states"),
                    f"grid sampling gives {product} states (product of grid point counts: "
                    f"{detail}), but n_states is {sweep['n_states']}",
                )
            )

    if _can_draw(params["initial_state"], "field_history") and not relax["field_history_fraction"]:
        problems.append(
            (
                ("relax", "field_history_fraction"),
                "expected a non-empty list: sweep.parameters.initial_state can draw field_history",
            )
        )
    problems.extend(_train_problems(cfg))
    return problems


def _train_problems(cfg: dict[str, Any]) -> list[_Problem]:
    """The augmentation knobs are checked by the class that uses them (one set of rules), and
    the crop must fit the rendered images (grid size in cells = image size in px)."""
    from ltemfactory.errors import InputError
    from ltemfactory.training.augment import AugmentConfig, check_fits

    path = ("train", "augment")
    try:
        augment = AugmentConfig.from_dict(cfg["train"]["augment"])
        check_fits((cfg["sweep"]["grid"]["ny"], cfg["sweep"]["grid"]["nx"]), augment)
    except InputError as exc:
        return [(path, str(exc).removeprefix("train.augment."))]
    if cfg["dataset"]["split_fractions"][1] <= 0:
        return [(("dataset", "split_fractions"), "training needs a val split (fraction > 0)")]
    return []


def _warnings(cfg: dict[str, Any], source: str) -> None:
    params = cfg["sweep"]["parameters"]
    r_max = support(params["bubble_radius_nm"])[1]
    a_min = support(params["lattice_constant_nm"])[0]
    if 2 * r_max > a_min:
        log.warning(
            "%s: sweep.parameters.bubble_radius_nm: the largest radius (%g nm) exceeds half the "
            "smallest lattice constant (%g nm); seeded bubbles can overlap",
            source,
            r_max,
            a_min,
        )
    sweep = cfg["sweep"]
    if sweep["batch_size"] > sweep["n_states"]:
        log.info(
            "%s: sweep.batch_size (%d) > sweep.n_states (%d): a single batch",
            source,
            sweep["batch_size"],
            sweep["n_states"],
        )


def validate_config(
    cfg: Mapping[str, Any], source: str = "<config>", *, warn: bool = True
) -> dict[str, Any]:
    """Validate a config mapping and return the resolved config (the input is not mutated).

    Applies the schema defaults, merges ``sweep.preset`` into ``sweep.parameters`` (all twelve
    keys, canonical order), makes integer fields ``int`` and runs the consistency checks.
    Idempotent: a resolved config resolves to itself. Raises :class:`ConfigError` listing
    every problem, one per line, each as ``<source>: <key.path>: <message>``. ``warn=False``
    silences the advisory warnings (for callers that already validated).
    """
    if not isinstance(cfg, Mapping):
        raise ConfigError(
            f"{source}: expected a mapping of config sections at the top level, "
            f"got {_type_name(cfg)} {_repr.repr(cfg)}"
        )
    resolved = _plain(cfg)
    _raise(source, _schema_problems(resolved))
    _coerce_integers(resolved)
    origin = _merge_preset(resolved["sweep"])
    _raise(source, _consistency_problems(resolved, origin))
    if warn:
        _warnings(resolved, source)
    return resolved


def load_config(path: str | PathLike[str]) -> dict[str, Any]:
    """Read a YAML config file and return the validated, resolved config (see
    :func:`validate_config`); problems raise :class:`ConfigError` naming the file."""
    path = Path(path)
    data = _read_yaml(path)
    if data is None:
        raise ConfigError(f"{path}: expected a mapping of config sections, got an empty file")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of config sections at the top level, "
            f"got {_type_name(data)} {_repr.repr(data)}"
        )
    return validate_config(data, source=str(path))


def n_batches(cfg: Mapping[str, Any]) -> int:
    """Number of relax batches: ``ceil(sweep.n_states / sweep.batch_size)``."""
    sweep = cfg["sweep"]
    return -(-int(sweep["n_states"]) // int(sweep["batch_size"]))
