"""``spadepis summary``: counts, stage timings and failures of a run."""

from __future__ import annotations

import json

from ..errors import ConfigError


def _cmd_summary(args) -> int:
    from ..pipeline.manifest import format_summary, summary
    from ..pipeline.plan import read_plan_record
    from ..pipeline.storage import RunStorage
    from ._pipeline_args import use_run_storage_options

    use_run_storage_options(args)
    storage = RunStorage(args.run_uri)
    try:
        table = storage.read_manifest()
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None
    record = storage.read_run_record() or {}
    latest = read_plan_record(storage) or {}  # what the latest run found (runs made before plan.json: run.json)
    s = summary(table)
    in_index = set(table.column("source_id").to_pylist()) if table.num_rows else set()
    gone = sorted(set(latest.get("sources_gone") or ()) & in_index)
    s["sources_gone"] = gone
    if args.json:
        print(json.dumps(s, indent=1, default=str))
        return 0
    planned = latest.get("shards_planned", (record.get("plan") or {}).get("shards"))
    print(f"run {args.run_uri}")
    if planned is not None:
        print(f"shards committed {s['shards']} of {planned} planned" + ("" if s["shards"] >= planned else "  (incomplete: run the same config again to resume)"))
    if gone:
        shown = ", ".join(gone[:10]) + (" ..." if len(gone) > 10 else "")
        print(f"{len(gone)} source(s) gone from the dataset when the latest run listed it ({latest.get('planned_at', '?')}); "
              f"their rows stay in the index (filter them out by source_id if you need to): {shown}")
    print(format_summary(s))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "summary", help="counts, stage timings and failures of a run",
        description="Summarise a run from its manifest: ok/error counts, shards committed of planned, p50/p95/mean "
        "of each stage (ms), outputs/s, models and device, the first error rows, and the sources that are gone from "
        "the dataset since they were processed (their rows stay in the index). Works on finished, failed and "
        "interrupted runs (only committed shards are read).",
    )
    p.add_argument("run_uri", help="<output>/<run_id> of a run (local path or fsspec URI)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    from ._pipeline_args import add_storage_options_arg

    add_storage_options_arg(p)
    p.set_defaults(func=_cmd_summary)
