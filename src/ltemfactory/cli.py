"""Command-line interface: ``ltemfactory <command> ...``.

Every workflow rule calls one of these commands from its ``shell:`` directive. Errors in user
input (configs, files) end with exit status 2 and one clear message naming the field or file.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ltemfactory import __version__
from ltemfactory.errors import LtemfactoryError

log = logging.getLogger("ltemfactory")


def _cmd_config_check(args: argparse.Namespace) -> int:
    from ltemfactory.config import load_config

    for path in args.files:
        load_config(path)
        print(f"{path}: OK")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from ltemfactory.config import load_config
    from ltemfactory.sweep import draw_sweep, summarize, write_sweep_tsv

    cfg = load_config(args.config)
    rows = draw_sweep(cfg)
    write_sweep_tsv(rows, args.out)
    log.info(
        "sweep: %s, %s sampling, seed %d -> %s",
        summarize(rows),
        cfg["sweep"]["sampling"],
        cfg["seed"],
        args.out,
    )
    return 0


def _cmd_relax(args: argparse.Namespace) -> int:
    import torch

    from ltemfactory.config import load_config
    from ltemfactory.errors import InputError
    from ltemfactory.relax import relax_batch, write_relax_store
    from ltemfactory.sweep import read_sweep_tsv

    cfg = load_config(args.config)
    rows = [r for r in read_sweep_tsv(args.sweep) if r["batch"] == args.batch]
    if not rows:
        raise InputError(f"{args.sweep}: no states in batch {args.batch}")
    if args.threads:
        torch.set_num_threads(args.threads)
    relax = dict(cfg["relax"], device=args.device or cfg["relax"]["device"])
    batch = relax_batch(rows, cfg["sweep"]["grid"], relax, progress=True)
    write_relax_store(args.out, batch, cfg, args.batch)
    return 0


def _cmd_montage(args: argparse.Namespace) -> int:
    from ltemfactory.plotting import relax_montage

    relax_montage(args.store, args.out)
    return 0


def _cmd_export_ovf(args: argparse.Namespace) -> int:
    import numpy as np

    from ltemfactory.errors import InputError
    from ltemfactory.ovf import write_ovf
    from ltemfactory.stores import open_store

    group = open_store(args.store)
    ids = [int(i) for i in np.asarray(group["state_id"][:])]
    if args.state not in ids:
        raise InputError(f"{args.store}: no state {args.state} (states: {ids})")
    i = ids.index(args.state)
    m = np.asarray(group["m"][i], dtype=np.float64)
    dx = float(group["cell_size_nm"][i]) * 1e-9
    dz = float(group["thickness_nm"][i]) * 1e-9 / m.shape[1]
    ms = float(group["Ms_A_per_m"][i])
    write_ovf(
        args.out,
        m,
        (dx, dx, dz),
        fmt=args.format,
        title=f"m of state {args.state}",
        description=f"ltemfactory state {args.state}; Ms = {ms!r} A/m (mean, before grains)",
    )
    log.info("wrote state %d of %s to %s", args.state, args.store, args.out)
    return 0


def _cmd_render(args: argparse.Namespace) -> int:
    import torch

    from ltemfactory.config import load_config
    from ltemfactory.render import render_batch

    cfg = load_config(args.config)
    if args.threads:
        torch.set_num_threads(args.threads)
    render_batch(args.relax, args.out, cfg)
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from ltemfactory.single_state import Imaging, simulate_file

    imaging = Imaging(
        defocus_mm=args.defocus_mm,
        tilt_deg=args.tilt_deg,
        tilt_axis_deg=args.tilt_axis_deg,
        voltage_kV=args.voltage_kV,
        dose_e_per_px=args.dose_e_per_px,
        seed=args.seed,
    )
    for path in args.inputs:
        simulate_file(
            path,
            args.out_dir,
            imaging,
            cell_size_nm=args.cell_size_nm,
            thickness_nm=args.thickness_nm,
            Ms_A_per_m=args.Ms_A_per_m,
        )
    return 0


def _cmd_assemble(args: argparse.Namespace) -> int:
    from ltemfactory.config import load_config
    from ltemfactory.dask_cluster import dask_client
    from ltemfactory.dataset import assemble
    from ltemfactory.errors import InputError

    if len(args.relax) != len(args.render):
        raise InputError(
            f"--relax and --render: expected one render store per relax store, "
            f"got {len(args.relax)} and {len(args.render)}"
        )
    cfg = load_config(args.config)
    batches = list(zip(args.relax, args.render, strict=True))
    # the config's dask section: its scheduler_address, else a LocalCluster closed at the end
    with dask_client(cfg.get("dask")) as client:
        assemble(batches, args.out, cfg, sweep_table=args.sweep, scheduler=client)
    return 0


def _cmd_dataset_check(args: argparse.Namespace) -> int:
    from ltemfactory.dataset import check

    problems = check(args.store)
    if problems:
        for problem in problems:
            print(f"{args.store}: {problem}", file=sys.stderr)
        print(
            f"ltemfactory dataset check: {len(problems)} problem(s) in {args.store}",
            file=sys.stderr,
        )
        return 2
    print(f"{args.store}: OK")
    return 0


def _cmd_dataset_card(args: argparse.Namespace) -> int:
    from ltemfactory.dataset import card

    path = card(args.store, args.out)
    log.info("wrote the dataset card %s", path)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    from ltemfactory.config import load_config
    from ltemfactory.training.run import train

    cfg = load_config(args.config)
    if args.threads:
        torch.set_num_threads(args.threads)
    summary = train(
        cfg, args.dataset, args.out, checkpoint_dir=args.checkpoints, card_dir=args.card
    )
    if summary:
        log.info(
            "trained %d epochs (%d steps) in %.0f s; best val F1@0.5 %s; model %s",
            summary["epochs"],
            summary["global_step"],
            summary["wall_s"],
            summary["best_val_f1"],
            summary["model_uri"],
        )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    from ltemfactory.config import load_config
    from ltemfactory.training.evaluation import evaluate

    tracking = load_config(args.config)["train"]["tracking"] if args.config else None
    if args.threads:
        torch.set_num_threads(args.threads)
    evaluate(args.model, args.dataset, args.out, split=args.split, tracking=tracking)
    return 0


def _cmd_infer(args: argparse.Namespace) -> int:
    import torch

    from ltemfactory.inference.pipeline import infer_images

    if args.threads:
        torch.set_num_threads(args.threads)
    summary = infer_images(
        args.images,
        args.model,
        args.out,
        pixel_size_nm=args.pixel_size_nm,
        tilt_axis_deg=args.tilt_axis_deg,
        tile_px=args.tile_px,
        overlap_px=args.overlap_px,
        frame=args.frame,
        batch_size=args.batch_size,
        device=args.device,
        tracking_uri=args.tracking_uri,
        **{
            key: getattr(args, key)
            for key in ("lowpass_sigma_a", "min_diameter_fraction")
            if getattr(args, key) is not None
        },
    )
    log.info(
        "inference: %d of %d image(s) processed -> %s",
        summary["n_ok"],
        summary["n_images"],
        args.out,
    )
    if summary["n_failed"] and not args.allow_failed:
        print(
            f"ltemfactory infer: error: {summary['n_failed']} of {summary['n_images']} image(s) "
            f"failed (listed in {args.out / 'summary.json'})",
            file=sys.stderr,
        )
        return 2
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ltemfactory.inference.report import write_report

    write_report(
        args.out,
        dataset_card=args.dataset_card,
        model=args.model,
        evaluation=args.evaluation,
        inference=args.inference,
    )
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from ltemfactory.config import load_config
    from ltemfactory.dashboard import auth_settings, check_exposure, run_dashboard
    from ltemfactory.training.tracking import TrackingConfig

    auth_on = args.auth or args.auth_config is not None
    if not auth_on:
        check_exposure(args.host, None)  # before reading the config or creating anything
    tracking = TrackingConfig.from_dict(load_config(args.config)["train"]["tracking"])
    auth = None
    if auth_on:
        auth = auth_settings(backend_store_uri=tracking.tracking_uri, auth_config=args.auth_config)
    return run_dashboard(
        backend_store_uri=tracking.tracking_uri,
        artifacts_destination=tracking.artifact_location,
        host=args.host,
        port=args.port,
        auth=auth,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ltemfactory", description=__doc__)
    parser.add_argument("--version", action="version", version=f"ltemfactory {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    config = sub.add_parser("config", help="configuration utilities")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate config files against the schema")
    check.add_argument("files", nargs="+", type=Path)
    check.set_defaults(func=_cmd_config_check)

    sweep = sub.add_parser("sweep", help="draw the parameter sweep table (one row per state)")
    sweep.add_argument("--config", required=True, type=Path, help="config YAML file")
    sweep.add_argument("--out", required=True, type=Path, help="output TSV, e.g. results/sweep.tsv")
    sweep.set_defaults(func=_cmd_sweep)

    relax = sub.add_parser("relax", help="relax one batch of the sweep into its own Zarr store")
    relax.add_argument("--config", required=True, type=Path, help="config YAML file")
    relax.add_argument("--sweep", required=True, type=Path, help="sweep table (TSV)")
    relax.add_argument("--batch", required=True, type=int, help="batch index to relax")
    relax.add_argument("--out", required=True, type=Path, help="output Zarr store")
    relax.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    relax.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override relax.device")
    relax.set_defaults(func=_cmd_relax)

    montage = sub.add_parser("montage", help="PNG montage of m_z for a relax store")
    montage.add_argument("store", type=Path)
    montage.add_argument("--out", required=True, type=Path)
    montage.set_defaults(func=_cmd_montage)

    ovf = sub.add_parser("export-ovf", help="write one relaxed state as OVF 2.0 (mumax3/OOMMF)")
    ovf.add_argument("store", type=Path, help="relax-stage Zarr store")
    ovf.add_argument("--state", required=True, type=int, help="state id")
    ovf.add_argument("--out", required=True, type=Path, help="output .ovf file")
    ovf.add_argument("--format", default="binary4", choices=["binary4", "binary8", "text"])
    ovf.set_defaults(func=_cmd_export_ovf)

    render = sub.add_parser("render", help="simulate LTEM images of one relax store")
    render.add_argument("--config", required=True, type=Path, help="config YAML file")
    render.add_argument("--relax", required=True, type=Path, help="relax-stage Zarr store")
    render.add_argument("--out", required=True, type=Path, help="output Zarr store")
    render.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    render.set_defaults(func=_cmd_render)

    sim = sub.add_parser(
        "simulate", help="LTEM image, phase and TIE induction of OVF/.npy magnetisation files"
    )
    sim.add_argument("inputs", nargs="+", type=Path, help="OVF 1/2 (text/binary) or .npy files")
    sim.add_argument("--out-dir", required=True, type=Path)
    sim.add_argument("--defocus-mm", type=float, default=1.0, help="defocus [mm], either sign")
    sim.add_argument("--tilt-deg", type=float, default=0.0, help="sample tilt [deg]")
    sim.add_argument("--tilt-axis-deg", type=float, default=0.0, help="tilt axis from +x [deg]")
    sim.add_argument("--voltage-kV", type=float, default=200.0)
    sim.add_argument("--dose-e-per-px", type=float, default=None, help="shot noise (default none)")
    sim.add_argument("--cell-size-nm", type=float, help="in-plane cell size (required for .npy)")
    sim.add_argument("--thickness-nm", type=float, help="film thickness (required for .npy)")
    sim.add_argument("--Ms-A-per-m", type=float, default=2.0e5, help="saturation magnetisation")
    sim.add_argument("--seed", type=int, default=0)
    sim.set_defaults(func=_cmd_simulate)

    asm = sub.add_parser("assemble", help="assemble the batch stores into one dataset store")
    asm.add_argument("--config", required=True, type=Path, help="config YAML file")
    asm.add_argument("--relax", required=True, nargs="+", type=Path, help="relax stores")
    asm.add_argument("--render", required=True, nargs="+", type=Path, help="render stores")
    asm.add_argument("--out", required=True, type=Path, help="output dataset store")
    asm.add_argument("--sweep", type=Path, help="sweep table, hashed into the provenance")
    asm.set_defaults(func=_cmd_assemble)

    ds = sub.add_parser("dataset", help="dataset utilities")
    ds_sub = ds.add_subparsers(dest="dataset_command", required=True)
    dcheck = ds_sub.add_parser("check", help="verify a dataset store (exit 2 on any defect)")
    dcheck.add_argument("store", type=Path)
    dcheck.set_defaults(func=_cmd_dataset_check)
    dcard = ds_sub.add_parser("card", help="write a Markdown dataset card with figures")
    dcard.add_argument("store", type=Path)
    dcard.add_argument("--out", required=True, type=Path, help="output directory")
    dcard.set_defaults(func=_cmd_dataset_card)

    tr = sub.add_parser("train", help="train the skyrmion segmenter (tracked in MLflow)")
    tr.add_argument("--config", required=True, type=Path, help="config YAML file")
    tr.add_argument("--dataset", required=True, type=Path, help="dataset store")
    tr.add_argument("--out", required=True, type=Path, help="output model directory")
    tr.add_argument(
        "--checkpoints", required=True, type=Path, help="checkpoint directory (kept to resume)"
    )
    tr.add_argument("--card", type=Path, help="dataset card directory, logged to MLflow")
    tr.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    tr.set_defaults(func=_cmd_train)

    ev = sub.add_parser("evaluate", help="score a trained model on a split of the dataset")
    ev.add_argument("--model", required=True, type=Path, help="model directory from train")
    ev.add_argument("--dataset", required=True, type=Path, help="dataset store")
    ev.add_argument("--out", required=True, type=Path, help="output directory")
    ev.add_argument("--split", default="test", choices=["train", "val", "test"])
    ev.add_argument("--config", type=Path, help="config YAML (its train.tracking gets the run)")
    ev.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ev.set_defaults(func=_cmd_evaluate)

    inf = sub.add_parser(
        "infer", help="segment skyrmions in experimental images (overlays, tables, lattice stats)"
    )
    inf.add_argument("images", nargs="+", type=Path, help="TIFF, DM3/DM4, PNG/JPEG or NPY files")
    inf.add_argument(
        "--model",
        required=True,
        help="model directory or .pt file from train, or models:/NAME/VERSION|latest, runs:/...",
    )
    inf.add_argument("--out", required=True, type=Path, help="output directory")
    inf.add_argument("--pixel-size-nm", type=float, help="pixel size [nm] (overrides the files)")
    inf.add_argument("--tilt-axis-deg", type=float, help="tilt-axis azimuth [deg] (recorded)")
    inf.add_argument("--tile-px", type=int, default=256, help="tile side [px] at the model scale")
    inf.add_argument("--overlap-px", type=int, default=32, help="tile overlap [px]")
    inf.add_argument(
        "--lowpass-sigma-a",
        type=float,
        help="Gaussian low-pass sigma in units of the training lattice constant (0: none; "
        "default: ltemfactory.inference.pipeline.LOWPASS_SIGMA_A)",
    )
    inf.add_argument(
        "--min-diameter-fraction",
        type=float,
        help="drop instances narrower than this fraction of the training diameter (0: none; "
        "default: ltemfactory.inference.pipeline.MIN_DIAMETER_FRACTION)",
    )
    inf.add_argument("--frame", type=int, help="only this frame of stacks (default: every frame)")
    inf.add_argument("--batch-size", type=int, default=4, help="tiles per network call")
    inf.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    inf.add_argument("--tracking-uri", help="MLflow tracking URI for models:/ and runs:/ URIs")
    inf.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    inf.add_argument(
        "--allow-failed",
        action="store_true",
        help="exit 0 even when some images failed (they are listed in summary.json)",
    )
    inf.set_defaults(func=_cmd_infer)

    rep = sub.add_parser("report", help="Markdown report: dataset, model, evaluation, inference")
    rep.add_argument("--dataset-card", type=Path, help="dataset card directory")
    rep.add_argument("--model", type=Path, help="model directory (train_summary.json)")
    rep.add_argument("--evaluation", type=Path, help="evaluation directory")
    rep.add_argument("--inference", type=Path, help="inference directory (summary.json)")
    rep.add_argument("--out", required=True, type=Path, help="report directory (report.md)")
    rep.set_defaults(func=_cmd_report)

    dash = sub.add_parser(
        "dashboard", help="MLflow UI on 127.0.0.1 for the config's tracking store (Ctrl-C stops)"
    )
    dash.add_argument("--config", type=Path, default=Path("configs/config.yaml"))
    dash.add_argument(
        "--host",
        default="127.0.0.1",
        help="bind address (default loopback only; any other address needs --auth)",
    )
    dash.add_argument("--port", type=int, default=5000)
    dash.add_argument(
        "--auth",
        action="store_true",
        help="require a login (MLflow basic-auth app); admin user and password from "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_AUTH_ADMIN_*)",
    )
    dash.add_argument(
        "--auth-config",
        type=Path,
        help="MLflow auth config file (basic_auth.ini format) to use instead; implies --auth",
    )
    dash.set_defaults(func=_cmd_dashboard)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except (LtemfactoryError, FileNotFoundError) as exc:
        print(f"ltemfactory {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
