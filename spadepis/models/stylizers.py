"""Stylizers behind one interface: PhotoWCT, the 16x-pruned WCT, and a weight-free colour transfer.

>>> stylizer = load_stylizer("color")
>>> cache = stylizer.prepare_style(style_rgb, style_seg)          # once per style
>>> raw = stylizer.stylize(content_rgb, cache, content_seg)       # per content: (3, H, W) float32, ~[0, 1]
>>> raw, numerics = stylizer.stylize_with_numerics(content_rgb, cache)   # + "reference" / "float64-fallback" / "float64"

* ``photowct``: FastPhotoStyle's ``photo_wct.pth`` (:class:`spadepis.photowct.PhotoWCT`).
* ``wct16x``: the 16x-pruned VGG-19 encoders/decoders (:class:`spadepis.photowct.WCT16x`), a folder
  holding ``encoder_l1..5.pth`` / ``decoder_l1..5.pth``.
* ``color``: no weights; the same whitening and colouring (:mod:`spadepis.wct`) applied to the RGB
  pixels themselves (on the 0-255 scale, so the content's ``+ I`` is a negligible regulariser), per label
  region when both maps are given. Matches each region's colour mean and covariance to the style's.

WCT numerics (``precision``, see :mod:`spadepis.wct`): ``"reference"`` (default) reproduces
FastPhotoStyle's float32 covariance + SVD with its rank cut, falling back to float64 only in the regions
where the reference fails or is undefined (one pixel, constant, no SVD convergence);
``"float64"`` uses float64 eigendecompositions throughout. :meth:`stylize_with_numerics` says which
path a stylization took.

Segmentation: label maps are 2-D integer arrays of any size (NEAREST-resized to every feature size).
The transform is label-aware only when BOTH the content and the style have a map; when only one has a
map (e.g. a SPADE label map for the content but an unlabelled style photo), the plain global WCT runs.
Labels are matched by equal integer value; labels the style lacks (or that fail the reference's
size rules) keep the content's features (``unmatched="keep"``) or get the style's global statistics
(``unmatched="global"``).

What depends only on the style -- its features at every level, the per-region means and colouring
matrices -- lives in the :class:`StyleCache` that :meth:`prepare_style` returns; :meth:`stylize`
never touches the style image again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from . import wct as _wct
from ..devices import resolve_device
from ..errors import ConfigError, InputError

__all__ = [
    "STYLIZER_NAMES",
    "StyleCache",
    "Stylizer",
    "NetworkStylizer",
    "ColorStylizer",
    "load_stylizer",
    "colour_maps_to_labels",
]

STYLIZER_NAMES = ("photowct", "wct16x", "color")


@dataclass
class StyleCache:
    """Everything that depends only on the style image (opaque to callers)."""

    stylizer: str
    levels: dict[int, _wct.LevelStyleStats]
    """Per feature level (0 = RGB pixels for ``color``): global and per-region means + colouring matrices."""
    style_hw: tuple[int, int]
    has_seg: bool
    style_id: str | None = None
    meta: dict = field(default_factory=dict)


@runtime_checkable
class Stylizer(Protocol):
    name: str
    weights_sha256: str | None

    def prepare_style(self, style: np.ndarray, style_seg: np.ndarray | None = None, *, style_id: str | None = None) -> StyleCache: ...

    def stylize(
        self, content: np.ndarray, style: StyleCache, content_seg: np.ndarray | None = None, *, unmatched: str = "keep"
    ) -> np.ndarray: ...

    def stylize_with_numerics(
        self, content: np.ndarray, style: StyleCache, content_seg: np.ndarray | None = None, *, unmatched: str = "keep"
    ) -> tuple[np.ndarray, str]: ...


# --------------------------------------------------------------------------------------------- helpers


def _check_rgb(image: np.ndarray, what: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"{what} must be an (H, W, 3) RGB image, got shape {image.shape}; convert it with .convert('RGB').")
    if image.dtype != np.uint8:
        raise InputError(f"{what} must be uint8 (0..255), got dtype {image.dtype}; convert it with images.float_to_uint8 or astype.")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"{what} is empty (shape {image.shape}).")
    return image


def _check_seg(seg: np.ndarray | None, what: str) -> np.ndarray | None:
    if seg is None:
        return None
    return _wct._as_label_map(seg, what)


def _to_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [0, 1] (torchvision's ToTensor)."""
    t = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).to(device)
    return t.permute(2, 0, 1).unsqueeze(0).to(torch.float32).div_(255.0)


