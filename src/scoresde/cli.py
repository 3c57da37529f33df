"""The ``scoresde`` command: train, sample, likelihood, show-config, demo.

A thin layer: it resolves a :class:`~scoresde.config.Config` (preset → TOML file → ``--set`` overrides),
prints it with ``--dry-run``, and calls :func:`scoresde.train.train` or the samplers / likelihood on the
EMA weights of a checkpoint. Multi-GPU: ``torchrun --nproc_per_node=N -m scoresde.cli train ...``.
"""

from __future__ import annotations

import argparse
import os
import sys

from scoresde import config as C

__all__ = ["main", "build_parser", "resolve_config"]


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="toy2d", choices=sorted(C.PRESETS), metavar="NAME",
                   help=f"start from this preset, one of {', '.join(sorted(C.PRESETS))} (default: %(default)s)")
    p.add_argument("--config", metavar="FILE.toml", default=None,
                   help="TOML file of [section] tables, optionally with preset = \"name\"; applied after --preset "
                        "(default: none)")
    _add_set(p)
    p.add_argument("--dry-run", action="store_true", help="print the resolved config as TOML and exit (default: off)")


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override one config field, checked against its type; repeatable (default: none)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scoresde", description="Score-based diffusion models: train, sample, "
                                     "evaluate likelihoods. Every command takes --help.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a score model (torchrun for several GPUs)")
    _add_config_args(p)
    p.add_argument("--workdir", default=None, help="run directory (default: training.workdir of the config)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest readable checkpoint in the workdir (default: off; without it an "
                        "existing run is an error)")
    p.add_argument("--stop-after", type=int, default=None, metavar="STEPS",
                   help="exit hard after this many steps, like a kill, to test resumption (default: never)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: a bar on a terminal)")

    for name, what in (("sample", "draw samples from a trained model (EMA weights)"),
                       ("likelihood", "test-set bits/dim (or NLL for 2-D data) through the probability-flow ODE")):
        p = sub.add_parser(name, help=what)
        p.add_argument("--workdir", required=True, help="run directory holding the checkpoints (required)")
        p.add_argument("--checkpoint", default=None, help="checkpoint file (default: the newest in the workdir)")
        _add_set(p)
        p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit (default: off)")
        p.add_argument("--seed", type=int, default=0, help="seed of the sampling generator (default: %(default)s)")
        if name == "sample":
            p.add_argument("--out", default=None, help="output file: PNG grid for images, .pt tensor for 2-D "
                                                       "points (default: WORKDIR/samples.png or samples.pt)")

    p = sub.add_parser("show-config", help="print a resolved config as TOML")
    _add_config_args(p)

    p = sub.add_parser("demo", help="train on the embedded 8x8 digits (CPU, ~10 min) and report samples, bits/dim")
    p.add_argument("--outdir", default="demo_out", help="where the grid, loss plot and figures go "
                                                         "(default: %(default)s)")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps (default: the demo's tuned value, capped by a wall-time budget)")
    p.add_argument("--quick", action="store_true", help="a few steps only, to check that everything runs "
                                                       "(default: off)")
    _add_set(p)
    p.add_argument("--dry-run", action="store_true", help="print the demo's config and exit (default: off)")
    return parser


def resolve_config(args) -> C.Config:
    """preset → TOML file → ``--set`` overrides (→ ``--workdir``)."""
    cfg = C.preset(args.preset) if getattr(args, "preset", None) else C.Config()
    if getattr(args, "config", None):
        cfg = C.load_toml(args.config, cfg)
    cfg = C.apply_overrides(cfg, args.overrides)
    if getattr(args, "workdir", None) and args.command == "train":
        cfg = C.apply_overrides(cfg, [f"training.workdir={args.workdir}"])
    return cfg


def _from_checkpoint(args):
    """(config, score model with EMA weights, data source, device) of a finished or running training run."""
    import torch

    from scoresde import checkpoint as ckpt
    from scoresde._training import build_model, build_sde
    from scoresde.train import load_data

    if args.checkpoint:
        state, path = ckpt.load_checkpoint(args.checkpoint), args.checkpoint
    else:
        found = ckpt.load_latest(args.workdir)
        if found is None:
            raise FileNotFoundError(f"no checkpoint in {args.workdir!r}: train first (scoresde train --workdir ...)")
        state, path = found
    cfg = C.apply_overrides(C.from_dict(state["config"]), args.overrides)
    if args.dry_run:
        return cfg, None, None, None
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = load_data(cfg.data, cfg.training.seed)
    sde = build_sde(cfg.sde)
    model = build_model(cfg.model, sde, data.shape)
    model.load_state_dict(state["ema"]["module"])
    print(f"loaded EMA weights of step {state['step']} from {path}")
    return cfg, model.to(device).eval(), data, device


def _cmd_sample(args) -> int:
    import torch

    from scoresde import data as D
    from scoresde._training import build_sde, draw_samples, scatter_png

    cfg, model, data, device = _from_checkpoint(args)
    if model is None:
        print(C.to_toml(cfg))
        return 0
    gen = torch.Generator(device=device).manual_seed(args.seed)
    shape = (cfg.sampling.num_samples, *data.shape)
    res = draw_samples(model, build_sde(cfg.sde), cfg.sampling, shape, generator=gen, device=device)
    x = res.x.cpu()
    if data.levels is None:
        out = args.out or os.path.join(args.workdir, "samples.pt")
        torch.save(x, out)
        png = scatter_png(x, os.path.splitext(out)[0] + ".png")
        print(f"{x.shape[0]} samples ({res.nfe} score evaluations) written to {out}" + (f" and {png}" if png else ""))
    else:
        from torchvision.utils import save_image

        out = args.out or os.path.join(args.workdir, "samples.png")
        u = D.get_inverse_scaler(cfg.data.centered)(x).clamp(0, 1)
        save_image(u, out, nrow=max(int(x.shape[0] ** 0.5), 1))
        print(f"{x.shape[0]} samples ({res.nfe} score evaluations) written to {out}")
    return 0


def _cmd_likelihood(args) -> int:
    import json

    from scoresde._training import build_sde, evaluate

    cfg, model, data, device = _from_checkpoint(args)
    if model is None:
        print(C.to_toml(cfg))
        return 0
    if data.test is None:
        raise SystemExit(f"data set {cfg.data.name!r} has no test split loaded by the CLI; use "
                         "scoresde.likelihood.log_likelihood on a DataLoader instead")
    print(json.dumps(evaluate(model, build_sde(cfg.sde), cfg, data, device)))
    return 0


def _cmd_train(args) -> int:
    from scoresde.train import train

    cfg = resolve_config(args)
    if args.dry_run:
        print(C.to_toml(cfg))
        return 0
    result = train(cfg, resume=args.resume, stop_after=args.stop_after, progress=not args.no_progress)
    print(f"finished at step {result.step}; checkpoints and metrics.jsonl in {result.workdir}")
    return 0


def _cmd_demo(args) -> int:
    from scoresde.demo import demo_config, run_demo

    cfg = C.apply_overrides(demo_config(quick=args.quick, steps=args.steps), args.overrides)
    if args.dry_run:
        print(C.to_toml(cfg))
        return 0
    return run_demo(cfg, outdir=args.outdir, quick=args.quick, threads=getattr(args, "threads", None))


_COMMANDS = {
    "train": _cmd_train,
    "sample": _cmd_sample,
    "likelihood": _cmd_likelihood,
    "show-config": lambda args: print(C.to_toml(resolve_config(args))) or 0,
    "demo": _cmd_demo,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``scoresde`` console script; configuration errors exit with status 2 and a message."""
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (C.ConfigError, FileNotFoundError, FileExistsError) as err:
        print(f"scoresde {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
