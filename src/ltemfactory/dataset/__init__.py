"""The dataset stage: assemble per-batch relax and render stores into one training store.

:func:`assemble` reads the batch stores lazily with Dask and writes ONE Zarr v3 store
(atomically, see :mod:`~ltemfactory.dataset.assembly`); :func:`check` verifies it,
:func:`fingerprint` hashes its content and :func:`card` writes a Markdown dataset card with
figures. Modules: ``layout`` (names, dims, dtypes, units), ``inputs`` (reading the batch
stores), ``split`` (train/val/test by state), ``labelling``, ``writing`` (array creation,
shards), ``assembly``, ``fingerprinting``, ``checking`` and ``datacard``.

Store layout (N images, S states, H x W pixels, M instances; every array carries
``dimension_names``, so ``xarray.open_zarr(path)`` opens it)::

    dataset.zarr/
      images          (image, row, col)            float32  1    detected image
      labels          (image, row, col)            int32         instance ids, 0 background, 1..K
      phase           (image, row, col)            float32  rad  magnetic phase (ground truth)
      clean_images    (image, row, col)            float32  1    noise-free (if every batch has it)
      magnetization   (state, component, row, col) float32  1    layer mean of m (not renormalised)
      image_state     (image,)  int64   index into the state axis (state_id[image_state])
      image_batch     (image,)  int64   input batch (position in the ``batches`` list)
      split           (image,)  uint8   0 train, 1 val, 2 test (by state)
      state_split     (state,)  uint8   the same codes per state
      state_batch     (state,)  int64   input batch of each state
      <relax 1-D>     (state,)  every 1-D array of the relax stores (state_id, Ms_A_per_m, ...,
                                energy_*, converged, ...), units and attributes copied
      <render 1-D>    (image,)  every 1-D array of the render stores (defocus_mm, tilt_deg, ...,
                                pixel_size_nm, variant), units copied. The render stores'
                                ``state_id``/``state_index`` are replaced by ``image_state``; any
                                other name that collides with a relax array gets ``image_``.
      instances/      one (instance,) array per column of the label table (units in attrs),
                      rows sorted by (image, instance_id); ``instances/image`` is the global
                      image index (it replaces the table's batch-local ``image_index``) and
                      ``instances/state`` the global state index (replaces ``state_index``).
"""

from ltemfactory.dataset.assembly import assemble
from ltemfactory.dataset.checking import check, check_or_raise
from ltemfactory.dataset.datacard import card
from ltemfactory.dataset.fingerprinting import fingerprint
from ltemfactory.dataset.labelling import LabelFn
from ltemfactory.dataset.layout import (
    EXPECTED_DTYPES,
    IMAGE_DIMS,
    IMAGE_FIELDS,
    INSTANCE_UNITS,
    REQUIRED_ARRAYS,
    STATE_DIMS,
)
from ltemfactory.dataset.split import (
    DEFAULT_SPLIT_FRACTIONS,
    SPLIT_CODES,
    split_fractions,
    split_seed,
    split_states,
)

__all__ = [
    "DEFAULT_SPLIT_FRACTIONS",
    "EXPECTED_DTYPES",
    "IMAGE_DIMS",
    "IMAGE_FIELDS",
    "INSTANCE_UNITS",
    "REQUIRED_ARRAYS",
    "SPLIT_CODES",
    "STATE_DIMS",
    "LabelFn",
    "assemble",
    "card",
    "check",
    "check_or_raise",
    "fingerprint",
    "split_fractions",
    "split_seed",
    "split_states",
]
