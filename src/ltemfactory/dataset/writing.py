"""Array creation in the dataset store (every chunk written) and the shard geometry."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import zarr

from ltemfactory.dataset.layout import _is_str
from ltemfactory.stores import COMPRESSOR

log = logging.getLogger(__name__)


def _json_safe(value: Any) -> Any:
    """``value`` as plain JSON types (numpy scalars and paths become numbers and strings)."""

    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        return str(o)

    return json.loads(json.dumps(value, default=default))


def _create(
    group: zarr.Group,
    name: str,
    shape: tuple[int, ...],
    dtype: Any,
    dims: Sequence[str],
    *,
    chunks: tuple[int, ...] | None = None,
    shards: tuple[int, ...] | None = None,
    units: str | None = None,
    attrs: dict[str, Any] | None = None,
) -> zarr.Array:
    """Create an array that writes every chunk, also those equal to the fill value."""
    attributes = dict(attrs or {})
    if units is not None:
        attributes["units"] = units
    is_str = _is_str(dtype)
    if chunks is None:
        chunks = tuple(max(1, min(s, 1 << 20)) for s in shape)
    return group.create_array(
        name,
        shape=shape,
        dtype=str if is_str else dtype,
        chunks=chunks,
        shards=shards,
        compressors=None if is_str else COMPRESSOR,
        dimension_names=list(dims),
        attributes=_json_safe(attributes),
        config={"write_empty_chunks": True},
    )


def _write_1d(
    group: zarr.Group, name: str, data: np.ndarray, dim: str, units: str | None, attrs=None
):
    arr = _create(group, name, data.shape, data.dtype, (dim,), units=units, attrs=attrs)
    if data.size:
        arr[...] = data
    return arr


def _writable(arr: zarr.Array) -> zarr.Array:
    return arr.with_config({"write_empty_chunks": True})


def _shard_size(sizes: Sequence[int]) -> int:
    """Shard length along the sample axis for batches of ``sizes`` written one after another.

    The largest size when every batch but the last has it (each batch starts on a shard
    boundary); otherwise the gcd of the sizes, which also gives one writer per shard.
    """
    sizes = [int(s) for s in sizes]
    largest = max(sizes)
    if all(s == largest for s in sizes[:-1]):
        return largest
    g = math.gcd(*sizes)
    log.warning(
        "batch sizes %s are not all equal but the last: shards of %d along the sample axis "
        "(gcd) instead of %d",
        sizes,
        g,
        largest,
    )
    return g


def _block_chunks(n: int, shard: int) -> tuple[int, ...]:
    """Dask chunks along the sample axis of one batch of ``n`` (starting on a shard boundary)."""
    out = [shard] * (n // shard)
    if n % shard:
        out.append(n % shard)
    return tuple(out)
