"""The pieces :mod:`scoresde.train` composes: config → objects, deterministic batches, sampling and evaluation.

Builders translate one config section into plain keyword calls; nothing below them sees a whole config.
"""

from __future__ import annotations

import functools
import math
import os

import torch
from torch import Tensor, nn

from scoresde import config as C
from scoresde import data as D
from scoresde import sampling as S
from scoresde._checks import batch_dim
from scoresde._ode import FIXED

_MASK = (1 << 63) - 1


# --------------------------------------------------------------------------------------------- builders
def build_sde(cfg: C.SDEConfig):
    """The SDE named by ``cfg`` (vp | subvp | ve)."""
    from scoresde.sde import VESDE, VPSDE, SubVPSDE

    table = {
        "vp": lambda: VPSDE(cfg.beta_min, cfg.beta_max),
        "subvp": lambda: SubVPSDE(cfg.beta_min, cfg.beta_max),
        "ve": lambda: VESDE(cfg.sigma_min, cfg.sigma_max),
    }
    if cfg.name not in table:
        raise C.ConfigError(f"unknown sde.name {cfg.name!r}; choose one of {sorted(table)}")
    return table[cfg.name]()


def build_model(cfg: C.ModelConfig, sde, data_shape: tuple) -> nn.Module:
    """Network preset ``cfg.network`` (with ``cfg.options``) wrapped into a score model ``forward(x, t)``.

    The MLP preset gets ``dim`` from the data shape unless the options name it.
    """
    from scoresde.nn.presets import build_network
    from scoresde.score import ScoreModel

    options = dict(cfg.options)
    if cfg.network == "mlp":
        options.setdefault("dim", int(torch.Size(data_shape).numel()))
    try:
        net = build_network(cfg.network, **options)
    except ValueError as err:
        raise C.ConfigError(f"model.network={cfg.network!r}: {err}") from err
    return ScoreModel(net, sde, parameterization=cfg.parameterization, noise_cond=cfg.noise_cond,
                      discrete_steps=cfg.discrete_steps or None)


def build_loss(cfg: C.LossConfig):
    """``loss_fn(score_fn, sde, x0, generator) -> (B,)`` for the loss named by ``cfg``."""
    from scoresde import losses

    table = {
        "dsm": functools.partial(losses.dsm_loss, weighting=cfg.weighting,
                                 importance_sampling=cfg.importance_sampling, eps=cfg.eps),
        "ssm": functools.partial(losses.ssm_loss, weighting=cfg.weighting, eps=cfg.eps),
        "smld": functools.partial(losses.smld_loss, num_scales=cfg.num_scales, eps=cfg.eps),
        "ddpm": functools.partial(losses.ddpm_loss, num_steps=cfg.num_steps),
    }
    if cfg.name not in table:
        raise C.ConfigError(f"unknown loss.name {cfg.name!r}; choose one of {sorted(table)}")
    fn = table[cfg.name]

    def loss_fn(score_fn, sde, x0, generator):
        return fn(score_fn, sde, x0, generator=generator)

    return loss_fn


# --------------------------------------------------------------------------------------------- batches
def make_generator(seed: int, step: int, chunk: int, *, device="cpu", stream: int = 0) -> torch.Generator:
    """A generator seeded from (seed, step, chunk, stream) by a fixed integer hash (SplitMix64 finaliser)."""
    z = (seed * 0x9E3779B97F4A7C15 + (step + 3) * 0xBF58476D1CE4E5B9 + chunk * 0x94D049BB133111EB + stream) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return torch.Generator(device=device).manual_seed(z ^ (z >> 31))


@functools.lru_cache(maxsize=4)
def _epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    return torch.randperm(n, generator=make_generator(seed, epoch, 0, stream=2))


