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
