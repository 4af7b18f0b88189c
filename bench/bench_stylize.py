"""Stylization + smoothing benchmark: the reference way vs the project's way, side by side in one run.

One content image at SIZE x SIZE and K styles (real photos from ``../shared/data/wct2_examples``):

* reference way: every (content, style) pair on its own, as FastPhotoStyle's ``process_stylization`` does:
  the style is encoded again, then ``photo_smooth.Propagator`` builds the matting affinity with a COO
  matrix of every window pair, normalises it and factorises it with ``scipy.sparse.linalg.factorized``
  (SuperLU, COLAMD order) and solves the three channels one by one. That smoothing baseline is written
  out below (``reference_smooth``), step for step like ``photo_smooth.py``.
* project's way: ``Stylizer.prepare_style`` once per style (the style cache), one
  :class:`spadepis.models.smoothing.SmoothingSystem` per content image (built and factorised once, nested
  dissection order), one 3-channel solve per style.

Each way runs in its own fresh process so that its peak memory (``ru_maxrss``) is its own. The stylizer is
``wct16x`` with ``../shared/weights/wct_16x`` when present, else ``color``. Also prints the 1024x512
(W x H, the paper's resolution) time of the project's pipeline for one pair and for the per-content
smoothing set-up.

    .venv/bin/python bench/bench_stylize.py                 # K=8 at 512x512, full reference run (~8 min)
    .venv/bin/python bench/bench_stylize.py --ref-pairs 2   # reference way on 2 of the 8 pairs only
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("SPADEPIS_SHARED", ROOT.parent / "shared")).resolve()
EXAMPLES = SHARED / "data" / "wct2_examples"
WCT16X = SHARED / "weights" / "wct_16x"


# --------------------------------------------------------------------------------------------------
# the reference smoothing, mirroring FastPhotoStyle's photo_smooth.Propagator.process
# --------------------------------------------------------------------------------------------------
def reference_smooth(init: np.ndarray, content: np.ndarray, beta: float = 0.9999, eps: float = 1e-7):
    """FastPhotoStyle's exact smoothing, step for step. Returns (uint8 output, V, timings)."""
    import scipy.sparse
    import scipy.sparse.linalg
    from numpy.lib.stride_tricks import sliding_window_view
    from PIL import Image

    t0 = time.perf_counter()
    b = init.astype(np.float64) / 255.0
    h1, w1, k = b.shape
    h, w = h1 - 4, w1 - 4
    b = np.pad(b[2 : 2 + h, 2 : 2 + w], ((2, 2), (2, 2), (0, 0)), mode="edge")  # crop 2, replicate back
    img = np.asarray(Image.fromarray(content).resize((w, h), Image.BILINEAR))  # scipy.misc.imresize
    img = np.pad(img, ((2, 2), (2, 2), (0, 0)), mode="edge").astype(np.float64) / 255.0
    b = b.reshape(h1 * w1, k)
    # matting affinity: every 3x3 window, 81 COO entries each (duplicates summed by the conversion)
    inds = np.arange(h1 * w1).reshape(h1, w1)
    win_inds = sliding_window_view(inds, (3, 3)).reshape(h1 - 2, w1 - 2, 9)
    win_i = img.reshape(h1 * w1, 3)[win_inds]
    win_mu = win_i.mean(axis=2, keepdims=True)
    win_var = np.einsum("...ji,...jk->...ik", win_i, win_i) / 9 - np.einsum("...ji,...jk->...ik", win_mu, win_mu)
    inv = np.linalg.inv(win_var + (eps / 9) * np.eye(3))
    x = np.einsum("...ij,...jk->...ik", win_i - win_mu, inv)
    vals = (1.0 + np.einsum("...ij,...kj->...ik", x, win_i - win_mu)) / 9
    rows = np.repeat(win_inds, 9).ravel()
    cols = np.tile(win_inds, 9).ravel()
    wmat = scipy.sparse.coo_matrix((vals.ravel(), (rows, cols)), shape=(h1 * w1, h1 * w1)).tocsc()
    dd = np.sqrt(np.power(np.asarray(wmat.sum(0)).ravel(), -1))
    dmat = scipy.sparse.csc_matrix((dd, (np.arange(h1 * w1), np.arange(h1 * w1))))
    s = dmat.dot(wmat).dot(dmat)
    a = (scipy.sparse.identity(h1 * w1) - beta * s).tocsc()
    t1 = time.perf_counter()
    solver = scipy.sparse.linalg.factorized(a)
    t2 = time.perf_counter()
    v = np.zeros((h1 * w1, k))
    for c in range(k):
        v[:, c] = solver(b[:, c])
    v *= 1 - beta
    v = v.reshape(h1, w1, k)[2 : 2 + h, 2 : 2 + w]
    t3 = time.perf_counter()
    out = np.uint8(np.clip(v * 255.0, 0, 255.0))
    return out, v, {"build": t1 - t0, "factor": t2 - t1, "solve": t3 - t2}