def batch_rows(source, step: int, chunk: int, micro: int, chunks: int, seed: int) -> Tensor:
    """Rows of chunk ``chunk`` (of ``chunks`` per step) of step ``step``: positions
    ``[(step·chunks + chunk)·micro, +micro)`` of the concatenation of per-epoch permutations.

    A position only depends on the global row index, so the split of a step's batch into processes and
    micro-batches does not change which rows it sees. ``source``: a tensor ``(N, ...)`` or a Dataset of (x, label).
    """
    n = len(source)
    if n == 0:
        raise ValueError("the training data set is empty")
    start = (step * chunks + chunk) * micro
    positions = torch.arange(start, start + micro)
    epochs, offsets = positions // n, positions % n
    index = torch.stack([_epoch_permutation(n, seed, int(e))[o] for e, o in zip(epochs, offsets, strict=True)])
    if isinstance(source, Tensor):
        return source[index]
    return torch.stack([source[int(i)][0] for i in index])


def prepare_batch(rows: Tensor, cfg: C.DataConfig, levels: int | None, generator: torch.Generator) -> Tensor:
    """Unit-space rows → model space: dequantise (discrete data), flip (images), scale to [−1, 1] if centred.

    Continuous (toy) data are used as they are.
    """
    x = rows.float()
    if levels is None:
        return x
    if cfg.dequantize:
        x = D.dequantize(x, levels, generator=generator)
    if cfg.random_flip and x.ndim == 4:
        x = D.random_flip(x, generator=generator)
    return D.get_scaler(cfg.centered)(x)


# --------------------------------------------------------------------------------------------- sampling
def _pc(score_fn, sde, shape, cfg, **common):
    return S.sample_pc(score_fn, sde, shape, steps=cfg.steps, predictor=cfg.predictor, corrector=cfg.corrector,
                       snr=cfg.snr, corrector_steps=cfg.corrector_steps, **common)


def _euler_maruyama(score_fn, sde, shape, cfg, **common):
    return S.sample_euler_maruyama(score_fn, sde, shape, steps=cfg.steps, **common)


def _ancestral(score_fn, sde, shape, cfg, **common):
    return S.sample_ancestral(score_fn, sde, shape, steps=cfg.steps, **common)


def _annealed_langevin(score_fn, sde, shape, cfg, **common):
    return S.sample_annealed_langevin(score_fn, sde, shape, levels=cfg.levels, steps=cfg.steps, step_lr=cfg.step_lr,
                                      **common)


def _dpm_solver(score_fn, sde, shape, cfg, **common):
    return S.sample_dpm_solver(score_fn, sde, shape, steps=cfg.steps, order=cfg.order, grid=cfg.grid, **common)


def _ode(score_fn, sde, shape, cfg, *, progress, **common):
    fixed = cfg.solver in FIXED
    callback = _TimeBar(sde, cfg.eps) if progress else None
    try:
        return S.sample_ode(score_fn, sde, shape, method=cfg.solver, rtol=cfg.rtol, atol=cfg.atol,
                            steps=cfg.steps if fixed else None, callback=callback, **common)
    finally:
        if callback is not None:
            callback.close()


#: ``sampling.method`` → sampler; each reads its own fields of :class:`~scoresde.config.SamplingConfig`.
SAMPLERS = {
    "pc": _pc,  # Song et al. 2021, Algorithm 1
    "euler_maruyama": _euler_maruyama,  # reverse SDE, Song et al. 2021, eq. 6
    "ancestral": _ancestral,  # DDPM / SMLD ancestral sampling
    "annealed_langevin": _annealed_langevin,  # NCSN, Song & Ermon 2019, Algorithm 1: L levels × T steps
    "dpm_solver": _dpm_solver,  # DPM-Solver++ multistep, Lu et al. 2022b
    "ode": _ode,  # probability-flow ODE, Song et al. 2021, eq. 13
}