def colour_maps_to_labels(*maps: np.ndarray, min_fraction: float = 0.002, merge_distance: int = 48) -> list[np.ndarray]:
    """Turn colour-coded segmentation images into integer label maps with consistent ids.

    Colour maps are often anti-aliased or JPEG-damaged, so "unique colours" would give thousands of
    labels. The palette is built from the colours covering at least ``min_fraction`` of a map's pixels,
    most frequent first, skipping any colour within L1 distance ``merge_distance`` of one already taken
    (so ``(254, 1, 1)`` joins ``(255, 0, 0)``); ids follow the sorted palette. Every pixel of every map
    then gets the id of its nearest palette colour (L1). 2-D maps are passed through unchanged.
    """
    rgb = []
    for i, m in enumerate(maps):
        m = np.asarray(m)
        if m.ndim == 3 and m.shape[2] in (3, 4):
            rgb.append(m[..., :3].astype(np.int32))
        elif m.ndim != 2:
            raise InputError(f"segmentation map #{i} has shape {m.shape}; expected (H, W) ids or (H, W, 3) colours.")
    if not rgb:
        return [np.asarray(m).astype(np.int64) for m in maps]
    totals: dict[tuple[int, int, int], int] = {}
    for m in rgb:
        colours, counts = np.unique(m.reshape(-1, 3), axis=0, return_counts=True)
        keep = counts >= max(1, min_fraction * counts.sum())
        for c, n in zip(colours[keep], counts[keep]):
            key = (int(c[0]), int(c[1]), int(c[2]))
            totals[key] = totals.get(key, 0) + int(n)
    chosen: list[tuple[int, int, int]] = []
    for colour, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0])):
        if all(sum(abs(a - b) for a, b in zip(colour, other)) > merge_distance for other in chosen):
            chosen.append(colour)
    pal = np.array(sorted(chosen), dtype=np.int32)  # (K, 3)
    out = []
    for m in maps:
        m = np.asarray(m)
        if m.ndim == 2:
            out.append(m.astype(np.int64))
            continue
        flat = m[..., :3].reshape(-1, 3).astype(np.int32)
        colours, inverse = np.unique(flat, axis=0, return_inverse=True)
        dist = np.abs(colours[:, None, :] - pal[None, :, :]).sum(-1)
        ids = dist.argmin(1)[inverse.reshape(-1)]
        out.append(ids.reshape(m.shape[:2]).astype(np.int64))
    return out


# --------------------------------------------------------------------------------------------- stylizers


