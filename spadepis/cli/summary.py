"""``spadepis summary``: counts, stage timings and failures of a run."""

from __future__ import annotations

import json

from ..errors import ConfigError


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


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "summary", help="counts, stage timings and failures of a run",
        description="Summarise a run from its manifest: ok/error counts, shards committed of planned, p50/p95/mean "
        "of each stage (ms), outputs/s, models and device, and the first error rows. Works on finished, failed and "
        "interrupted runs (only committed shards are read).",
    )
    p.add_argument("run_uri", help="<output>/<run_id> of a run (local path or fsspec URI)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    p.set_defaults(func=_cmd_summary)
