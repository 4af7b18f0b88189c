"""``spadepis verify``: check every committed row's files of a run (exists, size, sha256); exit 1 on any problem."""

from __future__ import annotations

from ..errors import ConfigError


def _storage_options(sets: list[str] | None) -> dict[str, dict]:
    """``--set storage_options.<protocol>.<option>=<value>`` (repeatable; values as YAML, so credentials go by
    reference: ``{env: NAME}``, ``{secret: BLOCK}``) as ``{protocol: {option: value}}``."""
    import yaml

    out: dict[str, dict] = {}
    for item in sets or []:
        key, sep, value = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) < 3 or parts[0] != "storage_options":
            raise ConfigError(f"--set {item!r}: verify takes storage_options.<protocol>.<option>=<value> "
                              "(e.g. --set storage_options.s3.endpoint_url=http://127.0.0.1:9000)")
        node = out.setdefault(parts[1], {})
        for p in parts[2:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(value)
    return out


def _cmd_verify(args) -> int:
    from ..pipeline.verify import verify_run

    options = _storage_options(args.set)
    if options:
        import fsspec.config

        from ..pipeline.secrets import resolve_references

        for protocol, opts in options.items():
            fsspec.config.conf.setdefault(protocol, {}).update(resolve_references(opts, f"storage_options.{protocol}"))
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
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="storage option, e.g. --set storage_options.s3.endpoint_url=http://127.0.0.1:9000 (repeatable)")
    p.add_argument("--limit", type=int, default=50, help="list at most this many problems (default 50)")
    p.set_defaults(func=_cmd_verify)
