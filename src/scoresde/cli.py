"""The ``scoresde`` command: train, sample, likelihood, plot, show-config, demo.

A thin layer: it resolves a :class:`~scoresde.config.Config` (preset → TOML file → ``--set`` overrides),
checks it whole (:func:`scoresde.validation.validate`), prints it with ``--dry-run``, and calls
:func:`scoresde.train.train` or the samplers / likelihood on the EMA weights of a checkpoint.
Multi-GPU: ``torchrun --nproc_per_node=N -m scoresde.cli train ...``.

Arguments are parsed before anything heavy is imported: this module and :func:`build_parser` import
neither torch nor scoresde's numerical modules, so ``scoresde --help`` answers at once. Every expected
failure (a bad config, a missing or unsafe file, a diverged run) ends with one line
``scoresde <command>: error: ...`` and exit status 2; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from scoresde import config as C

__all__ = ["main", "build_parser", "resolve_config"]

#: Commands that compute (and so get a deliberate torch thread count).
_COMPUTE = ("train", "sample", "likelihood", "demo")
#: Above this many score evaluations ``sample`` suggests a faster sampler.
_MANY_EVALUATIONS = 200


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def _positive_minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number of minutes, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of minutes, got {value}")
    return value


def _add_threads(p: argparse.ArgumentParser, default) -> None:
    p.add_argument("--threads", type=_positive_int, default=default, metavar="N",
                   help="torch CPU threads for commands that compute (default: $SCORESDE_THREADS, else 1: on a "
                        "shared or busy machine more threads than free cores make every step slower)")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="toy2d", choices=sorted(C.PRESETS), metavar="NAME",
                   help=f"start from this preset, one of {', '.join(sorted(C.PRESETS))} (default: %(default)s)")
    p.add_argument("--config", metavar="FILE.toml", default=None,
                   help="TOML file of [section] tables, optionally with preset = \"name\"; applied after --preset "
                        "(default: none)")
    _add_set(p)
    p.add_argument("--dry-run", action="store_true",
                   help="check and print the resolved config as TOML, then exit (default: off)")


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override one config field, checked against its type; repeatable (default: none)")


def _add_no_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (default: a bar on stderr when it is a terminal)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scoresde", description="Score-based diffusion models: train, sample, "
                                     "evaluate likelihoods. Every command takes --help.")
    _add_threads(parser, None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a score model (torchrun for several GPUs)")
    _add_config_args(p)
    p.add_argument("--workdir", default=None, help="run directory (default: training.workdir of the config)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest readable checkpoint in the workdir (default: off; without it an "
                        "existing run is an error)")
    p.add_argument("--allow-config-change", action="store_true",
                   help="with --resume, continue even though the config differs from the checkpoint's outside the "
                        "fields that may always change (steps, intervals, device, sampling, eval; see "
                        "scoresde.train.MAY_CHANGE_ON_RESUME) (default: off, such a resume is refused)")
    p.add_argument("--stop-after", type=_positive_int, default=None, metavar="STEPS",
                   help="exit hard after this many steps, like a kill, to test resumption (default: never)")
    _add_no_progress(p)
    _add_threads(p, argparse.SUPPRESS)

    for name, what in (("sample", "draw samples from a trained model (EMA weights)"),
                       ("likelihood", "test-set bits/dim (or NLL for 2-D data) through the probability-flow ODE, "
                                      "with its standard error and a baseline")):
        p = sub.add_parser(name, help=what)
        p.add_argument("--workdir", required=True, help="run directory holding the checkpoints (required)")
        p.add_argument("--checkpoint", default=None, help="checkpoint file (default: the newest in the workdir)")
        _add_set(p)
        p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit (default: off)")
        p.add_argument("--seed", type=int, default=0, help="seed of the sampling generator (default: %(default)s)")
        if name == "sample":
            p.add_argument("--out", default=None, help="output file: PNG grid for images, .pt tensor for 2-D "
                                                       "points (default: WORKDIR/samples.png or samples.pt)")
        _add_no_progress(p)
        _add_threads(p, argparse.SUPPRESS)

    p = sub.add_parser("plot", help="draw the loss and test bits/dim curves of a run from its metrics.jsonl "
                                    "(needs matplotlib: pip install 'scoresde[plot]')")
    p.add_argument("--workdir", required=True, help="run directory holding metrics.jsonl (required)")
    p.add_argument("--out", default=None, help="PNG file to write (default: WORKDIR/metrics.png)")

    p = sub.add_parser("export", help="write a run's weights as model.safetensors plus config.json (read back with "
                                      "scoresde.load_run; needs pip install 'scoresde[export]')")
    p.add_argument("--workdir", required=True, help="run directory to export (required)")
    p.add_argument("--out", required=True, help="new or empty folder to write (required)")
    p.add_argument("--weights", choices=("ema", "model"), default="ema",
                   help="EMA (what the papers evaluate) or raw weights (default: %(default)s)")
    p.add_argument("--step", type=_positive_int, default=None,
                   help="the checkpoint of this step (default: the newest readable one)")

    p = sub.add_parser("show-config", help="print a resolved config as TOML")
    _add_config_args(p)

    p = sub.add_parser("demo", help="train on the embedded 8x8 digits (CPU, ~10 min) and report samples, bits/dim")
    p.add_argument("--outdir", default="demo_out", help="where the grid, loss plot and figures go "
                                                         "(default: %(default)s)")
    p.add_argument("--steps", type=_positive_int, default=None,
                   help="training steps (default: the demo's tuned value, capped by a wall-time budget)")
    p.add_argument("--quick", action="store_true", help="a few steps only, to check that everything runs "
                                                       "(default: off)")
    p.add_argument("--max-minutes", type=_positive_minutes, default=None, metavar="M",
                   help="limit on the wall time of the whole demo (default: $SCORESDE_DEMO_MINUTES, else 20)")
    _add_set(p)
    p.add_argument("--dry-run", action="store_true", help="print the demo's config and exit (default: off)")
    _add_threads(p, argparse.SUPPRESS)
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


def _progress(args) -> bool:
    return not args.no_progress and sys.stderr.isatty()


def _say(*parts) -> None:
    print(*parts, flush=True)  # flushed: the line must appear before a long computation, even through a pipe


def _validate(cfg, **kwargs):
    """:func:`scoresde.validation.validate`, imported on first use (it imports torch; ``--help`` must not)."""
    from scoresde.validation import validate

    return validate(cfg, **kwargs)


def _from_checkpoint(args):
    """(config, score model with EMA weights, data source, device) of a finished or running training run."""
    from scoresde import checkpoint as ckpt

    if args.checkpoint:
        state, path = ckpt.load_checkpoint(args.checkpoint), args.checkpoint
    else:
        found = ckpt.load_latest(args.workdir)
        if found is None:
            raise FileNotFoundError(f"no checkpoint in {args.workdir!r}: train first (scoresde train --workdir ...)")
        state, path = found
    trained = C.from_dict(state["config"])
    cfg = _validate(C.apply_overrides(trained, args.overrides), training=False)
    if args.dry_run:
        return cfg, None, None, None

    import torch

    from scoresde.builders import build_model, build_sde
    from scoresde.datastream import load_data

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = load_data(cfg.data, cfg.training.seed)
    model = build_model(cfg.model, build_sde(cfg.sde), data.shape)
    try:
        model.load_state_dict(state["ema"]["module"])
    except RuntimeError as err:
        changed = {k: v for k, v in C.to_dict(cfg)["model"].items() if C.to_dict(trained)["model"][k] != v}
        why = f"--set changed the architecture ({changed}); " if changed else ""
        first = " ".join(str(err).split("\n\t")[:3])
        raise C.ConfigError(f"the weights in {path} do not fit the model asked for: {why}{first}") from None
    _say(f"loaded EMA weights of step {state['step']} from {path}")
    return cfg, model.to(device).eval(), data, device


def _check_out(path: str, images: bool) -> None:
    """Refuse an output path that cannot be written before any sampling is done."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--out {path!r}: the directory {folder!r} does not exist; create it first")
    if os.path.isdir(path):
        raise IsADirectoryError(f"--out {path!r} is a directory; name a file")
    want = (".png", ".jpg", ".jpeg") if images else (".pt",)
    if not path.lower().endswith(want):
        kind = "an image grid" if images else "a tensor of 2-D points"
        raise C.ConfigError(f"--out {path!r}: this run's samples are {kind}; use a file ending in {' or '.join(want)}")


