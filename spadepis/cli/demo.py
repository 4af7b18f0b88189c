"""``spadepis demo``: the whole pipeline on generated inputs, no weights needed."""

from __future__ import annotations

from pathlib import Path

from ._pipeline_args import quiet_prefect_defaults


def _cmd_demo(args) -> int:
    quiet_prefect_defaults()
    from ..pipeline import demo

    out = Path(args.out)
    cfg = demo.prepare_demo(out, n_maps=args.n_maps)
    config_path = demo.write_config(cfg, out / "demo.yaml")
    from ..flows.augment import augment

    result = augment(config=cfg)
    sheet = demo.contact_sheet(result["run_uri"], out / "contact_sheet.png")
    print(demo.closing_note(result, sheet))
    print(f"The config it ran: {config_path}   (spadepis run {config_path})")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="run the whole pipeline on generated label maps and bundled photos (no weights needed)",
        description="The embedded demo: generates ADE20K-id scene label maps and takes four photos bundled with "
        "scikit-image as styles (under OUT/inputs), writes the config it runs to OUT/demo.yaml, runs the real flow "
        "with random-init SPADE, the color stylizer and exact smoothing, and draws OUT/contact_sheet.png. No weights, "
        "no network.",
    )
    p.add_argument("--out", default="out/demo", help="folder for the demo's inputs and outputs (default out/demo)")
    p.add_argument("--n-maps", type=int, default=12, help="number of generated label maps (default 12)")
    p.set_defaults(func=_cmd_demo)
