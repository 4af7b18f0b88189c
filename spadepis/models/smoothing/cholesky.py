r"""Exact smoothing on the CPU: :class:`SmoothingSystem`, a direct sparse solve (SuperLU, or CHOLMOD with the extra).

:math:`A = \mathbf{1} - \beta S` (:mod:`.affinity`) depends only on the content image and is symmetric positive
definite (its spectrum lies in :math:`[1 - \beta, 1 + \beta]`), so :class:`SmoothingSystem` builds and factorises
it once per content image and then solves the three channels of any number of stylized images against it.

The default factorisation (a plain install) is scipy's SuperLU (BSD) in symmetric mode with diagonal pivots, on
:math:`A` permuted into a geometric nested-dissection order. With the ``spadepis[cholmod]`` extra (``cvxopt``,
GPL-3.0-or-later) it is a supernodal sparse Cholesky :math:`A = L L^\top` by CHOLMOD (SuiteSparse) in its AMD
fill-reducing order, about 5x faster to factorise (:data:`EXACT_SOLVERS`, :func:`default_exact_solver`). The sparsity pattern of :math:`A` depends only on the grid size
(every pixel couples with the in-image pixels of the 5x5 block around it), so the ordering, the symbolic
analysis and even the factor's memory are kept per ``(H, W)`` in the process (:func:`grid_pattern`) and
reused for every content image of that size. It is a direct solve in float64, so it agrees with
``scipy.sparse.linalg.spsolve`` to rounding error (about 1e-12 on V). Many right-hand sides (three channels
of any number of stylized images) are solved in one call (:meth:`SmoothingSystem.solve_many`). ``cvxopt`` is
imported only when a CHOLMOD system is built (not when this module is).

``compat="fastphotostyle"`` reproduces FastPhotoStyle's ``photo_smooth.Propagator`` step for step: the
stylized image loses its 2-pixel border (replaced by edge replication), the content is resized to
``(H - 4, W - 4)`` with PIL BILINEAR and edge-padded by 2, and the result is cropped to ``(H - 4, W - 4)``.
The default mode keeps the full size ``(H, W)`` and builds the affinity over every full 3x3 window of the
content image itself. A pixel's degree :math:`d_i` equals the number of full windows that contain it (the
affinities of one window sum to 1 along each row), so it is 9 inside and drops to 1 at the corners. With
the symmetric normalisation :math:`S = D^{-1/2} W D^{-1/2}`, that drop darkens the border (a constant stylized
image would come out up to two thirds darker at the corners, which is why the reference crops 2 px). The
default mode therefore uses the random-walk normalisation of the same matrix,

.. math::

    V = (1 - \beta)\,(\mathbf{1} - \beta D^{-1} W)^{-1} Y
      = (1 - \beta)\,D^{-1/2} (\mathbf{1} - \beta S)^{-1} D^{1/2}\,Y,

whose operator equals the paper's wherever :math:`d` is constant (everywhere 2 px away from the border;
the solutions differ only through the border), keeps constant images exactly constant, and is solved with the same symmetric factorisation of
:math:`A = \mathbf{1} - \beta S`. (The GPU solver, :mod:`.stencil`, solves the same default-mode system.)
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

import numpy as np
import scipy.sparse

from ...data.images import check_rgb_uint8
from ...errors import ConfigError, InputError
from ..registry import COMPAT_MODES as _COMPAT
from .affinity import _OFFSETS, _UPPER, _bands_to_csr, _check_min_size, _resize_bilinear_uint8, _system_bands

COMPAT_MODES = (None, *_COMPAT.names)


# --------------------------------------------------------------------------------------------------
# the direct solvers: what depends only on the grid size is analysed once per process
# --------------------------------------------------------------------------------------------------
_PATTERN_CACHE_MAX = 2  # grid sizes whose analysis a process keeps (LRU; an idle factor at 1024x512 is ~1 GB)
_FREE_FACTORS_MAX = 1  # released factors kept per size for the next content (one per process is the common case)

EXACT_SOLVERS = ("superlu", "cholmod")
"""The direct solvers of the exact system. ``superlu``: scipy's SuperLU (BSD) in symmetric mode on the matrix
permuted into a geometric nested-dissection order, the default of a plain install; ``cholmod``: CHOLMOD's
supernodal Cholesky through ``cvxopt`` (GPL-3.0-or-later), about 5x faster to factorise, installed by the
``spadepis[cholmod]`` extra. ``bench/bench_cholesky.py`` compares them with the other candidates."""
SOLVER_ENV = "SPADEPIS_EXACT_SOLVER"


def cholmod_available() -> bool:
    """Whether ``cvxopt`` (the ``spadepis[cholmod]`` extra) can be imported."""
    import importlib.util

    return importlib.util.find_spec("cvxopt") is not None


def default_exact_solver() -> str:
    """The solver a :class:`SmoothingSystem` uses when none is named: ``$SPADEPIS_EXACT_SOLVER`` when set, else
    ``cholmod`` when the ``spadepis[cholmod]`` extra is installed (installing it is the choice), else ``superlu``."""
    import os

    name = os.environ.get(SOLVER_ENV, "").strip()
    if name:
        return check_exact_solver(name, f"{SOLVER_ENV}={name!r}")
    return "cholmod" if cholmod_available() else "superlu"


def check_exact_solver(name: str, what: str = "solver") -> str:
    if name not in EXACT_SOLVERS:
        raise ConfigError(f"{what}: unknown exact smoothing solver; choose one of {', '.join(EXACT_SOLVERS)}.")
    if name == "cholmod" and not cholmod_available():
        raise ConfigError(
            f"{what}: the cholmod solver needs cvxopt (GPL-3.0-or-later), which is not installed: "
            "pip install 'spadepis[cholmod]', or use the default superlu solver."
        )
    return name


def nested_dissection_order(h: int, w: int, leaf: int = 64, sep: int = 2) -> np.ndarray:
    """A fill-reducing order of the ``h x w`` grid for the 25-point stencil: geometric nested dissection.

    The grid is cut by separators of ``sep`` rows or columns (the stencil reaches 2 pixels), the larger side
    first, recursively until a block has at most ``leaf`` pixels; each separator comes after the two halves it
    separates. On these grids it gives SuperLU less fill than its own orders (MMD on A+A^T: 1.4x the factor's
    non-zeros and time at 256x256; COLAMD: 7x the time)."""
    index = np.arange(h * w, dtype=np.int64).reshape(h, w)
    out, stack = [], [(0, h, 0, w, False)]
    while stack:
        y0, y1, x0, x1, done = stack.pop()
        bh, bw = y1 - y0, x1 - x0
        if bh <= 0 or bw <= 0:
            continue
        if done or bh * bw <= leaf or max(bh, bw) <= 2 * sep + 1:
            out.append(index[y0:y1, x0:x1].ravel())
        elif bh >= bw:
            m = y0 + (bh - sep) // 2
            stack += [(m, m + sep, x0, x1, True), (m + sep, y1, x0, x1, False), (y0, m, x0, x1, False)]
        else:
            m = x0 + (bw - sep) // 2
            stack += [(y0, y1, m, m + sep, True), (y0, y1, m + sep, x1, False), (y0, y1, x0, m, False)]
    return np.concatenate(out)


class _SuperLUFactor:
    """SuperLU's LU of ``P A P^T`` (``P``: the nested-dissection order); solves in the original order."""

    def __init__(self, lu: Any, perm: np.ndarray) -> None:
        self.lu, self.perm = lu, perm

    def solve(self, b: np.ndarray) -> np.ndarray:
        xp = self.lu.solve(np.asfortranarray(b[self.perm]))
        x = np.empty_like(xp)
        x[self.perm] = xp
        return x


