"""The dataset stage: assembly, fingerprint, atomicity, check and card."""

import copy
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from scipy import ndimage

from ltemfactory import dataset, stores
from ltemfactory.config import load_config
from ltemfactory.errors import ConfigError, InputError
from ltemfactory.relax import relax_batch, write_relax_store
from ltemfactory.render import RENDER_UNITS, render_store, write_render_store
from ltemfactory.stores import open_store
from ltemfactory.sweep import draw_sweep

TINY = Path(__file__).parent / "configs" / "tiny.yaml"

try:
    from ltemfactory.labels import label_render_store as REAL_LABELS
except ImportError:  # labels.py not there yet: label reversed cores of the untilted state
    REAL_LABELS = None


def simple_label_fn(relax, render):
    """Stand-in labeller: connected m_z < 0 regions of the state (ignores tilt)."""
    r, q = open_store(relax), open_store(render)
    mz = np.asarray(r["m"][:, 2]).mean(axis=1)
    ids = list(np.asarray(r["state_id"][:]))
    px = np.asarray(q["pixel_size_nm"][:])
    labels, cols = [], {"image_index": [], "instance_id": [], "area_nm2": []}
    for i, sid in enumerate(np.asarray(q["state_id"][:])):
        lab, k = ndimage.label(mz[ids.index(sid)] < 0)
        labels.append(lab.astype(np.int32))
        counts = np.bincount(lab.ravel(), minlength=k + 1)
        for j in range(1, k + 1):
            cols["image_index"].append(i)
            cols["instance_id"].append(j)
            cols["area_nm2"].append(counts[j] * px[i] ** 2)
    return np.stack(labels), {k: np.asarray(v) for k, v in cols.items()}


LABEL_FN = REAL_LABELS or simple_label_fn


