"""The Prefect UI tells the run's story: artifacts, state message, tags and logs, read back through the
client of the suite's Prefect server (``prefect_harness``)."""

from __future__ import annotations

import base64
import io
import json
import re

import pytest
from PIL import Image

from pipeline_helpers import make_inputs, small_config


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _artifacts(client, flow_run_id):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.type: a for a in arts}  # one of each kind per run


@pytest.fixture(scope="module")
def runs(tmp_path_factory, prefect_harness):
    """Run A: 4 label maps (one bad) x 2 styles -> completes with error rows. Run B: every shard unwritable.
    Run C: every label map bad -> one committed shard of error rows only, no ok output."""
    import logging

    from spadepis.flows.augment import augment

    loggers = [logging.getLogger(n) for n in ("prefect.task_runs", "prefect.flow_runs")]  # the suite logs WARNING+;
    saved_levels = [lg.level for lg in loggers]  # this test reads INFO lines
    for lg in loggers:
        lg.setLevel(logging.INFO)
    root = tmp_path_factory.mktemp("ui")
    make_inputs(root, n_maps=4, n_styles=2, bad=(1,))
    cfg = small_config(root, run_id="ui-a", models={"smoothing": "fast"}, retries={"count": 0, "delay": 0})
    state_a = augment(config=cfg, return_state=True)
    state_again = augment(config=cfg, return_state=True)  # the same config: every shard is committed
    cfg_b = small_config(root, run_id="ui-b", models={"smoothing": "fast"}, retries={"count": 0, "delay": 0})
    (root / "runs" / "ui-b").mkdir(parents=True)
    (root / "runs" / "ui-b" / "synth").write_text("a file where the synth folder must go: every shard fails\n")
    state_b = augment(config=cfg_b, return_state=True)
    root_c = make_inputs(tmp_path_factory.mktemp("ui-c"), n_maps=2, n_styles=2, bad=(0, 1))
    state_c = augment(config=small_config(root_c, run_id="ui-c", retries={"count": 0, "delay": 0}), return_state=True)
    for lg, level in zip(loggers, saved_levels):
        lg.setLevel(level)
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # logs travel to the API in batches
    return {"a": state_a, "b": state_b, "c": state_c, "again": state_again, "cfg": cfg, "root": root}


def test_completed_with_error_rows_says_so(runs):
    state = runs["a"]
    assert state.is_completed()
    assert re.search(r"completed with 2 error row\(s\) from 1 source\(s\) and 6 ok", state.message or ""), state.message
    result = state.result()
    assert result["summary"]["error"] == 2 and result["run_id"] == "ui-a"


def test_flow_run_tags(runs):
    with _client() as client:
        run = client.read_flow_run(runs["a"].state_details.flow_run_id)
    assert {"preset:custom", "stylizer:color", "run:ui-a"} <= set(run.tags), run.tags


def test_summary_is_one_numeric_row_per_stage(runs):
    with _client() as client:
        arts = _artifacts(client, runs["a"].state_details.flow_run_id)
    table = arts["table"].data if isinstance(arts["table"].data, list) else json.loads(arts["table"].data)
    assert [r["stage"] for r in table] == ["load", "synthesize", "stylize", "smooth", "quality", "write", "total"]
    for r in table:
        assert all(isinstance(r[k], (int, float)) for k in ("p50_ms", "p95_ms", "mean_ms")), r
        assert r["p95_ms"] >= r["p50_ms"] >= 0
    desc = arts["table"].description
    assert "4 sources x 2 styles each = 8 outputs planned in 2 shard(s)" in desc and "device cpu" in desc and "wall time" in desc, desc
    assert "spade-custom random-init" in desc and "color" in desc


def test_samples_artifact_has_inline_thumbnails_like_the_contact_sheet(runs):
    with _client() as client:
        arts = _artifacts(client, runs["a"].state_details.flow_run_id)
    md = arts["markdown"].data
    assert 5_000 < len(md.encode()) <= 110_000
    thumbs = re.findall(r"\(data:image/jpeg;base64,([A-Za-z0-9+/=]+)\)", md)
    assert len(thumbs) >= 2 + 3 * 4  # 2 style photos, then label + synthesized + 2 outputs for 3 good sources
    Image.open(io.BytesIO(base64.b64decode(thumbs[0]))).verify()
    assert "| source | label map | synthesized | style `style0` | style `style1` |" in md
    assert re.search(r"`images/shard=00000/[^/`]+/m000/style0\.png`", md) and str(runs["root"]) + "/runs/ui-a/images" not in md
    assert "m001" in md and "x 2 styles (style0, style1)" in md  # the bad source: once, both styles named


def test_timing_chart_image_and_progress(runs):
    with _client() as client:
        arts = _artifacts(client, runs["a"].state_details.flow_run_id)
    url = arts["image"].data
    assert url.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as im:
        assert im.size[0] >= 400 and im.size[1] >= 150
    assert float(arts["progress"].data) == 100.0
    assert "2/2 shards committed, 0 failed" in arts["progress"].description


