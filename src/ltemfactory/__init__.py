"""ltemfactory: a workflow-orchestrated dataset factory for Lorentz-TEM images of skyrmions.

Array convention throughout the package: arrays are (..., row, col); the x axis runs along
columns, the y axis along rows (y grows with the row index), z points out of the film, so
(x, y, z) is right-handed. Plot with ``origin="lower"`` to see x right and y up.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ltemfactory")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
