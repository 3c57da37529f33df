"""The module walk of the config through ``train(cfg)``: which modules it enters, in order, and how often.

Counted at run time on a one-step toy run that logs, checkpoints, samples and evaluates at that step: a
profiler hook records every call of a ``scoresde`` function that receives the :class:`~scoresde.config.Config`
or one of its sections; the walk moves whenever the innermost such frame changes module (a call into another
module, or the return to the caller's). A module's *entries* are the times the walk arrives in it; the hub,
``scoresde.train``, is re-entered after every call it makes and is reported apart.

    python benchmarks/trainer_walk.py
"""

from __future__ import annotations

import collections
import dataclasses
import sys
import tempfile

import torch

from scoresde import config as C
from scoresde.train import train


def _is_config(value) -> bool:
    return (dataclasses.is_dataclass(value) and not isinstance(value, type)
            and type(value).__module__ == "scoresde.config")


def walk_of_train(cfg: C.Config) -> list[tuple[str, str]]:
    """``[(module, function), ...]``: every move of the config through ``train(cfg)``."""
    walk, stack = [], []

    def hook(frame, event, arg):
        module = frame.f_globals.get("__name__", "")
        if event == "call" and module.startswith("scoresde"):
            code = frame.f_code
            names = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
            if any(_is_config(frame.f_locals.get(n)) for n in names):
                stack.append(frame)
                walk.append((module, code.co_name))
        elif event == "return" and stack and stack[-1] is frame:
            stack.pop()
            if stack:
                walk.append((stack[-1].f_globals["__name__"], f"(back in {stack[-1].f_code.co_name})"))

    sys.setprofile(hook)
    try:
        train(cfg, progress=False, say=lambda *a, **k: None)
    finally:
        sys.setprofile(None)
    return walk


def one_step_config(workdir: str) -> C.Config:
    return C.apply_overrides(C.preset("toy2d"), [
        f"training.workdir={workdir}", "training.steps=1", "training.batch_size=16", "training.sample_every=1",
        "training.eval_every=1", "training.ckpt_every=1", "training.log_every=1", "data.toy_size=64",
        "model.options.hidden=8", "model.options.layers=1", "sampling.num_samples=4", "sampling.steps=2",
        "sampling.corrector=none", "eval.num_samples=4", "eval.rtol=1e-2", "eval.atol=1e-2"])


def main() -> None:
    torch.set_num_threads(1)
    walk = walk_of_train(one_step_config(tempfile.mkdtemp() + "/run"))
    rooms: list[tuple[str, list[str]]] = []
    for module, fn in walk:
        if rooms and rooms[-1][0] == module:
            rooms[-1][1].append(fn)
        else:
            rooms.append((module, [fn]))
    for module, fns in rooms:
        print(f"  {module:22s} {', '.join(dict.fromkeys(fns))}")
    entries = collections.Counter(m for m, _ in rooms)
    hub = entries.pop("scoresde.train", 0)
    print(f"modules entered: {len(entries) + 1} (scoresde.train and {len(entries)} others); moves: {len(rooms) - 1}")
    print(f"entries per module (scoresde.train, the hub, {hub}): {dict(entries.most_common())}")


if __name__ == "__main__":
    main()
