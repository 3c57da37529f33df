"""Train on the embedded 8x8 digits (no download) and save a sample grid and the test bits/dim.

    python examples/digits.py            # the `digits` preset; minutes on a CPU
    python examples/digits.py --quick    # a few steps only
The same run from the command line: scoresde train --preset digits --set training.sample_every=1000
"""

import argparse

from scoresde import config as C
from scoresde.data import digits_histogram_bpd
from scoresde.train import train


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few steps only (default: off)")
    parser.add_argument("--workdir", default="runs/digits", help="run directory (default: %(default)s)")
    args = parser.parse_args(argv)
    overrides = [f"training.workdir={args.workdir}", "training.sample_every=1000", "training.eval_every=2000"]
    if args.quick:  # tiny network, 3 steps, cheap sampling and likelihood
        overrides += ["training.steps=3", "model.options.nf=8", "sampling.steps=50", "sampling.corrector=none",
                      "sampling.num_samples=4", "eval.num_samples=4", "eval.rtol=1e-2", "eval.atol=1e-2"]
    cfg = C.apply_overrides(C.preset("digits"), overrides)
    train(cfg, progress=not args.quick)
    print(f"per-pixel histogram baseline: {digits_histogram_bpd():.3f} bits/dim (see test_bpd in "
          f"{args.workdir}/metrics.jsonl); sample grids: {args.workdir}/samples_*.png")


if __name__ == "__main__":
    main()