# --------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------
def load_inputs(size_hw: tuple[int, int], n_styles: int):
    from PIL import Image

    h, w = size_hw

    def load(path: Path) -> np.ndarray:
        return np.asarray(Image.open(path).convert("RGB").resize((w, h), Image.BILINEAR))

    if not EXAMPLES.exists():
        rng = np.random.default_rng(0)
        print(f"# {EXAMPLES} not found: using synthetic images", file=sys.stderr)
        y, x = np.mgrid[0:h, 0:w] / max(h, w)
        content = np.clip(np.stack([200 * x, 200 * y, 100 + 50 * x * y], -1) + rng.normal(0, 5, (h, w, 3)), 0, 255)
        styles = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n_styles)]
        return content.astype(np.uint8), styles, ["synthetic"] + [f"random{i}" for i in range(n_styles)]
    content_path = EXAMPLES / "content" / "in00.png"
    style_paths = sorted((EXAMPLES / "style").glob("*.png")) + sorted(
        p for p in (EXAMPLES / "content").glob("*.png") if p != content_path
    )
    style_paths = (style_paths * (n_styles // max(len(style_paths), 1) + 1))[:n_styles]
    names = [str(content_path.relative_to(EXAMPLES))] + [str(p.relative_to(EXAMPLES)) for p in style_paths]
    return load(content_path), [load(p) for p in style_paths], names


def make_stylizer(name: str):
    from spadepis.models.stylizers import load_stylizer

    if name == "wct16x":
        return load_stylizer("wct16x", WCT16X, device="cpu")
    return load_stylizer("color", device="cpu")


def warm_up(stylizer, content: np.ndarray, style: np.ndarray) -> None:
    """One untimed call on a small crop: lazy torch/BLAS initialisation is not part of any figure."""
    from spadepis.data.images import float_to_uint8
    from spadepis.models.smoothing import SmoothingSystem

    c, s = np.ascontiguousarray(content[:64, :64]), np.ascontiguousarray(style[:64, :64])
    SmoothingSystem(c).smooth(float_to_uint8(stylizer.stylize(c, stylizer.prepare_style(s))))


def _cpu_seconds() -> float:
    """User + system CPU time of this process (all threads): less sensitive to other load than wall time."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------------------------------
# the two ways (each runs in a fresh process)
# --------------------------------------------------------------------------------------------------
def run_reference(stylizer_name: str, size_hw, n_styles: int, ref_pairs: int, check_v: bool) -> dict:
    from spadepis.data.images import float_to_uint8

    content, styles, _ = load_inputs(size_hw, n_styles)
    stylizer = make_stylizer(stylizer_name)
    warm_up(stylizer, content, styles[0])
    pairs = []
    v_first = None
    load = os.getloadavg()[0]
    cpu0 = _cpu_seconds()
    for style in styles[:ref_pairs]:
        t0 = time.perf_counter()
        cache = stylizer.prepare_style(style)  # style encoded again for every pair
        t1 = time.perf_counter()
        raw = stylizer.stylize(content, cache)
        init = float_to_uint8(raw)
        t2 = time.perf_counter()
        _, v, parts = reference_smooth(init, content)
        t3 = time.perf_counter()
        if v_first is None and check_v:
            v_first = (init, v)
        pairs.append({"encode_style": t1 - t0, "stylize": t2 - t1, "smooth": t3 - t2, **{f"smooth_{k}": x for k, x in parts.items()}, "total": t3 - t0})
    result = {"pairs": pairs, "peak_mb": _peak_mb(), "cpu_s": _cpu_seconds() - cpu0, "load": (load, os.getloadavg()[0])}
    if check_v:
        from spadepis.models.smoothing import SmoothingSystem

        init, v = v_first
        v_ours = SmoothingSystem(content, compat="fastphotostyle").solve(init)
        result["compat_v_max_abs_diff"] = float(np.abs(v_ours - v).max())
    return result


def run_project(stylizer_name: str, size_hw, n_styles: int) -> dict:
    from spadepis.data.images import float_to_uint8
    from spadepis.models.smoothing import SmoothingSystem

    content, styles, _ = load_inputs(size_hw, n_styles)
    stylizer = make_stylizer(stylizer_name)
    warm_up(stylizer, content, styles[0])
    load = os.getloadavg()[0]
    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()
    caches = [stylizer.prepare_style(s) for s in styles]  # once per style, reused for every content
    t1 = time.perf_counter()
    system = SmoothingSystem(content)  # once per content
    t2 = time.perf_counter()
    pairs = []
    residuals = []
    for i, cache in enumerate(caches):
        s0 = time.perf_counter()
        raw = stylizer.stylize(content, cache)
        init = float_to_uint8(raw)
        s1 = time.perf_counter()
        out = system.smooth(init)
        s2 = time.perf_counter()
        pairs.append({"stylize": s1 - s0, "smooth_solve": s2 - s1})
        if i == 0:
            residuals.append(system.residual(init))
        assert out.shape == content.shape
    return {
        "encode_styles": t1 - t0,
        "system_build": system.build_seconds,
        "system_factor": system.factor_seconds,
        "system_total": t2 - t1,
        "pairs": pairs,
        "residual": residuals[0],
        "peak_mb": _peak_mb(),
        "cpu_s": _cpu_seconds() - cpu0,
        "load": (load, os.getloadavg()[0]),
    }


def run_large(stylizer_name: str, size_hw) -> dict:
    """One pair at the paper's resolution with the project's way, and the smoothing set-up alone."""
    from spadepis.data.images import float_to_uint8
    from spadepis.models.smoothing import SmoothingSystem

    content, styles, _ = load_inputs(size_hw, 1)
    stylizer = make_stylizer(stylizer_name)
    warm_up(stylizer, content, styles[0])
    t0 = time.perf_counter()
    cache = stylizer.prepare_style(styles[0])
    t1 = time.perf_counter()
    init = float_to_uint8(stylizer.stylize(content, cache))
    t2 = time.perf_counter()
    system = SmoothingSystem(content)
    t3 = time.perf_counter()
    system.smooth(init)
    t4 = time.perf_counter()
    return {
        "encode_style": t1 - t0, "stylize": t2 - t1, "system_build": system.build_seconds,
        "system_factor": system.factor_seconds, "smooth_solve": t4 - t3, "total": t4 - t0, "peak_mb": _peak_mb(),
    }


def _in_child(fn, *args):
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(fn, args)


# --------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=512, help="content/style side (square), default 512")
    p.add_argument("--styles", type=int, default=8, help="K styles, default 8")
    p.add_argument("--ref-pairs", type=int, default=None, help="run the reference way on this many pairs (default: all K)")
    p.add_argument("--stylizer", choices=["auto", "wct16x", "color"], default="auto")
    p.add_argument("--skip-large", action="store_true", help="skip the 1024x512 run")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)

    stylizer = args.stylizer
    if stylizer == "auto":
        stylizer = "wct16x" if (WCT16X / "encoder_l1.pth").exists() else "color"
    k = args.styles
    ref_pairs = min(args.ref_pairs or k, k)
    size = (args.size, args.size)
    import scipy
    import torch

    _, _, names = load_inputs((8, 8), k)
    print(f"# bench_stylize: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}, "
          f"numpy {np.__version__}, scipy {scipy.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"# content {names[0]} at {size[0]}x{size[1]}, K={k} styles {names[1:]}, stylizer {stylizer} (cpu)")

    proj = _in_child(run_project, stylizer, size, k)
    ref = _in_child(run_reference, stylizer, size, k, ref_pairs, True)

    rp = ref["pairs"]
    r_encode = statistics.median(x["encode_style"] for x in rp)
    r_styl = statistics.median(x["stylize"] for x in rp)
    r_smooth = statistics.median(x["smooth"] for x in rp)
    r_total = statistics.median(x["total"] for x in rp)
    pp = proj["pairs"]
    p_styl = statistics.median(x["stylize"] for x in pp)
    p_solve = statistics.median(x["smooth_solve"] for x in pp)
    p_encode = proj["encode_styles"] / k
    p_sys = proj["system_total"]
    p_smooth_single = p_sys + p_solve
    p_smooth_amort = p_sys / k + p_solve
    p_total_single = p_encode + p_styl + p_smooth_single
    p_total_amort = p_encode + p_styl + p_smooth_amort

    def row(label, ref_s, proj_s):
        print(f"| {label:44s} | {ref_s:10.3f} | {proj_s:10.3f} | {ref_s / proj_s:8.1f}x |")

    print()
    print(f"reference way: {ref_pairs} pair(s) run (medians per pair; the reference has no reuse, so K pairs cost K times one)")
    print(f"project's way: all {k} pairs; smoothing system {proj['system_build']:.2f} s build + {proj['system_factor']:.2f} s factorise, "
          f"once; relative residual {proj['residual']:.1e}")
    print()
    print(f"| {'per pair, seconds':44s} | {'reference':>10s} | {'project':>10s} | {'speed-up':>9s} |")
    print(f"|{'-' * 46}|{'-' * 12}|{'-' * 12}|{'-' * 11}|")
    row("encode style", r_encode, p_encode)
    row("stylize (encode content, WCT, decode)", r_styl, p_styl)
    row("smoothing, single pair (build+factor+solve)", r_smooth, p_smooth_single)
    row(f"smoothing, amortised over K={k}", r_smooth, p_smooth_amort)
    row("total, single pair", r_total, p_total_single)
    row(f"total, amortised over K={k}", r_total, p_total_amort)
    row(f"all K={k} pairs (reference: {k} x median)", r_total * k, proj["encode_styles"] + p_sys + sum(x["stylize"] + x["smooth_solve"] for x in pp))
    r_cpu_k = ref["cpu_s"] / len(rp) * k
    print(f"| {f'all K={k} pairs, CPU seconds (user+sys)':44s} | {r_cpu_k:10.1f} | {proj['cpu_s']:10.1f} | {r_cpu_k / proj['cpu_s']:8.1f}x |")
    print(f"| {'peak memory of the process, MB':44s} | {ref['peak_mb']:10.0f} | {proj['peak_mb']:10.0f} | {'':9s} |")
    print(f"| {'1-min load average at start / end':44s} | {ref['load'][0]:4.1f} / {ref['load'][1]:3.1f} | "
          f"{proj['load'][0]:4.1f} / {proj['load'][1]:3.1f} | {'':9s} |")
    print()
    print("reference smoothing parts (median s): " + ", ".join(
        f"{part} {statistics.median(x['smooth_' + part] for x in rp):.2f}" for part in ("build", "factor", "solve")))
    print(f"check: project compat='fastphotostyle' V vs this reference V on pair 1: max |diff| = {ref['compat_v_max_abs_diff']:.2e}")

    large = None
    if not args.skip_large:
        large = _in_child(run_large, stylizer, (512, 1024))
        print()
        print(f"1024x512 (WxH), project's way, one pair: encode style {large['encode_style']:.2f} s, stylize {large['stylize']:.2f} s, "
              f"smoothing system {large['system_build']:.2f} s build + {large['system_factor']:.2f} s factorise, solve "
              f"{large['smooth_solve']:.2f} s; total {large['total']:.2f} s; peak memory {large['peak_mb']:.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps({"stylizer": stylizer, "size": size, "k": k, "reference": ref, "project": proj, "large": large}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
