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

The factorisation is a sparse LU (SuperLU) of :math:`A` in a *nested-dissection* order computed from the
pixel grid itself (every unknown is a pixel and couples only with the 5x5 block around it), with
symmetric pivoting: the fill is :math:`O(N \log N)` instead of the much larger fill of SuperLU's default
COLAMD order that ``scipy.sparse.linalg.factorized`` uses. It is still a direct solve in float64, so it
agrees with ``scipy.sparse.linalg.spsolve`` to rounding error (about 1e-12 on V).

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
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from ..errors import ConfigError, InputError

__all__ = [
    "SmoothingSystem",
    "TorchSmoothingSystem",
    "guided_filter_smooth",
    "GuidedFilter",
    "prepare_smoother",
    "matting_affinity",
    "nested_dissection_order",
    "SMOOTHING_MODES",
    "COMPAT_MODES",
]

SMOOTHING_MODES = ("exact", "fast", "none")
COMPAT_MODES = (None, "fastphotostyle")

# The 25 offsets (dy, dx) a pixel couples with through shared 3x3 windows, in row-major order, so that
# with row-major pixel numbering the column indices of every CSR row come out sorted.
_OFFSETS = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]
_OFFSET_INDEX = {o: n for n, o in enumerate(_OFFSETS)}
# The 9 positions of a 3x3 window relative to its centre.
_WINDOW = [(dy, dx) for dy in range(-1, 2) for dx in range(-1, 2)]


# --------------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------------
def _check_rgb_uint8(array: Any, what: str) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise InputError(f"{what}: expected a numpy array (H, W, 3) uint8 RGB, got {type(array).__name__}.")
    if array.ndim != 3 or array.shape[2] != 3:
        raise InputError(
            f"{what}: expected shape (H, W, 3) RGB, got {array.shape}; convert the image to RGB first "
            "(spadepis.images.read_rgb does)."
        )
    if array.dtype != np.uint8:
        raise InputError(
            f"{what}: expected dtype uint8 (0..255), got {array.dtype}; convert with "
            "spadepis.images.float_to_uint8 for [0, 1] floats."
        )
    return array


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
    # pixel values at each window position: (9, ch, cw, 3)
    win = np.stack([image[1 + dy : 1 + dy + ch, 1 + dx : 1 + dx + cw] for dy, dx in _WINDOW])
    mu = win.mean(axis=0)
    # covariance as the reference computes it, E[x x^T] - mu mu^T (biased, divide by 9)
    cov = np.einsum("pyxi,pyxj->yxij", win, win) / 9.0 - np.einsum("yxi,yxj->yxij", mu, mu)
    cov += (eps / 9.0) * np.eye(3)
    inv = np.linalg.inv(cov)  # (ch, cw, 3, 3)
    centred = win - mu  # (9, ch, cw, 3)
    projected = np.einsum("yxij,pyxj->pyxi", inv, centred)  # inv @ (I_p - mu)
    del win, cov, inv
    bands = np.zeros((len(_OFFSETS), h, w))
    for a, (ay, ax) in enumerate(_WINDOW):
        for b in range(a, 9):
            by, bx = _WINDOW[b]
            vals = (1.0 + np.einsum("yxi,yxi->yx", centred[a], projected[b])) / 9.0
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
# fill-reducing order for the pixel grid
# --------------------------------------------------------------------------------------------------
def nested_dissection_order(h: int, w: int, *, leaf: int = 64, separator: int = 2) -> np.ndarray:
    """Geometric nested-dissection permutation of an ``h x w`` pixel grid (row-major numbering).

    The grid graph couples pixels up to 2 apart (5x5 stencil), so a separator is ``separator`` = 2 full
    rows or columns. The larger side is cut in the middle, both halves are ordered recursively and the
    separator is numbered last; blocks of at most ``leaf`` pixels keep their row-major order. Returns
    ``perm`` with ``perm[k]`` = the pixel placed k-th.
    """
    index = np.arange(h * w, dtype=np.int64).reshape(h, w)
    out: list[np.ndarray] = []
    # explicit stack instead of recursion: items are (y0, y1, x0, x1, done)
    stack: list[tuple[int, int, int, int, bool]] = [(0, h, 0, w, False)]
    while stack:
        y0, y1, x0, x1, done = stack.pop()
        bh, bw = y1 - y0, x1 - x0
        if bh <= 0 or bw <= 0:
            continue
        if done:
            out.append(index[y0:y1, x0:x1].ravel())
            continue
        if bh * bw <= leaf or max(bh, bw) <= 2 * separator + 1:
            out.append(index[y0:y1, x0:x1].ravel())
            continue
        # push in reverse order of emission: separator last
        if bh >= bw:
            m = y0 + (bh - separator) // 2
            stack.append((m, m + separator, x0, x1, True))
            stack.append((m + separator, y1, x0, x1, False))
            stack.append((y0, m, x0, x1, False))
        else:
            m = x0 + (bw - separator) // 2
            stack.append((y0, y1, m, m + separator, True))
            stack.append((y0, y1, m + separator, x1, False))
            stack.append((y0, y1, x0, m, False))
    perm = np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
    assert perm.size == h * w
    return perm


