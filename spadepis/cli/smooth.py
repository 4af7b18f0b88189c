"""``spadepis smooth``: photorealistic smoothing of one stylized image guided by its content image.

Size rules: by default the stylized image (``--init``) must have the content's size and the output keeps
it. With ``--compat fastphotostyle`` the reference's behaviour applies: the content is resized (PIL
BILINEAR) to the stylized image's size minus 4 pixels, and the output is 4 pixels smaller in each
dimension than ``--init``.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import ConfigError, InputError
from ..models.registry import COMPAT_MODES, SMOOTHERS

_MODES = tuple(n for n in SMOOTHERS if not SMOOTHERS[n].identity)
"""The smoothing modes that do something (``none`` is no command of its own)."""


def _cmd(args) -> int:
    import numpy as np

    from ..data.images import read_rgb, write_png
    from ..models.smoothing import SmoothingSystem, guided_filter_smooth

    # check every argument before any work
    if args.mode == "fast" and args.compat:
        raise ConfigError("--compat fastphotostyle applies to --mode exact only (the fast mode keeps the full size).")
    if args.mode == "fast" and args.raw:
        raise ConfigError("--raw writes V of the exact solve; drop --raw or use --mode exact.")
    if args.raw and not str(args.raw).endswith(".npy"):
        raise ConfigError(f"--raw {args.raw}: expected a .npy file name.")
    content = read_rgb(args.content)
    init = read_rgb(args.init)
    if args.mode == "fast" or not args.compat:
        if content.shape != init.shape:
            raise InputError(
                f"--content {args.content} is {content.shape[0]}x{content.shape[1]} but --init {args.init} is "
                f"{init.shape[0]}x{init.shape[1]} (HxW); they must have the same size (or use --compat "
                "fastphotostyle, which resizes the content like FastPhotoStyle)."
            )

    t0 = time.perf_counter()
    if args.mode == "fast":
        out = guided_filter_smooth(content, init)
        raw = None
    else:
        system = SmoothingSystem(content, compat=args.compat, size=init.shape[:2] if args.compat else None)
        raw = system.solve(init)
        out = np.clip(raw * 255.0, 0, 255).astype(np.uint8)
    seconds = time.perf_counter() - t0

    write_png(args.out, out)
    if raw is not None and args.raw:
        Path(args.raw).parent.mkdir(parents=True, exist_ok=True)
        np.save(args.raw, raw.astype(np.float64))
    extra = f", V -> {args.raw}" if raw is not None and args.raw else ""
    print(f"smoothed ({args.mode}{', compat ' + args.compat if args.compat else ''}) "
          f"{init.shape[0]}x{init.shape[1]} -> {out.shape[0]}x{out.shape[1]} in {seconds:.2f} s: {args.out}{extra}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "smooth",
        help="photorealistic smoothing of a stylized image (exact closed form or guided filter)",
        description=__doc__,
    )
    p.add_argument("--content", required=True, help="content image (PNG/JPEG path or fsspec URI)")
    p.add_argument("--init", required=True, help="stylized image to smooth (same size as the content)")
    p.add_argument("--mode", choices=_MODES, default="exact", help=SMOOTHERS.help(_MODES) + " (default exact)")
    p.add_argument("--compat", choices=COMPAT_MODES.names, default=None, help=COMPAT_MODES.help())
    p.add_argument("--out", required=True, help="output PNG (path or fsspec URI)")
    p.add_argument("--raw", default=None,
                   help="also write V before clipping: float64 .npy, shape (H, W, 3) (after the crop in compat mode)")
    p.set_defaults(func=_cmd)
