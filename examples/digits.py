"""Train on the embedded 8x8 digits (no download) and save sample grids and the test bits/dim.

    python examples/digits.py            # the `digits` preset: 4000 steps, minutes on a CPU
    python examples/digits.py --quick    # a smoke run: 3 steps of a tiny network, checks that everything runs

Outputs (checkpoints, metrics.jsonl with test_bpd, samples_*.png) go to a new folder
outputs/digits/<date-time>/ unless --out names one. The same run from the command line:
scoresde train --preset digits --workdir runs/digits --set training.sample_every=1000
"""

import argparse
import shutil
import sys

from scoresde import config as C
from scoresde.data import digits_histogram_bpd
from scoresde.runtime import configure_threads, output_dir
from scoresde.train import train


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run of 3 steps; its bits/dim is meant to be "
                                                             "poor (default: off)")
    parser.add_argument("--out", default=None, help="output folder (default: a new outputs/digits/<date-time>)")
    parser.add_argument("--overwrite", action="store_true", help="allow an --out that already holds files; its "
                                                                 "earlier run is replaced (default: off)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: $SCORESDE_THREADS, else "
                                                                  "half the cores, at most 4)")
    args = parser.parse_args(argv)
    threads = configure_threads(args.threads)
    try:
        out = output_dir("digits", args.out, overwrite=args.overwrite)
    except FileExistsError as err:
        parser.error(str(err))
    workdir = f"{out}/run"
    if args.overwrite:
        shutil.rmtree(workdir, ignore_errors=True)  # this script's own earlier run: start fresh
    overrides = [f"training.workdir={workdir}", "training.sample_every=1000", "training.eval_every=2000"]
    if args.quick:  # tiny network, 3 steps, cheap sampling and likelihood
        print("SMOKE RUN (--quick): 3 steps of a tiny network, so the samples are noise and the bits/dim far above "
              "the baseline; run without --quick for a trained model.")
        overrides += ["training.steps=3", "model.options.nf=8", "sampling.steps=50", "sampling.corrector=none",
                      "sampling.num_samples=4", "eval.num_samples=4", "eval.rtol=1e-2", "eval.atol=1e-2"]
    cfg = C.apply_overrides(C.preset("digits"), overrides)
    print(f"{threads} CPU thread(s); outputs in {out}")
    train(cfg, progress=not args.quick)
    print(f"per-pixel histogram baseline: {digits_histogram_bpd():.3f} bits/dim (a trained model is below it; see "
          f"test_bpd in {workdir}/metrics.jsonl); sample grids: {workdir}/samples_*.png")
    if args.quick:
        print("smoke run finished (a 3-step model, not a result)")


if __name__ == "__main__":
    sys.exit(main())
