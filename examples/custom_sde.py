"""A user-defined SDE, with no change to the library: subclass ``scoresde.SDE`` and implement three methods.

The example defines a "cosine" VP-like SDE with ᾱ(t) = cos(π t / 2)² (Nichol & Dhariwal 2021's schedule in
continuous time) through its primitives, checks its marginal against the exact Gaussian-mixture oracle by
sampling with the exact score, then trains a small network with it.

    python examples/custom_sde.py            # ~1 minute on one CPU thread
    python examples/custom_sde.py --quick    # a smoke run: few samples, 20 training steps

It writes no files.
"""

import argparse
import math

import torch

import scoresde as sd
from scoresde.data import toy_mixture
from scoresde.losses import dsm_loss
from scoresde.nn.presets import build_network
from scoresde.runtime import configure_threads
from scoresde.sampling import sample_pc
from scoresde.score import ScoreModel


class CosineSDE(sd.SDE):
    """dx = −½ β(t) x dt + sqrt(β(t)) dw with α(t) = cos(π t / 2 · s) / cos(0), s = 0.99 keeping α(1) > 0.

    β(t) = −2 d log α / dt = π s tan(π s t / 2); σ(t)² = 1 − α(t)² (variance preserving).
    """

    s = 0.99

    def _alpha(self, t):
        return torch.cos(math.pi * self.s * t / 2)

    def beta(self, t):
        return math.pi * self.s * torch.tan(math.pi * self.s * t / 2)

    def drift(self, x, t):
        return -0.5 * self.beta(t).reshape((-1,) + (1,) * (x.ndim - 1)) * x

    def diffusion(self, t):
        return torch.sqrt(self.beta(t))

    def marginal_coeffs(self, t):
        alpha = self._alpha(t)
        return alpha, torch.sqrt(1 - alpha**2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run; its trained-score numbers are meant to "
                                                             "be poor (default: off)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: $SCORESDE_THREADS, else "
                                                                  "half the cores, at most 4)")
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    if args.quick:
        print("SMOKE RUN (--quick): 200 samples and a 20-step network, so the weights below are rough (exact score) "
              "or far off (trained score); run without --quick for the real comparison.")
    gen = torch.Generator().manual_seed(0)
    sde, exact = CosineSDE(), toy_mixture()
    n, steps = (200, 50) if args.quick else (4000, 500)

    # 1. the exact score of the mixture under the new SDE drives the generic sampler
    x = sample_pc(exact.score_fn(sde), sde, (n, 2), steps=steps, generator=gen, dtype=torch.float64).x
    weights = exact.responsibilities(x).argmax(1).bincount(minlength=3).double() / n
    print(f"exact score, custom SDE: mode weights {[round(w, 3) for w in weights.tolist()]} "
          f"(exact {exact.weights.tolist()})")

    # 2. train a network with the same SDE and the generic DSM loss
    torch.manual_seed(0)  # an example script may seed the global generator (network initialisation)
    model = ScoreModel(build_network("mlp", dim=2, hidden=64), sde, parameterization="eps", noise_cond="999t")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    data = exact.sample(20000, generator=gen, dtype=torch.float32)
    for step in range(20 if args.quick else 1500):
        batch = data[torch.randint(0, data.shape[0], (256,), generator=gen)]
        loss = dsm_loss(model, sde, batch, generator=gen).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 500 == 0:
            print(f"step {step}: loss {loss.item():.4f}")
    with torch.no_grad():
        x = sample_pc(model, sde, (n, 2), steps=steps, corrector="none", generator=gen).x.double()
    weights = exact.responsibilities(x).argmax(1).bincount(minlength=3).double() / n
    print(f"trained score, custom SDE: mode weights {[round(w, 3) for w in weights.tolist()]} "
          f"(exact {exact.weights.tolist()})")


if __name__ == "__main__":
    main()
