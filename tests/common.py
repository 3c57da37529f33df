"""The test oracle and the helpers shared by the test modules (importable as ``tests.common``).

Exact truths (mixtures, their scores, exact ε-networks and the reference metrics read from exact samples),
reference implementations of other libraries' published algorithms, a user-written SDE, and helpers.
Test modules import from here, never from one another; fixtures live in ``tests/conftest.py``.
"""

import contextlib
import functools
import math
import os
import subprocess
import sys
import textwrap

import torch

import scoresde as sd
import scoresde.rundir
from scoresde.sampling._common import tweedie_denoise

BUILTIN_SDES = {
    "ve": lambda: sd.VESDE(sigma_min=0.01, sigma_max=50.0),
    "vp": lambda: sd.VPSDE(beta_min=0.1, beta_max=20.0),
    "subvp": lambda: sd.SubVPSDE(beta_min=0.1, beta_max=20.0),
}


def two_mode_mixture():
    """A 2-D mixture with unequal weights and anisotropic components."""
    return sd.GaussianMixture([0.3, 0.7], [[-2.0, 0.5], [1.5, -1.0]], [[0.4, 0.2], [0.3, 0.6]])


def seeded(seed=1234):
    """The tests' one seeding style: every random draw a test depends on comes from a generator."""
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def seeded_init(seed=0):
    """Seeded network initialisation: ``torch.nn``'s initialisers draw from the global generator and take no
    ``generator=``, so the global one is seeded here, inside ``fork_rng``, which restores its state on exit
    (the only place where the tests call ``torch.manual_seed``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class OrnsteinUhlenbeck(sd.SDE):
    """dx = −x dt + sqrt(2) dw, written by a user with only the three primitives."""

    def drift(self, x, t):
        return -x

    def diffusion(self, t):
        return torch.full_like(t, math.sqrt(2.0))

    def marginal_coeffs(self, t):
        return torch.exp(-t), torch.sqrt(-torch.expm1(-2 * t))


def discretized_mixture_log_prob(mix, x, *, scale, shift, levels):
    """Exact log P(x) of levels x under y ~ mix, y = scale·u + shift binned into cells [k, k+1)/L (scale > 0).

    Diagonal components factorise over dimensions: P_k(x) = Π_d [Φ((hi_d − m)/s) − Φ((lo_d − m)/s)].
    """
    lo = (scale * x / levels + shift).double()
    hi = (scale * (x + 1) / levels + shift).double()
    m, s = mix.means[None], mix.stds[None]
    cdf = lambda v: torch.special.ndtr((v[:, None, :] - m) / s)  # noqa: E731
    per_comp = (cdf(hi) - cdf(lo)).clamp_min(1e-300).log().sum(-1) + mix.weights.log()
    return torch.logsumexp(per_comp, 1)


# ------------------------------------------------------------------ the sampler tests' mixture and metrics
# The target is a 2-D mixture with unequal weights 0.2/0.3/0.5 and well-separated modes (nearest-mode
# distances ≥ 5 = 10 component stds), so assigning a sample to its nearest mode mislabels a fraction
# < 1e-6 of exact samples: the mode weights and the within-mode spread (mean squared distance to the
# nearest mode) are then exact functionals of the distribution, computed here from exact samples.
MEANS = torch.tensor([[-3.0, 0.0], [3.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
WEIGHTS = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
STD = 0.5
MIXTURE = sd.GaussianMixture(WEIGHTS, MEANS, STD)
EPS = {"ve": 1e-5, "vp": 1e-3, "subvp": 1e-3}  # the paper's end times
REF_SAMPLES = 100_000


def mode_metrics(x: torch.Tensor) -> tuple[float, float]:
    """(total variation between the nearest-mode frequencies and the true weights, within-mode spread)."""
    d2 = ((x.reshape(x.shape[0], 1, -1).double().cpu() - MEANS[None]) ** 2).sum(-1)
    dist, k = d2.min(1)
    freq = torch.bincount(k, minlength=len(WEIGHTS)).double() / x.shape[0]
    return 0.5 * float((freq - WEIGHTS).abs().sum()), float(dist.mean())


@functools.cache
def _reference_spread(sde_key: str, eps: float, denoise: bool) -> float:
    return _exact_spread(_SDES[sde_key], eps, denoise)


def reference_spread(sde, eps: float, denoise: bool) -> float:
    """Cached :func:`_exact_spread` for the built-in SDEs (keyed by their repr), computed otherwise."""
    key = repr(sde)
    _SDES.setdefault(key, sde)
    return _reference_spread(key, eps, denoise)


_SDES: dict = {}


def _exact_spread(sde, eps: float, denoise: bool) -> float:
    """The exact spread of what a sampler should return: samples of p_eps, or their Tweedie denoising.

    From 100k exact samples: its relative Monte-Carlo error is 1/sqrt(100k) = 0.32 % (the squared
    distance to a mode of a 2-D Gaussian is s²·χ²₂, whose relative std is 1).
    """
    x = MIXTURE.at_time(sde, eps).sample(REF_SAMPLES, generator=torch.Generator().manual_seed(7))
    if denoise:
        x = tweedie_denoise(sde, MIXTURE.score_fn(sde), x, torch.full((REF_SAMPLES,), eps, dtype=torch.float64))
    return mode_metrics(x)[1]


def tv_tolerance(n: int, z: float = 4.0) -> float:
    """z standard deviations of the empirical TV of n exact samples: TV = ½ Σ|f_k − w_k| with
    sd(f_k) = sqrt(w_k(1 − w_k)/n); the sum of the K sds bounds sd(TV)·2 (triangle inequality)."""
    return z * 0.5 * float(torch.sqrt(WEIGHTS * (1 - WEIGHTS) / n).sum())


def spread_tolerance(n: int, z: float = 4.0) -> float:
    """z standard deviations of the relative spread error of n samples (relative sd of s²χ²₂ is 1)."""
    return z / math.sqrt(n)


# ------------------------------------------------------------------ the discrete chain: the exact ε-network
def discrete_mixture():
    """The 2-D mixture of the discrete-chain tests (diagonal, unequal weights)."""
    return sd.GaussianMixture([0.3, 0.7], [[-1.0, 0.5], [0.8, -0.6]], [[0.2, 0.1], [0.15, 0.3]])


def exact_eps_net(gm, chain):
    """ε̂(x, i) = −sqrt(1 − ᾱ) ∇ log q(x_{i+1}) with q(x_{i+1}) the mixture perturbed by the chain (exact)."""

    def net(x, i):
        ab = chain.coeff("alpha_bar", i, x)
        a, s2 = ab.sqrt()[:, None, None], (1 - ab)[:, None, None]
        means = a * gm.means.to(x.dtype)[None]
        var = a**2 * gm.stds.to(x.dtype)[None] ** 2 + s2
        diff = x[:, None] - means
        logits = torch.log(gm.weights.to(x.dtype)) - 0.5 * (diff**2 / var + torch.log(2 * math.pi * var)).sum(-1)
        score = -(torch.softmax(logits, 1)[..., None] * diff / var).sum(1)
        return -torch.sqrt(1 - ab)[:, None] * score

    return net


# ------------------------------------------------------------------ k-diffusion's algorithms, for reference
# (Karras et al. 2022, Alg. 1 without churn; k-diffusion's sample_euler / sample_heun / get_sigmas_karras)
def to_d(x, sigma, denoised):
    return (x - denoised) / sigma


def sample_euler(model, x, sigmas):
    """k-diffusion's ``sample_euler`` (s_churn = 0): x += (σ_{i+1} − σ_i) (x − D(x, σ_i)) / σ_i."""
    for i in range(len(sigmas) - 1):
        d = to_d(x, sigmas[i], model(x, sigmas[i] * x.new_ones(x.shape[0])))
        x = x + d * (sigmas[i + 1] - sigmas[i])
    return x


