"""The ``spadepis-augment`` flow: plan, fan out one task per shard, finalize the index, publish artifacts.

Its only parameter is a :class:`spadepis.pipeline.config.RunConfig`, so the Prefect UI renders a form and
deployments pass ``{"config": {...}}``. A run:

1. validates the config (every problem reported before any work starts);
2. lists the sources and, under the run folder's lease, plans the ones no committed shard holds
   (``Plan.remaining``: a nightly rerun over a grown or shrunk dataset does exactly the new work, never a
   source twice) and writes ``plan.json``; writes ``run.json`` once (a damaged ``run.json`` or another
   config's run in the folder is refused);
3. submits every shard that is not committed yet to the runner of ``config.runner`` (a bounded thread
   pool, or Dask), with retries for transient failures only; a progress artifact moves per shard;
4. merges the committed parts into ``index.parquet`` and publishes (``spadepis.pipeline.ui``) a summary
   table (one row per stage, numeric ms columns; caption: models, device, sources x styles, wall time),
   a timing chart image and a samples markdown with inline thumbnails laid out like the contact sheet;
   the flow run is tagged ``preset:``/``stylizer:``/``run:``, and a run that completed with error rows
   says so in its state message;
5. ends Failed, naming the shards, when some shard still failed after its retries (the others are
   committed; running the same config again resumes).
"""

from __future__ import annotations

import re
import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_image_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import as_completed
from prefect.states import Completed

from spadepis.pipeline.config import RunConfig, apply_storage_options
from spadepis.errors import SpadepisError
from spadepis.pipeline import ui
from spadepis.pipeline.demo import prepare_inputs
from spadepis.pipeline.failures import describe
from spadepis.pipeline.lease import RunLease
from spadepis.pipeline.manifest import format_summary, summary
from spadepis.pipeline.plan import committed_sources, make_plan, write_plan_record
from spadepis.pipeline.preflight import check_config, read_run_contract
from spadepis.pipeline.report import run_record
from spadepis.pipeline.storage import RunStorage
from spadepis.tasks.shard import gpu_tag_limited, shard_task_for

__all__ = ["augment", "ShardsFailedError"]

class ShardsFailedError(SpadepisError):
    """Some shards still failed after their retries; the rest of the run is committed."""


def _flow_run_name() -> str:
    from prefect.runtime import flow_run

    cfg = flow_run.parameters.get("config")
    try:
        if isinstance(cfg, dict):
            cfg = RunConfig.model_validate(cfg)
        # distinct per flow run (several runs of one run_id: first run, resumes, re-runs), the run id first
        return f"augment-{cfg.resolved_run_id}-{str(flow_run.id or '')[:8] or 'local'}"
    except Exception:  # noqa: BLE001 - the name must never break the run
        return "augment"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:60] or "run"


ARTIFACT_TIMEOUT_S = 10.0
"""Longest wait for one artifact publish; after a timeout or an unreachable API, this run publishes no more."""
_ARTIFACTS_DOWN: set[str] = set()


def _safe_artifact(fn, *args, **kwargs):
    """Publish an artifact without ever stopping or slowing the work: a call runs in a helper thread for at
    most ``ARTIFACT_TIMEOUT_S``; a timeout or an unreachable API turns artifacts off for the rest of the run."""
    import contextvars
    import threading

    from prefect.runtime import flow_run

    from spadepis.pipeline.failures import classify

    run = str(flow_run.id)
    if run in _ARTIFACTS_DOWN:
        return None
    ctx, box = contextvars.copy_context(), {}

    def call() -> None:
        try:
            box["value"] = ctx.run(fn, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - artifacts must not fail a run that produced its data
            box["error"] = exc

    thread = threading.Thread(target=call, name="spadepis-artifact", daemon=True)
    thread.start()
    thread.join(ARTIFACT_TIMEOUT_S)
    if thread.is_alive():
        _ARTIFACTS_DOWN.add(run)
        get_run_logger().warning("publishing an artifact took more than %.0f s (Prefect API slow or unreachable); no "
                                 "more artifacts for this run, the work goes on", ARTIFACT_TIMEOUT_S)
        return None
    if "error" in box:
        failure = classify(box["error"])
        if failure.kind == "prefect-api-unreachable":
            _ARTIFACTS_DOWN.add(run)
        get_run_logger().warning("could not publish artifact (%s): %s", failure.what, box["error"])
        return None
    return box.get("value")


_LEASES: dict[str, RunLease] = {}


def _take_lease(storage: RunStorage, cfg: RunConfig, log) -> RunLease:
    """Hold the run folder's lease for this flow run (released by the state hooks); a stale lease's flow run
    and its unfinished task runs are marked Crashed."""
    from prefect.runtime import flow_run

    run_id = str(flow_run.id) if flow_run.id else None
    lease = RunLease(storage, ttl_s=cfg.lease.ttl_s, owner=f"flow run {flow_run.name or '?'}", flow_run_id=run_id,
                     log=log.warning)
    stale = lease.acquire(wait_s=cfg.lease.wait_s)
    _LEASES[str(run_id)] = lease
    if stale is not None and stale.flow_run_id and stale.flow_run_id != run_id:
        _mark_crashed(stale.flow_run_id, f"its process is gone or stopped renewing its lease; flow run {flow_run.name} "
                      "took over the run folder and resumes the run", log)
    return lease


def _mark_crashed(flow_run_id: str, message: str, log) -> None:
    """Mark a dead run's flow run and its unfinished task runs Crashed (what a killed process cannot do)."""
    import uuid as _uuid

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.states import Crashed

    try:
        with get_client(sync_client=True) as client:
            dead = client.read_flow_run(_uuid.UUID(flow_run_id))
            marked = 0
            for tr in client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[dead.id]))):
                if tr.state is not None and not tr.state.is_final():
                    client.set_task_run_state(tr.id, Crashed(message=f"flow run {dead.name}: {message}"), force=True)
                    marked += 1
            if dead.state is not None and not dead.state.is_final():
                client.set_flow_run_state(dead.id, Crashed(message=message), force=True)
                log.warning("marked flow run %s (%s) and %d task run(s) it left running as Crashed", dead.name, dead.id, marked)
    except Exception as exc:  # noqa: BLE001 - bookkeeping of a dead run must not stop this one
        log.warning("could not mark the dead flow run %s as Crashed: %s", flow_run_id, exc)


