"""Throughput benchmark of the LTEM simulation (``ltemfactory.ltem.simulate_images``).

Prints one JSON document: images per second for 256² and 512² images, tilted 20° about x, with
electrostatics (inner potential, absorption, support texture) and the full detector chain (exact
Poisson shot noise, MTF, read noise, gain/offset spreads, hot/dead pixels, illumination gradient,
per-image normalisation), single image and batched (64), float32, on the CPU and on CUDA when
available. Every configuration runs in a fresh subprocess so that its peak memory is its own:
CPU peak = growth of the process's maximum resident set size (``resource.getrusage``) over the
run (tracemalloc does not see torch allocations); CUDA peak = ``torch.cuda.max_memory_allocated``.

Usage: ``python benchmarks/ltem.py [--sizes 256 512] [--batches 1 64] [--seconds 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time


def _maxrss_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


def run_one(
    size: int,
    batch: int,
    device: str,
    seconds: float,
    threads: int | None = None,
    poisson_normal_above: float | None = None,
) -> dict:
    import torch

    if threads is not None:
        torch.set_num_threads(threads)

    from ltemfactory.ltem import Detector, Electrostatics, Microscope, Tilt, simulate_images

    dev = torch.device(device)
    gen = torch.Generator(device=dev).manual_seed(0)
    m = torch.randn((batch, 3, 1, size, size), generator=gen, device=dev)
    m = m / m.norm(dim=1, keepdim=True)
    # grains: ±25 % Ms, full film (Fe3GeTe2-like parameters of physics.md §5)
    ms = 2.0e5 * (
        1 + 0.25 * (2 * torch.rand((batch, 1, size, size), generator=gen, device=dev) - 1)
    )
    cell = (3e-9, 3e-9, 27.5e-9)
    mic = Microscope(
        voltage_V=200e3, defocus_m=-2e-3, cs_m=1e-3, theta_c_rad=1e-5, defocus_spread_m=1e-7
    )
    es = Electrostatics(
        inner_potential_V=20.0, extinction_length_m=200e-9, support_phase_rms_rad=5e-3
    )
    det = Detector(
        dose_e_per_px=100.0,
        dose_rel_spread=0.1,
        gain_counts_per_e=1.0,
        gain_rel_spread=0.05,
        offset_counts=0.0,
        read_noise_counts=1.0,
        mtf_nu0_cyc_per_px=0.3,
        mtf_floor=0.05,
        hot_pixel_fraction=1e-4,
        dead_pixel_fraction=1e-4,
        gradient_max_rel=0.05,
        normalize="mean",
        poisson_normal_above=poisson_normal_above,
    )
    tilt = Tilt(20.0, 0.0)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def step():
        return simulate_images(
            m, ms, cell, mic, tilt, electrostatic=es, detector=det, generator=gen
        )

    sync()
    rss0 = _maxrss_bytes()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base_cuda = torch.cuda.memory_allocated(dev)
    t0 = time.perf_counter()
    step()  # warm-up: caches (kernels, transfer function, resampling matrices)
    sync()
    warm = time.perf_counter() - t0
    reps, t0 = 0, time.perf_counter()
    while True:
        out = step()
        sync()
        reps += 1
        elapsed = time.perf_counter() - t0
        if (elapsed >= seconds and reps >= 3) or reps >= 1000:
            break
    assert out.intensity.shape == (batch, size, size)
    res = {
        "size": size,
        "batch": batch,
        "device": device,
        "dtype": "float32",
        "torch_threads": torch.get_num_threads(),
        "poisson": "exact"
        if poisson_normal_above is None
        else f"normal above {poisson_normal_above}",
        "images_per_s": round(batch * reps / elapsed, 2),
        "ms_per_image": round(1e3 * elapsed / (batch * reps), 3),
        "reps": reps,
        "first_call_s": round(warm, 3),
        "peak_rss_delta_MiB": round((_maxrss_bytes() - rss0) / 2**20, 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    if dev.type == "cuda":
        res["peak_cuda_MiB"] = round((torch.cuda.max_memory_allocated(dev) - base_cuda) / 2**20, 1)
    return res


def _run_child(cfg: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(cfg)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return {**cfg, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    p.add_argument("--seconds", type=float, default=3.0, help="minimum timed seconds per config")
    p.add_argument("--devices", nargs="+", default=None, help="default: cpu (+ cuda if available)")
    p.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=None,
        help="CPU intra-op thread counts to run (default: 1 and torch's default)",
    )
    p.add_argument(
        "--poisson-normal-above",
        type=float,
        default=None,
        help="use the Gaussian approximation for rates above this (default: exact Poisson)",
    )
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        cfg = json.loads(args.child)
        print(json.dumps(run_one(**cfg)))
        return 0

    import torch

    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    default_threads = torch.get_num_threads()
    cpu_threads = args.threads or sorted({1, default_threads})
    results = []
    for device in devices:
        for threads in cpu_threads if device == "cpu" else [default_threads]:
            for size in args.sizes:
                for batch in args.batches:
                    cfg = {"size": size, "batch": batch, "device": device}
                    cfg.update(seconds=args.seconds, threads=threads)
                    cfg.update(poisson_normal_above=args.poisson_normal_above)
                    results.append(_run_child(cfg))
    info = {
        "benchmark": "ltemfactory.ltem.simulate_images",
        "scenario": "tilt 20° about x, 200 kV, Δf = −2 mm, Cs = 1 mm, envelopes on, "
        "V0 = 20 V + absorption + support texture, full detector chain, dose 100 e/px",
        "torch": torch.__version__,
        "torch_default_threads": default_threads,
        "cpu_count": os.cpu_count(),
        "load_average_1min_at_start": round(os.getloadavg()[0], 2),
        "machine": platform.processor() or platform.machine(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "results": results,
    }
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