class NetworkStylizer:
    """A :class:`~spadepis.photowct.WCTNetwork` (PhotoWCT or WCT16x) behind the stylizer interface."""

    def __init__(
        self,
        network,
        *,
        weights_sha256: str,
        device: torch.device,
        compat: str | None = None,
        precision: str = "reference",
    ) -> None:
        self.precision = _wct.resolve_precision(precision, compat)
        self.network = network
        self.name: str = network.name
        self.weights_sha256: str | None = weights_sha256
        self.device = device
        self.compat = compat
        # The deepest level pools (level - 1) times and its reflection padding needs >= 2 pixels left.
        self.min_side = 2 ** max(network.levels)

    def _check_size(self, image: np.ndarray, what: str) -> None:
        h, w = image.shape[:2]
        if min(h, w) < self.min_side:
            raise InputError(
                f"{what} is {w}x{h} (WxH); the {self.name} encoders need at least {self.min_side} pixels on each side "
                f"(levels up to {max(self.network.levels)}); use a larger image or upscale it."
            )

    def prepare_style(self, style: np.ndarray, style_seg: np.ndarray | None = None, *, style_id: str | None = None) -> StyleCache:
        """Encode the style once and compute every level's (per-region) mean and colouring matrix."""
        style = _check_rgb(style, "style image")
        self._check_size(style, "style image")
        seg = _check_seg(style_seg, "style segmentation")
        counts = _wct.label_counts(seg) if seg is not None else None
        with torch.inference_mode():
            feats = self.network.style_features(_to_tensor(style, self.device))
            levels = {
                level: _wct.style_statistics(feats[level], seg, counts=counts, precision=self.precision)
                for level in self.network.levels
            }
        return StyleCache(self.name, levels, style.shape[:2], seg is not None, style_id, {"precision": self.precision})

    def stylize(
        self, content: np.ndarray, style: StyleCache, content_seg: np.ndarray | None = None, *, unmatched: str = "keep"
    ) -> np.ndarray:
        """Raw PhotoWCT output ``(3, H, W)`` float32 (not clamped), same size as ``content``.

        ``unmatched`` (label-aware only): ``"keep"`` or ``"global"``, see :func:`spadepis.wct.apply_wct`.
        """
        return self.stylize_with_numerics(content, style, content_seg, unmatched=unmatched)[0]

    def stylize_with_numerics(
        self, content: np.ndarray, style: StyleCache, content_seg: np.ndarray | None = None, *, unmatched: str = "keep"
    ) -> tuple[np.ndarray, str]:
        """:meth:`stylize` plus the WCT numerics it took: ``"reference"``, ``"float64-fallback"`` (some
        region fell back to float64 because the reference fails there) or ``"float64"``."""
        content = _check_rgb(content, "content image")
        self._check_size(content, "content image")
        _check_cache(style, self.name, self.precision)
        seg = _check_seg(content_seg, "content segmentation")
        counts = _wct.label_counts(seg) if seg is not None else None
        numerics: set[str] = set()

        def apply_level(level: int, feat: torch.Tensor) -> torch.Tensor:
            return _wct.apply_wct(feat, style.levels[level], seg, content_counts=counts, unmatched=unmatched, numerics=numerics)

        with torch.inference_mode():
            out = self.network.transform(_to_tensor(content, self.device), apply_level)
        return out[0].detach().to("cpu", torch.float32).numpy(), _wct.combine_numerics(numerics, self.precision)


class ColorStylizer:
    """Weight-free WCT on RGB pixels (0-255 scale), per label region when both maps are given."""

    name = "color"
    weights_sha256: str | None = None

    def __init__(self, *, device: torch.device | None = None, compat: str | None = None, precision: str = "reference") -> None:
        self.precision = _wct.resolve_precision(precision, compat)
        self.device = device or torch.device("cpu")
        self.compat = compat

    def _pixels(self, image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).to(self.device).permute(2, 0, 1).to(torch.float32)

    def prepare_style(self, style: np.ndarray, style_seg: np.ndarray | None = None, *, style_id: str | None = None) -> StyleCache:
        style = _check_rgb(style, "style image")
        seg = _check_seg(style_seg, "style segmentation")
        stats = _wct.style_statistics(self._pixels(style), seg, precision=self.precision)
        return StyleCache(self.name, {0: stats}, style.shape[:2], seg is not None, style_id, {"precision": self.precision})

    def stylize(
        self, content: np.ndarray, style: StyleCache, content_seg: np.ndarray | None = None, *, unmatched: str = "keep"
    ) -> np.ndarray:
        return self.stylize_with_numerics(content, style, content_seg, unmatched=unmatched)[0]

    def stylize_with_numerics(
        self, content: np.ndarray, style: StyleCache, content_seg: np.ndarray | None = None, *, unmatched: str = "keep"
    ) -> tuple[np.ndarray, str]:
        """:meth:`stylize` plus the WCT numerics it took (see :meth:`NetworkStylizer.stylize_with_numerics`)."""
        content = _check_rgb(content, "content image")
        _check_cache(style, self.name, self.precision)
        seg = _check_seg(content_seg, "content segmentation")
        numerics: set[str] = set()
        out = _wct.apply_wct(self._pixels(content), style.levels[0], seg, unmatched=unmatched, numerics=numerics)
        return (out / 255.0).to("cpu", torch.float32).numpy(), _wct.combine_numerics(numerics, self.precision)


