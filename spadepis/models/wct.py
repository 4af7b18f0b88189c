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

Numerics (``precision``):

* ``"reference"`` (the default): the reference's own numerics -- covariances in float32 and a float32
  SVD with its ``1e-5`` rank cut (the float32 covariance is the correctly rounded one, so results do
  not depend on the BLAS thread count). Where the reference fails or is undefined, that region alone falls
  back to the float64 path below and is reported as ``"float64-fallback"``:

  - a region with one pixel (the reference divides by ``N - 1 = 0``, FastPhotoStyle#104);
  - a constant (style) region: no singular value reaches the cut, and the reference then keeps every
    direction and takes square roots of rounding noise;
  - an SVD that does not converge, or any non-finite value in the decomposition.

* ``"float64"``: covariances and ``torch.linalg.eigh`` in float64 everywhere (reported as ``"float64"``).
  It differs from the reference where a style covariance is rank-deficient (a style region with fewer
  feature pixels than channels, or true eigenvalues below the cut): the reference's float32 SVD then
  returns rounding-noise eigenvalues (~1e-4..1e-3 of the largest) above the 1e-5 cut and colours with
  those noise directions; float64 drops them. End to end through ``photowct`` (the max-unpooling
  amplifies it) that is a different result, not a rounding difference: 99th percentile of |diff| ~0.25
  on [0, 1] outputs with the random-weight fixtures of ``reference/photowct_real``. Use it when you
  prefer the exactly rank-cut transform to reproducing FastPhotoStyle.

``compat="fastphotostyle"`` (kept for existing callers) asks for the reference numerics, i.e. the same as
``precision="reference"``; combining it with ``precision="float64"`` is refused.

Every transform reports the path it took (:data:`NUMERICS`) through the ``numerics`` set that
:func:`apply_wct` fills, so the pipeline can record it per output.

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
    "WCT_PRECISIONS",
    "NUMERICS",
    "resolve_precision",
    "combine_numerics",
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
WCT_PRECISIONS = ("reference", "float64")
"""``precision`` values: the reference's float32 SVD (default) or float64 ``eigh`` (module docstring)."""
NUMERICS = ("reference", "float64-fallback", "float64")
"""What a transform reports: reference numerics, float64 fallback where the reference fails, or float64 asked for."""


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
        raise InputError(f"compat={compat!r} is not supported: use None or 'fastphotostyle' (the reference's numerics).")


def resolve_precision(precision: str | None = "reference", compat: str | None = None) -> str:
    """The numerics to use: ``precision`` (``"reference"`` or ``"float64"``), with ``compat="fastphotostyle"``
    meaning ``"reference"``; a conflict between the two is refused."""
    _check_compat(compat)
    precision = precision or "reference"
    if precision not in WCT_PRECISIONS:
        raise InputError(f"WCT precision {precision!r} is not supported: use 'reference' (default) or 'float64'.")
    if compat == "fastphotostyle" and precision == "float64":
        raise InputError(
            "compat='fastphotostyle' asks for the reference's float32 numerics but precision='float64' was given; "
            "drop one of them."
        )
    return "reference" if compat == "fastphotostyle" else precision


def combine_numerics(values, precision: str = "reference") -> str:
    """One label for a whole stylization: ``"float64-fallback"`` if any region fell back, else the
    precision's own label (``"reference"`` / ``"float64"``)."""
    values = set(values)
    if "float64-fallback" in values:
        return "float64-fallback"
    if precision == "float64" or values == {"float64"}:
        return "float64"
    return "reference"


def _reference_eig(feat: torch.Tensor, add_identity: bool):
    """The reference's numerics: the float32 matrix ``cov = F F^T / (N - 1) (+ I)`` and its float32 SVD.

    The float32 covariance is the correctly rounded value of the product (accumulated in float64,
    then rounded), so it does not depend on how the BLAS splits the sum over threads; the reference's
    float32 ``torch.mm`` differs from it by accumulated rounding only. The SVD, which decides which
    near-null directions pass the ``1e-5`` cut, runs in float32 like the reference's ``torch.svd``.

    Returns ``(mean (C,1), eigenvalues (desc), eigenvectors)`` in float64, or ``None`` where the
    reference fails or is undefined (one pixel, no singular value above the cut, no convergence,
    non-finite values).
    """
    n = feat.shape[1]
    if n < 2:
        return None  # the reference divides by N - 1 = 0
    f = feat.to(torch.float64)
    mean = f.mean(dim=1, keepdim=True)
    centred = f - mean
    cov = centred @ centred.T / (n - 1)
    if add_identity:
        cov = cov + torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    try:
        _, svals, vh = torch.linalg.svd(cov.to(torch.float32))
    except RuntimeError:  # torch.linalg.LinAlgError (no convergence) subclasses RuntimeError
        return None
    if not (bool(torch.isfinite(svals).all()) and bool(torch.isfinite(vh).all())):
        return None
    if not bool((svals >= RANK_EPS).any()):
        return None  # constant region: the reference would keep every direction of a zero matrix
    return mean, svals.to(torch.float64), vh.T.to(torch.float64)


def _float64_eig(feat: torch.Tensor, add_identity: bool):
    """float64 mean, ``cov = F F^T / max(N - 1, 1) (+ I)`` and ``eigh`` (descending order)."""
    f = feat.to(torch.float64)
    mean = f.mean(dim=1, keepdim=True)
    centred = f - mean
    cov = centred @ centred.T / max(centred.shape[1] - 1, 1)
    if add_identity:
        cov = cov + torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    cov = 0.5 * (cov + cov.T)
    evals, evecs = torch.linalg.eigh(cov)
    return mean, evals.flip(0), evecs.flip(1)


def _eig(feat: torch.Tensor, add_identity: bool, precision: str):
    """``(mean, eigenvalues desc, eigenvectors, numerics)`` with the fallback rule of the module doc."""
    if precision == "reference":
        got = _reference_eig(feat, add_identity)
        if got is not None:
            return (*got, "reference")
        return (*_float64_eig(feat, add_identity), "float64-fallback")
    return (*_float64_eig(feat, add_identity), "float64")


def _whitening(feat: torch.Tensor, precision: str) -> tuple[torch.Tensor, torch.Tensor, str]:
    mean, evals, evecs, numerics = _eig(feat, True, precision)
    keep = evals >= RANK_EPS
    v = evecs[:, keep]
    return mean, (v * evals[keep].rsqrt()) @ v.T, numerics


def _colouring(feat: torch.Tensor, precision: str) -> tuple[torch.Tensor, torch.Tensor, str]:
    mean, evals, evecs, numerics = _eig(feat, False, precision)
    keep = evals >= RANK_EPS
    v = evecs[:, keep]
    return mean, (v * evals[keep].clamp_min(0).sqrt()) @ v.T, numerics


def whitening(feat: torch.Tensor, *, precision: str = "reference", compat: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Content side: ``(mean (C,1), W (C,C))`` with ``W = (cov + I)^-1/2`` (float64 results).

    ``feat`` is ``(C, N)``; ``N = 1`` is allowed (covariance = I, W = I, via the float64 fallback).
    """
    mean, w, _ = _whitening(feat, resolve_precision(precision, compat))
    return mean, w


def colouring(feat: torch.Tensor, *, precision: str = "reference", compat: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Style side: ``(mean (C,1), Cs (C,C))`` with ``Cs = cov^1/2`` over eigenvalues ``>= 1e-5`` (float64).

    A constant or one-pixel region gives ``Cs = 0`` (the output is then the style mean).
    """
    mean, cs, _ = _colouring(feat, resolve_precision(precision, compat))
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
    numerics: str = "reference"
    """How ``colour`` was computed: one of :data:`NUMERICS`."""


def region_statistics(feat: torch.Tensor, *, precision: str = "reference", compat: str | None = None) -> RegionStats:
    """Mean and colouring matrix of ``feat`` ``(C, M)``."""
    mean, cs, numerics = _colouring(feat, resolve_precision(precision, compat))
    return RegionStats(mean=mean, colour=cs, n_pixels=int(feat.shape[1]), numerics=numerics)


@dataclass
class LevelStyleStats:
    """Everything the content side needs from the style at one feature level."""

    global_stats: RegionStats
    regions: dict[int, RegionStats] = field(default_factory=dict)
    """Per style label present at this level's feature size (only labels that can ever be used)."""
    label_counts: dict[int, int] | None = None
    """Full-resolution pixel counts of the style map (None without a style map)."""
    feature_hw: tuple[int, int] = (0, 0)
    precision: str = "reference"
    """Numerics of the style side; the content side uses the same (:data:`WCT_PRECISIONS`)."""


def style_statistics(
    style_feat: torch.Tensor,
    style_seg: np.ndarray | None = None,
    *,
    counts: dict[int, int] | None = None,
    precision: str = "reference",
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
    precision:
        ``"reference"`` (default): float32 covariances and SVD like FastPhotoStyle, float64 fallback
        per region where the reference fails; ``"float64"``: float64 ``eigh`` (module docstring).
    compat:
        ``"fastphotostyle"`` is the same as ``precision="reference"`` (kept for existing callers).
    """
    precision = resolve_precision(precision, compat)
    if style_feat.dim() == 4:
        style_feat = style_feat[0]
    c, h, w = style_feat.shape
    flat = style_feat.reshape(c, h * w)
    stats = LevelStyleStats(global_stats=region_statistics(flat, precision=precision), feature_hw=(h, w), precision=precision)
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
        stats.regions[label] = region_statistics(flat.index_select(1, cols), precision=precision)
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


def _transform(content: torch.Tensor, style: RegionStats, precision: str, numerics: set[str] | None) -> torch.Tensor:
    """``(C, N)`` content columns -> stylized columns (same dtype as ``content``)."""
    mean_c, w, content_numerics = _whitening(content, precision)
    if numerics is not None:
        numerics.update((content_numerics, style.numerics))
    t = (style.colour @ w).to(content.dtype)
    return t @ (content - mean_c.to(content.dtype)) + style.mean.to(content.dtype)


def apply_wct(
    content_feat: torch.Tensor,
    style: LevelStyleStats,
    content_seg: np.ndarray | None = None,
    *,
    content_counts: dict[int, int] | None = None,
    numerics: set[str] | None = None,
    unmatched: str = "keep",
) -> torch.Tensor:
    """Content side of the WCT at one level.

    ``content_feat`` is ``(C, h, w)`` or ``(1, C, h, w)``; the result has the same shape and dtype.
    With both maps the transform is label-aware (see the module docstring); if either map is missing
    it is the plain global WCT. The numerics are those the style statistics were made with; pass a set
    as ``numerics`` to collect the path (:data:`NUMERICS`) of every region transform applied.
    ``unmatched``: what the pixels of content labels without a usable style region get: ``"keep"`` their
    own features (the reference), or ``"global"`` one WCT of all of them with the style's global statistics.
    """
    if unmatched not in ("keep", "global"):
        raise InputError(f"unmatched={unmatched!r}: use 'keep' (content features) or 'global' (style's global statistics)")
    batched = content_feat.dim() == 4
    feat = content_feat[0] if batched else content_feat
    c, h, w = feat.shape
    if c != style.global_stats.mean.shape[0]:
        raise InputError(f"content features have {c} channels but the style statistics have {style.global_stats.mean.shape[0]}")
    flat = feat.reshape(c, h * w)
    if content_seg is None or style.label_counts is None:
        out = _transform(flat, style.global_stats, style.precision, numerics)
    else:
        seg = _as_label_map(content_seg, "content segmentation")
        counts = content_counts if content_counts is not None else label_counts(seg)
        small = resize_label_map(seg, (h, w)).reshape(-1)
        out = flat.clone()
        done = np.zeros(small.shape[0], dtype=bool)
        for label in usable_labels(counts, style.label_counts):
            region = style.regions.get(label)
            if region is None:
                continue  # no style pixel of this label at this feature size
            idx = np.flatnonzero(small == label)
            if idx.size == 0:
                continue
            done[idx] = True
            cols = torch.from_numpy(idx).to(flat.device)
            out.index_copy_(1, cols, _transform(flat.index_select(1, cols), region, style.precision, numerics))
        if unmatched == "global" and not done.all():
            cols = torch.from_numpy(np.flatnonzero(~done)).to(flat.device)
            out.index_copy_(1, cols, _transform(flat.index_select(1, cols), style.global_stats, style.precision, numerics))
    out = out.reshape(c, h, w)
    return out.unsqueeze(0) if batched else out


def feature_wct(
    content_feat: torch.Tensor,
    style_feat: torch.Tensor,
    content_seg: np.ndarray | None = None,
    style_seg: np.ndarray | None = None,
    *,
    precision: str = "reference",
    compat: str | None = None,
    numerics: set[str] | None = None,
) -> torch.Tensor:
    """One-shot WCT (style side + content side); the reference's ``feature_wct``."""
    stats = style_statistics(style_feat, style_seg, precision=precision, compat=compat)
    return apply_wct(content_feat, stats, content_seg, numerics=numerics)
