"""DDPM on the scikit-learn 8×8 digits: variational bound vs. a per-pixel histogram vs. the ODE likelihood.

Data: the 1797 digits of ``sklearn.datasets.load_digits`` (17 grey levels v ∈ 0..16), treated as 5-bit data
with code k = round(v·31/16) ∈ 0..31 (distinct codes for distinct v), and placed in model space on the
32-level grid of Ho et al. 2020: x_k = 2k/31 − 1. A fixed split: 1500 train, 297 test images.

Model: a DDPM chain that discretises the VP SDE (β_i = β(t_i)/N, N = 1000), an ε-network
(``scoresde.nn.MLPScoreNet``, fed the index i), trained with L_simple with t drawn half uniformly, half
log-uniformly (the bound weights the first steps ~1/t). Training data: uniformly dequantised
y = x_k + U(−δ, δ), δ = 1/31 (the bin of x_k), so that the model has a density the ODE can evaluate; with
``--grid``, the bin centres x_k themselves.

Reported on the test images (all bits/dim figures are of the 5-bit codes and upper bounds on −log2 P(k)/D):
- ``histogram``: per-pixel independent histogram from the training set (add-½ smoothing over 32 levels);
- ``vlb_discretized``: Ho et al.'s bound with the discretised decoder (eq. 13) at the bin centres x_k,
  with its parts (L_T, decoder L_0, KL terms by index band);
- ``vlb_dequantized``: the bound with a Gaussian decoder at y, through uniform dequantisation
  (``scoresde.bpd.bits_per_dim``);
- ``ode``: −log p_eps(y) of the VP probability-flow ODE of the converted score (``eps_net_to_score_fn``;
  Hutchinson divergence by default), at the same y, through the same dequantisation formula;
- ``vlb_gaussian_nats_per_dim`` / ``ode_nats_per_dim``: the same two as continuous densities at the same
  points (y, or x_k with ``--grid``), in nats per dimension: the like-for-like comparison of bound and ODE.

CPU: ``python benchmarks/discrete_digits.py [--steps 3000] [--grid] [--threads 1]``; a few minutes per run
on an idle core (training dominates).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time

import numpy as np
import torch

import scoresde as sd
from scoresde.bpd import bits_per_dim as dequantized_bpd
from scoresde.discrete import DiscreteChain, GaussianReverseKernel, eps_net_to_score_fn, simple_loss, vlb
from scoresde.discrete.bound import bits_per_dim
from scoresde.likelihood import log_likelihood
from scoresde.nn import MLPScoreNet

BITS, LEVELS = 5, 32
DELTA = 1.0 / (LEVELS - 1)  # half-width of a bin in model space
SCALE = 2 * LEVELS / (LEVELS - 1)  # y = SCALE·(k + U)/LEVELS − 1 − DELTA


def load_codes(seed: int):
    from sklearn.datasets import load_digits

    v = load_digits().data.astype(np.int64)
    k = np.rint(v * (LEVELS - 1) / 16).astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(k))
    return torch.from_numpy(k[perm[:1500]]), torch.from_numpy(k[perm[1500:]])


def centres(k):
    return 2 * k.double() / (LEVELS - 1) - 1


def dequantize(k, generator):
    return centres(k) + DELTA * (2 * torch.rand(k.shape, generator=generator, dtype=torch.float64) - 1)


def histogram_bpd(train, test, alpha=0.5):
    counts = torch.stack([torch.bincount(train[:, d], minlength=LEVELS) for d in range(train.shape[1])]).double()
    probs = (counts + alpha) / (counts.sum(1, keepdim=True) + alpha * LEVELS)
    logp = torch.log(probs.gather(1, test.T)).T.sum(1)  # (B,)
    return float(-(logp / (train.shape[1] * math.log(2))).mean())


class IndexNet(torch.nn.Module):
    """ε̂(x, i): the MLP fed the (possibly fractional) chain index as its noise condition."""

    def __init__(self, dim, hidden, layers):
        super().__init__()
        self.mlp = MLPScoreNet(dim, hidden=hidden, layers=layers, embedding="positional")

    def forward(self, x, i):
        return self.mlp(x, i.to(x.dtype))


def sample_index(batch, T, generator):
    """Half uniform, half log-uniform indices: the bound weights the first steps ~1/t, L_simple uniformly."""
    uniform = torch.randint(0, T, (batch,), generator=generator)
    log_uniform = torch.exp(torch.rand(batch, generator=generator) * math.log(T)).long().clamp(max=T) - 1
    return torch.where(torch.rand(batch, generator=generator) < 0.5, uniform, log_uniform)


def train(net, chain, data, steps, batch, lr, generator, log_every, dequant=True):
    kernel = GaussianReverseKernel(chain, net)
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(data), (batch,), generator=generator)
        x0 = (dequantize(data[idx], generator) if dequant else centres(data[idx])).float()
        loss = simple_loss(kernel, x0, generator=generator, i=sample_index(batch, chain.T, generator)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), net.parameters(), strict=True):
                pe.lerp_(p, 1 - 0.999)
        if step % log_every == 0 or step == steps:
            print(f"step {step:6d}  L_simple {loss.item():.4f}", flush=True)
    return ema


def _parts(res, k):
    """Bits/dim of the bound's parts: L_T, the decoder L_0, and the KL terms in index bands."""
    n = res.terms.shape[1]
    bands = {"prior": res.prior, "decoder": res.terms[:, 0], "kl_1_9": res.terms[:, 1:10].sum(1),
             "kl_10_99": res.terms[:, 10:100].sum(1), f"kl_100_{n - 1}": res.terms[:, 100:].sum(1)}
    return {name: round(float(bits_per_dim(v, k).mean()), 4) for name, v in bands.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=6000, help="training steps (default 6000)")
    ap.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 2e-3)")
    ap.add_argument("--hidden", type=int, default=256, help="MLP width (default 256)")
    ap.add_argument("--layers", type=int, default=3, help="residual MLP layers (default 3)")
    ap.add_argument("--num-steps", type=int, default=1000, help="chain length N (default 1000)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the split, init and noise (default 0)")
    ap.add_argument("--divergence", default="rademacher", help="rademacher | exact (default rademacher)")
    ap.add_argument("--tol", type=float, default=1e-5, help="ODE rtol = atol (default 1e-5)")
    ap.add_argument("--grid", action="store_true", help="train on the bin centres instead of dequantised data")
    ap.add_argument("--json", type=str, default=None, help="write the figures to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    torch_init = torch.random.fork_rng()
    with torch_init:
        torch.manual_seed(args.seed)  # network initialisation only (a script may seed; the library never does)
        net = IndexNet(64, args.hidden, args.layers)
    train_k, test_k = load_codes(args.seed)
    D = train_k.shape[1]
    sde = sd.VPSDE()
    chain = DiscreteChain.from_sde(sde, args.num_steps)
    t0 = time.time()
    ema = train(net, chain, train_k, args.steps, args.batch, args.lr, gen, max(args.steps // 10, 1),
                dequant=not args.grid)
    train_s = time.time() - t0
    print(f"trained in {train_s:.0f} s", flush=True)

    res = {"histogram": histogram_bpd(train_k, test_k)}
    ema64 = copy.deepcopy(ema).double()
    kernel = GaussianReverseKernel(chain, ema64)
    t0 = time.time()
    with torch.no_grad():
        disc = vlb(kernel, centres(test_k), generator=gen, num_levels=LEVELS)
        res["vlb_discretized"] = float(bits_per_dim(disc.total, test_k).mean())
        res["vlb_discretized_parts"] = _parts(disc, test_k)
        y = centres(test_k) if args.grid else dequantize(test_k, gen)
        cont = vlb(kernel, y, generator=gen, decoder="gaussian")
    res["vlb_gaussian_nats_per_dim"] = float(cont.total.mean()) / D
    if not args.grid:
        res["vlb_dequantized"] = float(dequantized_bpd(-cont.total, D, scale=SCALE, n_bits=BITS).mean())
        res["vlb_dequantized_parts"] = _parts(cont, test_k)
    vlb_s = time.time() - t0
    print(f"bounds done in {vlb_s:.0f} s: {res}", flush=True)
    t0 = time.time()
    score_fn = eps_net_to_score_fn(ema64, sde, args.num_steps)
    ll = log_likelihood(score_fn, sde, y, divergence=args.divergence, rtol=args.tol, atol=args.tol, generator=gen)
    res["ode_nats_per_dim"] = -float(ll.logp.mean()) / D
    if not args.grid:
        res["ode"] = float(dequantized_bpd(ll.logp, D, scale=SCALE, n_bits=BITS).mean())
    res.update(ode_nfe=ll.nfe, divergence=args.divergence, ode_tol=args.tol, train_s=round(train_s, 1),
               vlb_s=round(vlb_s, 1), ode_s=round(time.time() - t0, 1),
               steps=args.steps, trained_on="bin centres" if args.grid else "dequantised",
               num_steps=args.num_steps, test_images=len(test_k), threads=args.threads)
    print(json.dumps(res, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
