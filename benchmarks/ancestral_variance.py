"""Accuracy of the ancestral sampler's noise variance choices on the exact Gaussian-mixture oracle.

For each mixture, SDE (VE, VP, sub-VP), variance choice (``beta``, ``beta_tilde``, ``analytic``) and step
count, ``sample_ancestral`` runs with the exact score and is compared with a large exact sample of its
target (p_eps, or its Tweedie denoising with ``denoise``):

- spread: mean squared distance to the nearest mode (of the t = 0 means); relative error to the exact
  value, with its Monte-Carlo standard error (both samples' sampling noise combined);
- mode weights: total variation between the nearest-mode frequencies of the sampler and of the exact
  sample (exact samples are labelled the same way, so overlap between modes cancels), with the sd of the
  TV of two independent samples (½ Σ_k sqrt(f_k(1 − f_k)(1/n + 1/n_ref)), an upper bound).

``tune`` is the mixture of the test suite (the one any choice was looked at on first); ``A``, ``B``, ``C``
are held out: other weights, component stds (down to 0.1), anisotropy, overlap, and D = 8.

    python benchmarks/ancestral_variance.py                     # ~23 min on 2 shared CPU cores
    python benchmarks/ancestral_variance.py --steps 100 --samples 8000   # ~2 min
    python benchmarks/ancestral_variance.py --mixtures A --steps 1000 --samples 24000 --no-denoise
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

import scoresde as sd
from scoresde.sampling import sample_ancestral
from scoresde.sampling._common import tweedie_denoise
from scoresde.sampling.steps import ANCESTRAL_VARIANCES


def mixtures() -> dict[str, sd.GaussianMixture]:
    g = torch.Generator().manual_seed(1)
    means8 = torch.randn(3, 8, generator=g, dtype=torch.float64)
    means8 = 4.0 * means8 / means8.norm(dim=1, keepdim=True)
    return {
        "tune": sd.GaussianMixture([0.2, 0.3, 0.5], [[-3.0, 0.0], [3.0, 0.0], [0.0, 4.0]], 0.5),
        "A": sd.GaussianMixture([0.1, 0.2, 0.3, 0.4], [[-2.0, -2.0], [2.0, -2.0], [-2.0, 2.0], [2.0, 2.0]],
                                [0.1, 0.2, 0.3, 0.5]),
        "B": sd.GaussianMixture([0.3, 0.7], [[-2.0, 0.5], [1.5, -1.0]], [[0.4, 0.2], [0.3, 0.6]]),
        "C": sd.GaussianMixture([0.6, 0.3, 0.1], means8, [0.3, 0.2, 0.4]),
    }


SDES = {"ve": (lambda: sd.VESDE(), 1e-5), "vp": (lambda: sd.VPSDE(), 1e-3), "subvp": (lambda: sd.SubVPSDE(), 1e-3)}


def nearest_mode(mix: sd.GaussianMixture, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    d2 = torch.cdist(x.double(), mix.means) ** 2
    dist, k = d2.min(1)
    return dist, k


def reference(mix, sde, eps: float, denoise: bool, n: int) -> dict:
    x = mix.at_time(sde, eps).sample(n, generator=torch.Generator().manual_seed(12345))
    if denoise:
        x = tweedie_denoise(sde, mix.score_fn(sde), x, torch.full((n,), eps, dtype=torch.float64))
    dist, k = nearest_mode(mix, x)
    freq = torch.bincount(k, minlength=mix.num_components).double() / n
    return {"spread": float(dist.mean()), "spread_sd": float(dist.std()), "freq": freq, "n": n}


def measure(mix, sde, eps, variance, steps, n, denoise, ref, seed) -> dict:
    start = time.perf_counter()
    res = sample_ancestral(mix.score_fn(sde), sde, (n, mix.dim), steps=steps, eps=eps, variance=variance,
                           denoise=denoise, generator=torch.Generator().manual_seed(seed))
    seconds = time.perf_counter() - start
    dist, k = nearest_mode(mix, res.x)
    freq = torch.bincount(k, minlength=mix.num_components).double() / n
    rel = float(dist.mean()) / ref["spread"] - 1
    se = math.sqrt(float(dist.var()) / n + ref["spread_sd"] ** 2 / ref["n"]) / ref["spread"]
    f = ref["freq"]
    tv_sd = 0.5 * float(torch.sqrt(f * (1 - f) * (1 / n + 1 / ref["n"])).sum())
    return {"spread_rel_err": rel, "spread_se": se, "tv": 0.5 * float((freq - f).abs().sum()), "tv_sd": tv_sd,
            "finite": bool(torch.isfinite(res.x).all()), "seconds": seconds}


def markdown(rows: list[dict]) -> str:
    """One line per (mixture, SDE, steps); a cell is "spread error ± SE / mode-weight TV (its sd)"."""
    variances = list(dict.fromkeys(r["variance"] for r in rows))
    lines = ["| mixture | SDE | steps | " + " | ".join(f"`{v}`" for v in variances) + " |",
             "|---|---|---|" + "---|" * len(variances)]
    keys = list(dict.fromkeys((r["mixture"], r["sde"], r["steps"]) for r in rows))
    for key in keys:
        cells = []
        for v in variances:
            r = next((r for r in rows if (r["mixture"], r["sde"], r["steps"]) == key and r["variance"] == v), None)
            cells.append("" if r is None else f"{100 * r['spread_rel_err']:+.1f} ± {100 * r['spread_se']:.1f} % / "
                                              f"{r['tv']:.3f} ({r['tv_sd']:.3f})")
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mixtures", nargs="+", default=["tune", "A", "B", "C"])
    parser.add_argument("--sdes", nargs="+", default=list(SDES))
    parser.add_argument("--variances", nargs="+", default=list(ANCESTRAL_VARIANCES))
    parser.add_argument("--steps", nargs="+", type=int, default=[100, 1000])
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--ref-samples", type=int, default=400_000)
    parser.add_argument("--seed", type=int, default=0, help="added to the step count to seed each run")
    parser.add_argument("--no-denoise", action="store_true", help="compare samples of p_eps (no Tweedie step)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ancestral_variance.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    denoise = not args.no_denoise
    mixes = mixtures()
    rows = []
    for mname in args.mixtures:
        mix = mixes[mname]
        for sname in args.sdes:
            make, eps = SDES[sname]
            sde = make()
            ref = reference(mix, sde, eps, denoise, args.ref_samples)
            for steps in args.steps:
                for variance in args.variances:
                    row = {"mixture": mname, "sde": sname, "steps": steps, "variance": variance, "denoise": denoise,
                           "samples": args.samples, **measure(mix, sde, eps, variance, steps, args.samples, denoise,
                                                             ref, seed=steps + args.seed)}
                    rows.append(row)
                    print(f"{mname:5s} {sname:6s} {steps:5d} {variance:11s} spread {row['spread_rel_err']:+7.2%} "
                          f"± {row['spread_se']:.2%}   tv {row['tv']:.4f} (sd {row['tv_sd']:.4f})  "
                          f"{row['seconds']:.1f}s", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "torch": torch.__version__,
            "machine": platform.machine(), "python": platform.python_version(), "threads": 1,
            "ref_samples": args.ref_samples}
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(markdown(rows))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
