"""Per-item failures stay per item: a symlink loop, a FIFO, a dangling link, a folder named like an image and
an unreadable file among the label maps each become that source's error rows; the shard commits the rest."""

from __future__ import annotations

import os

import pytest

from pipeline_helpers import make_inputs, small_config


def test_unreadable_local_inputs_become_error_rows(tmp_path):
    from spadepis.pipeline.plan import make_plan
    from spadepis.pipeline.storage import RunStorage
    from spadepis.pipeline.worker import process_shard

    root = make_inputs(tmp_path, n_maps=2)
    labels = root / "labels"
    os.symlink("loop.png", labels / "loop.png")  # points at itself
    os.mkfifo(labels / "fifo.png")  # opening it would block forever
    os.symlink("nowhere.png", labels / "dangling.png")
    (labels / "folder.png").mkdir()
    (labels / "folder.png" / "x.txt").write_text("not an image")
    locked = labels / "locked.png"
    locked.write_bytes((labels / "m000.png").read_bytes())
    locked.chmod(0)
    cfg = small_config(root, shard_size=16, models={"smoothing": "none"})
    plan = make_plan(cfg)
    assert len(plan.shards) == 1
    ids = {s.source_id for s in plan.sources}
    res = process_shard(cfg, plan.shards[0])  # no exception: the shard commits
    df = RunStorage(cfg.run_uri).merge_committed().to_pandas()
    assert set(df.source_id) == ids
    by_source = df.groupby("source_id")
    assert (by_source.size() == 2).all()  # every source x 2 styles, error or not
    err = {sid: rows.error.iloc[0] for sid, rows in by_source if (rows.status == "error").all()}
    assert "symbolic link loop" in err["loop"]
    assert "FIFO" in err["fifo"]
    assert "dangling symbolic link" in err["dangling"]
    if "folder" in ids:
        assert "is a folder" in err["folder"]
    if os.geteuid() != 0:  # root reads any file
        assert "no permission to read it" in err["locked"]
    assert (df[df.source_id.isin(["m000", "m001"])].status == "ok").all()
    assert res.ok == len(df[df.status == "ok"])


def test_unreadable_inputs_do_not_fail_the_run(tmp_path, prefect_harness):
    """Through the flow: no retry, no failed shard, one error row per bad source and style."""
    from spadepis.flows.augment import augment
    from spadepis.pipeline.manifest import read_index

    root = make_inputs(tmp_path, n_maps=2)
    os.symlink("loop.png", root / "labels" / "loop.png")
    os.mkfifo(root / "labels" / "fifo.png")
    cfg = small_config(root, run_id="bad-items", shard_size=2, models={"smoothing": "none"})
    state = augment(config=cfg, return_state=True)
    assert state.is_completed(), state.message
    df = read_index(cfg.run_uri)
    assert sorted(df[df.status == "error"].source_id.unique()) == ["fifo", "loop"]
    assert (df[df.status == "ok"].source_id.isin(["m000", "m001"])).all()
    pytest.importorskip("prefect")


def test_demo_inputs_never_touch_a_users_folder(tmp_path):
    """dataset.demo_inputs writes into a missing or empty folder only: a style folder holding JPEGs is the user's."""
    from PIL import Image

    from spadepis.pipeline.demo import ensure_demo_inputs

    root = make_inputs(tmp_path, n_maps=1)
    styles = tmp_path / "my_styles"
    styles.mkdir()
    Image.new("RGB", (32, 24), (10, 200, 30)).save(styles / "mine.jpg")
    empty = tmp_path / "empty_labels"
    empty.mkdir()
    cfg = small_config(root, dataset={"labels": str(empty), "demo_inputs": True}, styles={"source": str(styles)})
    made = ensure_demo_inputs(cfg)
    assert made == [str(empty)] and any(empty.glob("*.png"))
    assert sorted(p.name for p in styles.iterdir()) == ["mine.jpg"]
    from spadepis.pipeline.plan import make_plan

    assert [s.style_id for s in make_plan(cfg).styles] == ["mine"]
