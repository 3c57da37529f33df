"""CIFAR-10 with the paper's configurations on one or more GPUs.

    torchrun --nproc_per_node=8 examples/cifar10_gpu.py --preset ddpmpp_cifar10_vp --root ~/data --download
    python examples/cifar10_gpu.py --quick      # a smoke run: 2 steps of a tiny network on the digits, any machine

Presets: ncsnpp_cifar10_ve, ncsnpp_deep_cifar10_ve, ddpmpp_cifar10_vp, ddpmpp_deep_cifar10_vp,
ddpmpp_cifar10_subvp, ddpmpp_deep_cifar10_subvp, scoreflow_cifar10_vp, ddpm_cifar10, ncsn_cifar10. The
global batch of 128 is split over the processes; bf16 autocast and torch.compile are on by default here.
A full run writes to --workdir (default: the preset's, under runs/) and continues it with --resume; the smoke
run writes to a new outputs/cifar10_quick/<date-time>/ folder.
"""

import argparse
import sys

from scoresde import config as C
from scoresde.runtime import configure_threads, output_dir
from scoresde.train import train


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="ddpmpp_cifar10_vp", help="config preset (default: %(default)s)")
    parser.add_argument("--root", default="data", help="where CIFAR-10 lives (default: %(default)s)")
    parser.add_argument("--download", action="store_true", help="download CIFAR-10 into --root (default: off)")
    parser.add_argument("--workdir", default=None, help="run directory (default: the preset's)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --workdir (default: off)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 steps of a tiny network on the digits "
                                                             "(default: off)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of each process (default: "
                                                                  "$SCORESDE_THREADS, else half the cores, at most 4)")
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    cfg = C.apply_overrides(C.preset(args.preset), [
        f"data.root={args.root}", f"data.download={str(args.download).lower()}", "training.amp=bf16",
        "training.compile=true", "training.sample_every=50000", "training.ckpt_every=10000"])
    if args.workdir:
        cfg = C.apply_overrides(cfg, [f"training.workdir={args.workdir}"])
    if args.quick:  # same code path, CPU-sized: the digits and the small U-Net with 8 base channels
        print("SMOKE RUN (--quick): 2 steps of a tiny network on the 8x8 digits; it checks the code path only.")
        try:
            workdir = output_dir("cifar10_quick", args.workdir, overwrite=args.resume)
        except FileExistsError as err:
            parser.error(f"{err} (here: --workdir, --resume)")
        cfg = C.apply_overrides(cfg, ["data.name=digits", "data.random_flip=false", "model.network=digits",
                                      "model.options.nf=8", "training.steps=2", "training.batch_size=8",
                                      "training.sample_every=0", "training.workdir=" + workdir])
    try:
        result = train(cfg, resume=args.resume, progress=not args.quick)
    except FileExistsError as err:  # a finished or running run in --workdir, without --resume
        parser.error(str(err))
    print(f"finished at step {result.step}; checkpoints and metrics.jsonl in {result.workdir}")


if __name__ == "__main__":
    sys.exit(main())
