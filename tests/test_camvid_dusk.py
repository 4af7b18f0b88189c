"""configs/camvid-dusk.yaml (a target pool: daytime CamVid frames restyled toward unlabelled dusk photos) runs
through the real flow on two frames, and its style pool holds only the earlier half of the dusk sequence; its
commented pseudo-labelled recipe runs with a TorchScript segmenter."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

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


class _BandLabeller(torch.nn.Module):
    """A built segmenter in CamVid ids: the top third of a photo is sky (0), the middle building (1), the bottom
    road (3); ids (1, H, W), the second output form styles.segmenter accepts."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        rows = torch.arange(h).view(h, 1).expand(h, w)
        ids = torch.where(rows < h // 3, 0, torch.where(rows < 2 * h // 3, 1, 3))
        return ids.unsqueeze(0)


@pytest.mark.shared
def test_camvid_dusk_pseudo_labelled_recipe_runs(tmp_path, monkeypatch, prefect_harness):
    """The config's commented recipe (labels: predict, select: semantic, unmatched: global) with a TorchScript
    segmenter: the target photos get predicted maps and every output says so."""
    shared_path("data", "camvid")
    shared_path("weights", "wct_16x")
    seg = tmp_path / "camvid_seg.pt"
    torch.jit.script(_BandLabeller()).save(str(seg))
    monkeypatch.chdir(ROOT)
    from spadepis.flows.augment import augment

    cfg = load_config("configs/camvid-dusk.yaml", [
        "dataset.limit=1", f"output={tmp_path / 'runs'}", "device=cpu", "styles.labels=predict",
        f"styles.segmenter={seg}", "styles.select=semantic", "styles.unmatched=global"])
    result = augment(config=cfg)
    df = read_index(result["run_uri"])
    assert len(df) == 2 and (df.status == "ok").all(), df.error.tolist()
    assert set(df.style_labels) == {"predicted"} and df.style_id.str.startswith("0001TP_").all()
    styles = pd.read_parquet(Path(result["run_uri"]) / "style_index.parquet")
    assert set(styles.label_source) == {"predicted"}
    for row in df.itertuples():
        out, src = read_rgb(row.image_uri), read_rgb(row.synth_uri)
        assert out.shape == src.shape and out.mean() < 0.8 * src.mean()
