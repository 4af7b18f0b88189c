"""Manifest URIs: absolute and normalised (no ``..``), so readers work from any working directory,
for local and s3:// runs; older runs with cwd-relative URIs, and run folders moved elsewhere, still read."""

from __future__ import annotations

import os
import shutil

import pyarrow.parquet as pq
import pytest

from pipeline_helpers import make_inputs, run_all_shards, small_config


_run_all = run_all_shards


def test_normalize_uri():
    from spadepis.pipeline.storage import normalize_uri

    assert normalize_uri("s3://b/runs/../x/./y.png") == "s3://b/x/y.png"
    assert normalize_uri("/a/b/../c") == "/a/c"
    assert normalize_uri("rel/../x.png") == os.path.join(os.getcwd(), "x.png")
    assert normalize_uri("file:///a/./b") == "/a/b"
    assert normalize_uri(None) is None


@pytest.fixture
def relative_run(tmp_path, monkeypatch):
    """A run started from ``tmp/work`` with relative paths and ``..`` in them, as a user types them."""
    make_inputs(tmp_path / "data", n_maps=3, n_styles=2)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    cfg = small_config(tmp_path / "data", output="out/../runs", models={"smoothing": "none"},
                       dataset={"labels": "../data/labels"}, styles={"source": "../data/./styles"})
    return _run_all(cfg), work


def test_manifest_uris_are_absolute_and_readers_work_from_anywhere(relative_run, tmp_path, monkeypatch):
    import pandas as pd

    from spadepis.pipeline.manifest import AugmentedDataset, read_index

    cfg, work = relative_run
    raw = pd.read_parquet(work / "runs" / "t" / "index.parquet")  # what a trainer reads with plain pandas
    for col in ("label_uri", "style_uri", "synth_uri", "image_uri"):
        for uri in raw[col]:
            assert os.path.isabs(uri) and ".." not in uri.split("/") and "/./" not in uri, (col, uri)
            assert os.path.isfile(uri), (col, uri)
    assert raw.label_uri.iloc[0] == str(tmp_path / "data" / "labels" / "m000.png")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    ds = AugmentedDataset(str(work / "runs" / "t"))
    image, label, meta = ds[len(ds) - 1]
    assert image.shape == (3, 64, 64) and label.shape == (64, 64)
    assert len(read_index(str(work / "runs" / "t"))) == 6


def test_older_runs_with_cwd_relative_uris_and_moved_runs_still_read(relative_run, tmp_path, monkeypatch):
    """Rewrite the committed part and the index as releases before this one wrote them (URIs relative to the
    directory the run was started from), then read from another directory and from a copy of the run folder."""
    import io
    import json

    import pyarrow as pa

    from spadepis.pipeline.manifest import AugmentedDataset, read_index
    from spadepis.pipeline.storage import RunStorage

    cfg, work = relative_run
    run = work / "runs" / "t"
    storage = RunStorage(str(run))
    for shard, marker in storage.committed_shards().items():
        table = pq.read_table(run / marker["part"])
        for col in ("synth_uri", "image_uri"):
            old = [None if u is None else os.path.relpath(u, work) for u in table.column(col).to_pylist()]
            table = table.set_column(table.schema.get_field_index(col), col, pa.array(old, pa.string()))
        assert table.column("image_uri")[0].as_py().startswith("runs/t/images/")  # as the old code wrote them
        buf = io.BytesIO()
        pq.write_table(table, buf)
        (run / marker["part"]).write_bytes(buf.getvalue())
        marker["part_bytes"] = len(buf.getvalue())
        import hashlib

        marker["part_sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
        (run / "manifest" / shard / "_SUCCESS.json").write_text(json.dumps(marker))
    storage.write_index()
    elsewhere = tmp_path / "elsewhere2"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    df = read_index(str(run))
    assert df.image_uri.map(os.path.isfile).all(), df.image_uri.tolist()
    assert AugmentedDataset(str(run))[0][0].shape == (3, 64, 64)
    moved = tmp_path / "moved" / "t"
    shutil.copytree(run, moved)
    shutil.rmtree(run)
    from spadepis.pipeline.gc import collect_garbage

    assert collect_garbage(str(moved), dry_run=True).removed == []  # gc does not take them for unnamed outputs
    df = read_index(str(moved))
    assert df.image_uri.str.startswith(str(moved) + "/images/").all()
    assert AugmentedDataset(str(moved))[1][0].shape == (3, 64, 64)
