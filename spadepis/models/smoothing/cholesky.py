r"""Exact smoothing on the CPU: :class:`SmoothingSystem`, a direct sparse Cholesky solve by CHOLMOD.

:math:`A = \mathbf{1} - \beta S` (:mod:`.affinity`) depends only on the content image and is symmetric positive
definite (its spectrum lies in :math:`[1 - \beta, 1 + \beta]`), so :class:`SmoothingSystem` builds and factorises
it once per content image and then solves the three channels of any number of stylized images against it.

The factorisation is a supernodal sparse Cholesky :math:`A = L L^\top` by CHOLMOD (SuiteSparse, through
``cvxopt``) in its AMD fill-reducing order. The sparsity pattern of :math:`A` depends only on the grid size
(every pixel couples with the in-image pixels of the 5x5 block around it), so the ordering, the symbolic
analysis and even the factor's memory are kept per ``(H, W)`` in the process (:func:`grid_pattern`) and
reused for every content image of that size. It is a direct solve in float64, so it agrees with
``scipy.sparse.linalg.spsolve`` to rounding error (about 1e-12 on V). Many right-hand sides (three channels
of any number of stylized images) are solved in one call (:meth:`SmoothingSystem.solve_many`). ``cvxopt`` is
imported only when a system is built (not when this module is).

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
# sparse Cholesky (CHOLMOD): what depends only on the grid size is analysed once per process
# --------------------------------------------------------------------------------------------------
_PATTERN_CACHE_MAX = 2  # grid sizes whose analysis a process keeps (LRU; an idle factor at 1024x512 is ~1 GB)
_FREE_FACTORS_MAX = 1  # released factors kept per size for the next content (one per process is the common case)


class _GridPattern:
    """The sparsity pattern of ``A`` on an ``h x w`` grid and CHOLMOD's analysis of it, shared by every content
    image of that size in this process.

    Holds the lower triangle as a cvxopt ``spmatrix`` template, CHOLMOD's AMD fill-reducing order (computed
    once: the pattern depends only on ``h x w``) and a free list of factor objects: a factor released by a
    finished system is refactorised in place for the next content (no new symbolic analysis, no new
    allocation). cvxopt keeps the GIL during CHOLMOD calls, so several factorisations run in parallel only in
    several processes (``spadepis.smoothing_pool``).
    """

    def __init__(self, h: int, w: int) -> None:
        from cvxopt import amd, matrix, spmatrix

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
        rows = np.broadcast_to(np.arange(n, dtype=np.int64)[:, None], valid.shape)[valid]
        # lower triangle: entry (col of the upper, row of the upper); its values are set per content
        self._template = spmatrix(1.0, matrix(cols[valid]), matrix(rows), (n, n))
        self.nnz = int(valid.sum())
        self.perm = amd.order(self._template)
        self._free: list[Any] = []
        self._lock = threading.Lock()  # guards the free list and the template's values
        self.symbolic_analyses = 0  # factor objects created (tests: analysed once per size and worker)

    def factorise(self, bands: np.ndarray) -> Any:
        """A numeric Cholesky factor of the matrix with these 25 bands, reusing a released factor object."""
        from cvxopt import cholmod, matrix

        values = matrix(np.ascontiguousarray(bands[_UPPER].reshape(len(_UPPER), -1).T[self._valid]))
        # cvxopt keeps the GIL in CHOLMOD: holding the lock costs no parallelism within a process
        with self._lock:
            factor = self._free.pop() if self._free else None
            self._template.V = values
            if factor is None:
                cholmod.options["supernodal"] = 2  # supernodal LL^T: dense BLAS kernels on the separators
                factor = cholmod.symbolic(self._template, p=self.perm)
                self.symbolic_analyses += 1
            try:
                cholmod.numeric(self._template, factor)
            except ArithmeticError as exc:  # not positive definite: cannot happen for 0 < beta < 1
                raise InputError(f"smoothing: the system is not positive definite ({exc}); check beta and eps.") from exc
        return factor

    def release(self, factor: Any) -> None:
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
    ) -> None:
        content = check_rgb_uint8(content, "SmoothingSystem content")
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
        """Sparse Cholesky of A (CHOLMOD, supernodal), the analysis shared by every grid of this size."""
        self._pattern = grid_pattern(*self.solve_shape)
        self._factor = self._pattern.factorise(bands)

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
        from cvxopt import cholmod, matrix, sparse

        if self._factor is None:
            raise RuntimeError("SmoothingSystem: solve after close(); build a new system for this content.")
        ph, pw = self.solve_shape
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
            f"SmoothingSystem(shape={self.shape}, compat={self.compat!r}, beta={self.beta}, eps={self.eps}, "
            f"build={self.build_seconds:.2f}s, factor={self.factor_seconds:.2f}s, solves={self.solves})"
        )
