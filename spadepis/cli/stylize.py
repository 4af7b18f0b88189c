"""``spadepis stylize``: photorealistic stylization of one content image with one style image.

The stylizer (photowct, wct16x or color) transfers the style; then the smoothing step (exact closed
form by default, ``fast`` guided filter, or ``none``) makes the result photorealistic again.

Segmentation maps (``--content-seg`` with ``--style-seg``) make the transfer label-aware: region to
region for labels present in both. Integer maps (8/16-bit grey or palette PNGs, values = label ids) are
used as they are; colour-coded RGB maps are converted to ids with one palette shared by both maps.
With only one of the two maps the plain global transfer runs.

``--compat fastphotostyle`` reproduces FastPhotoStyle's numerics: float32 covariance + SVD in the WCT,
and the reference's crop/resize/pad in exact smoothing (the output is then 4 px smaller).
``--raw OUT.npy`` writes the stylizer output before clamping and smoothing: float32, shape (3, H, W).
"""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import ConfigError, InputError


def _read_seg(uri: str, what: str):
    """A segmentation PNG as a 2-D int map (grey / palette / 16-bit) or an (H, W, 3) colour map."""
    import numpy as np

    from ..data.images import open_image

    img = open_image(uri)
    if img.mode in ("RGB", "RGBA", "LA", "CMYK", "YCbCr", "HSV"):
        arr = np.asarray(img.convert("RGB"))
        if (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all():
            return arr[..., 0].astype(np.int64)  # a grey map saved as RGB
        return arr
    if img.mode in ("1", "L", "P", "I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img)
        if arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
            raise InputError(f"{what} {uri}: holds non-integer values (mode {img.mode}); save label ids as an 8/16-bit PNG.")
        return arr.astype(np.int64)
    raise InputError(f"{what} {uri}: unsupported image mode {img.mode!r}; save the label map as a grey (L) or RGB PNG.")


def _cmd(args) -> int:
    import numpy as np

    from ..data.images import float_to_uint8, read_rgb, write_png
    from ..models.stylizers import colour_maps_to_labels, load_stylizer

    # argument checks before any work
    if args.raw and not str(args.raw).endswith(".npy"):
        raise ConfigError(f"--raw {args.raw}: expected a file name ending in .npy.")
    if args.compat and args.smoothing == "fast":
        raise ConfigError("--compat fastphotostyle is for --smoothing exact or none (the guided filter has no reference crop).")
    if args.stylizer == "color" and args.weights:
        raise ConfigError("--stylizer color takes no --weights; drop it or pick photowct/wct16x.")
    if args.stylizer != "color" and not args.weights:
        what = "photo_wct.pth" if args.stylizer == "photowct" else "the folder with encoder_l1..5.pth / decoder_l1..5.pth"
        raise ConfigError(f"--stylizer {args.stylizer} needs --weights ({what}).")

    content = read_rgb(args.content)
    style = read_rgb(args.style)
    content_seg = _read_seg(args.content_seg, "--content-seg") if args.content_seg else None
    style_seg = _read_seg(args.style_seg, "--style-seg") if args.style_seg else None
    if content_seg is not None and style_seg is not None:
        content_seg, style_seg = colour_maps_to_labels(content_seg, style_seg)
    else:
        if content_seg is not None or style_seg is not None:
            print("note: only one segmentation map given; running the global (not label-aware) transfer")
        content_seg = style_seg = None

    smoother = None
    if args.smoothing != "none":
        try:
            from ..models.smoothing import prepare_smoother
        except ImportError as exc:  # pragma: no cover - smoothing ships with the package
            raise ConfigError(f"smoothing is not available ({exc}); use --smoothing none.") from exc

    t0 = time.perf_counter()
    stylizer = load_stylizer(args.stylizer, args.weights, device=args.device, compat=args.compat)
    t_load = time.perf_counter() - t0

    t0 = time.perf_counter()
    cache = stylizer.prepare_style(style, style_seg)
    raw = stylizer.stylize(content, cache, content_seg)
    t_style = time.perf_counter() - t0
    stylized = float_to_uint8(raw)

    t0 = time.perf_counter()
    if args.smoothing == "none":
        out = stylized
    else:
        kw = {"compat": args.compat} if args.compat else {}
        smoother = prepare_smoother(content, args.smoothing, **kw)
        out = smoother(stylized)
    t_smooth = time.perf_counter() - t0

    write_png(args.out, out)
    if args.raw:
        Path(args.raw).parent.mkdir(parents=True, exist_ok=True)
        np.save(args.raw, raw.astype(np.float32))
    seg_note = "label-aware" if content_seg is not None else "global"
    print(
        f"stylized {content.shape[0]}x{content.shape[1]} with {args.stylizer} ({seg_note}"
        f"{', compat ' + args.compat if args.compat else ''}), smoothing {args.smoothing}: "
        f"load {t_load:.2f} s, stylize {t_style:.2f} s, smooth {t_smooth:.2f} s -> {args.out}"
        f" ({out.shape[0]}x{out.shape[1]}){', raw -> ' + args.raw if args.raw else ''}"
    )
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "stylize",
        help="photorealistic stylization of one content image with one style image",
        description=__doc__,
    )
    p.add_argument("--stylizer", choices=["photowct", "wct16x", "color"], default="photowct",
                   help="photowct: FastPhotoStyle photo_wct.pth; wct16x: 16x-pruned VGG-19 folder; color: no weights")
    p.add_argument("--weights", default=None,
                   help="photo_wct.pth (photowct) or the folder with encoder_l*/decoder_l*.pth (wct16x)")
    p.add_argument("--content", required=True, help="content image (path or fsspec URI)")
    p.add_argument("--style", required=True, help="style image (path or fsspec URI)")
    p.add_argument("--content-seg", default=None, help="label map of the content (integer or colour-coded PNG)")
    p.add_argument("--style-seg", default=None, help="label map of the style (integer or colour-coded PNG)")
    p.add_argument("--smoothing", choices=["exact", "fast", "none"], default="exact",
                   help="exact closed-form smoothing (default), fast guided filter, or none")
    p.add_argument("--compat", choices=["fastphotostyle"], default=None,
                   help="reproduce FastPhotoStyle: float32 SVD in the WCT, crop/resize/pad in exact smoothing")
    p.add_argument("--out", required=True, help="output PNG (path or fsspec URI)")
    p.add_argument("--raw", default=None, help="also write the stylizer output before clamping: float32 .npy, (3, H, W)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    p.set_defaults(func=_cmd)
