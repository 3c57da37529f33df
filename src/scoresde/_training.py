"""The pieces :mod:`scoresde.train` composes: config → objects, deterministic batches, sampling and evaluation.

Builders translate one config section into plain keyword calls; nothing below them sees a whole config.
"""

from __future__ import annotations

import functools
import os

import torch
from torch import Tensor, nn

from scoresde import config as C
from scoresde import data as D
from scoresde._checks import batch_dim

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
def draw_samples(score_fn, sde, cfg: C.SamplingConfig, shape: tuple, *, generator, device):
    """``SampleResult`` from the PC sampler or the probability-flow ODE, as ``cfg.method`` says."""
    from scoresde.sampling import sample_ode, sample_pc

    with torch.no_grad():
        if cfg.method == "pc":
            return sample_pc(score_fn, sde, shape, steps=cfg.steps, predictor=cfg.predictor, corrector=cfg.corrector,
                             snr=cfg.snr, eps=cfg.eps, generator=generator, device=device)
    if cfg.method == "ode":
        return sample_ode(score_fn, sde, shape, eps=cfg.eps, rtol=cfg.rtol, atol=cfg.atol, generator=generator,
                          device=device)
    raise C.ConfigError(f"unknown sampling.method {cfg.method!r}; choose 'pc' or 'ode'")


def save_samples(model: nn.Module, sde, cfg: C.Config, data, step: int, device) -> str:
    """Sample ``cfg.sampling.num_samples`` points with the EMA model; save an image grid or a 2-D scatter."""
    n = cfg.sampling.num_samples
    gen = make_generator(cfg.training.seed, step, 0, device=device, stream=3)
    x = draw_samples(model, sde, cfg.sampling, (n, *data.shape), generator=gen, device=device).x.cpu()
    stem = os.path.join(cfg.training.workdir, f"samples_{step:09d}")
    if data.levels is None:
        torch.save(x, stem + ".pt")
        return scatter_png(x, stem + ".png") or stem + ".pt"
    from torchvision.utils import save_image

    u = D.get_inverse_scaler(cfg.data.centered)(x).clamp(0, 1)
    save_image(u, stem + ".png", nrow=int(n**0.5) or 1)
    return stem + ".png"


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
def evaluate(model: nn.Module, sde, cfg: C.Config, data, device) -> dict:
    """Test-set log-likelihood via the probability-flow ODE: bits/dim for discrete data, NLL (nats) otherwise."""
    from scoresde.likelihood import log_likelihood

    ec = cfg.eval
    test = data.test if ec.num_samples == 0 else data.test[: ec.num_samples]
    # the same dequantisation noise and probes at every evaluation
    gen = make_generator(cfg.training.seed, 0, 0, stream=4)
    probe_gen = make_generator(cfg.training.seed, 0, 0, device=device, stream=5)
    logps = []
    for start in range(0, test.shape[0], ec.batch_size):
        x = test[start:start + ec.batch_size].float()
        if data.levels is not None:
            x = D.get_scaler(cfg.data.centered)(D.dequantize(x, data.levels, generator=gen))
        res = log_likelihood(model, sde, x.to(device), divergence=ec.divergence, probes=ec.probes, eps=ec.eps,
                             rtol=ec.rtol, atol=ec.atol, generator=probe_gen)
        logps.append(res.logp.detach().double().cpu())
    logp = torch.cat(logps)
    if data.levels is None:
        return {"test_nll": float(-logp.mean())}
    scale = 2.0 if cfg.data.centered else 1.0
    bpd = D.discrete_bits_per_dim(logp, batch_dim(test), levels=data.levels, scale=scale)
    return {"test_bpd": float(bpd.mean())}
