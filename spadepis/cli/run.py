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


def _cmd_check(args) -> int:
    from ..pipeline.config import validate_config
    from ..pipeline.plan import make_plan

    cfg = _load(args)
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
    from ..pipeline.config import check_config

    cfg = _load(args)
    check_config(cfg)  # every problem, before Prefect even starts
    from ..flows.augment import augment

    result = augment(config=cfg)
    print(f"\nrun {result['run_id']}: index {result['index_uri']}")
    print(f"inspect: spadepis summary {result['run_uri']}")
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
    from ..flows.augment import augment

    result = augment(config=cfg)
    sheet = demo.contact_sheet(result["run_uri"], out / "contact_sheet.png")
    print(demo.closing_note(result, sheet))
    return 0


def _cmd_gc(args) -> int:
    from ..pipeline.gc import collect_garbage

    print(collect_garbage(args.run_uri, dry_run=args.dry_run).describe())
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("run", help="run the augmentation flow on a YAML config (resumes a run with the same run id)")
    p.add_argument("config", help="YAML run config, e.g. configs/coco.yaml")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field, e.g. --set models.smoothing=fast (repeatable)")
    p.add_argument("--wait-lease", type=float, metavar="SECONDS",
                   help="when another run holds the run folder, wait up to SECONDS for it (default: refuse at once; "
                   "config lease.wait_s)")
    p.set_defaults(func=_cmd_run)

    p = subparsers.add_parser("check", help="validate a config (inputs, weights, output) without running")
    p.add_argument("config")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.set_defaults(func=_cmd_check)

    p = subparsers.add_parser("summary", help="counts, stage timings and failures of a run")
    p.add_argument("run_uri", help="<output>/<run_id> of a run (local path or fsspec URI)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_summary)

    p = subparsers.add_parser(
        "gc", help="delete what crashed attempts left in a run folder (orphan parts, *.tmp-* files, unnamed outputs)",
        description="Delete orphan manifest parts, *.tmp-* leftovers, check probes and outputs of committed shards "
        "that their committed part does not name. Refused while a run holds the folder's lease.",
    )
    p.add_argument("run_uri", help="<output>/<run_id> of a run (local path or fsspec URI)")
    p.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    p.set_defaults(func=_cmd_gc)

    p = subparsers.add_parser("demo", help="run the whole pipeline on generated label maps and bundled photos (no weights needed)")
    p.add_argument("--out", default="out/demo", help="folder for the demo's inputs and outputs (default out/demo)")
    p.add_argument("--n-maps", type=int, default=12, help="number of generated label maps (default 12)")
    p.set_defaults(func=_cmd_demo)
