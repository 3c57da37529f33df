"""DDPM on the demo's 8×8 digits: the variational bound, a per-pixel baseline and the ODE likelihood.

Data: ``scoresde.data.load_digits`` (the demo's 1500 / 297 split, 17 grey levels k ∈ 0..16). The chain lives
on the 17-level grid of Ho et al. 2020, x_k = 2k/16 − 1, so that the discretised decoder (eq. 13) with
L = 17 applies to the bin centres. The model is trained on uniformly dequantised digits y = x_k + U(−δ, δ),
δ = 1/16 (the bin of x_k), so that it has a density the probability-flow ODE can evaluate; y is the affine
image a·u + b of the unit-space dequantisation u = (k + U)/17 with a = 17/8, which fixes the bits/dim offset.

Model: a DDPM chain that discretises the VP SDE (β_i = β(t_i)/N, N = 1000, ``DiscreteChain.from_sde``), so
the chain index i = 999·t is the demo's noise conditioning; an ε-network (the ``digits`` U-Net preset, fed
the index); fixed variance Σ = β_t. Objective (``--objective``):

- ``vlb`` (default): the bound itself, one importance-sampled term per image (``vlb_estimate``) with the
  proposal p_i ∝ β_i / (α_i (1 − ᾱ_i)), the weight of ‖ε − ε̂‖² in the term L_i (``bound_weight_proposal``)
  — the discrete form of the likelihood weighting with importance sampling of Song et al. 2021b;
- ``simple``: DDPM's L_simple (uniform t, unweighted ε error); with ``--var learned_range`` the hybrid loss
  L_simple + 0.001 L_vlb of Nichol & Dhariwal 2021 (the bound trains only the variance).

``--var learned_range`` gives the net a second output channel for the variance, interpolated between β̃_t and
β_t in the log domain (Nichol & Dhariwal 2021, eq. 15).

Reported on the 297 test digits; every bits/dim figure is an upper bound on −log2 P(k)/D of the 17-level codes:

- ``baseline``: independent per-pixel histograms (``scoresde.data.digits_histogram_bpd``, as in the demo);
- ``vlb_dequantized``: the whole bound (L_T + Σ KL + L_0, all 1000 terms, exact Gaussian KLs) with a Gaussian
  decoder at the dequantised y, through the dequantisation formula (``scoresde.likelihood.bits_per_dim``), with its
  parts (L_T, decoder L_0, KL terms by index band);
- ``vlb_discretized``: the bound with the discretised decoder at the bin centres x_k (a bound on the
  discrete NLL directly). With 17 levels a bin is far wider than sqrt(β_1), so this bound pays KL terms for
  precision below the bin that a discretised decoder cannot give back (docs/discrete.md); ``--merge-first K``
  also reports it for the chain whose first K + 1 steps are merged into one, so that the decoder starts from
  the noise level 1 − ᾱ_{K+1} (same net);
- ``ode``: −log p_eps(y) of the VP probability-flow ODE of the converted score
  (``eps_net_to_score_fn``, std interpolated between steps; Hutchinson divergence), at the same y, through
  the same formula.

Each figure comes with the standard error over the test images. The network runs in float32 and the bound's
arithmetic and the ODE state in float64.

CPU: ``python benchmarks/discrete_digits.py [--steps 4000] [--threads 2] [--save DIR | --load DIR/ckpt_000004000.pt]``;
training dominates (about 0.25 s per step of 128 images on 2 cores).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time

import torch

import scoresde as sd
from scoresde import data as D
from scoresde.checkpoint import load_checkpoint, save_checkpoint
from scoresde.discrete import (
    DiscreteChain,
    GaussianReverseKernel,
    bound_weight_proposal,
    eps_net_to_score_fn,
    hybrid_loss,
    sample_chain,
    simple_loss,
    vlb,
    vlb_estimate,
)
from scoresde.discrete.bound import bits_per_dim
from scoresde.likelihood import bits_per_dim as dequantized_bpd
from scoresde.likelihood import log_likelihood, uniform_dequantize
from scoresde.nn import build_network

LEVELS = D.DIGITS_LEVELS  # 17
DELTA = 1.0 / (LEVELS - 1)  # half-width of a bin in model space
SCALE = 2 * LEVELS / (LEVELS - 1)  # y = SCALE·(k + U)/LEVELS − 1 − DELTA


def centres(k):
    return 2 * k.double() / (LEVELS - 1) - 1


def dequantize(k, generator):
    return uniform_dequantize(k, levels=LEVELS, scale=SCALE, shift=-1 - DELTA, generator=generator,
                              dtype=torch.float64)


class Float32Net(torch.nn.Module):
    """Run a float32 network on float64 inputs: the bound's arithmetic stays in float64."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, i):
        return self.net(x.float(), i.float()).to(x.dtype)


