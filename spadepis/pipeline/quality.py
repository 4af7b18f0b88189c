"""Per-row quality scores of a stylized output, from the arrays already in memory (no extra weights).

>>> stats = style_quality_stats(style_rgb, style_seg)             # once per style (cached with the style)
>>> q = row_quality(content_rgb, output_rgb, content_seg, stats, ignore=[11])
>>> q["q_structure"], q["q_style"], q["q_coverage"], q["q_clipped"]

Definitions (manifest columns):

* ``q_structure`` in ``[-1, 1]`` (in practice ``[0, 1]``), higher is better: how much of the content's
  structure survives. With :math:`G_x`, :math:`G_y` the gradient magnitudes (central differences of the
  luma in ``[0, 1]``) of the content and the output, and local means, variances and covariance over
  ``7 x 7`` windows,

  .. math::

      \\mathrm{SSIM} = \\frac{(2\\mu_x\\mu_y + C_1)(2\\sigma_{xy} + C_2)}{(\\mu_x^2+\\mu_y^2+C_1)(\\sigma_x^2+\\sigma_y^2+C_2)},
      \\qquad q_{structure} = \\frac{\\sum w\\,\\mathrm{SSIM}}{\\sum w},\\quad w = \\mu_x + \\mu_y + 10^{-3},

  with :math:`C_1 = 10^{-4}`, :math:`C_2 = 9\\cdot10^{-4}`. The weight puts the score where either image
  has edges: flat areas that stay flat do not inflate it, flat areas that became blotchy lower it. An
  identical output gives 1; a constant output gives about 0 on any content with edges.
* ``q_style`` in ``(0, 1]``, higher is better: ``exp(-d / 20)`` where ``d`` is the pixel-weighted mean over
  the matched classes (see ``q_coverage``) of :math:`\\lVert\\mu_o-\\mu_s\\rVert + \\lVert\\sigma_o-\\sigma_s\\rVert`
  (per-channel mean and standard deviation in CIELAB, D65, so ``d`` is in Delta-E units) between the
  output's pixels of that class and the style's pixels of that class. Without label maps, or when no
  class matches, the same distance between the whole output and the whole style. 1 = same colour
  statistics; 0.37 at ``d = 20`` (clearly different).
* ``q_coverage`` in ``[0, 1]``, higher is better: the fraction of the content's pixels (ignored labels
  left out) whose class has a usable style region by the reference's rules (more than 10 pixels in both
  maps and a pixel-count ratio below 100, :func:`spadepis.wct.usable_labels`). ``None`` without label maps.
* ``q_clipped`` in ``[0, 1]``, lower is better: fraction of output pixels with a channel at 0 or 255.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import uniform_filter

__all__ = ["StyleQualityStats", "style_quality_stats", "rgb_to_lab", "q_structure", "q_clipped", "row_quality"]

_C1, _C2 = 1e-4, 9e-4
_WIN = 7
_STYLE_SCALE = 20.0


def _srgb_lut() -> np.ndarray:
    v = np.arange(256, dtype=np.float64) / 255.0
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4).astype(np.float32)


_LUT = _srgb_lut()
_M = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]],
              dtype=np.float32) / np.array([[0.95047], [1.0], [1.08883]], dtype=np.float32)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """``(..., 3)`` uint8 sRGB -> ``(..., 3)`` float32 CIELAB (D65)."""
    lin = _LUT[np.asarray(rgb, dtype=np.uint8)]
    xyz = lin @ _M.T
    d = 6.0 / 29.0
    f = np.where(xyz > d**3, np.cbrt(xyz), xyz / (3 * d * d) + 4.0 / 29.0)
    lab = np.empty_like(f)
    lab[..., 0] = 116.0 * f[..., 1] - 16.0
    lab[..., 1] = 500.0 * (f[..., 0] - f[..., 1])
    lab[..., 2] = 200.0 * (f[..., 1] - f[..., 2])
    return lab


def _class_moments(lab: np.ndarray, seg: np.ndarray | None, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per label id ``0..n-1``: pixel counts ``(n,)``, Lab means ``(n, 3)`` and standard deviations ``(n, 3)``."""
    flat = lab.reshape(-1, 3).astype(np.float64)
    ids = np.zeros(flat.shape[0], np.int64) if seg is None else np.asarray(seg).reshape(-1)
    counts = np.bincount(ids, minlength=n)[:n].astype(np.float64)
    safe = np.maximum(counts, 1.0)[:, None]
    s1 = np.stack([np.bincount(ids, flat[:, c], minlength=n)[:n] for c in range(3)], axis=1)
    s2 = np.stack([np.bincount(ids, flat[:, c] * flat[:, c], minlength=n)[:n] for c in range(3)], axis=1)
    mean = s1 / safe
    std = np.sqrt(np.maximum(s2 / safe - mean * mean, 0.0))
    return counts, mean, std


