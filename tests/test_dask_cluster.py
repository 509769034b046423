"""The Dask cluster of `assemble` (ltemfactory.dask_cluster) and one writer per shard.

Inputs: three batches of 2, 2 and 1 states of the tiny config (32 x 32 cells, 4 images per
state, relaxation cut at 200 iterations), so every image array has two whole shards of 8 images
and a partial last one of 4, and the magnetisation shards of 2 states hold 2 inner chunks each.
"""

import copy
import logging
import os
import random
import shutil
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
import test_dataset
import yaml
import zarr
from distributed import Client, LocalCluster, get_task_stream

from ltemfactory import cli, dataset
from ltemfactory.config import load_config
from ltemfactory.dask_cluster import check_address, dask_client, defaults
from ltemfactory.dataset.assembly import plan_shard_writes, verify_shard_writes
from ltemfactory.errors import InputError
from ltemfactory.relax import relax_batch, write_relax_store
from ltemfactory.render import render_store, write_render_store
from ltemfactory.stores import open_store
from ltemfactory.sweep import draw_sweep

TINY = Path(__file__).parent / "configs" / "tiny.yaml"
SIZES = [2, 2, 1]  # states per batch
BIG = ("images", "phase", "clean_images", "labels", "magnetization")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dask_inputs")
    cfg = load_config(TINY)
    more = copy.deepcopy(cfg)
    more["sweep"]["n_states"] = sum(SIZES)
    rows = draw_sweep(more)
    batches, start = [], 0
    for b, n in enumerate(SIZES):
        relax, render = f"relax_{b}.zarr", f"render_{b}.zarr"
        relax_cfg = {**cfg["relax"], "max_iterations": 200}  # converged or not: no matter
        result = relax_batch(rows[start : start + n], cfg["sweep"]["grid"], relax_cfg)
        write_relax_store(root / relax, result, cfg, b)
        write_render_store(
            root / render, render_store(root / relax, cfg["render"]), cfg, str(root / relax)
        )
        batches.append((relax, render))  # relative to root
        start += n
    return cfg, root, batches


def absolute(root, batches):
    return [(str(root / a), str(root / b)) for a, b in batches]


@pytest.fixture(scope="module")
def threaded(inputs, tmp_path_factory):
    """The reference: the same inputs assembled on the threaded scheduler."""
    cfg, root, batches = inputs
    out = tmp_path_factory.mktemp("threaded") / "dataset.zarr"
    dataset.assemble(absolute(root, batches), out, cfg, scheduler="threads")
    return out, dataset.fingerprint(out)


def write_config(tmp_path, **dask_section):
    raw = yaml.safe_load(TINY.read_text())
    if dask_section:
        raw["dask"] = dask_section
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _count(task_stream, name):
    """Tasks of a task stream whose key contains ``name`` (Dask may fuse key prefixes)."""
    return sum(name in str(t["key"]) for t in task_stream.data)


def cli_assemble(config, root, batches, out):
    relax = [str(root / a) for a, _ in batches]
    render = [str(root / b) for _, b in batches]
    argv = ["assemble", "--config", str(config), "--relax", *relax, "--render", *render]
    return cli.main([*argv, "--out", str(out)])


# ------------------------------------------------------------------------------ write plan


