"""SPADE on one CUDA GPU: images/s at 256x256, batch 32, full size (coco preset, ngf=64).

    python bench/gpu_spade.py [--batch 32] [--iters 10] [--skip-compile]

Self-contained (seeded random weights in the official layout; label maps from
../shared/data/coco_stuff when present, else seeded blocky maps). Runs in about 2-3 minutes on an
H100 including torch.compile. Every variant is guarded: one failure still prints the others.

Variants (all on the same weights and inputs; max abs diff is against fp32 eager without TF32):
  fp32 eager            the straightforward forward (dense one-hot), TF32 off
  fp32 eager tf32       same, TF32 convolutions allowed (PyTorch's default for cuDNN convs)
  fp16/bf16 cl eager    half-precision weights + inputs, channels_last
  fp16 cl cuda-graph    the fp16 channels_last forward captured once in a CUDA graph and replayed
  bf16/fp16 cl compile  torch.compile (default mode) of the half-precision channels_last forward
  fast fp32 / fast fp16 FastSPADE (label-index gathers, per-key tables, boundary-only gamma/beta)
  fast fp16 dense-gb    FastSPADE with dense gamma/beta convolutions (gathers only for mlp_shared)
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--skip-compile", action="store_true")
    ap.add_argument("--compile-bf16", action="store_true", help="also compile the bf16 model (about +1 min)")
    ap.add_argument("--ngf", type=int, default=64, help="generator width (64 = official; smaller only to smoke-test the script)")
    ap.add_argument("--device", default="cuda", help="cuda (default); 'cpu' only to smoke-test the script")
    args = ap.parse_args()

    import numpy as np
    import torch
    import torch.nn.functional as F

    from spadepis.data.labelmaps import build_semantics, load_label_and_instance
    from spadepis.data.presets import get_preset
    from spadepis.models.spade import FastSPADE, random_synthesizer

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU visible; this script measures GPU throughput only (see bench/bench_spade.py for CPU)")
        return
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    t_start = time.perf_counter()
    name = torch.cuda.get_device_name(0) if cuda else "CPU (smoke test)"
    print(f"# SPADE GPU benchmark: {name}, torch {torch.__version__}, coco preset, ngf={args.ngf}, "
          f"256x256, batch {args.batch}")
    preset = get_preset("coco")
    torch.backends.cudnn.benchmark = True
    synth = random_synthesizer(preset, ngf=args.ngf, seed=0, device="cpu")
    gen32 = synth.generator.to(dev).eval()

    shared = Path(os.environ.get("SPADEPIS_SHARED", ROOT.parent / "shared")) / "data" / "coco_stuff"
    files = sorted((shared / "val_label").glob("*.png")) if (shared / "val_label").is_dir() else []
    if files:
        pairs = [load_label_and_instance(f, shared / "val_inst" / f.name, preset) for f in files]
        labels = np.stack([p[0] for p in pairs])
        inst = np.stack([p[1] for p in pairs])
        print(f"# labels: {len(files)} COCO-Stuff val maps, repeated to the batch")
    else:
        g = torch.Generator().manual_seed(0)
        coarse = torch.randint(0, 182, (8, 1, 12, 12), generator=g).float()
        labels = F.interpolate(coarse, size=(256, 256), mode="nearest")[:, 0].long().numpy()
        inst = labels.copy()
        print("# labels: 8 generated blocky maps, repeated to the batch")
    reps = -(-args.batch // len(labels))
    lab = torch.from_numpy(np.concatenate([labels] * reps)[: args.batch]).to(dev)
    ins = torch.from_numpy(np.concatenate([inst] * reps)[: args.batch]).to(dev)
    sem32 = build_semantics(lab, ins, preset)

    results = []
    ref = None

    def bench(name, fn, iters=args.iters):
        nonlocal ref
        try:
            sync()
            t0 = time.perf_counter()
            out = fn()  # warm-up / compile
            sync()
            warm = time.perf_counter() - t0
            out = fn()
            sync()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            for _ in range(iters):
                out = fn()
            sync()
            dt = (time.perf_counter() - t0) / iters
            out = out.float()
            if ref is None:
                ref = out.clone()
            diff = (out - ref).abs().max().item()
            row = (name, args.batch / dt, dt * 1000, (torch.cuda.max_memory_allocated() / 2**20 if cuda else float('nan')), diff, warm)
            results.append(row)
            print(f"  {name:28s} {row[1]:8.1f} img/s  {row[2]:8.1f} ms/batch  peak {row[3]:7.0f} MiB  "
                  f"max|diff| {diff:.2e}  (first call {warm:.1f}s)", flush=True)
        except Exception as exc:  # keep going: one failing variant must not hide the others
            print(f"  {name:28s} FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            traceback.print_exc(limit=2, file=sys.stdout)
        finally:
            if cuda:
                torch.cuda.empty_cache()

    def no_grad(f):
        def g():
            with torch.inference_mode():
                return f()
        return g

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    bench("fp32 eager", no_grad(lambda: gen32(sem32)), iters=max(3, args.iters // 2))
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True
    bench("fp32 eager tf32", no_grad(lambda: gen32(sem32)), iters=max(3, args.iters // 2))

    halves = {}
    for dt_name, dt in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        try:
            g = copy.deepcopy(gen32).to(dt).to(memory_format=torch.channels_last)
            s = sem32.to(dt).contiguous(memory_format=torch.channels_last)
            halves[dt_name] = (g, s)
            bench(f"{dt_name} channels_last eager", no_grad(lambda g=g, s=s: g(s)))
        except Exception as exc:
            print(f"  {dt_name} setup FAILED: {exc}")

    # CUDA graph of the fp16 channels_last forward (static input buffer)
    if "fp16" in halves and cuda:
        try:
            g, s = halves["fp16"]
            static_in = s.clone()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream), torch.inference_mode():
                for _ in range(2):
                    g(static_in)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.inference_mode():
                static_out = g(static_in)

            def replay():
                static_in.copy_(s)
                graph.replay()
                return static_out

            bench("fp16 channels_last cuda-graph", replay)
        except Exception as exc:
            print(f"  fp16 cuda-graph FAILED: {type(exc).__name__}: {exc}")

    if not args.skip_compile:
        for dt_name in (("fp16", "bf16") if args.compile_bf16 else ("fp16",)):
            if dt_name not in halves:
                continue
            try:
                g, s = halves[dt_name]
                cg = torch.compile(g)
                bench(f"{dt_name} channels_last compile", no_grad(lambda cg=cg, s=s: cg(s)))
            except Exception as exc:
                print(f"  {dt_name} compile FAILED: {type(exc).__name__}: {exc}")
            if time.perf_counter() - t_start > 150:
                print("  (skipping further compile variants to stay within the time budget)")
                break

    for name, dt, thr in (("fast fp32", torch.float32, 0.55), ("fast fp16", torch.float16, 0.55),
                          ("fast fp16 dense-gb", torch.float16, 0.0), ("fast bf16", torch.bfloat16, 0.55)):
        try:
            fast = FastSPADE(gen32, preset.num_label_channels, True, dtype=dt, dense_threshold=thr)
            bench(name, no_grad(lambda fast=fast: fast(lab, ins)))
            del fast
        except Exception as exc:
            print(f"  {name} FAILED: {type(exc).__name__}: {exc}")

    print()
    print("| variant | images/s | ms/batch | peak MiB | max abs diff vs fp32 eager |")
    print("|---|---:|---:|---:|---:|")
    for name, ips, ms, mib, diff, _ in results:
        print(f"| {name} | {ips:.1f} | {ms:.1f} | {mib:.0f} | {diff:.2e} |")
    print(f"\n# total wall time {time.perf_counter() - t_start:.0f}s")


if __name__ == "__main__":
    main()