@dataclass
class StyleQualityStats:
    """What the scores need from a style, computed once per style."""

    global_mean: np.ndarray  # (3,) Lab
    global_std: np.ndarray  # (3,)
    label_counts: dict[int, int] | None  # style label map, at the style photo's size
    means: dict[int, np.ndarray]
    stds: dict[int, np.ndarray]


def style_quality_stats(style_rgb: np.ndarray, style_seg: np.ndarray | None = None) -> StyleQualityStats:
    """Global and per-label CIELAB mean/std of a style photo (``style_seg`` at the photo's size, or ``None``)."""
    lab = rgb_to_lab(style_rgb)
    _, gm, gs = _class_moments(lab, None, 1)
    if style_seg is None:
        return StyleQualityStats(gm[0], gs[0], None, {}, {})
    seg = np.asarray(style_seg).astype(np.int64)
    n = int(seg.max()) + 1
    counts, mean, std = _class_moments(lab, seg, n)
    present = [int(c) for c in np.flatnonzero(counts)]
    return StyleQualityStats(gm[0], gs[0], {c: int(counts[c]) for c in present},
                             {c: mean[c] for c in present}, {c: std[c] for c in present})


def _box(x: np.ndarray) -> np.ndarray:
    return uniform_filter(x, size=_WIN, mode="reflect")


def _grad_mag(rgb: np.ndarray) -> np.ndarray:
    y = np.asarray(rgb, dtype=np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) / 255.0
    gx = np.zeros_like(y)
    gy = np.zeros_like(y)
    gx[:, 1:-1] = (y[:, 2:] - y[:, :-2]) * 0.5
    gy[1:-1, :] = (y[2:, :] - y[:-2, :]) * 0.5
    return np.sqrt(gx * gx + gy * gy)


def q_structure(content: np.ndarray, output: np.ndarray) -> float:
    """Edge-weighted SSIM of gradient magnitudes (see the module docstring); 1 for identical images."""
    x, y = _grad_mag(content), _grad_mag(output)
    mx, my = _box(x), _box(y)
    vx = _box(x * x) - mx * mx
    vy = _box(y * y) - my * my
    cxy = _box(x * y) - mx * my
    ssim = ((2 * mx * my + _C1) * (2 * cxy + _C2)) / ((mx * mx + my * my + _C1) * (vx + vy + _C2))
    w = mx + my + 1e-3
    return float(np.sum(w * ssim, dtype=np.float64) / np.sum(w, dtype=np.float64))


def q_clipped(output: np.ndarray) -> float:
    """Fraction of pixels with a channel at 0 or 255."""
    out = np.asarray(output)
    return float(np.mean(np.any((out == 0) | (out == 255), axis=-1)))


def row_quality(
    content: np.ndarray,
    output: np.ndarray,
    content_seg: np.ndarray | None,
    style: StyleQualityStats,
    *,
    ignore: list[int] | tuple[int, ...] = (),
) -> dict[str, float | None]:
    """The four ``q_*`` columns of one output (``content``/``output`` ``(H, W, 3)`` uint8, ``content_seg`` ``(H, W)``)."""
    from ..models.wct import usable_labels

    lab = rgb_to_lab(output)
    labelled = content_seg is not None and style.label_counts is not None
    coverage = None
    dist = None
    if labelled:
        seg = np.asarray(content_seg).astype(np.int64)
        n = int(seg.max()) + 1
        counts, mean, std = _class_moments(lab, seg, n)
        content_counts = {int(c): int(counts[c]) for c in np.flatnonzero(counts)}
        usable = set(usable_labels(content_counts, style.label_counts))
        counted = {c: v for c, v in content_counts.items() if c not in set(ignore)}
        total = sum(counted.values())
        coverage = (sum(v for c, v in counted.items() if c in usable) / total) if total else 0.0
        matched = [c for c in usable if c in style.means and c not in set(ignore)]
        if matched:
            wts = np.array([counts[c] for c in matched], dtype=np.float64)
            d = np.array([np.linalg.norm(mean[c] - style.means[c]) + np.linalg.norm(std[c] - style.stds[c]) for c in matched])
            dist = float(np.sum(wts * d) / np.sum(wts))
    if dist is None:
        _, gm, gs = _class_moments(lab, None, 1)
        dist = float(np.linalg.norm(gm[0] - style.global_mean) + np.linalg.norm(gs[0] - style.global_std))
    return {
        "q_structure": q_structure(content, output),
        "q_style": float(np.exp(-dist / _STYLE_SCALE)),
        "q_coverage": None if coverage is None else float(coverage),
        "q_clipped": q_clipped(output),
    }