def _cmd_sample(args) -> int:
    import torch

    from scoresde import data as D
    from scoresde.builders import build_sde, describe_sampler, draw_samples, sampler_evaluations
    from scoresde.images import save_image_grid, scatter_png

    cfg, model, data, device = _from_checkpoint(args)
    if model is None:
        print(C.to_toml(cfg))
        return 0
    images = data.levels is not None
    out = args.out or os.path.join(args.workdir, "samples.png" if images else "samples.pt")
    _check_out(out, images)
    sc = cfg.sampling
    shape = (sc.num_samples, *data.shape)
    _say(f"sampling {sc.num_samples} {'images' if images else 'points'} of shape {tuple(data.shape)} on {device}: "
         f"{describe_sampler(sc)}")
    if sc.method != "dpm_solver" and (sampler_evaluations(sc) or 0) > _MANY_EVALUATIONS:
        _say("  (faster: --set sampling.method=dpm_solver --set sampling.steps=50, one evaluation per step)")
    gen = torch.Generator(device=device).manual_seed(args.seed)
    res = draw_samples(model, build_sde(cfg.sde), sc, shape, generator=gen, device=device, progress=_progress(args))
    x = res.x.cpu()
    if not images:
        torch.save(x, out)
        png = scatter_png(x, os.path.splitext(out)[0] + ".png")
        _say(f"{x.shape[0]} samples ({res.nfe} score evaluations) written to {out}" + (f" and {png}" if png else ""))
    else:
        save_image_grid(D.get_inverse_scaler(cfg.data.centered)(x), out)
        _say(f"{x.shape[0]} samples ({res.nfe} score evaluations) written to {out}")
    return 0


