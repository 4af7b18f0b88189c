"""``spadepis synthesize``: label map(s) -> SPADE image(s) with an official checkpoint.

Single map::

    spadepis synthesize --checkpoint coco_pretrained/latest_net_G.pth --preset coco \\
        --label val_label/000000000139.png --instance val_inst/000000000139.png --out out.png [--raw out.npy]

Folder of maps (instance maps matched by file stem)::

    spadepis synthesize --checkpoint ... --preset coco --label-dir val_label --instance-dir val_inst --out-dir out/
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from ..data.presets import PREPROCESS_MODES, PRESETS, UPSAMPLING_LAYERS
from ..errors import ConfigError, InputError

_EXTS = (".png", ".bmp", ".tif", ".tiff")


def register(sub) -> None:
    p = sub.add_parser(
        "synthesize",
        help="synthesize photos from label maps with a SPADE checkpoint",
        description="Synthesize photos from semantic label maps with an official SPADE generator checkpoint "
        "(latest_net_G.pth, legacy or zip format, .xz allowed). Label maps are loaded like the official test.py.",
    )
    p.add_argument("--checkpoint", required=True, help="latest_net_G.pth (path or fsspec URI)")
    p.add_argument("--preset", default="coco", choices=list(PRESETS),
                   help="dataset preset of the checkpoint (default coco)")
    p.add_argument("--ngf", type=int, default=None, help="generator width (default: inferred from the checkpoint)")
    p.add_argument("--num-upsampling-layers", choices=list(UPSAMPLING_LAYERS), default=None,
                   help="default: the preset's ('more' for cityscapes); 'most' is inferred from the checkpoint")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--label", help="one label map PNG")
    src.add_argument("--label-dir", help="a folder of label map PNGs (batch form)")
    p.add_argument("--instance", help="instance map PNG for --label")
    p.add_argument("--instance-dir", help="folder of instance maps for --label-dir (same file stems)")
    p.add_argument("--out", help="output PNG for --label")
    p.add_argument("--out-dir", help="output folder for --label-dir (one <stem>.png per map)")
    p.add_argument("--raw", help="also write the generator output (float32 (3,H,W) in [-1,1]) as .npy (--label only)")
    p.add_argument("--raw-dir", help="also write <stem>.npy raw outputs (--label-dir only)")
    p.add_argument("--batch-size", type=int, default=4, help="maps per generator call in the batch form (default 4)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--palette", help="palette file for colour-coded RGB label maps (lines 'id r g b' or JSON)")
    g = p.add_argument_group("custom preset options (override any preset)")
    g.add_argument("--label-nc", type=int, default=None, help="number of label ids")
    dc = g.add_mutually_exclusive_group()
    dc.add_argument("--dontcare", dest="dontcare", action="store_true", default=None,
                    help="value 255 is 'unknown' with its own channel")
    dc.add_argument("--no-dontcare", dest="dontcare", action="store_false")
    inst = g.add_mutually_exclusive_group()
    inst.add_argument("--no-instance", dest="no_instance", action="store_true", default=None,
                      help="the model takes no instance-edge channel")
    inst.add_argument("--use-instance", dest="no_instance", action="store_false")
    g.add_argument("--crop-size", type=int, default=None, help="output width")
    g.add_argument("--aspect-ratio", type=float, default=None, help="output width / height")
    g.add_argument("--preprocess-mode", choices=list(PREPROCESS_MODES), default=None)
    p.set_defaults(func=_cmd)


def _check_args(args) -> None:
    if args.label:
        if not args.out:
            raise ConfigError("--label needs --out OUT.png (where to write the image).")
        if args.instance_dir or args.out_dir or args.raw_dir:
            raise ConfigError("--instance-dir/--out-dir/--raw-dir go with --label-dir; with --label use --instance/--out/--raw.")
        if not Path(args.label).exists() and "://" not in args.label:
            raise ConfigError(f"--label {args.label}: file not found.")
    else:
        if not args.out_dir:
            raise ConfigError("--label-dir needs --out-dir DIR (where to write the images).")
        if args.instance or args.out or args.raw:
            raise ConfigError("--instance/--out/--raw go with --label; with --label-dir use --instance-dir/--out-dir/--raw-dir.")
        if not Path(args.label_dir).is_dir():
            raise ConfigError(f"--label-dir {args.label_dir}: not a folder.")
        if args.instance_dir and not Path(args.instance_dir).is_dir():
            raise ConfigError(f"--instance-dir {args.instance_dir}: not a folder.")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size}: must be >= 1.")


def _find_instance(folder: Path, stem: str) -> Path | None:
    for ext in _EXTS:
        cand = folder / f"{stem}{ext}"
        if cand.exists():
            return cand
    return None


def _cmd(args) -> int:
    import torch

    from ..data.images import write_png
    from ..data.labelmaps import load_label_and_instance, load_palette
    from ..data.presets import get_preset
    from ..models.spade import load_synthesizer, to_uint8

    _check_args(args)
    overrides = dict(label_nc=args.label_nc, contain_dontcare_label=args.dontcare, no_instance=args.no_instance,
                     crop_size=args.crop_size, aspect_ratio=args.aspect_ratio, preprocess_mode=args.preprocess_mode)
    get_preset(args.preset, **overrides)  # check the options before loading weights
    palette = load_palette(args.palette) if args.palette else None
    t0 = time.perf_counter()
    synth = load_synthesizer(args.checkpoint, args.preset, ngf=args.ngf, num_upsampling_layers=args.num_upsampling_layers,
                             device=args.device, **overrides)
    preset = synth.preset
    print(f"loaded {synth.model_name} ({preset.describe()}) sha256={synth.sha256[:16]} on {synth.device} "
          f"in {time.perf_counter() - t0:.1f}s", file=sys.stderr)

    if args.label:
        if preset.no_instance and args.instance:
            print("note: this preset takes no instance maps; --instance is ignored", file=sys.stderr)
        labels, inst = load_label_and_instance(args.label, args.instance, preset, palette=palette)
        out = synth.synthesize(labels[None], None if inst is None else inst[None])
        write_png(args.out, to_uint8(out)[0])
        if args.raw:
            Path(args.raw).parent.mkdir(parents=True, exist_ok=True)
            np.save(args.raw, out[0].numpy().astype(np.float32))
        print(f"wrote {args.out}" + (f" and {args.raw}" if args.raw else ""), file=sys.stderr)
        return 0

    label_dir = Path(args.label_dir)
    files = sorted(f for f in label_dir.iterdir() if f.suffix.lower() in _EXTS)
    if not files:
        raise ConfigError(f"--label-dir {label_dir}: no label maps ({', '.join(_EXTS)}) found.")
    out_dir = Path(args.out_dir)
    failures = 0
    done = 0
    t1 = time.perf_counter()
    for s in range(0, len(files), args.batch_size):
        chunk, labs, insts = [], [], []
        for f in files[s:s + args.batch_size]:
            inst_path = None
            if args.instance_dir and not preset.no_instance:
                inst_path = _find_instance(Path(args.instance_dir), f.stem)
                if inst_path is None:
                    print(f"error: {f}: no instance map {f.stem}.* in {args.instance_dir}; skipped", file=sys.stderr)
                    failures += 1
                    continue
            try:
                lab, inst = load_label_and_instance(f, inst_path, preset, palette=palette)
            except InputError as exc:
                print(f"error: {exc}; skipped", file=sys.stderr)
                failures += 1
                continue
            chunk.append(f)
            labs.append(lab)
            insts.append(inst)
        if not chunk:
            continue
        use_inst = all(i is not None for i in insts)
        out = synth.synthesize(np.stack(labs), torch.from_numpy(np.stack(insts)) if use_inst else None)
        if not use_inst and any(i is not None for i in insts):  # mixed: redo per map to keep each one's instances
            out = torch.cat([synth.synthesize(lab_[None], None if i is None else i[None]) for lab_, i in zip(labs, insts)])
        images = to_uint8(out)
        for f, img, raw in zip(chunk, images, out):
            write_png(out_dir / f"{f.stem}.png", img)
            if args.raw_dir:
                Path(args.raw_dir).mkdir(parents=True, exist_ok=True)
                np.save(Path(args.raw_dir) / f"{f.stem}.npy", raw.numpy().astype(np.float32))
        done += len(chunk)
    dt = time.perf_counter() - t1
    print(f"wrote {done} image(s) to {out_dir} in {dt:.1f}s ({done / dt if dt else 0:.2f} images/s); {failures} failed",
          file=sys.stderr)
    return 1 if failures else 0
