"""Fast smoothing: the guided-filter approximation (:func:`guided_filter_smooth`, :class:`GuidedFilter`).

It is FastPhotoStyle's ``--fast`` mode: He et al.'s guided filter with the colour content image as guide
(``cv2.ximgproc.guidedFilter`` semantics: radius 35, eps on the 0-255 scale, box filters with reflected borders,
output rounded and saturated to uint8).
"""

from __future__ import annotations

import numpy as np

from ...data.images import check_rgb_uint8
from ...errors import ConfigError, InputError


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
