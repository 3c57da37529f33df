"""``scoresde demo``: a score model on the embedded 8×8 digits, trained on a CPU in minutes.

What it does, top to bottom:

1. chooses the CPU thread count (:func:`scoresde.runtime.configure_threads`: 1 on a 2-core machine);
2. times a few training steps and network evaluations, and prints a time estimate of every phase before
   starting; when the planned steps cannot fit the time limit it says so up front (and stops at once if too
   few would fit for the model to beat the baseline);
3. trains a small U-Net (the ``digits`` network preset) with the VP SDE and the likelihood weighting
   λ(t) = g(t)² with importance sampling of t (Song et al. 2021b) on the 1500 training digits, for a fixed
   number of steps (4000), showing progress; the time limit bounds the *whole* demo, so training stops
   early only when the machine is slower than planned, and the demo says so;
4. draws 64 digits with the predictor–corrector sampler and 64 with the probability-flow ODE from the
   EMA weights and writes them side by side with 64 real test digits (``samples.png``, each panel titled
   with its sampler and number of score evaluations when matplotlib is installed);
5. computes the test-set bits/dim through the probability-flow ODE (exact likelihood of the dequantised
   data, Song et al. 2021, App. D) and compares it with an independent per-pixel histogram baseline,
   which a model of the digits must beat;
6. plots the training loss (``loss.png``, needs matplotlib) and prints where everything went.

:func:`run_demo` returns an exit status: 0 when the model beats the baseline (or a ``quick`` smoke run
finished), 1 when it does not, or when the machine is too slow to train it within the time limit. A GPU is
used when one is present.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time

import torch

from scoresde import config as C
from scoresde import data as D
from scoresde.builders import build_loss, build_model, build_sde, draw_samples
from scoresde.datastream import load_data
from scoresde.evaluation import evaluate
from scoresde.images import save_image_grid, titles_drawable
from scoresde.runtime import configure_threads
from scoresde.train import train

__all__ = ["demo_config", "run_demo", "DEMO_MAX_MINUTES", "DEMO_MIN_STEPS", "MINUTES_ENV"]

#: Default limit on the wall time of the whole demo (training, sampling, bits/dim). On an idle 2-core CPU
#: with one thread the demo takes about 8 minutes, so the limit allows the machine to be ~2× slower than that.
DEMO_MAX_MINUTES = 20.0

#: Environment variable that overrides :data:`DEMO_MAX_MINUTES` (minutes, a positive number).
MINUTES_ENV = "SCORESDE_DEMO_MINUTES"

#: Fewest training steps worth starting: demo runs cut short by a time limit reached 2.154 bits/dim after 822 steps
#: and 2.392 after 412 (baseline 2.437: barely beaten, blotchy samples); one cut to 28 steps produced noise
#: (9.1 bits/dim). When fewer than this fit in the limit the demo says so and stops before training.
DEMO_MIN_STEPS = 800

# Guesses of the adaptive ODE solver's score evaluations (dopri5, tolerance 1e-4) for the time estimate,
# from measured runs: 115 for sampling 64 digits, 130-220 per likelihood batch (more for weaker models).
_ODE_NFE_SAMPLE, _ODE_NFE_LIKELIHOOD = 130, 180
# Safety factor on the estimated time of sampling and bits/dim, reserved out of the limit before training.
_RESERVE = 1.25
_PROGRESS_SECONDS = 15.0  # at most one progress line per phase this often


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


class _OutOfTime(RuntimeError):
    """The demo's time limit passed during sampling or the likelihood."""


