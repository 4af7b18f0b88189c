"""Issue 18's cases 4-8, each reproduced as a user would meet it: colliding output names, a run folder whose path
holds glob characters, ``run_id: images`` in a moved folder, markers naming what is not theirs, and damaged
committed files (``spadepis verify``, ``AugmentedDataset(verify=True)``, a damaged index, ``run --verify``)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from pipeline_helpers import make_inputs, run_all_shards, small_config
from spadepis.pipeline.storage import RunStorage


_run_all = run_all_shards


def _files(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest() for p in run.rglob("*") if p.is_file()}


def test_case4_ids_that_used_to_collide_get_their_own_outputs(tmp_path):
    """Sources ``a``, ``a__b`` x styles ``b__c``, ``c`` wrote one ``a__b__c.png`` for two pairs; now every pair has
    its own file, and each row's image is the one made from its own label map."""
    from spadepis.pipeline.manifest import read_index
    from spadepis.pipeline.verify import verify_run

    src = make_inputs(tmp_path / "src", n_maps=2, n_styles=2)
    root = tmp_path / "in"
    (root / "labels").mkdir(parents=True)
    (root / "styles").mkdir()
    shutil.copy(src / "labels" / "m000.png", root / "labels" / "a.png")
    shutil.copy(src / "labels" / "m001.png", root / "labels" / "a__b.png")
    shutil.copy(src / "styles" / "style0.png", root / "styles" / "b__c.png")
    shutil.copy(src / "styles" / "style1.png", root / "styles" / "c.png")
    cfg = _run_all(small_config(root, models={"smoothing": "none"}))
    df = read_index(cfg.run_uri)
    assert len(df) == 4 and df.image_uri.is_unique and (df.status == "ok").all()
    for row in df.itertuples():
        assert Path(row.image_uri).exists()
        assert Path(row.image_uri).parent.name == row.source_id and Path(row.image_uri).stem == row.style_id
        assert Path(row.synth_uri).stem == row.source_id
    assert verify_run(cfg.run_uri).ok


def test_case5_run_folder_with_glob_characters(tmp_path, capsys):
    """A run under ``out[1]`` from inputs under ``in[1]``: inputs are read as the folders they are, shards are found
    (listed, not globbed), the index is complete, gc removes nothing."""
    from spadepis.cli import main
    from spadepis.pipeline.manifest import read_index

    root = make_inputs(tmp_path / "in[1]", n_maps=4, n_styles=2)
    cfg = _run_all(small_config(root, output=str(tmp_path / "out[1]"), models={"smoothing": "none"}))
    run = Path(cfg.run_uri)
    assert "[1]" in str(run) and len(RunStorage(cfg.run_uri).committed_shards()) == 2
    assert len(read_index(cfg.run_uri)) == 8
    before = _files(run)
    assert main(["gc", str(run)]) == 0
    assert "removed 0 file(s)" in capsys.readouterr().out
    assert _files(run) == before
    assert main(["verify", str(run)]) == 0


def test_case6_run_id_images_in_a_moved_folder(tmp_path, capsys):
    """``run_id: images``, folder moved: URIs resolve inside the new folder (by the layout, not by searching for
    the run id), gc --dry-run would remove nothing, verify passes."""
    from spadepis.cli import main
    from spadepis.pipeline.manifest import read_index

    root = make_inputs(tmp_path / "in", n_maps=4, n_styles=2)
    cfg = _run_all(small_config(root, output=str(tmp_path / "images"), run_id="images", models={"smoothing": "none"}))
    moved = tmp_path / "elsewhere" / "images"
    moved.parent.mkdir()
    shutil.move(cfg.run_uri, moved)
    df = read_index(str(moved))
    assert len(df) == 8
    for col in ("image_uri", "synth_uri"):
        assert all(u.startswith(str(moved) + "/") and Path(u).exists() for u in df[col]), df[col].tolist()
    assert main(["gc", str(moved), "--dry-run"]) == 0
    assert "would remove 0 file(s)" in capsys.readouterr().out
    assert main(["verify", str(moved)]) == 0


def test_case7_markers_naming_what_is_not_theirs_are_refused(tmp_path, capsys):
    """A marker naming another shard's part, or a path outside the run folder, commits nothing; readers see no
    duplicate rows, nothing outside is read, and gc removes no file of the shard whose part was named."""
    from spadepis.cli import main
    from spadepis.pipeline.manifest import read_index

    root = make_inputs(tmp_path / "in", n_maps=4, n_styles=2)
    cfg = _run_all(small_config(root, models={"smoothing": "none"}))
    run = Path(cfg.run_uri)
    storage = RunStorage(cfg.run_uri)
    m0 = storage.marker(0)
    (run / "manifest" / "shard=00001" / "_SUCCESS.json").write_text(json.dumps({**m0, "shard": "shard=00001"}))
    (tmp_path / "outside.txt").write_text("secret")
    (run / "manifest" / "shard=00002").mkdir()
    (run / "manifest" / "shard=00002" / "_SUCCESS.json").write_text(json.dumps(
        {"part": "../../../outside.txt", "attempt_id": "x", "part_bytes": 6,
         "part_sha256": hashlib.sha256(b"secret").hexdigest()}))
    storage = RunStorage(cfg.run_uri)
    assert list(storage.committed_shards()) == ["shard=00000"]
    assert "not a part of attempt" in storage.invalid_markers["shard=00001"]
    assert "not a part of attempt" in storage.invalid_markers["shard=00002"]
    df = read_index(cfg.run_uri)
    assert len(df) == 4 and df.sample_id.is_unique and set(df.shard_id) == {"shard=00000"}
    shard0 = {k: v for k, v in _files(run).items() if "shard=00000" in k}
    assert main(["gc", str(run)]) == 0
    capsys.readouterr()
    assert {k: v for k, v in _files(run).items() if "shard=00000" in k} == shard0
    assert main(["verify", str(run)]) == 1  # the two invalid markers are named
    out = capsys.readouterr().out
    assert "shard=00001" in out and "shard=00002" in out


