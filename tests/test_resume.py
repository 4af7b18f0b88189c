"""Kill a real run with SIGKILL in the middle of a shard, resume it, and check nothing was lost or redone."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from pipeline_helpers import make_inputs, small_config
from spadepis.data.images import read_rgb
from spadepis.pipeline.manifest import read_index
from spadepis.pipeline.storage import RunStorage

ROOT = Path(__file__).resolve().parents[1]


def _snapshot(run: Path, shards: set[str]) -> dict[str, tuple[int, str]]:
    out = {}
    for sub in ("synth", "images", "manifest"):
        for shard in shards:
            for f in sorted(f for f in (run / sub / shard).rglob("*") if f.is_file()):  # attempt folders inside
                out[str(f)] = (f.stat().st_mtime_ns, hashlib.sha256(f.read_bytes()).hexdigest())
    return out


def _in_flight(run: Path, storage: RunStorage) -> tuple[set[str], str | None]:
    committed = set(storage.committed_shards())
    started = {p.name for p in (run / "synth").glob("shard=*") if any(p.iterdir())} if (run / "synth").exists() else set()
    mid = sorted(started - committed)
    return committed, (mid[0] if mid else None)


def test_sigkill_mid_shard_then_resume(tmp_path, prefect_harness):
    from prefect.settings import PREFECT_API_URL

    from spadepis.flows.augment import augment

    root = make_inputs(tmp_path, n_maps=12, n_styles=2)
    cfg = small_config(root, shard_size=3, runner={"kind": "thread", "max_concurrency": 1})
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    run = Path(cfg.run_uri)
    storage = RunStorage(cfg.run_uri)

    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "spadepis", "run", str(cfg_path)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    killed_in = None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            committed, mid = _in_flight(run, storage)
            if committed and mid:
                os.killpg(proc.pid, signal.SIGKILL)
                killed_in = mid
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None and killed_in is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert killed_in, f"the run ended (rc={proc.returncode}) before a shard was caught mid-way: {proc.stderr.read()[-2000:]!r}"
    assert proc.returncode == -signal.SIGKILL
    committed_before = storage.committed_shards()
    assert killed_in not in committed_before and len(committed_before) < 4
    before = _snapshot(run, set(committed_before))
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterName

    with get_client(sync_client=True) as client:
        named = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_="augment-t-")))
        killed_runs = [r.id for r in named if r.state is not None and r.state.is_running()]
    assert killed_runs, "the killed run's flow run is not Running"

    result = augment(config=cfg)  # resume: same config, same run id; takes over the dead run's lease

    # what the killed run left Running is marked Crashed, its task runs included
    with get_client(sync_client=True) as client:
        dead = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=killed_runs)))
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=killed_runs)))
    assert [r.state.type.value for r in dead] == ["CRASHED"] * len(killed_runs)
    assert tasks and all(t.state.is_final() for t in tasks), [(t.name, t.state.type) for t in tasks]

    assert result["failed"] == [] and result["processed"] == 4 - len(committed_before)
    df = read_index(cfg.run_uri)
    assert len(df) == 24 and df.sample_id.is_unique and (df.status == "ok").all()
    assert sorted(df.groupby("shard_id").size().tolist()) == [6, 6, 6, 6]
    for uri in list(df.image_uri) + list(df.synth_uri.unique()):
        assert read_rgb(uri).shape == (64, 64, 3)
    after = _snapshot(run, set(committed_before))
    assert after == before, "files of shards committed before the kill were rewritten"
    assert {s: m["attempt_id"] for s, m in storage.committed_shards().items() if s in committed_before} == {
        s: m["attempt_id"] for s, m in committed_before.items()
    }


def test_damaged_committed_part_of_the_right_size_is_redone(tmp_path):
    from spadepis.pipeline.plan import make_plan
    from spadepis.pipeline.worker import process_shard

    cfg = small_config(make_inputs(tmp_path, n_maps=2), models={"smoothing": "none"})
    shard = make_plan(cfg).shards[0]
    first = process_shard(cfg, shard)
    storage = RunStorage(cfg.run_uri)
    part = Path(cfg.run_uri) / first.part
    data = bytearray(part.read_bytes())
    data[len(data) // 3] ^= 0x55  # bit rot: same size, other bytes
    part.write_bytes(bytes(data))
    assert storage.marker(shard.name) is None  # no longer a commit: sha256 checked, not only the size
    again = process_shard(cfg, shard)
    assert not again.skipped and again.attempt_id != first.attempt_id and again.ok == 4
    df = storage.merge_committed().to_pandas()
    assert len(df) == 4 and set(df.attempt_id) == {again.attempt_id}
    assert not part.exists(), "the damaged part of the replaced attempt was left behind"
