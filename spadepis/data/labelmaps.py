"""Label maps and instance maps, read as the official SPADE loader reads them (presets: :mod:`.presets`).

A label map goes through the same steps as in the official ``Pix2pixDataset`` + ``Pix2PixModel``:

1. the PNG is opened with PIL (``L``/``P`` 8-bit, or ``I;16``/``I`` for label sets above 255);
2. it is resized with PIL ``NEAREST`` to the preset's label size ``(H, W)``
   (``resize_and_crop`` with ``load_size == crop_size``: ``crop x crop``; ``fixed``:
   ``round(crop / aspect) x crop``);
3. the value 255 becomes ``label_nc`` (the "dontcare" slot) when the preset has one;
4. the one-hot map has ``label_nc + dontcare`` channels; when the preset uses instance maps,
   one more channel (the last) holds the 4-neighbour instance edges.

ADE20K annotation values are used raw (0..150), exactly like the official code (its
``postprocess`` is a no-op, see ``ALGORITHMS.md`` 1.4). Cityscapes ``*_instanceIds.png`` are 16-bit;
we keep their true values (the official loader under Pillow >= 10 wraps them to int16, which gives
the same edges).

Colour-coded RGB label maps need a palette file, either text (one ``id r g b [name]`` per line,
``#`` starts a comment) or JSON (``{"id": [r, g, b]}`` or ``[{"id": 0, "color": [r, g, b]}, ...]``).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import InputError
from .images import open_image, read_bytes
from .presets import Preset

__all__ = [
    "Palette",
    "load_palette",
    "as_id_map",
    "read_id_map",
    "read_label_map",
    "resize_nearest",
    "resized_label_png",
    "load_label_map",
    "load_instance_map",
    "load_label_and_instance",
    "instance_edges",
    "build_semantics",
]


# ----------------------------------------------------------------------------------------------
# Palettes for colour-coded label maps


@dataclass(frozen=True)
class Palette:
    """Colour -> label id, for RGB label maps."""

    colors: dict[tuple[int, int, int], int]
    source: str = "<palette>"

    def encode(self) -> dict[int, int]:
        return {(r << 16) | (g << 8) | b: i for (r, g, b), i in self.colors.items()}


def load_palette(source: str | Path | dict | Palette) -> Palette:
    """Read a palette: text lines ``id r g b [name]`` or JSON (see module docstring)."""
    if isinstance(source, Palette):
        return source
    where = "<dict>"
    if isinstance(source, dict):
        entries = _palette_entries_json(source, where)
    else:
        where = str(source)
        text = read_bytes(source).decode("utf-8", errors="replace")
        stripped = text.lstrip()
        if stripped.startswith("{") or stripped.startswith("["):
            try:
                entries = _palette_entries_json(json.loads(text), where)
            except json.JSONDecodeError as exc:
                raise InputError(f"{where}: palette is not valid JSON ({exc}); fix the file.") from exc
        else:
            entries = []
            for lineno, line in enumerate(text.splitlines(), 1):
                line = line.split("#", 1)[0].strip()
                if not line:
                    continue
                parts = line.replace(",", " ").split()
                try:
                    entries.append((int(parts[0]), (int(parts[1]), int(parts[2]), int(parts[3]))))
                except (ValueError, IndexError):
                    raise InputError(
                        f"{where}:{lineno}: palette line {line!r} is not 'id r g b [name]' with integers; fix the line."
                    ) from None
    colors: dict[tuple[int, int, int], int] = {}
    for label, rgb in entries:
        if not all(0 <= c <= 255 for c in rgb):
            raise InputError(f"{where}: colour {rgb} of label {label} has a component outside 0..255; fix the palette.")
        if label < 0:
            raise InputError(f"{where}: label id {label} is negative; ids are 0..label_nc-1 (or 255 for dontcare).")
        if rgb in colors and colors[rgb] != label:
            raise InputError(f"{where}: colour {rgb} is given to both label {colors[rgb]} and label {label}; colours must be unique.")
        colors[rgb] = label
    if not colors:
        raise InputError(f"{where}: palette has no entries; expected lines 'id r g b'.")
    return Palette(colors, where)


def _palette_entries_json(obj, where: str) -> list[tuple[int, tuple[int, int, int]]]:
    try:
        if isinstance(obj, dict):
            return [(int(k), tuple(int(c) for c in v)) for k, v in obj.items()]
        return [(int(e["id"]), tuple(int(c) for c in e["color"])) for e in obj]
    except (TypeError, ValueError, KeyError) as exc:
        raise InputError(
            f"{where}: palette JSON must be {{\"id\": [r, g, b]}} or [{{\"id\": i, \"color\": [r, g, b]}}] ({exc})."
        ) from None


def _apply_palette(rgb: np.ndarray, palette: Palette, name: str) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    uniq, inverse = np.unique(code, return_inverse=True)
    table = palette.encode()
    ids = np.empty(len(uniq), dtype=np.int64)
    for i, c in enumerate(uniq.tolist()):
        if c not in table:
            ys, xs = np.nonzero(code == c)
            colour = ((c >> 16) & 255, (c >> 8) & 255, c & 255)
            raise InputError(
                f"{name}: colour {colour} at pixel (y={ys[0]}, x={xs[0]}) is not in palette {palette.source} "
                f"({len(table)} colours); add it to the palette or fix the label map."
            )
        ids[i] = table[c]
    return ids[inverse].reshape(code.shape)


# ----------------------------------------------------------------------------------------------
# Reading and resizing


def _name_of(source) -> str:
    return "<array>" if isinstance(source, np.ndarray | torch.Tensor) else str(source)


def as_id_map(source: np.ndarray | torch.Tensor, what: str, *, hint: str = "") -> np.ndarray:
    """A map of integer ids as a 2-D ``(H, W)`` int64 array: the one coercion of label and instance maps.

    Accepts ``(H, W)`` or ``(1, H, W)`` arrays or tensors of integers, booleans, or floats holding whole
    numbers; anything else is an :class:`InputError` that names ``what`` (``hint`` is added to the shape
    error, e.g. how to pass colour-coded maps).
    """
    arr = source.detach().cpu().numpy() if isinstance(source, torch.Tensor) else np.asarray(source)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise InputError(f"{what} has shape {tuple(arr.shape)}, expected a 2-D integer label map (H, W) of ids{hint}.")
    if arr.size == 0:
        raise InputError(f"{what} is empty (shape {tuple(arr.shape)}); pass a non-empty map.")
    if arr.dtype.kind == "f":
        if not (np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
            raise InputError(f"{what} holds non-integer values; pass integer ids.")
    elif arr.dtype.kind not in "iub":
        raise InputError(f"{what} has dtype {arr.dtype}; pass integer ids.")
    return arr.astype(np.int64)


def _image_to_array(img: Image.Image, name: str, what: str, palette: Palette | None) -> np.ndarray:
    mode = img.mode
    if mode in ("L", "P", "I", "I;16", "I;16L", "I;16B", "1"):
        arr = np.asarray(img)
        return arr.astype(np.int64)
    if mode in ("LA", "PA"):  # ids with an alpha channel: the ids are the first channel
        return np.asarray(img)[..., 0].astype(np.int64)
    if mode in ("RGB", "RGBA"):
        if palette is None:
            raise InputError(
                f"{name}: {what} is a colour ({mode}) image, expected a single-channel map of ids; "
                "pass a palette file (--palette) for colour-coded maps, or save the ids as an 8-bit grayscale PNG."
            )
        return _apply_palette(np.asarray(img.convert("RGB")), palette, name)
    raise InputError(f"{name}: {what} has image mode {mode!r}; expected an 8/16-bit single-channel PNG of ids.")


def _validate_ids(arr: np.ndarray, preset: Preset, name: str) -> np.ndarray:
    """255 -> label_nc (dontcare presets), then check 0 <= id < label channels."""
    arr = np.asarray(arr, dtype=np.int64)
    if preset.contain_dontcare_label:
        arr = np.where(arr == 255, preset.label_nc, arr)
    nc = preset.num_label_channels
    bad = (arr < 0) | (arr >= nc)
    if bad.any():
        ys, xs = np.nonzero(bad)
        value = int(arr[ys[0], xs[0]])
        values = np.unique(arr[bad])
        extra = f" (values outside the range: {', '.join(map(str, values[:8].tolist()))}{', ...' if len(values) > 8 else ''})"
        dc = f" and 255 (dontcare, read as {preset.label_nc})" if preset.contain_dontcare_label else ""
        raise InputError(
            f"{name}: label id {value} at pixel (y={ys[0]}, x={xs[0]}) is not valid for preset {preset.name!r}: "
            f"valid ids are 0..{nc - 1}{dc} (label_nc={preset.label_nc}){extra}. Use the preset that matches this "
            "dataset (for your own label set: preset custom with its label_nc and dontcare setting), or fix the label map."
        )
    return arr


def read_id_map(source: str | Path | np.ndarray | torch.Tensor, *, palette=None) -> np.ndarray:
    """The ids of a label map as stored, ``(H0, W0)`` int64, not checked against any preset (see
    :func:`read_label_map`)."""
    name = _name_of(source)
    pal = load_palette(palette) if palette is not None else None
    if isinstance(source, np.ndarray | torch.Tensor):
        arr = source.detach().cpu().numpy() if isinstance(source, torch.Tensor) else source
        if arr.ndim == 3 and arr.shape[-1] in (3, 4) and pal is not None:
            arr = _apply_palette(arr[..., :3], pal, name)
    else:
        arr = _image_to_array(open_image(source), name, "label map", pal)
    return as_id_map(arr, f"{name}: label map", hint=" (or (H, W, 3) colours with a palette)")


def read_label_map(source: str | Path | np.ndarray | torch.Tensor, preset: Preset, *, palette=None,
                   remap=None) -> np.ndarray:
    """Read and validate a label map at its own size: ``(H0, W0)`` int64 ids, 255 already mapped.

    ``source`` is a path/URI of a PNG, or a 2-D integer array (``(H, W, 3)`` uint8 with a palette).
    ``remap`` (a :class:`~spadepis.data.label_remap.LabelRemap`) first maps the dataset's ids into the preset's.
    """
    name = _name_of(source)
    arr = read_id_map(source, palette=palette)
    if remap is not None:
        arr = remap.apply(arr, preset, name)
    return _validate_ids(arr, preset, name)


def resize_nearest(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """PIL ``NEAREST`` resize of an integer map to ``size`` = (H, W), as the official loader does.

    Done by resizing an index grid with PIL, so it selects exactly PIL's source pixels for any dtype.
    """
    h0, w0 = arr.shape
    h, w = size
    if (h0, w0) == (h, w):
        return arr
    if h0 * w0 >= 2**31:
        raise InputError(f"map of {w0}x{h0} pixels is too large to resize; downscale it first.")
    # Resize an image of flat pixel indices with PIL itself (mode 'I'), so the selected source
    # pixels are exactly PIL's for any value range or dtype.
    index = Image.fromarray(np.arange(h0 * w0, dtype=np.int32).reshape(h0, w0), mode="I")
    picked = np.asarray(index.resize((w, h), Image.NEAREST)).astype(np.int64)
    return arr.reshape(-1)[picked]


def resized_label_png(uri: str | Path, size: tuple[int, int], crop: int = 0) -> bytes | None:
    """The label file at ``uri`` NEAREST-resized to ``size`` (H, W), then ``crop`` px cut from every side, as PNG
    bytes keeping its raw ids, mode and palette (a copy pixel-aligned with an image of that size); ``None`` when
    it already has that size and nothing is cropped."""
    img = open_image(uri)
    h, w = size
    if img.size == (w, h) and not crop:
        return None
    if img.size != (w, h):
        img = img.resize((w, h), Image.NEAREST)
    if crop and h > 2 * crop and w > 2 * crop:  # smaller images fail smoothing anyway (error rows)
        img = img.crop((crop, crop, w - crop, h - crop))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def load_label_map(source: str | Path | np.ndarray, preset: Preset, *, palette=None) -> np.ndarray:
    """Label map ready for the generator: ``(H, W)`` int64 at ``preset.label_size``.

    Official NEAREST resize, 255 -> ``label_nc`` where the preset has a dontcare label; every id is
    checked against ``0..num_label_channels-1`` (:class:`InputError` names the file, value and range).
    """
    return resize_nearest(read_label_map(source, preset, palette=palette), preset.label_size)


def _read_instance(source, name: str) -> np.ndarray:
    if isinstance(source, np.ndarray | torch.Tensor):
        return as_id_map(source, f"{name}: instance map")
    img = open_image(source)
    if img.mode in ("RGB", "RGBA"):
        # Colour-coded instance maps: each colour is one instance (only boundaries matter).
        rgb = np.asarray(img.convert("RGB")).astype(np.int64)
        return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    return _image_to_array(img, name, "instance map", None)


def load_instance_map(source, preset: Preset, *, label_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Instance map ``(H, W)`` int64 at ``preset.label_size`` (NEAREST, raw ids; 16-bit PNGs keep their values).

    ``label_shape``: the ``(H, W)`` of the label map *as read* (before resizing, see
    :func:`read_label_map`); a different instance size is an :class:`InputError`.
    """
    name = _name_of(source)
    arr = _read_instance(source, name)
    if label_shape is not None and tuple(arr.shape) != tuple(label_shape):
        raise InputError(
            f"{name}: instance map is {arr.shape[1]}x{arr.shape[0]} (WxH) but its label map is "
            f"{label_shape[1]}x{label_shape[0]}; they must be the same size, pixel-aligned. Pass the instance map "
            "that belongs to this label map."
        )
    return resize_nearest(arr, preset.label_size)


