"""``spadepis stylize``: photorealistic stylization of one content image with one style image.

The stylizer (photowct, wct16x or color) transfers the style; then the smoothing step (exact closed
form by default, ``fast`` guided filter, or ``none``) makes the result photorealistic again.

Segmentation maps (``--content-seg`` with ``--style-seg``) make the transfer label-aware: region to
region for labels present in both. Integer maps (8/16-bit grey or palette PNGs, values = label ids) are
used as they are; colour-coded RGB maps are converted to ids with one palette shared by both maps.
With only one of the two maps the plain global transfer runs.

The WCT uses FastPhotoStyle's numerics by default (float32 covariance + SVD with its 1e-5 rank cut), so
``--stylizer photowct`` reproduces the original's stylization; regions where the original fails (one pixel,
constant, SVD not converging) fall back to float64, and the summary line says so.
``--wct-precision float64`` uses float64 eigendecompositions everywhere instead: it drops the float32-noise
eigen-directions the original keeps, so photowct outputs differ visibly from FastPhotoStyle's.
``--compat fastphotostyle`` adds the reference's crop/resize/pad in exact smoothing (the output is then
4 px smaller); its WCT numerics are the default ones.
``--raw OUT.npy`` writes the stylizer output before clamping and smoothing: float32, shape (3, H, W).
"""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import ConfigError, InputError
from ..models.registry import COMPAT_MODES, SMOOTHERS, STYLIZERS, WCT_PRECISIONS


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
    if args.compat and args.wct_precision == "float64":
        raise ConfigError("--compat fastphotostyle uses the reference's float32 WCT numerics; drop --wct-precision float64 or --compat.")
    needs = STYLIZERS[args.stylizer].weights
    if needs is None and args.weights:
        with_weights = "/".join(n for n in STYLIZERS if STYLIZERS[n].weights)
        raise ConfigError(f"--stylizer {args.stylizer} takes no --weights; drop it or pick {with_weights}.")
    if needs is not None and not args.weights:
        raise ConfigError(f"--stylizer {args.stylizer} needs --weights ({needs}).")

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
    stylizer = load_stylizer(args.stylizer, args.weights, device=args.device, precision=args.wct_precision)
    t_load = time.perf_counter() - t0

    t0 = time.perf_counter()
    cache = stylizer.prepare_style(style, style_seg)
    raw, numerics = stylizer.stylize_with_numerics(content, cache, content_seg)
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
        f"stylized {content.shape[0]}x{content.shape[1]} with {args.stylizer} ({seg_note}, WCT numerics {numerics}"
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
    p.add_argument("--stylizer", choices=STYLIZERS.names, default="photowct", help=STYLIZERS.help(weights=True))
    p.add_argument("--weights", default=None,
                   help="; ".join(f"{e.weights} ({n})" for n, e in ((n, STYLIZERS[n]) for n in STYLIZERS) if e.weights))
    p.add_argument("--content", required=True, help="content image (path or fsspec URI)")
    p.add_argument("--style", required=True, help="style image (path or fsspec URI)")
    p.add_argument("--content-seg", default=None, help="label map of the content (integer or colour-coded PNG)")
    p.add_argument("--style-seg", default=None, help="label map of the style (integer or colour-coded PNG)")
    p.add_argument("--smoothing", choices=SMOOTHERS.names, default="exact", help=SMOOTHERS.help() + " (default exact)")
    p.add_argument("--wct-precision", choices=WCT_PRECISIONS.names, default="reference", help=WCT_PRECISIONS.help())
    p.add_argument("--compat", choices=COMPAT_MODES.names, default=None, help=COMPAT_MODES.help())
    p.add_argument("--out", required=True, help="output PNG (path or fsspec URI)")
    p.add_argument("--raw", default=None, help="also write the stylizer output before clamping: float32 .npy, (3, H, W)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    p.set_defaults(func=_cmd)