def draw_samples(score_fn, sde, cfg: C.SamplingConfig, shape: tuple, *, generator, device, progress: bool = False):
    """``SampleResult`` of the sampler ``cfg.method`` (one of :data:`SAMPLERS`) with the fields of ``cfg``.

    ``progress`` shows a bar on stderr: steps for the step-based samplers, the time reached for an adaptive ODE.
    """
    if cfg.method not in SAMPLERS:
        raise C.ConfigError(f"unknown sampling.method {cfg.method!r}; choose one of {sorted(SAMPLERS)}")
    with torch.no_grad():
        return SAMPLERS[cfg.method](score_fn, sde, shape, cfg, eps=cfg.eps, generator=generator, device=device,
                                    progress=progress)


def sampler_evaluations(cfg: C.SamplingConfig) -> int | None:
    """Score evaluations the sampler of ``cfg`` makes (None for the ODE: its solver decides)."""
    m = cfg.method
    if m == "pc":
        per_step = (cfg.predictor != "none") + (cfg.corrector != "none") * cfg.corrector_steps
        return cfg.steps * per_step + 1  # + 1: the final Tweedie denoising step
    if m in ("euler_maruyama", "ancestral"):
        return cfg.steps + 1
    if m == "annealed_langevin":
        return cfg.levels * cfg.steps  # NCSN returns the last iterate, no denoising step
    if m == "dpm_solver":
        return cfg.steps
    return None


def describe_sampler(cfg: C.SamplingConfig) -> str:
    """One line saying which sampler ``cfg`` runs and how many score evaluations it costs."""
    m, nfe = cfg.method, sampler_evaluations(cfg)
    cost = f"{nfe} score evaluations" if nfe is not None else "the solver decides the number of score evaluations"
    if m == "pc":
        what = (f"predictor-corrector sampler (predictor {cfg.predictor}, corrector {cfg.corrector}, "
                f"snr {cfg.snr}), {cfg.steps} steps")
    elif m in ("euler_maruyama", "ancestral"):
        what = f"{m.replace('_', '-')} sampler, {cfg.steps} steps"
    elif m == "annealed_langevin":
        what = f"annealed Langevin dynamics, {cfg.levels} noise levels × {cfg.steps} steps (step_lr {cfg.step_lr})"
    elif m == "dpm_solver":
        what = f"DPM-Solver++ of order {cfg.order}, {cfg.steps} steps on the {cfg.grid} grid"
    else:
        what = f"probability-flow ODE ({cfg.solver}, rtol {cfg.rtol}, atol {cfg.atol})"
    return f"{what}, {cost}"


class _TimeBar:
    """An ODE callback drawing how far the integration has come from T down to eps."""

    def __init__(self, sde, eps: float):
        from tqdm.auto import tqdm

        self.T, self.eps = float(sde.T), float(eps)
        self.bar = tqdm(total=1000, desc="probability-flow ODE", leave=False,
                        bar_format="{l_bar}{bar}| {elapsed}{postfix}")
        self.calls = 0

    def __call__(self, i, t, x, x_mean):
        self.calls += 1
        done = int(1000 * (self.T - float(t[0])) / (self.T - self.eps))
        self.bar.set_postfix(t=f"{float(t[0]):.4f}", nfe=self.calls, refresh=False)
        self.bar.update(max(0, min(done, 1000) - self.bar.n))

    def close(self):
        self.bar.close()


def save_samples(model: nn.Module, sde, cfg: C.Config, data, step: int, device) -> str:
    """Sample ``cfg.sampling.num_samples`` points with the EMA model; save an image grid or a 2-D scatter."""
    n = cfg.sampling.num_samples
    gen = make_generator(cfg.training.seed, step, 0, device=device, stream=3)
    x = draw_samples(model, sde, cfg.sampling, (n, *data.shape), generator=gen, device=device).x.cpu()
    stem = os.path.join(cfg.training.workdir, f"samples_{step:09d}")
    if data.levels is None:
        torch.save(x, stem + ".pt")
        return scatter_png(x, stem + ".png") or stem + ".pt"
    return save_image_grid(D.get_inverse_scaler(cfg.data.centered)(x), stem + ".png")


