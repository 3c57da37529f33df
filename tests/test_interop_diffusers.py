"""diffusers adapter and the "v" parameterisation, against exact truths.

The ᾱ-table SDE and the v parameterisation need no diffusers; the tests that build diffusers schedulers or
tiny randomly initialised ``UNet2DModel``s skip with the reason when the optional ``interop`` extra
(``pip install scoresde[interop]``) is not installed.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import scoresde as sd
from scoresde.interop import TabulatedVPSDE, from_diffusers, to_k_diffusion
from tests.common import BUILTIN_SDES, seeded, seeded_init, two_mode_mixture

N = 1000
LINEAR_ABAR = torch.cumprod(1 - torch.linspace(1e-4, 0.02, N, dtype=torch.float64), 0)


def needs_diffusers():
    return pytest.importorskip("diffusers", reason="diffusers is not installed (pip install scoresde[interop])")


# ----------------------------------------------------------------- the ᾱ-table SDE
def test_table_sde_hits_the_table_at_every_timestep():
    """α(t_i)² = ᾱ_i and σ(t_i)² = 1 − ᾱ_i at t_i = (i + 1)/N, for all N indices; t = 0 is clean data."""
    sde = TabulatedVPSDE(LINEAR_ABAR)
    t = sde.time(torch.arange(N))
    alpha, std = sde.marginal_coeffs(t)
    torch.testing.assert_close(alpha**2, LINEAR_ABAR, rtol=1e-14, atol=0)
    torch.testing.assert_close(std**2, 1 - LINEAR_ABAR, rtol=1e-12, atol=0)
    assert sde.marginal_coeffs(torch.zeros(1, dtype=torch.float64)) == (1.0, 0.0)
    torch.testing.assert_close(sde.timestep(t), torch.arange(N, dtype=torch.float64), rtol=0, atol=1e-9)


def test_table_sde_transition_is_the_ddpm_step():
    """Over one panel [i/N, (i+1)/N] the exact transition is N(sqrt(1 − β_i) x, β_i I) (Ho et al. 2020, eq. 2),
    and the reverse-diffusion discretisation uses exactly that β_i."""
    sde = TabulatedVPSDE(LINEAR_ABAR)
    betas = torch.linspace(1e-4, 0.02, N, dtype=torch.float64)
    i = torch.tensor([1, 10, 500, 999])
    a, v = sde.transition_coeffs(sde.time(i), sde.time(i - 1))
    torch.testing.assert_close(a, torch.sqrt(1 - betas[i]), rtol=1e-12, atol=0)
    torch.testing.assert_close(v, betas[i], rtol=1e-9, atol=0)
    x = torch.ones(4, 3, dtype=torch.float64)
    f, G = sde.discretize(x, sde.time(i), 1.0 / N)
    torch.testing.assert_close(f, (torch.sqrt(1 - betas[i]) - 1)[:, None] * x, rtol=1e-10, atol=0)
    torch.testing.assert_close(G**2, betas[i], rtol=1e-9, atol=0)
    # β(t) = −d log ᾱ/dt is quadratic on each step: 3-point Gauss–Legendre integrates it exactly, to −log(1 − β_i)
    nodes, weights = (torch.tensor(v, dtype=torch.float64) for v in np.polynomial.legendre.leggauss(3))
    left = sde.time(i - 1)
    integral = sum(w / (2 * N) * sde.beta(left + (1 + u) / (2 * N)) for u, w in zip(nodes, weights, strict=True))
    torch.testing.assert_close(integral, -torch.log1p(-betas[i]), rtol=1e-10, atol=0)


@pytest.mark.parametrize("kind", ["smooth", "sharp_end"])
def test_table_sde_drift_matches_its_marginals(kind):
    """β(t) = −2 d log α/dt everywhere (central differences, h = 1e-6: truncation ~h² L''' ≲ 1e-9, round-off
    ~1e-16·|log α|/h ≲ 1e-9), β > 0, and σ² = 1 − α² (VP); a table with a sharp end takes the PCHIP branch."""
    table = LINEAR_ABAR.clone()
    if kind == "sharp_end":
        table[-1] = table[-2] * 0.999  # a near-flat last step after steep ones: the cubic would overshoot
    sde = TabulatedVPSDE(table)
    assert sde.interpolation == ("cubic" if kind == "smooth" else "pchip")
    t = torch.rand(200, generator=seeded(), dtype=torch.float64) * (1 - 2e-6) + 1e-6
    h = 1e-6
    fd = -2 * (sde.log_mean_coeff(t + h) - sde.log_mean_coeff(t - h)) / (2 * h)
    beta = sde.beta(t)
    assert float(sde.beta(torch.linspace(0, 1, 100001, dtype=torch.float64)).min()) > 0
    torch.testing.assert_close(beta, fd, rtol=0, atol=1e-6)
    alpha, std = sde.marginal_coeffs(t)
    torch.testing.assert_close(alpha**2 + std**2, torch.ones_like(t), rtol=0, atol=1e-14)
    torch.testing.assert_close(sde.diffusion(t) ** 2, beta, rtol=1e-14, atol=0)


def test_table_sde_log_snr_inverse_is_exact():
    sde = TabulatedVPSDE(LINEAR_ABAR)
    t = torch.linspace(0, 1, 4001, dtype=torch.float64)[1:]
    torch.testing.assert_close(sde.t_from_log_snr(sde.log_snr(t)), t, rtol=0, atol=1e-12)


def test_linear_schedule_is_the_vpsde_up_to_discretisation():
    """A linear β_1..β_N is the VPSDE(β_min = β_1 N, β_max = β_N N) of Song et al. 2021, App. B, up to the
    second-order term of log(1 − β) = −β − β²/2: Σ β_j²/2 ≈ 0.067 in log ᾱ at t = 1, so |Δ log α| ≤ 0.04;
    in α and σ themselves that is ≤ 2e-3 (measured 1.0e-3, 1.3e-3)."""
    table, vp = TabulatedVPSDE(LINEAR_ABAR), sd.VPSDE(beta_min=1e-4 * N, beta_max=0.02 * N)
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    (a1, s1), (a2, s2) = table.marginal_coeffs(t), vp.marginal_coeffs(t)
    assert float((table.log_mean_coeff(t) - vp.log_mean_coeff(t)).abs().max()) < 0.04
    assert float((a1 - a2).abs().max()) < 2e-3 and float((s1 - s2).abs().max()) < 2e-3


def test_table_sde_refuses_bad_tables():
    with pytest.raises(ValueError, match="1-D table"):
        TabulatedVPSDE(torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"lie in \(0, 1\]"):
        TabulatedVPSDE(torch.tensor([0.9, 1.2, 0.5]))
    with pytest.raises(ValueError, match="decrease strictly .* at index 2"):
        TabulatedVPSDE(torch.tensor([0.9, 0.5, 0.5]))
    with pytest.raises(ValueError, match="decrease strictly .* at index 0"):
        TabulatedVPSDE(torch.tensor([1.0, 0.5]))
    with pytest.raises(ValueError, match="decrease strictly .* at index 2"):
        TabulatedVPSDE(torch.tensor([0.9, 0.5, 0.6]))


def test_zero_terminal_snr_tables():
    """ᾱ_{N−1} = 0 (DDPM/DDIM) or Euler's 2^-24 above ᾱ_{N−2}: the last panel continues the previous decay."""
    for last in (0.0, 2.0**-24):
        sde = TabulatedVPSDE(torch.tensor([0.5, 1e-4, 1e-8, last], dtype=torch.float64))
        assert float(sde.alphas_cumprod[-1]) == pytest.approx(1e-12, rel=1e-9)


# ----------------------------------------------------------------- the v parameterisation (no diffusers)
class OracleNet(nn.Module):
    """A network whose output is the exact ε, x0 or v = α ε − σ x0 of the mixture (noise_cond = "t")."""

    def __init__(self, mix, sde, kind):
        super().__init__()
        self.mix, self.sde, self.kind = mix, sde, kind

    def forward(self, x, t):
        alpha, std = (v[:, None] for v in self.sde.marginal_coeffs(t))
        score = self.mix.score_t(x, t, self.sde)
        eps, x0 = -std * score, (x + std**2 * score) / alpha  # Tweedie
        return {"eps": eps, "x0": x0, "v": alpha * eps - std * x0, "score": score}[self.kind]


@pytest.mark.parametrize("kind", ["v", "eps", "x0", "score"])
@pytest.mark.parametrize("name", sorted(BUILTIN_SDES))
def test_parameterizations_give_back_the_exact_score(name, kind):
    """A v- (ε-, x0-) network built from the exact score gives back the exact score through ScoreModel, for VE
    and sub-VP too, where α² + σ² ≠ 1 and v's general inverse ε = (σ x_t + α v)/(α² + σ²) is needed."""
    sde, mix = BUILTIN_SDES[name](), two_mode_mixture()
    model = sd.ScoreModel(OracleNet(mix, sde, kind), sde, kind, "t")
    t = torch.tensor([0.01, 0.2, 0.5, 0.9, 1.0], dtype=torch.float64)
    x = mix.at_time(sde, 0.3).sample(5, generator=seeded(), dtype=torch.float64)
    want = mix.score_t(x, t, sde)
    torch.testing.assert_close(model(x, t), want, rtol=1e-10, atol=1e-10 * float(want.abs().max()))


def test_score_model_accepts_a_dot_sample_output_and_names_a_bad_one():
    class SampleOut(nn.Module):
        def forward(self, x, t):
            return SimpleNamespace(sample=-x)

    class Bad(nn.Module):
        def forward(self, x, t):
            return {"sample": x}

    sde, x, t = sd.VPSDE(), torch.ones(2, 3), torch.full((2,), 0.5)
    torch.testing.assert_close(sd.ScoreModel(SampleOut(), sde, "score")(x, t), -x)
    with pytest.raises(TypeError, match="a tensor or an object with a .sample tensor, got dict"):
        sd.ScoreModel(Bad(), sde, "score")(x, t)


# ----------------------------------------------------------------- diffusers schedulers and models
class IndexSDE(sd.SDE):
    """The scheduler's own noise levels indexed by the integer timestep (T = N − 1): for an oracle that
    knows nothing of the continuous-time mapping under test."""

    def __init__(self, abar):
        self.abar, self.T = abar.to(torch.float64), float(len(abar) - 1)

    def marginal_coeffs(self, t):
        a = self.abar[t.round().long()].to(t.dtype)
        return a.sqrt(), (1 - a).sqrt()


def oracle_diffusers_model(mix, scheduler):
    """A diffusers-style model ``(sample, timestep) -> .sample``: the exact ε / x0 / v of the mixture at the
    scheduler's integer timesteps, with diffusers' own definitions (v from ``scheduler.get_velocity``)."""
    idx = IndexSDE(scheduler.alphas_cumprod)
    kind = scheduler.config.prediction_type

    def model(sample, timestep):
        i = timestep.to(torch.float64)
        assert float((i - i.round()).abs().max()) < 1e-6, "queried between the scheduler's timesteps"
        i = i.round()
        a = idx.abar[i.long()].to(sample.dtype)[:, None]
        eps = -(1 - a).sqrt() * mix.score_t(sample, i.to(sample.dtype), idx)
        x0 = (sample - (1 - a).sqrt() * eps) / a.sqrt()
        out = {"epsilon": eps, "sample": x0,
               "v_prediction": scheduler.get_velocity(x0, eps, i.long())}[kind]
        return SimpleNamespace(sample=out)

    return model


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_add_noise_is_the_marginal_at_the_mapped_time(schedule):
    """The scheduler's add_noise(x0, ε, i) equals α(t) x0 + σ(t) ε at t = (i + 1)/N, exactly (float64)."""
    diffusers = needs_diffusers()
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=N, beta_schedule=schedule)
    sde = TabulatedVPSDE(scheduler.alphas_cumprod)
    x0 = torch.randn(6, 3, 4, 4, generator=seeded(), dtype=torch.float64)
    noise = torch.randn(6, 3, 4, 4, generator=seeded(5), dtype=torch.float64)
    i = torch.tensor([0, 1, 17, 500, 998, 999])
    mean, std = sde.marginal(x0, sde.time(i))
    torch.testing.assert_close(scheduler.add_noise(x0, noise, i), mean + std[:, None, None, None] * noise,
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["DDPMScheduler", "DDIMScheduler", "EulerDiscreteScheduler"])
def test_zero_terminal_snr_schedulers(name):
    """diffusers' zero-terminal-SNR tables map to an SDE whose α(T) is ~3e-5 (SNR ~1e-9) and that agrees with
    the table everywhere else."""
    diffusers = needs_diffusers()
    scheduler = getattr(diffusers, name)(rescale_betas_zero_snr=True)
    sde = TabulatedVPSDE(scheduler.alphas_cumprod)
    alpha, _ = sde.marginal_coeffs(torch.ones(1, dtype=torch.float64))
    assert 0 < float(alpha) < 1e-4
    torch.testing.assert_close(sde.alphas_cumprod[:-1], scheduler.alphas_cumprod[:-1].double(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_from_diffusers_gives_the_exact_score(prediction_type):
    """A diffusers-style model built from the exact score (ε, x0 or v by diffusers' definitions) gives the
    exact score of the table SDE at the mapped times (float64 round-off: ≤ 1e-9 relative)."""
    diffusers = needs_diffusers()
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=N, prediction_type=prediction_type)
    mix = two_mode_mixture()
    score_fn, sde = from_diffusers(oracle_diffusers_model(mix, scheduler), scheduler)
    assert score_fn.parameterization == {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}[prediction_type]
    i = torch.tensor([0, 3, 100, 499, 900, 999])
    t = sde.time(i)
    x = mix.at_time(sde, 0.2).sample(6, generator=seeded(), dtype=torch.float64)
    want = mix.score_t(x, t, sde)
    torch.testing.assert_close(score_fn(x, t), want, rtol=1e-9, atol=1e-9 * float(want.abs().max()))


def test_diffusers_ddim_is_k_euler_through_the_adapters():
    """diffusers' own DDIM sampler (η = 0, 10 trailing steps) and k-diffusion's Euler driven through
    to_k_diffusion(from_diffusers(...)) on σ̃ at the same timesteps are one algorithm (DDIM = Euler in σ̃):
    from the same noise they land on the same samples to float64 round-off."""
    diffusers = needs_diffusers()
    from tests.common import sample_euler

    scheduler = diffusers.DDIMScheduler(num_train_timesteps=N, timestep_spacing="trailing", clip_sample=False,
                                        set_alpha_to_one=False)
    scheduler.set_timesteps(10)
    # the same float32 table values in float64, so diffusers' step arithmetic runs in float64 too
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.double()
    scheduler.final_alpha_cumprod = scheduler.final_alpha_cumprod.double()
    model = oracle_diffusers_model(two_mode_mixture(), scheduler)
    z = torch.randn(32, 2, generator=seeded(), dtype=torch.float64)
    x = z
    for i in scheduler.timesteps:
        x = scheduler.step(model(x, i.expand(32)).sample, int(i), x).prev_sample

    score_fn, sde = from_diffusers(model, scheduler)
    den = to_k_diffusion(score_fn, sde)
    t = sde.time(torch.cat([scheduler.timesteps, torch.zeros(1, dtype=scheduler.timesteps.dtype)]))
    alpha = sde.marginal_coeffs(t)[0]
    x_k = sample_euler(den, z / alpha[0], den.t_to_sigma(t)) * alpha[-1]
    torch.testing.assert_close(x_k, x, rtol=1e-9, atol=1e-9)


def tiny_unet(diffusers, **kw):
    with seeded_init(0):  # diffusers initialises its weights from the global generator
        return diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                                     block_out_channels=(16, 32), norm_num_groups=8,
                                     down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                     up_block_types=("AttnUpBlock2D", "UpBlock2D"), **kw).eval()


def test_score_model_wraps_a_unet2dmodel():
    """ScoreModel(UNet2DModel, ...) used to fail with "'UNet2DOutput' object has no attribute 'dtype'"."""
    diffusers = needs_diffusers()
    unet, sde = tiny_unet(diffusers), sd.VPSDE()
    x, t = torch.randn(2, 3, 8, 8, generator=seeded()), torch.tensor([0.3, 0.9])
    with torch.no_grad():
        got = sd.ScoreModel(unet, sde, "eps", "999t")(x, t)
        eps = unet(x, 999 * t).sample
    torch.testing.assert_close(got, -eps / sde.marginal_coeffs(t)[1][:, None, None, None])


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_from_diffusers_unet_matches_diffusers_own_formulas(prediction_type):
    """With a tiny random UNet2DModel, the score equals (sqrt(ᾱ) x̂0 − x) / (1 − ᾱ) with x̂0 computed by the
    formulas of diffusers' DDPMScheduler.step (its pred_original_sample) at integer timesteps (float32)."""
    diffusers = needs_diffusers()
    unet = tiny_unet(diffusers)
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=N, prediction_type=prediction_type)
    score_fn, sde = from_diffusers(unet, scheduler)
    assert score_fn.net is unet
    i = torch.tensor([0, 250, 999])
    x = torch.randn(3, 3, 8, 8, generator=seeded())
    with torch.no_grad():
        got = score_fn(x, sde.time(i).float())
        out = unet(x, i).sample
    a = scheduler.alphas_cumprod[i][:, None, None, None]
    x0 = {"epsilon": (x - (1 - a).sqrt() * out) / a.sqrt(), "sample": out,
          "v_prediction": a.sqrt() * x - (1 - a).sqrt() * out}[prediction_type]
    want = (a.sqrt() * x0 - x) / (1 - a)
    torch.testing.assert_close(got, want, rtol=2e-4, atol=2e-4 * float(want.abs().max()))


def test_learned_time_embedding_gets_integer_timesteps():
    diffusers = needs_diffusers()
    unet = tiny_unet(diffusers, time_embedding_type="learned", num_train_timesteps=N)
    score_fn, sde = from_diffusers(unet, diffusers.DDPMScheduler(num_train_timesteps=N))
    nc = score_fn.noise_cond(torch.tensor([0.0, 0.0014, 0.5, 1.0]))
    assert nc.dtype == torch.long and nc.tolist() == [0, 0, 499, 999]
    with torch.no_grad():
        assert torch.isfinite(score_fn(torch.zeros(4, 3, 8, 8), torch.tensor([0.001, 0.0014, 0.5, 1.0]))).all()


def test_sixteen_images_in_fifty_steps_from_a_diffusers_model():
    """The docs' call: from_diffusers + DPM-Solver++ (50 evaluations), and k-diffusion's Heun through
    to_k_diffusion, on a tiny random UNet (the numbers are noise; the plumbing is what is tested)."""
    diffusers = needs_diffusers()
    from tests.common import get_sigmas_karras, sample_heun

    score_fn, sde = from_diffusers(tiny_unet(diffusers), diffusers.DDPMScheduler(num_train_timesteps=N))
    res = sd.sample_dpm_solver(score_fn, sde, (16, 3, 8, 8), steps=50, generator=seeded())
    assert res.x.shape == (16, 3, 8, 8) and res.nfe == 50 and torch.isfinite(res.x).all()
    den = to_k_diffusion(score_fn, sde)
    sigmas = torch.cat([get_sigmas_karras(5, den.sigma_min, den.sigma_max, dtype=torch.float32), torch.zeros(1)])
    with torch.no_grad():
        x = sample_heun(den, torch.randn(2, 3, 8, 8, generator=seeded()) * den.sigma_max, sigmas)
    assert torch.isfinite(x).all()


def test_from_diffusers_errors():
    diffusers = needs_diffusers()
    unet = tiny_unet(diffusers)
    with pytest.raises(TypeError, match="scheduler must have alphas_cumprod"):
        from_diffusers(unet, object())
    with pytest.raises(ValueError, match="unknown prediction_type 'x'"):
        from_diffusers(unet, diffusers.DDPMScheduler(), prediction_type="x")
    with pytest.raises(TypeError, match="unet must be a callable"):
        from_diffusers(3, diffusers.DDPMScheduler())
    fourier = diffusers.UNet2DModel(sample_size=8, block_out_channels=(16, 32), norm_num_groups=8,
                                    down_block_types=("DownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "UpBlock2D"), time_embedding_type="fourier")
    with pytest.raises(ValueError, match="'fourier' time embedding"):
        from_diffusers(fourier, diffusers.DDPMScheduler())


def test_import_scoresde_imports_neither_diffusers_nor_k_diffusion():
    import subprocess
    import sys

    script = ("import sys, scoresde; scoresde.interop.from_diffusers; "
              "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
              "{'diffusers', 'k_diffusion', 'huggingface_hub', 'transformers', 'safetensors'}); "
              "assert not bad, bad; print('ok')")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_likelihood_and_ode_sampling_of_a_diffusers_style_model():
    """scoresde's exact likelihood on from_diffusers: a continuous-time ε-model of the oracle (fractional
    timesteps allowed) gives log p_eps = the exact mixture log-density at eps = 1/N (timestep 0), to the ODE
    tolerance: at rtol = atol = 1e-6 the error is 1.3e-5 nats, as on the VPSDE; asserted ≤ 1e-4, which the
    piecewise-linear log ᾱ (a jump in β at every step; 4e-3 nats) fails. log_likelihood scores the latent
    with the prior N(0, I), off from the exact p_T by ≈ z·α(T)·m ≈ 0.01 here, so the prior term is swapped
    for the exact log p_T(z) to compare the flow itself."""
    mix, sde = two_mode_mixture(), TabulatedVPSDE(LINEAR_ABAR)
    scheduler = SimpleNamespace(alphas_cumprod=LINEAR_ABAR.float(),
                                config=SimpleNamespace(num_train_timesteps=N, prediction_type="epsilon"))

    def eps_model(sample, timestep):  # continuous in the timestep, through the mapping under test
        t = sde.time(timestep).to(sample.dtype)
        return -sde.marginal_coeffs(t)[1][:, None] * mix.score_t(sample, t, sde)

    score_fn, sde2 = from_diffusers(eps_model, scheduler)
    x = mix.at_time(sde, 1 / N).sample(8, generator=seeded(), dtype=torch.float64)
    res = sd.log_likelihood(score_fn, sde2, x, divergence="exact", eps=1 / N, rtol=1e-6, atol=1e-6)
    want = mix.log_prob_t(x, torch.full((8,), 1 / N, dtype=torch.float64), sde)
    got = res.logp - sde2.prior_logp(res.z) + mix.log_prob_t(res.z, torch.ones(8, dtype=torch.float64), sde)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
