"""Training: one loop you can read top to bottom (nanoGPT's train.py is the model).

    lr (linear warm-up) → evaluate / sample / checkpoint when due → for each micro-batch: forward under
    autocast, per-sample loss, mean, backward → stop on a non-finite loss → clip → Adam step → EMA update → log

Reproducibility: every random draw of step ``s`` (which data rows, dequantisation noise, flips, the loss's
t and noise) comes from generators seeded by ``(seed, s, chunk)``, where a chunk is one micro-batch of one
process. A checkpoint therefore only needs the weights, the optimiser, the EMA and ``s``: a run killed and
resumed from its last checkpoint continues bit for bit (on a CPU) as if it had never stopped, and a run on
``W`` processes with ``A`` accumulation steps sees exactly the batches of one process with ``W·A`` steps.

Multi-GPU / multi-node: launch the same script with ``torchrun``; :func:`setup_distributed` reads its
environment and wraps the model in DistributedDataParallel (NCCL on GPUs, gloo on CPUs). Rank 0 writes
checkpoints, metrics (``metrics.jsonl``), sample grids and evaluations.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from scoresde import checkpoint as ckpt
from scoresde import config as C
from scoresde import data as D
from scoresde._training import (
    batch_rows,
    build_loss,
    build_model,
    build_sde,
    evaluate,
    make_generator,
    prepare_batch,
    save_samples,
)
from scoresde.ema import EMA

__all__ = ["train", "TrainResult", "TrainingDiverged", "DataSource", "load_data", "setup_distributed", "lr_at"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    model: nn.Module  # the trained model (unwrapped)
    ema: EMA
    step: int
    losses: list  # (step, mean loss) for every step run in this call
    workdir: str


@dataclass
class DataSource:
    """Training rows (a tensor ``(N, ...)`` in unit/raw space, or a torch Dataset) and how to read them."""

    train: object
    test: Tensor | None
    shape: tuple  # shape of one sample
    levels: int | None  # discrete levels for dequantisation / bits per dim (None: continuous data)


def load_data(cfg: C.DataConfig, seed: int, *, test_images: int = 0) -> DataSource:
    """The training data named by ``cfg`` (toy sets are drawn once from a generator seeded by ``seed``).

    For torchvision sets the test split is loaded only when ``test_images`` > 0 (that many images, in memory).
    """
    if cfg.name in D.TOY_DATASETS:
        n = cfg.toy_size
        train = D.sample_toy(cfg.name, n, generator=make_generator(seed, -1, 0))
        test = D.sample_toy(cfg.name, max(n // 10, 1), generator=make_generator(seed, -2, 0))
        return DataSource(train, test, (2,), None)
    if cfg.name == "digits":
        return DataSource(D.load_digits("train"), D.load_digits("test"), (1, 8, 8), D.DIGITS_LEVELS)
    if cfg.name in D.IMAGE_DATASETS:
        kw = dict(download=cfg.download, image_size=cfg.image_size or None, center_crop=cfg.center_crop or None)
        train = D.image_dataset(cfg.name, cfg.root, split="train", **kw)
        test = None
        if test_images > 0:
            test_set = D.image_dataset(cfg.name, cfg.root, split="test", **kw)
            test = torch.stack([test_set[i][0] for i in range(min(test_images, len(test_set)))])
        return DataSource(train, test, tuple(train[0][0].shape), 256)
    raise C.ConfigError(f"unknown data.name {cfg.name!r}; choose a toy set {sorted(D.TOY_DATASETS)}, 'digits' "
                        f"or an image set {list(D.IMAGE_DATASETS)}")


def setup_distributed(device_type: str) -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; initialises the process group if W > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return rank, world, local


def lr_at(step: int, cfg: C.OptimConfig) -> float:
    """Linear warm-up to ``cfg.lr`` over ``cfg.warmup`` steps, then constant (Song et al. 2021, App. H)."""
    return cfg.lr * min(1.0, (step + 1) / cfg.warmup) if cfg.warmup > 0 else cfg.lr


def _device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    return torch.device(name)


def _resume(workdir, cfg, raw_model, ema, optimizer, resume, device, say) -> int:
    """Load the newest readable checkpoint (0 if none) after checking that its model config matches."""
    found = ckpt.load_latest(workdir, map_location=device)
    if found is None:
        return 0
    if not resume:
        raise FileExistsError(f"{workdir} already holds checkpoints: resume the run (--resume) or pick a new workdir")
    state, path = found
    if state["config"].get("model") != C.to_dict(cfg)["model"]:
        raise C.ConfigError(f"cannot resume from {path}: it was trained with model {state['config'].get('model')}, "
                            f"but the configuration asks for {C.to_dict(cfg)['model']}")
    try:
        raw_model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
    except RuntimeError as err:
        raise C.ConfigError(f"cannot resume from {path}: its weights do not fit this architecture ({err})") from err
    optimizer.load_state_dict(state["optimizer"])
    say(f"resumed from {path} at step {state['step']}")
    return int(state["step"])


def _trim_metrics(path: str, step: int) -> None:
    """Drop metric rows after ``step`` (written by a run that was killed after its last checkpoint)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        rows = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= step]
    with open(path, "w") as f:
        f.writelines(rows)


