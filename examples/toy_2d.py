"""Toy 2-D end to end: train a score model on a Gaussian mixture, sample it, compare with the exact mixture.

    python examples/toy_2d.py            # ~1 minute on a CPU
    python examples/toy_2d.py --quick    # a few steps, checks that everything runs
"""

import argparse

import torch

from scoresde import config as C
from scoresde.data import toy_mixture
from scoresde.sampling import sample_ode, sample_pc
from scoresde.train import train


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few steps only (default: off)")
    parser.add_argument("--workdir", default="runs/toy_2d", help="run directory (default: %(default)s)")
    args = parser.parse_args(argv)

    steps, n = (5, 50) if args.quick else (1500, 4000)
    cfg = C.apply_overrides(C.preset("toy2d"), [f"training.steps={steps}", f"training.workdir={args.workdir}",
                                                "optim.lr=3e-3", "optim.warmup=50", "training.ckpt_every=100000"])
    result = train(cfg, progress=not args.quick)
    model = result.ema.module  # the EMA weights, a score_fn(x, t)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        pc = sample_pc(model, model.sde, (n, 2), steps=20 if args.quick else 500, corrector="none", generator=gen)
    ode = sample_ode(model, model.sde, (n, 2), rtol=1e-3 if args.quick else 1e-5,
                     atol=1e-3 if args.quick else 1e-5, generator=gen)

    exact = toy_mixture()
    for name, res in (("PC sampler", pc), ("probability-flow ODE", ode)):
        labels = exact.responsibilities(res.x.double()).argmax(1)
        weights = (labels.bincount(minlength=exact.num_components).double() / n).tolist()
        print(f"{name:22s} mode weights {[round(w, 3) for w in weights]} "
              f"(exact {[round(w, 3) for w in exact.weights.tolist()]}), {res.nfe} score evaluations")
    logp = exact.log_prob(pc.x.double()).mean()
    print(f"mean exact log-density of the PC samples {float(logp):.3f} vs of true samples "
          f"{float(exact.log_prob(exact.sample(n, generator=gen)).mean()):.3f}")


if __name__ == "__main__":
    main()
