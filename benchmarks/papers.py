"""The four papers' claims, measured on the embedded 8×8 digits and on exact Gaussian-mixture oracles.

    python benchmarks/papers.py                       # the full run (make reproduce): < 1 h on 2 CPU cores
    python benchmarks/papers.py --quick --out /tmp/p  # every row at toy size (the test suite runs this)
    python benchmarks/papers.py --device cuda --scale 10   # a GPU: 10× the training steps and samples

Each row states a paper's claim, our figure with its standard error, and a verdict: ``agrees`` (the
measured ordering holds by more than two standard errors), ``disagrees`` (the opposite ordering does),
``inconclusive`` (neither), or ``measured`` (a figure with no ordering to check). Writes ``results.json``,
``results.md`` and the plots to ``--out`` (default: ``docs/results.md`` and ``docs/img/results_*.png``, the
full run only; quick runs never write into the repository).

Data: the demo's digits split (1500 train / 297 test, 17 levels; ``scoresde.data.load_digits``). Every
continuous model is the ``digits`` U-Net as an ε-network (score = −ε̂/σ(t), input 999 t) trained with the same
recipe (Adam 2e-3 with 100 warm-up steps, batch 64, clip 1, EMA 0.99) and the same seed, so that rows differ
only in what the row is about. VP / sub-VP models see data in [−1, 1], the VE model in [0, 1] with
σ_max = 10 (about the largest distance between two digits, as Song & Ermon 2020 advise). Bits/dim are upper
bounds on the 17-level codes, on the 297 test digits; paired differences use the same dequantisation noise
and Hutchinson probes. Sample quality is the offline digits FD (``scoresde.metrics.digits_quality``) with
its floor from the held-out real digits.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import time

import torch

import scoresde as sd
from scoresde import data as D
from scoresde.metrics import digits_quality
from scoresde.nn import MLPScoreNet, build_network

LEVELS = D.DIGITS_LEVELS
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


@dataclasses.dataclass(frozen=True)
class Scale:
    train_steps: int  # per continuous digits model
    discrete_steps: int  # DDPM training steps (benchmarks/discrete_digits.py)
    discrete_chain: int  # DDPM chain length N
    samples: int  # samples per FD figure
    seeds: int  # sampling seeds per ordering claim
    reference_seeds: int  # seeds of the PC-1000 reference (2000 evaluations a sample: the costliest figure)
    nfe: int  # the equal-NFE budget of the sampler comparison
    pc_reference_steps: int  # the PC baseline of the DPM-Solver++ row
    test_images: int  # test digits for bits/dim
    exact_images: int  # test digits for the exact-divergence row (64 VJPs per evaluation)
    tol: float  # ODE tolerance of the likelihood rows
    toy_steps: int  # SSM / DSM steps on the 2-D mixture
    langevin_n: int  # particles per Langevin run
    dequant_steps: int  # variational dequantiser training steps


#: ``make reproduce``: about 45 min on 2 idle CPU cores (see docs/results.md for the measured time). What was cut
#: to fit the hour: 2000 training steps per model (the demo uses 4000), 200 samples per FD, 2 seeds for the
#: PC-1000 reference, 8 test digits for the exact divergence, the DDPM at batch 64 (its benchmark's default is 128)
#: and without the discretised-decoder bound.
FULL = Scale(train_steps=2000, discrete_steps=1500, discrete_chain=1000, samples=200, seeds=3, reference_seeds=2,
             nfe=200, pc_reference_steps=1000, test_images=297, exact_images=8, tol=1e-4, toy_steps=2000,
             langevin_n=1000, dequant_steps=300)
QUICK = Scale(train_steps=4, discrete_steps=2, discrete_chain=50, samples=16, seeds=2, reference_seeds=2, nfe=8,
              pc_reference_steps=8, test_images=8, exact_images=2, tol=1e-2, toy_steps=4, langevin_n=64,
              dequant_steps=2)


def scaled(base: Scale, factor: float) -> Scale:
    """Scale the training steps and sample sizes by ``factor`` (a GPU does 10× in the same time)."""
    keep = {"seeds", "reference_seeds", "nfe", "pc_reference_steps", "discrete_chain", "tol", "test_images"}
    return Scale(**{k: (v if k in keep else max(1, round(v * factor))) for k, v in dataclasses.asdict(base).items()})


# ---------------------------------------------------------------------------------------------- models
SDES = {"vp": lambda: sd.VPSDE(), "subvp": lambda: sd.SubVPSDE(), "ve": lambda: sd.VESDE(sigma_max=10.0)}
SAMPLE_EPS = {"vp": 1e-3, "subvp": 1e-3, "ve": 1e-5}  # the papers' last sampling times
CENTERED = {"vp": True, "subvp": True, "ve": False}
#: The continuous digits models: name -> (SDE, loss weighting λ(t), importance sampling of t).
MODELS = {
    "vp_sigma2": ("vp", "sigma2", False),  # Score SDE's default weighting
    "vp_g2": ("vp", "likelihood", False),  # ScoreFlow's likelihood weighting
    "vp_g2_is": ("vp", "likelihood", True),  # ... with importance sampling
    "subvp_sigma2": ("subvp", "sigma2", False),
    "ve_sigma2": ("ve", "sigma2", False),
}
DISCRETE = ("beta", "learned_range")  # the DDPM's reverse variances: fixed β_t, learned


def to_model_space(levels: torch.Tensor, sde_name: str, generator) -> torch.Tensor:
    a, b = (2.0, -1.0) if CENTERED[sde_name] else (1.0, 0.0)
    return sd.uniform_dequantize(levels, levels=LEVELS, scale=a, shift=b, generator=generator)


def to_unit(x: torch.Tensor, sde_name: str) -> torch.Tensor:
    return ((x + 1) / 2 if CENTERED[sde_name] else x).clamp(0, 1)


def new_model(sde_name: str) -> sd.ScoreModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the same initial weights for every model (a script may seed; the library never does)
        net = build_network("digits")
    return sd.ScoreModel(net, SDES[sde_name](), parameterization="eps", noise_cond="999t")


def train_digits_model(name: str, steps: int, device: str) -> dict:
    """Train one continuous digits model of :data:`MODELS`; returns its EMA weights and the time taken."""
    torch.set_num_threads(1)
    sde_name, weighting, importance = MODELS[name]
    model = new_model(sde_name).to(device)
    ema = sd.EMA(model, decay=0.99)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator(device=device).manual_seed(1)
    train = D.load_digits("train", levels=True).to(device)
    start = time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = 2e-3 * min(1.0, (step + 1) / 100)
        rows = torch.randint(train.shape[0], (64,), generator=gen, device=device)
        y = to_model_space(train[rows], sde_name, gen)
        loss = sd.dsm_loss(model, model.sde, y, weighting=weighting, importance_sampling=importance,
                           generator=gen).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.update(model)
    return {"name": name, "state": {k: v.cpu() for k, v in ema.module.state_dict().items()},
            "seconds": time.perf_counter() - start}


def run_discrete(var: str, scale: Scale) -> dict:
    """The DDPM of benchmarks/discrete_digits.py with fixed (β_t) or learned variances."""
    import runpy

    torch.set_num_threads(1)
    main = runpy.run_path(os.path.join(HERE, "discrete_digits.py"))["main"]
    return main(["--steps", str(scale.discrete_steps), "--var", var, "--num-steps", str(scale.discrete_chain),
                 "--threads", "1", "--tol", str(scale.tol), "--test-images", str(scale.test_images),
                 "--batch", "64", "--no-discretized"])


def _job(job):
    """One job in a worker process: ``("train", args)``, ``("discrete", args)`` or ``("part", (name, states,
    scale, device))`` — a measurement of :data:`PARTS` on the trained models; returns (job, result, seconds)."""
    kind, payload = job
    torch.set_num_threads(1)
    start = time.perf_counter()
    if kind == "train":
        out = train_digits_model(*payload)
    elif kind == "discrete":
        out = run_discrete(*payload)
    else:
        name, states, scale, device = payload
        out = PARTS[name][0](load_models(states, device), scale, torch.device(device))
    return kind, payload[0], out, time.perf_counter() - start


def run_all(scale: Scale, workers: int, device: str) -> tuple[dict, dict, dict, dict]:
    """Train every model and measure every part of :data:`PARTS`, ``workers`` processes at a time (one torch
    thread each). Jobs start in a fixed order — the trainings first (they unlock the parts), then the longest
    jobs first — each as soon as the models it needs are trained. Returns (states, discrete results, part
    figures, seconds per job)."""
    order = ([("train", n) for n in MODELS] + [("part", "pc_reference")] + [("discrete", v) for v in DISCRETE]
             + [("part", n) for n in PARTS if n != "pc_reference"])
    states, results, seconds = {}, {"train": {}, "discrete": {}, "part": {}}, {}

    def needs(kind, name) -> set:
        return PARTS[name][1] if kind == "part" else set()

    def job(kind, name):
        if kind == "train":
            return kind, (name, scale.train_steps, device)
        if kind == "discrete":
            return kind, (name, scale)
        return kind, (name, {m: states[m] for m in PARTS[name][1]}, scale, device)

    def collect(kind, name, out, took):
        results[kind][name] = out
        if kind == "train":
            states[name] = out["state"]
        seconds[f"{kind} {name}"] = round(took, 1)
        print(f"  [{time.strftime('%H:%M:%S')}] {kind} {name}: {took:.0f} s", flush=True)

    if workers <= 1:
        for kind, name in order:  # the order already puts every part after the trainings
            collect(*_job(job(kind, name)))
        return states, results["discrete"], results["part"], seconds
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        running = []
        while order or running:
            while len(running) < workers:
                ready = next((j for j in order if needs(*j) <= set(states)), None)
                if ready is None:
                    break
                order.remove(ready)
                running.append(pool.apply_async(_job, (job(*ready),)))
            while not any(r.ready() for r in running):
                time.sleep(0.2)
            for r in [r for r in running if r.ready()]:
                running.remove(r)
                collect(*r.get())
    return states, results["discrete"], results["part"], seconds


def load_models(states: dict, device) -> dict:
    models = {}
    for name, state in states.items():
        model = new_model(MODELS[name][0])
        model.load_state_dict(state)
        models[name] = model.to(device).eval()
    return models


# ---------------------------------------------------------------------------------------------- statistics
def mean_se(values) -> tuple[float, float]:
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    se = float(v.std() / math.sqrt(v.numel())) if v.numel() > 1 else float("nan")
    return float(v.mean()), se


def verdict(diff: float, se: float) -> str:
    """``agrees`` when the claimed ordering (diff > 0) holds by more than 2 SE, ``disagrees`` when the
    opposite does, else ``inconclusive``."""
    if not math.isfinite(se):
        return "inconclusive"
    return "agrees" if diff > 2 * se else "disagrees" if diff < -2 * se else "inconclusive"


def row(paper: str, claim: str, measured: str, status: str, **figures) -> dict:
    return {"paper": paper, "claim": claim, "measured": measured, "verdict": status, "figures": figures}


# ---------------------------------------------------------------------------------------------- measurements
def sample_fd(sample, sde_name: str, seeds: int, device) -> tuple[list[float], float, int]:
    """FD of ``sample(generator) -> SampleResult`` over ``seeds`` seeds; (FDs, floor FD, NFE)."""
    fds, nfe, floor = [], 0, float("nan")
    for seed in range(seeds):
        res = sample(torch.Generator(device=device).manual_seed(100 + seed))
        q = digits_quality(to_unit(res.x.cpu(), sde_name))
        fds.append(q.samples.fd)
        nfe, floor = res.nfe, q.floor.fd
    return fds, floor, nfe


def samplers_at_equal_nfe(model, sde_name: str, scale: Scale, device) -> dict:
    """Ancestral, reverse diffusion, reverse diffusion + Langevin (PC) and the PF-ODE (Euler) at one NFE budget."""
    sde, eps, n = model.sde, SAMPLE_EPS[sde_name], scale.nfe
    shape = (scale.samples, 1, 8, 8)
    runs = {
        "ancestral": lambda g: sd.sample_ancestral(model, sde, shape, steps=n, eps=eps, generator=g, device=device),
        "reverse_diffusion": lambda g: sd.sample_pc(model, sde, shape, steps=n, corrector="none", eps=eps,
                                                    generator=g, device=device),
        "pc": lambda g: sd.sample_pc(model, sde, shape, steps=n // 2, eps=eps, generator=g, device=device),
        "ode_euler": lambda g: sd.sample_ode(model, sde, shape, method="euler", steps=n, eps=eps, generator=g,
                                             device=device),
    }
    out = {}
    for name, run in runs.items():
        fds, floor, nfe = sample_fd(run, sde_name, scale.seeds, device)
        out[name] = {"fd": fds, "nfe": nfe}
    out["floor"] = floor
    return out


def test_bpd(model, sde_name: str, levels: torch.Tensor, scale: Scale, *, divergence="rademacher",
             dequantizer=None) -> sd.NLLResult:
    a, b = (2.0, -1.0) if CENTERED[sde_name] else (1.0, 0.0)
    return sd.evaluate_nll(model, model.sde, [levels], levels=LEVELS, scale=a, shift=b, repeats=1,
                           divergence=divergence, dequantizer=dequantizer, rtol=scale.tol, atol=scale.tol,
                           generator=torch.Generator().manual_seed(7), progress=False)


def elbo_bpd(model, sde_name: str, levels: torch.Tensor, dequantizer=None, samples: int = 16) -> torch.Tensor:
    """Per-image bits/dim of the ScoreFlow bound −ELBO (importance-sampled, ``samples`` times per image).

    The dequantisation noise and the bound's draws of t and z come from two generators with fixed seeds, so
    two calls on the same digits use the same draws of t and z: their per-image differences are paired."""
    a, b = (2.0, -1.0) if CENTERED[sde_name] else (1.0, 0.0)
    noise, draws = torch.Generator().manual_seed(8), torch.Generator().manual_seed(12)

    def log_p(y):
        return -sd.nll_bound(model, model.sde, y, samples=samples, generator=draws)

    if dequantizer is None:
        u, log_q = torch.rand(levels.shape, generator=noise), None
    else:
        with torch.no_grad():
            u, log_q = dequantizer(levels, generator=noise)
    with torch.no_grad():
        logp = sd.dequantized_log_prob(log_p, levels, u, log_q, scale=a, shift=b, levels=LEVELS)
    return -logp / (levels[0].numel() * math.log(2))


def train_dequantizer(model, sde_name: str, train: torch.Tensor, steps: int) -> sd.VariationalDequantizer:
    """Fit q(u|x) by maximising the dequantised ELBO of the frozen model (Song et al. 2021b, Sec. 5)."""
    a, b = (2.0, -1.0) if CENTERED[sde_name] else (1.0, 0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        deq = sd.VariationalDequantizer(train[0].numel(), levels=LEVELS)
    model.requires_grad_(False)
    opt = torch.optim.Adam(deq.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(9)
    for _ in range(steps):
        x = train[torch.randint(train.shape[0], (64,), generator=gen)]
        u, log_q = deq(x, generator=gen)
        logp = sd.dequantized_log_prob(lambda y: -sd.nll_bound(model, model.sde, y, generator=gen), x, u, log_q,
                                       scale=a, shift=b, levels=LEVELS)
        opt.zero_grad(set_to_none=True)
        (-logp.mean()).backward()
        opt.step()
    return deq.eval()


def loss_spread(model, levels: torch.Tensor, importance: bool, batches: int = 8) -> tuple[float, float]:
    """Std of the per-sample likelihood-weighted loss (the ELBO integrand's noise), mean ± SE over batches."""
    gen = torch.Generator().manual_seed(11)
    stds = []
    with torch.no_grad():
        for _ in range(batches):
            y = to_model_space(levels, "vp", gen)
            stds.append(float(sd.dsm_loss(model, model.sde, y, weighting="likelihood",
                                          importance_sampling=importance, generator=gen).std()))
    return mean_se(stds)


def langevin_weights(annealed: bool, scale: Scale) -> list[float]:
    """NCSN Fig. 3 on the exact score: p = 0.2 N((−5,−5), I) + 0.8 N((5,5), I), particles started uniform on
    [−8, 8]²; annealed Langevin (σ 20 → 1, 10 levels × 100 steps, ε = 0.1) or plain Langevin on the score at
    σ = 1 (1000 steps, ε = 0.1). Returns the fraction of particles in the light mode, per seed."""
    mixture = sd.GaussianMixture([0.2, 0.8], [[-5.0, -5.0], [5.0, 5.0]], 1.0)
    sde = sd.VESDE(sigma_min=1.0, sigma_max=20.0)
    score = mixture.score_fn(sde)
    fractions = []
    for seed in range(max(scale.seeds, 3)):
        gen = torch.Generator().manual_seed(seed)
        z = torch.rand(scale.langevin_n, 2, generator=gen, dtype=torch.float64) * 16 - 8
        levels, steps = (10, 100) if annealed else (1, 1000)
        x = sd.sample_annealed_langevin(score, sde, (scale.langevin_n, 2), levels=levels, steps=steps, step_lr=0.1,
                                        eps=1e-6, z=z, generator=gen, dtype=torch.float64).x
        fractions.append(float((x.sum(1) < 0).double().mean()))
    return fractions


def toy_score_error(loss: str, scale: Scale) -> tuple[float, float, float]:
    """Train an MLP on the library's 2-D mixture with DSM or SSM (VP, λ = σ²); return the σ²-weighted
    Fisher divergence to the exact score (mean, SE over 4096 perturbed points) and seconds per step."""
    torch.set_num_threads(1)
    mixture, sde = D.toy_mixture(), sd.VPSDE()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = MLPScoreNet(2, hidden=128, layers=3)
    model = sd.ScoreModel(net, sde, parameterization="eps", noise_cond="999t")
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(3)
    data = mixture.sample(20000, generator=gen, dtype=torch.float32)
    fn = sd.dsm_loss if loss == "dsm" else sd.ssm_loss
    start = time.perf_counter()
    for _ in range(scale.toy_steps):
        x0 = data[torch.randint(data.shape[0], (256,), generator=gen)]
        value = fn(model, sde, x0, generator=gen).mean()
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
    per_step = (time.perf_counter() - start) / scale.toy_steps
    x0 = mixture.sample(4096, generator=gen)
    t = torch.rand(4096, generator=gen, dtype=torch.float64) * (1 - 1e-2) + 1e-2
    xt, std = _perturb(sde, x0, t, gen)
    with torch.no_grad():
        err = (model(xt.float(), t.float()).double() - mixture.score_fn(sde)(xt, t)).square().sum(1) * std**2
    return (*mean_se(err), per_step)


def _perturb(sde, x0, t, gen):
    """x_t = α(t) x0 + σ(t) z for (B, D) data, and σ(t)."""
    alpha, std = sde.marginal_coeffs(t)
    z = torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
    return alpha[:, None] * x0 + std[:, None] * z, std


# ---------------------------------------------------------------------------------------------- the parts
# Each part measures on the trained models in a worker process and returns plain figures; the rows are
# written from them afterwards (below).
def test_split(scale: Scale) -> torch.Tensor:
    return D.load_digits("test", levels=True)[: scale.test_images]


def part_pc_reference(models: dict, scale: Scale, device) -> dict:
    model = models["vp_g2_is"]
    run = lambda g: sd.sample_pc(model, model.sde, (scale.samples, 1, 8, 8),  # noqa: E731
                                 steps=scale.pc_reference_steps, generator=g, device=device)
    fds, floor, nfe = sample_fd(run, "vp", scale.reference_seeds, device)
    return {"fd": fds, "floor": floor, "nfe": nfe}


def part_scoreflow(models: dict, scale: Scale, device) -> dict:
    test, train = test_split(scale), D.load_digits("train", levels=True)
    ablation = {key: {"bound": elbo_bpd(models[key], "vp", test), "ode": test_bpd(models[key], "vp", test,
                                                                                  scale).per_sample_bpd}
                for key in ("vp_sigma2", "vp_g2", "vp_g2_is")}
    best = models["vp_g2_is"]
    deq = train_dequantizer(best, "vp", train, scale.dequant_steps)
    return {"ablation": ablation, "uniform": elbo_bpd(best, "vp", test),
            "variational": elbo_bpd(best, "vp", test, dequantizer=deq),
            "spread": (loss_spread(best, test, False), loss_spread(best, test, True))}


def part_samplers_vp(models: dict, scale: Scale, device) -> dict:
    return samplers_at_equal_nfe(models["vp_sigma2"], "vp", scale, device)


def part_samplers_ve(models: dict, scale: Scale, device) -> dict:
    return samplers_at_equal_nfe(models["ve_sigma2"], "ve", scale, device)


def part_dpm_and_divergence(models: dict, scale: Scale, device) -> dict:
    model, shape, out = models["vp_g2_is"], (scale.samples, 1, 8, 8), {}
    for steps in (10, 20, 50):
        run = lambda g, steps=steps: sd.sample_dpm_solver(model, model.sde, shape, steps=steps,  # noqa: E731
                                                          generator=g, device=device)
        fds, _, nfe = sample_fd(run, "vp", scale.seeds, device)
        out[f"dpm_{steps}"] = {"fd": fds, "nfe": nfe}
    sub = test_split(scale)[: scale.exact_images]
    out["exact"] = test_bpd(model, "vp", sub, scale, divergence="exact")
    out["hutchinson"] = test_bpd(model, "vp", sub, scale, divergence="rademacher")
    return out


def part_subvp_and_tolerance(models: dict, scale: Scale, device) -> dict:
    subvp = test_bpd(models["subvp_sigma2"], "subvp", test_split(scale), scale)
    model, curve = models["vp_sigma2"], []
    for tol in [1e-1, 1e-2, 1e-3, 1e-4, 1e-5][: 2 if scale == QUICK else 5]:
        run = lambda g, tol=tol: sd.sample_ode(model, model.sde, (scale.samples, 1, 8, 8), rtol=tol,  # noqa: E731
                                               atol=tol, generator=g, device=device)
        fds, floor, nfe = sample_fd(run, "vp", 1, device)
        curve.append({"tol": tol, "nfe": nfe, "fd": fds[0]})
    return {"subvp": subvp, "ode_tolerance": curve}


def part_ncsn(models: dict, scale: Scale, device) -> dict:
    return {"plain": langevin_weights(False, scale), "annealed": langevin_weights(True, scale),
            "dsm": toy_score_error("dsm", scale), "ssm": toy_score_error("ssm", scale)}


#: name -> (measurement, the models it needs). After the trainings, jobs start longest first in this order.
PARTS = {"pc_reference": (part_pc_reference, {"vp_g2_is"}),
         "samplers_vp": (part_samplers_vp, {"vp_sigma2"}),
         "samplers_ve": (part_samplers_ve, {"ve_sigma2"}),
         "scoreflow": (part_scoreflow, {"vp_sigma2", "vp_g2", "vp_g2_is"}),
         "subvp_and_tolerance": (part_subvp_and_tolerance, {"subvp_sigma2", "vp_sigma2"}),
         "dpm_and_divergence": (part_dpm_and_divergence, {"vp_g2_is"}),
         "ncsn": (part_ncsn, set())}


# ---------------------------------------------------------------------------------------------- the rows
def fmt(m: float, se: float, spec: str = ".3f") -> str:
    return f"{m:{spec}} ± {se:{spec}}"


def rows_score_sde(parts: dict) -> list:
    rows = []
    for sde_name in ("ve", "vp"):
        res = parts[f"samplers_{sde_name}"]
        diff = [p - c for p, c in zip(res["reverse_diffusion"]["fd"], res["pc"]["fd"], strict=True)]
        d, se = mean_se(diff)
        summary = ", ".join(f"{k} {fmt(*mean_se(v['fd']), '.2f')} ({v['nfe']} NFE)" for k, v in res.items()
                            if k != "floor")
        rows.append(row("Score SDE", f"{sde_name.upper()}: PC (predictor + Langevin corrector) beats the predictor "
                        "alone at equal score evaluations (Table 1)",
                        f"digits FD {summary}; floor {res['floor']:.2f}; predictor − PC = {fmt(d, se, '.2f')}",
                        verdict(d, se), fd_difference=d, se=se))
    vp, subvp = parts["scoreflow"]["ablation"]["vp_sigma2"]["ode"], parts["subvp_and_tolerance"]["subvp"]
    d, se = mean_se(vp - subvp.per_sample_bpd)
    rows.append(row("Score SDE", "sub-VP gives better bits/dim than VP with the same network and training (Table 2)",
                    f"ODE bits/dim VP {fmt(*mean_se(vp))}, sub-VP {fmt(subvp.bpd, subvp.bpd_stderr)}; "
                    f"VP − sub-VP = {fmt(d, se)} (paired)", verdict(d, se), vp=mean_se(vp)[0], subvp=subvp.bpd))
    curve = parts["subvp_and_tolerance"]["ode_tolerance"]
    monotone = all(a["nfe"] <= b["nfe"] for a, b in zip(curve, curve[1:], strict=False))
    rows.append(row("Score SDE", "the PF-ODE's adaptive solver trades evaluations for accuracy: NFE grows as the "
                    "tolerance tightens (Fig. 3)", "; ".join(f"tol {c['tol']:g}: {c['nfe']} NFE, FD {c['fd']:.2f}"
                                                            for c in curve),
                    "agrees" if monotone else "disagrees", curve=curve))
    return rows


def rows_scoreflow(parts: dict, scale: Scale) -> list:
    rows, sf = [], parts["scoreflow"]
    ablation = sf["ablation"]
    for measure, label in (("bound", "the ELBO bound"), ("ode", "the ODE bits/dim")):
        a = ablation["vp_sigma2"][measure] - ablation["vp_g2"][measure]
        b = ablation["vp_g2"][measure] - ablation["vp_g2_is"][measure]
        (da, sa), (db, sb) = mean_se(a), mean_se(b)
        text = ", ".join(f"{k} {fmt(*mean_se(v[measure]))}" for k, v in ablation.items())
        rows.append(row("ScoreFlow", f"likelihood weighting g² improves {label} over σ² weighting (Table 2)",
                        f"{text}; σ² − g² = {fmt(da, sa)} (paired)", verdict(da, sa)))
        rows.append(row("ScoreFlow", f"importance sampling of t improves {label} further (Table 2)",
                        f"g² − (g² + IS) = {fmt(db, sb)} (paired)", verdict(db, sb)))
    (mu, su), (mv, sv) = mean_se(sf["uniform"]), mean_se(sf["variational"])
    d, se = mean_se(torch.as_tensor(sf["uniform"]) - torch.as_tensor(sf["variational"]))
    rows.append(row("ScoreFlow", "variational dequantisation gives lower bits/dim than uniform dequantisation "
                    "(Table 2)", f"ELBO bits/dim uniform {fmt(mu, su)}, variational {fmt(mv, sv)} after "
                    f"{scale.dequant_steps} steps; difference {fmt(d, se)} (paired)", verdict(d, se)))
    (s0, e0), (s1, e1) = sf["spread"]
    d, se = s0 - s1, math.hypot(e0, e1)
    rows.append(row("ScoreFlow", "importance sampling reduces the variance of the likelihood-weighted loss (Sec. 4.2)",
                    f"per-sample loss std without IS {fmt(s0, e0, '.1f')}, with IS {fmt(s1, e1, '.1f')}",
                    verdict(d, se), ratio=s0 / s1))
    return rows


def rows_ncsn(parts: dict) -> list:
    truth, ncsn = 0.2, parts["ncsn"]
    plain, annealed = mean_se(ncsn["plain"]), mean_se(ncsn["annealed"])
    err_plain, err_annealed = abs(plain[0] - truth), abs(annealed[0] - truth)
    d, se = err_plain - err_annealed, math.hypot(plain[1], annealed[1])
    rows = [row("NCSN", "annealed Langevin dynamics recovers the mixture weights; plain Langevin does not (Fig. 3)",
                f"light-mode weight (truth 0.2): plain {fmt(*plain)}, annealed {fmt(*annealed)}", verdict(d, se),
                plain=plain, annealed=annealed)]
    dsm, ssm = ncsn["dsm"], ncsn["ssm"]
    ratio = ssm[0] / dsm[0]
    rows.append(row("NCSN", "sliced and denoising score matching both learn the score; DSM is cheaper per step "
                    "(Sec. 3)", f"σ²-weighted Fisher divergence to the exact score: DSM {fmt(dsm[0], dsm[1], '.4f')},"
                    f" SSM {fmt(ssm[0], ssm[1], '.4f')} (ratio {ratio:.2f}); {1e3 * dsm[2]:.1f} vs "
                    f"{1e3 * ssm[2]:.1f} ms per step", "agrees" if 0.5 < ratio < 2 and ssm[2] > dsm[2] else "disagrees",
                    dsm=dsm, ssm=ssm))
    return rows


def rows_discrete(discrete: dict) -> list:
    fixed, learned = discrete["beta"], discrete["learned_range"]
    (bf, sf), (bl, sl) = fixed["vlb_dequantized"], learned["vlb_dequantized"]
    base = fixed["baseline"]
    return [row("Sohl-Dickstein 2015 / DDPM", "the diffusion chain's variational bound is a useful density bound "
                "on real data: below the per-pixel histogram baseline", f"bound {fmt(bf, sf)} vs baseline "
                f"{base:.3f} bits/dim", verdict(base - bf, sf)),
            row("Sohl-Dickstein 2015 / DDPM", "learned reverse variances give a better bound than fixed β_t",
                f"fixed {fmt(bf, sf)}, learned {fmt(bl, sl)}", verdict(bf - bl, math.hypot(sf, sl))),
            row("Score SDE / DDPM", "the probability-flow ODE of the same ε-network gives a likelihood at least "
                "as good as the DDPM bound", f"ODE {fmt(*fixed['ode'])}, bound {fmt(bf, sf)}, ODE − bound "
                f"{fmt(*fixed['ode_minus_vlb_dequantized'])} (paired)",
                verdict(-fixed["ode_minus_vlb_dequantized"][0], fixed["ode_minus_vlb_dequantized"][1]))]


def rows_beyond(parts: dict) -> list:
    pc, dpm = parts["pc_reference"], parts["dpm_and_divergence"]
    texts = [f"DPM-Solver++ {dpm[k]['nfe']} NFE {fmt(*mean_se(dpm[k]['fd']), '.2f')}" for k in ("dpm_10", "dpm_20",
                                                                                                 "dpm_50")]
    (m_dpm, s_dpm), (m_pc, s_pc) = mean_se(dpm["dpm_20"]["fd"]), mean_se(pc["fd"])
    d, se = m_dpm - m_pc, math.hypot(s_dpm, s_pc)  # different seeds: independent, not paired
    rows = [row("beyond the papers", f"DPM-Solver++ with 20 evaluations matches PC with {pc['nfe']}",
                f"digits FD: {'; '.join(texts)}; PC {fmt(m_pc, s_pc, '.2f')} ({pc['nfe']} NFE, "
                f"{len(pc['fd'])} seeds); floor {pc['floor']:.2f}; DPM(20) − PC = {fmt(d, se, '.2f')}",
                "agrees" if d < 2 * se else "disagrees")]
    exact, hutch = dpm["exact"], dpm["hutchinson"]
    d, se = mean_se(hutch.per_sample_bpd - exact.per_sample_bpd)
    rows.append(row("beyond the papers", "Hutchinson's estimator leaves the reported bits/dim unbiased: exact and "
                    "Rademacher divergence agree", f"{exact.per_sample_bpd.numel()} test digits: exact "
                    f"{fmt(exact.bpd, exact.bpd_stderr)}, Rademacher {fmt(hutch.bpd, hutch.bpd_stderr)}; "
                    f"difference {fmt(d, se)}",
                    "agrees" if abs(d) <= 2 * se else "disagrees"))
    return rows


def plot_data(parts: dict) -> dict:
    dpm = parts["dpm_and_divergence"]
    return {"samplers_ve": parts["samplers_ve"], "samplers_vp": parts["samplers_vp"],
            "ode_tolerance": parts["subvp_and_tolerance"]["ode_tolerance"],
            "ablation": {k: {m: mean_se(v) for m, v in d.items()} for k, d in parts["scoreflow"]["ablation"].items()},
            "dpm_vs_pc": {"pc": mean_se(parts["pc_reference"]["fd"]),
                          **{k: mean_se(dpm[k]["fd"]) for k in ("dpm_10", "dpm_20", "dpm_50")}}}


# ---------------------------------------------------------------------------------------------- output
#: Everything below this line of docs/results.md is the hand-written reading of the run; regenerating the page
#: keeps it (and it says which run it read).
DISCUSSION = "<!-- discussion: written by hand, kept when the page is regenerated -->"
PLOTS = {"results_samplers.png": "digits FD by sampler at equal score evaluations (VE, VP)",
         "results_ode_tolerance.png": "PF-ODE score evaluations and FD against the solver tolerance",
         "results_scoreflow.png": "ScoreFlow's weighting ablation (bits/dim) and DPM-Solver++ against PC"}


def markdown(report: dict, discussion: str = "", image_dir: str = "") -> str:
    """The results page: the run, what was cut to fit the hour, the seeds, one row per claim, the plots; then
    ``discussion`` (the hand-written part after :data:`DISCUSSION`, if any)."""
    m, z = report["machine"], report["sizes"]
    size = "quick (toy) sizes: a smoke run, not evidence" if report["quick"] else f"scale {report['scale']:g}"
    lines = ["# The papers' claims, reproduced", "",
             f"Run of {m['date']} on {m['device']} ({m['cpu']}, {m['threads']} torch thread per process, "
             f"{m['workers']} processes), torch {m['torch']}, {m['seconds']:.0f} s in all "
             f"({m['seconds'] / 60:.1f} min); {size}; load average {m.get('load', '?')} at the start / end.",
             "Generated by `make reproduce` (benchmarks/papers.py); every figure is mean ± standard error. "
             "Verdicts: *agrees* when the claimed ordering holds by more than 2 SE, *disagrees* when the opposite "
             "does, *inconclusive* otherwise.", "",
             f"**Sizes.** {z['train_steps']} training steps per continuous model and {z['discrete_steps']} per DDPM "
             f"(N = {z['discrete_chain']}); {z['samples']} samples per FD; {z['seeds']} sampling seeds per "
             f"ordering ({z['reference_seeds']} for the PC-{z['pc_reference_steps']} reference); the sampler "
             f"comparison at {z['nfe']} score evaluations; bits/dim on {z['test_images']} test digits at ODE "
             f"tolerance {z['tol']:g}; the exact divergence on {z['exact_images']}. These are what was cut to fit "
             "the hour on 2 CPU cores; on a GPU, `python benchmarks/papers.py --device cuda --scale 10` multiplies "
             "the training steps and sample counts by 10.", "",
             "**Seeds.** Every model starts from the same initial weights (seed 0) and is trained on the same "
             "batches (seed 1); sampling seeds 100, 101, ...; the test-set likelihoods share dequantisation noise "
             "and Hutchinson probes (seed 7), so model differences are paired; the Langevin rows use seeds 0, 1, "
             "2 on the exact mixture score. Data: the digits split of `scoresde.data.load_digits` (1500 train / "
             "297 test).", "",
             "| paper | claim | measured | verdict |", "|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['paper']} | {r['claim']} | {r['measured']} | **{r['verdict']}** |")
    lines.append("")
    for path in report.get("plots", []):
        name = os.path.basename(path)
        lines += [f"![{PLOTS.get(name, name)}]({image_dir}{name})", ""]
    seconds = report["extra"].get("job_seconds", {})
    if seconds:
        lines += [f"Jobs ({m['workers']} at a time), seconds each: "
                  + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()) + ".", ""]
    if discussion:
        lines += [DISCUSSION, discussion.strip("\n"), ""]
    return "\n".join(lines)


