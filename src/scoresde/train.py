"""Training: one loop you can read top to bottom (nanoGPT's train.py is the model).

    lr (linear warm-up) → for each micro-batch: forward under autocast, per-sample loss, mean, backward →
    stop on a non-finite loss → clip → Adam step → EMA update → log → checkpoint → sample → evaluate
    (the last four when due after the step, on the step just taken)

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

Your own objects: ``train(cfg, sde=..., model=..., data=...)`` trains a user-written :class:`~scoresde.sde.SDE`,
network and data set with the same loop; whatever is not passed is built from the config
(:func:`build_components`). The config still sets the optimiser, EMA, steps, checkpointing and loss. Each
checkpoint records which objects were the user's (``"user_objects"``: class names, the SDE's
:func:`~scoresde.serialize.sde_config` where it has one, the data's size and a SHA-256 of a data tensor), and a
resume refuses different ones.
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
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from scoresde import checkpoint as ckpt
from scoresde import config as C
from scoresde import rundir
from scoresde.builders import build_training
from scoresde.datastream import DataSource, UserData, as_data_source, load_data, training_batch
from scoresde.ema import EMA
from scoresde.evaluation import evaluate
from scoresde.images import save_samples
from scoresde.plots import INSTALL_HINT, PLOT_NAME, plot_metrics
from scoresde.progress import NullBar, progress_bar
from scoresde.resume import MAY_CHANGE_ON_RESUME, config_differences, describe_user_objects, restore, user_differences
from scoresde.sde import SDE
from scoresde.validation import validate

__all__ = ["train", "OnStep", "TrainResult", "TrainingDiverged", "TrainingInterrupted", "DataSource", "UserData",
           "load_data", "setup_distributed", "lr_at", "MAY_CHANGE_ON_RESUME", "Components", "build_components",
           "describe_user_objects", "config_differences", "user_differences"]

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


#: ``on_step(step, loss, elapsed_seconds) -> bool | None`` of :func:`train`: True ends training after that step.
OnStep = Callable[[int, float, float], "bool | None"]


# --------------------------------------------------------------------------------------------- components
class Components(NamedTuple):
    """What a run trains: its data, SDE, model and loss (:func:`build_components`)."""

    data: DataSource
    sde: SDE
    model: nn.Module
    loss_fn: Callable


def build_components(cfg: C.Config, *, sde: SDE | None = None, model: nn.Module | None = None,
                     data: UserData | None = None) -> Components:
    """The data, SDE, model and loss of a run: the objects given, and the rest built from ``cfg``.

    This is the only place where :func:`train` gets its objects, whether from the config (the data of
    ``cfg.data``, :func:`~scoresde.builders.build_training` for the SDE of ``cfg.sde``, the network of
    ``cfg.model`` on that SDE, initialised from ``training.seed``, and the loss) or from the user (see
    :func:`train` for the accepted forms); the loop is the same.
    """
    tc = cfg.training
    if data is None:
        source = load_data(cfg.data, tc.seed, test_images=(cfg.eval.num_samples or 10000) if tc.eval_every else 0)
    else:
        source = as_data_source(data)
    if tc.eval_every and source.test is None:
        raise C.ConfigError(f"training.eval_every={tc.eval_every} needs a test split, and data= has none: pass "
                            "data=DataSource(train, test, shape, levels) or set training.eval_every=0")
    return Components(source, *build_training(cfg, source.shape, sde=sde, model=model))


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


def train(cfg: C.Config, *, sde: SDE | None = None, model: nn.Module | None = None, data: UserData | None = None,
          resume: bool = False, stop_after: int | None = None, max_seconds: float | None = None,
          allow_config_change: bool = False, progress: bool = True, say=print,
          on_step: OnStep | None = None) -> TrainResult:
    """Train the score model described by ``cfg`` in ``cfg.training.workdir``, or your own SDE, network and data.

    ``sde``: an instance of a :class:`~scoresde.sde.SDE` subclass (yours or a built-in one) used by the loss and
    the samples instead of ``cfg.sde``. ``model``: an ``nn.Module`` whose ``forward(x, t)`` is a
    ``score_fn`` (e.g. a :class:`~scoresde.score.ScoreModel`, which must then be built on the same SDE); without
    it the network of ``cfg.model`` is built on the SDE, with initial weights from ``training.seed``.
    ``data``: the training rows instead of ``cfg.data`` — a tensor ``(N, ...)`` of rows in model space, used as
    they are (cast to float32; no dequantisation, flip or scaling); a torch Dataset, or any object with
    ``len`` and integer indexing, whose items are tensors or ``(tensor, label)`` tuples, also used as they are;
    or a :class:`DataSource` (its ``levels`` then make each batch dequantised, flipped and scaled as
    ``cfg.data`` says, and its ``test`` tensor serves ``training.eval_every``). Batches are drawn from the rows
    by per-epoch permutations seeded from ``training.seed``, exactly as for the built-in data. The
    optimiser, EMA, steps, checkpointing, loss, sampling and evaluation still come from ``cfg``.

    Checkpoints record which of these were yours (``"user_objects"``); to ``resume`` such a run pass the same
    objects again: a different SDE class or parameters, a different network class, or data of another size,
    shape or content (tensors are hashed) is refused with a ``ConfigError`` naming both, unless
    ``allow_config_change``. :func:`scoresde.run.load_run` reads such a run back with ``sde=`` / ``model=``.

    ``resume`` continues from the newest readable checkpoint (its configuration must match ``cfg`` outside
    :data:`MAY_CHANGE_ON_RESUME`, unless ``allow_config_change``); ``stop_after`` exits the process hard
    (``os._exit``, like a kill) once that many steps have run — used to test resumption. ``max_seconds``
    ends training early (with a checkpoint) once that much wall time has passed.

    ``progress``: a ``tqdm.auto`` bar counting the steps (a widget in notebooks, text on stderr elsewhere),
    unless :func:`scoresde.set_progress` / ``SCORESDE_PROGRESS=0`` turns bars off. Every ``log_every`` steps
    a row goes to ``metrics.jsonl``; it is also printed (``say``) as a JSON line when no bar is shown, or
    when stderr is not a terminal outside a notebook (a log file then still holds the numbers).

    ``on_step(step, loss, elapsed_seconds)``: called on rank 0 after each optimisation step with the number
    of steps done, that step's loss and the wall seconds since training started in this call. Returning
    ``True`` ends training after that step, with a checkpoint, exactly as ``max_seconds`` does (every
    process stops at the same step); ``None`` or ``False`` goes on.

    Raises :class:`~scoresde.rundir.WorkdirLocked` when another run holds the workdir,
    :class:`TrainingDiverged` on a non-finite loss or model output, :class:`TrainingInterrupted` after
    SIGINT / SIGTERM (once the checkpoint of the step in progress is written), ``FileExistsError`` for an
    existing run without ``resume``, :class:`~scoresde.checkpoint.CorruptCheckpointError` when no checkpoint
    of the run is readable (nothing is changed), :class:`~scoresde.config.ConfigError` for a config that
    does not match the checkpoint.
    """
    if on_step is not None and not callable(on_step):
        raise TypeError(f"train: on_step must be None or a callable (step, loss, elapsed_seconds) -> bool | None, "
                        f"got {type(on_step).__name__}")
    validate(cfg, model=model is None)  # every value checked before any work (a given model: not [model])
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
        return _train(cfg, sde, model, data, resume, allow_config_change, stop_after, max_seconds, progress, say,
                      device, rank, world, signals, on_step)


def _train(cfg, sde, model, data, resume, allow_config_change, stop_after, max_seconds, progress, say, device, rank,
           world, signals, on_step) -> TrainResult:
    tc, oc = cfg.training, cfg.optim
    master = rank == 0
    say = say if master else (lambda *a, **k: None)
    chunks = world * tc.grad_accum
    if tc.batch_size % chunks:
        raise C.ConfigError(f"training.batch_size={tc.batch_size} must be divisible by "
                            f"processes × grad_accum = {chunks}")
    micro = tc.batch_size // chunks

    components = build_components(cfg, sde=sde, model=model, data=data)  # checks the user's objects too
    user = describe_user_objects(sde, model, data)  # what was the user's, for the checkpoints
    data, sde, raw_model, loss_fn = components
    raw_model = raw_model.to(device)
    ema = EMA(raw_model, oc.ema_decay)
    optimizer = torch.optim.Adam(raw_model.parameters(), lr=oc.lr, betas=(oc.beta1, oc.beta2), eps=oc.eps,
                                 weight_decay=oc.weight_decay)
    os.makedirs(tc.workdir, exist_ok=True)
    metrics_path = os.path.join(tc.workdir, rundir.METRICS_NAME)
    step, recent, changes = restore(tc.workdir, cfg, user, raw_model, ema, optimizer, resume=resume,
                                    allow_config_change=allow_config_change, device=device, say=say)
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

    bar = progress_bar(tc.steps, "train", progress and master, initial=step)
    # the log rows are printed where no bar shows them: no bar, or a stderr that is a file (not a notebook)
    print_rows = isinstance(bar, NullBar) or not (sys.stderr.isatty() or _in_notebook())
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
        asked = bool(master and on_step is not None and on_step(step, loss_value, time.monotonic() - started))
        late, signum = _should_stop(started, max_seconds, signals, world, device, asked)
        if late:
            end = step  # finish this step as the last one (log, checkpoint, sample, evaluate)
        # log, checkpoint, sample, evaluate
        if master and (step % tc.log_every == 0 or step == end):
            row = {"step": step, "loss": sum(recent) / len(recent), "lr": optimizer.param_groups[0]["lr"]}
            rundir.append_metrics(metrics_path, row)
            bar.set_postfix(loss=f"{loss_value:.4g}")
            if print_rows:
                say(json.dumps(row))
        if master and (step % tc.ckpt_every == 0 or step == end or signum):
            last_ckpt = ckpt.save_checkpoint(_state(step, raw_model, ema, optimizer, cfg, recent, user, data.shape),
                                             tc.workdir, keep=tc.keep)
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


def _in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (where tqdm.auto draws a widget although stderr is no terminal)."""
    return "ipykernel" in sys.modules


def _should_stop(started: float, max_seconds: float | None, signals: list, world: int, device,
                 asked: bool = False) -> tuple[bool, int]:
    """(end now, signal number or 0), agreed by all processes (the maximum over them), so none waits forever
    for another that stopped. "End now": out of time, or ``asked`` (rank 0's ``on_step`` returned True).
    One process: no tensor, no synchronisation."""
    late = asked or (max_seconds is not None and time.monotonic() - started > max_seconds)
    signum = signals[0] if signals else 0
    if world > 1:
        flags = torch.tensor([float(late), float(signum)], device=device)
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        late, signum = bool(flags[0]), int(flags[1])
    return late, signum


def _state(step: int, raw_model: nn.Module, ema: EMA, optimizer, cfg: C.Config, recent: list, user: dict,
           data_shape: tuple) -> dict:
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
        # which objects were the user's rather than the config's (None: built from the config)
        "user_objects": user,
        "data_shape": [int(n) for n in data_shape],
    }
