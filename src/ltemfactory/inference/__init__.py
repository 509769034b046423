"""Model-independent parts of inference on experimental LTEM images.

:mod:`~ltemfactory.inference.readers` (calibrated image input), :mod:`~.lattice` (lattice
period from the power spectrum, lattice statistics of detected centroids), :mod:`~.tiling`
(overlapping-tile prediction with smooth blending) and :mod:`~.outputs` (label TIFF, instance
CSV, overlay PNG, JSON; all written atomically). Arrays are (..., row, col).
"""
