"""Forward and forward+backward time of the CIFAR-10 score networks: float32, bf16 autocast, torch.compile.

    python benchmarks/networks.py --quick                      # NCSN++ cont. only, batch 4, 2 reps
    python benchmarks/networks.py --batch 64 --device cuda --out bench.json

Reports the median wall time per call (seconds) after warm-up, on CPU (threads = --threads) or CUDA.
Reference: the official score_sde_pytorch NCSN++ cont. on 2 CPU threads takes about 0.8 s forward and
2.5 s forward+backward at batch 4.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from scoresde.nn import build_network

PRESETS = ("ncsnpp_cifar10", "ddpmpp_cifar10", "ddpm_cifar10")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, reps: int, warmup: int, device) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_preset(name, mode, batch, reps, warmup, device):
    torch.manual_seed(0)  # benchmark script, not library code: fixed weights for comparability
    net = build_network(name).to(device).train()
    x = torch.rand(batch, 3, 32, 32, device=device)
    noise_cond = torch.rand(batch, device=device) * 10 + 0.01  # valid for σ (Fourier) and 999t (positional)
    model = torch.compile(net) if mode == "compile" else net
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=(mode == "bf16"))

    def forward():
        with torch.no_grad(), amp:
            model(x, noise_cond)

    def forward_backward():
        with amp:
            out = model(x, noise_cond)
        out.float().square().mean().backward()
        net.zero_grad(set_to_none=True)

    return {"preset": name, "mode": mode, "batch": batch,
            "forward_s": time_call(forward, reps, warmup, device),
            "forward_backward_s": time_call(forward_backward, reps, warmup, device)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=list(PRESETS), help="network presets (default: %(default)s)")
    p.add_argument("--modes", nargs="+", default=["float32", "bf16", "compile"], choices=["float32", "bf16", "compile"],
                   help="precision / compilation modes (default: %(default)s)")
    p.add_argument("--batch", type=int, default=4, help="batch size (default: %(default)s)")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions, median reported (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up calls (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default: %(default)s)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="device (default: cuda if available, else cpu)")
    p.add_argument("--quick", action="store_true", help="NCSN++ cont. only, float32 and bf16, 2 reps")
    p.add_argument("--out", default="networks_benchmark.json", help="JSON output file (default: %(default)s)")
    args = p.parse_args(argv)
    if args.quick:
        args.presets, args.modes, args.reps = ["ncsnpp_cifar10"], ["float32", "bf16"], 2
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for name in args.presets:
        for mode in args.modes:
            row = bench_preset(name, mode, args.batch, args.reps, args.warmup, device)
            rows.append(row)
            print(f"{name:16s} {mode:8s} batch {args.batch}: forward {row['forward_s']:.3f} s, "
                  f"forward+backward {row['forward_backward_s']:.3f} s", flush=True)
    meta = {"device": str(device), "threads": args.threads, "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "results": rows}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
