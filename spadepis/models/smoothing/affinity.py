r"""The matting affinity and the 25 bands of the smoothing system (numpy and scipy only).

The matting affinity :math:`W` of the content image :math:`I` (Levin et al., PAMI 2008) sums over every full
3x3 window :math:`k`,

.. math::

    W_{ij} = \sum_{k \ni i, j} \frac{1}{9}\Bigl(1 + (I_i - \mu_k)^\top
             \bigl(\Sigma_k + \tfrac{\varepsilon}{9}\mathbf{1}_3\bigr)^{-1} (I_j - \mu_k)\Bigr),

and the exact smoothing system is :math:`A = \mathbf{1} - \beta S` with :math:`S = D^{-1/2} W D^{-1/2}` and
:math:`D = \operatorname{diag}(W\mathbf{1})` (:math:`\beta = 0.9999`, :math:`\varepsilon = 10^{-7}`). A pixel couples
only with the pixels of the 5x5 block around it, so :math:`W` and :math:`A` are kept as 25 bands ``(25, H, W)``,
one per offset of :data:`_OFFSETS` (``bands[o, y, x]`` = the entry of pixel ``(y, x)`` and pixel
``(y, x) + _OFFSETS[o]``; 0 where that neighbour lies outside the image), and turned into a CSR matrix only on
demand (:func:`matting_affinity`, :func:`smoothing_matrix`). The CHOLMOD factorisation (:mod:`.cholesky`)
factorises these bands (:data:`_UPPER`: the half it reads); the torch stencil solver (:mod:`.stencil`) builds the
same bands in torch for a batch of contents (``_torch_system_bands``).

A pixel's degree :math:`d_i` equals the number of full windows that contain it (the affinities of one window sum
to 1 along each row), so it is 9 inside and drops to 1 at the corners; :func:`_system_bands` returns it with the
bands (the default mode's random-walk normalisation needs it, see :mod:`.cholesky`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from ...data.images import check_rgb_uint8
from ...errors import InputError

# The 25 offsets (dy, dx) a pixel couples with through shared 3x3 windows, in row-major order, so that
# with row-major pixel numbering the column indices of every CSR row come out sorted.
_OFFSETS = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]
_OFFSET_INDEX = {o: n for n, o in enumerate(_OFFSETS)}
# The 9 positions of a 3x3 window relative to its centre.
_WINDOW = [(dy, dx) for dy in range(-1, 2) for dx in range(-1, 2)]

# The upper offsets (centre first) of the 25-point stencil: row i of A's upper triangle in CSR order, which is
# also column i of its lower triangle in CSC order, the layout cvxopt's spmatrix keeps its values in.
_UPPER = list(range(_OFFSET_INDEX[(0, 0)], len(_OFFSETS)))


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
# the smoothing system A = 1 - beta D^-1/2 W D^-1/2, banded, and the content resize of the compat mode
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
