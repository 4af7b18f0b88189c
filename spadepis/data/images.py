"""Image I/O on local paths and fsspec URIs, with errors that name the file."""

from __future__ import annotations

import errno
import io
import os
import stat
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import InputError

__all__ = [
    "read_bytes", "open_image", "read_rgb", "check_rgb_uint8", "fit_size", "downscale_rgb", "encode_png", "write_png",
    "float_to_uint8", "DEFAULT_MAX_IMAGE_PIXELS", "set_max_image_pixels", "max_image_pixels", "oversized_images",
    "check_local_input", "local_path",
]

DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
"""PIL's own default: about 0.25 GiB of 24-bit pixels (the config field ``max_image_pixels``)."""
_MAX_PIXELS = DEFAULT_MAX_IMAGE_PIXELS


def set_max_image_pixels(limit: int | None) -> None:
    """Largest image (width x height) :func:`open_image` decodes in this process; larger ones are an
    :class:`InputError` naming the file (decompression bombs: a small file that expands to gigabytes).
    PIL's own guard is moved to the same limit."""
    global _MAX_PIXELS
    _MAX_PIXELS = int(limit or DEFAULT_MAX_IMAGE_PIXELS)
    Image.MAX_IMAGE_PIXELS = _MAX_PIXELS


def max_image_pixels() -> int:
    return _MAX_PIXELS


def oversized_images(uris: list[str], limit: int) -> list[tuple[str, int]]:
    """``(uri, pixels)`` of the images above ``limit`` pixels, from their headers only (nothing is decoded);
    unreadable files are left to the run, which reports them per item."""
    from .fs import open_uri

    out = []
    for uri in uris:
        try:
            check_local_input(str(uri))  # never open a FIFO
            with open_uri(str(uri), "rb") as f, warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                try:
                    w, h = Image.open(f).size
                except Image.DecompressionBombError as exc:
                    found = re.search(r"\((\d+) pixels\)", str(exc))
                    out.append((str(uri), int(found.group(1)) if found else limit + 1))
                    continue
        except Exception:  # noqa: BLE001 - unreadable: reported by the run
            continue
        if w * h > limit:
            out.append((str(uri), w * h))
    return out


def _too_big(uri: str | Path, w: int | None, h: int | None, pixels: int | None = None) -> InputError:
    if w and h:
        size = f"{w}x{h} = {w * h / 1e6:.0f} megapixels"
    else:
        size = f"{pixels / 1e6:.0f} megapixels" if pixels else "more pixels than allowed"
    return InputError(
        f"{uri}: image is {size}, above the limit of {_MAX_PIXELS / 1e6:.0f} megapixels (config field "
        "max_image_pixels), which guards against decompression bombs; downscale the image, remove it, or raise "
        "max_image_pixels if it is genuine."
    )


def local_path(uri: str | None) -> str | None:
    if not uri:
        return None
    uri = str(uri)
    if uri.startswith("file://"):
        return uri[len("file://"):]
    return None if "://" in uri else uri


def check_local_input(uri: str | None) -> None:
    """Raise :class:`InputError` when ``uri`` is a local path that is not a readable regular file: a symlink
    loop, a dangling link, a FIFO / socket / device, a folder, no read permission. Remote URIs pass (their
    errors are the storage's, and may be transient)."""
    path = local_path(uri)
    if path is None:
        return
    try:
        st = os.stat(path)  # follows links
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"{uri}: a symbolic link loop (the link points back to itself); fix or remove the link") from None
        if isinstance(exc, FileNotFoundError):
            what = "a dangling symbolic link" if os.path.islink(path) else "file not found (removed since it was listed?)"
            raise InputError(f"{uri}: {what}; fix or remove it") from None
        raise InputError(f"{uri}: cannot be read ({exc.strerror or exc}); fix the file or its permissions, or remove it") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{uri}: is a folder, expected an image file; rename or remove it")
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device"
        raise InputError(f"{uri}: is {kind}, not a regular file; only image files can be inputs, remove it")
    if not os.access(path, os.R_OK):
        raise InputError(f"{uri}: no permission to read it (mode {stat.filemode(st.st_mode)}); fix its permissions or remove it")