class ShiftedNet(torch.nn.Module):
    """``net(x, j + k)``: the full chain's network on a chain whose index 0 is the full chain's index k."""

    def __init__(self, net, k):
        super().__init__()
        self.net, self.k = net, k

    def forward(self, x, j):
        return self.net(x, j + self.k)


def merged_chain(chain, k):
    """The chain with its first k + 1 steps merged into one: β'_1 = 1 − ᾱ_{k+1}, then β_{k+2}, …, β_T.

    Its ᾱ' are the full chain's ᾱ from index k on, so q(x_j | x_0) and the posteriors at j ≥ 1 are the full
    chain's at j + k and the trained net applies there (:class:`ShiftedNet`); only the decoder changes: it
    starts from the noise level 1 − ᾱ_{k+1}. Its bound is a bound for this shorter chain, with the same net.
    """
    return DiscreteChain(torch.cat([1 - chain.alpha_bar[k:k + 1], chain.betas[k + 1:]]), monotone=False)


def train(net, chain, data, args, generator):
    kernel = GaussianReverseKernel(chain, net, var_type=args.var)
    # the weights of Σ = β_t: a fixed positive proposal, so also unbiased for a learned variance
    proposal = bound_weight_proposal(GaussianReverseKernel(chain, net))
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    warmup = max(args.steps // 20, 1)  # linear warm-up, then cosine decay to zero
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(
        math.pi * min(s / args.steps, 1.0)))))
    dim = data[0].numel()
    log_every = max(args.steps // 20, 1)
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, len(data), (args.batch,), generator=generator)
        y = dequantize(data[idx], generator).float()
        if args.objective == "vlb":
            loss = vlb_estimate(kernel, y, sampler=proposal, generator=generator, decoder="gaussian")[0] / dim
        elif kernel.learned_variance:  # L_simple for the mean, λ L_vlb for the variance (uniform t)
            loss = hybrid_loss(kernel, y, generator=generator, decoder="gaussian")[0]
        else:
            loss = simple_loss(kernel, y, generator=generator)
        loss = loss.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), args.clip)
        opt.step()
        sched.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(ema.parameters()), list(net.parameters()), 1 - args.ema)
        if step % log_every == 0 or step == args.steps:
            print(f"step {step:6d}  loss {loss.item():.4f}", flush=True)
    return ema


def mean_se(v):
    v = v.double()
    return round(float(v.mean()), 4), round(float(v.std() / math.sqrt(v.numel())), 4)


def parts(res, x):
    """Bits/dim of the bound's parts: L_T, the decoder L_0, and the KL terms in index bands."""
    bands = {"prior": res.prior, "decoder": res.terms[:, 0], "kl_1_9": res.terms[:, 1:10].sum(1),
             "kl_10_99": res.terms[:, 10:100].sum(1), "kl_100_up": res.terms[:, 100:].sum(1)}
    return {name: round(float(bits_per_dim(v, x).mean()), 4) for name, v in bands.items()}