def kept_discussion(path: str) -> str:
    """The hand-written part of an existing results page (after :data:`DISCUSSION`), or ''."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return ""
    return text.split(DISCUSSION, 1)[1] if DISCUSSION in text else ""


def plots(extra: dict, out_img: str) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    for ax, sde_name in zip(axes, ("ve", "vp"), strict=True):
        res = extra[f"samplers_{sde_name}"]
        names = [k for k in res if k != "floor"]
        stats = [mean_se(res[k]["fd"]) for k in names]
        ax.bar(names, [s[0] for s in stats], yerr=[s[1] for s in stats], color="tab:blue")
        ax.axhline(res["floor"], color="k", ls="--", lw=1, label="real digits (floor)")
        ax.set_title(f"{sde_name.upper()}: {res[names[0]]['nfe']} score evaluations")
        ax.tick_params(axis="x", rotation=20)
    axes[0].set_ylabel("digits FD (lower is better)")
    axes[0].legend()
    fig.tight_layout()
    paths.append(os.path.join(out_img, "results_samplers.png"))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    curve = extra["ode_tolerance"]
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.semilogx([c["tol"] for c in curve], [c["nfe"] for c in curve], "o-", label="NFE")
    ax.set_xlabel("rtol = atol")
    ax.set_ylabel("score evaluations")
    ax2 = ax.twinx()
    ax2.semilogx([c["tol"] for c in curve], [c["fd"] for c in curve], "s--", color="tab:red")
    ax2.set_ylabel("digits FD", color="tab:red")
    ax.set_title("VP probability-flow ODE (dopri5)")
    fig.tight_layout()
    paths.append(os.path.join(out_img, "results_ode_tolerance.png"))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9, 3.2))
    keys = list(extra["ablation"])
    for j, (measure, label) in enumerate((("bound", "ELBO bound"), ("ode", "PF-ODE"))):
        stats = [extra["ablation"][k][measure] for k in keys]
        ax.bar([i + 0.4 * j for i in range(len(keys))], [s[0] for s in stats], width=0.4,
               yerr=[s[1] for s in stats], label=label)
    ax.set_xticks([i + 0.2 for i in range(len(keys))], ["σ²", "g²", "g² + IS"])
    lo = min(v[0] - 2 * v[1] for d in extra["ablation"].values() for v in d.values())
    ax.set_ylim(bottom=max(0.0, lo - 0.1))
    ax.set_ylabel("test bits/dim (lower is better)")
    ax.set_title("ScoreFlow: loss weighting (VP)")
    ax.legend()
    dpm = extra["dpm_vs_pc"]
    names = [k for k in dpm if k != "pc"] + ["pc"]
    bx.bar([n.replace("dpm_", "DPM++ ").replace("pc", "PC reference") for n in names], [dpm[n][0] for n in names],
           yerr=[dpm[n][1] for n in names], color="tab:green")
    bx.set_ylabel("digits FD (lower is better)")
    bx.set_title("DPM-Solver++ (NFE) against PC")
    fig.tight_layout()
    paths.append(os.path.join(out_img, "results_scoreflow.png"))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="toy sizes: checks that every row runs (not evidence)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply training steps and sample counts (GPU: 10)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--workers", type=int, default=None, help="processes at once (default 2, quick 1)")
    p.add_argument("--out", default=None, help="folder for results.json/.md and plots (default docs/, full run)")
    p.add_argument("--render", default=None, metavar="JSON",
                   help="write the page and plots again from a run's results.json (no measurement)")
    args = p.parse_args(argv)
    if args.render:
        with open(args.render) as f:
            return write_report(json.load(f), args.out)
    if args.quick and args.out is None:
        raise SystemExit("benchmarks/papers.py: error: --quick needs --out (quick runs never write into docs/)")
    if args.scale <= 0:
        raise SystemExit(f"benchmarks/papers.py: error: --scale must be > 0, got {args.scale}")
    scale = QUICK if args.quick else scaled(FULL, args.scale)
    workers = args.workers or (1 if args.quick else 2)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    start, load = time.perf_counter(), os.getloadavg()[0]
    try:
        _, discrete, parts, seconds = run_all(scale, workers, args.device)
        all_rows = (rows_score_sde(parts) + rows_scoreflow(parts, scale) + rows_ncsn(parts) + rows_discrete(discrete)
                    + rows_beyond(parts))
        extra = {**plot_data(parts), "discrete": discrete, "job_seconds": seconds}
    finally:
        torch.set_num_threads(before)
    machine = {"date": time.strftime("%Y-%m-%d"), "device": args.device, "cpu": _cpu(), "threads": 1,
               "workers": workers, "torch": torch.__version__, "seconds": time.perf_counter() - start,
               "load": f"{load:.1f} / {os.getloadavg()[0]:.1f}"}
    report = {"machine": machine, "quick": args.quick, "scale": args.scale, "sizes": dataclasses.asdict(scale),
              "rows": all_rows, "extra": _jsonable(extra)}
    return write_report(report, args.out)


def write_report(report: dict, out: str | None) -> dict:
    """Write results.json, the page (keeping its hand-written discussion) and the plots; to ``out``, or for a
    full run docs/results.md, docs/img/results_*.png and benchmarks/results/papers.json."""
    out_md = os.path.join(out, "results.md") if out else os.path.join(REPO, "docs", "results.md")
    out_img = out or os.path.join(REPO, "docs", "img")
    out_json = os.path.join(out, "results.json") if out else os.path.join(HERE, "results", "papers.json")
    for path in (out_md, out_json):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    report["plots"] = plots(report["extra"], out_img)
    with open(out_json, "w") as f:
        json.dump(report, f, indent=1)
    page = markdown(report, kept_discussion(out_md), "" if out else "img/")
    with open(out_md, "w") as f:
        f.write(page)
    print(page)
    return report


def _jsonable(v):
    if isinstance(v, torch.Tensor):
        return v.tolist()
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


if __name__ == "__main__":
    main()
