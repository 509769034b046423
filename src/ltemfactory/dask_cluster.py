"""The Dask cluster of the Dask steps (``assemble``): :func:`dask_client`.

One mechanism: the config's ``dask`` section names either a running ``dask.distributed``
scheduler (``dask.scheduler_address``), whose workers then do the work, or nothing, and a
``LocalCluster`` is started in this process (``n_workers`` x ``threads_per_worker``, threads
or ``processes``, ``memory_limit``) and closed on exit. Either way the caller gets a
:class:`distributed.Client` to pass as ``scheduler=`` to :func:`ltemfactory.dataset.assemble`;
the result does not depend on which (the dataset fingerprint is content only).

A scheduler given by address must be reachable within ``dask.connect_timeout_s`` and have at
least one worker by then; its workers must import ``ltemfactory`` and see the input and output
paths under the same names (assembly passes them absolute). A bad or unreachable address
raises :class:`~ltemfactory.errors.InputError` naming ``dask.scheduler_address`` before
anything is written. The measured start-up cost of the default LocalCluster (1 worker x 2
threads, no processes) is 0.2-0.8 s on 2 cores; see the ``dask`` schema section.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ltemfactory.errors import InputError

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)

SECTION = "dask"
"""Name of the config section read by :func:`dask_client`."""


@functools.cache
def _section_schema() -> dict[str, Any]:
    from ltemfactory.config import load_schema

    return load_schema()["properties"][SECTION]


def defaults() -> dict[str, Any]:
    """The ``dask`` section's defaults, from the config schema."""
    props = _section_schema()["properties"]
    return {k: v["default"] for k, v in props.items() if "default" in v}


def _address_pattern() -> re.Pattern[str]:
    return re.compile(_section_schema()["properties"]["scheduler_address"]["pattern"])


def check_address(address: Any) -> str:
    """``address`` if it is a scheduler address ``protocol://host:port`` (the schema's pattern,
    port 1-65535); else :class:`InputError` naming ``dask.scheduler_address``."""
    field = f"{SECTION}.scheduler_address"
    if not isinstance(address, str) or not _address_pattern().search(address):
        raise InputError(
            f"{field}: expected a dask scheduler address protocol://host:port (protocol tcp, "
            f"tls, ucx, ws or wss), e.g. 'tcp://127.0.0.1:8786', or null for a LocalCluster; "
            f"got {address!r}"
        )
    port = int(address.rsplit(":", 1)[1])
    if not 1 <= port <= 65535:
        raise InputError(f"{field}: port {port} of {address!r} is not in 1-65535")
    return address


def _settings(section: Mapping[str, Any] | None) -> dict[str, Any]:
    section = dict(section or {})
    unknown = sorted(set(section) - set(_section_schema()["properties"]))
    if unknown:
        raise InputError(f"{SECTION}: unknown key(s) {unknown}")
    return {**defaults(), **section}


def _memory_limit(value: Any) -> Any:
    from dask.utils import parse_bytes

    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InputError(f"{SECTION}.memory_limit: expected 'auto', bytes or a size, got {value!r}")
    if isinstance(value, str) and value != "auto":
        try:
            parse_bytes(value)
        except ValueError:
            raise InputError(
                f"{SECTION}.memory_limit: expected 'auto' or a size such as '4GB', got {value!r}"
            ) from None
    elif not isinstance(value, str) and value < 0:
        raise InputError(f"{SECTION}.memory_limit: expected >= 0, got {value!r}")
    return value


@contextlib.contextmanager
def _quiet_distributed() -> Iterator[None]:
    """distributed's INFO chatter (start/stop of every worker and comm) off, unless this
    module logs at DEBUG (``ltemfactory -v``)."""
    logger = logging.getLogger("distributed")
    old = logger.level
    if not log.isEnabledFor(logging.DEBUG):
        logger.setLevel(max(logging.WARNING, old))
    try:
        yield
    finally:
        logger.setLevel(old)


@contextlib.contextmanager
def dask_client(section: Mapping[str, Any] | None = None) -> Iterator[Client]:
    """Yield a ``distributed.Client`` for the config's ``dask`` ``section`` (defaults filled in).

    With ``scheduler_address``: a client of that scheduler (closed on exit; the cluster keeps
    running). Without: a client of a new ``LocalCluster``, closed with the cluster on exit (no
    dashboard; the scheduler's HTTP server on a free loopback port, so concurrent jobs never
    compete for :8787). Logs which. Raises :class:`InputError` (naming the key) for a malformed
    or unreachable address, a scheduler without workers, or a bad ``memory_limit``.
    """
    import distributed  # noqa: F401 - its first import sets the "distributed" log level

    s = _settings(section)
    with _quiet_distributed():
        yield from _client(s)


def _client(s: dict[str, Any]) -> Iterator[Client]:
    from distributed import Client, LocalCluster

    address = s["scheduler_address"]
    if address is not None:
        address = check_address(address)
        timeout = float(s["connect_timeout_s"])
        try:
            client = Client(address, timeout=timeout, set_as_default=False)
        except (OSError, ValueError) as exc:  # TimeoutError is an OSError
            raise InputError(
                f"{SECTION}.scheduler_address: cannot connect to the dask scheduler at "
                f"{address!r} within {timeout:g} s (dask.connect_timeout_s): "
                f"{type(exc).__name__}: {exc}"
            ) from None
        with client:
            try:
                client.wait_for_workers(1, timeout=timeout)
            except (OSError, ValueError) as exc:
                raise InputError(
                    f"{SECTION}.scheduler_address: the dask scheduler at {address!r} has no "
                    f"workers after {timeout:g} s (dask.connect_timeout_s): {exc}"
                ) from None
            nthreads = client.nthreads()  # every worker (scheduler_info lists only a few)
            log.info(
                "dask: using the scheduler at %s (%d workers, %d threads)",
                address,
                len(nthreads),
                sum(nthreads.values()),
            )
            yield client
        log.info("dask: disconnected from the scheduler at %s", address)
        return

    kwargs = {
        "n_workers": int(s["n_workers"]),
        "threads_per_worker": int(s["threads_per_worker"]),
        "processes": bool(s["processes"]),
        "memory_limit": _memory_limit(s["memory_limit"]),
    }
    with (
        LocalCluster(
            dashboard_address=None,  # no dashboard; its HTTP server would still take :8787
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},  # so: any free loopback port
            **kwargs,
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        log.info(
            "dask: started a LocalCluster at %s (%d workers x %d threads, processes=%s, "
            "memory_limit=%s)",
            cluster.scheduler_address,
            kwargs["n_workers"],
            kwargs["threads_per_worker"],
            kwargs["processes"],
            kwargs["memory_limit"],
        )
        yield client
    log.info("dask: closed the LocalCluster")
