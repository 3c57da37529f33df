"""Likelihood benchmark: accuracy vs score evaluations and wall time, dopri5 (torchdiffeq, on the device) vs
scipy RK45 (host round trip every evaluation) at equal tolerance, on the exact Gaussian-mixture oracle; and
the Hutchinson error in nats/dim vs the number of probes on a 64-D mixture (the official code's single-probe
error there is 0.020 nats/dim MAE). With CUDA, also the wall time per batch with a CIFAR-sized conv net.

    python benchmarks/likelihood.py --quick --out runs/bench_likelihood
    python benchmarks/likelihood.py --quick --png-dir docs/img    # also docs/img/bench_likelihood.png
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

import scoresde as sd
from scoresde.likelihood import log_likelihood


def _reference(mix, sde, x, z, eps=1e-5):
    B = x.shape[0]
    full = lambda v: torch.full((B,), v, dtype=x.dtype)  # noqa: E731
    return mix.log_prob_t(x, full(eps), sde) + sde.prior_logp(z) - mix.log_prob_t(z, full(sde.T), sde)


def _mixture(dim, gen):
    means = torch.randn(4, dim, generator=gen, dtype=torch.float64)
    return sd.GaussianMixture([0.1, 0.2, 0.3, 0.4], means, 0.3 + 0.4 * torch.rand(4, dim, generator=gen))


def solver_sweep(dim, batch, tols, gen):
    sde, mix = sd.VPSDE(), _mixture(dim, gen)
    x = mix.sample(batch, generator=gen)
    rows = []
    for method in ("dopri5", "rk45"):
        for tol in tols:
            start = time.perf_counter()
            res = log_likelihood(mix.score_fn(sde), sde, x, divergence="exact", method=method, rtol=tol, atol=tol)
            wall = time.perf_counter() - start
            err = float((res.logp - _reference(mix, sde, x, res.z)).abs().mean()) / dim
            rows.append({"method": method, "tol": tol, "nfe": res.nfe, "wall_s": wall, "mae_nats_per_dim": err})
            print(f"{method:7s} tol={tol:.0e}  nfe={res.nfe:4d}  wall={wall:6.2f}s  MAE={err:.2e} nats/dim")
    return rows


def probe_sweep(dim, batch, probe_counts, gen):
    sde, mix = sd.VPSDE(), _mixture(dim, gen)
    x = mix.sample(batch, generator=gen)
    exact = log_likelihood(mix.score_fn(sde), sde, x, divergence="exact")
    ref = _reference(mix, sde, x, exact.z)
    rows = [{"probes": "exact", "mae_nats_per_dim": float((exact.logp - ref).abs().mean()) / dim}]
    for kind in ("rademacher", "gaussian"):
        for p in probe_counts:
            res = log_likelihood(mix.score_fn(sde), sde, x, divergence=kind, probes=p, generator=gen)
            mae = float((res.logp - ref).abs().mean()) / dim
            rows.append({"probes": p, "kind": kind, "mae_nats_per_dim": mae, "nfe": res.nfe})
            print(f"{kind:10s} probes={p:3d}  MAE={mae:.4f} nats/dim  (exact divergence: "
                  f"{rows[0]['mae_nats_per_dim']:.1e})")
    return rows


def cifar_timing(device, batch, gen):
    """Wall time of one likelihood batch with a CIFAR-sized (3×32×32) convolutional score network."""
    net = torch.nn.Sequential(torch.nn.Conv2d(4, 64, 3, padding=1), torch.nn.SiLU(),
                              torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.SiLU(),
                              torch.nn.Conv2d(64, 3, 3, padding=1)).to(device)
    sde = sd.VPSDE()

    def score_fn(x, t):
        cond = t[:, None, None, None].expand(-1, 1, *x.shape[2:]).to(x.dtype)
        return -net(torch.cat([x, cond], 1)) / sde.marginal_coeffs(t)[1][:, None, None, None]

    x = torch.rand(batch, 3, 32, 32, generator=gen).to(device) * 2 - 1
    rows = []
    for method in ("dopri5", "rk45"):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        res = log_likelihood(score_fn, sde, x, method=method, rtol=1e-3, atol=1e-3, generator=gen)
        if device.type == "cuda":
            torch.cuda.synchronize()
        rows.append({"method": method, "device": str(device), "batch": batch, "nfe": res.nfe,
                     "wall_s": time.perf_counter() - start})
        print(f"cifar-sized net on {device}: {method:7s} nfe={res.nfe} wall={rows[-1]['wall_s']:.2f}s")
    return rows


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for method in ("dopri5", "rk45"):
        rows = [r for r in results["solvers"] if r["method"] == method]
        axes[0].loglog([r["nfe"] for r in rows], [r["mae_nats_per_dim"] for r in rows], "o-", label=method)
    axes[0].set(xlabel="score evaluations", ylabel="MAE (nats/dim)", title="exact divergence, VP, oracle")
    axes[0].legend()
    for kind in ("rademacher", "gaussian"):
        rows = [r for r in results["probes"] if r.get("kind") == kind]
        axes[1].loglog([r["probes"] for r in rows], [r["mae_nats_per_dim"] for r in rows], "o-", label=kind)
    axes[1].axhline(0.020, ls="--", c="gray", label="official, 1 probe")
    axes[1].set(xlabel="probes", ylabel="MAE (nats/dim)", title="Hutchinson, 64-D mixture")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, a few tolerances (default: off)")
    parser.add_argument("--out", default="runs/bench_likelihood", help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default: %(default)s)")
    parser.add_argument("--png-dir", default=None,
                        help="also write the figure as PNG_DIR/bench_likelihood.png, e.g. docs/img (default: none)")
    parser.add_argument("--cifar", action="store_true", help="time the CIFAR-sized net on CPU too (default: CUDA only)")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    gen = torch.Generator().manual_seed(args.seed)
    tols = (1e-3, 1e-5) if args.quick else (1e-3, 1e-4, 1e-5, 1e-6)
    results = {"device": "cuda" if torch.cuda.is_available() else "cpu", "threads": torch.get_num_threads(),
               "solvers": solver_sweep(8 if args.quick else 16, 64 if args.quick else 256, tols, gen),
               "probes": probe_sweep(64, 64 if args.quick else 256, (1, 4, 16) if args.quick else (1, 2, 4, 8, 16, 32),
                                     gen)}
    if torch.cuda.is_available():
        results["cifar"] = cifar_timing(torch.device("cuda"), 128, gen)
    elif args.cifar:
        results["cifar"] = cifar_timing(torch.device("cpu"), 2, gen)
    with open(os.path.join(args.out, "likelihood.json"), "w") as f:
        json.dump(results, f, indent=2)
    plot(results, os.path.join(args.out, "likelihood.png"))
    print(f"wrote {args.out}/likelihood.json and likelihood.png")
    if args.png_dir is not None:
        os.makedirs(args.png_dir, exist_ok=True)
        plot(results, os.path.join(args.png_dir, "bench_likelihood.png"))
        print(f"wrote {os.path.join(args.png_dir, 'bench_likelihood.png')}")


if __name__ == "__main__":
    main()
