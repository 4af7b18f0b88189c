"""Failures explain themselves: failed shards named first with what happened and whether a retry helps;
artifact publishing never holds the work up."""

from __future__ import annotations

import time

from pipeline_helpers import make_inputs, small_config
from spadepis.pipeline.failures import classify, describe


def test_index_failure_does_not_hide_failed_shards(tmp_path, prefect_harness):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from spadepis.flows.augment import augment

    cfg = small_config(make_inputs(tmp_path, n_maps=6), models={"smoothing": "none"}, retries={"count": 2, "delay": 0})
    run = tmp_path / "runs" / "t"
    (run / "images").mkdir(parents=True)
    (run / "images" / "shard=00002").write_text("in the way")  # shard 2 cannot write its images
    (run / "index.parquet" / "x").mkdir(parents=True)  # and the index cannot be written either
    state = augment(config=cfg, return_state=True)
    assert state.is_failed()
    msg = state.message
    assert msg.index("shard=00002") < msg.index("index"), msg  # the failed shard comes first
    assert "1 of 3 shard(s) failed" in msg and "a file stands where a folder must go" in msg
    assert "retrying will not help" in msg and "writing the index failed too" in msg
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    assert max(t.run_count for t in tasks) == 1, "a failure a retry cannot fix was retried"


def test_prefect_api_failures_are_named():
    import httpx
    from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError

    slot = ConcurrencySlotAcquisitionError("Unable to acquire concurrency slots on ['tag:gpu']")
    assert classify(slot).kind == "prefect-api-unreachable" and classify(slot).transient
    assert describe(slot).startswith("the Prefect API is unreachable")
    wrapped = RuntimeError("task orchestration failed")
    wrapped.__cause__ = httpx.ConnectError("All connection attempts failed")
    assert classify(wrapped).kind == "prefect-api-unreachable"


def test_artifact_publishing_times_out_and_the_work_goes_on(prefect_harness, monkeypatch):
    import threading

    from prefect import flow

    import spadepis.flows.augment as augment_module

    monkeypatch.setattr(augment_module, "ARTIFACT_TIMEOUT_S", 0.5)
    hung = threading.Event()
    calls = []

    def publish_that_hangs(**kwargs):  # an API that accepts the connection and never answers
        calls.append(kwargs)
        hung.wait(30)

    @flow
    def work() -> tuple[float, float, object]:
        t0 = time.monotonic()
        first = augment_module._safe_artifact(publish_that_hangs, key="a")
        t1 = time.monotonic()
        augment_module._safe_artifact(publish_that_hangs, key="b")  # skipped: artifacts are off for this run
        return t1 - t0, time.monotonic() - t1, first

    try:
        waited, second, first = work()
    finally:
        hung.set()
    assert first is None and waited < 5 and second < 0.2
    assert [c["key"] for c in calls] == ["a"]