def main(argv=None) -> dict:
    """Run the benchmark with command-line ``argv`` (``sys.argv`` if None); return the figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=4000, help="training steps (default 4000)")
    ap.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (warm-up, cosine decay; default 2e-3)")
    ap.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip (default 1.0)")
    ap.add_argument("--ema", type=float, default=0.998, help="EMA decay (default 0.998)")
    ap.add_argument("--objective", choices=("vlb", "simple"), default="vlb", help="training objective (default vlb)")
    ap.add_argument("--var", choices=("beta", "learned_range"), default="beta",
                    help="reverse variance: fixed β_t, or learned between β̃_t and β_t (2-channel net; default beta)")
    ap.add_argument("--merge-first", type=int, nargs="*", default=[], metavar="K",
                    help="also report the discretised bound of the chain whose first K + 1 steps are merged")
    ap.add_argument("--no-discretized", action="store_true",
                    help="skip the bound with the discretised decoder (one pass of the chain fewer)")
    ap.add_argument("--num-steps", type=int, default=1000, help="chain length N (default 1000)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the initialisation and noise (default 0)")
    ap.add_argument("--tol", type=float, default=1e-5, help="ODE rtol = atol (default 1e-5)")
    ap.add_argument("--test-images", type=int, default=None, help="evaluate on the first N test digits (default all)")
    ap.add_argument("--save", type=str, default=None, metavar="DIR",
                    help="save the trained EMA weights as a checkpoint in this directory")
    ap.add_argument("--load", type=str, default=None, metavar="FILE",
                    help="skip training: load a checkpoint written with --save")
    ap.add_argument("--samples", type=str, default=None, help="write 64 ancestral samples to this PNG")
    ap.add_argument("--json", type=str, default=None, help="write the figures to this JSON file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    with torch.random.fork_rng():
        torch.manual_seed(args.seed)  # network initialisation only (a script may seed; the library never does)
        net = build_network("digits", out_channels=2 if args.var != "beta" else None)
    train_k, test_k = D.load_digits("train", levels=True), D.load_digits("test", levels=True)[: args.test_images]
    dim = test_k[0].numel()
    sde = sd.VPSDE()
    chain = DiscreteChain.from_sde(sde, args.num_steps)

    t0 = time.time()
    if args.load:
        state = load_checkpoint(args.load)
        net.load_state_dict(state["ema"])
        ema, args.steps = net.requires_grad_(False), state["step"]
    else:
        ema = train(net, chain, train_k, args, gen)
        if args.save:
            print(f"saved {save_checkpoint({'step': args.steps, 'ema': ema.state_dict()}, args.save)}")
    train_s = time.time() - t0
    print(f"trained in {train_s:.0f} s", flush=True)
    ema.eval()
    net64 = Float32Net(ema)
    kernel = GaussianReverseKernel(chain, net64, var_type=args.var)

    res = {"baseline": round(D.digits_histogram_bpd(), 4)}
    t0 = time.time()
    x_c = centres(test_k)
    y = dequantize(test_k, gen)
    with torch.no_grad():
        cont = vlb(kernel, y, generator=gen, decoder="gaussian")
        bound_bpd = dequantized_bpd(-cont.total, dim, scale=SCALE, levels=LEVELS)
        res["vlb_dequantized"] = mean_se(bound_bpd)
        res["vlb_dequantized_parts"] = parts(cont, y)
        if not args.no_discretized:
            disc = vlb(kernel, x_c, generator=gen, num_levels=LEVELS)
            res["vlb_discretized"] = mean_se(bits_per_dim(disc.total, x_c))
            res["vlb_discretized_parts"] = parts(disc, x_c)
        for k in args.merge_first:
            merged = GaussianReverseKernel(merged_chain(chain, k), ShiftedNet(net64, k), var_type=args.var)
            res[f"vlb_discretized_merge_{k}"] = mean_se(bits_per_dim(vlb(merged, x_c, generator=gen,
                                                                          num_levels=LEVELS).total, x_c))
    vlb_s = time.time() - t0
    print(f"bounds done in {vlb_s:.0f} s: {res}", flush=True)

    t0 = time.time()
    # std='interpolate': continuous in t, so the adaptive solver meets no jump at each of the 999 grid times
    score_fn = eps_net_to_score_fn(net64, sde, args.num_steps, std="interpolate", eps_channels=test_k.shape[1])
    ll = log_likelihood(score_fn, sde, y, rtol=args.tol, atol=args.tol, generator=gen)
    ode_bpd = dequantized_bpd(ll.logp, dim, scale=SCALE, levels=LEVELS)
    res["ode"] = mean_se(ode_bpd)
    res["ode_minus_vlb_dequantized"] = mean_se(ode_bpd - bound_bpd)  # paired: same y
    res.update(ode_nfe=ll.nfe, ode_tol=args.tol, ode_s=round(time.time() - t0, 1), train_s=round(train_s, 1),
               vlb_s=round(vlb_s, 1), steps=args.steps, objective=args.objective, var=args.var,
               num_steps=args.num_steps, test_images=len(test_k), threads=args.threads, loaded=args.load)
    if args.samples:
        from torchvision.utils import save_image

        with torch.no_grad():
            x = sample_chain(GaussianReverseKernel(chain, ema, var_type=args.var), (64, 1, 8, 8), generator=gen)
        k = torch.round((x.clamp(-1 - DELTA, 1 + DELTA) + 1) * (LEVELS - 1) / 2).clamp(0, LEVELS - 1)
        save_image(k / (LEVELS - 1), args.samples, nrow=8, padding=1)
    print(json.dumps(res, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