# --------------------------------------------------------------------------------------------------
# exact smoothing
# --------------------------------------------------------------------------------------------------
def _resize_bilinear_uint8(image: np.ndarray, h: int, w: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


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
        content = _check_rgb_uint8(content, "SmoothingSystem content")
        if compat not in COMPAT_MODES:
            raise ConfigError(f"SmoothingSystem: compat={compat!r} is not one of None, 'fastphotostyle'.")
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
        padded = guide.astype(np.float64) / 255.0
        ph, pw = padded.shape[:2]
        self.solve_shape = (ph, pw)
        n = ph * pw
        bands = _affinity_bands(padded, self.eps)
        degree = bands.sum(axis=0)  # row sums == column sums (W is symmetric)
        inv_sqrt = 1.0 / np.sqrt(degree)
        # default mode: random-walk normalisation (see the class docstring), V = D^-1/2 A^-1 D^1/2 B
        self._sqrt_degree = None if compat else np.sqrt(degree)[..., None]
        # A = I - beta D^-1/2 W D^-1/2, band by band: A[i, i+o] = -beta * W[i, i+o] / sqrt(d_i d_{i+o})
        for o, (dy, dx) in enumerate(_OFFSETS):
            shifted = np.ones((ph, pw))
            ys = slice(max(0, -dy), min(ph, ph - dy))
            xs = slice(max(0, -dx), min(pw, pw - dx))
            shifted[ys, xs] = inv_sqrt[max(0, dy) : min(ph, ph + dy), max(0, dx) : min(pw, pw + dx)]
            bands[o] *= -self.beta * inv_sqrt * shifted
        matrix = _bands_to_csr(bands, diagonal=np.ones((ph, pw)))
        self.matrix = matrix  # A in row-major order of the solve grid, CSR (kept for residual checks)
        self.build_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        self._factorise(bands)
        self.factor_seconds = time.perf_counter() - t0
        self.solves = 0

    def _factorise(self, bands: np.ndarray) -> None:
        """SuperLU of A in nested-dissection order, symmetric mode (no pivoting: A is SPD)."""
        ph, pw = self.solve_shape
        perm = nested_dissection_order(ph, pw)
        self._perm = perm
        permuted = self.matrix[perm][:, perm].tocsc()
        self._lu = scipy.sparse.linalg.splu(
            permuted,
            permc_spec="NATURAL",
            diag_pivot_thresh=0.0,
            options={"SymmetricMode": True},
        )

    @property
    def factor_nnz(self) -> int:
        """Non-zeros in the L and U factors (memory: about 12 bytes each)."""
        return int(self._lu.L.nnz + self._lu.U.nnz)

    def _check_init(self, init: np.ndarray) -> np.ndarray:
        init = _check_rgb_uint8(init, "smoothing init (stylized image)")
        if init.shape[:2] != self.shape:
            hint = (
                "pass size=(H, W) to SmoothingSystem for the reference behaviour"
                if self.compat
                else "stylize at the content's size, or resize one of them"
            )
            raise InputError(
                f"smoothing init is {init.shape[0]}x{init.shape[1]} (HxW) but this system was built for "
                f"{self.shape[0]}x{self.shape[1]}; {hint}."
            )
        return init

    def rhs(self, init: np.ndarray) -> np.ndarray:
        """B = stylized / 255, float64 ``(H, W, 3)``; compat mode: its 2-px border replaced by edge
        replication (the reference's ``B``)."""
        init = self._check_init(init)
        b = init.astype(np.float64) / 255.0
        if self.compat == "fastphotostyle":
            b = np.pad(b[2:-2, 2:-2], ((2, 2), (2, 2), (0, 0)), mode="edge")
        return b

    def _system_rhs(self, init: np.ndarray) -> np.ndarray:
        b = self.rhs(init)
        return b if self._sqrt_degree is None else b * self._sqrt_degree

    def _solve_padded(self, b: np.ndarray) -> np.ndarray:
        ph, pw = self.solve_shape
        x = self._lu.solve(np.asfortranarray(b.reshape(ph * pw, 3)[self._perm]))  # 3 channels, one call
        out = np.empty_like(x)
        out[self._perm] = x
        return out.reshape(ph, pw, 3)

    def solve(self, init: np.ndarray) -> np.ndarray:
        """V = (1 - beta) A^-1 B for a stylized ``(H, W, 3)`` uint8 image, float64 ``(H', W', 3)``, unclipped."""
        x = self._solve_padded(self._system_rhs(init))
        self.solves += 1
        if self._sqrt_degree is not None:
            x /= self._sqrt_degree
        x *= 1.0 - self.beta
        if self.compat == "fastphotostyle":
            x = x[2:-2, 2:-2]
        return np.ascontiguousarray(x)

    def smooth(self, init: np.ndarray) -> np.ndarray:
        """Smoothed uint8 ``(H', W', 3)``: ``uint8(clip(V * 255, 0, 255))`` (truncation, as the reference)."""
        return np.clip(self.solve(init) * 255.0, 0, 255).astype(np.uint8)

    def residual(self, init: np.ndarray) -> float:
        """Relative residual ``|A x - B| / |B|`` of this system's solution for ``init`` (a health check)."""
        b = self._system_rhs(init)
        x = self._solve_padded(b)
        b, x = b.reshape(-1, 3), x.reshape(-1, 3)
        return float(np.linalg.norm(self.matrix @ x - b) / max(np.linalg.norm(b), 1e-300))

    def __repr__(self) -> str:
        return (
            f"SmoothingSystem(shape={self.shape}, compat={self.compat!r}, beta={self.beta}, eps={self.eps}, "
            f"build={self.build_seconds:.2f}s, factor={self.factor_seconds:.2f}s, solves={self.solves})"
        )


class TorchSmoothingSystem(SmoothingSystem):
    r"""The same system as :class:`SmoothingSystem`, solved by conjugate gradients in torch (for CUDA).

    :math:`A` stays a 25-band stencil on the device (no sparse format): one product is 25 shifted
    multiply-adds on the ``(3, H, W)`` float64 image, so a GPU does thousands per second. CG with a
    Jacobi preconditioner runs on the three channels at once until every channel's relative residual
    ``|b - A x| / |b|`` is below ``rtol`` (default 1e-11, which keeps V within about 1e-8 of the direct
    solve: A's condition number is about 2e4). On a CPU the direct :class:`SmoothingSystem` is much faster.

    ``device``: ``"auto"`` | ``"cpu"`` | ``"cuda"``; other parameters as :class:`SmoothingSystem`.
    """

    def __init__(self, content: np.ndarray, *, device: Any = "auto", rtol: float = 1e-11,
                 maxiter: int = 50000, **kw: Any) -> None:
        from ..devices import resolve_device

        self.device = resolve_device(device)
        self.rtol = float(rtol)
        self.maxiter = int(maxiter)
        self.iterations: list[int] = []
        super().__init__(content, **kw)

    def _factorise(self, bands: np.ndarray) -> None:
        import torch

        ph, pw = self.solve_shape
        a_bands = bands.copy()
        a_bands[_OFFSET_INDEX[(0, 0)]] += 1.0
        # (ph, pw, 25) so that a product is one contraction with the 5x5 neighbourhoods of x
        self._bands_t = torch.from_numpy(np.ascontiguousarray(a_bands.transpose(1, 2, 0))).to(self.device)
        self._inv_diag_t = 1.0 / self._bands_t[..., _OFFSET_INDEX[(0, 0)]]
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _matvec(self, x):
        import torch.nn.functional as F

        xp = F.pad(x, (2, 2, 2, 2))
        patches = xp.unfold(1, 5, 1).unfold(2, 5, 1)  # (3, ph, pw, 5, 5), offsets in row-major order
        return (patches.reshape(x.shape[0], x.shape[1], x.shape[2], 25) * self._bands_t).sum(-1)

    def _solve_padded(self, b: np.ndarray) -> np.ndarray:
        import torch

        bt = torch.from_numpy(np.ascontiguousarray(b.transpose(2, 0, 1))).to(self.device)
        x = torch.zeros_like(bt)
        r = bt.clone()
        z = r * self._inv_diag_t
        p = z.clone()
        rz = (r * z).sum((1, 2))
        bnorm = bt.norm(dim=(1, 2)).clamp_min(1e-300)
        iters = 0
        while iters < self.maxiter:
            ap = self._matvec(p)
            alpha = rz / (p * ap).sum((1, 2)).clamp_min(1e-300)
            x += alpha[:, None, None] * p
            r -= alpha[:, None, None] * ap
            iters += 1
            if iters % 25 == 0 and bool(((r.norm(dim=(1, 2)) / bnorm) < self.rtol).all()):
                break
            z = r * self._inv_diag_t
            rz_new = (r * z).sum((1, 2))
            p = z + (rz_new / rz.clamp_min(1e-300))[:, None, None] * p
            rz = rz_new
        else:
            raise RuntimeError(
                f"smoothing CG did not reach relative residual {self.rtol:g} in {self.maxiter} iterations; "
                "use the direct SmoothingSystem or raise maxiter."
            )
        self.iterations.append(iters)
        return x.permute(1, 2, 0).cpu().numpy()


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
    content = _check_rgb_uint8(content, "guided_filter_smooth content")
    return GuidedFilter(content, radius=radius, eps=eps)(init)


class GuidedFilter:
    r""":func:`guided_filter_smooth` split at the content: what depends only on the guide is computed once.

    The guide's window means and the inverses of its regularised window covariances
    :math:`(\Sigma_k + \varepsilon \mathbf{1}_3)^{-1}` are kept; each call (one per style) then needs only the box
    means of :math:`p` and :math:`I p`, a 3x3 product per pixel and the second box pass.
    """

    def __init__(self, content: np.ndarray, *, radius: int = 35, eps: float = 1e-3) -> None:
        content = _check_rgb_uint8(content, "guided filter content")
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
        init = _check_rgb_uint8(init, "guided_filter_smooth init (stylized image)")
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
    content = _check_rgb_uint8(content, "prepare_smoother content")
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
    if mode == "none":
        if kw:
            raise ConfigError(f"prepare_smoother(mode='none') takes no options, got {sorted(kw)}.")

        def none(stylized: np.ndarray) -> np.ndarray:
            stylized = _check_rgb_uint8(stylized, "stylized image")
            if stylized.shape != content.shape:
                raise InputError(
                    f"stylized image is {stylized.shape[:2]} but the content is {content.shape[:2]} (HxW)."
                )
            return stylized

        return none
    raise ConfigError(f"smoothing mode {mode!r} is not one of {', '.join(SMOOTHING_MODES)}.")
