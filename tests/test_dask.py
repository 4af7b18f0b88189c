"""The Dask runner with a real ``distributed.LocalCluster`` (worker processes on loopback).

* The same config run with the thread runner and with a 2-process local Dask cluster gives the same
  index: same sample ids, same image hashes.
* GPU placement: on a mixed cluster (one worker advertising ``GPU=1``, one not), model tasks of a
  CUDA run go to the GPU worker only; a CPU run's tasks go anywhere.
* Models are loaded once per worker process (the module-level cache in ``spadepis.pipeline.model_cache``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("prefect_dask", reason="the dask extra (prefect-dask) is not installed: pip install 'spadepis[dask]'")
distributed = pytest.importorskip("distributed")


def _inputs(root: Path, n: int = 4, size: int = 64) -> None:
    from PIL import Image
    from skimage import data as skdata

    (root / "labels").mkdir(parents=True)
    (root / "styles").mkdir(parents=True)
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        lab = np.full((size, size), 3, np.uint8)
        for cls in rng.choice([1, 2, 5, 7, 13], size=3, replace=False):
            cy, cx = rng.integers(0, size, 2)
            r = int(rng.integers(size // 8, size // 3))
            lab[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = cls
        Image.fromarray(lab, mode="L").save(root / "labels" / f"s{i}.png")
    for name, img in (("coffee", skdata.coffee()), ("rocket", skdata.rocket())):
        Image.fromarray(img).resize((size, size)).save(root / "styles" / f"{name}.png")


def _config(inputs: Path, out: Path, runner: dict):
    from spadepis.pipeline.config import parse_config

    return parse_config({
        "dataset": {"preset": "ade20k", "preset_overrides": {"crop_size": 64}, "labels": str(inputs / "labels")},
        "styles": {"source": str(inputs / "styles")},
        "models": {"synth_checkpoint": "random-init", "ngf": 8, "stylizer": "color", "smoothing": "fast"},
        "output": str(out),
        "run_id": "dask-equal",
        "shard_size": 1,
        "batch_size": 2,
        "device": "cpu",
        "runner": runner,
        "retries": {"count": 0, "delay": 0},
    })


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_dask_local_cluster_index_equals_thread_runner(tmp_path, prefect_harness):
    import pandas as pd

    from spadepis.flows.augment import augment

    _inputs(tmp_path / "in")
    thread_cfg = _config(tmp_path / "in", tmp_path / "thread", {"kind": "thread", "max_concurrency": 2})
    dask_cfg = _config(tmp_path / "in", tmp_path / "dask", {"kind": "dask", "n_workers": 2})
    assert thread_cfg.config_hash == dask_cfg.config_hash  # the runner is execution-only

    # CPU float reductions (convolutions, matmuls) depend on the intra-op thread count, and a
    # truncating float->uint8 conversion can turn that into a 1-level pixel difference. Dask's nanny
    # starts workers with OMP_NUM_THREADS=1, so the thread-runner run uses one torch thread too:
    # same config, same arithmetic, same bytes.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res_t = augment(thread_cfg)
    finally:
        torch.set_num_threads(threads)
    res_d = augment(dask_cfg)
    assert res_t["failed"] == [] and res_d["failed"] == []

    cols = ["sample_id", "source_id", "style_id", "shard_id", "sha256", "status", "width", "height"]
    it = pd.read_parquet(tmp_path / "thread" / "dask-equal" / "index.parquet")
    idx = pd.read_parquet(tmp_path / "dask" / "dask-equal" / "index.parquet")
    assert len(it) == 8 and set(it["status"]) == {"ok"}
    t = it[cols].sort_values("sample_id").reset_index(drop=True)
    d = idx[cols].sort_values("sample_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(t, d)
    # The Dask shards really ran in other processes (two of them, with shard_size 1 and 4 shards).
    assert idx["attempt_id"].nunique() == 4


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_gpu_tasks_go_to_gpu_workers_only(prefect_harness):
    """A mixed cluster: worker 'gpu' advertises GPU=1, worker 'cpu' nothing. CUDA-run model tasks land
    on 'gpu' only; CPU-run tasks may use both. (No CUDA needed: the annotation is what is checked.)"""
    from prefect import flow

    from spadepis.flows.runners import GPU_RESOURCE, ShardRunner, probe_worker

    node = {"host": "127.0.0.1", "nthreads": 1}
    cluster = distributed.SpecCluster(
        scheduler={"cls": distributed.Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": None}},
        workers={
            "gpu": {"cls": distributed.Nanny, "options": {**node, "resources": {GPU_RESOURCE: 1}}},
            "cpu": {"cls": distributed.Nanny, "options": dict(node)},
        },
    )
    try:
        with distributed.Client(cluster) as client:
            client.wait_for_workers(2, timeout=120)
            resources = {w["name"]: w.get("resources", {}) for w in client.scheduler_info()["workers"].values()}
        assert resources == {"gpu": {GPU_RESOURCE: 1}, "cpu": {}}, resources

        address = cluster.scheduler_address

        @flow(name="placement-check")
        def placement(device: str) -> tuple[list[str], bool]:
            # Closes over the address string only: the flow is serialized into the task context.
            with ShardRunner("dask", address=address, device=device) as runner:
                futs = [runner.submit(probe_worker, {}) for _ in range(8)]
                return [f.result()["worker"] for f in futs], runner.gpu_annotation

        names, annotated = placement("cuda")
        assert annotated and set(names) == {"gpu"}, names
        names, annotated = placement("cpu")
        assert not annotated and set(names) <= {"gpu", "cpu"}
        # "auto" against a cluster that offers GPUs: annotate (the flow host itself may have no GPU).
        names, annotated = placement("auto")
        assert annotated and set(names) == {"gpu"}, names
    finally:
        cluster.close()


def test_thread_runner_is_bounded_and_builds_without_dask_cluster():
    from spadepis.flows.runners import ShardRunner, build_task_runner

    runner = build_task_runner("thread", max_concurrency=3)
    assert runner._max_workers == 3
    sr = ShardRunner("thread", max_concurrency=2, device="cpu")
    assert sr.annotations == {} and "at most 2" in sr.describe()
    with pytest.raises(ValueError, match="runner.kind 'ray'"):
        build_task_runner("ray")
    dask_runner = build_task_runner("dask", n_workers=2)
    kw = dask_runner.cluster_kwargs
    assert kw["n_workers"] == 2 and kw["threads_per_worker"] == 1 and kw["processes"] is True
    assert kw["host"] == "127.0.0.1" and "resources" not in kw
    gpu_runner = build_task_runner("dask", n_workers=2, gpu_workers=True)
    assert gpu_runner.cluster_kwargs["resources"] == {"GPU": 1}
    assert build_task_runner("dask", address="tcp://127.0.0.1:8786").address == "tcp://127.0.0.1:8786"