def sample_heun(model, x, sigmas):
    """k-diffusion's ``sample_heun`` (s_churn = 0): Heun's 2nd-order step in σ, Euler into σ = 0."""
    ones = x.new_ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        d = to_d(x, sigmas[i], model(x, sigmas[i] * ones))
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigmas[i + 1], model(x_2, sigmas[i + 1] * ones))
            x = x + (d + d_2) / 2 * dt
    return x


def get_sigmas_karras(n, sigma_min, sigma_max, rho=7.0, dtype=torch.float64):
    ramp = torch.linspace(0, 1, n, dtype=dtype)
    min_inv, max_inv = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (max_inv + ramp * (min_inv - max_inv)) ** rho



# ------------------------------------------------------------------ a second process holding a run directory
HOLDER = textwrap.dedent("""
    import importlib.util, sys, time
    # load rundir.py alone (stdlib only), not the package, which imports torch: the child starts in ~0.1 s
    spec = importlib.util.spec_from_file_location("rundir", sys.argv[2])
    rundir = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rundir)
    with rundir.lock_workdir(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(120)
""")


def child_env():
    """The environment of a child Python: one thread, this checkout's src first on the path."""
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


def start_lock_holder(workdir):
    """A child process holding the lock of ``workdir`` (returns once it holds it; kill it when done)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir), scoresde.rundir.__file__],
                            stdout=subprocess.PIPE, text=True, env=child_env())
    line = proc.stdout.readline()  # blocks until the child holds the lock (or dies)
    assert line.strip() == "locked", line
    return proc