def test_per_shard_log_line(runs):
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with _client() as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[runs["a"].state_details.flow_run_id])))
    lines = [entry.message for entry in logs if entry.task_run_id is not None]
    assert any(re.match(r"shard=00000: 2 sources, 2 ok / 2 error; stage ms .*load \d+ synth \d+ stylize \d+ smooth \d+ "
                        r"quality \d+ write \d+; [\d.]+ s", m) for m in lines), lines
    flow_lines = [entry.message for entry in logs if entry.task_run_id is None]
    assert any(m.startswith("run ui-a: 4 sources x 2 styles each = 8 outputs in 2 shard(s);") for m in flow_lines), flow_lines
    warning = [m for m in flow_lines if m.startswith("shard=00000: 2 error row(s), e.g. ")]
    assert warning and "m001" in warning[0] and "['" not in warning[0], flow_lines  # the error itself, not a list repr


def test_every_shard_failed_run(runs):
    state = runs["b"]
    assert state.is_failed()
    msg = state.message or ""
    assert "2 of 2 shard(s) failed" in msg and "no shard is committed" in msg, msg
    assert "other shard" not in msg
    # what happened, whether a retry helps and the advice: each said once (the storage error says them itself)
    for words in ("a file stands where a folder must go", "retrying will not help", "remove or rename what is in the way"):
        assert msg.count(words) == 1, msg
    with _client() as client:
        arts = _artifacts(client, state.state_details.flow_run_id)
    assert float(arts["progress"].data) == 0.0 and "0/2 shards committed, 2 failed" in arts["progress"].description
    # an empty run shows empty cells, never "nan" (the image's base64 is left out: it may spell anything)
    text = json.dumps({k: [a.data if k != "image" else "", a.description] for k, a in arts.items()}, default=str)
    assert not re.search(r"\bnan\b", text, re.I), text[:2000]
    table = arts["table"].data if isinstance(arts["table"].data, list) else json.loads(arts["table"].data)
    assert all(r["p50_ms"] is None and r["ok_outputs"] == 0 for r in table), table


def _dark_bar_pixels(image_url: str) -> int:
    """Pixels of the chart's dark (p50) bars."""
    import numpy as np

    with Image.open(io.BytesIO(base64.b64decode(image_url.split(",", 1)[1]))) as im:
        return int((np.asarray(im.convert("RGB")) == (40, 90, 170)).all(axis=-1).sum())


def test_run_without_ok_outputs_claims_no_times(runs):
    """Run C committed error rows only: no bars in the chart (not 0 ms ones), no rate, no empty list of outputs."""
    state = runs["c"]
    assert state.is_completed() and "completed with 4 error row(s)" in (state.message or ""), state.message
    with _client() as client:
        arts = _artifacts(client, state.state_details.flow_run_id)
        arts_a = _artifacts(client, runs["a"].state_details.flow_run_id)
    assert _dark_bar_pixels(arts["image"].data) == 0 and _dark_bar_pixels(arts_a["image"].data) > 0
    desc = arts["table"].description
    assert "0 new outputs;" in desc and "no new outputs" not in desc and "outputs/s" not in desc, desc
    assert "outputs/s;" in arts_a["table"].description
    md = arts["markdown"].data
    assert "`m000`" in md and "Outputs shown" not in md, md[-3000:]
    assert "Outputs shown" in arts_a["markdown"].data


def test_a_run_with_nothing_left_says_so_and_has_its_own_name(runs):
    """The same config again: every shard is committed; the state message and the log say "nothing to do" (not a
    silent green run), and the flow run's name differs from the first run's."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    state = runs["again"]
    run_uri = runs["cfg"].resolved().run_uri
    want = f"nothing to do: 2 shard(s) already committed in {run_uri}"
    assert state.is_completed() and (state.message or "").startswith(want), state.message
    with _client() as client:
        first = client.read_flow_run(runs["a"].state_details.flow_run_id)
        again = client.read_flow_run(state.state_details.flow_run_id)
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[again.id])))
    assert any(want in entry.message for entry in logs), [entry.message for entry in logs]
    assert first.name != again.name and first.name.startswith("augment-ui-a-") and again.name.startswith("augment-ui-a-")


def test_one_outputs_per_s_figure_in_run_summary_and_ui(runs, capsys):
    """`spadepis run` (the flow's printed summary and result), `spadepis summary` and the UI caption show the same
    outputs/s, defined once (ok outputs / their summed stage time); a later run with nothing to do too."""
    from spadepis.cli import main
    from spadepis.pipeline.manifest import summary

    run_uri = runs["cfg"].resolved().run_uri
    rate = runs["a"].result()["summary"]["outputs_per_s"]
    assert rate > 0 and rate == summary(run_uri)["outputs_per_s"] == runs["again"].result()["summary"]["outputs_per_s"]
    capsys.readouterr()
    assert main(["summary", run_uri]) == 0
    assert f"outputs/s {rate:.3f} (ok outputs / their summed stage time)" in capsys.readouterr().out
    with _client() as client:
        arts = _artifacts(client, runs["a"].state_details.flow_run_id)
    assert f"{rate:.2f} outputs/s" in arts["table"].description
