"""Toy 2-D end to end: train a score model on a Gaussian mixture, sample it, compare with the exact mixture.

    python examples/toy_2d.py            # ~1 minute on one CPU thread
    python examples/toy_2d.py --quick    # a smoke run: 5 training steps, checks that everything runs

Outputs (checkpoints, metrics.jsonl) go to a new folder outputs/toy_2d/<date-time>/ unless --out names one.
"""

import argparse
import sys

import torch

from scoresde import config as C
from scoresde.data import toy_mixture
from scoresde.runtime import configure_threads, output_dir
from scoresde.sampling import sample_ode, sample_pc
from scoresde.train import train


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run of 5 steps; its numbers are meant to be "
                                                             "poor (default: off)")
    parser.add_argument("--out", default=None, help="output folder (default: a new outputs/toy_2d/<date-time>)")
    parser.add_argument("--overwrite", action="store_true", help="allow an --out that already holds files "
                                                                 "(default: off)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: $SCORESDE_THREADS, else "
                                                                  "half the cores, at most 4)")
    args = parser.parse_args(argv)
    threads = configure_threads(args.threads)
    try:
        out = output_dir("toy_2d", args.out, overwrite=args.overwrite)
    except FileExistsError as err:
        parser.error(str(err))
    if args.overwrite:
        _clear_checkpoints(f"{out}/run")

    steps, n = (5, 50) if args.quick else (1500, 4000)
    if args.quick:
        print(f"SMOKE RUN (--quick): {steps} training steps only, so the mode weights and log-density below are "
              "expected to be far from the exact ones; run without --quick for a trained model.")
    cfg = C.apply_overrides(C.preset("toy2d"), [f"training.steps={steps}", f"training.workdir={out}/run",
                                                "optim.lr=3e-3", "optim.warmup=50", "training.ckpt_every=100000"])
    print(f"{threads} CPU thread(s); outputs in {out}")
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
    if args.quick:
        print("smoke run finished (numbers of a 5-step model, not a result)")


def _clear_checkpoints(workdir: str) -> None:
    """--overwrite: remove this script's earlier run folder, so that training starts fresh."""
    import shutil

    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
