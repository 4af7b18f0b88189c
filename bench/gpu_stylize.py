"""GPU figures for stylization + smoothing (for the lead to run on a CUDA machine; ~1-2 min on an H100).

Prints, for 512x512 and 1024x512 (W x H) with K styles:
* stylize per pair on the GPU (``wct16x`` with ``../shared/weights/wct_16x`` if present, else ``color``);
* smoothing with :class:`spadepis.models.smoothing.TorchSmoothingSystem` (25-band stencil, Jacobi-preconditioned
  CG in float64 on the GPU): set-up once per content, per-style solve time and CG iterations;
* the CPU direct :class:`SmoothingSystem` on the same machine (set-up + solve) and the max |V_gpu - V_cpu|,
  which must stay below 1e-6.

    python bench/gpu_stylize.py [--styles 8] [--device cuda]

Falls back to synthetic images when ``../shared/data/wct2_examples`` is absent, and to the CPU when no CUDA
device is present (then it is slow: use small ``--sizes``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main(argv=None) -> int:
    import torch

    from bench_stylize import WCT16X, load_inputs
    from spadepis.data.images import float_to_uint8
    from spadepis.models.smoothing import SmoothingSystem, TorchSmoothingSystem
    from spadepis.models.stylizers import load_stylizer

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--styles", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--sizes", default="512x512,512x1024", help="HxW list, comma separated")
    p.add_argument("--no-cpu", action="store_true", help="skip the CPU direct comparison")
    args = p.parse_args(argv)
    from spadepis.devices import resolve_device

    device = resolve_device(args.device)
    name = "wct16x" if (WCT16X / "encoder_l1.pth").exists() else "color"
    stylizer = load_stylizer("wct16x", WCT16X, device=device) if name == "wct16x" else load_stylizer("color", device=device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"# gpu_stylize: {gpu}, torch {torch.__version__}, {os.cpu_count()} cpus, python {platform.python_version()}, stylizer {name}")

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for spec in args.sizes.split(","):
        h, w = (int(v) for v in spec.split("x"))
        content, styles, names = load_inputs((h, w), args.styles)
        # warm-up (kernels, cuDNN autotune) on a small crop
        c0, s0 = np.ascontiguousarray(content[:64, :64]), np.ascontiguousarray(styles[0][:64, :64])
        TorchSmoothingSystem(c0, device=device).smooth(float_to_uint8(stylizer.stylize(c0, stylizer.prepare_style(s0))))
        sync()

        t0 = time.perf_counter()
        caches = [stylizer.prepare_style(s) for s in styles]
        sync()
        t1 = time.perf_counter()
        inits, t_styl = [], []
        for cache in caches:
            a = time.perf_counter()
            inits.append(float_to_uint8(stylizer.stylize(content, cache)))
            sync()
            t_styl.append(time.perf_counter() - a)
        t2 = time.perf_counter()
        system = TorchSmoothingSystem(content, device=device)
        sync()
        t3 = time.perf_counter()
        vs, t_solve = [], []
        for init in inits:
            a = time.perf_counter()
            vs.append(system.solve(init))
            sync()
            t_solve.append(time.perf_counter() - a)
        print(f"\n## {w}x{h} (WxH), K={len(styles)}")
        print(f"| {'step':40s} | {'seconds':>9s} |")
        print(f"|{'-' * 42}|{'-' * 11}|")
        print(f"| {'encode style (per style)':40s} | {(t1 - t0) / len(styles):9.3f} |")
        print(f"| {'stylize (median per pair)':40s} | {statistics.median(t_styl):9.3f} |")
        print(f"| {'smoothing set-up (once per content)':40s} | {t3 - t2:9.3f} |")
        print(f"|   {'of which affinity build (CPU numpy)':38s} | {system.build_seconds:9.3f} |")
        print(f"| {'smoothing solve (median per style)':40s} | {statistics.median(t_solve):9.3f} |")
        per_pair = (t1 - t0) / len(styles) + statistics.median(t_styl) + (t3 - t2) / len(styles) + statistics.median(t_solve)
        print(f"| {'total per pair, amortised over K':40s} | {per_pair:9.3f} |")
        print(f"| {'total, one pair alone':40s} | {(t1 - t0) / len(styles) + statistics.median(t_styl) + t3 - t2 + statistics.median(t_solve):9.3f} |")
        print(f"CG iterations per solve: {system.iterations}; relative residual (style 1) {system.residual(inits[0]):.1e}")
        if device.type == "cuda":
            print(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")
        if not args.no_cpu:
            a = time.perf_counter()
            direct = SmoothingSystem(content)
            b = time.perf_counter()
            v_cpu = direct.solve(inits[0])
            c = time.perf_counter()
            diff = float(np.abs(v_cpu - vs[0]).max())
            print(f"CPU direct on this machine: set-up {b - a:.2f} s, solve {c - b:.3f} s; max |V_gpu - V_cpu| = {diff:.2e} "
                  f"({'OK' if diff < 1e-6 else 'TOO LARGE'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
