"""spadepis.pipeline.schema: the row builder fills every column from the schema."""

from __future__ import annotations

import pytest

from spadepis import __version__
from spadepis.pipeline.schema import SCHEMA, SCHEMA_VERSION, STAGES, RowBuilder, rows_to_table


def test_row_builder_fills_every_column_and_sums_the_stages():
    rows = RowBuilder(run_id="r", shard_id="shard=00000", attempt_id="a", dataset="d", preset="coco", label_nc=182,
                      synth_model="m", stylizer="color", smoothing="none", device="cpu")
    row = rows.row(sample_id="s", source_id="x", label_uri="l.png", style_id="y", style_uri="y.png",
                   t_load_ms=1.0, t_smooth_ms=2.5)
    assert set(row) == set(SCHEMA.names)
    assert row["t_total_ms"] == 3.5 and row["t_synth_ms"] == 0.0
    assert (row["status"], row["error"], row["image_uri"]) == ("ok", None, None)
    assert (row["spadepis_version"], row["schema_version"]) == (__version__, SCHEMA_VERSION)
    assert set(STAGES) <= set(row)
    table = rows_to_table([row, rows.row(sample_id="t", source_id="x", label_uri="l.png", style_id="z",
                                         style_uri="z.png", status="error", error="bad")])
    assert table.num_rows == 2 and table.column("status").to_pylist() == ["ok", "error"]
    with pytest.raises(ValueError, match="not manifest columns: colour"):
        rows.row(colour="red")
    with pytest.raises(ValueError, match="not manifest columns: shard"):
        RowBuilder(shard="x")
