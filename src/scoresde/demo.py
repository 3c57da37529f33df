"""``scoresde demo``: a score model on the embedded 8×8 digits, trained on a CPU in minutes.

What it does, top to bottom:

1. trains a small U-Net (the ``digits`` network preset) with the VP SDE and the likelihood weighting
   λ(t) = g(t)² with importance sampling of t (Song et al. 2021b) on the 1500 training digits, with a
   wall-time cap so that the whole demo stays within about ten minutes on two CPU cores;
2. draws 64 digits with the predictor–corrector sampler and 64 with the probability-flow ODE from the
   EMA weights and writes them side by side with 64 real test digits (``samples.png``);
3. plots the training loss (``loss.png``, needs matplotlib);
4. computes the test-set bits/dim through the probability-flow ODE (exact likelihood of the dequantised
   data, Song et al. 2021, App. D) and compares it with an independent per-pixel histogram baseline,
   which a model of the digits must beat;
5. prints where everything went. A GPU is used when one is present.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import torch

from scoresde import config as C
from scoresde import data as D

__all__ = ["demo_config", "run_demo", "DEMO_TRAIN_SECONDS"]

#: Cap on the training wall time of the demo; sampling and the test-set likelihood (297 digits, ODE tolerance
#: 1e-4, ~130 evaluations) take the rest of the ten minutes on two CPU cores.
DEMO_TRAIN_SECONDS = 300.0


def demo_config(*, quick: bool = False, steps: int | None = None) -> C.Config:
    """The demo's configuration: the ``digits`` preset, tuned for a few minutes on a CPU."""
    cfg = C.apply_overrides(C.preset("digits"), [
        "training.batch_size=64", "training.log_every=25", "training.ckpt_every=500", "training.workdir=demo_out/run",
        "optim.lr=2e-3", "optim.warmup=100", "optim.ema_decay=0.99", "optim.grad_clip=1.0",
        "sampling.steps=150", "sampling.num_samples=64", "sampling.rtol=1e-4", "sampling.atol=1e-4",
        "eval.rtol=1e-4", "eval.atol=1e-4",
    ])
    n = steps if steps is not None else (3 if quick else 4000)
    cfg = C.apply_overrides(cfg, [f"training.steps={n}"])
    if quick:
        # an almost untrained network outputs ~0, for which the Langevin step size (∝ 1/‖score‖²) is undefined;
        # the VP reverse-diffusion step needs β(t)·Δt < 1, hence 50 steps at least
        cfg = C.apply_overrides(cfg, ["sampling.steps=50", "sampling.num_samples=4", "sampling.corrector=none",
                                      "eval.num_samples=4",
                                      "eval.rtol=1e-2", "eval.atol=1e-2", "training.log_every=1"])
    return cfg


def run_demo(cfg: C.Config, *, outdir: str = "demo_out", quick: bool = False,
             max_seconds: float | None = DEMO_TRAIN_SECONDS, say=print) -> dict:
    """Run the demo described in the module docstring; returns its figures (bpd, baseline, timings, paths)."""
    from scoresde.builders import build_sde, draw_samples
    from scoresde.datastream import load_data
    from scoresde.evaluation import evaluate
    from scoresde.images import save_image_grid
    from scoresde.train import train

    start = time.monotonic()
    os.makedirs(outdir, exist_ok=True)
    run_dir = os.path.join(outdir, "run")
    cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, workdir=run_dir))
    if os.path.isdir(run_dir):
        for name in os.listdir(run_dir):  # the demo always starts fresh
            os.remove(os.path.join(run_dir, name))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    say(f"scoresde demo: 8x8 digits, VP SDE, likelihood weighting + importance sampling, on {device}")

    baseline = D.digits_histogram_bpd()
    result = train(cfg, max_seconds=None if quick else max_seconds, say=say)
    t_train = time.monotonic() - start

    model, sde = result.ema.module.eval(), build_sde(cfg.sde)
    n = cfg.sampling.num_samples
    pc = draw_samples(model, sde, cfg.sampling, (n, 1, 8, 8), generator=_gen(device, 1), device=device)
    ode_cfg = dataclasses.replace(cfg.sampling, method="ode")
    ode = draw_samples(model, sde, ode_cfg, (n, 1, 8, 8), generator=_gen(device, 2), device=device)
    real = D.load_digits("test")[:n]
    to_unit = D.get_inverse_scaler(cfg.data.centered)
    panels = [to_unit(pc.x.cpu()), to_unit(ode.x.cpu()), real]
    grid_path = save_image_grid(panels, os.path.join(outdir, "samples.png"))
    t_sample = time.monotonic() - start - t_train

    data = load_data(cfg.data, cfg.training.seed)
    bpd = evaluate(model, sde, cfg, data, device)["test_bpd"]
    t_eval = time.monotonic() - start - t_train - t_sample
    loss_path = plot_losses(os.path.join(run_dir, "metrics.jsonl"), os.path.join(outdir, "loss.png"))

    figures = {"steps": result.step, "test_bpd": bpd, "baseline_bpd": baseline, "pc_nfe": pc.nfe, "ode_nfe": ode.nfe,
               "seconds_train": round(t_train, 1), "seconds_sample": round(t_sample, 1),
               "seconds_bpd": round(t_eval, 1), "seconds_total": round(time.monotonic() - start, 1),
               "samples_png": grid_path, "loss_png": loss_path, "run_dir": run_dir}
    with open(os.path.join(outdir, "demo.json"), "w") as f:
        json.dump(figures, f, indent=1)
    verdict = "beats" if bpd < baseline else "does NOT beat"
    n_eval = min(cfg.eval.num_samples or data.test.shape[0], data.test.shape[0])
    say(f"\ntest bits/dim (probability-flow ODE, {n_eval} digits): {bpd:.3f}")
    say(f"independent per-pixel histogram baseline:                {baseline:.3f}  -> the model {verdict} it")
    say(f"samples (left: PC sampler, {pc.nfe} evaluations | middle: ODE, {ode.nfe} | right: real): {grid_path}")
    say(f"loss plot: {loss_path or 'skipped (pip install scoresde[plot])'}")
    say(f"checkpoints and metrics.jsonl: {run_dir}; figures: {os.path.join(outdir, 'demo.json')}")
    say(f"wall time {figures['seconds_total']:.0f} s (train {t_train:.0f} s for {result.step} steps, "
        f"sampling {t_sample:.0f} s, bits/dim {t_eval:.0f} s)")
    return figures


def _gen(device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def plot_losses(metrics_path: str, path: str) -> str | None:
    """Training loss against step from ``metrics.jsonl`` (needs matplotlib); None without it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    with open(metrics_path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    rows = [r for r in rows if "loss" in r]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows])
    ax.set_xlabel("step")
    ax.set_ylabel("loss (likelihood-weighted DSM)")
    ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
