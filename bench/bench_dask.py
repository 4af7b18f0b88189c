"""Outputs per second of the ``spadepis-augment`` flow with the thread runner and with 1 and 2 Dask workers.

Same config for every row (only ``runner`` changes, which is execution-only, so every row writes the
same sample ids): N generated ADE20K label maps x K style photos at SIZE x SIZE, random-init SPADE
(ngf 16), the color stylizer, exact smoothing by default; shard size S. Each row is a fresh run
(new output folder), through the real flow on an ephemeral Prefect API.

Columns: ``wall s`` is the whole flow (planning, cluster start, shards, index, artifacts);
``outputs/s`` = outputs / wall; ``shards s`` is from the first shard start to the last shard end
(from the _SUCCESS.json markers: commit time and shard wall time), and ``outputs/s (shards)`` divides by that, which leaves out
the fixed costs (cluster start; model loading is inside). ``in flight`` is the mean number of shards
running at once (sum of shard wall times / shards s): about N for N busy workers.

    python bench/bench_dask.py                       # 16 x 2 at 256, exact smoothing, workers 1,2
    python bench/bench_dask.py --n 32 --k 4 --workers 1,2,4 --smoothing fast

Writes bench/results/bench_dask.json. Speed only: correctness is tested in tests/test_dask.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def make_inputs(root: Path, n: int, size: int, k: int) -> None:
    import numpy as np
    from PIL import Image
    from skimage import data as skdata

    (root / "labels").mkdir(parents=True)
    (root / "styles").mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        lab = np.full((size, size), 3, np.uint8)
        for cls in rng.choice([1, 2, 5, 7, 13, 18, 22], size=5, replace=False):
            cy, cx = rng.integers(0, size, 2)
            r = int(rng.integers(size // 8, size // 3))
            lab[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = cls
        Image.fromarray(lab, mode="L").save(root / "labels" / f"scene_{i:03d}.png")
    photos = [skdata.coffee(), skdata.chelsea(), skdata.rocket(), skdata.astronaut(), skdata.immunohistochemistry()]
    for j in range(k):
        Image.fromarray(photos[j % len(photos)]).resize((size, size)).save(root / "styles" / f"style_{j}.png")


def config_for(inputs: Path, out: Path, runner: dict, args, limit: int | None = None) -> object:
    from spadepis.pipeline.config import parse_config

    return parse_config({
        "dataset": {"preset": "ade20k", "preset_overrides": {"crop_size": args.size}, "labels": str(inputs / "labels"),
                    "limit": limit},
        "styles": {"source": str(inputs / "styles")},
        "models": {"synth_checkpoint": "random-init", "ngf": 16, "stylizer": "color", "smoothing": args.smoothing},
        "output": str(out),
        "run_id": "bench",
        "shard_size": args.shard_size,
        "batch_size": 4,
        "device": args.device,
        "runner": runner,
        "retries": {"count": 0, "delay": 0},
    })


def shard_span(run_dir: Path) -> tuple[float, float]:
    """From the _SUCCESS.json markers: seconds from the first shard start to the last shard commit, and
    the mean number of shards in flight over that span (sum of shard wall times / span)."""
    import datetime as dt

    starts, ends, busy = [], [], 0.0
    for marker in (run_dir / "manifest").glob("shard=*/_SUCCESS.json"):
        m = json.loads(marker.read_text())
        end = dt.datetime.fromisoformat(m["committed_at"]).timestamp()
        wall = float(m.get("wall_s", 0.0))
        ends.append(end)
        starts.append(end - wall)
        busy += wall
    if not ends:
        return float("nan"), float("nan")
    span = max(ends) - min(starts)
    return span, (busy / span if span > 0 else float("nan"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=16, help="label maps (default 16)")
    ap.add_argument("--k", type=int, default=2, help="styles per label map (default 2)")
    ap.add_argument("--size", type=int, default=256, help="image side (default 256)")
    ap.add_argument("--shard-size", type=int, default=2, help="label maps per shard (default 2)")
    ap.add_argument("--smoothing", default="exact", choices=["exact", "fast", "none"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", default="1,2", help="Dask worker counts, comma separated (default 1,2)")
    ap.add_argument("--no-thread", action="store_true", help="skip the thread-runner baseline row")
    ap.add_argument("--repeat", type=int, default=1, help="runs per row, interleaved; the median is reported (default 1)")
    args = ap.parse_args()

    import torch

    from spadepis.flows.augment import augment

    rows = []
    with tempfile.TemporaryDirectory(prefix="spadepis-bench-dask-") as tmp:
        tmp = Path(tmp)
        make_inputs(tmp / "in", args.n, args.size, args.k)
        runs = [] if args.no_thread else [("thread x1", {"kind": "thread", "max_concurrency": 1})]
        runs += [(f"dask x{w}", {"kind": "dask", "n_workers": w}) for w in (int(x) for x in args.workers.split(","))]
        # Warm-up: one tiny run in this process (imports, the ephemeral Prefect API), not timed.
        augment(config_for(tmp / "in", tmp / "warm", {"kind": "thread", "max_concurrency": 1}, args, limit=1))
        samples: dict[str, list[dict]] = {label: [] for label, _ in runs}
        n = 0
        for rep in range(args.repeat):
            for label, runner in runs:
                n += 1
                cfg = config_for(tmp / "in", tmp / f"out{n}", runner, args)
                t0 = time.perf_counter()
                res = augment(cfg)
                wall = time.perf_counter() - t0
                if res["failed"]:
                    print(f"{label}: shards failed: {res['failed']}", file=sys.stderr)
                    return 1
                outputs = res["summary"]["ok"]
                span, in_flight = shard_span(tmp / f"out{n}" / "bench")
                samples[label].append({"outputs": outputs, "wall_s": wall, "shards_s": span, "in_flight": in_flight})
                print(f"  {label} (run {rep + 1}): {outputs} outputs in {wall:.1f} s (shards {span:.1f} s, "
                      f"{in_flight:.2f} shards in flight on average)", flush=True)
        for label, _ in runs:
            runs_ = samples[label]
            wall = statistics.median(r["wall_s"] for r in runs_)
            span = statistics.median(r["shards_s"] for r in runs_)
            in_flight = statistics.median(r["in_flight"] for r in runs_)
            outputs = runs_[0]["outputs"]
            rows.append({"runner": label, "outputs": outputs, "wall_s": wall, "outputs_per_s": outputs / wall,
                         "shards_s": span, "outputs_per_s_shards": outputs / span if span > 0 else float("nan"),
                         "in_flight": in_flight, "runs": runs_})

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = "?"
    env = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(), "commit": commit,
           "machine": platform.machine()}
    print()
    print(f"spadepis-augment: {args.n} label maps x {args.k} styles at {args.size}px, shard size {args.shard_size}, "
          f"random-init SPADE ngf16, color stylizer, {args.smoothing} smoothing, device {args.device}")
    print(f"env: {env}")
    print(f"{'runner':<12}{'outputs':>9}{'wall s':>9}{'outputs/s':>11}{'shards s':>10}{'outputs/s (shards)':>20}"
          f"{'in flight':>11}")
    for r in rows:
        print(f"{r['runner']:<12}{r['outputs']:>9}{r['wall_s']:>9.1f}{r['outputs_per_s']:>11.2f}{r['shards_s']:>10.1f}"
              f"{r['outputs_per_s_shards']:>20.2f}{r['in_flight']:>11.2f}")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_dask.json").write_text(json.dumps({"args": vars(args), "env": env, "rows": rows}, indent=2))
    print(f"\nwrote {out / 'bench_dask.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