def train(cfg: C.Config, *, model: nn.Module | None = None, resume: bool = False, stop_after: int | None = None,
          max_seconds: float | None = None, progress: bool = True, say=print) -> TrainResult:
    """Train the score model described by ``cfg`` (or the given ``model``, an nn.Module whose forward is a
    ``score_fn(x, t)``) in ``cfg.training.workdir``.

    ``resume`` continues from the newest readable checkpoint; ``stop_after`` exits the process hard
    (``os._exit``, like a kill) once that many steps have run — used to test resumption. ``max_seconds``
    ends training early (with a checkpoint) once that much wall time has passed.
    """
    C.validate(cfg, model=model is None)  # every value checked before any work (a given model: not [model])
    tc, oc = cfg.training, cfg.optim
    device = _device(tc.device, int(os.environ.get("LOCAL_RANK", "0")))
    rank, world, _ = setup_distributed(device.type)
    master = rank == 0
    say = say if master else (lambda *a, **k: None)
    chunks = world * tc.grad_accum
    if tc.batch_size % chunks:
        raise C.ConfigError(f"training.batch_size={tc.batch_size} must be divisible by "
                            f"processes × grad_accum = {chunks}")
    micro = tc.batch_size // chunks

    data = load_data(cfg.data, tc.seed, test_images=(cfg.eval.num_samples or 10000) if tc.eval_every else 0)
    sde = build_sde(cfg.sde)
    raw_model = (model if model is not None else _seeded_build(cfg, sde, data.shape)).to(device)
    loss_fn = build_loss(cfg.loss)
    ema = EMA(raw_model, oc.ema_decay)
    optimizer = torch.optim.Adam(raw_model.parameters(), lr=oc.lr, betas=(oc.beta1, oc.beta2), eps=oc.eps,
                                 weight_decay=oc.weight_decay)
    os.makedirs(tc.workdir, exist_ok=True)
    metrics_path = os.path.join(tc.workdir, "metrics.jsonl")
    step = _resume(tc.workdir, cfg, raw_model, ema, optimizer, resume, device, say)
    if master:
        _trim_metrics(metrics_path, step)
    net = raw_model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(raw_model, device_ids=ids)
    if tc.compile and device.type == "cuda":
        net = torch.compile(net)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=tc.amp == "bf16" and device.type == "cuda")
    say(f"training {sum(p.numel() for p in raw_model.parameters()):,} parameters on {device} × {world} process(es), "
        f"steps {step}..{tc.steps}, batch {tc.batch_size} = {world} × {tc.grad_accum} × {micro}")

    from tqdm.auto import tqdm

    bar = tqdm(total=tc.steps, initial=step, disable=not (progress and master and sys.stderr.isatty()), desc="train")
    losses, last_ckpt, started = [], None, time.monotonic()
    end = tc.steps
    while step < end:
        # learning rate for this step (warm-up)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, oc)
        # forward / backward over the micro-batches of this process
        total = torch.zeros((), device=device, dtype=torch.float64)
        for m in range(tc.grad_accum):
            chunk = rank * tc.grad_accum + m
            rows = batch_rows(data.train, step, chunk, micro, chunks, tc.seed)
            x0 = prepare_batch(rows, cfg.data, data.levels, make_generator(tc.seed, step, chunk)).to(device)
            gen = make_generator(tc.seed, step, chunk, device=device, stream=1)
            sync = net.no_sync() if world > 1 and m < tc.grad_accum - 1 else contextlib.nullcontext()
            with sync, autocast:
                loss = loss_fn(net, sde, x0, gen).float().mean() / tc.grad_accum
            loss.backward()
            total += loss.detach().double()
        if world > 1:
            torch.distributed.all_reduce(total)
            total /= world
        loss_value = float(total)
        # a non-finite loss stops the run; the last checkpoint on disk is the last good state
        if not math.isfinite(loss_value):
            bar.close()
            where = last_ckpt or ckpt.list_checkpoints(tc.workdir)[-1:] or ["none written yet"]
            raise TrainingDiverged(f"loss is {loss_value} at step {step}; stopping. Last good checkpoint: "
                                   f"{where if isinstance(where, str) else where[0]}")
        # clip, step, EMA
        if oc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(raw_model.parameters(), oc.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(raw_model)
        step += 1
        losses.append((step, loss_value))
        bar.update(1)
        if max_seconds is not None and _out_of_time(started, max_seconds, world, device):
            end = step  # finish this step as the last one (log, checkpoint, sample, evaluate)
        # log, checkpoint, sample, evaluate
        if master and (step % tc.log_every == 0 or step == end):
            recent = [v for _, v in losses[-tc.log_every:]]
            row = {"step": step, "loss": sum(recent) / len(recent), "lr": optimizer.param_groups[0]["lr"]}
            _append_json(metrics_path, row)
            bar.set_postfix(loss=f"{loss_value:.4g}")
            if bar.disable:
                say(json.dumps(row))
        if master and (step % tc.ckpt_every == 0 or step == end):
            last_ckpt = ckpt.save_checkpoint(_state(step, raw_model, ema, optimizer, cfg), tc.workdir, keep=tc.keep)
        if master and tc.sample_every and (step % tc.sample_every == 0 or step == end):
            path = save_samples(ema.module, sde, cfg, data, step, device)
            say(f"step {step}: samples written to {path}")
        if master and tc.eval_every and (step % tc.eval_every == 0 or step == end):
            row = {"step": step, **evaluate(ema.module, sde, cfg, data, device)}
            _append_json(metrics_path, row)
            say(json.dumps(row))
        if stop_after is not None and step >= stop_after:
            sys.stdout.flush()
            os._exit(0)  # a hard exit, like a kill: no clean-up, no final checkpoint
    bar.close()
    return TrainResult(raw_model, ema, step, losses, tc.workdir)


def _seeded_build(cfg: C.Config, sde, data_shape: tuple) -> nn.Module:
    """Build the model with its initial weights drawn from ``training.seed``, so a run is reproducible.

    Modules draw their initial weights from the global generator; it is forked here (``fork_rng``) and
    restored on exit, so the caller's random state is left exactly as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(make_generator(cfg.training.seed, -3, 0).get_state())
        return build_model(cfg.model, sde, data_shape)


def _out_of_time(started: float, max_seconds: float, world: int, device) -> bool:
    """True once ``max_seconds`` have passed on any process (all processes agree, so none waits forever)."""
    late = torch.tensor(float(time.monotonic() - started > max_seconds), device=device)
    if world > 1:
        torch.distributed.all_reduce(late, op=torch.distributed.ReduceOp.MAX)
    return bool(late)


def _state(step: int, raw_model: nn.Module, ema: EMA, optimizer, cfg: C.Config) -> dict:
    return {
        "step": step,
        "model": raw_model.state_dict(),
        "ema": ema.state_dict(),
        "optimizer": optimizer.state_dict(),
        "config": C.to_dict(cfg),
        # every random stream is derived from (seed, step); recorded so that a reader can check it
        "rng": {"seed": cfg.training.seed, "scheme": "generator per (seed, step, chunk)"},
    }


def _append_json(path: str, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
