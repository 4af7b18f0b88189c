"""Reading a real run's manifest: pandas, pyarrow.dataset (hive partitions), DuckDB, the torch Dataset."""

from __future__ import annotations

import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from pipeline_helpers import make_inputs, small_config
from spadepis.pipeline.manifest import SCHEMA, SCHEMA_VERSION, AugmentedDataset, format_summary, read_index, summary
from spadepis.pipeline.plan import make_plan
from spadepis.pipeline.worker import process_shard
from spadepis.pipeline.storage import RunStorage


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = make_inputs(tmp_path_factory.mktemp("manifest"), n_maps=4, bad=(3,))
    cfg = small_config(root, models={"smoothing": "fast"})
    plan = make_plan(cfg)
    storage = RunStorage(cfg.run_uri)
    storage.write_run_record({"config_hash": plan.config_hash, "plan": {"shards": len(plan.shards)}})
    for shard in plan.shards:
        process_shard(cfg, shard)
    storage.write_index()
    return cfg


def test_every_design_column_and_schema_version(run):
    index = f"{run.run_uri}/index.parquet"
    schema = pq.read_schema(index)
    design = ("sample_id run_id shard_id attempt_id dataset source_id label_uri instance_uri label_nc style_id style_uri "
              "synth_uri image_uri width height sha256 synth_model synth_weights_sha256 stylizer stylizer_weights_sha256 "
              "smoothing t_load_ms t_synth_ms t_stylize_ms t_smooth_ms t_write_ms t_total_ms status error created_at device "
              "spadepis_version schema_version").split()
    assert set(design) <= set(schema.names)
    assert schema.metadata[b"spadepis.schema_version"] == str(SCHEMA_VERSION).encode()
    assert schema.remove_metadata() == SCHEMA.remove_metadata()


def test_pandas(run):
    import pandas as pd

    df = pd.read_parquet(f"{run.run_uri}/index.parquet")
    assert len(df) == 8 and (df.status == "ok").sum() == 6
    assert df.equals(read_index(run.run_uri))
    assert (df.synth_model == "spade-custom random-init").all() and df.synth_weights_sha256.str.len().eq(64).all()


def test_pyarrow_dataset_hive_partitions(run):
    ds = pads.dataset(f"{run.run_uri}/manifest", format="parquet", partitioning="hive",
                      exclude_invalid_files=True)
    # the hive reader sees every part file; trainers use index.parquet, which holds committed parts only
    table = ds.to_table(filter=pads.field("status") == "ok")
    assert table.num_rows == 6
    assert sorted(set(table.column("shard").to_pylist())) == [0, 1]


def test_duckdb(run):
    duckdb = pytest.importorskip("duckdb", reason="duckdb is in the test extra: pip install -e '.[test]'")
    con = duckdb.connect()
    n_ok, p50 = con.execute(
        f"select count(*), median(t_total_ms) from read_parquet('{run.run_uri}/index.parquet') where status = 'ok'"
    ).fetchone()
    assert n_ok == 6 and p50 > 0
    shards = con.execute(
        f"select distinct shard from read_parquet('{run.run_uri}/manifest/*/*.parquet', hive_partitioning = true) order by 1"
    ).fetchall()
    assert [int(s[0]) for s in shards] == [0, 1]  # duckdb keeps the zero-padded text


def test_torch_dataset_pairs_are_aligned(run):
    import torch

    ds = AugmentedDataset(run.run_uri)
    assert len(ds) == 6
    image, label, meta = ds[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    assert label.shape == (64, 64) and label.dtype == torch.int64 and int(label.max()) < 8
    assert meta["status"] == "ok" and meta["image_uri"].endswith(".png")
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=lambda b: b)
    assert sum(len(b) for b in loader) == 6


def test_summary(run):
    s = summary(run.run_uri)
    assert (s["ok"], s["error"], s["shards"], s["sources"], s["styles"]) == (6, 2, 2, 4, 2)
    assert s["stages"]["t_total_ms"]["p95"] >= s["stages"]["t_total_ms"]["p50"] > 0
    assert "label id 200" in s["errors"][0]["error"]
    text = format_summary(s)
    assert "t_smooth_ms" in text and "errors: 2 row(s) from 1 source(s)" in text


def test_summary_cli(run, capsys):
    from spadepis.cli import main

    assert main(["summary", run.run_uri]) == 0
    out = capsys.readouterr().out
    assert "shards committed 2 of 2 planned" in out and "ok 6" in out
    assert main(["summary", str(run.run_uri) + "-missing"]) == 1
