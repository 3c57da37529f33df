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

The run directory (:mod:`scoresde.rundir`): rank 0 holds an exclusive lock on it for the life of the run
(a second run fails at once with :class:`~scoresde.rundir.WorkdirLocked`), deletes the temporaries a
killed run left behind, and tolerates a torn last line of ``metrics.jsonl``. Resuming checks that the
checkpoint was trained with the same configuration, except for the fields in :data:`MAY_CHANGE_ON_RESUME`.
SIGINT and SIGTERM finish the current step, write a checkpoint and raise :class:`TrainingInterrupted`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from scoresde import checkpoint as ckpt
from scoresde import config as C
from scoresde import rundir
from scoresde.builders import build_loss, build_model, build_sde
from scoresde.datastream import DataSource, load_data, make_generator, training_batch
from scoresde.ema import EMA
from scoresde.evaluation import evaluate
from scoresde.images import save_samples
from scoresde.plots import INSTALL_HINT, PLOT_NAME, plot_metrics

__all__ = ["train", "TrainResult", "TrainingDiverged", "TrainingInterrupted", "DataSource", "load_data",
           "setup_distributed", "lr_at", "MAY_CHANGE_ON_RESUME"]

# Config fields that may differ between a checkpoint and the run that resumes it: how long and how the run
# goes on, not what it learns. Everything else (data, model, sde, loss, optim, training.seed,
# training.batch_size) must match unless ``allow_config_change=True``. Bit-exact continuation further
# needs the same grad_accum, number of processes, device and amp.
MAY_CHANGE_ON_RESUME = {
    "training": {"steps", "log_every", "ckpt_every", "keep", "sample_every", "eval_every", "device", "amp",
                 "compile", "workdir", "grad_accum"},
    "sampling": "*",
    "eval": "*",
}


class TrainingDiverged(RuntimeError):
    """The loss, or the model's output, became NaN or infinite; the message names the step and the last
    good checkpoint (nothing is written after the bad step)."""


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived: the step in progress was finished and checkpointed, then training stopped.

    ``step`` is the last step done, ``signum`` the signal, ``checkpoint`` the file written (None on ranks
    other than 0), ``exit_code`` = 128 + ``signum`` (130 for SIGINT, 143 for SIGTERM), what the
    ``scoresde train`` command exits with. Resuming from ``checkpoint`` continues bit for bit.
    """

    def __init__(self, message: str, *, step: int, signum: int, checkpoint: str | None):
        super().__init__(message)
        self.step, self.signum, self.checkpoint = step, signum, checkpoint
        self.exit_code = 128 + signum


class _NonFiniteOutput(Exception):
    """Raised by the trainer's wrapper of the model when its output is not finite (turned into TrainingDiverged)."""


@dataclass
class TrainResult:
    model: nn.Module  # the trained model (unwrapped)
    ema: EMA
    step: int
    losses: list  # (step, mean loss) for every step run in this call
    workdir: str


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


def _resume(workdir, cfg, raw_model, ema, optimizer, resume, allow_config_change, device, say):
    """(step, recent losses, config changes) of the newest readable checkpoint ((0, [], {}) when there is none).

    Without ``resume`` an existing checkpoint is an error, and so is an unreadable one with it (nothing is
    wiped); the checkpoint's configuration must match ``cfg`` outside :data:`MAY_CHANGE_ON_RESUME` unless
    ``allow_config_change``.
    """
    existing = ckpt.list_checkpoints(workdir)
    if existing and not resume:
        raise FileExistsError(f"{workdir} already holds checkpoints ({os.path.basename(existing[-1])}, ...): "
                              "resume the run (--resume) or pick a new workdir")
    found = ckpt.load_latest(workdir, map_location=device)  # raises when files exist but none is readable
    if found is None:
        return 0, [], {}
    state, path = found
    changes = config_differences(state["config"], C.to_dict(cfg))
    if changes and not allow_config_change:
        listing = "; ".join(f"{k}: {old!r} (checkpoint) -> {new!r} (now)" for k, (old, new) in changes.items())
        raise C.ConfigError(
            f"cannot resume from {path}: it was trained with a different configuration ({listing}). Resume with "
            "the checkpoint's values, or pass allow_config_change=True (scoresde train --allow-config-change) to "
            f"continue this run's history with the new ones. Fields that may always change: {_may_change_text()}")
    try:
        raw_model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
    except RuntimeError as err:
        raise C.ConfigError(f"cannot resume from {path}: its weights do not fit this architecture ({err})") from err
    optimizer.load_state_dict(state["optimizer"])
    say(f"resumed from {path} at step {state['step']}")
    if changes:
        say(f"warning: configuration changed on resume (allow_config_change): {changes}")
    recent = [float(v) for v in state.get("recent_losses", [])]
    return int(state["step"]), recent, changes