def load_label_and_instance(label, instance, preset: Preset, *, palette=None,
                            remap=None) -> tuple[np.ndarray, np.ndarray | None]:
    """Load a label map and (if the preset uses them and one is given) its instance map, size-checked.

    ``remap``: see :func:`read_label_map` (instance maps are not remapped)."""
    raw = read_label_map(label, preset, palette=palette, remap=remap)
    labels = resize_nearest(raw, preset.label_size)
    inst = None
    if instance is not None and not preset.no_instance:
        inst = load_instance_map(instance, preset, label_shape=raw.shape)
    return labels, inst


# ----------------------------------------------------------------------------------------------
# Tensors for the generator


def instance_edges(instance: torch.Tensor) -> torch.Tensor:
    """Official 4-neighbour instance-edge map.

    ``instance`` (B, 1, H, W) or (B, H, W) integer ids -> (B, 1, H, W) float32 in {0, 1}: a pixel is 1
    when its id differs from its left, right, upper or lower neighbour (both pixels of a differing
    pair are marked; border pixels compare inward only).
    """
    t = torch.as_tensor(instance)
    if t.dim() == 3:
        t = t.unsqueeze(1)
    if t.dim() != 4 or t.shape[1] != 1:
        raise InputError(f"instance tensor has shape {tuple(t.shape)}, expected (B, 1, H, W) or (B, H, W).")
    e = torch.zeros(t.shape, dtype=torch.bool, device=t.device)
    dx = t[..., :, 1:] != t[..., :, :-1]
    dy = t[..., 1:, :] != t[..., :-1, :]
    e[..., :, 1:] |= dx
    e[..., :, :-1] |= dx
    e[..., 1:, :] |= dy
    e[..., :-1, :] |= dy
    return e.float()


