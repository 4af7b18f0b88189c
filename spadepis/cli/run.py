"""``spadepis run``: the augmentation flow on a YAML config.

The Prefect flow is imported inside the command function only, so the library stays free of Prefect.
"""

from __future__ import annotations

from ._pipeline_args import load_config_args, prepare_inputs_for, quiet_prefect_defaults
from .sheet import RUN_SHEET_ROWS, write_sheet


def _cmd_run(args) -> int:
    quiet_prefect_defaults()
    from ..pipeline.preflight import check_config

    cfg = load_config_args(args)
    prepare_inputs_for(cfg)
    check_config(cfg)  # every problem, before Prefect even starts (the flow does not check it again)
    from ..errors import SpadepisError
    from ._reaper import Reaper, graceful_sigterm

    # SIGTERM / SIGINT end the run in order; the reaper ends what it started even on kill -9 of this process
    reaper = Reaper().start()
    with graceful_sigterm():
        try:
            result = _augment(cfg, verify=bool(args.verify))
        except SpadepisError:
            reaper.done()
            raise
    reaper.done()
    print(f"\nrun {result['run_id']}: index {result['index_uri']}")
    sheet = write_sheet(result["run_uri"], None, max_rows=RUN_SHEET_ROWS)
    if sheet:
        print(f"contact sheet: {sheet}")
    print(f"inspect: spadepis summary {result['run_uri']}")
    return 0


def _augment(cfg, *, verify: bool = False) -> dict:
    """The flow; a lease another live run holds is refused first, in one line (inside the flow, Prefect would
    print the refusal's traceback before the error)."""
    from ..flows.augment import augment

    if cfg.lease.wait_s == 0:
        from ..pipeline.config import apply_storage_options
        from ..pipeline.lease import LEASE, LeaseHeldError, RunLease
        from ..pipeline.storage import RunStorage

        apply_storage_options(cfg)
        storage = RunStorage(cfg.run_uri)
        held = RunLease(storage).read()
        if held is not None and not held.expired() and not held.holder_dead_here():
            raise LeaseHeldError(
                f"{storage.run_uri} is in use by {held.describe()}. Wait for it with --wait-lease SECONDS (config "
                "lease.wait_s), or choose another run_id / output. A lease of a killed run is taken over when it "
                f"expires (lease.ttl_s), at once when its process on this host is gone; delete {storage.uri(LEASE)} "
                "only if you are sure that run is dead."
            )
    return augment(config=cfg, verify=verify)


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
    p.add_argument("--verify", action="store_true",
                   help="first check every committed file (as `spadepis verify` does) and redo the shards with missing "
                   "or damaged ones")
    p.set_defaults(func=_cmd_run)