def _max_minutes(value: float | None) -> float:
    """The time limit in minutes: ``value``, else ``$SCORESDE_DEMO_MINUTES``, else :data:`DEMO_MAX_MINUTES`."""
    what = "max_minutes"
    if value is None:
        raw = os.environ.get(MINUTES_ENV, "").strip()
        if not raw:
            return DEMO_MAX_MINUTES
        what = f"the environment variable {MINUTES_ENV}"
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{what} must be a positive number of minutes, got {raw!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a positive number of minutes, got {value!r}")
    return float(value)


def run_demo(cfg: C.Config, *, outdir: str = "demo_out", quick: bool = False, max_minutes: float | None = None,
             threads: int | None = None, say=print) -> int:
    """Run the demo described in the module docstring; returns the exit status (0: success, 1: see below).

    Args:
        cfg: the configuration (:func:`demo_config`, possibly overridden); ``cfg.training.steps`` is the plan.
        outdir: output folder (its ``run/`` subfolder is emptied first: the demo always starts fresh).
        quick: a smoke run (a few steps, no time limit): checks the installation; the numbers are poor.
        max_minutes: limit on the wall time of the whole demo (default ``$SCORESDE_DEMO_MINUTES`` or
            :data:`DEMO_MAX_MINUTES`).
        threads: CPU threads (:func:`scoresde.runtime.configure_threads`; default ``$SCORESDE_THREADS`` or
            half the cores, at most 4).

    Returns 1 when the model does not beat the per-pixel baseline, when fewer than :data:`DEMO_MIN_STEPS` steps
    would fit in the time limit (said before training starts), or when the limit passes during sampling or
    the likelihood; 0 otherwise. The figures are written to ``outdir/demo.json`` in every case that trains.
    """
    start = time.monotonic()
    limit = None if quick else _max_minutes(max_minutes) * 60.0
    n_threads = configure_threads(threads)
    os.makedirs(outdir, exist_ok=True)
    run_dir = os.path.join(outdir, "run")
    cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, workdir=run_dir))
    if os.path.isdir(run_dir):
        for name in os.listdir(run_dir):  # the demo always starts fresh
            os.remove(os.path.join(run_dir, name))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    where = f"{device}" if device.type == "cuda" else f"cpu, {n_threads} thread(s) (SCORESDE_THREADS to change)"
    say(f"scoresde demo: 8x8 digits, VP SDE, likelihood weighting + importance sampling, on {where}")
    if quick:
        say("SMOKE RUN (--quick): 3 training steps to check the installation; the samples are noise and the "
            "bits/dim far above the baseline, as expected. Run `scoresde demo` for the real result.")

    sde = build_sde(cfg.sde)
    data = load_data(cfg.data, cfg.training.seed)
    n_test = min(cfg.eval.num_samples or data.test.shape[0], data.test.shape[0])
    target = cfg.training.steps
    speed = _measure_speed(cfg, sde, data.shape, n_test, device)
    est = _estimate(cfg, speed, n_test)
    say(f"plan: {target} training steps (batch {cfg.training.batch_size}), {cfg.sampling.num_samples} PC + "
        f"{cfg.sampling.num_samples} ODE samples, test bits/dim of {n_test} digits")
    say(f"measured {speed['step'] * 1e3:.0f} ms per training step -> estimated training {_fmt(est['train'])}, "
        f"sampling {_fmt(est['sample'])}, bits/dim {_fmt(est['bpd'])}: total about {_fmt(sum(est.values()))}"
        + (f" (limit {_fmt(limit)})" if limit else ""))

    if limit is not None:
        train_seconds = limit - (time.monotonic() - start) - _RESERVE * (est["sample"] + est["bpd"])
        fit = max(int(train_seconds / (speed["step"] * 1.05)), 0) if train_seconds > 0 else 0
        if fit < target:
            load = _load_text()
            if fit < min(target, DEMO_MIN_STEPS):
                say(f"\nNOT STARTED: at the measured speed only ~{fit} of the {target} training steps fit in the "
                    f"{_fmt(limit)} limit, fewer than the {DEMO_MIN_STEPS} worth starting (~400 steps barely beat the "
                    f"baseline)."
                    f"{load} Free some CPU cores, use a GPU, set {MINUTES_ENV}=<minutes> to allow more time, or "
                    f"ask for fewer steps (--steps).")
                return 1
            say(f"NOTE: at the measured speed about {fit} of the {target} steps fit in the {_fmt(limit)} limit; "
                f"training will stop there and the model will be weaker than a full run's.{load} Set "
                f"{MINUTES_ENV}=<minutes> to allow more time.")

    t_setup = time.monotonic() - start
    deadline = None if limit is None else start + limit
    watch = _TrainWatch(target, say, deadline=deadline, reserve=_RESERVE * (est["sample"] + est["bpd"]),
                        rate=speed["step"] * 1.05)
    result = train(cfg, progress=False, say=_without_rows(say), on_step=watch)
    slow = watch.slow
    t_train = time.monotonic() - start - t_setup
    cut_short = result.step < target
    if cut_short:
        why = f"the machine became {slow:.1f}x slower during training" if slow > 1.2 else "as planned"
        say(f"TIME LIMIT: training stopped at step {result.step} of {target}, to leave time for sampling and "
            f"bits/dim ({why}).{_load_text()}")
    else:
        say(f"training done: {result.step} steps in {_fmt(watch.elapsed)}")

    model, real = result.ema.module.eval(), D.load_digits("test")[: cfg.sampling.num_samples]
    n = cfg.sampling.num_samples
    try:
        pc_cfg = cfg.sampling
        pc = draw_samples(_Watched(model, "sampling 1/2 (PC)", sde, pc_cfg.eps, say, deadline, reverse=True),
                          sde, pc_cfg, (n, 1, 8, 8), generator=_gen(device, 1), device=device)
        ode_cfg = dataclasses.replace(cfg.sampling, method="ode")
        ode = draw_samples(_Watched(model, "sampling 2/2 (ODE)", sde, ode_cfg.eps, say, deadline, reverse=True),
                           sde, ode_cfg, (n, 1, 8, 8), generator=_gen(device, 2), device=device)
        to_unit = D.get_inverse_scaler(cfg.data.centered)
        labels = [f"PC sampler, {pc.nfe} evaluations", f"probability-flow ODE, {ode.nfe} evaluations",
                  "real test digits"]
        grid_path = save_image_grid([to_unit(pc.x.cpu()), to_unit(ode.x.cpu()), real],
                                    os.path.join(outdir, "samples.png"), titles=labels)
        t_sample = time.monotonic() - start - t_setup - t_train
        say(f"sampling done in {_fmt(t_sample)}: {grid_path}")
        watched = _Watched(model, "bits/dim", sde, cfg.eval.eps, say, deadline, reverse=False,
                           batches=math.ceil(n_test / cfg.eval.batch_size))
        bpd = evaluate(watched, sde, cfg, data, device)["test_bpd"]
    except _OutOfTime as err:
        say(f"\nTIME LIMIT: {err}.{_load_text()} Set {MINUTES_ENV}=<minutes> to allow more time.")
        return 1
    t_eval = time.monotonic() - start - t_setup - t_train - t_sample
    loss_path = plot_losses(os.path.join(run_dir, "metrics.jsonl"), os.path.join(outdir, "loss.png"))

    baseline = D.digits_histogram_bpd()
    beats = bpd < baseline
    figures = {"steps": result.step, "steps_planned": target, "cut_short_by_time_limit": cut_short,
               "test_bpd": bpd, "baseline_bpd": baseline, "beats_baseline": beats, "pc_nfe": pc.nfe,
               "ode_nfe": ode.nfe, "threads": n_threads, "device": str(device), "quick": quick,
               "seconds_setup": round(t_setup, 1), "seconds_train": round(t_train, 1),
               "seconds_sample": round(t_sample, 1), "seconds_bpd": round(t_eval, 1),
               "seconds_total": round(time.monotonic() - start, 1),
               "estimated_seconds": {k: round(v, 1) for k, v in est.items()},
               "samples_png": grid_path, "loss_png": loss_path, "run_dir": run_dir}
    with open(os.path.join(outdir, "demo.json"), "w") as f:
        json.dump(figures, f, indent=1)
    verdict = "beats" if beats else "does NOT beat"
    say(f"\ntest bits/dim (probability-flow ODE, {n_test} digits): {bpd:.3f}")
    say(f"independent per-pixel histogram baseline:                {baseline:.3f}  -> the model {verdict} it")
    say(f"samples (left: {labels[0]} | middle: {labels[1]} | right: {labels[2]}"
        f"{'' if titles_drawable() else '; unlabelled: pip install scoresde[plot] for titles'}): {grid_path}")
    say(f"loss plot: {loss_path or 'skipped (pip install scoresde[plot])'}")
    say(f"checkpoints and metrics.jsonl: {run_dir}; figures: {os.path.join(outdir, 'demo.json')}")
    say(f"wall time {_fmt(figures['seconds_total'])} (set-up and timing {t_setup:.0f} s, train {t_train:.0f} s for "
        f"{result.step} steps, "
        f"sampling {t_sample:.0f} s, bits/dim {t_eval:.0f} s)")
    if quick:
        say("smoke run finished: the installation works (the numbers above are those of a 3-step model).")
        return 0
    if beats and cut_short:
        say(f"the model beats the baseline, but with {result.step} of {target} steps it is weaker than a full run "
            f"(1.84 bits/dim and recognisable digits on an idle 2-core machine)")
    if not beats:
        why = (f"training was cut to {result.step} of {target} steps by the time limit" if cut_short
               else f"{result.step} training steps were not enough" if result.step < DEMO_MIN_STEPS
               else "the training did not converge")
        say(f"FAILED: the model does not beat the baseline ({why}).")
        return 1
    return 0


