"""The run folder's lease: a second run is refused (or waits), a stale lease is taken over, committed
shards' files are never rewritten."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline_helpers import make_inputs, small_config
from spadepis.pipeline.lease import LEASE, LeaseHeldError, LeaseInfo, RunLease
from spadepis.pipeline.plan import make_plan
from spadepis.pipeline.worker import process_shard
from spadepis.pipeline.storage import RunStorage, new_attempt_id


@pytest.fixture(params=["local", "memory"])
def storage(request, tmp_path):
    if request.param == "local":
        return RunStorage(str(tmp_path / "runs" / "r"))
    return RunStorage(f"memory://lease-test-{new_attempt_id()}/r")


def _write_lease(storage, **kw):
    now = time.time()
    info = dict(lease_id="old", owner="flow run old-run", host="gpu-box-7", pid=4242, acquired_at=now - 3600,
                heartbeat_at=now - 10, expires_at=now + 600, flow_run_id=None)
    info.update(kw)
    storage.write_bytes(LEASE, LeaseInfo(**info).to_json())


def test_second_run_is_refused_naming_the_holder_and_since_when(storage):
    first = RunLease(storage, ttl_s=60, owner="flow run first-run")
    assert first.acquire() is None
    try:
        second = RunLease(storage, ttl_s=60, owner="flow run second-run")
        with pytest.raises(LeaseHeldError) as err:
            second.acquire()
        msg = str(err.value)
        assert "flow run first-run" in msg and socket.gethostname() in msg and " since " in msg
        assert "--wait-lease" in msg and "lease.wait_s" in msg
    finally:
        first.release()
    assert second.acquire() is None  # free again once released
    second.release()
    assert not storage.exists(LEASE)


def test_a_waiting_run_gets_the_lease_when_it_is_released(storage):
    first = RunLease(storage, ttl_s=60, owner="first")
    first.acquire()
    threading.Timer(1.0, first.release).start()
    second = RunLease(storage, ttl_s=60, owner="second")
    t0 = time.monotonic()
    assert second.acquire(wait_s=30, poll_s=0.1) is None
    assert 0.8 < time.monotonic() - t0 < 20
    assert json.loads(storage.read_bytes(LEASE))["owner"] == "second"
    second.release()


def test_expired_lease_is_taken_over_live_one_is_not(storage):
    _write_lease(storage, expires_at=time.time() + 600)  # live, another host
    with pytest.raises(LeaseHeldError, match="flow run old-run on host gpu-box-7"):
        RunLease(storage, ttl_s=60).acquire(wait_s=0.3, poll_s=0.1)
    _write_lease(storage, expires_at=time.time() - 1, flow_run_id="1c7e1d52-0000-4000-8000-000000000000")
    lease = RunLease(storage, ttl_s=60)
    stale = lease.acquire()
    assert stale is not None and stale.owner == "flow run old-run" and stale.flow_run_id.startswith("1c7e1d52")
    assert LeaseInfo.from_json(storage.read_bytes(LEASE)).lease_id == lease.info.lease_id
    lease.release()


def test_a_takeover_claim_whose_taker_died_does_not_block_the_lease(storage):
    """A taker that claimed the takeover and died before writing the new lease: its claim goes stale after the
    ttl (at least 10 s), and the next taker wins through the next claim generation."""
    _write_lease(storage, expires_at=time.time() - 1)
    stale_raw = storage.read_bytes(LEASE)
    token = f"_LEASE.takeover-{hashlib.sha256(stale_raw).hexdigest()[:32]}"
    storage.write_bytes(token, json.dumps({"by": "dead taker", "at_s": time.time() - 3}).encode())
    with pytest.raises(LeaseHeldError, match="being taken over"):  # a fresh claim: its taker may be writing
        RunLease(storage, ttl_s=1).acquire(poll_s=0.05)
    storage.write_bytes(token, json.dumps({"by": "dead taker", "at_s": time.time() - 60}).encode())
    lease = RunLease(storage, ttl_s=1)
    assert lease.acquire().lease_id == "old"
    assert storage.exists(f"{token}.1")  # the second claim generation
    assert LeaseInfo.from_json(storage.read_bytes(LEASE)).lease_id == lease.info.lease_id
    lease.release()


def test_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path):
    storage = RunStorage(str(tmp_path / "run"))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _write_lease(storage, host=socket.gethostname(), pid=int(dead.stdout), expires_at=time.time() + 600)
    lease = RunLease(storage, ttl_s=60)
    assert lease.acquire().pid == int(dead.stdout)
    lease.release()


def test_heartbeat_renews_and_notices_a_takeover(tmp_path):
    storage = RunStorage(str(tmp_path / "run"))
    lease = RunLease(storage, ttl_s=0.4)
    lease.acquire()
    first_expiry = lease.info.expires_at
    time.sleep(0.35)
    assert LeaseInfo.from_json(storage.read_bytes(LEASE)).expires_at > first_expiry  # renewed by the thread
    _write_lease(storage, lease_id="thief")
    assert lease.lost.wait(2.0)
    lease.release()
    assert LeaseInfo.from_json(storage.read_bytes(LEASE)).lease_id == "thief"  # not ours: left alone


def _snapshot(run: Path) -> dict[str, tuple[int, str]]:
    return {str(f): (f.stat().st_mtime_ns, hashlib.sha256(f.read_bytes()).hexdigest())
            for f in sorted(run.rglob("*")) if f.is_file() and "shard=" in str(f)}


def test_committed_shard_files_are_never_rewritten(tmp_path):
    cfg = small_config(make_inputs(tmp_path, n_maps=2), models={"smoothing": "none"})
    shard = make_plan(cfg).shards[0]
    first = process_shard(cfg, shard)
    before = _snapshot(Path(cfg.run_uri))
    other = cfg.model_copy(update={"batch_size": 1})  # changes pixels, not the config hash
    assert other.config_hash == cfg.config_hash
    again = process_shard(other, shard)
    assert again.skipped and again.attempt_id == first.attempt_id
    # even an attempt that got past the resume check (a duplicate) cannot replace the commit
    storage = RunStorage(cfg.run_uri)
    from spadepis.pipeline.manifest import rows_to_table

    table = storage.read_part(storage.marker(shard.name))
    late = storage.commit_shard(shard.name, "late-attempt", rows_to_table(table.to_pylist()))
    assert late["attempt_id"] == first.attempt_id
    assert _snapshot(Path(cfg.run_uri)) == before


def test_flow_refuses_a_folder_held_by_another_run(tmp_path, prefect_harness):
    from spadepis.flows.augment import augment

    cfg = small_config(make_inputs(tmp_path, n_maps=2), models={"smoothing": "none"})
    _write_lease(RunStorage(cfg.run_uri), owner="flow run busy-run", host="gpu-box-7")
    state = augment(config=cfg, return_state=True)
    assert state.is_failed()
    assert "in use by flow run busy-run on host gpu-box-7" in state.message and " since " in state.message
    assert not (Path(cfg.run_uri) / "synth").exists()  # nothing was written


def test_wait_lease_flag_sets_the_config_field(tmp_path):
    import yaml

    from spadepis.cli import build_parser
    from spadepis.cli._pipeline_args import load_config_args as _load

    cfg = small_config(make_inputs(tmp_path, n_maps=1))
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    args = build_parser().parse_args(["run", str(path), "--wait-lease", "90"])
    assert _load(args).lease.wait_s == 90
    assert _load(build_parser().parse_args(["run", str(path)])).lease.wait_s == 0