def test_case8_damaged_committed_files_are_named_and_redone(tmp_path, capsys, prefect_harness):
    """A deleted, a truncated and a swapped committed image and a damaged index: verify names each (exit 1),
    AugmentedDataset(verify=True) refuses the swapped one, summary falls back to the parts and names the index,
    ``spadepis run --verify`` redoes the damaged shards, after which verify passes and nothing else changed."""
    import yaml

    from spadepis.cli import main
    from spadepis.pipeline.manifest import AugmentedDataset, read_index

    root = make_inputs(tmp_path / "in", n_maps=6, n_styles=2)
    cfg = small_config(root, models={"smoothing": "none"}, runner={"kind": "thread", "max_concurrency": 1}).resolved()
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    assert main(["run", str(cfg_path)]) == 0
    run = Path(cfg.run_uri)
    df = read_index(cfg.run_uri).sort_values("image_uri").reset_index(drop=True)
    assert len(df) == 12 and main(["verify", str(run)]) == 0
    by_shard = df.groupby("shard_id").image_uri.apply(list).to_dict()
    deleted, truncated = by_shard["shard=00000"][0], by_shard["shard=00001"][0]
    swap_a, swap_b = by_shard["shard=00001"][1], by_shard["shard=00001"][2]
    Path(deleted).unlink()
    Path(truncated).write_bytes(Path(truncated).read_bytes()[:50])
    a_bytes, b_bytes = Path(swap_a).read_bytes(), Path(swap_b).read_bytes()
    Path(swap_a).write_bytes(b_bytes)
    Path(swap_b).write_bytes(a_bytes)
    (run / "index.parquet").write_bytes(b"PAR1 not really")
    untouched = {k: v for k, v in _files(run).items() if "shard=00002" in k}
    capsys.readouterr()

    assert main(["verify", str(run)]) == 1
    out = capsys.readouterr().out
    for uri in (deleted, truncated, swap_a, swap_b):
        assert uri in out
    assert f"{deleted}: missing" in out and "index.parquet" in out and "size 50 bytes" in out

    with pytest.warns(UserWarning, match="index.parquet is damaged"):
        ds = AugmentedDataset(cfg.run_uri, verify=True)
    i = list(ds.frame.image_uri).index(swap_a)
    with pytest.raises(ValueError, match="do not match the row's sha256"):
        ds[i]
    with pytest.warns(UserWarning, match="index.parquet is damaged"):
        assert main(["summary", str(run)]) == 0
    assert "rows 12" in capsys.readouterr().out

    assert main(["run", str(cfg_path), "--verify"]) == 0
    capsys.readouterr()
    assert main(["verify", str(run)]) == 0
    assert {k: v for k, v in _files(run).items() if "shard=00002" in k} == untouched
    df2 = read_index(cfg.run_uri)
    assert len(df2) == 12 and (df2.status == "ok").all()
    assert all(Image.open(u).size == (64, 64) for u in df2.image_uri)
    retired = sorted(p.name for p in run.glob("manifest/*/_RETIRED-*.json"))
    assert len(retired) == 2


def test_a_run_that_lost_its_lease_stops_and_fails_naming_the_holder(tmp_path, prefect_harness):
    """Issue case 2 at the flow level: another run takes the lease over while this one works (its lease file
    replaced, as a takeover after a stall does); the shards not started yet write and commit nothing, and the
    run ends Failed naming the new holder."""
    import threading
    import time

    from spadepis.flows.augment import augment
    from spadepis.pipeline.lease import LEASE, LeaseHeldError, LeaseInfo

    root = make_inputs(tmp_path / "in", n_maps=8, n_styles=2)
    cfg = small_config(root, models={"smoothing": "none"}, runner={"kind": "thread", "max_concurrency": 1}).resolved()
    storage = RunStorage(cfg.run_uri)
    stop = threading.Event()

    def take_over_after_first_commit():
        while not stop.is_set():
            if storage.committed_shards():
                t = time.time()
                thief = LeaseInfo("thief-lease", "another run", "otherhost", 4242, t, t, t + 600)
                storage.write_bytes(LEASE, thief.to_json())
                return
            time.sleep(0.02)

    thief = threading.Thread(target=take_over_after_first_commit, daemon=True)
    thief.start()
    try:
        with pytest.raises(LeaseHeldError, match="another run on host otherhost"):
            augment(config=cfg)
    finally:
        stop.set()
        thief.join(timeout=10)
    committed = storage.committed_shards()
    assert 1 <= len(committed) < 4  # the shards after the takeover were not committed
    assert all(m["lease_id"] != "thief-lease" for m in committed.values())
    started = {p.name for p in Path(cfg.run_uri, "synth").iterdir()}
    assert started == set(committed) or len(started) <= len(committed) + 1  # at most the one in flight started
