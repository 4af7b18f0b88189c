"""configs/camvid-dusk.yaml (a target pool: daytime CamVid frames restyled toward unlabelled dusk photos) runs
through the real flow on two frames, and its style pool holds only the earlier half of the dusk sequence."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import shared_path
from spadepis.data.images import read_rgb
from spadepis.pipeline.config import load_config
from spadepis.pipeline.manifest import read_index
from spadepis.pipeline.plan import list_inputs

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.shared
def test_camvid_dusk_config_runs(tmp_path, monkeypatch, prefect_harness):
    camvid = shared_path("data", "camvid")
    shared_path("weights", "wct_16x")
    monkeypatch.chdir(ROOT)  # the config's paths are relative to the checkout's root
    from spadepis.flows.augment import augment

    cfg = load_config("configs/camvid-dusk.yaml", ["dataset.limit=2", f"output={tmp_path / 'runs'}", "device=cpu"])
    styles = list_inputs(cfg.styles.source, field="styles.source")
    dusk = sorted(p.stem for p in (camvid / "train_img").glob("0001TP_*.jpg"))
    assert [Path(s).stem for s in styles] == dusk[: len(dusk) // 2]  # the earlier half only: the later half is evaluation
    result = augment(config=cfg)
    df = read_index(result["run_uri"])
    assert len(df) == 4 and (df.status == "ok").all(), df.error.tolist()
    assert df.source_id.str.match(r"^00[01]6").all() and df.style_id.str.startswith("0001TP_").all()
    assert set(df.style_labels) == {"none"}
    for row in df.itertuples():  # restyled toward dusk: darker than the daytime photo, same size
        out, src = read_rgb(row.image_uri), read_rgb(row.synth_uri)
        assert out.shape == src.shape
        assert out.mean() < 0.8 * src.mean()
