"""Sparse direct solvers for the exact smoothing system: which library factorises it best on a CPU.

The matrix is the one :mod:`spadepis.models.smoothing` builds (``A = I - beta D^-1/2 W D^-1/2``, symmetric positive
definite, 25-point stencil on the pixel grid) for a photo-like content image. Candidates:

* ``superlu_nd``: scipy's SuperLU (BSD) in a geometric nested-dissection order, symmetric mode (what ``spadepis``
  used before issue 12, and again, as the permissive default, since issue 20);
* ``superlu_mmd`` / ``superlu_colamd``: SuperLU with its own orders (MMD on A^T + A, COLAMD), symmetric mode;
* ``spadepis_superlu``: what :class:`SmoothingSystem` does on a plain install: SuperLU on the matrix permuted
  into the nested-dissection order, its CSC structure built once per grid size ("analyse");
* ``cholmod``: CHOLMOD (SuiteSparse) through ``cvxopt.cholmod``, supernodal LL^T, AMD order computed once per
  size (``cvxopt.amd.order``) and handed to ``cholmod.symbolic``; solved with cvxopt's dense ``cholmod.solve``,
  which calls CHOLMOD once per column;
* ``spadepis``: what :class:`spadepis.models.smoothing.SmoothingSystem` does now: CHOLMOD as above, the analysis and
  the factor object kept per grid size and refactorised in place for the next content (the first, analysing,
  factorisation is the "analyse" column; "factor" is a later content's), and all 12 columns solved in one
  CHOLMOD call (``cholmod.spsolve`` on the dense right-hand side in sparse form);
* ``pardiso``: MKL PARDISO through ``pypardiso`` (``mtype=2``: real SPD), phases 11 / 22 / 33;
* ``pyamg_cg``: conjugate gradients (scipy) preconditioned by a pyamg smoothed-aggregation V-cycle (MIT), each
  column to ``|r|_2 <= GREY_TOL`` (every pixel of V within a quarter grey level of the exact solution); the
  hierarchy's setup is "factor";
* ``stencil_cpu``: spadepis' own GPU solver (:class:`StencilSolver`, matrix-free Jacobi-PCG in float32 with
  float64 refinement to the same tolerance) run on CPU tensors;
* ``mumps``: MUMPS through ``python-mumps`` (symmetric LDL^T, METIS order), analysis then factorisation.

Every (solver, size) runs in its own child process, so ``ru_maxrss`` is that solver's peak memory (matrix
build included: the "build" column's process already holds it). BLAS / OpenMP / MKL threads are fixed by
environment variables before any import (``--threads``, default 1) and printed. Each child solves the same
12 right-hand sides (3 channels x K = 4 styles) and saves the solution; the parent compares every solution with ``superlu_nd``'s.

Libraries that are not installed are reported as missing. To try all of them without touching a shared
environment::

    pip install --target /tmp/cand cvxopt pypardiso pyamg python-mumps==0.0.2
    pip install --no-deps --prefix /tmp/mklp mkl intel-openmp tbb tcmlib umf intel-cmplr-lib-ur   # MKL's libs
    python bench/bench_cholesky.py --extra-path /tmp/cand --mkl-lib /tmp/mklp/lib

Usage::

    python bench/bench_cholesky.py                       # 256x256, 512x384, 1 thread
    python bench/bench_cholesky.py --sizes 256x256,512x512,1024x512
    python bench/bench_cholesky.py --sizes 256x256 --solvers cholmod,superlu_nd --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOLVERS = ("superlu_nd", "superlu_mmd", "superlu_colamd", "spadepis_superlu", "cholmod", "spadepis", "pardiso",
           "pyamg_cg", "stencil_cpu", "mumps")
BETA = 0.9999
NRHS = 12  # 3 channels x K = 4 stylized images of one content, solved at once
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "MKL_DYNAMIC")


def content_image(h: int, w: int, seed: int = 0):
    """A photo-like content image: gradients, hard edges, texture and noise (fill depends only on H x W)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([120 + 100 * x, 60 + 150 * y, 200 - 120 * x * y], axis=-1)
    base[: h // 2, w // 3 :] *= 0.5
    base[h // 3 : 2 * h // 3, : w // 4] = [30, 160, 40]
    base += 20 * np.sin(40 * x)[..., None] * np.cos(25 * y)[..., None]
    return np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ child


def _nested_dissection(h: int, w: int):
    """The grid order of spadepis' SuperLU path (``nested_dissection_order``), here for the SuperLU/ND arms."""
    from spadepis.models.smoothing.cholesky import nested_dissection_order

    return nested_dissection_order(h, w)


def child(solver: str, h: int, w: int, repeat: int, out_npy: str) -> dict:
    import resource

    import numpy as np
    import scipy.sparse
    import scipy.sparse.linalg

    sys.path.insert(0, str(ROOT))
    from spadepis.models.smoothing import smoothing_matrix

    def rss_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    t0 = time.perf_counter()
    a, _ = smoothing_matrix(content_image(h, w))  # CSR, full symmetric
    build_s = time.perf_counter() - t0
    n = a.shape[0]
    b = np.random.default_rng(1).random((n, NRHS))
    rss_build = rss_mb()
    res: dict = {"solver": solver, "size": f"{h}x{w}", "n": n, "build_s": build_s, "rss_build_mb": rss_build}
    analyse_s, factor_s, solve_s = [], [], []

    if solver == "superlu_nd":
        t0 = time.perf_counter()
        perm = _nested_dissection(h, w)
        analyse_s.append(time.perf_counter() - t0)
        for _ in range(repeat):
            t0 = time.perf_counter()
            lu = scipy.sparse.linalg.splu(a[perm][:, perm].tocsc(), permc_spec="NATURAL", diag_pivot_thresh=0.0,
                                          options={"SymmetricMode": True})
            factor_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            xp = lu.solve(np.asfortranarray(b[perm]))
            x = np.empty_like(xp)
            x[perm] = xp
            solve_s.append(time.perf_counter() - t0)
        res["factor_nnz"] = int(lu.L.nnz + lu.U.nnz)
    elif solver in ("superlu_mmd", "superlu_colamd"):
        spec = {"superlu_mmd": "MMD_AT_PLUS_A", "superlu_colamd": "COLAMD"}[solver]
        analyse_s.append(0.0)  # SuperLU orders inside splu (counted in "factor")
        csc = a.tocsc()
        for _ in range(repeat):
            t0 = time.perf_counter()
            lu = scipy.sparse.linalg.splu(csc, permc_spec=spec, diag_pivot_thresh=0.0, options={"SymmetricMode": True})
            factor_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            x = lu.solve(np.asfortranarray(b))
            solve_s.append(time.perf_counter() - t0)
        res["factor_nnz"] = int(lu.L.nnz + lu.U.nnz)
    elif solver == "spadepis_superlu":
        from spadepis.models.smoothing import _system_bands, grid_pattern

        bands, _ = _system_bands(content_image(h, w), BETA, 1e-7)
        t0 = time.perf_counter()
        pattern = grid_pattern(h, w)
        pattern.factorise(bands, "superlu")  # the first content of this size: order + permuted structure
        analyse_s.append(time.perf_counter() - t0)
        for _ in range(repeat):
            t0 = time.perf_counter()
            f = pattern.factorise(bands, "superlu")
            factor_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            x = f.solve(b)
            solve_s.append(time.perf_counter() - t0)
        res["factor_nnz"] = int(f.lu.L.nnz + f.lu.U.nnz)
    elif solver == "pyamg_cg":
        import pyamg

        from spadepis.models.smoothing import GREY_TOL

        csr = a.tocsr()
        for k in range(repeat):
            t0 = time.perf_counter()
            ml = pyamg.smoothed_aggregation_solver(csr, symmetry="symmetric", max_coarse=500)
            m = ml.aspreconditioner(cycle="V")
            (analyse_s if k == 0 else factor_s).append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            cols, iters = [], []
            for j in range(NRHS):  # |r|_2 <= GREY_TOL: every pixel of V within a quarter grey level
                count = [0]
                xj, info = scipy.sparse.linalg.cg(csr, b[:, j], M=m, rtol=0.0, atol=GREY_TOL, maxiter=5000,
                                                  callback=lambda _x: count.__setitem__(0, count[0] + 1))
                cols.append(xj)
                iters.append(count[0])
            x = np.stack(cols, axis=1)
            solve_s.append(time.perf_counter() - t0)
        if not factor_s:
            factor_s = analyse_s[:]
        res["iterations"] = iters
    elif solver == "stencil_cpu":
        import torch

        from spadepis.models.smoothing import StencilSolver, _system_bands

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        bands, _ = _system_bands(content_image(h, w), BETA, 1e-7)
        bt = torch.from_numpy(bands)[None]
        bb = torch.from_numpy(np.ascontiguousarray(b.T.reshape(1, NRHS, h, w)))
        for k in range(repeat):
            t0 = time.perf_counter()
            st = StencilSolver(bt, preconditioner="jacobi")
            (analyse_s if k == 0 else factor_s).append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            x = st.solve(bb)[0].reshape(NRHS, n).T.numpy()
            solve_s.append(time.perf_counter() - t0)
        if not factor_s:
            factor_s = analyse_s[:]
        res["iterations"] = st.iterations
    elif solver == "cholmod":
        from cvxopt import amd, cholmod, matrix, spmatrix

        cholmod.options["supernodal"] = 2
        lower = scipy.sparse.tril(a).tocoo()
        for k in range(repeat):
            t0 = time.perf_counter()
            am = spmatrix(lower.data, lower.row.astype(np.int64), lower.col.astype(np.int64), (n, n))
            convert = time.perf_counter() - t0
            if k == 0:
                t0 = time.perf_counter()
                perm = amd.order(am)  # once per size: the pattern depends only on H x W
                analyse_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            f = cholmod.symbolic(am, p=perm)
            sym = time.perf_counter() - t0
            cholmod.numeric(am, f)
            factor_s.append(time.perf_counter() - t0 + convert)
            res.setdefault("symbolic_with_perm_s", []).append(sym)
            t0 = time.perf_counter()
            xm = matrix(b)
            cholmod.solve(f, xm)
            x = np.array(xm)
            solve_s.append(time.perf_counter() - t0)
    elif solver == "spadepis":
        from spadepis.models.smoothing import _system_bands, grid_pattern

        bands, _ = _system_bands(content_image(h, w), 0.9999, 1e-7)
        t0 = time.perf_counter()
        pattern = grid_pattern(h, w)
        pattern.release(pattern.factorise(bands))  # the first content of this size
        analyse_s.append(time.perf_counter() - t0)
        for _ in range(repeat):
            t0 = time.perf_counter()
            f = pattern.factorise(bands)
            factor_s.append(time.perf_counter() - t0)
            from cvxopt import cholmod, matrix, sparse

            t0 = time.perf_counter()  # as SmoothingSystem: all columns in one CHOLMOD call (spsolve)
            x = np.array(matrix(cholmod.spsolve(f, sparse(matrix(b)))))
            solve_s.append(time.perf_counter() - t0)
            pattern.release(f)
    elif solver == "pardiso":
        import pypardiso

        upper = scipy.sparse.triu(a, format="csr")
        upper.sort_indices()
        ps = pypardiso.PyPardisoSolver(mtype=2)
        ps.set_iparm(1, 1)
        ps.set_iparm(2, 2)  # METIS
        for k in range(repeat):
            if k == 0:
                t0 = time.perf_counter()
                ps.set_phase(11)
                ps._call_pardiso(upper, np.zeros((n, 1)))
                analyse_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ps.set_phase(22)
            ps._call_pardiso(upper, np.zeros((n, 1)))
            factor_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ps.set_phase(33)
            x = ps._call_pardiso(upper, np.asfortranarray(b))
            solve_s.append(time.perf_counter() - t0)
        res["factor_nnz"] = int(ps.iparm[17])
    elif solver == "mumps":
        import mumps

        ctx = mumps.Context()
        ctx.set_matrix(a, symmetric=True)
        t0 = time.perf_counter()
        ctx.analyze(ordering="metis")
        analyse_s.append(time.perf_counter() - t0)
        for _ in range(repeat):
            t0 = time.perf_counter()
            ctx.set_matrix(a, symmetric=True)
            ctx.factor(reuse_analysis=True, pivot_tol=0.0)
            factor_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            x = ctx.solve(b)
            solve_s.append(time.perf_counter() - t0)
    else:
        raise SystemExit(f"unknown solver {solver}")
    np.save(out_npy, np.asarray(x, dtype=np.float64).reshape(n, NRHS))
    res.update(analyse_s=analyse_s[0], factor_s=min(factor_s), solve_s=min(solve_s), peak_rss_mb=rss_mb(),
               residual=float(np.linalg.norm(a @ np.asarray(x).reshape(n, NRHS) - b) / np.linalg.norm(b)))
    return res


# ------------------------------------------------------------------------------------------------ parent


def wheel_size(dist: str) -> str:
    """Installed size of a distribution and of the libraries it pulls (MB), from its RECORD."""
    from importlib import metadata

    try:
        d = metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return "not installed"
    total = 0
    for f in d.files or []:
        try:
            total += (Path(d.locate_file(f))).stat().st_size
        except OSError:
            pass
    return f"{total / 1e6:.0f} MB"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="256x256,512x384", help="HxW list")
    p.add_argument("--solvers", default=",".join(SOLVERS))
    p.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP/MKL threads of every solver")
    p.add_argument("--repeat", type=int, default=2, help="factorisations per child (min reported)")
    p.add_argument("--extra-path", default=None, help="extra sys.path entry holding candidate libraries")
    p.add_argument("--mkl-lib", default=None, help="folder with libmkl_rt.so.* (pypardiso under --target installs)")
    p.add_argument("--child", nargs=5, metavar=("SOLVER", "H", "W", "REPEAT", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        solver, h, w, repeat, out = args.child
        print(json.dumps(child(solver, int(h), int(w), int(repeat), out)))
        return 0

    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = "FALSE" if var == "MKL_DYNAMIC" else str(args.threads)
    paths = [str(ROOT)] + ([args.extra_path] if args.extra_path else [])
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")])
    if args.mkl_lib:
        env["LD_LIBRARY_PATH"] = os.pathsep.join([args.mkl_lib, env.get("LD_LIBRARY_PATH", "")])
        libs = sorted(Path(args.mkl_lib).glob("libmkl_rt.so*"))
        if libs:
            env["PYPARDISO_MKL_RT"] = str(libs[0])
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print("# threads: " + ", ".join(f"{v}={env[v]}" for v in THREAD_VARS))
    print(f"# load average at start: {os.getloadavg()} (machine shared with other users)")
    sys.path[:0] = paths
    for dist in ("scipy", "cvxopt", "pypardiso", "mkl", "pyamg", "python-mumps"):
        print(f"# installed size {dist}: {wheel_size(dist)}")
    if args.mkl_lib:
        size = sum(f.stat().st_size for f in Path(args.mkl_lib).glob("*") if f.is_file())
        print(f"# MKL + OpenMP + TBB libraries in {args.mkl_lib}: {size / 1e6:.0f} MB")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            h, w = (int(v) for v in size.lower().split("x"))
            ref = None
            for solver in args.solvers.split(","):
                out = Path(tmp) / f"{solver}_{h}x{w}.npy"
                cmd = [sys.executable, __file__, "--child", solver, str(h), str(w), str(args.repeat), str(out)]
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if proc.returncode != 0:
                    last = (proc.stderr.strip().splitlines() or ["?"])[-1]
                    print(f"{solver:11s} {h}x{w}: FAILED: {last}")
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                import numpy as np

                x = np.load(out)
                if ref is None:
                    ref = x
                r["max_diff_vs_first"] = float(np.abs(x - ref).max())
                # V = (1 - beta) D^-1/2 x with d >= 1: its largest difference in grey levels is at most this
                r["grey_levels_vs_first"] = (1 - BETA) * 255.0 * r["max_diff_vs_first"]
                rows.append(r)
                print(f"{solver:11s} {h:5d}x{w:<5d} analyse {r['analyse_s']:7.3f} s  factor {r['factor_s']:7.3f} s  "
                      f"solve({NRHS}) {r['solve_s']:6.3f} s  peak RSS {r['peak_rss_mb']:7.0f} MB "
                      f"(after build {r['rss_build_mb']:5.0f})  residual {r['residual']:.1e}  "
                      f"|x - {args.solvers.split(',')[0]}| {r['max_diff_vs_first']:.1e} "
                      f"(V: {r['grey_levels_vs_first']:.1e} grey levels)", flush=True)
    print(f"# load average at end: {os.getloadavg()}")
    res_dir = ROOT / "bench" / "results"
    res_dir.mkdir(exist_ok=True)
    (res_dir / "bench_cholesky.json").write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
