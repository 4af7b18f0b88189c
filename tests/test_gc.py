"""Leftovers of crashed attempts: cleaned when a shard commits and by ``spadepis gc RUN``; checkpoint refusals
name the offending pickle global."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest
import torch

from pipeline_helpers import make_inputs, small_config
from spadepis.models.checkpoints import read_checkpoint
from spadepis.errors import CheckpointError
from spadepis.pipeline.plan import make_plan
from spadepis.pipeline.worker import process_shard


def test_shard_commit_and_gc_clean_what_crashed_attempts_left(tmp_path, capsys):
    from spadepis.cli import main
    from spadepis.pipeline.lease import RunLease
    from spadepis.pipeline.storage import RunStorage

    cfg = small_config(make_inputs(tmp_path, n_maps=4), models={"smoothing": "none"})
    plan = make_plan(cfg)
    run = Path(cfg.run_uri)
    # a crashed attempt of shard 0 left an orphan part, a torn temporary marker and an image
    (run / "manifest" / "shard=00000").mkdir(parents=True)
    (run / "manifest" / "shard=00000" / "part-20250101T000000Z-dead0000.parquet").write_bytes(b"half")
    (run / "manifest" / "shard=00000" / "_SUCCESS.json.tmp-deadbeef").write_bytes(b"{")
    process_shard(cfg, plan.shards[0])
    # the commit removes the crashed attempt's part; a temporary file may be a racing write in flight: gc's
    assert sorted(p.name for p in (run / "manifest" / "shard=00000").iterdir()) == [
        "_SUCCESS.json", "_SUCCESS.json.tmp-deadbeef", f"part-{RunStorage(cfg.run_uri).marker(0)['attempt_id']}.parquet"]
    process_shard(cfg, plan.shards[1])
    # leftovers the commit does not see: an image the committed part does not name, root temp files, a probe,
    # an orphan part of a shard that is not committed
    stray = run / "images" / "shard=00001" / "m999__style0.png"
    stray.write_bytes(b"png")
    (run / "index.parquet.tmp-0a0b0c0d").write_bytes(b"x")
    (run / ".write-check-123456789abc").write_bytes(b"ok")
    (run / "manifest" / "shard=00002").mkdir()
    (run / "manifest" / "shard=00002" / "part-x.parquet").write_bytes(b"x")
    before = {p for p in run.rglob("*") if p.is_file()}

    lease = RunLease(RunStorage(cfg.run_uri), ttl_s=60)
    lease.acquire()
    assert main(["gc", str(run)]) == 1 and "in use by" in capsys.readouterr().err  # refused while a run writes
    lease.release()
    assert main(["gc", str(run), "--dry-run"]) == 0
    assert "would remove 5 file(s)" in capsys.readouterr().out
    assert {p for p in run.rglob("*") if p.is_file()} == before
    assert main(["gc", str(run)]) == 0
    out = capsys.readouterr().out
    assert "removed 5 file(s)" in out and "shard=00002" in out
    after = {p for p in run.rglob("*") if p.is_file()}
    assert before - after == {stray, run / "index.parquet.tmp-0a0b0c0d", run / "manifest" / "shard=00000" / "_SUCCESS.json.tmp-deadbeef", run / ".write-check-123456789abc",
                              run / "manifest" / "shard=00002" / "part-x.parquet"}
    df = RunStorage(cfg.run_uri).merge_committed().to_pandas()
    assert len(df) == 8 and all(Path(u).exists() for u in df.image_uri)


def test_checkpoint_refusal_names_the_pickle_global(tmp_path):
    path = tmp_path / "latest_net_G.pth"
    buf = io.BytesIO()
    torch.save({"conv.weight": torch.zeros(2, 2), "opt": argparse.Namespace(lr=0.1)}, buf)
    path.write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    msg = str(err.value)
    assert "argparse.Namespace" in msg and "never runs pickled code" in msg and "state_dict()" in msg
    assert "will likely succeed" not in msg and "weights_only=False" not in msg
