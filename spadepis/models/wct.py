"""Whitening and colouring transform (WCT) of deep features, label-aware, split into style and content sides.

The maths is PhotoWCT's (Li et al., ECCV 2018; FastPhotoStyle ``photo_wct.py``), see
``ALGORITHMS.md`` section 2.5. For content features :math:`F_c` (``C x N``) and style features
:math:`F_s` (``C x M``):

.. math::

    \\bar F = F - \\mu,\\qquad
    \\Sigma_c = \\frac{\\bar F_c \\bar F_c^\\top}{N-1} + I,\\qquad
    \\Sigma_s = \\frac{\\bar F_s \\bar F_s^\\top}{M-1},

    W_c = \\Sigma_c^{-1/2},\\qquad C_s = \\Sigma_s^{1/2},\\qquad
    F_{cs} = C_s W_c \\bar F_c + \\mu_s,

where the matrix powers are taken over the eigen-directions whose eigenvalue is at least ``1e-5``
(the reference's rank cut; because of the ``+ I`` it only ever removes style directions).

Label-aware (semantic) WCT: for every label of the content map that has more than 10 pixels in both
maps and a pixel-count ratio below 100 either way (counted at the maps' own resolution), the transform
is applied to that region's columns only, with that region's means and covariances. Pixels whose label
is not used keep the content features. Label maps are resized to each feature size with PIL NEAREST.

Differences from the reference, all on cases where the reference fails or is undefined:

* eigen-decompositions use ``torch.linalg.eigh`` in float64 on the small ``C x C`` covariances
  (the reference calls float32 ``torch.svd``); results agree to float32 tolerance;
* a region with one pixel divides by ``max(n - 1, 1)`` (the reference divides by zero, FastPhotoStyle#104),
  so its centred features are zero and the output is the style mean;
* a constant style region has no eigenvalue above the cut; its colouring matrix is zero (output = style
  mean) where the reference would keep every direction and take square roots of rounding noise.

``compat="fastphotostyle"`` reproduces the reference's numerics instead: covariances in float32 and a
float32 SVD. It matters where a style covariance is rank-deficient (a style region with fewer feature
pixels than channels): the reference then keeps float32-noise eigenvalues (~1e-4..1e-3 of the largest)
above the 1e-5 cut, which the float64 path rightly drops; on the fixtures that is a 1.2e-3 relative
difference at level 4 that the max-unpool discontinuities amplify end to end.

What depends only on the style (:class:`StyleStats`: per level the global and per-region means and
colouring matrices, and the style map's label counts) is computed once by :func:`style_statistics`
and reused for every content image by :func:`apply_wct`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from ..errors import InputError

__all__ = [
    "RANK_EPS",
    "MIN_REGION_PIXELS",
    "MAX_REGION_RATIO",
    "RegionStats",
    "LevelStyleStats",
    "resize_label_map",
    "label_counts",
    "whitening",
    "colouring",
    "region_statistics",
    "style_statistics",
    "usable_labels",
    "apply_wct",
    "feature_wct",
]

RANK_EPS = 1e-5
"""Eigenvalues below this are dropped (reference: ``torch.svd`` values scanned for ``>= 1e-5``)."""
MIN_REGION_PIXELS = 10
"""A label is used only if it has MORE than this many pixels in both maps (full resolution)."""
MAX_REGION_RATIO = 100
"""... and the content/style pixel-count ratio is below this either way."""


# --------------------------------------------------------------------------------------------- helpers


def _as_label_map(seg: np.ndarray | torch.Tensor, what: str) -> np.ndarray:
    seg = seg.detach().cpu().numpy() if isinstance(seg, torch.Tensor) else np.asarray(seg)
    if seg.ndim == 3 and seg.shape[0] == 1:
        seg = seg[0]
    if seg.ndim != 2:
        raise InputError(
            f"{what} must be a 2-D integer label map (H, W), got shape {seg.shape}; "
            "convert colour-coded maps to integer ids first (spadepis.stylizers.colour_maps_to_labels)."
        )
    if seg.size == 0:
        raise InputError(f"{what} is empty (shape {seg.shape}); pass a non-empty label map.")
    if seg.dtype.kind == "f":
        if not np.all(np.isfinite(seg)) or not np.all(seg == np.round(seg)):
            raise InputError(f"{what} holds non-integer values; pass an integer label map.")
        seg = seg.astype(np.int64)
    elif seg.dtype.kind == "b":
        seg = seg.astype(np.int64)
    elif seg.dtype.kind not in "iu":
        raise InputError(f"{what} has dtype {seg.dtype}; pass an integer label map.")
    return seg


def resize_label_map(seg: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resize a 2-D integer map to ``(H, W)`` exactly as ``PIL.Image.resize(..., NEAREST)`` does.

    Any integer values are supported (they are replaced by their rank for PIL and mapped back).
    """
    seg = np.asarray(seg)
    h, w = int(size_hw[0]), int(size_hw[1])
    if seg.shape == (h, w):
        return seg
    values, inverse = np.unique(seg, return_inverse=True)
    img = Image.fromarray(inverse.reshape(seg.shape).astype(np.int32))  # mode "I"
    out = np.asarray(img.resize((w, h), Image.NEAREST))
    return values[out]