def _make_batch(root, cfg, rows, b):
    relax = root / f"relax_{b}.zarr"
    render = root / f"render_{b}.zarr"
    write_relax_store(relax, relax_batch(rows, cfg["sweep"]["grid"], cfg["relax"]), cfg, b)
    write_render_store(render, render_store(relax, cfg["render"]), cfg, str(relax))
    return str(relax), str(render)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Two batches of two states (tiny config), plus a third batch of one further state."""
    root = tmp_path_factory.mktemp("inputs")
    cfg = load_config(TINY)
    rows = draw_sweep(cfg)
    batches = [_make_batch(root, cfg, rows[2 * b : 2 * b + 2], b) for b in range(2)]
    cfg5 = copy.deepcopy(cfg)
    cfg5["sweep"]["n_states"] = 5
    extra = _make_batch(root, cfg, draw_sweep(cfg5)[4:5], 2)
    return cfg, batches, extra


@pytest.fixture(scope="module")
def assembled(inputs, tmp_path_factory):
    cfg, batches, _ = inputs
    out = tmp_path_factory.mktemp("dataset") / "dataset.zarr"
    dataset.assemble(batches, out, cfg, label_fn=LABEL_FN)
    return out


@pytest.fixture
def copy_of(assembled, tmp_path):
    """A fresh copy of the assembled store, to corrupt."""
    path = tmp_path / "copy.zarr"
    shutil.copytree(assembled, path)
    return path


def _reconsolidate(path):
    with stores.quiet_consolidated():
        zarr.consolidate_metadata(str(path))


def _rw(path):
    return zarr.open_group(str(path), mode="r+", use_consolidated=False)


# ------------------------------------------------------------------------------ assembled store


def test_store_contents_shapes_dtypes_dims_units(assembled, inputs):
    cfg, batches, _ = inputs
    k = cfg["render"]["variants_per_state"]
    n, s = 4 * k, 4
    g = open_store(assembled)
    for name, dtype in [("images", np.float32), ("labels", np.int32), ("phase", np.float32)]:
        assert g[name].shape == (n, 32, 32) and g[name].dtype == dtype, name
        assert g[name].metadata.dimension_names == ("image", "row", "col")
    assert g["clean_images"].shape == (n, 32, 32)
    assert g["magnetization"].shape == (s, 3, 32, 32) and g["magnetization"].dtype == np.float32
    assert g["magnetization"].metadata.dimension_names == ("state", "component", "row", "col")
    assert g["phase"].attrs["units"] == "rad"
    # per-image imaging parameters and per-state material parameters, with units
    for key, unit in RENDER_UNITS.items():
        assert g[key].shape == (n,) and g[key].attrs["units"] == unit, key
        assert g[key].metadata.dimension_names == ("image",)
    assert g["pixel_size_nm"].attrs["units"] == "nm"
    assert g["Ms_A_per_m"].shape == (s,) and g["Ms_A_per_m"].attrs["units"] == "A/m"
    assert g["field_mT"].metadata.dimension_names == ("state",)
    assert list(g["initial_state"][:])  # string array copied
    assert g["state_id"].dtype == np.int64 and sorted(g["state_id"][:]) == [0, 1, 2, 3]
    # every array names all of its dimensions, with the dataset's dimension vocabulary
    vocab = {"image", "row", "col", "state", "component", "instance"}
    for name in dataset.layout._array_paths(g):
        dims = g[name].metadata.dimension_names
        assert dims is not None and len(dims) == g[name].ndim and set(dims) <= vocab, name
    # content: the images and the layer-mean magnetisation are those of the batch stores
    image_state = g["image_state"][:]
    assert list(image_state) == sorted(image_state) and set(image_state) == {0, 1, 2, 3}
    src = open_store(batches[1][1])
    np.testing.assert_array_equal(g["images"][2 * k :], src["image"][:])
    np.testing.assert_array_equal(g["phase"][2 * k :], src["magnetic_phase"][:])
    m = open_store(batches[1][0])["m"][:]
    np.testing.assert_allclose(g["magnetization"][2:], m.mean(axis=2), atol=1e-6)
    np.testing.assert_array_equal(g["defocus_mm"][2 * k :], src["defocus_mm"][:])
    labels, table = LABEL_FN(*batches[1])
    np.testing.assert_array_equal(g["labels"][2 * k :], labels)


def test_instance_table(assembled, inputs):
    g = open_store(assembled)
    inst = g["instances"]
    n = int(inst["image"].shape[0])
    assert n == g.attrs["n_instances"] and n > 0
    cols = sorted(inst.array_keys())
    assert "image" in cols and "image_index" not in cols
    for c in cols:
        assert inst[c].shape == (n,) and inst[c].metadata.dimension_names == ("instance",), c
        assert "units" in inst[c].attrs, c
    assert inst["area_nm2"].attrs["units"] == "nm^2"
    assert inst["instance_id"].dtype == np.int32
    img = inst["image"][:]
    assert np.all(np.diff(img) >= 0)  # sorted by image
    labels = g["labels"][:]
    for i in range(labels.shape[0]):
        ids = set(np.unique(labels[i]).tolist()) - {0}
        assert set(inst["instance_id"][:][img == i].tolist()) == ids
    if REAL_LABELS is not None:
        assert inst["kind_code"].attrs["codes"]["skyrmion"] == 1
        assert inst["centroid_x_nm"].attrs["units"] == "nm"
        np.testing.assert_array_equal(inst["state"][:], g["image_state"][:][img])


def test_split_by_state(assembled, inputs):
    cfg = inputs[0]
    g = open_store(assembled)
    split, image_state = g["split"][:], g["image_state"][:]
    assert g["split"].dtype == np.uint8 and g["split"].attrs["codes"] == dataset.SPLIT_CODES
    for st in np.unique(image_state):
        assert len(set(split[image_state == st])) == 1
    np.testing.assert_array_equal(split, g["state_split"][:][image_state])
    assert set(split.tolist()) == {0, 1, 2}  # 4 states, 0.8/0.1/0.1: each split non-empty
    codes = dataset.split_states(g["state_id"][:], cfg["seed"], dataset.DEFAULT_SPLIT_FRACTIONS)
    np.testing.assert_array_equal(codes, g["state_split"][:])


def test_split_states_deterministic_fractions_and_order_free():
    ids = np.arange(100) * 3 + 7
    a = dataset.split_states(ids, 5, (0.7, 0.2, 0.1))
    assert np.array_equal(a, dataset.split_states(ids, 5, (0.7, 0.2, 0.1)))
    assert np.bincount(a, minlength=3).tolist() == [70, 20, 10]
    perm = np.random.default_rng(0).permutation(100)
    assert np.array_equal(dataset.split_states(ids[perm], 5, (0.7, 0.2, 0.1)), a[perm])
    assert not np.array_equal(a, dataset.split_states(ids, 6, (0.7, 0.2, 0.1)))
    assert sorted(dataset.split_states(np.arange(3), 1, (0.8, 0.1, 0.1))) == [0, 1, 2]
    assert dataset.split_fractions({"dataset": {"split_fractions": [2, 1, 1]}}) == (
        0.5,
        0.25,
        0.25,
    )
    assert dataset.split_fractions({}) == pytest.approx(dataset.DEFAULT_SPLIT_FRACTIONS)
    with pytest.raises(ConfigError, match="dataset.split_fractions"):
        dataset.split_fractions({"dataset": {"split_fractions": [1, -1, 1]}})


def test_shards_aligned_to_batches_and_consolidated(assembled, inputs):
    cfg = inputs[0]
    k = cfg["render"]["variants_per_state"]
    g = zarr.open_group(str(assembled), mode="r", use_consolidated=False)
    for name in ("images", "labels", "phase", "clean_images"):
        assert g[name].chunks == (1, 32, 32) and g[name].shards == (2 * k, 32, 32), name
        codecs = g[name].metadata.codecs[0].codecs
        blosc = [c for c in codecs if type(c).__name__ == "BloscCodec"][0]
        assert blosc.cname.value == "zstd" and blosc.shuffle.value == "bitshuffle"
    assert g["magnetization"].chunks == (1, 3, 32, 32)
    assert g["magnetization"].shards == (2, 3, 32, 32)
    for b in g.attrs["inputs"]:
        assert b["image_offset"] % g["images"].shards[0] == 0
    # one shard file per input batch
    assert sorted(os.listdir(assembled / "images" / "c")) == ["0", "1"]
    root = json.loads((assembled / "zarr.json").read_text())
    meta = root["consolidated_metadata"]["metadata"]
    assert "images" in meta and "instances/area_nm2" in meta
    assert open_store(assembled)["images"].shape == g["images"].shape


def test_provenance_attrs(assembled, inputs):
    cfg, batches, _ = inputs
    attrs = open_store(assembled).attrs
    assert attrs["config"] == json.loads(json.dumps(cfg))
    assert attrs["ltemfactory_version"]
    assert attrs["git_commit"] == "unknown" or len(attrs["git_commit"]) == 40
    assert attrs["seed"] == cfg["seed"]
    assert attrs["created_utc"].endswith("+00:00")
    assert len(attrs["inputs_sha256"]) == 64
    assert [b["relax"] for b in attrs["inputs"]] == [b[0] for b in batches]
    assert attrs["fingerprint"] == dataset.fingerprint(assembled)


def test_unequal_batches_shard_by_largest_or_gcd(inputs, tmp_path):
    cfg, batches, extra = inputs
    k = cfg["render"]["variants_per_state"]
    assert dataset.writing._shard_size([8, 8, 4]) == 8
    assert dataset.writing._shard_size([4, 8, 8]) == 4
    assert dataset.writing._shard_size([6, 8, 8]) == 2
    # the last batch smaller: shards of the largest batch, the last one partial
    out = tmp_path / "a.zarr"
    dataset.assemble([*batches, extra], out, cfg, label_fn=LABEL_FN)
    g = open_store(out)
    assert g["images"].shape[0] == 5 * k and g["images"].shards[0] == 2 * k
    assert g["magnetization"].shards[0] == 2
    assert dataset.check(out) == []
    # a smaller batch first: shards of the gcd, still one writer per shard
    out = tmp_path / "b.zarr"
    dataset.assemble([extra, *batches], out, cfg, label_fn=LABEL_FN)
    g = open_store(out)
    assert g["images"].shards[0] == k and g["magnetization"].shards[0] == 1
    assert dataset.check(out) == []


def test_bad_inputs_are_reported(inputs, tmp_path):
    cfg, batches, _ = inputs
    with pytest.raises(InputError, match="no such Zarr store"):
        dataset.assemble([(batches[0][0], tmp_path / "nope.zarr")], tmp_path / "x.zarr", cfg)
    with pytest.raises(InputError, match="already in"):
        dataset.assemble([batches[0], batches[0]], tmp_path / "x.zarr", cfg, label_fn=LABEL_FN)
    with pytest.raises(InputError, match="not in"):  # render store of another relax store
        pair = [(batches[0][0], batches[1][1])]
        dataset.assemble(pair, tmp_path / "x.zarr", cfg, label_fn=LABEL_FN)
    assert not (tmp_path / "x.zarr").exists()


# ------------------------------------------------------------------------------ fingerprint


def test_fingerprint_reproducible_across_schedulers(assembled, inputs, tmp_path):
    cfg, batches, _ = inputs
    out = tmp_path / "sync.zarr"
    dataset.assemble(batches, out, cfg, label_fn=LABEL_FN, scheduler="synchronous")
    a, b = open_store(assembled).attrs, open_store(out).attrs
    assert a["fingerprint"] == b["fingerprint"] == dataset.fingerprint(out)
    assert dataset.fingerprint(assembled) == dataset.fingerprint(out)


def test_distributed_client(assembled, inputs, tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    cfg, batches, _ = inputs
    out = tmp_path / "dist.zarr"
    with distributed.Client(
        processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None
    ) as client:
        dataset.assemble(batches, out, cfg, label_fn=LABEL_FN, scheduler=client)
    assert dataset.fingerprint(out) == open_store(assembled).attrs["fingerprint"]


def test_fingerprint_changes_with_one_pixel(copy_of):
    before = dataset.fingerprint(copy_of)
    arr = _rw(copy_of)["images"]
    value = arr[3, 5, 5]
    arr[3, 5, 5] = value + np.float32(1e-3)
    assert dataset.fingerprint(copy_of) != before
    arr[3, 5, 5] = value
    assert dataset.fingerprint(copy_of) == before


# ------------------------------------------------------------------------------ atomicity


def test_crash_mid_assembly_leaves_nothing_and_rerun_succeeds(inputs, tmp_path, monkeypatch):
    cfg, batches, _ = inputs
    out = tmp_path / "crash.zarr"
    calls = []

    def failing(relax, render):
        calls.append(render)
        if len(calls) == 2:
            raise RuntimeError("simulated crash while labelling batch 2")
        return LABEL_FN(relax, render)

    with pytest.raises(RuntimeError, match="simulated crash"):
        dataset.assemble(batches, out, cfg, label_fn=failing, scheduler="synchronous")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # the temporary store is gone too

    # a crash late in the run (after all image data is written)
    real = dataset.assembly._write_1d

    def write_1d(group, name, *args, **kwargs):
        if name == "split":
            raise OSError("simulated disk full")
        return real(group, name, *args, **kwargs)

    monkeypatch.setattr(dataset.assembly, "_write_1d", write_1d)
    with pytest.raises(OSError, match="disk full"):
        dataset.assemble(batches, out, cfg, label_fn=LABEL_FN)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    monkeypatch.undo()

    # a killed run leaves its temporary store: the next run removes it and starts over
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"crash.zarr.tmp-{socket.gethostname()}-{dead.pid}"
    (stale / "images").mkdir(parents=True)
    (stale / "zarr.json").write_text("{}")
    dataset.assemble(batches, out, cfg, label_fn=LABEL_FN)
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crash.zarr"]
    assert dataset.check(out) == []


def test_rerun_replaces_store(assembled, inputs, tmp_path):
    cfg, batches, _ = inputs
    out = tmp_path / "d.zarr"
    dataset.assemble(batches[:1], out, cfg, label_fn=LABEL_FN)
    dataset.assemble(batches, out, cfg, label_fn=LABEL_FN)
    assert open_store(out).attrs["fingerprint"] == open_store(assembled).attrs["fingerprint"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.zarr"]


# ------------------------------------------------------------------------------ check


def test_check_passes_on_good_store(assembled):
    assert dataset.check(assembled) == []
    dataset.check_or_raise(assembled)


def _problems(path, *needles):
    problems = dataset.check(path)
    text = "\n".join(problems)
    for needle in needles:
        assert needle in text, f"{needle!r} not in:\n{text}"
    with pytest.raises(InputError) as exc:
        dataset.check_or_raise(path)
    assert all(p in str(exc.value) for p in problems)
    return problems


def test_check_missing_shard_file(copy_of):
    (copy_of / "images" / "c" / "1" / "0" / "0").unlink()
    _problems(copy_of, "images: chunk file c/1/0/0 missing")


def test_check_missing_one_d_chunk(copy_of):
    (copy_of / "tilt_deg" / "c" / "0").unlink()
    _problems(copy_of, "tilt_deg: chunk file c/0 missing")


def test_check_truncated_chunk_file(copy_of):
    f = copy_of / "labels" / "c" / "0" / "0" / "0"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    _problems(copy_of, "labels: chunk file c/0/0/0 unreadable", "fingerprint: not verified")
    f = copy_of / "defocus_mm" / "c" / "0"
    f.write_bytes(f.read_bytes()[:10])
    _problems(copy_of, "defocus_mm: chunk file c/0 unreadable")


def test_check_wrong_dtype(copy_of):
    g = _rw(copy_of)
    phase = g["phase"]
    data, meta = phase[:], phase.metadata
    del g["phase"]
    g.create_array(
        "phase",
        data=data.astype(np.float64),
        chunks=phase.chunks,
        dimension_names=meta.dimension_names,
        attributes=dict(phase.attrs),
    )
    _problems(copy_of, "phase: dtype float64, expected float32", "phase: consolidated metadata")
    _reconsolidate(copy_of)
    problems = _problems(copy_of, "phase: dtype float64, expected float32", "fingerprint")
    assert not any("consolidated" in p for p in problems)


def test_check_table_label_mismatch(copy_of):
    g = _rw(copy_of)
    ids = g["instances/instance_id"][:]
    ids[0] = 99
    g["instances/instance_id"][:] = ids
    _problems(copy_of, "instances: image", "label ids not in table [1]")


def test_check_area_mismatch(copy_of):
    g = _rw(copy_of)
    area = g["instances/area_nm2"][:]
    area[1] *= 1.5
    g["instances/area_nm2"][:] = area
    _problems(copy_of, "area_nm2")


def test_check_non_contiguous_label_ids(copy_of):
    g = _rw(copy_of)
    i = int(g["instances/image"][0])
    lab = g["labels"][i]
    lab[lab == lab.max()] = 77
    g["labels"][i] = lab
    _problems(copy_of, f"labels: image {i} ids are not contiguous")


def test_check_nan(copy_of):
    _rw(copy_of)["images"][3, 5, 5] = np.nan
    _problems(copy_of, "images: 1 NaN/inf value(s), first at index (3, 5, 5)", "fingerprint")


def test_check_split_straddling(copy_of):
    g = _rw(copy_of)
    split = g["split"][:]
    state = g["image_state"][:]
    first = int(np.flatnonzero(state == state[0])[0])
    split[first] = (split[first] + 1) % 3
    g["split"][:] = split
    _problems(copy_of, "has images in several splits")


def test_check_fingerprint_mismatch(copy_of):
    g = _rw(copy_of)
    g.attrs["fingerprint"] = "0" * 64
    _reconsolidate(copy_of)
    problems = _problems(copy_of, f"fingerprint: stored {'0' * 64} != recomputed")
    assert len(problems) == 1


def test_check_one_pixel_changed_only_breaks_fingerprint(copy_of):
    _rw(copy_of)["phase"][0, 0, 0] = 123.0
    problems = _problems(copy_of, "fingerprint: stored")
    assert len(problems) == 1


def test_check_missing_store(tmp_path):
    assert "cannot open" in dataset.check(tmp_path / "none.zarr")[0]


# ------------------------------------------------------------------------------ card


def test_card(assembled, tmp_path):
    readme = dataset.card(assembled, tmp_path / "card")
    assert readme == tmp_path / "card" / "README.md"
    text = readme.read_text()
    attrs = open_store(assembled).attrs
    assert attrs["fingerprint"] in text and attrs["git_commit"] in text
    assert "| train |" in text and "| defocus_mm | image | mm |" in text
    assert "| Ms_A_per_m | state | A/m |" in text and "area_nm2" in text
    for png in ("examples.png", "parameters_state.png", "parameters_image.png"):
        assert (tmp_path / "card" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in text
    assert not [p for p in (tmp_path / "card").iterdir() if ".tmp" in p.name]
