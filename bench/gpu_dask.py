"""GPU check of the Dask runner (Area D): a CUDA LocalCluster whose workers advertise GPU=1.

Runs the real ``spadepis-augment`` flow (ephemeral Prefect API) on generated ADE20K label maps x
scikit-image style photos with ``device: cuda``:

1. the thread runner (one shard at a time in the flow process);
2. ``runner: {kind: dask}``: a LocalCluster with one worker per visible GPU, each advertising
   ``GPU=1`` and pinned to its device; shard tasks carry the ``GPU`` resource annotation. If that
   annotation and the workers' resources did not match, no shard would ever be scheduled: the
   script's alarm would fire instead.

Prints: where the probe task ran (worker, resources, CUDA device), outputs/s of both runs, and
whether the two indexes have the same sample ids (they must) and the same image hashes (CUDA
kernels may differ in the last bit between processes; reported, not required).

    python bench/gpu_dask.py                 # about 1-2 minutes on one H100; exits after 230 s at most
    python bench/gpu_dask.py --n 32 --k 4

Without CUDA it says so and runs a small CPU smoke check of the same code path.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def _alarm(signum, frame):  # noqa: ARG001
    raise TimeoutError("gpu_dask.py ran past its time budget (a shard never scheduled? see above)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--ngf", type=int, default=64)
    ap.add_argument("--shard-size", type=int, default=4)
    ap.add_argument("--smoothing", default="fast", choices=["exact", "fast", "none"])
    ap.add_argument("--budget", type=int, default=230, help="seconds before the script gives up")
    args = ap.parse_args()
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(args.budget)

    import pandas as pd
    import torch
    from prefect import flow

    from bench.bench_dask import make_inputs
    from spadepis.flows.augment import augment
    from spadepis.flows.runners import ShardRunner, probe_worker
    from spadepis.pipeline.config import parse_config

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if cuda:
        print(f"CUDA: {torch.cuda.device_count()} device(s), {torch.cuda.get_device_name(0)}; torch {torch.__version__}")
    else:
        print("no CUDA visible: CPU smoke check of the same code path (small sizes)")
        args.n, args.k, args.size, args.ngf = 4, 2, 64, 16

    @flow(name="gpu-dask-probe")
    def probe() -> list[dict]:
        with ShardRunner("dask", n_workers=1, device=device) as runner:
            print(f"runner: {runner.describe()}")
            return [runner.submit(probe_worker, {}).result() for _ in range(2)]

    with tempfile.TemporaryDirectory(prefix="spadepis-gpu-dask-") as tmp:
        tmp = Path(tmp)
        make_inputs(tmp / "in", args.n, args.size, args.k)

        t0 = time.perf_counter()
        for info in probe():
            print(f"probe task ran on worker {info['worker']!r} (resources {info['resources']}), pid {info['pid']}, "
                  f"cuda {info['cuda']}")
        print(f"(probe flow incl. cluster start: {time.perf_counter() - t0:.1f} s)")

        def cfg(out: str, runner: dict):
            return parse_config({
                "dataset": {"preset": "ade20k", "preset_overrides": {"crop_size": args.size}, "labels": str(tmp / "in" / "labels")},
                "styles": {"source": str(tmp / "in" / "styles")},
                "models": {"synth_checkpoint": "random-init", "ngf": args.ngf, "stylizer": "color", "smoothing": args.smoothing},
                "output": str(tmp / out), "run_id": "gpu", "shard_size": args.shard_size, "batch_size": 8,
                "device": device, "runner": runner, "retries": {"count": 0, "delay": 0},
            })

        rows = []
        for label, runner in (("thread x1", {"kind": "thread", "max_concurrency": 1}), ("dask (1 worker/GPU)", {"kind": "dask"})):
            t0 = time.perf_counter()
            res = augment(cfg(label.split()[0], runner))
            wall = time.perf_counter() - t0
            ok = res["summary"]["ok"]
            rows.append((label, ok, wall, res["failed"]))
            print(f"{label}: {ok} outputs in {wall:.1f} s = {ok / wall:.2f} outputs/s; failed shards {res['failed']}")

        a = pd.read_parquet(tmp / "thread" / "gpu" / "index.parquet").sort_values("sample_id")
        b = pd.read_parquet(tmp / "dask" / "gpu" / "index.parquet").sort_values("sample_id")
        same_ids = list(a["sample_id"]) == list(b["sample_id"])
        same_hashes = int((a["sha256"].to_numpy() == b["sha256"].to_numpy()).sum())
        print()
        print(f"{'runner':<22}{'outputs':>9}{'wall s':>9}{'outputs/s':>11}")
        for label, ok, wall, _ in rows:
            print(f"{label:<22}{ok:>9}{wall:>9.1f}{ok / wall:>11.2f}")
        print(f"same sample ids: {same_ids}; identical image hashes: {same_hashes}/{len(a)}; devices in manifest: "
              f"{sorted(set(b['device']))}")
        signal.alarm(0)
        return 0 if same_ids and not any(r[3] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
