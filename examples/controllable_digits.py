"""Controllable generation on the 8×8 digits: inpainting and class-conditional sampling.

1. trains a small digits score model with the library's trainer (``scoresde.train``, preset ``digits``);
2. inpaints the right half of test digits (``scoresde.controllable.inpaint``);
3. trains a noise-conditional ``ConvClassifier`` with ``scoresde.losses.classifier_loss`` and samples each
   class by guidance (``guided_score_fn``), reporting the classifier's accuracy on clean test digits.

PNG grids (``controllable_inpaint.png``, ``controllable_classes.png``) go to a new folder
``outputs/controllable_digits/<date-time>/`` unless ``--out`` names one; a folder that already holds files
(such as ``docs/img``, where the figures of docs/controllable.md live) needs ``--overwrite``. Colourisation
needs colour images; it is demonstrated on the exact 3-channel Gaussian-mixture oracle in the tests instead.

    python examples/controllable_digits.py            # defaults: for a GPU or a free CPU (0.33 s per
                                                      # score-model step on 2 CPU cores shared at load 7)
    python examples/controllable_digits.py --quick    # seconds: a smoke run with tiny budgets
    python examples/controllable_digits.py --score-steps 1000 --classifier-steps 300 --sample-steps 200 \
        --ema-decay 0.99 --threads 1 --out docs/img --overwrite   # the documentation figures (~6 min, 2 cores)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time

import torch

from scoresde import config as C
from scoresde.controllable import ConvClassifier, classifier_log_prob_fn, guided_score_fn, inpaint
from scoresde.data import load_digits
from scoresde.images import save_image_grid
from scoresde.losses import classifier_loss
from scoresde.runtime import configure_threads, output_dir
from scoresde.sampling import sample_pc
from scoresde.sde import VPSDE
from scoresde.train import train


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a smoke run with tiny budgets; its images are noise and "
                                                        "its accuracies near chance (default: off)")
    p.add_argument("--score-steps", type=int, default=3000, help="score-model training steps (default: 3000)")
    p.add_argument("--classifier-steps", type=int, default=1500, help="classifier training steps (default: 1500)")
    p.add_argument("--sample-steps", type=int, default=500, help="predictor-corrector steps (default: 500)")
    p.add_argument("--ema-decay", type=float, default=None, help="EMA decay of the score model (default: the "
                                                                 "digits preset's 0.999; a run of ~1000 steps "
                                                                 "needs less, e.g. 0.99)")
    p.add_argument("--corrector", default="langevin", help="corrector of the PC sampler (default: langevin)")
    p.add_argument("--scale", type=float, default=2.0, help="guidance scale s (default: 2.0)")
    p.add_argument("--seed", type=int, default=0, help="seed of every generator (default: 0)")
    p.add_argument("--out", default=None, help="folder for the PNG grids (default: a new "
                                               "outputs/controllable_digits/<date-time>)")
    p.add_argument("--overwrite", action="store_true", help="allow an --out that already holds files; grids of "
                                                            "the same names are replaced (default: off)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: $SCORESDE_THREADS, else half "
                                                             "the cores, at most 4)")
    args = p.parse_args(argv)
    try:
        args.out = output_dir("controllable_digits", args.out, overwrite=args.overwrite)
    except FileExistsError as err:
        p.error(str(err))
    if args.quick:
        # an almost untrained net returns a ~zero score, for which the Langevin step size (∝ 1/‖score‖²)
        # is meaningless: the smoke run uses the predictor alone (25 steps: the VP reverse-diffusion step needs
        # β(t)/steps < 1)
        args.score_steps, args.classifier_steps, args.sample_steps, args.corrector = 5, 5, 25, "none"
    return args


def train_score_model(steps: int, seed: int, workdir: str, ema_decay: float | None = None):
    cfg = C.preset("digits")
    if ema_decay is not None:
        cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, ema_decay=ema_decay))
    cfg = dataclasses.replace(
        cfg,
        training=dataclasses.replace(cfg.training, steps=steps, seed=seed, device="cpu", workdir=workdir,
                                     log_every=max(1, steps // 10), ckpt_every=steps, sample_every=0,
                                     eval_every=0),
        optim=dataclasses.replace(cfg.optim, warmup=min(cfg.optim.warmup, steps // 10)),
    )
    result = train(cfg, progress=False, say=lambda *a, **k: None)
    model = result.ema.module.eval()
    return model, model.sde if hasattr(model, "sde") else VPSDE()


def train_classifier(sde, x: torch.Tensor, labels: torch.Tensor, steps: int, seed: int) -> ConvClassifier:
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():  # seeded initialisation without changing the global RNG
        torch.manual_seed(seed)
        net = ConvClassifier(1, 10, width=32, depth=2)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(steps):
        idx = torch.randint(x.shape[0], (128,), generator=gen)
        loss = classifier_loss(net, sde, x[idx], labels[idx], generator=gen).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def main(argv=None) -> dict:
    args = parse_args(argv)
    threads = configure_threads(args.threads)
    if args.quick:
        print("SMOKE RUN (--quick): 5 training steps per network, so the images are noise and the accuracies near "
              "chance (0.1); run without --quick for the real figures.")
    print(f"{threads} CPU thread(s); outputs in {args.out}")
    gen = torch.Generator().manual_seed(args.seed)
    to_model, to_unit = (lambda u: 2 * u - 1), (lambda x: (x + 1) / 2)  # the digits preset is centered
    started = time.time()
    with tempfile.TemporaryDirectory() as workdir:
        model, sde = train_score_model(args.score_steps, args.seed, workdir, args.ema_decay)
    score_time = time.time() - started

    # inpainting: right half unknown
    x_test, y_test = load_digits("test", return_labels=True)
    n = 8 if args.quick else 16
    x_known = to_model(x_test[:n])
    mask = torch.ones(1, 8, 8)
    mask[..., 4:] = 0
    res = inpaint(model, sde, x_known, mask, steps=args.sample_steps, corrector=args.corrector, generator=gen)
    save_image_grid([to_unit(x_known), to_unit(x_known) * mask, to_unit(res.x)],
                    os.path.join(args.out, "controllable_inpaint.png"),
                    titles=["test digits", "known: left half", "inpainted"])

    # class-conditional sampling by classifier guidance
    x_train, y_train = load_digits("train", return_labels=True)
    clf = train_classifier(sde, to_model(x_train), y_train, args.classifier_steps, args.seed)
    with torch.no_grad():
        t_eps = torch.full((x_test.shape[0],), 1e-3)
        accuracy = float((clf(to_model(x_test), t_eps).argmax(1) == y_test).float().mean())
    per_class = 1 if args.quick else 6
    labels = torch.arange(10).repeat_interleave(per_class)
    score = guided_score_fn(model, classifier_log_prob_fn(clf), labels, scale=args.scale)
    samples = sample_pc(score, sde, (labels.shape[0], 1, 8, 8), steps=args.sample_steps, corrector=args.corrector,
                        generator=gen).x
    with torch.no_grad():
        agree = float((clf(samples, torch.full((labels.shape[0],), 1e-3)).argmax(1) == labels).float().mean())
    save_image_grid(to_unit(samples), os.path.join(args.out, "controllable_classes.png"), nrow=per_class,
                    titles=[f"guided (s = {args.scale:g}): rows 0-9"])
    report = {"score_train_s": round(score_time, 1), "classifier_test_accuracy": round(accuracy, 3),
              "guided_label_agreement": round(agree, 3), "total_s": round(time.time() - started, 1)}
    print(report)
    print(f"figures: {args.out}/controllable_inpaint.png, {args.out}/controllable_classes.png")
    return report


if __name__ == "__main__":
    main()