def _shards_of(region, shard):
    a, z = region
    return set(range(a // shard, -(-z // shard)))


@pytest.mark.parametrize(
    "sizes,shard,regions",
    [
        ([8, 8, 4], 8, [[(0, 8)], [(8, 16)], [(16, 20)]]),
        ([4, 8, 8], 4, [[(0, 4)], [(4, 8), (8, 12)], [(12, 16), (16, 20)]]),
        ([6, 8, 8], 2, [[(0, 2), (2, 4), (4, 6)], [(6, 8), (8, 10), (10, 12), (12, 14)],
                        [(14, 16), (16, 18), (18, 20), (20, 22)]]),
        ([3], 3, [[(0, 3)]]),
    ],
)  # fmt: skip
def test_plan_examples(sizes, shard, regions):
    assert plan_shard_writes(sizes) == (shard, regions)


def test_plan_one_writer_per_shard_for_many_layouts():
    rng = random.Random(3)
    layouts = [[rng.randint(1, 12)] * rng.randint(1, 6) + [rng.randint(1, 12)] for _ in range(150)]
    layouts += [[rng.randint(1, 12) for _ in range(rng.randint(1, 7))] for _ in range(150)]
    for sizes in layouts:
        shard, regions = plan_shard_writes(sizes)
        total = sum(sizes)
        owner = {}  # shard index -> (batch, region) that writes it
        offset = 0
        for b, (n, batch) in enumerate(zip(sizes, regions, strict=True)):
            assert offset % shard == 0, (sizes, b)  # every batch starts on a shard boundary
            assert sum(z - a for a, z in batch) == n
            for a, z in batch:
                assert offset <= a < z <= offset + n, (sizes, b)
                assert a % shard == 0 and (z - a == shard or z == total), (sizes, a, z)
                for s in _shards_of((a, z), shard):
                    assert s not in owner, f"{sizes}: shard {s} written by {owner[s]} and {b}"
                    owner[s] = (b, (a, z))
            offset += n
        assert sorted(owner) == list(range(-(-total // shard))), sizes  # covers the array


@pytest.mark.parametrize(
    "sizes,shard,regions,message",
    [
        ([4, 4], 4, [[(0, 4)], [(3, 8)]], "outside"),  # batch 1 reaches into batch 0
        ([4, 4], 2, [[(0, 3), (3, 4)], [(4, 6), (6, 8)]], "not one whole shard"),
        ([4, 4], 2, [[(0, 2), (1, 3)], [(4, 6), (6, 8)]], "overlaps"),  # within a batch
        ([4, 4], 4, [[(0, 4)], [(4, 6)]], "cover 2"),  # part of batch 1 never written
        ([3, 4], 4, [[(0, 3)], [(3, 7)]], "not one whole shard"),  # batches share shard 0
        ([8], 4, [[(0, 8)]], "not one whole shard"),  # one task writing two shards
        ([4], 4, [[(0, 4)], []], "region lists"),
        ([4], 0, [[(0, 4)]], "shard length"),
    ],
)
def test_verify_flags_bad_plans(sizes, shard, regions, message):
    with pytest.raises(ValueError, match=message):
        verify_shard_writes(sizes, shard, regions)


class _Recorder:
    """A zarr array that records the axis-0 range of every write (threads only)."""

    def __init__(self, arr, writes):
        self._arr, self._writes = arr, writes

    def __getattr__(self, name):
        return getattr(self._arr, name)

    def __setitem__(self, key, value):
        first = key[0] if isinstance(key, tuple) else key
        start, stop, step = first.indices(self._arr.shape[0])
        assert step == 1
        self._writes.append((self._arr.path, start, stop))
        self._arr[key] = value


def test_assembly_writes_each_shard_once_with_8_threads(inputs, threaded, tmp_path, monkeypatch):
    """The writes Dask actually makes (8 threads) are the plan: one writer per shard."""
    import dask

    from ltemfactory.dataset import assembly

    cfg, root, batches = inputs
    writes = []
    real = assembly._writable
    monkeypatch.setattr(assembly, "_writable", lambda arr: _Recorder(real(arr), writes))
    out = tmp_path / "rec.zarr"
    with dask.config.set(num_workers=8):
        dataset.assemble(absolute(root, batches), out, cfg, scheduler="threads")
    k = cfg["render"]["variants_per_state"]
    shard = {"magnetization": SIZES[0]}
    total = {"magnetization": sum(SIZES)}
    for name in BIG[:4]:
        shard[name], total[name] = SIZES[0] * k, sum(SIZES) * k
    assert {w[0] for w in writes} == set(BIG)
    for name in BIG:
        ranges = sorted((a, z) for n, a, z in writes if n == name)
        seen = set()
        for a, z in ranges:  # whole shards (or the partial last one), none written twice
            assert a % shard[name] == 0, (name, a, z)
            assert (z - a) % shard[name] == 0 or z == total[name], (name, a, z)
            mine = _shards_of((a, z), shard[name])
            assert not mine & seen, f"{name}: shards {mine & seen} written twice"
            seen |= mine
        assert seen == set(range(-(-total[name] // shard[name]))), name
        if name == "labels":  # one labelling task per batch, over its own images
            offsets = np.cumsum([0, *SIZES]) * k
            assert ranges == list(zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True))
        else:  # one store task per shard
            assert all(z - a == shard[name] or z == total[name] for a, z in ranges), name
    assert dataset.check(out) == []
    assert dataset.fingerprint(out) == threaded[1]


def test_check_flags_lost_update_of_two_unaligned_writers(threaded, tmp_path):
    """Negative control: two writers of overlapping, unaligned regions of one shard.

    Zarr rewrites a whole shard file on every partial write. Writers A (images 0-2) and
    B (images 2-3) both start from the shard as it was (absent); B finishes last and its file
    replaces A's, so images 0 and 1 are lost although both writes succeeded. The check reads
    every shard index and finds them missing.
    """
    out = tmp_path / "race.zarr"
    shutil.copytree(threaded[0], out)
    arr = zarr.open_group(str(out), mode="r+", use_consolidated=False)["images"]
    data = np.asarray(arr[0:4])
    shard_file = out / "images" / "c" / "0" / "0" / "0"
    shard_file.unlink()
    arr[0:3] = data[0:3]  # writer A
    assert shard_file.is_file()
    shard_file.unlink()  # B read the shard before A wrote it
    arr[2:4] = data[2:4]  # writer B, last
    problems = "\n".join(dataset.check(out))
    assert "images: chunk file c/0/0/0: inner chunk (0, 0, 0) missing" in problems
    assert "images: chunk file c/0/0/0: inner chunk (1, 0, 0) missing" in problems
    assert "(2, 0, 0)" not in problems and "(3, 0, 0)" not in problems
    assert dataset.check(threaded[0]) == []


# ------------------------------------------------------------------------------ clusters


def _light_label_fn():
    """The stand-in labeller of the dataset tests (connected m_z < 0 regions of the untilted
    state), registered for pickling by value so that worker processes need neither import torch
    for the real labeller (seconds per process on 2 cores) nor find the test module."""
    cloudpickle.register_pickle_by_value(test_dataset)
    return test_dataset.simple_label_fn


def test_local_cluster_of_processes_same_fingerprint(inputs, tmp_path, monkeypatch):
    """2 worker processes x 2 threads, with their working directory elsewhere: the relative
    input and output paths still resolve (assembly passes absolute paths), the tasks run in the
    worker processes and the dataset is the one of the threaded scheduler."""
    cfg, root, batches = inputs
    label_fn = _light_label_fn()
    reference = tmp_path / "threads.zarr"
    dataset.assemble(absolute(root, batches), reference, cfg, label_fn=label_fn)
    monkeypatch.chdir(root)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    section = {"n_workers": 2, "threads_per_worker": 2, "processes": True}
    with dask_client(section) as client:
        pids = client.run(os.getpid)
        assert len(pids) == 2 and os.getpid() not in pids.values()
        client.run(os.chdir, str(elsewhere))
        with get_task_stream(client) as ts:
            dataset.assemble(batches, "out.zarr", cfg, label_fn=label_fn, scheduler=client)
        ran_on = {t["worker"] for t in ts.data}
    assert ran_on and ran_on <= set(pids)  # every task ran in a worker process
    assert _count(ts, "_label_batch") == len(SIZES)  # one labelling task per batch
    assert not list(elsewhere.iterdir())  # nothing was written relative to the workers' cwd
    out = root / "out.zarr"
    fp = dataset.fingerprint(reference)
    assert dataset.fingerprint(out) == fp == open_store(out).attrs["fingerprint"]
    assert dataset.check(out) == []
    assert open_store(out).attrs["inputs"][0]["relax"] == "relax_0.zarr"  # as given
    shutil.rmtree(out)


def test_many_threads_every_chunk_verified(inputs, threaded, tmp_path):
    """1 worker x 8 threads through the CLI's client: ``check`` reads every chunk."""
    cfg, root, batches = inputs
    out = tmp_path / "t8.zarr"
    with dask_client({"n_workers": 1, "threads_per_worker": 8}) as client:
        assert sum(client.nthreads().values()) == 8
        dataset.assemble(absolute(root, batches), out, cfg, scheduler=client)
    assert dataset.check(out) == []
    assert dataset.fingerprint(out) == threaded[1]


def test_cli_default_is_a_local_cluster(inputs, threaded, tmp_path, caplog):
    cfg, root, batches = inputs
    out = tmp_path / "cli.zarr"
    caplog.set_level(logging.INFO, logger="ltemfactory")
    assert cli_assemble(write_config(tmp_path), root, batches, out) == 0
    assert "dask: started a LocalCluster" in caplog.text
    assert "(1 workers x 2 threads, processes=False" in caplog.text
    assert "dask: closed the LocalCluster" in caplog.text
    assert "dask: using the scheduler" not in caplog.text
    assert dataset.fingerprint(out) == threaded[1]
    assert open_store(out).attrs["config"]["dask"] == defaults()


def test_cli_uses_the_scheduler_address_of_the_config(inputs, threaded, tmp_path, caplog):
    cfg, root, batches = inputs
    out = tmp_path / "remote.zarr"
    caplog.set_level(logging.INFO, logger="ltemfactory")
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=2,
            processes=False,
            protocol="tcp://",
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        address = cluster.scheduler_address
        assert address.startswith("tcp://127.0.0.1:")
        config = write_config(tmp_path, scheduler_address=address)
        with get_task_stream(client) as ts:
            assert cli_assemble(config, root, batches, out) == 0
        assert _count(ts, "_label_batch") == len(SIZES)  # one labelling task per batch
        assert _count(ts, "store-map") >= 3 * len(SIZES)  # images, phase, clean per batch
        assert {t["worker"] for t in ts.data} == set(client.nthreads())
        assert client.nthreads()  # the cluster is still up: the CLI only disconnected
    assert f"dask: using the scheduler at {address} (1 workers, 2 threads)" in caplog.text
    assert "LocalCluster" not in caplog.text
    assert dataset.fingerprint(out) == threaded[1]
    assert open_store(out).attrs["config"]["dask"]["scheduler_address"] == address


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:1", "not-an-address"])
def test_cli_bad_address_writes_nothing(inputs, tmp_path, capsys, address):
    cfg, root, batches = inputs
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    config = write_config(tmp_path, scheduler_address=address, connect_timeout_s=1)
    assert cli_assemble(config, root, batches, out_dir / "dataset.zarr") == 2
    err = capsys.readouterr().err
    assert "dask.scheduler_address" in err and address in err
    assert list(out_dir.iterdir()) == []  # no store, no temporary store


@pytest.mark.parametrize(
    "address,message",
    [
        ("tcp://127.0.0.1:1", "cannot connect to the dask scheduler at 'tcp://127.0.0.1:1'"),
        ("not-an-address", "expected a dask scheduler address protocol://host:port"),
        ("127.0.0.1:8786", "expected a dask scheduler address"),
        ("tcp://127.0.0.1", "expected a dask scheduler address"),
        ("tcp://127.0.0.1:70000", "port 70000"),
        (8786, "expected a dask scheduler address"),
    ],
)
def test_dask_client_bad_address_is_an_input_error(address, message):
    with pytest.raises(InputError, match="dask.scheduler_address") as exc:
        with dask_client({"scheduler_address": address, "connect_timeout_s": 0.5}):
            pass
    assert message in str(exc.value)


def test_scheduler_without_workers_is_an_input_error():
    with LocalCluster(
        n_workers=0, processes=False, protocol="tcp://", host="127.0.0.1", dashboard_address=None
    ) as cluster:
        section = {"scheduler_address": cluster.scheduler_address, "connect_timeout_s": 0.5}
        with pytest.raises(InputError, match="dask.scheduler_address: .* has no workers"):
            with dask_client(section):
                pass


def test_local_cluster_settings_and_close(caplog):
    caplog.set_level(logging.INFO, logger="ltemfactory")
    with dask_client({"n_workers": 2, "threads_per_worker": 1, "memory_limit": "1GB"}) as client:
        info = client.scheduler_info()["workers"]
        assert sorted(w["nthreads"] for w in info.values()) == [1, 1]
        assert {w["memory_limit"] for w in info.values()} == {10**9}
        assert ":8787" not in client.dashboard_link  # concurrent jobs never compete for it
    assert client.status == "closed"
    assert "started a LocalCluster" in caplog.text and "closed the LocalCluster" in caplog.text
    with pytest.raises(InputError, match="dask.memory_limit"):
        with dask_client({"memory_limit": "lots"}):
            pass
    with pytest.raises(InputError, match="unknown key"):
        with dask_client({"scheduler": "tcp://127.0.0.1:8786"}):
            pass


def test_address_pattern_of_the_schema():
    for ok in ["tcp://127.0.0.1:8786", "tls://node-1.cluster.local:8786", "tcp://[::1]:8786"]:
        assert check_address(ok) == ok
    assert defaults()["scheduler_address"] is None
