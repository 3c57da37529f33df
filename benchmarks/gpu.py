"""GPU suite: training, sampling and likelihood throughput of DDPM++ cont. (VP) and NCSN++ cont. (VE) at CIFAR-10 size.

    python benchmarks/gpu.py                                  # one CUDA GPU, full size, about 6-8 minutes
    python benchmarks/gpu.py --device cpu --quick             # toy widths and batches (the test runs this)
    python benchmarks/gpu.py --models ddpmpp_cont --variants fp32,bf16

Measured for each model (one GPU, batch sizes below; "quick" shrinks widths and batches):

* training throughput, images/s at batch 128 (one DSM step: forward, backward, Adam), for each variant:
  ``fp32``, ``bf16`` (autocast), ``compile`` (``torch.compile``), ``channels_last``, and ``all`` (combined);
  with peak memory and model FLOPs utilisation (MFU) = counted training FLOPs/s ÷ the GPU's peak
  (bf16 tensor-core peak for bf16 variants, TF32 peak for the others: cuDNN convolutions run in TF32 by
  default). Peaks come from a small table of known GPUs or ``--peak-tflops``;
* sampling throughput on a batch of 256: PC (reverse diffusion + Langevin, 1000 steps; timed over
  ``--pc-steps`` steps and scaled to 1000, since each step costs the same two evaluations) and
  DPM-Solver++(3M) with 20 steps (run in full); and the fraction of sampler time spent outside the
  network (1 − network-only time for the same number of evaluations ÷ sampler time);
* likelihood throughput: ``log_likelihood`` with dopri5 (rtol = atol = 1e-5) and one Rademacher probe on a
  batch of 64, stopped after ``--ll-max-nfe`` evaluations if it has not finished. The networks are randomly
  initialised, so the NFE an adaptive solver needs is not that of a trained model; the time per evaluation is.

Writes ``gpu.json`` and ``gpu.md`` (a Markdown table headed by the GPU, driver, torch version and date) to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass

import torch

import scoresde as sd
from scoresde.nn import build_network


@dataclass(frozen=True)
class ModelSpec:
    preset: str  # network preset of scoresde.nn.build_network
    sde: type
    noise_cond: str
    parameterization: str
    sample_eps: float  # the paper's last sampling time for this SDE
    centered: bool  # data in [-1, 1] (VP configs) or [0, 1] (VE configs)


MODELS = {
    "ddpmpp_cont": ModelSpec("ddpmpp_cifar10", sd.VPSDE, "999t", "eps", 1e-3, True),
    "ncsnpp_cont": ModelSpec("ncsnpp_cifar10", sd.VESDE, "sigma", "score", 1e-5, False),
}
VARIANTS = {  # name -> (bf16 autocast, torch.compile, channels_last)
    "fp32": (False, False, False),
    "bf16": (True, False, False),
    "compile": (False, True, False),
    "channels_last": (False, False, True),
    "all": (True, True, True),
}
QUICK_NET = dict(nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,), image_size=32)
#: dense peak TFLOP/s by GPU name fragment: (bf16 tensor core, TF32 tensor core). SXM parts, vendor data sheets.
PEAK_TFLOPS = {"H200": (989.0, 494.0), "H100": (989.0, 494.0), "A100": (312.0, 156.0), "L40S": (362.0, 183.0),
               "A10": (125.0, 62.5), "V100": (125.0, 15.7)}
EPS_T = 1e-5  # training's smallest time: training draws t from [1e-5, 1]


@dataclass(frozen=True)
class Sizes:
    train_batch: int
    train_steps: int
    warmup: int
    sample_batch: int
    pc_steps: int
    dpm_steps: int
    ll_batch: int


FULL = Sizes(train_batch=128, train_steps=20, warmup=5, sample_batch=256, pc_steps=50, dpm_steps=20, ll_batch=64)
QUICK = Sizes(train_batch=4, train_steps=2, warmup=1, sample_batch=4, pc_steps=2, dpm_steps=3, ll_batch=2)


# ------------------------------------------------------------------------------------------------ helpers
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> tuple[object, float]:
    """(fn(), wall seconds), with the device synchronised before and after."""
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - start


def build_model(name: str, device: torch.device, quick: bool) -> tuple[sd.ScoreModel, sd.SDE]:
    spec = MODELS[name]
    torch.manual_seed(0)  # benchmark script, not library code: the same random weights in every run
    net = build_network(spec.preset, **(QUICK_NET if quick else {}))
    sde = spec.sde()
    return sd.ScoreModel(net, sde, spec.parameterization, spec.noise_cond).to(device), sde


def data_batch(name: str, batch: int, device: torch.device, generator=None) -> torch.Tensor:
    u = torch.rand(batch, 3, 32, 32, device=device, generator=generator)
    return u * 2 - 1 if MODELS[name].centered else u


def training_flops(model: sd.ScoreModel, sde, batch: int, device: torch.device) -> float:
    """FLOPs of one DSM training step (forward + backward), counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    x0 = torch.rand(batch, 3, 32, 32, device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        sd.dsm_loss(model, sde, x0, eps=EPS_T).mean().backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def bench_training(name: str, variant: str, sizes: Sizes, device: torch.device, quick: bool, peaks) -> dict:
    bf16, compiled, channels_last = VARIANTS[variant]
    model, sde = build_model(name, device, quick)
    model.train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    flops = training_flops(model, sde, sizes.train_batch, device)
    step_model = torch.compile(model) if compiled else model
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    gen = torch.Generator(device=device).manual_seed(0)
    x0 = data_batch(name, sizes.train_batch, device).to(memory_format=fmt)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = sd.dsm_loss(step_model, sde, x0, eps=EPS_T, generator=gen).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    compile_s = _timed(step, device)[1]  # the first step also compiles
    for _ in range(sizes.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = _timed(lambda: [step() for _ in range(sizes.train_steps)], device)[1]
    per_s = sizes.train_steps / seconds
    peak = peaks[0] if bf16 else peaks[1]
    return {"model": name, "variant": variant, "images_per_s": sizes.train_batch * per_s,
            "step_s": 1 / per_s, "first_step_s": compile_s, "flops_per_step": flops,
            "mfu": flops * per_s / (peak * 1e12) if peak else None,
            "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}


def network_seconds(model, x: torch.Tensor, t: torch.Tensor, calls: int, device: torch.device) -> float:
    """Wall time of ``calls`` bare network evaluations on a fixed input (no sampler around them)."""
    with torch.no_grad():
        return _timed(lambda: [model(x, t) for _ in range(calls)], device)[1]


def bench_sampling(name: str, sizes: Sizes, device: torch.device, quick: bool) -> list[dict]:
    model, sde = build_model(name, device, quick)
    model.eval()
    shape = (sizes.sample_batch, 3, 32, 32)
    eps = MODELS[name].sample_eps
    gen = torch.Generator(device=device).manual_seed(0)
    x = sde.prior_sample(shape, generator=gen, device=device)
    t = torch.full((shape[0],), 0.5, device=device)
    network_seconds(model, x, t, 2, device)  # warm-up
    rows = []
    for sampler in ("pc", "dpm_solver"):
        calls = CountingScore(model)
        if sampler == "pc":  # the first pc_steps steps of the real 1000-step run, then stop
            label, scale = "pc_1000", 1000 / sizes.pc_steps

            def run(calls=calls):
                _stopped_after(sizes.pc_steps, lambda cb: sd.sample_pc(
                    calls, sde, shape, steps=1000, eps=eps, generator=gen, device=device, callback=cb))
        else:
            label, scale = f"dpm_solver_{sizes.dpm_steps}", 1.0

            def run(calls=calls):
                sd.sample_dpm_solver(calls, sde, shape, steps=sizes.dpm_steps, eps=eps, generator=gen, device=device)
        seconds = _timed(run, device)[1]
        outside = 1 - network_seconds(model, x, t, calls.n, device) / seconds
        total = seconds * scale
        rows.append({"model": name, "sampler": label, "batch": shape[0], "timed_nfe": calls.n,
                     "seconds_full_run": total, "images_per_s": shape[0] / total, "fraction_outside_network":
                     max(outside, 0.0), "extrapolated": scale != 1.0})
    return rows


class _Budget(Exception):
    """Raised to stop a timed run early."""


class CountingScore:
    """The model as a plain ``score_fn`` that counts its calls."""

    def __init__(self, model):
        self.model, self.n = model, 0

    def __call__(self, x, t):
        self.n += 1
        return self.model(x, t)


def _stopped_after(steps: int, sample) -> None:
    """Run ``sample(callback)`` until its callback has been called ``steps`` times."""

    def callback(step):  # a scoresde.sampling.SamplerStep
        if step.i + 1 >= steps:
            raise _Budget

    try:
        sample(callback)
    except _Budget:
        pass


def bench_likelihood(name: str, sizes: Sizes, device: torch.device, quick: bool, max_nfe: int) -> dict:
    model, sde = build_model(name, device, quick)
    model.eval()
    gen = torch.Generator(device=device).manual_seed(0)
    x = data_batch(name, sizes.ll_batch, device, gen)
    calls = {"n": 0}

    def capped(xt, tt):
        calls["n"] += 1
        if calls["n"] > max_nfe:
            raise _Budget
        return model(xt, tt)

    start = time.perf_counter()
    try:
        res = sd.log_likelihood(capped, sde, x, divergence="rademacher", generator=gen)
        finished, nfe = True, res.nfe
    except _Budget:
        finished, nfe = False, max_nfe
    _sync(device)
    seconds = time.perf_counter() - start
    return {"model": name, "batch": sizes.ll_batch, "nfe": nfe, "finished": finished, "seconds": seconds,
            "seconds_per_nfe": seconds / nfe, "images_per_s": sizes.ll_batch / seconds if finished else None}


# ------------------------------------------------------------------------------------------------ report
def machine(device: torch.device) -> dict:
    info = {"date": datetime.date.today().isoformat(), "torch": torch.__version__, "python": platform.python_version(),
            "cpu": _cpu_model(), "cores": os.cpu_count(), "device": str(device)}
    if device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda, driver=_driver())
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def _driver() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def peak_tflops(info: dict, override: float | None) -> tuple[float | None, float | None]:
    if override:
        return override, override
    gpu = info.get("gpu", "")
    return next((p for key, p in PEAK_TFLOPS.items() if key in gpu), (None, None))


def _fmt(v, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def markdown(report: dict) -> str:
    m = report["machine"]
    head = (f"# GPU suite — {m.get('gpu', m['cpu'])}\n\n{m['date']}, torch {m['torch']}, CUDA {m.get('cuda', '—')}, "
            f"driver {m.get('driver', '—')}, {m['cores']} CPU cores ({m['cpu']}){', quick sizes' * report['quick']}."
            f"\n\n")
    lines = [head, "## Training (one DSM step, Adam)\n", "| model | variant | images/s | step (ms) | first step (s) "
             "| peak memory (GiB) | MFU |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in report["training"]:
        lines.append(f"| {r['model']} | {r['variant']} | {r['images_per_s']:.1f} | {1e3 * r['step_s']:.1f} | "
                     f"{r['first_step_s']:.1f} | {_fmt(r['peak_memory_gib'], '.2f')} | {_fmt(r['mfu'], '.1%')} |")
    lines += ["", "## Sampling\n", "| model | sampler | batch | images/s | full run (s) | outside the network |",
              "|---|---|---:|---:|---:|---:|"]
    for r in report["sampling"]:
        note = " (scaled from timed steps)" if r["extrapolated"] else ""
        lines.append(f"| {r['model']} | {r['sampler']} | {r['batch']} | {r['images_per_s']:.2f} | "
                     f"{r['seconds_full_run']:.1f}{note} | {r['fraction_outside_network']:.1%} |")
    lines += ["", "## Likelihood (dopri5, rtol = atol = 1e-5, Rademacher)\n",
              "| model | batch | NFE | finished | s / NFE | images/s |", "|---|---:|---:|---|---:|---:|"]
    for r in report["likelihood"]:
        lines.append(f"| {r['model']} | {r['batch']} | {r['nfe']} | {r['finished']} | {r['seconds_per_nfe']:.3f} | "
                     f"{_fmt(r['images_per_s'], '.2f')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--quick", action="store_true", help="toy widths and batches (a smoke test, any device)")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {list(MODELS)}")
    p.add_argument("--variants", default=None, help=f"comma-separated subset of {list(VARIANTS)} (default: all; "
                   "on CPU without a compiler, compile variants fail: pass a subset)")
    p.add_argument("--pc-steps", type=int, default=None, help="PC steps actually timed (scaled to 1000)")
    p.add_argument("--ll-max-nfe", type=int, default=None, help="stop the likelihood solve after this many NFE")
    p.add_argument("--peak-tflops", type=float, default=None, help="the GPU's peak TFLOP/s, for MFU")
    p.add_argument("--out", default="benchmarks/results/gpu", help="folder for gpu.json and gpu.md")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py: error: --device cuda but no CUDA device is visible; use --device cpu")
    models = [m for m in args.models.split(",") if m]
    variants = args.variants.split(",") if args.variants else list(VARIANTS)
    for name, known, what in [(m, MODELS, "--models") for m in models] + [(v, VARIANTS, "--variants")
                                                                         for v in variants]:
        if name not in known:
            raise SystemExit(f"benchmarks/gpu.py: error: {what} got {name!r}; choose from {list(known)}")
    sizes = QUICK if args.quick else FULL
    if args.pc_steps:
        sizes = Sizes(**{**sizes.__dict__, "pc_steps": args.pc_steps})
    max_nfe = args.ll_max_nfe or (4 if args.quick else 300)
    info = machine(device)
    peaks = peak_tflops(info, args.peak_tflops)
    report = {"machine": info, "quick": args.quick, "peak_tflops": {"bf16": peaks[0], "tf32": peaks[1]},
              "training": [], "sampling": [], "likelihood": []}
    for name in models:
        for variant in variants:
            report["training"].append(bench_training(name, variant, sizes, device, args.quick, peaks))
            print(json.dumps(report["training"][-1]), flush=True)
        report["sampling"] += bench_sampling(name, sizes, device, args.quick)
        report["likelihood"].append(bench_likelihood(name, sizes, device, args.quick, max_nfe))
        print(json.dumps(report["sampling"][-2:] + report["likelihood"][-1:]), flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gpu.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(args.out, "gpu.md"), "w") as f:
        f.write(markdown(report))
    print(f"wrote {args.out}/gpu.json and gpu.md")
    return report


if __name__ == "__main__":
    main()
