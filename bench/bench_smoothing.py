"""Exact smoothing on the CPU: the ``spadepis smooth`` command vs FastPhotoStyle's way, and 1 vs N smoothing workers.

Two measurements, side by side in one run (the machine may be shared: the load average is printed):

* ``cli``: one ``spadepis smooth`` call on a 512x384 photo (``python -m spadepis smooth``, a fresh process:
  interpreter and imports included) against building the same system and solving it with scipy's
  ``factorized`` as FastPhotoStyle's ``photo_smooth.py`` does (``bench_stylize.reference_smooth``, step for step,
  timed inside an already running process, so it pays no start-up). Both in ``--compat fastphotostyle`` (the
  reference's system); the command's V (``--raw``) is compared with the reference's. The default full-size mode
  of the command is timed too.
* ``workers``: N contents x K stylized images at 256x256 smoothed through :class:`SmoothingPool` with 1 worker
  (in the calling thread) and with 2, 4, ... processes (``--workers``); the pool's start is reported apart. The
  outputs of every pool size must be identical.

BLAS/OpenMP threads are 1 per process (``--threads``), set before any import and printed.

    python bench/bench_smoothing.py                      # both, 3 repeats
    python bench/bench_smoothing.py --only workers --contents 8 --styles 4 --workers 1 2
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _set_threads(n: int) -> None:
    for var in THREAD_VARS:
        os.environ[var] = str(n)


def _photo_pair(h: int, w: int, seed: int = 0):
    """(content, stylized) at h x w: a real photo from ../shared when present, else a synthetic one."""
    import numpy as np
    from PIL import Image

    shared = Path(os.environ.get("SPADEPIS_SHARED", ROOT.parent / "shared"))
    photos = sorted((shared / "data" / "camvid" / "train_img").glob("*.jpg"))
    styles = sorted((shared / "data" / "wct2_examples" / "style").glob("*.png"))
    rng = np.random.default_rng(seed)
    if photos and styles:
        content = np.asarray(Image.open(photos[seed % len(photos)]).convert("RGB").resize((w, h), Image.BICUBIC))
        style = np.asarray(Image.open(styles[seed % len(styles)]).convert("RGB").resize((w, h), Image.BICUBIC))
    else:
        y, x = np.mgrid[0:h, 0:w] / max(h, w)
        content = np.clip(np.stack([200 * x, 200 * y, 100 + 50 * x * y], -1) + rng.normal(0, 5, (h, w, 3)), 0, 255)
        style = rng.integers(0, 256, (h, w, 3))
    init = np.clip(0.5 * content + 0.5 * style + rng.normal(0, 8, content.shape), 0, 255)
    return content.astype(np.uint8), init.astype(np.uint8)


def bench_cli(args) -> None:
    import numpy as np

    sys.path.insert(0, str(ROOT / "bench"))
    from bench_stylize import reference_smooth

    from spadepis.data.images import write_png

    h, w = args.cli_size
    content, init = _photo_pair(h, w)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_png(tmp / "content.png", content)
        write_png(tmp / "init.png", init)
        base = [sys.executable, "-m", "spadepis", "smooth", "--content", str(tmp / "content.png"),
                "--init", str(tmp / "init.png"), "--out", str(tmp / "out.png")]
        compat = base + ["--compat", "fastphotostyle", "--raw", str(tmp / "v.npy")]
        times: dict[str, list[float]] = {"reference": [], "cli compat": [], "cli default": []}
        v_ref = None
        for _ in range(args.repeat):  # interleaved, so that load changes hit every side alike
            t0 = time.perf_counter()
            _, v_ref, _ = reference_smooth(init, content)
            times["reference"].append(time.perf_counter() - t0)
            for name, cmd in (("cli compat", compat), ("cli default", base)):
                t0 = time.perf_counter()
                subprocess.run(cmd, env=env, check=True, capture_output=True)
                times[name].append(time.perf_counter() - t0)
        diff = float(np.abs(np.load(tmp / "v.npy") - v_ref).max())
    ref = statistics.median(times["reference"])
    print(f"\n## one {w}x{h} photo (W x H): `spadepis smooth` (new process) vs scipy factorized (FastPhotoStyle)")
    print("| way | median s | runs | speed-up |")
    print("|---|---:|---|---:|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med:.2f} | {', '.join(f'{t:.2f}' for t in ts)} | {ref / med:.1f}x |")
    print(f"max |V(cli compat) - V(reference)| = {diff:.1e}")


def bench_workers(args) -> None:
    import numpy as np

    from spadepis.models.smoothing import SmoothingPool

    h, w = args.size
    jobs = []
    for c in range(args.contents):
        content, _ = _photo_pair(h, w, seed=c)
        inits = [_photo_pair(h, w, seed=100 * c + k)[1] for k in range(args.styles)]
        jobs.append((content, inits))
    outputs = args.contents * args.styles
    print(f"\n## {args.contents} contents x {args.styles} styles at {w}x{h}: exact smoothing through SmoothingPool")
    print("| workers | pool start s | wall s | outputs/s | speed-up | identical |")
    print("|---:|---:|---:|---:|---:|---|")
    reference, base = None, None
    for n in args.workers:
        t0 = time.perf_counter()
        pool = SmoothingPool(n)
        start = time.perf_counter() - t0
        # warm each worker's per-size analysis with one content, as a long-running worker would be
        for f in [pool.submit(jobs[0][0], jobs[0][1][:1]) for _ in range(n)]:
            f.result()
        t0 = time.perf_counter()
        results = [f.result()[0] for f in [pool.submit(c, i) for c, i in jobs]]
        wall = time.perf_counter() - t0
        pool.shutdown()
        if reference is None:
            reference, base = results, wall
        same = all(np.array_equal(a, b) for ra, rb in zip(results, reference) for a, b in zip(ra, rb))
        print(f"| {n} | {start:.2f} | {wall:.2f} | {outputs / wall:.2f} | {base / wall:.2f}x | {same} |", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=("cli", "workers"), default=None)
    p.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads per process")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--cli-size", type=int, nargs=2, default=(384, 512), metavar=("H", "W"))
    p.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"))
    p.add_argument("--contents", type=int, default=8)
    p.add_argument("--styles", type=int, default=4)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()
    _set_threads(args.threads)
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(args.threads)
    print(f"# {platform.machine()}, {os.cpu_count()} cores (affinity {len(os.sched_getaffinity(0))}), "
          f"python {platform.python_version()}")
    print("# threads per process: " + ", ".join(f"{v}={os.environ[v]}" for v in THREAD_VARS)
          + f", torch {torch.get_num_threads()}")
    print(f"# load average at start: {tuple(round(x, 2) for x in os.getloadavg())} (shared machine)")
    if args.only in (None, "cli"):
        bench_cli(args)
    if args.only in (None, "workers"):
        bench_workers(args)
    print(f"\n# load average at end: {tuple(round(x, 2) for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
