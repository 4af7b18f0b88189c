r"""Photorealistic smoothing: the exact closed form and the guided-filter approximation.

Exact smoothing (Li et al., ECCV 2018, "A Closed-form Solution to Photorealistic Image Stylization")
solves, for the stylized image :math:`Y` (``(N, 3)``, values in [0, 1]) and the content image :math:`I`,

.. math::

    R^* = (1 - \beta)\,(\mathbf{1} - \beta S)^{-1} Y, \qquad S = D^{-1/2} W D^{-1/2},

where :math:`W` is the matting affinity of :math:`I` (Levin et al., PAMI 2008) over every full 3x3 window
:math:`k`,

.. math::

    W_{ij} = \sum_{k \ni i, j} \frac{1}{9}\Bigl(1 + (I_i - \mu_k)^\top
             \bigl(\Sigma_k + \tfrac{\varepsilon}{9}\mathbf{1}_3\bigr)^{-1} (I_j - \mu_k)\Bigr),

:math:`D = \operatorname{diag}(W\mathbf{1})`, :math:`\beta = 0.9999` and :math:`\varepsilon = 10^{-7}`.
:math:`A = \mathbf{1} - \beta S` depends only on the content image and is symmetric positive definite
(its spectrum lies in :math:`[1 - \beta, 1 + \beta]`), so :class:`SmoothingSystem` builds and factorises it
once per content image and then solves the three channels of any number of stylized images against it.

The factorisation is a supernodal sparse Cholesky :math:`A = L L^\top` by CHOLMOD (SuiteSparse, through
``cvxopt``) in its AMD fill-reducing order. The sparsity pattern of :math:`A` depends only on the grid size
(every pixel couples with the in-image pixels of the 5x5 block around it), so the ordering, the symbolic
analysis and even the factor's memory are kept per ``(H, W)`` in the process (:func:`grid_pattern`) and
reused for every content image of that size. It is a direct solve in float64, so it agrees with
``scipy.sparse.linalg.spsolve`` to rounding error (about 1e-12 on V). Many right-hand sides (three channels
of any number of stylized images) are solved in one call (:meth:`SmoothingSystem.solve_many`).

``compat="fastphotostyle"`` reproduces FastPhotoStyle's ``photo_smooth.Propagator`` step for step: the
stylized image loses its 2-pixel border (replaced by edge replication), the content is resized to
``(H - 4, W - 4)`` with PIL BILINEAR and edge-padded by 2, and the result is cropped to ``(H - 4, W - 4)``.
The default mode keeps the full size ``(H, W)`` and builds the affinity over every full 3x3 window of the
content image itself. A pixel's degree :math:`d_i` equals the number of full windows that contain it (the
affinities of one window sum to 1 along each row), so it is 9 inside and drops to 1 at the corners. With
the symmetric normalisation above, that drop darkens the border (a constant stylized image would come out
up to two thirds darker at the corners, which is why the reference crops 2 px). The default mode therefore
uses the random-walk normalisation of the same matrix,

.. math::

    V = (1 - \beta)\,(\mathbf{1} - \beta D^{-1} W)^{-1} Y
      = (1 - \beta)\,D^{-1/2} (\mathbf{1} - \beta S)^{-1} D^{1/2}\,Y,

whose operator equals the paper's wherever :math:`d` is constant (everywhere 2 px away from the border;
the solutions differ only through the border), keeps constant images exactly constant, and is solved with the same symmetric factorisation of
:math:`A = \mathbf{1} - \beta S`.

The fast approximation (:func:`guided_filter_smooth`) is FastPhotoStyle's ``--fast`` mode: He et al.'s
guided filter with the colour content image as guide (``cv2.ximgproc.guidedFilter`` semantics: radius 35,
eps on the 0-255 scale, box filters with reflected borders, output rounded and saturated to uint8).

Inputs are validated once, at the public entry that receives them (:class:`SmoothingSystem`,
:class:`GuidedFilter`, :func:`smooth_content`, :func:`smooth_batch_torch`); the functions that only pass them
on (:func:`guided_filter_smooth`, :func:`prepare_smoother`) and the private helpers do not check again.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from ..data.images import check_rgb_uint8
from ..errors import ConfigError, InputError
from .registry import COMPAT_MODES as _COMPAT, SMOOTHERS

__all__ = [
    "SmoothingSystem",
    "StencilSolver",
    "smooth_batch_torch",
    "GREY_TOL",
    "guided_filter_smooth",
    "GuidedFilter",
    "prepare_smoother",
    "matting_affinity",
    "smoothing_matrix",
    "grid_pattern",
    "smooth_content",
    "SmoothingPool",
    "smoothing_pool",
    "default_smoothing_workers",
    "to_uint8_truncated",
    "SMOOTHING_MODES",
    "COMPAT_MODES",
]

SMOOTHING_MODES = SMOOTHERS.names
COMPAT_MODES = (None, *_COMPAT.names)

# The 25 offsets (dy, dx) a pixel couples with through shared 3x3 windows, in row-major order, so that
# with row-major pixel numbering the column indices of every CSR row come out sorted.
_OFFSETS = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]
_OFFSET_INDEX = {o: n for n, o in enumerate(_OFFSETS)}
# The 9 positions of a 3x3 window relative to its centre.
_WINDOW = [(dy, dx) for dy in range(-1, 2) for dx in range(-1, 2)]


# --------------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------------
def _check_min_size(h: int, w: int, minimum: int, what: str, hint: str) -> None:
    if h < minimum or w < minimum:
        raise InputError(f"{what}: image is {h}x{w} (HxW); it must be at least {minimum}x{minimum} {hint}.")


# --------------------------------------------------------------------------------------------------
# the matting affinity, banded
# --------------------------------------------------------------------------------------------------
def _affinity_bands(image: np.ndarray, eps: float) -> np.ndarray:
    """Matting affinity as 25 bands: ``bands[o, y, x] = W[(y, x), (y, x) + _OFFSETS[o]]``.

    ``image`` is ``(H, W, 3)`` float64. Every full 3x3 window contributes; entries whose neighbour lies
    outside the image stay 0. Vectorised over windows; the python loops run over the 9 window
    positions and 45 position pairs only.
    """
    h, w, _ = image.shape
    ch, cw = h - 2, w - 2  # window centres: rows 1..h-2, cols 1..w-2
    planes = np.ascontiguousarray(image.transpose(2, 0, 1))  # (3, h, w): every product below is on whole planes
    # pixel values at each window position: (9, 3, ch, cw)
    win = np.stack([planes[:, 1 + dy : 1 + dy + ch, 1 + dx : 1 + dx + cw] for dy, dx in _WINDOW])
    mu = win.mean(axis=0)  # (3, ch, cw)
    centred = win - mu
    del win
    # covariance (biased, divide by 9) and its regularised inverse, by LU as the reference does (the matrix can be
    # nearly singular: flat windows; a cofactor formula loses digits there)
    cov = np.empty((ch, cw, 3, 3))
    for i in range(3):
        for j in range(i, 3):
            cov[..., i, j] = cov[..., j, i] = np.einsum("pyx,pyx->yx", centred[:, i], centred[:, j]) / 9.0
        cov[..., i, i] += eps / 9.0
    inv = np.linalg.inv(cov) / 9.0  # the 1/9 of every affinity, applied once here
    del cov
    projected = np.empty_like(centred)  # inv @ (I_p - mu) / 9
    for i in range(3):
        projected[:, i] = inv[..., i, 0] * centred[:, 0]
        projected[:, i] += inv[..., i, 1] * centred[:, 1]
        projected[:, i] += inv[..., i, 2] * centred[:, 2]
    del inv
    bands = np.zeros((len(_OFFSETS), h, w))
    vals = np.empty((ch, cw))
    for a, (ay, ax) in enumerate(_WINDOW):
        for b in range(a, 9):
            by, bx = _WINDOW[b]
            np.multiply(centred[a, 0], projected[b, 0], out=vals)
            vals += centred[a, 1] * projected[b, 1]
            vals += centred[a, 2] * projected[b, 2]
            vals += 1.0 / 9.0
            # entry (pixel of a, pixel of b) and its mirror (pixel of b, pixel of a)
            o = _OFFSET_INDEX[(by - ay, bx - ax)]
            bands[o, 1 + ay : 1 + ay + ch, 1 + ax : 1 + ax + cw] += vals
            if b != a:
                o = _OFFSET_INDEX[(ay - by, ax - bx)]
                bands[o, 1 + by : 1 + by + ch, 1 + bx : 1 + bx + cw] += vals
    return bands


def _bands_to_csr(bands: np.ndarray, diagonal: np.ndarray | None = None) -> scipy.sparse.csr_matrix:
    """CSR matrix with the band values (plus ``diagonal`` on the main diagonal), in-image entries only."""
    _, h, w = bands.shape
    n = h * w
    ys, xs = np.divmod(np.arange(n, dtype=np.int64), w)
    cols = np.empty((n, len(_OFFSETS)), dtype=np.int64)
    valid = np.empty((n, len(_OFFSETS)), dtype=bool)
    for o, (dy, dx) in enumerate(_OFFSETS):
        yy, xx = ys + dy, xs + dx
        valid[:, o] = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        cols[:, o] = yy * w + xx
    data = bands.reshape(len(_OFFSETS), n).T.copy()
    if diagonal is not None:
        data[:, _OFFSET_INDEX[(0, 0)]] += diagonal.reshape(n)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(valid.sum(axis=1), out=indptr[1:])
    index_dtype = np.int32 if indptr[-1] < 2**31 - 1 else np.int64
    return scipy.sparse.csr_matrix(
        (data[valid], cols[valid].astype(index_dtype), indptr.astype(index_dtype)), shape=(n, n)
    )


def matting_affinity(image: np.ndarray, *, eps: float = 1e-7) -> scipy.sparse.csr_matrix:
    r"""The matting affinity :math:`W` of an ``(H, W, 3)`` float image (3x3 windows, Levin et al.).

    Pixels are numbered row-major (``y * W + x``). ``W`` is symmetric with at most 25 entries per row.

    Examples
    --------
    >>> img = np.random.default_rng(0).random((8, 9, 3))
    >>> W = matting_affinity(img)
    >>> W.shape, bool(abs(W - W.T).max() < 1e-12)
    ((72, 72), True)
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"matting_affinity: expected an (H, W, 3) image, got shape {image.shape}.")
    _check_min_size(image.shape[0], image.shape[1], 3, "matting_affinity", "(one full 3x3 window)")
    return _bands_to_csr(_affinity_bands(image, eps))