# --------------------------------------------------------------------------------------------- timing
def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, repeats: int, warmup: int = 2) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def _measure_speed(cfg: C.Config, sde, shape: tuple, n_test: int, device) -> dict:
    """Seconds per training step, per sampling evaluation and per likelihood evaluation, on a throw-away copy of
    the network with random inputs (a second or two; the global random state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(torch.Generator().manual_seed(0).get_state())  # the throw-away network's weights
        model = build_model(cfg.model, sde, shape).to(device)
    loss_fn, gen = build_loss(cfg.loss), torch.Generator(device=device).manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-6)
    x = torch.randn(cfg.training.batch_size, *shape, generator=gen, device=device)

    def step():
        loss = loss_fn(model, sde, x, gen).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    xs = torch.randn(cfg.sampling.num_samples, *shape, generator=gen, device=device)
    ts = torch.full((xs.shape[0],), 0.5, device=device)

    def forward():
        with torch.no_grad():
            model(xs, ts)

    b = max(min(cfg.eval.batch_size, n_test), 1)
    xe = torch.randn(b, *shape, generator=gen, device=device)
    te = torch.full((b,), 0.5, device=device)

    def vjp():  # one Hutchinson evaluation: the score and a vector-Jacobian product
        xg = xe.clone().requires_grad_(True)
        torch.autograd.grad((model(xg, te) * xe).sum(), xg)

    return {"step": _timed(step, device, 3), "forward": _timed(forward, device, 3, warmup=1),
            "vjp": _timed(vjp, device, 2, warmup=1) / b}


def _estimate(cfg: C.Config, speed: dict, n_test: int) -> dict:
    """Estimated seconds of training, sampling and bits/dim from the measured speeds."""
    sc = cfg.sampling
    pc_nfe = sc.steps * (1 + (sc.corrector != "none")) + 1
    return {"train": cfg.training.steps * speed["step"] * 1.05,  # + data, logging, checkpoints
            "sample": (pc_nfe + _ODE_NFE_SAMPLE) * speed["forward"],
            "bpd": _ODE_NFE_LIKELIHOOD * n_test * speed["vjp"]}


def _fmt(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _load_text() -> str:
    try:
        one, _, _ = os.getloadavg()
    except (AttributeError, OSError):
        return ""
    return f" (load average {one:.1f} on {os.cpu_count()} CPUs)"


# --------------------------------------------------------------------------------------------- progress
def _without_rows(say):
    """The trainer's ``say`` for the demo: its JSON log rows are left out (:class:`_TrainWatch` shows progress)."""

    def filtered(message, *args, **kwargs):
        if not str(message).startswith('{"step"'):
            say(message, *args, **kwargs)

    return filtered


