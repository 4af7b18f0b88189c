"""Pipeline throughput: the spadepis-augment flow vs chaining the original scripts pair by pair.

N label maps x K styles at 256x256 (ADE20K preset, the demo's generated scenes and bundled photos),
the same SPADE weights (a seeded random-init generator saved as ``latest_net_G.pth`` so both sides
load a real checkpoint file), the same stylizer, WCT numerics and smoothing.

* pipeline: ``flows.augment.augment`` (real Prefect flow, ephemeral API) with shards, batched SPADE,
  models loaded once, style caches once per style, the exact smoothing system factorised once per
  content image and solved for each style; ``--concurrency`` shards at once (default 1);
* scripts: what running SPADE's ``test.py`` then FastPhotoStyle's ``demo.py`` for each (label map,
  style) pair amounts to: load the generator, synthesize one image, write a PNG; load the stylizer,
  read the PNG and the style photo, prepare the style, stylize, build and factorise the smoothing
  system, solve, write the PNG. Every pair pays every setup cost again, except the Python/torch start
  of each script (2-3 s here, NOT counted: the baseline is favoured).

Fairness: both sides run in this one process with the same torch intra-op thread count (``--threads``,
default 1) and the same BLAS/OpenMP thread count (set before numpy/torch are imported); with
``--concurrency 1`` the flow runs one shard at a time, so both sides use the same cores. The script
checks that both sides produce the same images (max |diff| per pair, in grey levels).

Usage::

    python bench/bench_pipeline.py                                   # color, N=16, K=4, 1 thread, concurrency 1
    python bench/bench_pipeline.py --stylizer color,wct16x --stylizer-weights ../shared/weights/wct_16x

Prints a table per stylizer (outputs/s, speed-up, per-stage time, limiting stage, agreement) with the
thread settings and the load average, and writes JSON to bench/results/.
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
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")  # a loaded machine starts it slowly
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAGES = ("t_load_ms", "t_synth_ms", "t_stylize_ms", "t_smooth_ms", "t_quality_ms", "t_write_ms")


def baseline_pair(ckpt: str, label_path: Path, style_path: Path, out_dir: Path, args, mode: str) -> dict[str, float]:
    """One (label map, style) pair the way scripts chain: every setup paid again.

    ``mode="original"``: what the original scripts compute, with their algorithms: SPADE's ``test.py`` (dense
    one-hot input through the official generator, ``synthesize_reference``; ``tensor2im`` truncation), then
    FastPhotoStyle's ``process_stylization`` (the stylizer in the reference numerics with the style encoded
    again, then ``photo_smooth.Propagator``: the matting system built from COO window pairs and factorised
    with scipy's SuperLU, mirrored step for step by ``bench_stylize.reference_smooth``). The flow it is
    compared with runs in the reference mode (``models.compat: fastphotostyle``), so both compute the same.
    ``mode="own"``: the same chain made of spadepis' own fast per-image components (fast SPADE path, CHOLMOD
    smoothing), a stricter baseline that isolates what batching and caching across pairs buy.
    """
    from spadepis.data.images import float_to_uint8, read_rgb, write_png
    from spadepis.data.labelmaps import load_label_map
    from spadepis.data.presets import get_preset
    from spadepis.pipeline.model_cache import read_style as _read_style
    from spadepis.models.smoothing import prepare_smoother
    from spadepis.models.spade import load_synthesizer, to_uint8
    from spadepis.models.stylizers import load_stylizer

    original = mode == "original"
    t = {}
    t0 = time.perf_counter()
    preset = get_preset("ade20k")
    synth = load_synthesizer(ckpt, preset, ngf=args.ngf, device="cpu")
    label = load_label_map(str(label_path), preset)
    t["t_load_ms"] = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    img = to_uint8(synth.synthesize_reference(label[None]) if original else synth.synthesize(label[None]))[0]
    t["t_synth_ms"] = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    synth_path = out_dir / f"{label_path.stem}__{style_path.stem}_synth.png"
    write_png(synth_path, img)
    t_write = time.perf_counter() - t0
    t0 = time.perf_counter()
    stylizer = load_stylizer(args.stylizer_name, args.weights, device="cpu",
                             compat="fastphotostyle" if original else None)
    content = read_rgb(synth_path)
    cache = stylizer.prepare_style(_read_style(str(style_path), 256))
    raw = stylizer.stylize(content, cache, None)
    init = float_to_uint8(raw)
    t["t_stylize_ms"] = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    if original:
        from bench_stylize import reference_smooth

        out = reference_smooth(init, content)[0]
    else:
        out = prepare_smoother(content, args.smoothing)(init)
    t["t_smooth_ms"] = (time.perf_counter() - t0) * 1e3
    t["t_quality_ms"] = 0.0  # the scripts compute no quality scores; the flow does (q_* columns)
    t0 = time.perf_counter()
    write_png(out_dir / f"{label_path.stem}__{style_path.stem}.png", out)
    t["t_write_ms"] = (time.perf_counter() - t0 + t_write) * 1e3
    return t


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=16, help="label maps (default 16)")
    ap.add_argument("--k", type=int, default=4, help="styles per label map (default 4, at most 4)")
    ap.add_argument("--ngf", type=int, default=16, help="SPADE width (default 16; official models use 64)")
    ap.add_argument("--stylizer", default="color",
                    help="comma-separated: color, wct16x, photowct (default color); each gets its own table")
    ap.add_argument("--stylizer-weights", default=None,
                    help="weights of wct16x (folder) / photowct (file); default for wct16x: ../shared/weights/wct_16x")
    ap.add_argument("--smoothing", default="exact", choices=["exact", "fast", "none"])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads and BLAS/OpenMP threads of this process, both sides (default 1)")
    ap.add_argument("--concurrency", type=int, default=1, help="shards at once in the flow (default 1)")
    ap.add_argument("--smoothing-workers", type=int, default=1,
                    help="flow: processes for exact smoothing (runner.smoothing_workers, default 1 = in-process)")
    ap.add_argument("--baseline", default="original,own",
                    help="comma-separated baselines, each against its own flow run: original (the original scripts' "
                         "algorithms; flow in the reference mode), own (spadepis' components per pair; flow in the "
                         "default mode). Default: both")
    ap.add_argument("--baseline-pairs", type=int, default=0,
                    help="time only this many baseline pairs and extrapolate (default 0 = all N*K)")
    ap.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--json", default=None, help="where to write the JSON record (default bench/results/bench_pipeline-<time>.json)")
    return ap.parse_args()


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and its children, live (the ephemeral Prefect API server,
    smoothing processes) or finished; psutil when available, else this process only."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil ships with the test extras
        return time.process_time()
    me = psutil.Process()
    t = me.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in me.children(recursive=True):
        try:
            c = child.cpu_times()
            total += c.user + c.system
        except psutil.Error:
            pass
    return total


def _load() -> str:
    a, b, c = os.getloadavg()
    return f"{a:.2f} {b:.2f} {c:.2f}"


BASELINES = {
    "original": "original scripts per pair (their algorithms: dense SPADE, style encoded again, SuperLU photo_smooth)",
    "own": "spadepis' own fast components per pair (fast SPADE, CHOLMOD)",
}


def compare(name, weights, mode, args, work, ckpt, labels, styles, settings) -> dict:
    """Run the flow once and the ``mode`` baseline on (a sample of) the same pairs; print the table; return a record.

    With ``mode="original"`` the flow runs in the reference mode (``models.compat: fastphotostyle``: the
    reference's WCT numerics and photo_smooth's crop/resize), the computation the original scripts do."""
    import numpy as np

    from spadepis.data.images import read_rgb
    from spadepis.flows.augment import augment
    from spadepis.pipeline.config import parse_config
    from spadepis.pipeline.manifest import read_index

    models = {"synth_checkpoint": str(ckpt), "ngf": args.ngf, "stylizer": name,
              "stylizer_weights": weights, "smoothing": args.smoothing}
    if mode == "original":
        models["compat"] = "fastphotostyle"
    cfg = parse_config({
        "dataset": {"preset": "ade20k", "labels": str(work / "labels")},
        "styles": {"source": str(work / "styles"), "max_side": 256},
        "models": models,
        "output": str(work / "runs"), "run_id": f"bench-{name}-{mode}-{int(time.time())}", "shard_size": 4,
        "batch_size": 4, "device": "cpu",
        "runner": {"kind": "thread", "max_concurrency": args.concurrency, "smoothing_workers": args.smoothing_workers},
    }, source="bench config")

    t0, c0 = time.perf_counter(), _cpu_s()
    result = augment(config=cfg)
    call_s, flow_cpu = time.perf_counter() - t0, _cpu_s() - c0
    df = read_index(result["run_uri"])
    ok = df[df.status == "ok"]
    flow_wall = result["summary"]["wall_s"]
    n_out = len(ok)

    pairs = [(lab, sty) for lab in labels for sty in styles]
    if args.baseline_pairs and args.baseline_pairs < len(pairs):
        # spread over the label maps and cycle through every style (a plain stride of N*K/m can hit one style only)
        m = args.baseline_pairs
        timed = [(labels[(i * len(labels)) // m], styles[i % len(styles)]) for i in range(m)]
    else:
        timed = pairs
    base_dir = work / f"baseline-{name}-{mode}"
    base_dir.mkdir(exist_ok=True)
    rows = []
    t0, c0 = time.perf_counter(), _cpu_s()
    for lab, sty in timed:
        rows.append(baseline_pair(str(ckpt), lab, sty, base_dir, args, mode))
    base_wall, base_cpu = time.perf_counter() - t0, _cpu_s() - c0
    base_rate = len(timed) / base_wall
    flow_rate = n_out / flow_wall
    call_rate = n_out / call_s

    # do both sides compute the same? max |diff| per pair, grey levels
    flow_img = {(r.source_id, r.style_id): r.image_uri for r in ok.itertuples()}
    flow_synth = {r.source_id: r.synth_uri for r in ok.itertuples()}
    diffs, differing, synth_diff = {}, [], 0
    for lab, sty in timed:
        a = read_rgb(flow_img[(lab.stem, sty.stem)]).astype(int)
        b = read_rgb(base_dir / f"{lab.stem}__{sty.stem}.png").astype(int)
        diffs[(lab.stem, sty.stem)] = int(np.abs(a - b).max()) if a.shape == b.shape else -1
        differing.append(float((a != b).any(axis=2).mean()) if a.shape == b.shape else 1.0)
        sa = read_rgb(flow_synth[lab.stem]).astype(int)
        sb = read_rgb(base_dir / f"{lab.stem}__{sty.stem}_synth.png").astype(int)
        synth_diff = max(synth_diff, int(np.abs(sa - sb).max()))
    numerics = sorted(set(ok.wct_numerics.dropna()))
    out_hw = read_rgb(next(iter(flow_img.values()))).shape[:2]

    print()
    print(f"== {name} vs {BASELINES[mode]}")
    print(f"   N={args.n} label maps x K={args.k} styles, 256x256 labels -> {out_hw[1]}x{out_hw[0]} outputs, smoothing "
          f"{args.smoothing}, CPU; flow models.compat {models.get('compat')}; WCT numerics (manifest) {', '.join(numerics)}")
    print(f"   {settings}; load average now {_load()}")
    print(f"{'method':<44}{'outputs':>8}{'wall s':>9}{'out/s':>8}{'speed-up':>10}")
    print(f"{'scripts chained per pair' + (' (sampled)' if args.baseline_pairs else ''):<44}{len(timed):>8}{base_wall:>9.1f}{base_rate:>8.3f}{1.0:>10.2f}")
    print(f"{'spadepis flow (shards phase)':<44}{n_out:>8}{flow_wall:>9.1f}{flow_rate:>8.3f}{flow_rate / base_rate:>10.2f}")
    print(f"{'spadepis flow (whole call, API already up)':<44}{n_out:>8}{call_s:>9.1f}{call_rate:>8.3f}{call_rate / base_rate:>10.2f}")
    cpu_ratio = (n_out / flow_cpu) / (len(timed) / base_cpu)
    print(f"CPU time (this process + children, incl. the Prefect API server): scripts {base_cpu:.1f} s, flow whole "
          f"call {flow_cpu:.1f} s -> outputs per CPU-second {cpu_ratio:.2f}x (independent of how many cores each "
          "side kept busy, and less sensitive than wall time to the other jobs on the machine)")
    print()
    print("stage time per output (ms): mean [p50 / p95]")
    print(f"{'stage':<14}{'scripts':>26}{'flow (manifest)':>28}")
    flow_means = {}
    for st in STAGES + ("t_total_ms",):
        b = [sum(r[s] for s in STAGES) for r in rows] if st == "t_total_ms" else [r[st] for r in rows]
        f = ok[st].to_numpy()
        if st != "t_total_ms":
            flow_means[st] = float(np.mean(f))
        fmt = lambda v: f"{np.mean(v):8.1f} [{np.percentile(v, 50):7.1f} / {np.percentile(v, 95):7.1f}]"  # noqa: E731
        print(f"{st:<14}{fmt(b):>26}{fmt(f):>28}")
    limit = max(flow_means, key=flow_means.get)
    share = flow_means[limit] / sum(flow_means.values())
    print(f"limiting stage in the flow: {limit} ({100 * share:.0f}% of the per-output stage time)")
    worst = max(diffs.values())
    within = sum(0 <= v <= 1 for v in diffs.values())
    print(f"flow vs scripts images, max |diff| per pair (grey levels): {within}/{len(diffs)} pairs within 1, worst {worst}; "
          f"pixels differing at all: mean {100 * np.mean(differing):.3f}% per pair; SPADE images (flow batch "
          f"{cfg.batch_size}{', fast path' if mode == 'own' else ', fast path vs dense reference'} vs 1) differ by at "
          f"most {synth_diff} grey level(s)")
    for lab in dict.fromkeys(k[0] for k in diffs):
        print(f"  {lab}: " + " ".join(f"{k[1]}={v}" for k, v in diffs.items() if k[0] == lab))
    return {
        "stylizer": name, "baseline": mode, "baseline_means": BASELINES[mode], "flow_compat": models.get("compat"),
        "n": args.n, "k": args.k, "ngf": args.ngf, "smoothing": args.smoothing, "wct_numerics": numerics,
        "scripts": {"pairs": len(timed), "wall_s": base_wall, "outputs_per_s": base_rate},
        "flow": {"outputs": n_out, "wall_s": flow_wall, "call_s": call_s, "outputs_per_s": flow_rate},
        "speedup_shards_phase": flow_rate / base_rate, "speedup_whole_call": call_rate / base_rate,
        "cpu_s": {"scripts": base_cpu, "flow_call": flow_cpu}, "speedup_per_cpu_s": cpu_ratio,
        "stage_means_ms": {"flow": flow_means, "scripts": {st: float(np.mean([r[st] for r in rows])) for st in STAGES}},
        "limiting_stage": limit, "pixels_differing_mean": float(np.mean(differing)), "synth_max_abs_diff": synth_diff,
        "max_abs_diff_per_pair": {f"{a}__{b}": v for (a, b), v in diffs.items()},
    }


def main() -> int:
    args = _parse()
    # BLAS / OpenMP pools are sized when numpy and torch load: set them first
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)

    from spadepis.models.spade import random_synthesizer
    from spadepis.pipeline.demo import DEMO_STYLES, make_label_maps, write_styles

    modes = [m.strip() for m in args.baseline.split(",") if m.strip()]
    unknown = [m for m in modes if m not in BASELINES]
    if unknown or not modes:
        sys.exit(f"--baseline {args.baseline!r}: use a comma list of {', '.join(BASELINES)}")

    work = Path(args.out or tempfile.mkdtemp(prefix="spadepis-bench-"))
    labels = make_label_maps(work / "labels", args.n)
    styles = write_styles(work / "styles", DEMO_STYLES[: args.k])
    ckpt = work / "latest_net_G.pth"
    torch.save(random_synthesizer("ade20k", ngf=args.ngf, seed=0, device="cpu").generator.state_dict(), ckpt)
    settings = (f"torch {torch.__version__}, intra-op threads {torch.get_num_threads()}, "
                f"OMP/MKL/OPENBLAS_NUM_THREADS={args.threads}, flow max_concurrency {args.concurrency}, "
                f"smoothing_workers {args.smoothing_workers}, "
                f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()})")
    print(f"work folder {work}\n{settings}")
    print(f"load average at start: {_load()} (the machine is shared with other jobs; ratios are measured side by side)")

    # Start Prefect's ephemeral API once, before any timing: a fixed cost per process, not per output
    from prefect import flow

    @flow(name="spadepis-bench-warmup")
    def _warmup() -> int:
        return 1

    t0, c0 = time.perf_counter(), _cpu_s()
    _warmup()
    print(f"Prefect ephemeral API start (paid once per process, excluded below): {time.perf_counter() - t0:.1f} s wall, "
          f"{_cpu_s() - c0:.1f} CPU-s")

    records = []
    for name in [x.strip() for x in args.stylizer.split(",") if x.strip()]:
        weights = args.stylizer_weights
        if name == "wct16x" and weights is None:
            weights = str(ROOT.parent / "shared" / "weights" / "wct_16x")
        if name == "color":
            weights = None
        args.stylizer_name, args.weights = name, weights
        for mode in modes:
            if mode == "original" and args.smoothing != "exact":
                print(f"\n== {name}: the original-scripts baseline needs --smoothing exact (photo_smooth); skipped")
                continue
            records.append(compare(name, weights, mode, args, work, ckpt, labels, styles, settings))
    print(f"\nsummary ({settings}; load average {_load()})")
    print(f"{'stylizer':<9}{'baseline':<10}{'scripts out/s':>14}{'flow out/s':>12}{'speed-up':>10}{'per CPU-s':>11}"
          f"{'within 1 grey level':>21}  limiting stage")
    for r in records:
        d = r["max_abs_diff_per_pair"].values()
        print(f"{r['stylizer']:<9}{r['baseline']:<10}{r['scripts']['outputs_per_s']:>14.3f}{r['flow']['outputs_per_s']:>12.3f}"
              f"{r['speedup_shards_phase']:>9.2f}x{r['speedup_per_cpu_s']:>10.2f}x"
              f"{f'{sum(0 <= v <= 1 for v in d)}/{len(d)} (worst {max(d)})':>21}  {r['limiting_stage']}")
    record = {
        "runs": records, "threads": args.threads, "concurrency": args.concurrency,
        "smoothing_workers": args.smoothing_workers, "torch": torch.__version__,
        "python": platform.python_version(), "cpus": os.cpu_count(), "loadavg_end": os.getloadavg(),
    }
    path = Path(args.json) if args.json else ROOT / "bench" / "results" / f"bench_pipeline-{int(time.time())}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    print(f"\nload average at end: {_load()}\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
