"""Helpers shared by the pipeline commands (run, check, summary, sheet, gc, demo)."""

from __future__ import annotations

import os


def quiet_prefect_defaults() -> None:
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def load_config_args(args) -> "object":
    from ..pipeline.config import load_config
    from ..pipeline.secrets import has_secret_references

    overrides = list(args.set or [])
    if getattr(args, "wait_lease", None) is not None:
        overrides.append(f"lease.wait_s={args.wait_lease}")
    cfg = load_config(args.config, overrides=overrides)
    if any(has_secret_references(opts) for opts in cfg.storage_options.values()):
        import spadepis.tasks.shard  # noqa: F401 - the Prefect layer registers the Secret-block resolver
    return cfg


def prepare_inputs_for(cfg) -> None:
    from ..pipeline.demo import prepare_inputs

    for folder in prepare_inputs(cfg):
        print(f"generated the demo inputs in {folder} (dataset.demo_inputs)")


def add_storage_options_arg(p) -> None:
    """``--set storage_options.PROTOCOL.OPTION=VALUE`` for the commands that read a run folder (summary, gc,
    sheet, verify): the run's own storage options (from its run.json) are used, these override or add to them."""
    p.add_argument(
        "--set", action="append", metavar="storage_options.PROTOCOL.OPTION=VALUE",
        help="a storage option for reading the run folder, e.g. --set storage_options.s3.endpoint_url=http://minio:9000 "
        "or --set 'storage_options.s3.key={env: MY_KEY}' (repeatable; credentials only by reference). The run's "
        "storage options from its run.json apply too; these override them.",
    )


def use_run_storage_options(args, run_uri: str | None = None) -> dict:
    """Make the storage options of the run at ``run_uri`` (default ``args.run_uri``) current for this command:
    the ``storage_options`` recorded in its ``run.json`` (references, resolved here from the environment or
    Prefect Secret blocks) with the ``--set storage_options...`` ones of ``args`` over them. Returns them unresolved.

    Refuses (``ConfigError``) a ``--set`` of anything but ``storage_options.*`` and literal credentials.
    """
    import json

    from ..data.fs import use_storage_options
    from ..errors import ConfigError
    from ..pipeline.config import apply_overrides
    from ..pipeline.secrets import has_secret_references, literal_secrets, resolve_references

    run_uri = str(run_uri or args.run_uri)
    given: dict = {}
    for item in getattr(args, "set", None) or []:
        if not item.strip().startswith("storage_options."):
            raise ConfigError(f"--set {item!r}: only storage options can be set here "
                              "(--set storage_options.PROTOCOL.OPTION=VALUE, e.g. storage_options.s3.endpoint_url=...)")
        apply_overrides(given, [item])
    given = given.get("storage_options") or {}
    if not isinstance(given, dict) or not all(isinstance(v, dict) for v in given.values()):
        raise ConfigError("--set storage_options...: give options per protocol, e.g. --set storage_options.s3.region_name=x")
    found = [f for proto, opts in given.items() for f in literal_secrets(opts, f"storage_options.{proto}")]
    if found:
        raise ConfigError(f"--set: literal credentials in {', '.join(found)}; write a reference instead, e.g. "
                          "--set 'storage_options.s3.secret={env: AWS_SECRET_ACCESS_KEY}' or {secret: my-block}")

    def resolve(options: dict) -> dict:
        if has_secret_references(options):
            import spadepis.tasks.shard  # noqa: F401 - the Prefect layer registers the Secret-block resolver
        return {p: resolve_references(o, f"storage_options.{p}") for p, o in options.items()}

    use_storage_options(resolve(given))  # enough to read run.json
    recorded: dict = {}
    try:
        from ..pipeline.storage import RunStorage

        record = json.loads(RunStorage(run_uri).read_bytes("run.json"))
        recorded = ((record.get("config") or {}).get("storage_options") or {}) if isinstance(record, dict) else {}
    except Exception:  # noqa: BLE001 - no run.json (or unreadable): the given options alone; the command reports the rest
        recorded = {}
    merged = {p: dict(o) for p, o in recorded.items() if isinstance(o, dict) and not literal_secrets(o)}
    for proto, opts in given.items():
        merged.setdefault(proto, {}).update(opts)
    use_storage_options(resolve(merged))
    return merged