class _TrainWatch:
    """The trainer's ``on_step`` for the demo: a progress line (steps, mean loss, time elapsed and left) at
    most every few seconds, and with a deadline the re-planning that ends training in time for sampling and
    bits/dim.

    The seconds per step are re-measured over windows of about half a minute (starting from ``rate``, the
    speed measured before training; the first window's rate, which includes the trainer's own overheads,
    becomes the reference). ``slow`` = the latest rate over the reference (at least 1): the time kept back
    for sampling and bits/dim, ``reserve`` at the reference speed, grows by that factor. Training ends (the
    hook returns True) once the next step would not fit before ``deadline`` minus that reserve.
    """

    _WINDOW_SECONDS, _WINDOW_STEPS = 30.0, 20

    def __init__(self, total: int, say, *, deadline: float | None = None, reserve: float = 0.0, rate: float = 0.0):
        self.total, self.say, self.deadline, self.reserve = total, say, deadline, reserve
        self.rate = self.first = rate  # seconds per step: the latest window's, and the reference
        self.slow, self.elapsed, self.last = 1.0, 0.0, -math.inf
        self._window, self._measured, self._losses = (0, 0.0), False, []

    def __call__(self, step: int, loss: float, elapsed: float) -> bool:
        self.elapsed = elapsed
        self._losses.append(loss)
        s0, e0 = self._window
        if elapsed - e0 >= self._WINDOW_SECONDS and step - s0 >= self._WINDOW_STEPS:
            self.rate = (elapsed - e0) / (step - s0)
            if not self._measured:  # the first window sets the reference
                self._measured, self.first = True, max(self.rate, self.first)
            self._window = (step, elapsed)
        self.slow = max(self.rate / self.first, 1.0) if self.first > 0 else 1.0
        stop = False
        if self.deadline is not None and step < self.total:
            stop = self.deadline - time.monotonic() - self.reserve * self.slow < self.rate
        now = time.monotonic()
        if now - self.last >= _PROGRESS_SECONDS or step >= self.total or stop:
            self.last = now
            mean = sum(self._losses) / len(self._losses)
            self._losses = []
            left = elapsed / step * (self.total - step)
            self.say(f"  train: step {step}/{self.total} ({100 * step / self.total:.0f}%), loss {mean:.4g}, "
                     f"{_fmt(elapsed)} elapsed, ~{_fmt(left)} left")
        return stop