def read_bytes(uri: str | Path) -> bytes:
    from .fs import open_uri

    check_local_input(str(uri))  # a FIFO would block the reader forever; a link loop is no storage failure
    try:
        with open_uri(str(uri), "rb") as f:
            return f.read()
    except FileNotFoundError as exc:
        raise InputError(f"{uri}: file not found; check the path or URI.") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{uri}: is a folder, expected an image file.") from exc


def open_image(uri: str | Path) -> Image.Image:
    """Open and fully decode an image; truncated or non-image files raise :class:`InputError`."""
    data = read_bytes(uri)
    if not data:
        raise InputError(f"{uri}: file is empty (0 bytes); regenerate or re-download it.")
    try:
        img = Image.open(io.BytesIO(data))  # reads the header only
        w, h = img.size
        if w * h > _MAX_PIXELS:
            raise _too_big(uri, w, h)
        img.load()
    except Image.DecompressionBombError as exc:  # PIL's guard fires in open() at twice its limit
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise _too_big(uri, None, None, int(found.group(1)) if found else None) from exc
    except UnidentifiedImageError as exc:
        raise InputError(f"{uri}: not a readable image ({len(data)} bytes); expected a PNG or JPEG file.") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{uri}: image is truncated or corrupt ({exc}); regenerate or re-download it.") from exc
    return img


_MODES_16BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def read_rgb(uri: str | Path) -> np.ndarray:
    """Read an image as ``(H, W, 3)`` uint8 RGB.

    16-bit greyscale images are scaled to 8 bits (PIL's own ``convert("RGB")`` clips them at 255,
    which turns almost every pixel white).
    """
    img = open_image(uri)
    if img.mode in _MODES_16BIT or (img.mode == "I" and img.getextrema()[1] > 255):
        grey = np.asarray(img).astype(np.int64)
        grey = ((np.clip(grey, 0, 65535) + 128) // 257).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(img.convert("RGB"))


def check_rgb_uint8(image, what: str) -> np.ndarray:
    """``image`` as an ``(H, W, 3)`` uint8 RGB array, or an :class:`InputError` naming ``what`` and the fix."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"{what}: expected a numpy array (H, W, 3) uint8 RGB, got {type(image).__name__}; "
                         "read images with spadepis.data.images.read_rgb.")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"{what}: expected shape (H, W, 3) RGB, got {image.shape}; convert the image to RGB first "
                         "(spadepis.data.images.read_rgb does).")
    if image.dtype != np.uint8:
        raise InputError(f"{what}: expected dtype uint8 (0..255), got {image.dtype}; convert [0, 1] floats with "
                         "spadepis.data.images.float_to_uint8.")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"{what} is empty (shape {image.shape}).")
    return image


def fit_size(w: int, h: int, max_side: int | None) -> tuple[int, int] | None:
    """``(w, h)`` scaled so that the longer side is ``max_side`` (aspect kept), or ``None`` when it fits."""
    if not max_side or max(h, w) <= max_side:
        return None
    scale = max_side / max(h, w)
    return max(1, round(w * scale)), max(1, round(h * scale))


def downscale_rgb(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Bicubic downscale of an ``(H, W, 3)`` image to ``max_side`` (as FastPhotoStyle's memory_limit_image_resize);
    the same array when it fits."""
    size = fit_size(image.shape[1], image.shape[0], max_side)
    return image if size is None else np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))


def encode_png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG")
    return buf.getvalue()


def write_png(uri: str | Path, array: np.ndarray) -> bytes:
    """Write ``array`` as PNG to a path or fsspec URI (parents created); returns the bytes written."""
    from .fs import url_to_fs

    data = encode_png(array)
    uri = str(uri)
    fs, path = url_to_fs(uri)
    from .buckets import put_bytes

    put_bytes(fs, path, data)  # the one write path: atomic, never makedirs on an object store
    return data


def float_to_uint8(x: np.ndarray, *, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """Map ``[low, high]`` to 0..255 by truncation, as the reference code does (not rounding).

    ``x`` is ``(3, H, W)`` or ``(H, W, 3)`` float; the result is ``(H, W, 3)`` uint8.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 3 and x.shape[0] == 3 and x.shape[-1] != 3:
        x = x.transpose(1, 2, 0)
    scaled = (x - low) / (high - low) * 255.0
    return np.clip(scaled, 0, 255).astype(np.uint8)
