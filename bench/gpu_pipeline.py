"""The whole pipeline on one GPU: SPADE (ngf 64) + ``wct16x`` + exact smoothing, K = 4 styles at 256x256.

Runs :func:`spadepis.pipeline.worker.process_shard` directly (no Prefect: the worker's own throughput) on one
shard of N generated ADE20K label maps, twice (the first run loads the models and compiles; the second is
timed), and prints outputs/s and the per-stage means from the manifest. ``--smoothing-device`` chooses where
exact smoothing runs (``cuda``: batched GPU solver; ``cpu``: CHOLMOD on ``--smoothing-workers`` processes,
overlapped with the GPU stages).

    python bench/gpu_pipeline.py                                       # N=256, batch 32, smoothing on the GPU
    python bench/gpu_pipeline.py --smoothing-device cpu --smoothing-workers 16
    python bench/gpu_pipeline.py --device cpu --smoke                  # runs anywhere: N=4, ngf 8, color

Issue 12's GPU target: >= 300 outputs/s end to end at 256x256, K = 4 (one H100/H200).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("SPADEPIS_SHARED", ROOT.parent / "shared"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--n", type=int, default=256, help="label maps (one shard)")
    p.add_argument("--k", type=int, default=4, help="styles per label map (at most 4)")
    p.add_argument("--batch", type=int, default=32, help="SPADE batch size")
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--stylizer", default="wct16x", choices=("wct16x", "color"))
    p.add_argument("--smoothing-device", default="cuda", choices=("auto", "cpu", "cuda"))
    p.add_argument("--smoothing-workers", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--smoke", action="store_true", help="N=4, batch 2, ngf 8, color stylizer")
    args = p.parse_args()
    if args.smoke:
        args.n, args.batch, args.ngf, args.stylizer = 4, 2, 8, "color"
        if args.device == "cpu":
            args.smoothing_device = "cpu"
    import torch

    from spadepis.pipeline.config import parse_config
    from spadepis.pipeline.demo import DEMO_STYLES, make_label_maps, write_styles
    from spadepis.pipeline.manifest import read_index
    from spadepis.pipeline.plan import make_plan
    from spadepis.pipeline.worker import process_shard

    if args.threads:
        torch.set_num_threads(args.threads)
    weights = SHARED / "weights" / "wct_16x"
    if args.stylizer == "wct16x" and not weights.exists():
        print(f"# {weights} not found: using the color stylizer")
        args.stylizer = "color"
    work = Path(tempfile.mkdtemp(prefix="spadepis-gpu-pipeline-"))
    make_label_maps(work / "labels", args.n)
    write_styles(work / "styles", DEMO_STYLES[: args.k])
    print(f"# device {args.device}, smoothing on {args.smoothing_device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads, load {tuple(round(x, 2) for x in os.getloadavg())}")
    for attempt in ("warm-up", "timed"):
        cfg = parse_config({
            "dataset": {"preset": "ade20k", "labels": str(work / "labels")},
            "styles": {"source": str(work / "styles"), "max_side": 256},
            "models": {"synth_checkpoint": "random-init", "ngf": args.ngf, "stylizer": args.stylizer,
                       "stylizer_weights": str(weights) if args.stylizer == "wct16x" else None,
                       "smoothing": "exact", "smoothing_device": args.smoothing_device},
            "output": str(work / "runs"), "run_id": attempt, "shard_size": args.n, "batch_size": args.batch,
            "device": args.device, "runner": {"kind": "thread", "smoothing_workers": args.smoothing_workers},
        }, source="gpu_pipeline")
        shard = make_plan(cfg).shards[0]
        t0 = time.perf_counter()
        result = process_shard(cfg, shard)
        wall = time.perf_counter() - t0
        print(f"{attempt}: {result.ok} outputs ({result.error} errors) in {wall:.2f} s = {result.ok / wall:.1f} outputs/s")
    from spadepis.pipeline.storage import RunStorage

    RunStorage(cfg.run_uri).write_index()
    df = read_index(cfg.run_uri)
    ok = df[df.status == "ok"]
    stages = ("t_load_ms", "t_synth_ms", "t_stylize_ms", "t_smooth_ms", "t_write_ms")
    print("mean ms per output (manifest; stages overlap, so they add up to more than the wall time):")
    print("  " + ", ".join(f"{s[2:-3]} {ok[s].mean():.1f}" for s in stages))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