class _Watched:
    """A ``score_fn`` wrapper that reports progress (from the time ``t`` it is asked about) and enforces the
    demo's deadline; numerically it is the wrapped model."""

    def __init__(self, model, phase: str, sde, eps: float, say, deadline: float | None, *, reverse: bool,
                 batches: int = 1):
        self.model, self.phase, self.say, self.deadline, self.reverse = model, phase, say, deadline, reverse
        self.T, self.eps, self.batches = float(sde.T), float(eps), batches
        self.nfe, self.batch, self.prev_t = 0, 1, None
        self.started = self.last = time.monotonic()

    def __call__(self, x, t):
        now = time.monotonic()
        t0 = float(t.reshape(-1)[0])
        if self.prev_t is not None and not self.reverse and t0 < self.prev_t - 0.5 * (self.T - self.eps):
            self.batch += 1  # the likelihood ODE restarted from eps: the next batch
        self.prev_t, self.nfe = t0, self.nfe + 1
        if self.deadline is not None and now > self.deadline:
            raise _OutOfTime(f"the limit passed during {self.phase} after {self.nfe} evaluations")
        if now - self.last >= _PROGRESS_SECONDS:
            self.last = now
            frac = (self.T - t0) if self.reverse else (t0 - self.eps)
            frac = min(max(frac / (self.T - self.eps), 0.0), 1.0)
            batch = f"batch {self.batch}/{self.batches}, " if self.batches > 1 else ""
            self.say(f"  {self.phase}: {batch}t = {t0:.3f} ({100 * frac:.0f}% of this solve), {self.nfe} "
                     f"evaluations, {_fmt(now - self.started)}")
        return self.model(x, t)


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
