"""GPU check of the stylizers (Area W): timings on CUDA vs CPU and CUDA/CPU agreement.

    python bench/gpu_photowct.py [--shared ../shared]

Prints one table: stylizer, size, device, prepare_style ms (once per style), stylize ms (per content,
median of 3 after a warm-up), and for CUDA the median / 99th percentile |raw_cuda - raw_cpu| at 512x512.
``photowct`` uses seeded random full-size weights (no photo_wct.pth here; timing does not depend on the
values), ``wct16x`` the real 16x-pruned weights when ``<shared>/weights/wct_16x`` exists. CPU runs only at
512x512 to stay inside a 4-minute budget. Label-aware runs use a 2-region map on content and style.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from spadepis.models.photowct import PhotoWCT
from spadepis.models.stylizers import ColorStylizer, NetworkStylizer, load_stylizer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _images(h: int, w: int, seed: int):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx / w, yy / h, (xx + yy) / (h + w)], -1) * 200 + 20
    img = np.clip(base + rng.normal(0, 15, base.shape), 0, 255).astype(np.uint8)
    seg = (yy > h // 2).astype(np.int64)
    return img, seg


def _stylizers(device: torch.device, shared: Path):
    torch.manual_seed(0)
    out = {"photowct": NetworkStylizer(PhotoWCT().to(device).eval(), weights_sha256="seeded", device=device)}
    weights = shared / "weights" / "wct_16x"
    if weights.exists():
        out["wct16x"] = load_stylizer("wct16x", weights, device=device)
    out["color"] = ColorStylizer(device=device)
    return out


def _time(stylizer, h: int, w: int, device: torch.device, repeats: int = 3):
    content, cseg = _images(h, w, 1)
    style, sseg = _images(h, w, 2)
    _sync(device)
    t0 = time.perf_counter()
    cache = stylizer.prepare_style(style, sseg)
    _sync(device)
    t_prep = (time.perf_counter() - t0) * 1e3
    raw = stylizer.stylize(content, cache, cseg)  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        raw = stylizer.stylize(content, cache, cseg)
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return t_prep, statistics.median(times), raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[1].parent / "shared"))
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    print(f"torch {torch.__version__}, python {platform.python_version()}, threads {torch.get_num_threads()}, "
          f"cuda {torch.cuda.get_device_name(0) if cuda else 'none'}")
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if cuda else [])
    cpu_raw: dict[str, np.ndarray] = {}
    print(f"{'stylizer':9} {'size':>9} {'device':6} {'prepare ms':>11} {'stylize ms':>11} {'|cuda-cpu| med':>15} {'p99':>8}")
    for device in devices:
        stylizers = _stylizers(device, Path(args.shared))
        for name, stylizer in stylizers.items():
            for h, w in ((512, 512), (512, 1024)):
                if device.type == "cpu" and (h, w) != (512, 512):
                    continue
                t_prep, t_sty, raw = _time(stylizer, h, w, device, repeats=1 if device.type == "cpu" else 3)
                extra = ""
                if (h, w) == (512, 512):
                    if device.type == "cpu":
                        cpu_raw[name] = raw
                    elif name in cpu_raw:
                        d = np.abs(raw - cpu_raw[name])
                        extra = f"{np.median(d):15.2e} {np.quantile(d, 0.99):8.2e}"
                print(f"{name:9} {f'{w}x{h}':>9} {device.type:6} {t_prep:11.1f} {t_sty:11.1f} {extra}", flush=True)
    if cuda:
        print(f"peak CUDA memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