def _still_held(lease: RunLease) -> bool:
    """Whether this run still holds its lease (renewing it); a storage hiccup here counts as held."""
    try:
        return lease.renew()
    except Exception:  # noqa: BLE001 - the shard results already tell whether commits were fenced off
        return True


def _release_lease(flow, flow_run, state) -> None:  # noqa: ARG001 - Prefect state hook signature
    lease = _LEASES.pop(str(flow_run.id), None)
    if lease is not None:
        lease.release()


@flow(name="spadepis-augment", flow_run_name=_flow_run_name, validate_parameters=True, log_prints=True,
      on_completion=[_release_lease], on_failure=[_release_lease], on_cancellation=[_release_lease],
      on_crashed=[_release_lease])
def augment(config: RunConfig, verify: bool = False) -> dict[str, Any]:
    """Augment a dataset of label maps: SPADE synthesis, then stylization with each style; resumable.
    ``verify``: first check every committed row's files (``spadepis verify``) and redo the shards with damaged ones."""
    from tqdm.auto import tqdm

    log = get_run_logger()
    cfg = config.resolved()
    prepare_inputs(cfg)  # the demo config makes its inputs on a fresh checkout / deployment
    check_config(cfg)
    apply_storage_options(cfg)
    full_plan = make_plan(cfg)
    storage = RunStorage(cfg.run_uri)
    read_run_contract(storage, cfg)  # refuses a damaged run.json or another config's run, before taking the lease
    lease = _take_lease(storage, cfg, log)  # one run at a time in this folder; released by the state hooks
    if read_run_contract(storage, cfg) is None:  # a resume keeps run.json (no re-hashing of the weights)
        storage.write_run_record(run_record(cfg, full_plan))
    if verify:
        from spadepis.pipeline.verify import verify_run

        report = verify_run(storage, markers=storage.committed_shards())
        for name in sorted(report.damaged_shards()):
            why = "; ".join(report.problems_of(name)[:3])
            log.warning("%s: committed outputs damaged (%s); the shard is redone (--verify)", name, why)
            storage.retire_marker(name, why)
        log.info("verify: %s", report.headline())
    plan = full_plan.remaining(committed_sources(storage))  # exactly the sources no committed shard holds
    for name, why in sorted(storage.invalid_markers.items()):
        log.warning("%s: its commit marker does not hold (%s); the shard is redone", name, why)
    write_plan_record(storage, plan)
    pending = list(plan.shards)
    total = len(plan.change.committed_shards) + len(pending)
    planned = ui.plan_text(len(full_plan.sources), [len(ids) for sh in full_plan.shards for ids in sh.style_ids],
                           len(full_plan.styles))
    log.info("run %s: %s in %d shard(s); %s; %d shard(s) to do (%d outputs), %d committed; output %s",
             plan.run_id, planned, total, plan.change.describe(), len(pending), plan.n_samples,
             len(plan.change.committed_shards), cfg.run_uri)
    key = _slug(plan.run_id)
    _safe_artifact(_tag_flow_run, ui.run_tags(cfg, plan.run_id))
    done = total - len(pending)
    n_ok, n_failed = done, 0  # shards committed / failed so far
    progress_id = _safe_artifact(
        create_progress_artifact, progress=100.0 * done / max(total, 1), key=f"spadepis-progress-{key}",
        description=f"run {plan.run_id}: {ui.progress_text(n_ok, n_failed, total)}",
    )
    limited = gpu_tag_limited()  # no limit on the gpu tag: untagged shard tasks (2 s less each, see tasks.shard)
    task = shard_task_for(cfg, gpu_tag=limited)
    results: list[Any] = []
    failures: dict[str, str] = {}
    t0 = time.perf_counter()
    bar = tqdm(total=plan.n_samples, initial=0, unit="img",
               desc=f"spadepis {plan.run_id}", disable=None)
    if pending:
        from spadepis.flows.runners import open_shard_runner

        with open_shard_runner(cfg) as runner:
            log.info("shards run on: %s; shard tasks %s", runner.describe(),
                     "tagged gpu (a concurrency limit on the tag bounds them)" if limited
                     else "untagged (no concurrency limit on the tag gpu)")
            fence = lease.info.lease_id if lease.info is not None else None  # checked by each shard before it writes
            futures = {runner.submit(task, {"config": cfg, "shard": s, "fence": fence}): s for s in pending}
            for fut in as_completed(list(futures)):
                shard = futures[fut]
                try:
                    res = fut.result()
                    results.append(res)
                    if res.error:
                        log.warning("%s: %d error row(s), e.g. %s", shard.name, res.error,
                                    res.errors[0] if res.errors else "?")
                except Exception as exc:  # noqa: BLE001 - a failed shard is reported, the others go on
                    failures[shard.name] = describe(exc)
                    log.error("%s failed after its retries: %s", shard.name, failures[shard.name])
                n_failed, n_ok = len(failures), total - len(pending) + len(results)
                bar.update(shard.n_samples)
                if progress_id is not None:  # progress = committed shards; failed ones are named, not counted
                    _safe_artifact(update_progress_artifact, progress_id, 100.0 * n_ok / max(total, 1),
                                   description=f"run {plan.run_id}: {ui.progress_text(n_ok, n_failed, total)}")
    bar.close()
    wall = time.perf_counter() - t0
    if lease.lost.is_set() or not _still_held(lease):  # also a takeover the heartbeat has not seen yet
        from spadepis.pipeline.lease import LeaseHeldError

        current = lease.read()
        raise LeaseHeldError(
            f"this run lost the lease of {cfg.run_uri} while it ran (now held by "
            f"{current.describe() if current else 'nobody'}); its committed shards stand, the index was not written. "
            "Run the same config again when the other run is done."
        )
    try:
        index = storage.write_index()
    except Exception as exc:
        if not failures:
            raise
        # the shard failures come first: the index failure must not hide them
        raise ShardsFailedError(
            f"{len(failures)} of {total} shard(s) failed after their retries: {', '.join(sorted(failures))} "
            f"(first: {failures[sorted(failures)[0]]}); then writing the index failed too: {describe(exc)}"
        ) from exc
    new_ok = sum(r.ok for r in results if not r.skipped)
    s = summary(index, wall_s=wall)
    plan_sizes = {"sources": len(plan.sources), "styles": len(plan.styles), "shards": total, "text": planned,
                  "samples": len(index) + sum(sh.n_samples for sh in pending if sh.name in failures)}
    _safe_artifact(create_table_artifact, table=ui.summary_table(s), key=f"spadepis-summary-{key}",
                   description=ui.summary_description(s, run_id=plan.run_id, plan=plan_sizes, new_ok=new_ok,
                                                      failed=len(failures)))
    _safe_artifact(create_image_artifact, image_url=ui.timing_chart_data_uri(s, title=f"run {plan.run_id}"),
                   key=f"spadepis-timings-{key}", description=f"run {plan.run_id}: stage time per output (ms, p50 / p95)")
    try:  # built here, not inside the publish timeout: it reads a few images (thumbnails)
        samples_md = ui.samples_report(storage.run_uri, index.to_pandas(), failures, s)
    except Exception as exc:  # noqa: BLE001 - a report must not fail a run that produced its data
        log.warning("could not build the samples report: %s", describe(exc))
        samples_md = None
    if samples_md is not None:
        _safe_artifact(create_markdown_artifact, markdown=samples_md, key=f"spadepis-samples-{key}",
                       description=f"run {plan.run_id}: samples like the contact sheet, failures, errors")
    print(format_summary(s))
    print(f"this invocation: {new_ok} new output(s) in {wall:.1f} s wall time")
    out = {
        "run_id": plan.run_id,
        "run_uri": cfg.run_uri,
        "index_uri": storage.uri("index.parquet"),
        "shards": total,
        "processed": len(results),
        "failed": sorted(failures),
        "summary": s,
    }
    if failures:
        # every shard that did not fail is committed (now or by an earlier run)
        raise ShardsFailedError(ui.failure_message(failures, total, total - len(failures), cfg.run_uri))
    if not pending:  # every shard was committed by an earlier run: a green run that did nothing says so
        message = ui.nothing_to_do_message(total, storage.run_uri)  # absolute: the UI has no working folder
        log.info(message)
        return Completed(message=message, data=out)
    message = ui.completion_message(s)
    if message:  # completed, but not everything is ok: say so on the run's state
        log.warning(message)
        return Completed(message=message, data=out)
    return out


def _tag_flow_run(tags: list[str]) -> None:
    """Add ``preset:…``, ``stylizer:…``, ``run:…`` to this flow run's tags (kept: the deployment's own tags)."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    if not flow_run.id:
        return
    with get_client(sync_client=True) as client:
        current = client.read_flow_run(flow_run.id).tags or []
        client.update_flow_run(flow_run.id, tags=sorted(set(current) | set(tags)))
