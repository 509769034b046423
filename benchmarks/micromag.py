"""Throughput of the batched micromagnetic relaxation (issue: ≥ 10 states/min on 2 CPU cores).

Relaxes Fe3GeTe2-preset states (256 × 256 cells of 3 nm, tolerance 1e-2, float32) in batches
of 1, 4 and 16 on the CPU and, when present, on CUDA, and prints one JSON object: states per
minute, mean iterations, converged fraction and peak memory per case. Two sets of starts are
measured: hexagonally seeded bubbles alone, and hexagonal plus random-position bubbles (the
latter relax their positions slowly: soft translational modes). Each case runs in its own
process so that its peak resident memory is its own.

    python benchmarks/micromag.py [--grid 256] [--batches 1 4 16] [--devices cpu cuda]
                                  [--starts bubbles_hex [--starts bubbles_random ...]]
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
import sys
import time


def rows_for(batch: int, n_states: int, grid: int, starts: list[str] | None = None) -> list[dict]:
    from ltemfactory.config import validate_config
    from ltemfactory.sweep import draw_sweep

    cfg = validate_config(
        {
            "seed": 2026,
            "sweep": {
                "n_states": n_states,
                "batch_size": batch,
                "preset": "fe3gete2",
                "grid": {"nx": grid, "ny": grid},
                "parameters": {
                    "initial_state": {
                        "distribution": "choice",
                        "values": starts or ["bubbles_hex", "bubbles_random"],
                    }
                },
            },
        },
        warn=False,
    )
    return draw_sweep(cfg), cfg


def run_case(batch: int, device: str, grid: int, threads: int, starts: list[str]) -> dict:
    import numpy as np
    import torch

    from ltemfactory.relax import relax_batch

    torch.set_num_threads(threads)
    n_states = max(batch, 2)
    rows, cfg = rows_for(batch, n_states, grid, starts)
    relax = dict(cfg["relax"], tolerance=1e-2, dtype="float32", device=device)
    # warm-up (allocator, FFT plans) on a small grid
    relax_batch(rows[:1], dict(cfg["sweep"]["grid"], nx=32, ny=32), relax)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    its, conv, counts = [], [], []
    for b0 in range(0, n_states, batch):
        res = relax_batch(rows[b0 : b0 + batch], cfg["sweep"]["grid"], relax)
        its += list(res.iterations)
        conv += list(res.converged)
        counts += list(res.skyrmion_count)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    out = {
        "device": device if device == "cpu" else torch.cuda.get_device_name(),
        "grid": grid,
        "starts": "+".join(starts),
        "batch": batch,
        "states": n_states,
        "threads": threads,
        "seconds": round(seconds, 2),
        "states_per_min": round(60 * n_states / seconds, 2),
        "mean_iterations": float(np.mean(its)),
        "converged_fraction": float(np.mean(conv)),
        "mean_skyrmions": float(np.mean(counts)),
        "peak_rss_MiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if device == "cuda":
        out["peak_gpu_MiB"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=256)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--devices", nargs="+", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--starts",
        nargs="+",
        action="append",
        help="initial-state kinds of one set of cases (repeatable); default: hexagonal seeds, "
        "then hexagonal + random-position seeds",
    )
    parser.add_argument("--case", nargs=2, metavar=("BATCH", "DEVICE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        result = run_case(int(args.case[0]), args.case[1], args.grid, args.threads, args.starts[0])
        print(json.dumps(result))
        return
    import torch

    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    results = []
    start_sets = args.starts or [["bubbles_hex"], ["bubbles_hex", "bubbles_random"]]
    for starts, device, batch in itertools.product(start_sets, devices, args.batches):
        cmd = [sys.executable, __file__, "--grid", str(args.grid), "--threads"]
        cmd += [str(args.threads), "--starts", *starts, "--case", str(batch), device]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(json.dumps({"benchmark": "micromag", "preset": "fe3gete2", "results": results}, indent=1))


if __name__ == "__main__":
    main()