#: Images smaller than this many pixels a side are enlarged (nearest neighbour) in saved grids.
MIN_SIDE = 32


def save_image_grid(images: Tensor, path: str) -> str:
    """Save images ``(B, C, H, W)`` in [0, 1] as one square grid, enlarged by an integer factor (nearest
    neighbour) until each image is at least :data:`MIN_SIDE` pixels a side, so that 8×8 digits are readable.
    The drawing is the demo's (:func:`scoresde.demo.save_side_by_side` with one panel)."""
    from scoresde.demo import save_side_by_side

    upscale = max(1, math.ceil(MIN_SIDE / min(images.shape[-2:])))
    return save_side_by_side([images.clamp(0, 1)], path, upscale=upscale)


def scatter_png(x: Tensor, path: str) -> str | None:
    """Scatter plot of 2-D points (needs matplotlib, the ``plot`` extra); None without it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(x[:, 0], x[:, 1], s=2)
    ax.set_aspect("equal")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------- evaluation
def evaluate(model: nn.Module, sde, cfg: C.Config, data, device, *, progress: bool = False) -> dict:
    """Test-set log-likelihood via the probability-flow ODE: bits/dim for discrete data, NLL (nats) otherwise.

    Returns the mean (``test_bpd`` or ``test_nll``), its standard error over the test points (``*_se``: the
    sample standard deviation / sqrt(n); it includes the trace estimator's noise) and ``n``.
    """
    from tqdm.auto import tqdm

    from scoresde.likelihood import log_likelihood

    ec = cfg.eval
    test = data.test if ec.num_samples == 0 else data.test[: ec.num_samples]
    # the same dequantisation noise and probes at every evaluation
    gen = make_generator(cfg.training.seed, 0, 0, stream=4)
    probe_gen = make_generator(cfg.training.seed, 0, 0, device=device, stream=5)
    logps = []
    with tqdm(total=test.shape[0], desc="likelihood", unit="pt", disable=not progress, leave=False) as bar:
        for start in range(0, test.shape[0], ec.batch_size):
            x = test[start:start + ec.batch_size].float()
            if data.levels is not None:
                x = D.get_scaler(cfg.data.centered)(D.dequantize(x, data.levels, generator=gen))
            res = log_likelihood(model, sde, x.to(device), divergence=ec.divergence, probes=ec.probes, eps=ec.eps,
                                 rtol=ec.rtol, atol=ec.atol, generator=probe_gen)
            logps.append(res.logp.detach().double().cpu())
            bar.update(x.shape[0])
    logp = torch.cat(logps)
    if data.levels is None:
        name, values = "test_nll", -logp
    else:
        scale = 2.0 if cfg.data.centered else 1.0
        name, values = "test_bpd", D.discrete_bits_per_dim(logp, batch_dim(test), levels=data.levels, scale=scale)
    n = values.shape[0]
    se = float(values.std() / math.sqrt(n)) if n > 1 else math.nan
    return {name: float(values.mean()), f"{name}_se": se, "n": n}


def baseline(cfg: C.Config, data) -> tuple[str, float] | None:
    """A reference value for :func:`evaluate`'s figure on this data set, with what it is, or None.

    Digits: the bits/dim of independent per-pixel histograms (:func:`scoresde.data.digits_histogram_bpd`),
    which a model must beat. The 2-D mixture: the exact NLL of its test points under the true density
    (:func:`scoresde.data.toy_mixture`), the best any model can reach.
    """
    if cfg.data.name == "digits":
        return "per-pixel histogram baseline (a model must beat it)", D.digits_histogram_bpd()
    if cfg.data.name == "mixture" and data.test is not None:
        test = data.test if cfg.eval.num_samples == 0 else data.test[: cfg.eval.num_samples]
        return "exact NLL of these test points under the true mixture (the best reachable)", \
            float(-D.toy_mixture().log_prob(test.double()).mean())
    return None
