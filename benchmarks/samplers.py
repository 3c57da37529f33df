"""Error vs score evaluations for every sampler on the exact Gaussian-mixture oracle (2-D and 64-D).

Error: relative error of the within-mode spread (mean squared distance to the nearest mode) against
exact samples of the target (p_eps, or its Tweedie denoising for the samplers that denoise), and the
mode-weight total variation. Overhead: wall time per step spent outside the score function.

    python benchmarks/samplers.py --quick            # a few minutes on 2 CPU cores
    python benchmarks/samplers.py --out results/ --samples 10000
    python benchmarks/samplers.py --quick --png-dir docs/img      # also docs/img/bench_samplers.png
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import scoresde as sd
from scoresde.sampling import (
    sample_ancestral,
    sample_dpm_solver,
    sample_euler_maruyama,
    sample_ode,
    sample_pc,
)
from scoresde.sampling._common import tweedie_denoise


def make_mixture(dim: int) -> sd.GaussianMixture:
    g = torch.Generator().manual_seed(0)
    means = torch.randn(3, dim, generator=g, dtype=torch.float64)
    means = 4.0 * means / means.norm(dim=1, keepdim=True)  # three modes on the sphere of radius 4
    if dim == 2:
        means = torch.tensor([[-3.0, 0.0], [3.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    return sd.GaussianMixture([0.2, 0.3, 0.5], means, 0.5)


def metrics(mix: sd.GaussianMixture, x: torch.Tensor) -> tuple[float, float]:
    d2 = torch.cdist(x.double(), mix.means) ** 2
    dist, k = d2.min(1)
    freq = torch.bincount(k, minlength=3).double() / x.shape[0]
    return 0.5 * float((freq - mix.weights).abs().sum()), float(dist.mean())


class TimedScore:
    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, x, t):
        start = time.perf_counter()
        out = self.fn(x, t)
        self.seconds += time.perf_counter() - start
        return out


SAMPLERS = {
    "pc(reverse_diffusion+langevin)": (lambda s, sde, n, st, eps, g: sample_pc(s, sde, n, steps=st, eps=eps,
                                                                                generator=g), True, 2),
    "euler_maruyama": (lambda s, sde, n, st, eps, g: sample_euler_maruyama(s, sde, n, steps=st, eps=eps,
                                                                           generator=g), True, 1),
    "ancestral": (lambda s, sde, n, st, eps, g: sample_ancestral(s, sde, n, steps=st, eps=eps, generator=g),
                  True, 1),
    "dpm_solver++3M": (lambda s, sde, n, st, eps, g: sample_dpm_solver(s, sde, n, steps=st, eps=eps,
                                                                        generator=g), False, 1),
    "ode_rk45": (lambda s, sde, n, st, eps, g: sample_ode(s, sde, n, method="rk45", rtol=st, atol=st, eps=eps,
                                                          generator=g), False, None),
    "ode_dopri5": (lambda s, sde, n, st, eps, g: sample_ode(s, sde, n, rtol=st, atol=st, eps=eps, generator=g),
                   False, None),
}


def run(args) -> list[dict]:
    sdes = {"ve": (sd.VESDE(), 1e-5), "vp": (sd.VPSDE(), 1e-3), "subvp": (sd.SubVPSDE(), 1e-3)}
    steps = [25, 100, 300] if args.quick else [25, 100, 300, 1000]
    tols = [1e-3, 1e-5]
    rows = []
    for dim in args.dims:
        mix = make_mixture(dim)
        for sde_name, (sde, eps) in sdes.items():
            exact = mix.at_time(sde, eps).sample(100_000, generator=torch.Generator().manual_seed(9))
            ref = {False: metrics(mix, exact)[1],
                   True: metrics(mix, tweedie_denoise(sde, mix.score_fn(sde), exact,
                                                      torch.full((len(exact),), eps, dtype=torch.float64)))[1]}
            for name, (call, denoise, per_step) in SAMPLERS.items():
                for st in (tols if per_step is None else ([10, 25, 50] if name.startswith("dpm") else steps)):
                    score = TimedScore(mix.score_fn(sde))
                    start = time.perf_counter()
                    res = call(score, sde, (args.samples, dim), st, eps, torch.Generator().manual_seed(1))
                    wall = time.perf_counter() - start
                    tv, spread = metrics(mix, res.x)
                    n_steps = st if per_step else res.nfe
                    rows.append({"dim": dim, "sde": sde_name, "sampler": name, "steps_or_tol": st, "nfe": res.nfe,
                                 "spread_rel_err": spread / ref[denoise] - 1, "tv": tv, "wall_s": wall,
                                 "overhead_ms_per_step": 1e3 * (wall - score.seconds) / n_steps})
                    print(json.dumps(rows[-1]), flush=True)
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims, sdes = sorted({r["dim"] for r in rows}), ["ve", "vp", "subvp"]
    fig, axes = plt.subplots(len(dims), 3, figsize=(13, 3.6 * len(dims)), squeeze=False)
    for i, dim in enumerate(dims):
        for j, sde in enumerate(sdes):
            ax = axes[i][j]
            for name in SAMPLERS:
                pts = sorted((r["nfe"], abs(r["spread_rel_err"])) for r in rows
                             if r["dim"] == dim and r["sde"] == sde and r["sampler"] == name)
                if pts:
                    ax.loglog(*zip(*pts, strict=True), marker="o", label=name)
            ax.set_title(f"{sde}, D={dim}")
            ax.set_xlabel("score evaluations")
            ax.set_ylabel("|relative spread error|")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and samples (default: off)")
    parser.add_argument("--samples", type=int, default=None, help="samples per run (default 10000; 2000 quick)")
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 64], help="data dimensions (default: 2 64)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"),
                        help="output folder (default: %(default)s)")
    parser.add_argument("--png-dir", type=Path, default=None,
                        help="also write the figure as PNG_DIR/bench_samplers.png, e.g. docs/img (default: none)")
    args = parser.parse_args(argv)
    if args.samples is None:
        args.samples = 2000 if args.quick else 10_000
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = run(args)
    meta = {"samples": args.samples, "quick": args.quick, "torch": torch.__version__,
            "device": "cpu", "threads": torch.get_num_threads()}
    (args.out / "samplers.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    plot(rows, args.out / "samplers.png")
    print(f"wrote {args.out / 'samplers.json'} and {args.out / 'samplers.png'}")
    if args.png_dir is not None:
        args.png_dir.mkdir(parents=True, exist_ok=True)
        plot(rows, args.png_dir / "bench_samplers.png")
        print(f"wrote {args.png_dir / 'bench_samplers.png'}")


if __name__ == "__main__":
    main()