# --------------------------------------------------------------------------------------------------
# sparse Cholesky (CHOLMOD): what depends only on the grid size is analysed once per process
# --------------------------------------------------------------------------------------------------
# The upper offsets (centre first) of the 25-point stencil: row i of A's upper triangle in CSR order, which is
# also column i of its lower triangle in CSC order, the layout cvxopt's spmatrix keeps its values in.
_UPPER = list(range(_OFFSET_INDEX[(0, 0)], len(_OFFSETS)))
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
def _resize_bilinear_uint8(image: np.ndarray, h: int, w: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def _system_bands(guide: np.ndarray, beta: float, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """``(bands, degree)``: the 25 bands of :math:`A = 1 - \\beta D^{-1/2} W D^{-1/2}` (diagonal included) of
    the uint8 guide ``(H, W, 3)``, and the degrees :math:`d` ``(H, W)``."""
    image = guide.astype(np.float64) / 255.0
    ph, pw = image.shape[:2]
    bands = _affinity_bands(image, eps)
    degree = bands.sum(axis=0)  # row sums == column sums (W is symmetric)
    inv_sqrt = 1.0 / np.sqrt(degree)
    # A[i, i+o] = -beta * W[i, i+o] / sqrt(d_i d_{i+o})
    for o, (dy, dx) in enumerate(_OFFSETS):
        shifted = np.ones((ph, pw))
        ys = slice(max(0, -dy), min(ph, ph - dy))
        xs = slice(max(0, -dx), min(pw, pw - dx))
        shifted[ys, xs] = inv_sqrt[max(0, dy) : min(ph, ph + dy), max(0, dx) : min(pw, pw + dx)]
        bands[o] *= -beta * inv_sqrt * shifted
    bands[_OFFSET_INDEX[(0, 0)]] += 1.0
    return bands, degree


def smoothing_matrix(
    content: np.ndarray, *, beta: float = 0.9999, eps: float = 1e-7
) -> tuple[scipy.sparse.csr_matrix, np.ndarray]:
    r"""``(A, sqrt_degree)`` of the default (full-size) exact mode for a uint8 ``(H, W, 3)`` content image.

    ``A`` = :math:`1 - \beta D^{-1/2} W D^{-1/2}` (CSR, symmetric positive definite, row-major pixels) and
    ``sqrt_degree`` = :math:`D^{1/2}` as ``(H, W)``; ``V = (1 - beta) D^-1/2 A^-1 D^1/2 B``. For benchmarks
    and other solvers; :class:`SmoothingSystem` is the way to smooth.
    """
    content = check_rgb_uint8(content, "smoothing_matrix content")
    _check_min_size(content.shape[0], content.shape[1], 3, "smoothing_matrix", "(one full 3x3 window)")
    bands, degree = _system_bands(content, float(beta), float(eps))
    return _bands_to_csr(bands), np.sqrt(degree)


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
        """A^-1 b for ``b`` of shape ``(ph, pw, c)`` (any number of channels: all styles' at once)."""
        from cvxopt import cholmod, matrix

        if self._factor is None:
            raise RuntimeError("SmoothingSystem: solve after close(); build a new system for this content.")
        ph, pw = self.solve_shape
        rhs = matrix(np.asfortranarray(b.reshape(ph * pw, -1)))
        cholmod.solve(self._factor, rhs)
        return np.array(rhs).reshape(b.shape)

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


# --------------------------------------------------------------------------------------------------
# batched exact smoothing in torch (GPU): matrix-free stencil, multigrid-preconditioned CG, mixed precision
# --------------------------------------------------------------------------------------------------
# The accuracy contract of the iterative path. A = 1 - beta S has smallest eigenvalue >= 1 - beta (the matting
# Laplacian is positive semi-definite), so for a residual r = b - A x the error of V = (1 - beta) D^-1/2 x (or
# (1 - beta) x in compat mode) is at most (1 - beta) |A^-1 r|_2 <= |r|_2 at every pixel (d >= 1). Stopping at
# |r|_2 <= GREY_TOL keeps every pixel of V within a quarter grey level of the exact solution, whatever the image.
GREY_TOL = 0.25 / 255.0
_MIRROR = [len(_OFFSETS) - 1 - o for o in range(len(_OFFSETS))]  # index of offset -o
_COARSEST = 256  # unknowns of the coarsest grid, solved by a dense Cholesky
PRECONDITIONERS = ("jacobi", "multigrid")


def _stencil_apply(bands: Any, x: Any) -> Any:
    """``A x`` for ``bands`` ``(G, 25, H, W)`` and ``x`` ``(G, R, H, W)`` (R right-hand sides per grid)."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    xp = F.pad(x, (2, 2, 2, 2))
    centre = _OFFSET_INDEX[(0, 0)]
    y = bands[:, centre : centre + 1] * x
    for o, (dy, dx) in enumerate(_OFFSETS):
        if o != centre:
            y.addcmul_(bands[:, o : o + 1], xp[..., 2 + dy : 2 + dy + h, 2 + dx : 2 + dx + w])
    return y


_TAPS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]  # a fine pixel's coarse neighbours (fine offsets)


def _interpolation_weights(bands: Any) -> Any:
    """Operator-dependent prolongation weights ``(G, 9, h, w)``: the coarse grid is every other pixel (coarse i <->
    fine 2i); a fine pixel takes the values of its coarse neighbours (within one pixel) in proportion to its
    couplings with them, ``max(-A[f, c], 0)``, normalised to sum 1 (bilinear weights where it has none). So values
    are interpolated along the content's structure and not across its edges."""
    import torch

    g, _, h, w = bands.shape
    dev, dt = bands.device, bands.dtype
    yy = torch.arange(h, device=dev)[:, None]
    xx = torch.arange(w, device=dev)[None, :]
    weights, bilinear = [], []
    for dy, dx in _TAPS:
        coarse = ((yy + dy) % 2 == 0) & ((xx + dx) % 2 == 0) & (yy + dy >= 0) & (yy + dy < h) & (xx + dx >= 0) & (xx + dx < w)
        weights.append((-bands[:, _OFFSET_INDEX[(dy, dx)]]).clamp_min(0) * coarse)
        bilinear.append(coarse.to(dt).expand(g, h, w) * (0.5 ** (abs(dy) + abs(dx))))
    weights = torch.stack(weights, 1)
    bilinear = torch.stack(bilinear, 1)
    total = weights.sum(1, keepdim=True)
    strong = total > 1e-3 * bands[:, _OFFSET_INDEX[(0, 0)] : _OFFSET_INDEX[(0, 0)] + 1].abs()
    weights = torch.where(strong, weights / total.clamp_min(torch.finfo(dt).tiny), bilinear / bilinear.sum(1, keepdim=True))
    centre = _TAPS.index((0, 0))
    is_coarse = ((yy % 2 == 0) & (xx % 2 == 0)).expand(g, h, w)
    for k in range(len(_TAPS)):
        weights[:, k] = torch.where(is_coarse, torch.full_like(weights[:, k], 1.0 if k == centre else 0.0), weights[:, k])
    return weights


def _prolong(x: Any, weights: Any) -> Any:
    """``P x``: coarse ``(G, R, hc, wc)`` to fine ``(G, R, h, w)`` with the weights of :func:`_interpolation_weights`."""
    import torch.nn.functional as F

    g, r, hc, wc = x.shape
    h, w = weights.shape[-2:]
    injected = x.new_zeros(g, r, h + 2, w + 2)
    injected[..., 1 : 1 + h : 2, 1 : 1 + w : 2] = x
    out = x.new_zeros(g, r, h, w)
    for k, (dy, dx) in enumerate(_TAPS):
        out.addcmul_(weights[:, k : k + 1], injected[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w])
    return out


def _restrict(x: Any, weights: Any) -> Any:
    """``P^T x``: fine ``(G, R, h, w)`` to coarse ``(G, R, (h+1)//2, (w+1)//2)``."""
    g, r, h, w = x.shape
    acc = x.new_zeros(g, r, h + 2, w + 2)
    for k, (dy, dx) in enumerate(_TAPS):
        acc[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w].addcmul_(weights[:, k : k + 1], x)
    return acc[..., 1 : 1 + h : 2, 1 : 1 + w : 2].contiguous()


_COMPILED: dict[str, Any] = {}


def _fused_apply(bands: Any, x: Any) -> Any:
    """:func:`_stencil_apply`, compiled into one fused kernel on CUDA when torch.compile works (eager otherwise)."""
    if x.device.type != "cuda":
        return _stencil_apply(bands, x)
    fn = _COMPILED.get("apply")
    if fn is None:
        import torch

        try:
            fn = torch.compile(_stencil_apply, dynamic=False)
            fn(bands, x)  # compile now, so that a failure falls back here
        except Exception:  # no compiler toolchain on this machine
            fn = _stencil_apply
        _COMPILED["apply"] = fn
    return fn(bands, x)


class _Level:
    """One grid of the multigrid hierarchy: the operator's bands and the l1-Jacobi smoother's inverse diagonal."""

    def __init__(self, bands: Any) -> None:
        self.bands = bands  # (G, 25, h, w)
        self.shape = tuple(bands.shape[-2:])
        self.inv_l1 = 1.0 / bands.abs().sum(1, keepdim=True)  # l1-Jacobi: convergent for any SPD matrix
        self.weights = None  # prolongation from the next coarser level (None on the coarsest)

    def apply(self, x: Any) -> Any:
        return _fused_apply(self.bands, x)


def _galerkin(bands: Any, weights: Any) -> Any:
    """Bands ``(G, 25, hc, wc)`` of the coarse operator ``P^T A P`` (again a 5x5 stencil), found by probing with
    the 25 coarse vectors that are 1 on every fifth point in each direction, symmetrised."""
    import torch

    g, _, h, w = bands.shape
    hc, wc = (h + 1) // 2, (w + 1) // 2
    dev, dt = bands.device, bands.dtype
    yy = torch.arange(hc, device=dev)[:, None]
    xx = torch.arange(wc, device=dev)[None, :]
    probes = torch.stack([((yy % 5 == py) & (xx % 5 == px)).to(dt) for py in range(5) for px in range(5)])
    coarse = _restrict(_stencil_apply(bands, _prolong(probes.expand(g, 25, hc, wc), weights)), weights)
    idx = torch.stack([((yy + dy) % 5) * 5 + (xx + dx) % 5 for dy, dx in _OFFSETS])  # (25, hc, wc)
    valid = torch.stack([(yy + dy >= 0) & (yy + dy < hc) & (xx + dx >= 0) & (xx + dx < wc) for dy, dx in _OFFSETS])
    out = torch.gather(coarse, 1, idx.expand(g, 25, hc, wc)) * valid
    # symmetrise: A[i, i+o] and A[i+o, i] = mirror band at i+o
    mirrored = torch.zeros_like(out)
    for o, (dy, dx) in enumerate(_OFFSETS):
        ys, xs = slice(max(0, -dy), min(hc, hc - dy)), slice(max(0, -dx), min(wc, wc - dx))
        mirrored[:, o, ys, xs] = out[:, _MIRROR[o], max(0, dy) : min(hc, hc + dy), max(0, dx) : min(wc, wc + dx)]
    return 0.5 * (out + mirrored)


def _dense(bands: Any) -> Any:
    """The ``(G, n, n)`` dense matrix of small bands (coarsest grid)."""
    import torch

    g, _, h, w = bands.shape
    n = h * w
    dense = torch.zeros(g, n, n, dtype=bands.dtype, device=bands.device)
    yy, xx = torch.meshgrid(torch.arange(h, device=bands.device), torch.arange(w, device=bands.device), indexing="ij")
    for o, (dy, dx) in enumerate(_OFFSETS):
        ok = (yy + dy >= 0) & (yy + dy < h) & (xx + dx >= 0) & (xx + dx < w)
        i = (yy * w + xx)[ok]
        j = ((yy + dy) * w + (xx + dx))[ok]
        dense[:, i, j] = bands[:, o][:, ok]
    return dense


class StencilSolver:
    r"""Batched solver for ``A x = b`` where ``A`` is the 25-band smoothing matrix of ``G`` same-size grids.

    * matrix-free: ``A`` stays 25 bands ``(G, 25, H, W)``; a product is 25 shifted multiply-adds over all
      right-hand sides ``(G, R, H, W)`` at once (R = 3 channels x all styles of a content); on CUDA the product
      is compiled into one fused kernel with ``torch.compile`` when that works (eager otherwise);
    * conjugate gradients with a preconditioner: ``"jacobi"`` (the diagonal, default) or ``"multigrid"``: a
      V-cycle on the pixel grid with operator-dependent interpolation (a fine pixel takes its coarse neighbours'
      values in proportion to its couplings with them, so not across the content's edges), Galerkin coarse
      operators ``P^T A P`` (exact 5x5 stencils, found by probing), two l1-Jacobi sweeps before and after each
      coarse correction, and a dense Cholesky on the coarsest grid (<= 256 pixels);
    * mixed precision: CG runs in float32 (``inner_dtype``); an outer iterative refinement computes the residual
      in float64 and adds float32 corrections until ``|b - A x|_2 <= tol`` for every right-hand side
      (:data:`GREY_TOL`: every pixel of V within a quarter grey level of the exact solution).

    Measured on CPU tensors (one camvid photo, float64 CG to a relative residual of 1e-6, 1 thread): Jacobi 744
    iterations at 64x80 and 820 at 128x160; multigrid 184 and 196 (2 sweeps; 252 with 1, 144 with 4), but one
    multigrid iteration costs about 12 Jacobi iterations, so Jacobi is 3x faster in wall time. The multigrid's
    coarse space is the limit (a two-grid cycle with an exact coarse solve needs 172): the matting Laplacian's
    low-energy modes are locally affine in the content's colours, which no interpolation from a coarser pixel
    grid represents; an aggregation multigrid with the near-null-space vectors (1, R, G, B) per aggregate would
    be the next step. Point Jacobi as the multigrid smoother diverges where the diagonal is small (l1-Jacobi
    does not); a float32-only CG stalls near a relative residual of 1e-4 (rounding times the condition number,
    about 2e4), which the float64 refinement removes.
    """

    def __init__(self, bands64: Any, *, preconditioner: str = "jacobi", inner_dtype: Any = None,
                 tol: float = GREY_TOL, maxiter: int = 5000) -> None:
        import torch

        if preconditioner not in PRECONDITIONERS:
            raise ConfigError(f"smoothing preconditioner {preconditioner!r} is not one of {', '.join(PRECONDITIONERS)}.")
        self.preconditioner = preconditioner
        self.device = bands64.device
        self.inner_dtype = inner_dtype or torch.float32
        self.tol = float(tol)
        self.maxiter = int(maxiter)
        self.sweeps = 2  # l1-Jacobi sweeps before and after each coarse correction
        self.bands64 = bands64
        self.levels: list[_Level] = []
        bands = bands64
        while True:
            if preconditioner == "jacobi":
                self.levels.append(_Level(bands.to(self.inner_dtype)))
                self._inv_diag = 1.0 / self.levels[0].bands[:, _OFFSET_INDEX[(0, 0)] : _OFFSET_INDEX[(0, 0)] + 1]
                break
            self.levels.append(_Level(bands.to(self.inner_dtype)))
            h, w = bands.shape[-2:]
            if h * w <= _COARSEST or min(h, w) < 3:
                break
            weights = _interpolation_weights(bands)  # built in float64, stored in the inner precision
            self.levels[-1].weights = weights.to(self.inner_dtype)
            bands = _galerkin(bands, weights)
        if preconditioner == "multigrid":
            self._coarse_chol = torch.linalg.cholesky(_dense(bands))  # float64, tiny
        self.iterations: list[int] = []  # inner CG iterations of each solve (all refinement steps)

    def _precondition(self, r: Any) -> Any:
        return self._inv_diag * r if self.preconditioner == "jacobi" else self._vcycle(r)

    def _vcycle(self, r: Any, level: int = 0) -> Any:
        import torch

        lev = self.levels[level]
        if level == len(self.levels) - 1:
            g, nr, h, w = r.shape
            rhs = r.reshape(g, nr, h * w).transpose(1, 2).to(self._coarse_chol.dtype)
            x = torch.cholesky_solve(rhs, self._coarse_chol)
            return x.transpose(1, 2).reshape(g, nr, h, w).to(r.dtype)
        x = lev.inv_l1 * r
        for _ in range(self.sweeps - 1):
            x += lev.inv_l1 * (r - lev.apply(x))
        res = r - lev.apply(x)
        x += _prolong(self._vcycle(_restrict(res, lev.weights), level + 1), lev.weights)
        for _ in range(self.sweeps):
            x += lev.inv_l1 * (r - lev.apply(x))
        return x

    def _pcg(self, b: Any, abs_tol: Any) -> tuple[Any, int]:
        """Preconditioned CG in the inner precision until ``|r|_2 <= abs_tol`` per RHS (or stagnation)."""
        import torch

        top = self.levels[0]
        x = torch.zeros_like(b)
        r = b.clone()
        z = self._precondition(r)
        p = z.clone()
        rz = (r * z).sum((2, 3), keepdim=True)
        tiny = torch.finfo(b.dtype).tiny
        for it in range(1, self.maxiter + 1):
            ap = top.apply(p)
            alpha = rz / (p * ap).sum((2, 3), keepdim=True).clamp_min(tiny)
            x.addcmul_(alpha, p)
            r.addcmul_(alpha, ap, value=-1.0)
            if it % 4 == 0 and bool((r.flatten(2).norm(dim=2) <= abs_tol).all()):
                return x, it
            z = self._precondition(r)
            rz_new = (r * z).sum((2, 3), keepdim=True)
            p = z + (rz_new / rz.clamp_min(tiny)) * p
            rz = rz_new
        return x, self.maxiter

    def solve(self, b64: Any, max_refinements: int = 8) -> Any:
        """``x`` (float64, like ``b64`` ``(G, R, H, W)``) with ``|b - A x|_2 <= tol`` for every right-hand side."""
        import torch

        x = torch.zeros_like(b64)
        r = b64.clone()
        total = 0
        for _ in range(max_refinements):
            norms = r.flatten(2).norm(dim=2)  # (G, R)
            if bool((norms <= self.tol).all()):
                self.iterations.append(total)
                return x
            # each float32 solve gains about three digits; ask for the rest but no more than that
            inner_tol = torch.maximum(norms * 1e-3, torch.full_like(norms, self.tol * 0.5))  # (G, R)
            e, its = self._pcg(r.to(self.inner_dtype), inner_tol.to(self.inner_dtype))
            total += its
            x += e.to(x.dtype)
            r = b64 - _fused_apply(self.bands64, x)
        norms = r.flatten(2).norm(dim=2)
        if bool((norms <= self.tol).all()):
            self.iterations.append(total)
            return x
        raise RuntimeError(
            f"smoothing multigrid CG: residual {float(norms.max()):.3g} > {self.tol:.3g} after {max_refinements} "
            "refinements; use models.smoothing_device=cpu (the direct solver)."
        )


def _torch_system_bands(contents: Any, beta: float, eps: float) -> tuple[Any, Any]:
    """:func:`_system_bands` for a batch of uint8 contents ``(G, H, W, 3)`` (torch, on their device, float64):
    ``(bands (G, 25, H, W), degree (G, H, W))``."""
    import torch

    img = contents.to(torch.float64) / 255.0
    g, h, w, _ = img.shape
    ch, cw = h - 2, w - 2
    win = torch.stack([img[:, 1 + dy : 1 + dy + ch, 1 + dx : 1 + dx + cw] for dy, dx in _WINDOW], 1)  # (G,9,ch,cw,3)
    mu = win.mean(1)
    cov = torch.einsum("gpyxi,gpyxj->gyxij", win, win) / 9.0 - mu[..., :, None] * mu[..., None, :]
    cov = cov + (eps / 9.0) * torch.eye(3, dtype=img.dtype, device=img.device)
    inv = torch.linalg.inv(cov)
    centred = win - mu[:, None]
    projected = torch.einsum("gyxij,gpyxj->gpyxi", inv, centred)
    del win, cov, inv
    bands = torch.zeros(g, len(_OFFSETS), h, w, dtype=img.dtype, device=img.device)
    for a, (ay, ax) in enumerate(_WINDOW):
        for b in range(a, 9):
            by, bx = _WINDOW[b]
            vals = (1.0 + (centred[:, a] * projected[:, b]).sum(-1)) / 9.0
            bands[:, _OFFSET_INDEX[(by - ay, bx - ax)], 1 + ay : 1 + ay + ch, 1 + ax : 1 + ax + cw] += vals
            if b != a:
                bands[:, _OFFSET_INDEX[(ay - by, ax - bx)], 1 + by : 1 + by + ch, 1 + bx : 1 + bx + cw] += vals
    degree = bands.sum(1)
    inv_sqrt = degree.rsqrt()
    padded = torch.nn.functional.pad(inv_sqrt, (2, 2, 2, 2), value=1.0)
    for o, (dy, dx) in enumerate(_OFFSETS):
        bands[:, o] *= -beta * inv_sqrt * padded[:, 2 + dy : 2 + dy + h, 2 + dx : 2 + dx + w]
    bands[:, _OFFSET_INDEX[(0, 0)]] += 1.0
    return bands, degree


def smooth_batch_torch(
    batch: list[tuple[np.ndarray, list[np.ndarray]]], mode: str, device: Any, *, beta: float = 0.9999,
    eps: float = 1e-7, tol: float = GREY_TOL, preconditioner: str = "jacobi",
) -> list[Any]:
    """Exact smoothing of several content images and all their stylized images in batched solves on ``device``.

    ``batch`` holds ``(content, [stylized, ...])`` pairs; contents of the same size are solved together (one
    :class:`StencilSolver` over all of them, every style and channel a right-hand side). Returns one finished
    ``concurrent.futures.Future`` per pair, as :class:`SmoothingPool` does: ``(results, prepare_s, smooth_s)`` with
    the time of the whole group shared evenly, or the exception (:class:`InputError`) of that content.
    """
    import concurrent.futures

    import torch

    from ..devices import resolve_device

    if mode != "exact":
        raise ConfigError(f"smooth_batch_torch: mode {mode!r}; only 'exact' runs on the GPU.")
    device = resolve_device(device)
    futures = [concurrent.futures.Future() for _ in batch]
    groups: dict[tuple[int, int], list[int]] = {}
    checked: dict[int, tuple[list[int], list]] = {}
    for i, (content, inits) in enumerate(batch):
        try:
            content = check_rgb_uint8(content, "smoothing content")
            _check_min_size(content.shape[0], content.shape[1], 3, "smoothing", "(one full 3x3 window)")
        except InputError as exc:
            futures[i].set_exception(exc)
            continue
        results: list = [""] * len(inits)
        good = []
        for k, init in enumerate(inits):
            try:
                init = check_rgb_uint8(init, "smoothing init (stylized image)")
                if init.shape != content.shape:
                    raise InputError(
                        f"stylized image is {init.shape[0]}x{init.shape[1]} but the content is "
                        f"{content.shape[0]}x{content.shape[1]} (HxW); they must have the same size."
                    )
                good.append(k)
            except InputError as exc:
                results[k] = str(exc)
        checked[i] = (good, results)
        groups.setdefault(content.shape[:2], []).append(i)
    for (h, w), members in groups.items():
        t0 = time.perf_counter()
        contents = torch.from_numpy(np.stack([batch[i][0] for i in members])).to(device)
        bands, degree = _torch_system_bands(contents, float(beta), float(eps))
        mg = StencilSolver(bands, preconditioner=preconditioner, tol=tol)
        sqrt_d = degree.sqrt()[:, None]  # (G, 1, H, W)
        t1 = time.perf_counter()
        r_max = max(1, max(len(checked[i][0]) for i in members))
        rhs = torch.zeros(len(members), 3 * r_max, h, w, dtype=torch.float64, device=device)
        for g, i in enumerate(members):
            good = checked[i][0]
            if good:
                stack = np.stack([batch[i][1][k] for k in good]).transpose(0, 3, 1, 2).reshape(-1, h, w)
                rhs[g, : stack.shape[0]] = torch.from_numpy(np.ascontiguousarray(stack)).to(device).to(torch.float64)
        rhs = rhs / 255.0 * sqrt_d
        v = mg.solve(rhs) / sqrt_d * (1.0 - beta)
        out = (v * 255.0).clamp(0, 255).to(torch.uint8).reshape(len(members), r_max, 3, h, w)
        out = out.permute(0, 1, 3, 4, 2).cpu().numpy()
        t2 = time.perf_counter()
        for g, i in enumerate(members):
            good, results = checked[i]
            for n, k in enumerate(good):
                results[k] = np.ascontiguousarray(out[g, n])
            futures[i].set_result((results, (t1 - t0) / len(members), (t2 - t1) / len(members)))
    return futures


# --------------------------------------------------------------------------------------------------
# fast approximation: guided filter
# --------------------------------------------------------------------------------------------------
def _reflect_index(n: int, radius: int) -> np.ndarray:
    """Indices of a BORDER_REFLECT (``fedcba|abcdef|fedcba``) padding by ``radius`` of a length-n axis."""
    idx = np.arange(-radius, n + radius)
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * n
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - 1 - idx, idx)


def _box_mean(x: np.ndarray, radius: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Mean over (2r+1)^2 windows with reflected borders, via cumulative sums. ``x`` is (H, W, ...)."""
    h, w = x.shape[:2]
    k = 2 * radius + 1
    padded = x[rows][:, cols]
    c = np.cumsum(padded, axis=0)
    c = np.concatenate([np.zeros((1,) + c.shape[1:]), c], axis=0)
    s = c[k : k + h] - c[:h]
    c = np.cumsum(s, axis=1)
    c = np.concatenate([np.zeros((h, 1) + c.shape[2:]), c], axis=1)
    s = c[:, k : k + w] - c[:, :w]
    return s / float(k * k)


def guided_filter_smooth(
    content: np.ndarray, init: np.ndarray, *, radius: int = 35, eps: float = 1e-3
) -> np.ndarray:
    r"""FastPhotoStyle's fast smoothing: the colour guided filter of ``init`` guided by ``content``.

    He et al. (ECCV 2010) with a 3-channel guide :math:`I` (values 0..255, as ``cv2.ximgproc.guidedFilter``
    sees uint8), for each output channel :math:`p`:

    .. math::

        a_k = (\Sigma_k + \varepsilon \mathbf{1}_3)^{-1}\,(\overline{I p}_k - \mu_k \bar p_k),\quad
        b_k = \bar p_k - a_k^\top \mu_k,\quad q_i = \bar a_i^\top I_i + \bar b_i,

    with means over :math:`(2r+1)^2` windows and reflected borders (``BORDER_REFLECT``). ``eps`` is on the
    0-255 scale (1e-3 is FastPhotoStyle's demo value, a negligible regulariser). The result keeps the full
    ``(H, W)`` size and is rounded and saturated to uint8.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> c = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    >>> guided_filter_smooth(c, c, radius=2).shape
    (20, 24, 3)
    """
    return GuidedFilter(content, radius=radius, eps=eps)(init)


class GuidedFilter:
    r""":func:`guided_filter_smooth` split at the content: what depends only on the guide is computed once.

    The guide's window means and the inverses of its regularised window covariances
    :math:`(\Sigma_k + \varepsilon \mathbf{1}_3)^{-1}` are kept; each call (one per style) then needs only the box
    means of :math:`p` and :math:`I p`, a 3x3 product per pixel and the second box pass.
    """

    def __init__(self, content: np.ndarray, *, radius: int = 35, eps: float = 1e-3) -> None:
        content = check_rgb_uint8(content, "guided filter content")
        if int(radius) != radius or radius < 1:
            raise ConfigError(f"guided_filter_smooth: radius={radius} must be a positive integer (FastPhotoStyle: 35).")
        if not (eps > 0):
            raise ConfigError(f"guided_filter_smooth: eps={eps} must be > 0 (FastPhotoStyle: 1e-3 on the 0-255 scale).")
        self.radius = int(radius)
        self.shape = content.shape
        h, w, _ = content.shape
        self._rows, self._cols = _reflect_index(h, self.radius), _reflect_index(w, self.radius)
        self._guide = content.astype(np.float64)
        iu, ju = np.triu_indices(3)
        means = self._box(np.concatenate([self._guide, self._guide[..., iu] * self._guide[..., ju]], axis=2))
        self._mean_i = means[..., 0:3]
        sym = np.empty((h, w, 3, 3))
        sym[..., iu, ju] = means[..., 3:9]
        sym[..., ju, iu] = means[..., 3:9]
        cov_ii = sym - self._mean_i[..., :, None] * self._mean_i[..., None, :] + eps * np.eye(3)
        self._inv_cov = np.linalg.inv(cov_ii)  # (h, w, 3, 3), symmetric positive definite

    def _box(self, x: np.ndarray) -> np.ndarray:
        return _box_mean(x, self.radius, self._rows, self._cols)

    def __call__(self, init: np.ndarray) -> np.ndarray:
        """Smooth one stylized uint8 ``(H, W, 3)`` image; returns uint8 of the same size."""
        init = check_rgb_uint8(init, "guided_filter_smooth init (stylized image)")
        if init.shape != self.shape:
            raise InputError(
                f"guided_filter_smooth: content is {self.shape[0]}x{self.shape[1]} but the stylized image is "
                f"{init.shape[0]}x{init.shape[1]} (HxW); they must have the same size."
            )
        h, w, _ = init.shape
        guide, src = self._guide, init.astype(np.float64)
        means = self._box(np.concatenate([src, (guide[..., :, None] * src[..., None, :]).reshape(h, w, 9)], axis=2))
        mean_p = means[..., 0:3]
        cov_ip = means[..., 3:12].reshape(h, w, 3, 3) - self._mean_i[..., :, None] * mean_p[..., None, :]
        a = self._inv_cov @ cov_ip  # (h, w, 3 guide, 3 channels)
        b = mean_p - np.einsum("yxi,yxic->yxc", self._mean_i, a)
        ab = self._box(np.concatenate([a.reshape(h, w, 9), b], axis=2))
        q = np.einsum("yxi,yxic->yxc", guide, ab[..., :9].reshape(h, w, 3, 3)) + ab[..., 9:]
        return np.clip(np.rint(q), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# one entry point for the pipeline
# --------------------------------------------------------------------------------------------------
def prepare_smoother(content: np.ndarray, mode: str = "exact", **kw: Any) -> Callable[[np.ndarray], np.ndarray]:
    """A callable ``stylized uint8 (H, W, 3) -> smoothed uint8`` for one content image.

    ``mode="exact"`` builds and factorises :class:`SmoothingSystem` here, once, and every call only solves
    (keywords: ``beta``, ``eps``, ``compat``, ``size``); ``"fast"`` returns a :class:`GuidedFilter` (the guide's statistics computed once; keywords: ``radius``, ``eps``); ``"none"`` returns the stylized image unchanged.
    """
    SMOOTHERS.check(mode)
    if mode == "exact":
        system = SmoothingSystem(content, **kw)

        def exact(stylized: np.ndarray) -> np.ndarray:
            return system.smooth(stylized)

        exact.system = system  # type: ignore[attr-defined]
        return exact
    if mode == "fast":
        unknown = set(kw) - {"radius", "eps"}
        if unknown:
            raise ConfigError(f"prepare_smoother(mode='fast'): unknown options {sorted(unknown)}; valid: radius, eps.")

        return GuidedFilter(content, **kw)  # guide statistics computed once, reused for every style
    # mode == "none"
    if kw:
        raise ConfigError(f"prepare_smoother(mode='none') takes no options, got {sorted(kw)}.")
    content = check_rgb_uint8(content, "prepare_smoother content")

    def none(stylized: np.ndarray) -> np.ndarray:
        stylized = check_rgb_uint8(stylized, "stylized image")
        if stylized.shape != content.shape:
            raise InputError(
                f"stylized image is {stylized.shape[:2]} but the content is {content.shape[:2]} (HxW); they must "
                "have the same size."
            )
        return stylized

    return none


# --------------------------------------------------------------------------------------------------
# every style of one content at once, and a pool of processes for many contents
# --------------------------------------------------------------------------------------------------
def smooth_content(
    content: np.ndarray, inits: list[np.ndarray], mode: str = "exact", **kw: Any
) -> tuple[list[np.ndarray | str], float, float]:
    """Smooth every stylized image of one content image: ``(results, prepare_s, smooth_s)``.

    ``results[k]`` is the uint8 output for ``inits[k]``, or the error message (a string) when that stylized image
    is unusable (wrong size or type), so one bad style never takes its neighbours down. ``prepare_s`` is the
    system's build and factorisation (``mode="exact"``, once for all styles), ``smooth_s`` the solves. Raises
    :class:`InputError` / :class:`ConfigError` when the content itself cannot be smoothed. Top-level and
    picklable: :class:`SmoothingPool` runs it in worker processes.
    """
    t0 = time.perf_counter()
    results: list[np.ndarray | str] = [""] * len(inits)
    if mode == "exact":
        with SmoothingSystem(content, **kw) as system:  # checks the content
            good, checked = [], []
            for k, init in enumerate(inits):
                try:
                    checked.append(system._check_init(init))
                    good.append(k)
                except InputError as exc:
                    results[k] = str(exc)
            t1 = time.perf_counter()
            outs = [to_uint8_truncated(v) for v in system._solve_many(checked)]
    else:
        smoother = prepare_smoother(content, mode, **kw)  # checks the content
        t1 = time.perf_counter()
        good, outs = [], []
        for k, init in enumerate(inits):
            try:
                outs.append(smoother(init))  # checks the stylized image
                good.append(k)
            except InputError as exc:
                results[k] = str(exc)
    for k, out in zip(good, outs):
        results[k] = out
    return results, t1 - t0, time.perf_counter() - t1


_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _warm_worker() -> int:
    """Import the solver in a fresh worker process (so the first real task does not pay for it)."""
    import cvxopt.cholmod  # noqa: F401

    return 1


class SmoothingPool:
    """Runs :func:`smooth_content` for many content images at once on ``workers`` processes.

    cvxopt keeps the GIL inside CHOLMOD, so factorisations of different contents run in parallel only in separate
    processes (spawned, one BLAS thread each; each keeps its own per-size analysis). ``workers=1`` runs every
    task inline in the calling thread (no process, no copies). Inside a daemonic process (a Dask worker), which
    may not have children, the pool runs inline too and says so in :attr:`note`.

    >>> pool = SmoothingPool(1)
    >>> img = np.zeros((8, 8, 3), np.uint8)
    >>> outs, prep_s, solve_s = pool.submit(img, [img, img]).result()
    >>> len(outs), outs[0].shape
    (2, (8, 8, 3))
    """

    def __init__(self, workers: int) -> None:
        import multiprocessing

        if int(workers) < 1:
            raise ConfigError(f"smoothing workers = {workers}: must be >= 1 (runner.smoothing_workers).")
        self.workers = int(workers)
        self.note = ""
        self._executor = None
        if self.workers > 1 and multiprocessing.current_process().daemon:
            self.note = (
                f"runner.smoothing_workers={self.workers} ignored: this worker process is daemonic (a Dask worker) "
                "and may not start processes; smoothing runs in the worker's own thread (scale with more Dask workers)"
            )
            self.workers = 1
        if self.workers > 1:
            self._start()

    def _start(self) -> None:
        import concurrent.futures
        import multiprocessing
        import os

        # spawned children read the thread limits from the environment when they load their BLAS
        with _ENV_LOCK:
            saved = {v: os.environ.get(v) for v in _THREAD_VARS}
            try:
                for v in _THREAD_VARS:
                    os.environ[v] = "1"
                self._executor = concurrent.futures.ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context("spawn")
                )
                for f in [self._executor.submit(_warm_worker) for _ in range(self.workers)]:
                    f.result()
            finally:
                for v, old in saved.items():
                    if old is None:
                        os.environ.pop(v, None)
                    else:
                        os.environ[v] = old

    @property
    def broken(self) -> bool:
        return self._executor is not None and bool(getattr(self._executor, "_broken", False))

    def submit(self, content: np.ndarray, inits: list[np.ndarray], mode: str = "exact", **kw: Any):
        """A ``concurrent.futures.Future`` of :func:`smooth_content` ``(results, prepare_s, smooth_s)``."""
        import concurrent.futures

        if self._executor is not None:
            return self._executor.submit(smooth_content, content, inits, mode, **kw)
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(smooth_content(content, inits, mode, **kw))
        except Exception as exc:  # delivered by future.result(), as from a process
            future.set_exception(exc)
        return future

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


_ENV_LOCK = threading.Lock()
_POOLS: dict[int, SmoothingPool] = {}
_POOLS_LOCK = threading.Lock()


def smoothing_pool(workers: int) -> SmoothingPool:
    """The process's :class:`SmoothingPool` of ``workers`` (started once, shared by every shard; a broken pool,
    e.g. after a worker was killed for memory, is replaced)."""
    with _POOLS_LOCK:
        pool = _POOLS.get(workers)
        if pool is None or pool.broken:
            if pool is not None:
                pool.shutdown()
            pool = _POOLS[workers] = SmoothingPool(workers)
        return pool


def default_smoothing_workers() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