def _cmd_likelihood(args) -> int:
    from scoresde.builders import build_sde
    from scoresde.evaluation import baseline, evaluate

    cfg, model, data, device = _from_checkpoint(args)
    if model is None:
        print(C.to_toml(cfg))
        return 0
    if data.test is None:
        raise C.ConfigError(f"data set {cfg.data.name!r} has no test split loaded by the CLI; use "
                            "scoresde.likelihood.log_likelihood on a DataLoader instead")
    ec = cfg.eval
    n = data.test.shape[0] if ec.num_samples == 0 else min(ec.num_samples, data.test.shape[0])
    bpd = data.levels is not None
    what = "bits/dim" if bpd else "NLL (nats)"
    _say(f"test {what} of {n} points through the probability-flow ODE on {device} (divergence {ec.divergence}, "
         f"{ec.probes} probe(s), rtol {ec.rtol}, atol {ec.atol})")
    row = evaluate(model, build_sde(cfg.sde), cfg, data, device, progress=_progress(args))
    key = "test_bpd" if bpd else "test_nll"
    _say(f"test {what}: {row[key]:.4f} ± {row[key + '_se']:.4f} (standard error over {row['n']} points)")
    ref = baseline(cfg, data)
    if ref is not None:
        label, value = ref
        row[f"baseline_{key.split('_')[1]}"] = value
        if bpd:
            verdict = " -> the model beats it" if row[key] < value else " -> the model does NOT beat it"
        else:
            verdict = f" (the model's is {row[key] - value:+.4f} nats from it)"
        _say(f"{label}: {value:.4f}{verdict}")
    print(json.dumps(row))
    return 0


def _cmd_train(args) -> int:
    cfg = _validate(resolve_config(args))
    if args.dry_run:
        print(C.to_toml(cfg))
        return 0
    from scoresde.train import TrainingInterrupted, train

    try:
        result = train(cfg, resume=args.resume, stop_after=args.stop_after, progress=not args.no_progress,
                       allow_config_change=args.allow_config_change)
    except TrainingInterrupted as err:  # SIGINT / SIGTERM: checkpointed; exit 128 + signal (130, 143)
        print(f"scoresde train: {err}", file=sys.stderr)
        return err.exit_code
    _say(f"finished at step {result.step}; checkpoints and metrics.jsonl in {result.workdir}")
    return 0


def _cmd_demo(args) -> int:
    from scoresde.demo import demo_config, run_demo

    cfg = _validate(C.apply_overrides(demo_config(quick=args.quick, steps=args.steps), args.overrides))
    if args.dry_run:
        print(C.to_toml(cfg))
        return 0
    return run_demo(cfg, outdir=args.outdir, quick=args.quick, max_minutes=args.max_minutes,
                    threads=getattr(args, "threads", None))


def _cmd_plot(args) -> int:
    from scoresde.plots import plot_metrics  # imports neither torch nor matplotlib until it draws

    if args.out is not None:
        _check_png(args.out)
    try:
        path = plot_metrics(args.workdir, args.out)
    except ImportError as err:  # the optional extra is missing: one line naming the install command
        print(f"scoresde plot: error: {err}", file=sys.stderr)
        return 2
    _say(f"loss and test metric curves written to {path}")
    return 0


def _check_png(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--out {path!r}: the directory {folder!r} does not exist; create it first")
    if not path.lower().endswith(".png"):
        raise C.ConfigError(f"--out {path!r}: the plot is a PNG image; use a file ending in .png")


def _cmd_export(args) -> int:
    from scoresde.run import export_run

    out = export_run(args.workdir, args.out, weights=args.weights, step=args.step)
    _say(f"exported the {args.weights} weights of {args.workdir} to {out} (model.safetensors, config.json)")
    return 0


def _cmd_show_config(args) -> int:
    print(C.to_toml(_validate(resolve_config(args))))
    return 0


_COMMANDS = {
    "train": _cmd_train,
    "sample": _cmd_sample,
    "likelihood": _cmd_likelihood,
    "plot": _cmd_plot,
    "export": _cmd_export,
    "show-config": _cmd_show_config,
    "demo": _cmd_demo,
}


def _expected_errors() -> tuple[type, ...]:
    """Failures a user can cause and fix (reported in one line); anything else is a bug (a traceback)."""
    from scoresde.checkpoint import CheckpointError
    from scoresde.rundir import MetricsError, WorkdirLocked
    from scoresde.train import TrainingDiverged

    return C.ConfigError, OSError, CheckpointError, TrainingDiverged, FloatingPointError, WorkdirLocked, MetricsError


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``scoresde`` console script; expected failures exit with status 2 and one line."""
    args = build_parser().parse_args(argv)
    try:
        if args.command in _COMPUTE and not getattr(args, "dry_run", False):
            from scoresde.runtime import configure_threads

            configure_threads(args.threads)
        return _COMMANDS[args.command](args)
    except Exception as err:
        if not isinstance(err, _expected_errors()):
            raise
        print(f"scoresde {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
