"""Training stage: data streamed from the dataset store, augmentation, the network, the
Lightning module and experiment tracking (MLflow).

Modules: :mod:`.normalisation` (per-image normalisation shared with inference),
:mod:`.augment` (physics-respecting augmentation), :mod:`.data` (Lightning data module),
:mod:`.unet` (the network), :mod:`.module` (the Lightning module), :mod:`.tracking` (MLflow).
"""
