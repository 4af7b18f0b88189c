"""Semantic vs random style selection on real labelled photos (CamVid), side by side in one process.

A stylize-only run of the val photos (content) with the train photos + label maps as the style pool, once
with ``styles.select: semantic`` and once with ``random`` (same per_sample k, same seed, same stylizer:
``wct16x`` with the real weights in ``../shared/weights/wct_16x``, exact smoothing; label-aware transfer in
both arms, since both have the label maps). Prints, per arm, the mean and p10 of ``style_score``,
``q_coverage``, ``q_style``, ``q_structure`` (and ``q_clipped``, style reuse and the share of
``t_quality_ms`` in ``t_total_ms``), and writes a contact sheet per arm (:func:`spadepis.pipeline.sheet.contact_sheet`).

The shards run through :func:`spadepis.pipeline.worker.process_shard` (the flow's task body) without Prefect.

    python bench/bench_semantic.py --limit 24                     # the first 24 val photos (CPU: ~40 min loaded)
    python bench/bench_semantic.py --photos P --labels L --style-photos SP --style-labels SL --limit 50
    python bench/bench_semantic.py --scale 100000x10000 --skip-runs   # selection cost only, synthetic histograms

``--scale NxS``: time the selection (scores + top-m + seeded draw) for N label maps x S styles of 12
classes with random compositions (the cost of the plan's selection step; the label maps' reading is
separate and linear).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("SPADEPIS_SHARED", ROOT.parent / "shared")).resolve()
CAMVID = SHARED / "data" / "camvid"


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--photos", default=str(CAMVID / "val_img"), help="content photos (folder, glob or list file)")
    p.add_argument("--labels", default=str(CAMVID / "val_label"), help="their label maps (same ids)")
    p.add_argument("--style-photos", default=str(CAMVID / "train_img"), help="style pool photos")
    p.add_argument("--style-labels", default=str(CAMVID / "train_label"), help="style pool label maps (same ids)")
    p.add_argument("--label-nc", type=int, default=12, help="label ids 0..N-1 (CamVid: 11 classes + void)")
    p.add_argument("--ignore", type=int, nargs="*", default=[11], help="label ids left out of the scores (CamVid void)")
    p.add_argument("--weights", default=str(SHARED / "weights" / "wct_16x"), help="wct16x weights folder")
    p.add_argument("--stylizer", default="wct16x", choices=["wct16x", "photowct", "color"])
    p.add_argument("--smoothing", default="exact", choices=["exact", "fast", "none"])
    p.add_argument("--limit", type=int, default=24, help="first N content photos (sorted by id); 0 = all")
    p.add_argument("--k", type=int, default=2, help="styles per photo (per_sample)")
    p.add_argument("--top-m", type=int, default=8, help="semantic: draw among the top m")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-side", type=int, default=1024, help="dataset.max_side (downscale larger photos)")
    p.add_argument("--threads", type=int, default=2, help="torch and BLAS threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=str(ROOT / "out" / "bench_semantic"))
    p.add_argument("--sheet-rows", type=int, default=8)
    p.add_argument("--scale", default="", help="NxS: also time the selection for N label maps x S styles (synthetic)")
    p.add_argument("--skip-runs", action="store_true", help="only the --scale measurement")
    return p.parse_args()


def _config(a: argparse.Namespace, select: str):
    from spadepis.pipeline.config import parse_config

    return parse_config({
        "dataset": {"preset": "custom", "preset_overrides": {"label_nc": a.label_nc, "contain_dontcare_label": False,
                                                             "no_instance": True},
                    "name": f"bench-{select}", "labels": a.labels, "photos": a.photos, "limit": a.limit or None,
                    "max_side": a.max_side},
        "styles": {"source": a.style_photos, "labels": a.style_labels, "select": select, "per_sample": a.k,
                   "top_m": a.top_m if select == "semantic" else None, "ignore_labels": a.ignore},
        "models": {"stylizer": a.stylizer, "stylizer_weights": None if a.stylizer == "color" else a.weights,
                   "smoothing": a.smoothing},
        "output": a.out, "seed": a.seed, "shard_size": 8, "device": a.device,
    })


def _scale(spec: str) -> None:
    import numpy as np

    from spadepis.pipeline.styles import normalised_fractions, select_styles

    n, s = (int(v) for v in spec.lower().split("x"))
    rng = np.random.default_rng(0)
    P = normalised_fractions(rng.dirichlet(np.full(12, 0.4), size=n).astype(np.float32))
    Q = normalised_fractions(rng.dirichlet(np.full(12, 0.4), size=s).astype(np.float32))
    src = [f"c{i:07d}" for i in range(n)]
    sty = [f"s{j:06d}" for j in range(s)]
    t = time.perf_counter()
    sel = select_styles(src, P, sty, Q, mode="semantic", k=2, seed=0, top_m=8)
    dt = time.perf_counter() - t
    probe = min(n, max(1000, n // 20))
    t = time.perf_counter()
    select_styles(src[:probe], P[:probe], sty, Q, mode="random", k=2, seed=0)
    dt_rand = (time.perf_counter() - t) * n / probe
    print(f"\nselection cost, {n} label maps x {s} styles x 12 classes (semantic, k=2, top_m=8): {dt:.1f} s "
          f"({dt / n * 1e6:.0f} us per label map, {n * s / dt / 1e6:.0f} M pairs/s); random with scores and ranks: "
          f"~{dt_rand:.1f} s (extrapolated from {probe}); chosen styles: {len({x for c in sel.styles for x in c})}")


def _run_arm(a: argparse.Namespace, select: str) -> tuple[object, float]:
    from spadepis.pipeline.plan import make_plan
    from spadepis.pipeline.worker import process_shard
    from spadepis.pipeline.storage import RunStorage

    cfg = _config(a, select)
    t = time.perf_counter()
    plan = make_plan(cfg)
    t_plan = time.perf_counter() - t
    for i, shard in enumerate(plan.shards):
        res = process_shard(cfg, shard)
        print(f"  {select}: {shard.name} {'skipped (committed)' if res.skipped else f'{res.ok} ok, {res.error} error, {res.wall_s:.0f} s'}"
              f"  [{i + 1}/{len(plan.shards)}]", flush=True)
    RunStorage(cfg.run_uri).write_index()
    return cfg, t_plan


def main() -> None:
    a = _args()
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(a.threads))
    os.environ.setdefault("MKL_NUM_THREADS", str(a.threads))
    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    print(f"bench_semantic: python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
          f"torch threads {torch.get_num_threads()}, OMP/BLAS threads {os.environ.get('OMP_NUM_THREADS')}, "
          f"loadavg {tuple(round(x, 1) for x in os.getloadavg())} (machine shared with other jobs)")
    if a.scale:
        _scale(a.scale)
    if a.skip_runs:
        return
    from spadepis.pipeline.manifest import read_index
    from spadepis.pipeline.sheet import contact_sheet

    print(f"content {a.photos} (+{a.labels}), limit {a.limit or 'none'}; style pool {a.style_photos} (+{a.style_labels}); "
          f"k={a.k}, seed={a.seed}, top_m={a.top_m}; {a.stylizer}, smoothing {a.smoothing}, device {a.device}")
    frames, sheets = {}, {}
    for select in ("semantic", "random"):
        t = time.perf_counter()
        cfg, t_plan = _run_arm(a, select)
        df = read_index(cfg.run_uri)
        frames[select] = (df, time.perf_counter() - t, t_plan)
        first = sorted(df.source_id.unique())[: a.sheet_rows]
        sheets[select] = Path(a.out) / f"sheet_{select}.png"
        contact_sheet(cfg.run_uri, str(sheets[select]), sources=first, tile=160)
    cols = ("style_score", "q_coverage", "q_style", "q_structure", "q_clipped")
    print(f"\n{'arm':<10}{'rows':>6}{'ok':>5}" + "".join(f"{c + ' mean':>18}{'p10':>7}" for c in cols)
          + f"{'styles used':>13}{'max uses':>10}{'q ms/row':>10}{'q share':>9}{'wall s':>8}")
    for select, (df, wall, t_plan) in frames.items():
        ok = df[df.status == "ok"]
        line = f"{select:<10}{len(df):>6}{len(ok):>5}"
        for c in cols:
            v = ok[c].dropna().to_numpy(float)
            line += f"{v.mean() if v.size else float('nan'):>18.3f}{np.percentile(v, 10) if v.size else float('nan'):>7.3f}"
        uses = ok.style_id.value_counts()
        share = ok.t_quality_ms.sum() / ok.t_total_ms.sum()
        line += f"{len(uses):>13}{int(uses.max()) if len(uses) else 0:>10}{ok.t_quality_ms.mean():>10.1f}{share:>9.2%}{wall:>8.0f}"
        print(line)
    for select, path in sheets.items():
        print(f"contact sheet ({select}): {path}")


if __name__ == "__main__":
    main()