def _check_cache(cache: StyleCache, name: str, precision: str) -> None:
    if not isinstance(cache, StyleCache):
        raise InputError(f"expected a StyleCache from prepare_style(), got {type(cache).__name__}.")
    if cache.stylizer != name:
        raise InputError(
            f"this style cache was made by the {cache.stylizer!r} stylizer, not {name!r}: call prepare_style() on the stylizer you use."
        )
    made = cache.meta.get("precision", "reference")
    if made != precision:
        raise InputError(
            f"this style cache was made with WCT precision {made!r} but the stylizer uses {precision!r}: "
            "call prepare_style() on the stylizer you use."
        )


def load_stylizer(
    name: str,
    weights: str | Path | None = None,
    *,
    device: str | torch.device = "auto",
    compat: str | None = None,
    precision: str = "reference",
    **options,
) -> Stylizer:
    """Build a stylizer.

    Parameters
    ----------
    name:
        ``"photowct"`` (``weights`` = ``photo_wct.pth``, path or fsspec URI, ``.xz`` accepted),
        ``"wct16x"`` (``weights`` = folder with ``encoder_l1..5.pth`` / ``decoder_l1..5.pth``; options
        ``levels=(4, 3, 2, 1)``, ``unpool="nearest"``) or ``"color"`` (no weights).
    device:
        ``"auto"`` | ``"cpu"`` | ``"cuda"``.
    precision:
        WCT numerics: ``"reference"`` (default; FastPhotoStyle's float32 covariance + SVD and rank cut,
        float64 only where the reference fails) or ``"float64"`` (float64 eigendecompositions throughout;
        drops the float32-noise directions the reference keeps, so outputs differ from FastPhotoStyle's).
    compat:
        ``"fastphotostyle"``: the reference numerics (same as the default ``precision``; refused with
        ``precision="float64"``).
    """
    precision = _wct.resolve_precision(precision, compat)
    from .photowct import load_photowct, load_wct16x

    dev = resolve_device(device)
    if name == "color":
        if weights is not None:
            raise ConfigError(f"the 'color' stylizer takes no weights (got {str(weights)!r}); drop --weights or pick photowct/wct16x.")
        if options:
            raise ConfigError(f"unknown options for 'color': {sorted(options)}")
        return ColorStylizer(device=dev, precision=precision)
    if name == "photowct":
        if weights is None:
            raise ConfigError("the 'photowct' stylizer needs weights: pass FastPhotoStyle's photo_wct.pth (--weights PATH).")
        if options:
            raise ConfigError(f"unknown options for 'photowct': {sorted(options)}")
        model, sha = load_photowct(weights, device=dev)
        return NetworkStylizer(model, weights_sha256=sha, device=dev, precision=precision)
    if name == "wct16x":
        if weights is None:
            raise ConfigError(
                "the 'wct16x' stylizer needs weights: pass the folder holding encoder_l1..5.pth and decoder_l1..5.pth (--weights DIR)."
            )
        if str(weights).endswith(".pth"):
            raise ConfigError(f"wct16x weights must be a folder, got the file {str(weights)!r}: pass its parent folder.")
        unknown = set(options) - {"levels", "unpool"}
        if unknown:
            raise ConfigError(f"unknown options for 'wct16x': {sorted(unknown)} (valid: levels, unpool)")
        model, sha = load_wct16x(weights, device=dev, **options)
        return NetworkStylizer(model, weights_sha256=sha, device=dev, precision=precision)
    raise ConfigError(f"unknown stylizer {name!r}: choose one of {', '.join(STYLIZER_NAMES)}.")