def config_differences(old: dict, new: dict) -> dict:
    """``{"section.field": (old, new)}`` for the fields outside :data:`MAY_CHANGE_ON_RESUME` that differ.

    ``old`` (a checkpoint's config) is first completed with the current defaults, so a field added to the
    library after the checkpoint was written is not reported as a change.
    """
    with contextlib.suppress(C.ConfigError, TypeError):
        old = C.to_dict(C.from_dict(old))
    changes = {}
    for section in sorted(set(old) | set(new)):
        allowed = MAY_CHANGE_ON_RESUME.get(section, set())
        if allowed == "*":
            continue
        a, b = old.get(section, {}), new.get(section, {})
        for key in sorted(set(a) | set(b)):
            if key not in allowed and a.get(key, "<absent>") != b.get(key, "<absent>"):
                changes[f"{section}.{key}"] = (a.get(key, "<absent>"), b.get(key, "<absent>"))
    return changes


def _may_change_text() -> str:
    return ", ".join(f"{sec}.{keys}" if keys == "*" else ", ".join(f"{sec}.{k}" for k in sorted(keys))
                     for sec, keys in MAY_CHANGE_ON_RESUME.items())


def train(cfg: C.Config, *, model: nn.Module | None = None, resume: bool = False, stop_after: int | None = None,
          max_seconds: float | None = None, allow_config_change: bool = False, progress: bool = True,
          say=print) -> TrainResult:
    """Train the score model described by ``cfg`` (or the given ``model``, an nn.Module whose forward is a
    ``score_fn(x, t)``) in ``cfg.training.workdir``.

    ``resume`` continues from the newest readable checkpoint (its configuration must match ``cfg`` outside
    :data:`MAY_CHANGE_ON_RESUME`, unless ``allow_config_change``); ``stop_after`` exits the process hard
    (``os._exit``, like a kill) once that many steps have run — used to test resumption. ``max_seconds``
    ends training early (with a checkpoint) once that much wall time has passed.

    Raises :class:`~scoresde.rundir.WorkdirLocked` when another run holds the workdir,
    :class:`TrainingDiverged` on a non-finite loss or model output, :class:`TrainingInterrupted` after
    SIGINT / SIGTERM (once the checkpoint of the step in progress is written), ``FileExistsError`` for an
    existing run without ``resume``, :class:`~scoresde.checkpoint.CorruptCheckpointError` when no checkpoint
    of the run is readable (nothing is changed), :class:`~scoresde.config.ConfigError` for a config that
    does not match the checkpoint.
    """
    C.validate(cfg, model=model is None)  # every value checked before any work (a given model: not [model])
    tc = cfg.training
    device = _device(tc.device, int(os.environ.get("LOCAL_RANK", "0")))
    rank, world, _ = setup_distributed(device.type)
    with contextlib.ExitStack() as stack:
        if rank == 0:  # rank 0 owns the run directory
            stack.enter_context(rundir.lock_workdir(tc.workdir))
            removed = rundir.remove_stale_temporaries(tc.workdir)
            if removed:
                say(f"removed {len(removed)} temporary file(s) left by a killed run: "
                    f"{', '.join(os.path.basename(p) for p in removed)}")
        signals = stack.enter_context(_stop_signals())
        return _train(cfg, model, resume, allow_config_change, stop_after, max_seconds, progress, say, device,
                      rank, world, signals)


