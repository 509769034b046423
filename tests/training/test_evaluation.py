"""Which test images the evaluation grid shows."""

import numpy as np

from ltemfactory.training.evaluation import grid_indices


def _labels(has: list[bool]) -> list[np.ndarray]:
    return [np.full((4, 4), int(h), dtype=np.int32) for h in has]


def test_grid_skips_images_without_instances_and_spreads_over_the_split():
    # the split starts with a stripe state: four images with nothing to find
    truths = _labels([False] * 4 + [True] * 11)
    shown = grid_indices(truths, 3)
    assert shown == [4, 9, 14]  # first, middle and last image with instances


def test_grid_fills_up_with_empty_images_in_split_order():
    truths = _labels([False, True, False, False, True])
    assert grid_indices(truths, 3) == [0, 1, 4]
    assert grid_indices(truths, 10) == [0, 1, 2, 3, 4]
    assert grid_indices(truths, 0) == []
