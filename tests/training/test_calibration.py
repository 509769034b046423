"""Decoder thresholds tuned on validation maps (ltemfactory.training.calibration)."""

import numpy as np
import pytest

from ltemfactory.errors import InputError
from ltemfactory.instances import encode_targets
from ltemfactory.training.calibration import tune_decoder
from ltemfactory.training.predictor import DECODE_DEFAULTS

from .synthetic import touching_disks


def _underconfident_maps(labels: np.ndarray, scale: float) -> dict[str, np.ndarray]:
    """Maps of a network that ranks pixels right but whose foreground is too timid: exact
    targets, foreground probability x ``scale``."""
    t = encode_targets(labels)
    return {
        "foreground": scale * t["foreground"],
        "distance": t["distance"],
        "boundary": t["boundary"],
    }


def test_timid_network_is_rescued_by_lower_thresholds():
    rng = np.random.default_rng(3)
    labels = [touching_disks(48, 6.0, rng) for _ in range(3)]
    maps = [_underconfident_maps(lab, 0.45) for lab in labels]  # all below the 0.5 default
    params, f1, base_f1 = tune_decoder(maps, labels, [3.0] * 3, "instance")
    assert base_f1 == 0.0  # the default foreground threshold 0.5 keeps nothing
    assert params["fg_threshold"] < 0.45
    # below 0.45 the foreground mask is the exact one: as good as exact maps with the defaults
    exact = [_underconfident_maps(lab, 1.0) for lab in labels]
    _, _, exact_f1 = tune_decoder(exact, labels, [3.0] * 3, "instance", grid={})
    assert f1 >= exact_f1 > 0.9
    # untouched parameters keep their defaults
    assert params["min_area_px"] == DECODE_DEFAULTS["min_area_px"]


def test_result_is_never_worse_than_the_defaults():
    rng = np.random.default_rng(4)
    labels = [touching_disks(48, 6.0, rng) for _ in range(2)]
    maps = [_underconfident_maps(lab, 1.0) for lab in labels]  # exact maps: defaults are fine
    params, f1, base_f1 = tune_decoder(maps, labels, [3.0, 3.0], "instance")
    assert f1 >= base_f1 > 0.95


def test_binary_formulation_searches_the_foreground_threshold_only():
    rng = np.random.default_rng(5)
    labels = [touching_disks(48, 4.0, rng)]
    maps = [{"foreground": 0.45 * encode_targets(labels[0])["foreground"]}]
    params, f1, base_f1 = tune_decoder(maps, labels, [3.0], "binary")
    assert base_f1 == 0.0 and f1 > 0  # touching disks merge, but some survive alone
    assert params["seed_threshold"] == DECODE_DEFAULTS["seed_threshold"]


def test_mismatched_inputs_are_refused():
    with pytest.raises(InputError, match="map sets"):
        tune_decoder([], [], [], "instance")