def _train(cfg, model, resume, allow_config_change, stop_after, max_seconds, progress, say, device, rank, world,
           signals) -> TrainResult:
    tc, oc = cfg.training, cfg.optim
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
    metrics_path = os.path.join(tc.workdir, rundir.METRICS_NAME)
    step, recent, changes = _resume(tc.workdir, cfg, raw_model, ema, optimizer, resume, allow_config_change,
                                    device, say)
    if master:
        rundir.trim_metrics(metrics_path, step)
        if changes:  # the history says where the configuration changed
            rundir.append_metrics(metrics_path, {"step": step, "config_change": {k: list(v) for k, v in
                                                                                  changes.items()}})
    net = raw_model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(raw_model, device_ids=ids)
    if tc.compile and device.type == "cuda":
        net = torch.compile(net)
    score_fn = _checked(net)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=tc.amp == "bf16" and device.type == "cuda")
    say(f"training {sum(p.numel() for p in raw_model.parameters()):,} parameters on {device} × {world} process(es), "
        f"steps {step}..{tc.steps}, batch {tc.batch_size} = {world} × {tc.grad_accum} × {micro}")

    from tqdm.auto import tqdm

    bar = tqdm(total=tc.steps, initial=step, disable=not (progress and master and sys.stderr.isatty()), desc="train")
    losses, last_ckpt, started = [], None, time.monotonic()
    recent = recent[-tc.log_every:]  # the losses of the current logging window (restored on resume)
    end = tc.steps
    while step < end:
        # learning rate for this step (warm-up)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, oc)
        # forward / backward over the micro-batches of this process
        total = torch.zeros((), device=device, dtype=torch.float64)
        for m in range(tc.grad_accum):
            chunk = rank * tc.grad_accum + m
            x0, gen = training_batch(data, cfg.data, tc.seed, step, chunk, micro, chunks, device)
            sync = net.no_sync() if world > 1 and m < tc.grad_accum - 1 else contextlib.nullcontext()
            try:
                with sync, autocast:
                    loss = loss_fn(score_fn, sde, x0, gen).float().mean() / tc.grad_accum
            except _NonFiniteOutput as err:
                bar.close()
                raise TrainingDiverged(f"the model's output is {err} at step {step}; stopping. Last good "
                                       f"checkpoint: {_last_good(last_ckpt, tc.workdir)}") from None
            loss.backward()
            total += loss.detach().double()
        if world > 1:
            torch.distributed.all_reduce(total)
            total /= world
        loss_value = float(total)
        # a non-finite loss stops the run; the last checkpoint on disk is the last good state
        if not math.isfinite(loss_value):
            bar.close()
            raise TrainingDiverged(f"loss is {loss_value} at step {step}; stopping. Last good checkpoint: "
                                   f"{_last_good(last_ckpt, tc.workdir)}")
        # clip, step, EMA
        if oc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(raw_model.parameters(), oc.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(raw_model)
        step += 1
        losses.append((step, loss_value))
        recent = [*recent, loss_value][-tc.log_every:]
        bar.update(1)
        late, signum = _should_stop(started, max_seconds, signals, world, device)
        if late:
            end = step  # finish this step as the last one (log, checkpoint, sample, evaluate)
        # log, checkpoint, sample, evaluate
        if master and (step % tc.log_every == 0 or step == end):
            row = {"step": step, "loss": sum(recent) / len(recent), "lr": optimizer.param_groups[0]["lr"]}
            rundir.append_metrics(metrics_path, row)
            bar.set_postfix(loss=f"{loss_value:.4g}")
            if bar.disable:
                say(json.dumps(row))
        if master and (step % tc.ckpt_every == 0 or step == end or signum):
            last_ckpt = ckpt.save_checkpoint(_state(step, raw_model, ema, optimizer, cfg, recent), tc.workdir,
                                             keep=tc.keep)
        if signum:  # SIGINT / SIGTERM: this step is checkpointed; no sampling or evaluation, stop now
            bar.close()
            name = signal.Signals(signum).name
            say(f"{name} received: stopped after step {step}" + (f", checkpoint {last_ckpt}" if master else ""))
            raise TrainingInterrupted(f"training stopped by {name} after step {step}; checkpoint: {last_ckpt} "
                                      "(resume to continue)", step=step, signum=signum,
                                      checkpoint=last_ckpt if master else None)
        if master and tc.sample_every and (step % tc.sample_every == 0 or step == end):
            path = save_samples(ema.module, sde, cfg, data, step, device)
            say(f"step {step}: samples written to {path}")
        if master and tc.eval_every and (step % tc.eval_every == 0 or step == end):
            row = {"step": step, **evaluate(ema.module, sde, cfg, data, device)}
            rundir.append_metrics(metrics_path, row)
            say(json.dumps(row))
        if stop_after is not None and step >= stop_after:
            sys.stdout.flush()
            os._exit(0)  # a hard exit, like a kill: no clean-up, no final checkpoint
    bar.close()
    if master:
        _plot(metrics_path, say)
    return TrainResult(raw_model, ema, step, losses, tc.workdir)


def _plot(metrics_path: str, say) -> None:
    """Write the loss / test bits/dim curves next to the metrics (skipped, with one line, without matplotlib)."""
    try:
        say(f"curves of loss and test metrics: {plot_metrics(metrics_path)}")
    except ImportError:
        say(f"{PLOT_NAME} skipped: matplotlib is not installed ({INSTALL_HINT})")
    except ValueError as err:  # e.g. no step was run: no loss to draw; training itself went fine
        say(f"{PLOT_NAME} skipped: {err}")


def _checked(net):
    """``score_fn(x, t)`` calling ``net`` and raising :class:`_NonFiniteOutput` when its output (on a CPU)
    holds NaN or infinite values: the trainer reports it as divergence. On a GPU the check would force a
    host synchronisation per call; there the non-finite loss that follows stops the run instead."""

    def score_fn(x, t):
        out = net(x, t)
        if isinstance(out, Tensor) and out.device.type == "cpu" and not torch.isfinite(out).all():
            raise _NonFiniteOutput("NaN" if torch.isnan(out).any() else "infinite")
        return out

    return score_fn


def _last_good(last_ckpt: str | None, workdir: str) -> str:
    if last_ckpt:
        return last_ckpt
    existing = ckpt.list_checkpoints(workdir)
    return existing[-1] if existing else "none written yet"


@contextlib.contextmanager
def _stop_signals():
    """While the ``with`` block runs, SIGINT and SIGTERM only record their number in the yielded list (the
    loop stops after the current step); a second signal stops at once (KeyboardInterrupt / SystemExit).

    Python handles signals only in the main thread: elsewhere the handlers are left as they are.
    """
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def handler(signum, frame):
        if caught:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        caught.append(signum)

    # a signal the parent process chose to ignore (SIG_IGN, e.g. nohup-style launchers) stays ignored
    wanted = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is not signal.SIG_IGN]
    previous = {s: signal.signal(s, handler) for s in wanted}
    try:
        yield caught
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def _seeded_build(cfg: C.Config, sde, data_shape: tuple) -> nn.Module:
    """Build the model with its initial weights drawn from ``training.seed``, so a run is reproducible.

    Modules draw their initial weights from the global generator; it is forked here (``fork_rng``) and
    restored on exit, so the caller's random state is left exactly as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(make_generator(cfg.training.seed, -3, 0).get_state())
        return build_model(cfg.model, sde, data_shape)


def _should_stop(started: float, max_seconds: float | None, signals: list, world: int, device) -> tuple[bool, int]:
    """(out of time, signal number or 0), agreed by all processes (the maximum over them), so none waits
    forever for another that stopped. One process: no tensor, no synchronisation."""
    late = max_seconds is not None and time.monotonic() - started > max_seconds
    signum = signals[0] if signals else 0
    if world > 1:
        flags = torch.tensor([float(late), float(signum)], device=device)
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        late, signum = bool(flags[0]), int(flags[1])
    return late, signum


def _state(step: int, raw_model: nn.Module, ema: EMA, optimizer, cfg: C.Config, recent: list) -> dict:
    return {
        "step": step,
        "model": raw_model.state_dict(),
        "ema": ema.state_dict(),
        "optimizer": optimizer.state_dict(),
        "config": C.to_dict(cfg),
        # every random stream is derived from (seed, step); recorded so that a reader can check it
        "rng": {"seed": cfg.training.seed, "scheme": "generator per (seed, step, chunk)"},
        # the losses of the logging window in progress, so a resumed run logs the same means
        "recent_losses": [float(v) for v in recent],
    }
