"""Config sections of the later stages (render, dataset): defaults and mistakes."""

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate as snakemake_validate

from ltemfactory.config import load_config, load_schema, validate_config
from ltemfactory.errors import ConfigError
from ltemfactory.render import RENDER_UNITS

TINY = Path(__file__).parent / "configs" / "tiny.yaml"


def raw() -> dict:
    return yaml.safe_load(TINY.read_text())


def test_stage_defaults_are_filled_identically_by_both_validators(tmp_path):
    bare = {k: v for k, v in raw().items() if k not in ("render", "dataset", "train")}
    bare["train"] = {"augment": {"crop_px": 16}}  # the default 64 px crop exceeds 32 px images
    path = tmp_path / "bare.yaml"
    path.write_text(yaml.safe_dump(bare))
    ours = load_config(path)
    assert set(ours["render"]["parameters"]) == set(RENDER_UNITS)
    assert ours["render"]["variants_per_state"] == 4 and ours["render"]["random_signs"]
    assert ours["dataset"]["split_fractions"] == [0.8, 0.1, 0.1]
    assert ours["train"]["formulation"] == "instance"
    assert ours["train"]["tracking"]["tracking_uri"] == "sqlite:///results/mlflow.db"
    schema = tmp_path / "schema.yaml"
    schema.write_text(yaml.safe_dump(load_schema()))
    theirs = copy.deepcopy(bare)
    snakemake_validate(theirs, str(schema))
    for section in ("render", "dataset", "train"):
        assert theirs[section] == ours[section], section


@pytest.mark.parametrize(
    "edit,path",
    [
        (
            lambda c: c.update(
                render={
                    "parameters": {"tilt_deg": {"distribution": "uniform", "low": 30, "high": 10}}
                }
            ),
            "render.parameters.tilt_deg",
        ),  # noqa: E501
        (
            lambda c: c.update(
                render={"parameters": {"focus_mm": {"distribution": "constant", "value": 1}}}
            ),
            "render.parameters",
        ),  # noqa: E501
        (
            lambda c: c.update(
                render={"parameters": {"dose_e_per_px": {"distribution": "constant", "value": -5}}}
            ),
            "render.parameters.dose_e_per_px",
        ),  # noqa: E501
        (lambda c: c.update(render={"variants_per_state": 0}), "render.variants_per_state"),
        (
            lambda c: c.update(dataset={"split_fractions": [0.5, 0.1, 0.1]}),
            "dataset.split_fractions",
        ),  # noqa: E501
        (lambda c: c.update(dataset={"split_fractions": [0.5, 0.5]}), "dataset.split_fractions"),
    ],
)
def test_stage_mistakes_name_the_key_path(edit, path):
    cfg = raw()
    edit(cfg)
    with pytest.raises(ConfigError) as info:
        validate_config(copy.deepcopy(cfg), source="cfg.yaml")
    assert path in str(info.value)
