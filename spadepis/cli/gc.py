"""``spadepis gc``: delete what crashed attempts left in a run folder."""

from __future__ import annotations


def _cmd_gc(args) -> int:
    from ..pipeline.gc import collect_garbage
    from ._pipeline_args import use_run_storage_options

    use_run_storage_options(args)
    print(collect_garbage(args.run_uri, dry_run=args.dry_run).describe())
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "gc", help="delete what crashed attempts left in a run folder (orphan parts, *.tmp-* files, unnamed outputs)",
        description="Delete orphan manifest parts, *.tmp-* leftovers, check probes and outputs of committed shards "
        "that their committed part does not name. Refused while a run holds the folder's lease.",
    )
    p.add_argument("run_uri", help="<output>/<run_id> of a run (local path or fsspec URI)")
    p.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    from ._pipeline_args import add_storage_options_arg

    add_storage_options_arg(p)
    p.set_defaults(func=_cmd_gc)
