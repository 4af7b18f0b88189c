"""Pipeline throughput: the spadepis-augment flow vs chaining the original scripts pair by pair.

N label maps x K styles at 256x256 (ADE20K preset, the demo's generated scenes and bundled photos),
the same SPADE weights (a seeded random-init generator saved as ``latest_net_G.pth`` so both sides
load a real checkpoint file), the same stylizer and smoothing.

* pipeline: ``flows.augment.augment`` (real Prefect flow, ephemeral API) with shards, batched SPADE,
  models loaded once, style caches once per style, the exact smoothing system factorised once per
  content image and solved for each style;
* scripts: what running SPADE's ``test.py`` then FastPhotoStyle's ``demo.py`` for each (label map,
  style) pair amounts to: load the generator, synthesize one image, write a PNG; load the stylizer,
  read the PNG and the style photo, prepare the style, stylize, build and factorise the smoothing
  system, solve, write the PNG. Every pair pays every setup cost again.

Usage::

    python bench/bench_pipeline.py                 # N=16, K=4, color stylizer, exact smoothing
    python bench/bench_pipeline.py --stylizer wct16x --stylizer-weights ../shared/weights/wct_16x
    python bench/bench_pipeline.py --baseline-pairs 16    # time 16 pairs of the baseline, extrapolate

Prints a table (outputs/s, speed-up, per-stage time) and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAGES = ("t_load_ms", "t_synth_ms", "t_stylize_ms", "t_smooth_ms", "t_write_ms")


def baseline_pair(ckpt: str, label_path: Path, style_path: Path, out_dir: Path, args) -> dict[str, float]:
    """One (label map, style) pair the way the original scripts chain: every setup paid again."""
    from spadepis.data.images import float_to_uint8, read_rgb, write_png
    from spadepis.data.labelmaps import load_label_map
    from spadepis.data.presets import get_preset
    from spadepis.pipeline.worker import _read_style
    from spadepis.models.smoothing import prepare_smoother
    from spadepis.models.spade import load_synthesizer, to_uint8
    from spadepis.models.stylizers import load_stylizer

    t = {}
    t0 = time.perf_counter()
    preset = get_preset("ade20k")
    synth = load_synthesizer(ckpt, preset, ngf=args.ngf, device="cpu")
    label = load_label_map(str(label_path), preset)
    t["t_load_ms"] = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    img = to_uint8(synth.synthesize(label[None]))[0]
    t["t_synth_ms"] = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    synth_path = out_dir / f"{label_path.stem}__{style_path.stem}_synth.png"
    write_png(synth_path, img)
    t_write = time.perf_counter() - t0
    t0 = time.perf_counter()
    stylizer = load_stylizer(args.stylizer, args.stylizer_weights, device="cpu")
    content = read_rgb(synth_path)
    cache = stylizer.prepare_style(_read_style(str(style_path), 256))
    raw = stylizer.stylize(content, cache, None)
    init = float_to_uint8(raw)
    t["t_stylize_ms"] = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    out = prepare_smoother(content, args.smoothing)(init)
    t["t_smooth_ms"] = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    write_png(out_dir / f"{label_path.stem}__{style_path.stem}.png", out)
    t["t_write_ms"] = (time.perf_counter() - t0 + t_write) * 1e3
    return t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=16, help="label maps (default 16)")
    ap.add_argument("--k", type=int, default=4, help="styles per label map (default 4, at most 4)")
    ap.add_argument("--ngf", type=int, default=16, help="SPADE width (default 16; official models use 64)")
    ap.add_argument("--stylizer", default="color", choices=["color", "wct16x", "photowct"])
    ap.add_argument("--stylizer-weights", default=None)
    ap.add_argument("--smoothing", default="exact", choices=["exact", "fast", "none"])
    ap.add_argument("--concurrency", type=int, default=2, help="shards at once in the flow (default 2)")
    ap.add_argument("--baseline-pairs", type=int, default=0,
                    help="time only this many baseline pairs and extrapolate (default 0 = all N*K)")
    ap.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args()

    import torch

    from spadepis.flows.augment import augment
    from spadepis.pipeline.config import parse_config
    from spadepis.pipeline.demo import DEMO_STYLES, make_label_maps, write_styles
    from spadepis.pipeline.manifest import read_index
    from spadepis.models.spade import random_synthesizer

    work = Path(args.out or tempfile.mkdtemp(prefix="spadepis-bench-"))
    labels = make_label_maps(work / "labels", args.n)
    styles = write_styles(work / "styles", DEMO_STYLES[: args.k])
    ckpt = work / "latest_net_G.pth"
    torch.save(random_synthesizer("ade20k", ngf=args.ngf, seed=0, device="cpu").generator.state_dict(), ckpt)

    cfg = parse_config({
        "dataset": {"preset": "ade20k", "labels": str(work / "labels")},
        "styles": {"source": str(work / "styles"), "max_side": 256},
        "models": {"synth_checkpoint": str(ckpt), "ngf": args.ngf, "stylizer": args.stylizer,
                   "stylizer_weights": args.stylizer_weights, "smoothing": args.smoothing},
        "output": str(work / "runs"), "run_id": f"bench-{int(time.time())}", "shard_size": 4, "batch_size": 4,
        "device": "cpu", "runner": {"kind": "thread", "max_concurrency": args.concurrency},
    }, source="bench config")

    print(f"work folder {work}; torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    t0 = time.perf_counter()
    result = augment(config=cfg)
    call_s = time.perf_counter() - t0
    df = read_index(result["run_uri"])
    ok = df[df.status == "ok"]
    flow_wall = result["summary"]["wall_s"]
    n_out = len(ok)

    pairs = [(lab, sty) for lab in labels for sty in styles]
    timed = pairs if not args.baseline_pairs else pairs[:: max(1, len(pairs) // args.baseline_pairs)][: args.baseline_pairs]
    base_dir = work / "baseline"
    base_dir.mkdir(exist_ok=True)
    rows = []
    t0 = time.perf_counter()
    for lab, sty in timed:
        rows.append(baseline_pair(str(ckpt), lab, sty, base_dir, args))
    base_wall = time.perf_counter() - t0
    base_rate = len(timed) / base_wall
    flow_rate = n_out / flow_wall
    call_rate = n_out / call_s

    print()
    print(f"N={args.n} label maps x K={args.k} styles at 256x256, stylizer {args.stylizer}, smoothing {args.smoothing}, CPU")
    print(f"{'method':<44}{'outputs':>8}{'wall s':>9}{'out/s':>8}{'speed-up':>10}")
    print(f"{'scripts chained per pair' + (' (sampled)' if args.baseline_pairs else ''):<44}{len(timed):>8}{base_wall:>9.1f}{base_rate:>8.3f}{1.0:>10.2f}")
    print(f"{'spadepis flow (shards phase)':<44}{n_out:>8}{flow_wall:>9.1f}{flow_rate:>8.3f}{flow_rate / base_rate:>10.2f}")
    print(f"{'spadepis flow (whole call, incl. Prefect)':<44}{n_out:>8}{call_s:>9.1f}{call_rate:>8.3f}{call_rate / base_rate:>10.2f}")
    print()
    print("stage time per output (ms): mean [p50 / p95]")
    print(f"{'stage':<14}{'scripts':>26}{'flow (manifest)':>28}")
    for st in STAGES + ("t_total_ms",):
        if st == "t_total_ms":
            b = [sum(r[s] for s in STAGES) for r in rows]
        else:
            b = [r[st] for r in rows]
        import numpy as np

        f = ok[st].to_numpy()
        fmt = lambda v: f"{np.mean(v):8.1f} [{np.percentile(v, 50):7.1f} / {np.percentile(v, 95):7.1f}]"  # noqa: E731
        print(f"{st:<14}{fmt(b):>26}{fmt(f):>28}")
    record = {
        "n": args.n, "k": args.k, "ngf": args.ngf, "stylizer": args.stylizer, "smoothing": args.smoothing,
        "baseline": {"pairs": len(timed), "wall_s": base_wall, "outputs_per_s": base_rate},
        "flow": {"outputs": n_out, "wall_s": flow_wall, "call_s": call_s, "outputs_per_s": flow_rate},
        "speedup_shards_phase": flow_rate / base_rate, "speedup_whole_call": call_rate / base_rate,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
    }
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench_pipeline-{int(time.time())}.json"
    path.write_text(json.dumps(record, indent=1))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
