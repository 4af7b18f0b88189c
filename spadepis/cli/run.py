"""``spadepis run | check | summary | demo``: the pipeline from the command line.

The Prefect flow (``spadepis.flows``) is imported inside the command functions only, so
the library stays free of Prefect.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..errors import ConfigError


def _quiet_prefect_defaults() -> None:
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _load(args) -> "object":
    from ..pipeline.config import load_config
    from ..pipeline.secrets import has_secret_references

    overrides = list(args.set or [])
    if getattr(args, "wait_lease", None) is not None:
        overrides.append(f"lease.wait_s={args.wait_lease}")
    cfg = load_config(args.config, overrides=overrides)
    if any(has_secret_references(opts) for opts in cfg.storage_options.values()):
        import spadepis.tasks.shard  # noqa: F401 - the Prefect layer registers the Secret-block resolver
    return cfg


def _prepare_inputs(cfg) -> None:
    from ..pipeline.demo import prepare_inputs

    for folder in prepare_inputs(cfg):
        print(f"generated the demo inputs in {folder} (dataset.demo_inputs)")


def _cmd_check(args) -> int:
    from ..pipeline.preflight import validate_config
    from ..pipeline.plan import make_plan

    cfg = _load(args)
    _prepare_inputs(cfg)
    problems = validate_config(cfg)
    if problems:
        print(f"{args.config}: {len(problems)} problem(s); fix them before running:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    plan = make_plan(cfg)
    from ..pipeline.plan import renamed_inputs, storage_name_problems

    problems = storage_name_problems(plan, cfg.run_uri)
    if problems:
        print(f"{args.config}: {len(problems)} output name(s) cannot be stored:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    renamed = renamed_inputs(plan)
    if renamed:
        shown = "; ".join(f"{name!r} -> {sid!r}" for name, sid in renamed[:5])
        print(f"note: {len(renamed)} file name(s) cannot be stored as they are (characters a file name cannot "
              f"safely hold, or longer than the id limit) and get a readable id with a short hash: {shown}"
              + (" ..." if len(renamed) > 5 else ""))
    from ..data.images import oversized_images

    for uri, pixels in oversized_images([st.uri for st in plan.styles[:1000]], cfg.max_image_pixels):
        print(f"note: style {uri} is {pixels / 1e6:.0f} megapixels, above max_image_pixels "
              f"({cfg.max_image_pixels / 1e6:.0f}); it will be refused (its pairs become error rows): downscale or "
              "remove it, or raise max_image_pixels")
    print(
        f"{args.config}: OK. run {plan.run_id} -> {cfg.run_uri}\n"
        f"  {len(plan.sources)} sources, {len(plan.styles)} styles, {plan.n_samples} outputs in {len(plan.shards)} shard(s) "
        f"of {cfg.shard_size}; models: {cfg.models.synth_checkpoint if not cfg.stylize_only else 'stylize-only'}, "
        f"{cfg.models.stylizer}, smoothing {cfg.models.smoothing}; runner {cfg.runner.kind} x{cfg.runner.max_concurrency}"
    )
    return 0


def _cmd_run(args) -> int:
    _quiet_prefect_defaults()
    from ..pipeline.preflight import check_config

    cfg = _load(args)
    _prepare_inputs(cfg)
    check_config(cfg)  # every problem, before Prefect even starts (the flow does not check it again)
    from ..flows.augment import augment

    result = augment(config=cfg)
    print(f"\nrun {result['run_id']}: index {result['index_uri']}")
    sheet = _write_sheet(result["run_uri"], None, max_rows=RUN_SHEET_ROWS)
    if sheet:
        print(f"contact sheet: {sheet}")
    print(f"inspect: spadepis summary {result['run_uri']}")
    return 0


RUN_SHEET_ROWS = 32  # `spadepis run` shows the first sources; `spadepis sheet RUN --max-rows N` shows more


def _write_sheet(run_uri: str, out: str | None, *, max_rows: int | None) -> str | None:
    """Write ``<run>/contact_sheet.png`` (or ``out``); a failure is reported, never fatal for a finished run."""
    from ..pipeline.sheet import contact_sheet

    out = out or f"{str(run_uri).rstrip('/')}/contact_sheet.png"
    try:
        contact_sheet(run_uri, out, max_rows=max_rows)
    except Exception as exc:  # noqa: BLE001 - the run's data is committed; the picture is a convenience
        print(f"could not write the contact sheet {out}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None
    return out


def _cmd_sheet(args) -> int:
    from ..pipeline.storage import RunStorage

    try:
        RunStorage(args.run_uri).read_manifest()
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None
    out = _write_sheet(args.run_uri, args.out, max_rows=args.max_rows or None)
    if out is None:
        return 1
    print(out)
    return 0


def _cmd_summary(args) -> int:
    from ..pipeline.manifest import format_summary, summary
    from ..pipeline.storage import RunStorage

    storage = RunStorage(args.run_uri)
    try:
        table = storage.read_manifest()
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None
    record = storage.read_run_record() or {}
    s = summary(table)
    if args.json:
        print(json.dumps(s, indent=1, default=str))
        return 0
    planned = (record.get("plan") or {}).get("shards")
    print(f"run {args.run_uri}")
    if planned is not None:
        print(f"shards committed {s['shards']} of {planned} planned" + ("" if s["shards"] == planned else "  (incomplete: run the same config again to resume)"))
    print(format_summary(s))
    return 0


def _cmd_demo(args) -> int:
    _quiet_prefect_defaults()
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


def _cmd_gc(args) -> int:
    from ..pipeline.gc import collect_garbage

    print(collect_garbage(args.run_uri, dry_run=args.dry_run).describe())
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run", help="run the augmentation flow on a YAML config (resumes a run with the same run id)",
        description="Run the spadepis-augment Prefect flow on a YAML run config: plan shards, synthesize, stylize, "
        "write images and the manifest, then <output>/<run_id>/contact_sheet.png. Running the same config again "
        "resumes it (committed shards are skipped).",
    )
    p.add_argument("config", help="YAML run config, e.g. configs/coco.yaml")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field, e.g. --set models.smoothing=fast (repeatable)")
    p.add_argument("--wait-lease", type=float, metavar="SECONDS",
                   help="when another run holds the run folder, wait up to SECONDS for it (default: refuse at once; "
                   "config lease.wait_s)")
    p.set_defaults(func=_cmd_run)

    p = subparsers.add_parser(
        "check", help="validate a config (inputs, weights, output) without running",
        description="Check a run config without running it: every field, the inputs (label maps, instance maps, "
        "photos, styles), the weights (files exist and fit the preset), the device, the runner and that the output "
        "is writable. Prints the plan (sources, styles, shards) when all is well; exit status 1 with every problem "
        "otherwise.",
    )
    p.add_argument("config", help="YAML run config, e.g. configs/coco.yaml")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field, e.g. --set dataset.limit=10 (repeatable)")
    p.set_defaults(func=_cmd_check)

    p = subparsers.add_parser(
        "summary", help="counts, stage timings and failures of a run",
        description="Summarise a run from its manifest: ok/error counts, shards committed of planned, p50/p95/mean "
        "of each stage (ms), outputs/s, models and device, and the first error rows. Works on finished, failed and "
        "interrupted runs (only committed shards are read).",
    )
    p.add_argument("run_uri", help="<output>/<run_id> of a run (local path or fsspec URI)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    p.set_defaults(func=_cmd_summary)

    p = subparsers.add_parser(
        "gc", help="delete what crashed attempts left in a run folder (orphan parts, *.tmp-* files, unnamed outputs)",
        description="Delete orphan manifest parts, *.tmp-* leftovers, check probes and outputs of committed shards "
        "that their committed part does not name. Refused while a run holds the folder's lease.",
    )
    p.add_argument("run_uri", help="<output>/<run_id> of a run (local path or fsspec URI)")
    p.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    p.set_defaults(func=_cmd_gc)

    p = subparsers.add_parser(
        "sheet", help="draw a run's contact sheet (style photos, then per source: label map | synthesized | outputs)",
        description="Draw the contact sheet of a run: a header row with the style photos, then one row per source "
        "with its id, label map (coloured), synthesized image and one output per style; when sources got their own "
        "styles (styles.select random/semantic), each output sits beside its style photo, in rank order, with its scores.",
    )
    p.add_argument("run_uri", help="<output>/<run_id> of a run (local path or fsspec URI)")
    p.add_argument("--out", help="where to write the PNG (path or URI; default <run>/contact_sheet.png)")
    p.add_argument("--max-rows", type=int, default=64, help="sources to show (default 64; 0 = all)")
    p.set_defaults(func=_cmd_sheet)

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