def _as_label_tensor(labels, what: str = "labels") -> torch.Tensor:
    t = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    if t.dim() == 2:
        t = t.unsqueeze(0)
    if t.dim() == 4 and t.shape[1] == 1:
        t = t[:, 0]
    if t.dim() != 3:
        raise InputError(f"{what} has shape {tuple(t.shape)}, expected (B, H, W) or (B, 1, H, W).")
    if t.is_floating_point():
        if not torch.equal(t, t.round()):
            raise InputError(f"{what} holds non-integer values; pass integer label ids.")
    return t.long()


def check_label_range(labels: torch.Tensor, preset: Preset, what: str = "labels") -> None:
    """:class:`InputError` unless every id is in ``0..num_label_channels-1`` (no device assert later)."""
    nc = preset.num_label_channels
    if labels.numel() == 0:
        raise InputError(f"{what} is empty.")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= nc:
        value = lo if lo < 0 else hi
        idx = (labels == value).nonzero()[0].tolist()
        raise InputError(
            f"{what}: label id {value} at (batch, y, x) = {tuple(idx)} is outside the valid range 0..{nc - 1} of preset "
            f"{preset.name!r} (label_nc={preset.label_nc}, dontcare={preset.contain_dontcare_label}). Load maps with "
            "load_label_map (which maps 255 to the dontcare id) or choose the matching preset."
        )


def build_semantics(labels: torch.Tensor, instances: torch.Tensor | None, preset: Preset) -> torch.Tensor:
    """Generator input: ``(B, semantic_nc, H, W)`` float32 one-hot (+ instance edges as the last channel).

    ``labels`` (B, H, W) or (B, 1, H, W) int64 ids (255 already mapped). When the preset uses instance
    maps and ``instances`` is None, the label map itself serves as the instance map (label
    boundaries only; COCO instance maps are built on top of the label map the same way).
    """
    lab = _as_label_tensor(labels)
    check_label_range(lab, preset)
    b, h, w = lab.shape
    sem = torch.zeros(b, preset.semantic_nc, h, w, dtype=torch.float32, device=lab.device)
    sem[:, : preset.num_label_channels].scatter_(1, lab.unsqueeze(1), 1.0)
    if not preset.no_instance:
        inst = lab if instances is None else _as_label_tensor(instances, "instances").to(lab.device)
        if inst.shape != lab.shape:
            raise InputError(f"instances have shape {tuple(inst.shape)} but labels have {tuple(lab.shape)}; they must match.")
        sem[:, -1:] = instance_edges(inst)
    return sem