def label_counts(seg: np.ndarray) -> dict[int, int]:
    """Pixel count of every label of a 2-D map (at its own resolution)."""
    values, counts = np.unique(np.asarray(seg), return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


def _check_compat(compat: str | None) -> None:
    if compat not in (None, "fastphotostyle"):
        raise InputError(f"compat={compat!r} is not supported: use None (float64 eigh) or 'fastphotostyle'.")


def _sym_eig_desc(cov: torch.Tensor, compat: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending, float64) and eigenvectors (float64) of a symmetric matrix.

    Default: float64 ``eigh``. ``compat="fastphotostyle"``: float32 SVD of the float32 matrix, as the
    reference's ``torch.svd`` (its rounding noise decides which near-null directions are kept); if
    that SVD fails to converge it falls back to the float64 path.
    """
    if compat == "fastphotostyle":
        try:
            _, svals, vh = torch.linalg.svd(cov.to(torch.float32))
            return svals.to(torch.float64), vh.T.to(torch.float64)
        except RuntimeError:  # torch.linalg.LinAlgError subclasses RuntimeError
            pass
    cov = cov.to(torch.float64)
    cov = 0.5 * (cov + cov.T)
    evals, evecs = torch.linalg.eigh(cov)
    return evals.flip(0), evecs.flip(1)


def _covariance(feat: torch.Tensor, compat: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean (C,1), cov (C,C))`` with the unbiased ``/(n-1)`` (``/1`` for one pixel).

    Accumulated in float64 by default, in the features' dtype with ``compat="fastphotostyle"``.
    """
    f = feat if compat == "fastphotostyle" else feat.to(torch.float64)
    mean = f.mean(dim=1, keepdim=True)
    centred = f - mean
    n = centred.shape[1]
    cov = centred @ centred.T / max(n - 1, 1)
    return mean.to(torch.float64), cov


def whitening(feat: torch.Tensor, *, compat: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Content side: ``(mean (C,1), W (C,C))`` with ``W = (cov + I)^-1/2`` (float64 results).

    ``feat`` is ``(C, N)``; ``N = 1`` is allowed (covariance = I, W = I).
    """
    mean, cov = _covariance(feat, compat)
    cov = cov + torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    evals, evecs = _sym_eig_desc(cov, compat)
    keep = evals >= RANK_EPS
    v = evecs[:, keep]
    w = (v * evals[keep].rsqrt()) @ v.T
    return mean, w


def colouring(feat: torch.Tensor, *, compat: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Style side: ``(mean (C,1), Cs (C,C))`` with ``Cs = cov^1/2`` over eigenvalues ``>= 1e-5`` (float64).

    A constant or one-pixel region gives ``Cs = 0`` (the output is then the style mean).
    """
    mean, cov = _covariance(feat, compat)
    evals, evecs = _sym_eig_desc(cov, compat)
    keep = evals >= RANK_EPS
    v = evecs[:, keep]
    cs = (v * evals[keep].clamp_min(0).sqrt()) @ v.T
    return mean, cs


# --------------------------------------------------------------------------------------------- style side


@dataclass
class RegionStats:
    """Style statistics of one region (or the whole image) at one level."""

    mean: torch.Tensor
    """(C, 1) float64 style mean."""
    colour: torch.Tensor
    """(C, C) float64 colouring matrix ``Sigma_s^1/2`` (rank-cut)."""
    n_pixels: int


def region_statistics(feat: torch.Tensor, *, compat: str | None = None) -> RegionStats:
    """Mean and colouring matrix of ``feat`` ``(C, M)``."""
    mean, cs = colouring(feat, compat=compat)
    return RegionStats(mean=mean, colour=cs, n_pixels=int(feat.shape[1]))


@dataclass
class LevelStyleStats:
    """Everything the content side needs from the style at one feature level."""

    global_stats: RegionStats
    regions: dict[int, RegionStats] = field(default_factory=dict)
    """Per style label present at this level's feature size (only labels that can ever be used)."""
    label_counts: dict[int, int] | None = None
    """Full-resolution pixel counts of the style map (None without a style map)."""
    feature_hw: tuple[int, int] = (0, 0)
    compat: str | None = None


def style_statistics(
    style_feat: torch.Tensor,
    style_seg: np.ndarray | None = None,
    *,
    counts: dict[int, int] | None = None,
    compat: str | None = None,
) -> LevelStyleStats:
    """Style side of the WCT at one level.

    Parameters
    ----------
    style_feat:
        ``(C, h, w)`` or ``(1, C, h, w)`` style features.
    style_seg:
        Optional 2-D integer map of the style image, any size (resized with NEAREST to ``(h, w)``).
    counts:
        Full-resolution label counts of ``style_seg`` (computed if not given; pass them to avoid
        recounting at every level).
    compat:
        ``None``: float64 covariances and ``eigh`` (robust). ``"fastphotostyle"``: float32 covariances
        and SVD like the reference (bit-level behaviour on rank-deficient covariances, see module doc).
    """
    _check_compat(compat)
    if style_feat.dim() == 4:
        style_feat = style_feat[0]
    c, h, w = style_feat.shape
    flat = style_feat.reshape(c, h * w)
    stats = LevelStyleStats(global_stats=region_statistics(flat, compat=compat), feature_hw=(h, w), compat=compat)
    if style_seg is None:
        return stats
    seg = _as_label_map(style_seg, "style segmentation")
    stats.label_counts = dict(counts) if counts is not None else label_counts(seg)
    small = resize_label_map(seg, (h, w)).reshape(-1)
    for label, count in stats.label_counts.items():
        if count <= MIN_REGION_PIXELS:
            continue  # can never be used
        idx = np.flatnonzero(small == label)
        if idx.size == 0:
            continue
        cols = torch.from_numpy(idx).to(flat.device)
        stats.regions[label] = region_statistics(flat.index_select(1, cols), compat=compat)
    return stats


# --------------------------------------------------------------------------------------------- content side


def usable_labels(content_counts: dict[int, int], style_counts: dict[int, int]) -> list[int]:
    """Labels the reference would stylize: > 10 px in both maps and count ratio < 100 either way."""
    out = []
    for label, nc in content_counts.items():
        ns = style_counts.get(label, 0)
        if nc > MIN_REGION_PIXELS and ns > MIN_REGION_PIXELS and nc / ns < MAX_REGION_RATIO and ns / nc < MAX_REGION_RATIO:
            out.append(label)
    return out


def _transform(content: torch.Tensor, style: RegionStats, compat: str | None) -> torch.Tensor:
    """``(C, N)`` content columns -> stylized columns (same dtype as ``content``)."""
    mean_c, w = whitening(content, compat=compat)
    t = (style.colour @ w).to(content.dtype)
    return t @ (content - mean_c.to(content.dtype)) + style.mean.to(content.dtype)


def apply_wct(
    content_feat: torch.Tensor,
    style: LevelStyleStats,
    content_seg: np.ndarray | None = None,
    *,
    content_counts: dict[int, int] | None = None,
) -> torch.Tensor:
    """Content side of the WCT at one level.

    ``content_feat`` is ``(C, h, w)`` or ``(1, C, h, w)``; the result has the same shape and dtype.
    With both maps the transform is label-aware (see the module docstring); if either map is missing
    it is the plain global WCT. The numerics (``compat``) are those the style statistics were made with.
    """
    batched = content_feat.dim() == 4
    feat = content_feat[0] if batched else content_feat
    c, h, w = feat.shape
    if c != style.global_stats.mean.shape[0]:
        raise InputError(f"content features have {c} channels but the style statistics have {style.global_stats.mean.shape[0]}")
    flat = feat.reshape(c, h * w)
    if content_seg is None or style.label_counts is None:
        out = _transform(flat, style.global_stats, style.compat)
    else:
        seg = _as_label_map(content_seg, "content segmentation")
        counts = content_counts if content_counts is not None else label_counts(seg)
        small = resize_label_map(seg, (h, w)).reshape(-1)
        out = flat.clone()
        for label in usable_labels(counts, style.label_counts):
            region = style.regions.get(label)
            if region is None:
                continue  # no style pixel of this label at this feature size
            idx = np.flatnonzero(small == label)
            if idx.size == 0:
                continue
            cols = torch.from_numpy(idx).to(flat.device)
            out.index_copy_(1, cols, _transform(flat.index_select(1, cols), region, style.compat))
    out = out.reshape(c, h, w)
    return out.unsqueeze(0) if batched else out


def feature_wct(
    content_feat: torch.Tensor,
    style_feat: torch.Tensor,
    content_seg: np.ndarray | None = None,
    style_seg: np.ndarray | None = None,
    *,
    compat: str | None = None,
) -> torch.Tensor:
    """One-shot WCT (style side + content side); the reference's ``feature_wct``."""
    stats = style_statistics(style_feat, style_seg, compat=compat)
    return apply_wct(content_feat, stats, content_seg)
