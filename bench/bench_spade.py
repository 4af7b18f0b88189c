"""SPADE on CPU: the straightforward forward vs the fast exact path, same weights, full size.

    .venv/bin/python bench/bench_spade.py [--batches 1 8] [--repeats 2] [--threads N] [--json out.json]

Model: the COCO preset at full size (ngf=64, 184 input channels, 256x256), seeded random weights
written to an official-format checkpoint and loaded back with ``load_synthesizer`` (the timings do
not depend on the weight values). Label maps: ``../shared/data/coco_stuff/val_label`` + ``val_inst``
when present (real region structure matters for the boundary-based optimisations), else seeded
blocky maps. Each variant runs in its own subprocess so peak memory (``ru_maxrss``) is its own.

Variants:
  straightforward  dense one-hot through every SPADE convolution in float32 (the official computation)
  fast             FastSPADE float32 (label-index gathers, per-key tables, boundary-only gamma/beta)
  fast-bf16        FastSPADE with bfloat16 weights/activations (reported separately, with its error)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = Path(os.environ.get("SPADEPIS_SHARED", ROOT.parent / "shared"))


def _labels(out: Path) -> str:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from spadepis.data.labelmaps import load_label_and_instance
    from spadepis.data.presets import get_preset

    preset = get_preset("coco")
    lab_dir, inst_dir = SHARED / "data" / "coco_stuff" / "val_label", SHARED / "data" / "coco_stuff" / "val_inst"
    if lab_dir.is_dir() and any(lab_dir.glob("*.png")):
        pairs = [load_label_and_instance(f, inst_dir / f.name if (inst_dir / f.name).exists() else None, preset)
                 for f in sorted(lab_dir.glob("*.png"))]
        labels = np.stack([p[0] for p in pairs])
        inst = np.stack([p[1] if p[1] is not None else p[0] for p in pairs])
        source = f"{len(labels)} COCO-Stuff val maps from {lab_dir}"
    else:
        g = torch.Generator().manual_seed(0)
        coarse = torch.randint(0, 182, (8, 1, 12, 12), generator=g).float()
        labels = F.interpolate(coarse, size=(256, 256), mode="nearest")[:, 0].long().numpy()
        inst = labels.copy()
        source = "8 generated blocky maps (12x12 regions; ../shared not found)"
    np.savez(out, labels=labels, instances=inst)
    return source


def _worker(args) -> None:
    import numpy as np
    import torch

    from spadepis.models.spade import FastSPADE, load_synthesizer

    torch.set_num_threads(args.threads)
    data = np.load(args.data)
    reps = -(-args.batch // len(data["labels"]))
    labels = torch.from_numpy(np.concatenate([data["labels"]] * reps)[: args.batch])
    inst = torch.from_numpy(np.concatenate([data["instances"]] * reps)[: args.batch])
    synth = load_synthesizer(args.ckpt, "coco", device="cpu")
    if args.variant == "straightforward":
        run = lambda: synth.synthesize_reference(labels, inst)  # noqa: E731
    elif args.variant == "fast":
        run = lambda: synth.fast(labels, inst)  # noqa: E731
    else:
        fast = FastSPADE(synth.generator, synth.preset.num_label_channels, True, dtype=torch.bfloat16)
        run = lambda: fast(labels, inst)  # noqa: E731
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.inference_mode():
        run()  # warm-up (oneDNN primitive creation)
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            out = run()
            times.append(time.perf_counter() - t)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    np.save(args.out, out.float().numpy())
    print(json.dumps({"times": times, "rss_loaded_mib": rss0 / 1024, "rss_peak_mib": rss1 / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per variant (after one warm-up run)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    ap.add_argument("--variants", nargs="+", default=["straightforward", "fast", "fast-bf16"])
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return _worker(args)

    import numpy as np
    import torch

    from spadepis.models.spade import random_synthesizer

    threads = args.threads or torch.get_num_threads()
    tmp = Path(tempfile.mkdtemp(prefix="bench_spade_"))
    t0 = time.perf_counter()
    synth = random_synthesizer("coco", ngf=64, seed=0, device="cpu")
    ckpt = tmp / "latest_net_G.pth"
    torch.save(synth.generator.state_dict(), ckpt)
    del synth
    source = _labels(tmp / "labels.npz")
    print(f"# SPADE CPU benchmark: coco preset, ngf=64, 256x256, {threads} threads, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; labels: {source}")
    print(f"# setup {time.perf_counter() - t0:.1f}s; load average at start {os.getloadavg()[0]:.1f}")
    rows = []
    for batch in args.batches:
        outs = {}
        for variant in args.variants:
            out = tmp / f"{variant}_{batch}.npy"
            cmd = [sys.executable, __file__, "--worker", "--variant", variant, "--batch", str(batch), "--ckpt", str(ckpt),
                   "--data", str(tmp / "labels.npz"), "--out", str(out), "--threads", str(threads),
                   "--repeats", str(args.repeats)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode:
                print(f"{variant} batch {batch} failed:\n{res.stderr[-2000:]}")
                continue
            info = json.loads(res.stdout.strip().splitlines()[-1])
            outs[variant] = np.load(out)
            med = statistics.median(info["times"])
            rows.append({"variant": variant, "batch": batch, "median_s": med, "min_s": min(info["times"]),
                         "images_per_s": batch / med, "rss_peak_mib": info["rss_peak_mib"],
                         "rss_forward_mib": info["rss_peak_mib"] - info["rss_loaded_mib"], "times": info["times"]})
            print(f"  ran {variant:15s} batch {batch}: {', '.join(f'{t:.2f}s' for t in info['times'])}", flush=True)
        ref = outs.get("straightforward")
        for r in rows:
            if r["batch"] == batch and ref is not None and r["variant"] in outs:
                r["max_abs_diff"] = float(np.abs(outs[r["variant"]] - ref).max())
        base = next((r for r in rows if r["batch"] == batch and r["variant"] == "straightforward"), None)
        for r in rows:
            if r["batch"] == batch and base:
                r["speedup"] = base["median_s"] / r["median_s"]
    print()
    print(f"| variant | batch | images/s | median s/batch (min) | speed-up | peak RSS MiB | forward RSS MiB | max abs diff vs straightforward |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        diff = r.get("max_abs_diff")
        print(f"| {r['variant']} | {r['batch']} | {r['images_per_s']:.3f} | {r['median_s']:.2f} ({r['min_s']:.2f}) | "
              f"{r.get('speedup', float('nan')):.2f}x | {r['rss_peak_mib']:.0f} | {r['rss_forward_mib']:.0f} | "
              f"{'-' if diff is None else f'{diff:.2e}'} |")
    print(f"\n# load average at end {os.getloadavg()[0]:.1f} (other processes share these cores; compare within one run)")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "threads": threads, "labels": source,
                                               "torch": torch.__version__}, indent=1))


if __name__ == "__main__":
    main()
