"""The spadepis-augment flow on real (tiny) inputs: error rows, a failing shard, resume, artifacts."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline_helpers import make_inputs, small_config
from spadepis.data.images import read_rgb
from spadepis.pipeline.manifest import read_index
from spadepis.pipeline.plan import make_plan
from spadepis.pipeline.model_cache import model_info
from spadepis.pipeline.storage import RunStorage


def test_shard_task_body_and_retry_condition(tmp_path):
    from prefect.states import Failed

    from spadepis.errors import InputError, StorageError
    from spadepis.tasks.shard import process_shard_task, retry_transient, shard_task_for

    cfg = small_config(make_inputs(tmp_path, n_maps=2))
    shard = make_plan(cfg).shards[0]
    res = process_shard_task.fn(cfg, shard)
    assert (res.shard, res.skipped, res.ok, res.error) == ("shard=00000", False, 4, 0)
    again = process_shard_task.fn(cfg, shard)
    assert again.skipped and again.attempt_id == res.attempt_id  # committed: not redone
    assert retry_transient(None, None, Failed(data=StorageError("s3 down")))
    assert not retry_transient(None, None, Failed(data=InputError("bad")))
    assert not retry_transient(None, None, Failed(data=ValueError("a bug")))
    assert "gpu" in process_shard_task.tags
    task = shard_task_for(small_config(tmp_path, retries={"count": 3, "delay": 1.5}))
    assert task.retries == 3 and task.retry_delay_seconds == [1.5, 3.0, 6.0]


def test_flow_bad_item_failing_shard_then_resume(tmp_path, prefect_harness):
    from prefect.client.orchestration import get_client

    from spadepis.flows.augment import augment

    root = make_inputs(tmp_path, n_maps=6, bad=(1,))
    cfg = small_config(root)
    storage = RunStorage(cfg.run_uri)
    # shard=00002 cannot write its images: a file stands where its folder must go (a real, persistent failure)
    (tmp_path / "runs" / "t" / "images").mkdir(parents=True)
    (tmp_path / "runs" / "t" / "images" / "shard=00002").write_text("in the way")

    state = augment(config=cfg, return_state=True)
    assert state.is_failed()
    assert "shard=00002" in state.message and "1 of 3 shard(s) failed" in state.message
    assert set(storage.committed_shards()) == {"shard=00000", "shard=00001"}
    df = read_index(cfg.run_uri)
    assert len(df) == 8 and sorted(df.shard_id.unique()) == ["shard=00000", "shard=00001"]
    bad = df[df.source_id == "m001"]
    assert list(bad.status) == ["error", "error"] and bad.error.str.contains("label id 200").all()
    assert bad.image_uri.isna().all()
    ok = df[df.status == "ok"]
    assert len(ok) == 6 and ok.t_total_ms.gt(0).all()
    for uri in ok.image_uri:
        assert read_rgb(uri).shape == (64, 64, 3)

    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_artifacts()}
    assert {"spadepis-summary-t", "spadepis-progress-t", "spadepis-samples-t"} <= keys

    # fix the cause and run again: only the failed shard is processed, the rest is not touched
    (tmp_path / "runs" / "t" / "images" / "shard=00002").unlink()
    committed = storage.committed_shards()
    loads = model_info()
    result = augment(config=cfg)
    assert result["processed"] == 1 and result["failed"] == []
    assert storage.committed_shards()["shard=00000"] == committed["shard=00000"]
    assert model_info()["synthesizer"] == loads["synthesizer"]  # models stay cached in this process
    df = read_index(cfg.run_uri)
    assert len(df) == 12 and df.sample_id.is_unique
    assert (df.status == "ok").sum() == 10


def test_flow_refuses_bad_config_before_work(tmp_path, prefect_harness):
    from spadepis.flows.augment import augment

    root = make_inputs(tmp_path, n_maps=2)
    cfg = small_config(root, styles={"source": str(tmp_path / "no-styles")})
    state = augment(config=cfg, return_state=True)
    assert state.is_failed() and "styles.source" in state.message
    assert not (tmp_path / "runs" / "t" / "run.json").exists()


def test_flow_accepts_a_dict_parameter(tmp_path, prefect_harness):
    from spadepis.flows.augment import augment

    cfg = small_config(make_inputs(tmp_path, n_maps=2, n_styles=1), models={"smoothing": "fast"})
    result = augment(config=cfg.model_dump(mode="json"))
    assert result["summary"]["ok"] == 2
    assert np.isfinite(result["summary"]["outputs_per_s"])


@pytest.mark.shared
def test_stylize_only_run_on_coco_photos(tmp_path, prefect_harness):
    from conftest import shared_path

    from spadepis.flows.augment import augment
    from spadepis.pipeline.config import parse_config

    data = shared_path("data", "coco_stuff")
    styles = tmp_path / "styles"
    make_inputs(tmp_path, n_maps=0, n_styles=2)
    cfg = parse_config({
        "dataset": {"preset": "coco", "labels": str(data / "val_label"), "photos": str(data / "val_img"), "limit": 2},
        "styles": {"source": str(styles)},
        "models": {"stylizer": "color", "smoothing": "fast"},
        "output": str(tmp_path / "runs"),
        "run_id": "stylize-only",
        "device": "cpu",
    })
    result = augment(config=cfg)
    df = read_index(result["run_uri"])
    assert len(df) == 4 and (df.status == "ok").all(), df.error.tolist()
    assert (df.synth_model == "none (stylize-only)").all() and df.synth_uri.str.contains("val_img").all()
    row = df.iloc[0]
    assert read_rgb(row.image_uri).shape == read_rgb(row.synth_uri).shape


def test_shard_tasks_carry_the_gpu_tag_only_when_a_limit_holds_it(tmp_path, prefect_harness):
    """Prefect 3.9 keeps a concurrency lease for every tagged task run and joins its renewal thread for about
    2 s at the end of each (limit or not), so shard tasks are tagged ``gpu`` only when a limit on that tag
    exists; with one (as ``spadepis deploy`` makes), every shard task is tagged and the limit holds."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.exceptions import ObjectNotFound

    from spadepis.flows.augment import augment
    from spadepis.tasks.shard import GPU_TAG, gpu_tag_limited

    def shard_tags(state):
        with get_client(sync_client=True) as client:
            flt = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
            return [set(r.tags) for r in client.read_task_runs(flow_run_filter=flt)]

    with get_client(sync_client=True) as client:
        try:
            client.delete_concurrency_limit_by_tag(GPU_TAG)
        except ObjectNotFound:
            pass
    assert not gpu_tag_limited()
    root = make_inputs(tmp_path, n_maps=4)
    state = augment(config=small_config(root, run_id="untagged"), return_state=True)
    assert state.is_completed()
    tags = shard_tags(state)
    assert len(tags) == 2 and all(GPU_TAG not in t for t in tags), tags

    with get_client(sync_client=True) as client:
        client.create_concurrency_limit(tag=GPU_TAG, concurrency_limit=1)
    try:
        assert gpu_tag_limited()
        state = augment(config=small_config(root, run_id="tagged"), return_state=True)
        assert state.is_completed()
        tags = shard_tags(state)
        assert len(tags) == 2 and all(GPU_TAG in t for t in tags), tags
    finally:
        with get_client(sync_client=True) as client:
            client.delete_concurrency_limit_by_tag(GPU_TAG)