class _GridPattern:
    """The sparsity pattern of ``A`` on an ``h x w`` grid and each solver's analysis of it, shared by every
    content image of that size in this process.

    CHOLMOD: the lower triangle as a cvxopt ``spmatrix`` template, CHOLMOD's AMD fill-reducing order (computed
    once: the pattern depends only on ``h x w``) and a free list of factor objects: a factor released by a
    finished system is refactorised in place for the next content (no new symbolic analysis, no new
    allocation). cvxopt keeps the GIL during CHOLMOD calls, so several factorisations run in parallel only in
    several processes (``spadepis.smoothing_pool``). SuperLU: the nested-dissection order and the CSC structure
    of the permuted matrix (with where each of its values sits in the bands), built once.
    """

    def __init__(self, h: int, w: int) -> None:
        self.shape = (h, w)
        n = h * w
        ys, xs = np.divmod(np.arange(n, dtype=np.int64), w)
        valid = np.empty((n, len(_UPPER)), dtype=bool)
        cols = np.empty((n, len(_UPPER)), dtype=np.int64)
        for k, o in enumerate(_UPPER):
            dy, dx = _OFFSETS[o]
            yy, xx = ys + dy, xs + dx
            valid[:, k] = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            cols[:, k] = yy * w + xx
        self._valid = valid
        self._upper_cols = cols
        self.nnz = int(valid.sum())
        self._cholmod: tuple[Any, Any] | None = None  # (lower-triangle template, AMD order), on first use
        self._superlu: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._free: list[Any] = []
        self._lock = threading.Lock()  # guards the analyses, the free list and the template's values
        self.symbolic_analyses = 0  # factor objects created (tests: analysed once per size and worker)

    # -- CHOLMOD -------------------------------------------------------------------------------------
    def _cholmod_analysis(self) -> tuple[Any, Any]:
        if self._cholmod is None:
            from cvxopt import amd, matrix, spmatrix

            n = self.shape[0] * self.shape[1]
            valid = self._valid
            rows = np.broadcast_to(np.arange(n, dtype=np.int64)[:, None], valid.shape)[valid]
            # lower triangle: entry (col of the upper, row of the upper); its values are set per content
            template = spmatrix(1.0, matrix(self._upper_cols[valid]), matrix(rows), (n, n))
            self._cholmod = (template, amd.order(template))
        return self._cholmod

    @property
    def perm(self) -> Any:
        """CHOLMOD's AMD order of this grid (cvxopt matrix)."""
        with self._lock:
            return self._cholmod_analysis()[1]

    # -- SuperLU -------------------------------------------------------------------------------------
    def _superlu_analysis(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if self._superlu is None:
            h, w = self.shape
            n = h * w
            perm = nested_dissection_order(h, w)
            inv = np.empty(n, dtype=np.int64)
            inv[perm] = np.arange(n, dtype=np.int64)
            # every stored entry of the full matrix: (row, col) and its place in the flattened (n, 25) bands
            ys, xs = np.divmod(np.arange(n, dtype=np.int64), w)
            rows, cols, where = [], [], []
            for o, (dy, dx) in enumerate(_OFFSETS):
                yy, xx = ys + dy, xs + dx
                ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
                i = np.flatnonzero(ok)
                rows.append(inv[i])
                cols.append(inv[yy[ok] * w + xx[ok]])
                where.append(o * n + i)  # bands.reshape(25, n) flattened
            r, c, g = np.concatenate(rows), np.concatenate(cols), np.concatenate(where)
            order = np.lexsort((r, c))  # CSC of the permuted matrix: by column, then row
            c, r, g = c[order], r[order], g[order]
            indptr = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(np.bincount(c, minlength=n), out=indptr[1:])
            dt = np.int32 if len(r) < 2**31 - 1 else np.int64
            self._superlu = (perm, r.astype(dt), indptr.astype(dt), g)
        return self._superlu

    # -- both ----------------------------------------------------------------------------------------
    def factorise(self, bands: np.ndarray, solver: str = "cholmod") -> Any:
        """A numeric factor of the matrix with these 25 bands (CHOLMOD: reusing a released factor object)."""
        if solver == "superlu":
            return self._factorise_superlu(bands)
        from cvxopt import cholmod, matrix

        values = matrix(np.ascontiguousarray(bands[_UPPER].reshape(len(_UPPER), -1).T[self._valid]))
        # cvxopt keeps the GIL in CHOLMOD: holding the lock costs no parallelism within a process
        with self._lock:
            template, perm = self._cholmod_analysis()
            factor = self._free.pop() if self._free else None
            template.V = values
            if factor is None:
                cholmod.options["supernodal"] = 2  # supernodal LL^T: dense BLAS kernels on the separators
                factor = cholmod.symbolic(template, p=perm)
                self.symbolic_analyses += 1
            try:
                cholmod.numeric(template, factor)
            except ArithmeticError as exc:  # not positive definite: cannot happen for 0 < beta < 1
                raise InputError(f"smoothing: the system is not positive definite ({exc}); check beta and eps.") from exc
        return factor

    def _factorise_superlu(self, bands: np.ndarray) -> _SuperLUFactor:
        import scipy.sparse.linalg

        with self._lock:
            perm, indices, indptr, where = self._superlu_analysis()
        n = self.shape[0] * self.shape[1]
        a = scipy.sparse.csc_matrix((bands.reshape(-1)[where], indices, indptr), shape=(n, n))
        try:  # symmetric positive definite: the diagonal pivots are fine, no row interchanges needed
            lu = scipy.sparse.linalg.splu(a, permc_spec="NATURAL", diag_pivot_thresh=0.0,
                                          options={"SymmetricMode": True})
        except RuntimeError as exc:
            raise InputError(f"smoothing: the system is singular ({exc}); check beta and eps.") from exc
        return _SuperLUFactor(lu, perm)

    def release(self, factor: Any) -> None:
        if isinstance(factor, _SuperLUFactor):
            return  # SuperLU allocates per factorisation; nothing to recycle
        with self._lock:
            if len(self._free) < _FREE_FACTORS_MAX:
                self._free.append(factor)


_PATTERNS: OrderedDict[tuple[int, int], _GridPattern] = OrderedDict()
_PATTERNS_LOCK = threading.Lock()


def grid_pattern(h: int, w: int) -> _GridPattern:
    """The per-process analysis of an ``h x w`` grid (built on first use, LRU over the last few sizes)."""
    key = (int(h), int(w))
    with _PATTERNS_LOCK:
        pattern = _PATTERNS.get(key)
        if pattern is not None:
            _PATTERNS.move_to_end(key)
            return pattern
    pattern = _GridPattern(*key)  # outside the lock; a concurrent duplicate is harmless
    with _PATTERNS_LOCK:
        pattern = _PATTERNS.setdefault(key, pattern)
        while len(_PATTERNS) > _PATTERN_CACHE_MAX:
            _PATTERNS.popitem(last=False)
    return pattern


# --------------------------------------------------------------------------------------------------
# exact smoothing
# --------------------------------------------------------------------------------------------------
def to_uint8_truncated(v: np.ndarray) -> np.ndarray:
    """``uint8(clip(V * 255, 0, 255))``: the reference's conversion of the smoothed float image (truncation)."""
    return np.clip(v * 255.0, 0, 255).astype(np.uint8)


class SmoothingSystem:
    r"""The exact smoothing system of ONE content image, built and factorised once.

    Parameters
    ----------
    content : ``(H, W, 3)`` uint8 RGB
        The content (synthesized) image; the matting affinity is computed from it.
    beta : float
        :math:`\beta = 1/(1+\lambda)`; 0.9999 as FastPhotoStyle.
    eps : float
        Matting regulariser :math:`\varepsilon` (1e-7).
    compat : None or "fastphotostyle"
        ``None``: full-size output ``(H, W)``, the affinity of every full 3x3 window of the content, and
        the random-walk normalisation (module docstring). ``"fastphotostyle"``: the reference's crop/resize/pad and
        symmetric normalisation; outputs are ``(H - 4, W - 4)``.
    size : (H, W) or None
        Size of the stylized images to be smoothed, compat mode only (the reference resizes the content to
        the stylized image's size minus 4). Default: the content's own size.
    solver : "superlu", "cholmod" or None
        The direct solver (:data:`EXACT_SOLVERS`); ``None``: :func:`default_exact_solver`. Both solve the same
        system exactly in float64 (their solutions agree to about 1e-12).

    Attributes
    ----------
    shape : (H, W) of the stylized images ``solve`` accepts; ``out_shape``: (H', W') of its results;
            ``solve_shape``: the grid the linear system lives on ((H, W); compat: the padded (H, W) too).
    build_seconds, factor_seconds : time spent building the matrix and factorising it.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> content = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
    >>> system = SmoothingSystem(content)
    >>> out = system.smooth(content)          # one factorisation, any number of solves
    >>> out.shape, out.dtype
    ((16, 20, 3), dtype('uint8'))
    """

    def __init__(
        self,
        content: np.ndarray,
        *,
        beta: float = 0.9999,
        eps: float = 1e-7,
        compat: str | None = None,
        size: tuple[int, int] | None = None,
        solver: str | None = None,
    ) -> None:
        content = check_rgb_uint8(content, "SmoothingSystem content")
        self.solver = default_exact_solver() if solver is None else check_exact_solver(solver, "SmoothingSystem")
        if compat not in COMPAT_MODES:
            raise ConfigError(f"SmoothingSystem: compat={compat!r} is not one of {', '.join(map(repr, COMPAT_MODES))}.")
        if not (0.0 < float(beta) < 1.0):
            raise ConfigError(f"SmoothingSystem: beta={beta} must lie in (0, 1) (FastPhotoStyle uses 0.9999).")
        if not (float(eps) > 0.0):
            raise ConfigError(f"SmoothingSystem: eps={eps} must be > 0 (FastPhotoStyle uses 1e-7).")
        self.beta = float(beta)
        self.eps = float(eps)
        self.compat = compat
        if size is not None and compat is None:
            raise ConfigError(
                "SmoothingSystem: size= is only meaningful with compat='fastphotostyle'; without it the "
                "stylized image must have the content's size (resize the content instead)."
            )
        h, w = (int(size[0]), int(size[1])) if size is not None else content.shape[:2]
        self.shape = (h, w)
        t0 = time.perf_counter()
        if compat == "fastphotostyle":
            _check_min_size(h, w, 5, "SmoothingSystem (compat='fastphotostyle')",
                            "(the reference crops 2 px from every side)")
            guide = _resize_bilinear_uint8(content, h - 4, w - 4)
            self.content_resized = guide
        else:
            guide = content
            self.content_resized = None
        self.out_shape = guide.shape[:2]
        if compat == "fastphotostyle":
            guide = np.pad(guide, ((2, 2), (2, 2), (0, 0)), mode="edge")
        else:
            _check_min_size(h, w, 3, "SmoothingSystem", "(one full 3x3 window)")
        ph, pw = guide.shape[:2]
        self.solve_shape = (ph, pw)
        bands, degree = _system_bands(guide, self.beta, self.eps)
        # default mode: random-walk normalisation (see the class docstring), V = D^-1/2 A^-1 D^1/2 B
        self._sqrt_degree = None if compat else np.sqrt(degree)[..., None]
        self._bands = bands  # A's 25 bands, (25, ph, pw), diagonal included
        self.build_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        self._factorise(bands)
        self.factor_seconds = time.perf_counter() - t0
        self.solves = 0

    def _factorise(self, bands: np.ndarray) -> None:
        """Factorise A (SuperLU or CHOLMOD), the analysis shared by every grid of this size."""
        self._pattern = grid_pattern(*self.solve_shape)
        self._factor = self._pattern.factorise(bands, self.solver)

    def close(self) -> None:
        """Hand the factor back to the per-size pool (the next content of this size refactorises it in place).

        Called when the system is garbage-collected; call it explicitly to recycle the memory at once. The
        system cannot solve afterwards.
        """
        factor, self._factor = getattr(self, "_factor", None), None
        if factor is not None:
            self._pattern.release(factor)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def __enter__(self) -> "SmoothingSystem":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def matrix(self) -> scipy.sparse.csr_matrix:
        """A in row-major order of the solve grid, CSR (built on demand: residual checks, other solvers)."""
        return _bands_to_csr(self._bands)

    def _check_init(self, init: np.ndarray) -> np.ndarray:
        init = check_rgb_uint8(init, "smoothing init (stylized image)")
        if init.shape[:2] != self.shape:
            hint = (
                "pass size=(H, W) to SmoothingSystem for the reference behaviour"
                if self.compat
                else "stylize at the content's size, or resize one of them"
            )
            raise InputError(
                f"smoothing init is {init.shape[0]}x{init.shape[1]} (HxW) but this system was built for "
                f"{self.shape[0]}x{self.shape[1]}; they must have the same size: {hint}."
            )
        return init

    def rhs(self, init: np.ndarray) -> np.ndarray:
        """B = stylized / 255, float64 ``(H, W, 3)``; compat mode: its 2-px border replaced by edge
        replication (the reference's ``B``)."""
        return self._rhs(self._check_init(init))

    def _rhs(self, init: np.ndarray) -> np.ndarray:
        b = init.astype(np.float64) / 255.0
        if self.compat == "fastphotostyle":
            b = np.pad(b[2:-2, 2:-2], ((2, 2), (2, 2), (0, 0)), mode="edge")
        return b

    def _system_rhs(self, init: np.ndarray) -> np.ndarray:
        b = self._rhs(init)
        return b if self._sqrt_degree is None else b * self._sqrt_degree

    def _solve_padded(self, b: np.ndarray) -> np.ndarray:
        """A^-1 b for ``b`` of shape ``(ph, pw, c)`` (any number of channels: all styles' at once).

        cvxopt's dense ``cholmod.solve`` calls CHOLMOD once per column, reading the whole factor (9.4M
        non-zeros at 256x256) for every right-hand side; ``cholmod.spsolve`` hands CHOLMOD all columns at
        once, which solves them together on the supernodes: 2.3-2.6x faster for the 12 columns of 4 styles
        (``bench/bench_cholesky.py``), the same solution to 1e-14 relative. The right-hand side is dense, so
        its sparse form costs only a copy."""
        if self._factor is None:
            raise RuntimeError("SmoothingSystem: solve after close(); build a new system for this content.")
        ph, pw = self.solve_shape
        if isinstance(self._factor, _SuperLUFactor):
            return self._factor.solve(b.reshape(ph * pw, -1)).reshape(b.shape)
        from cvxopt import cholmod, matrix, sparse

        rhs = sparse(matrix(np.asfortranarray(b.reshape(ph * pw, -1))))
        x = cholmod.spsolve(self._factor, rhs)
        return np.array(matrix(x)).reshape(b.shape)

    def solve(self, init: np.ndarray) -> np.ndarray:
        """V = (1 - beta) A^-1 B for a stylized ``(H, W, 3)`` uint8 image, float64 ``(H', W', 3)``, unclipped."""
        return self.solve_many([init])[0]

    def solve_many(self, inits: list[np.ndarray]) -> list[np.ndarray]:
        """:meth:`solve` for several stylized images at once (one triangular solve pass over all channels)."""
        return self._solve_many([self._check_init(init) for init in inits])

    def _solve_many(self, inits: list[np.ndarray]) -> list[np.ndarray]:
        if not inits:
            return []
        b = np.concatenate([self._system_rhs(init) for init in inits], axis=2)  # (ph, pw, 3k)
        x = self._solve_padded(b)
        self.solves += len(inits)
        if self._sqrt_degree is not None:
            x /= self._sqrt_degree
        x *= 1.0 - self.beta
        if self.compat == "fastphotostyle":
            x = x[2:-2, 2:-2]
        return [np.ascontiguousarray(x[..., 3 * k : 3 * k + 3]) for k in range(len(inits))]

    def smooth(self, init: np.ndarray) -> np.ndarray:
        """Smoothed uint8 ``(H', W', 3)``: ``uint8(clip(V * 255, 0, 255))`` (truncation, as the reference)."""
        return to_uint8_truncated(self.solve(init))

    def smooth_many(self, inits: list[np.ndarray]) -> list[np.ndarray]:
        """:meth:`smooth` for several stylized images of this content at once."""
        return [to_uint8_truncated(v) for v in self.solve_many(inits)]

    def residual(self, init: np.ndarray) -> float:
        """Relative residual ``|A x - B| / |B|`` of this system's solution for ``init`` (a health check)."""
        b = self._system_rhs(self._check_init(init))
        x = self._solve_padded(b)
        b, x = b.reshape(-1, 3), x.reshape(-1, 3)
        return float(np.linalg.norm(self.matrix @ x - b) / max(np.linalg.norm(b), 1e-300))

    def __repr__(self) -> str:
        return (
            f"SmoothingSystem(shape={self.shape}, compat={self.compat!r}, solver={self.solver!r}, beta={self.beta}, eps={self.eps}, "
            f"build={self.build_seconds:.2f}s, factor={self.factor_seconds:.2f}s, solves={self.solves})"
        )
