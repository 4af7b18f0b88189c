"""``spadepis verify``: check every committed row's files of a run (exists, size, sha256); exit 1 on any problem."""

from __future__ import annotations

from ..errors import ConfigError
from ._pipeline_args import add_storage_options_arg


def _cmd_verify(args) -> int:
    from ..pipeline.verify import verify_run
    from ._pipeline_args import use_run_storage_options

    use_run_storage_options(args)  # the run's own storage options (run.json), --set ones over them
    from ..pipeline.storage import RunStorage

    storage = RunStorage(args.run_uri)
    if storage.read_run_record() is None and not storage.shard_names():
        raise ConfigError(f"{storage.run_uri}: no run here (no run.json, no shard); pass <output>/<run_id> of a run")
    report = verify_run(storage)
    print(report.describe(limit=args.limit))
    return 0 if report.ok else 1


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "verify", help="check every committed file of a run against its manifest (exit 1 when any is missing/damaged)",
        description="Check each committed shard's files (images, SPADE outputs, resized label maps): each must exist "
        "with the size and sha256 its commit recorded. Lists what is missing or damaged, invalid commit markers and a "
        "damaged index.parquet, and exits 1 when there is any. Redo the damaged shards with "
        "`spadepis run CONFIG --verify`.",
    )
    p.add_argument("run_uri", help="<output>/<run_id> of a run (local path or fsspec URI)")
    add_storage_options_arg(p)
    p.add_argument("--limit", type=int, default=50, help="list at most this many problems (default 50)")
    p.set_defaults(func=_cmd_verify)
