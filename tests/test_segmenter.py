"""Pseudo-labelled style pools (``styles.labels: predict`` + ``styles.segmenter``) with a real TorchScript
model trained here: a 1x1-convolution net that maps the pool's colours to its label ids."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from spadepis.data.presets import get_preset
from spadepis.errors import ConfigError
from spadepis.pipeline.config import parse_config
from spadepis.pipeline.manifest import read_index
from spadepis.pipeline.model_cache import clear_model_cache, get_style_cache
from spadepis.pipeline.plan import make_plan
from spadepis.pipeline.preflight import validate_config
from spadepis.pipeline.segmenter import load_segmenter, segment
from spadepis.pipeline.styles import read_style_index
from spadepis.pipeline.worker import process_shard

sys.path.insert(0, str(Path(__file__).parent))
from test_semantic import LABEL_NC, _config, make_pool  # noqa: E402


def _train_pixel_net(root: Path) -> torch.nn.Module:
    """A 1x1 conv (3 -> LABEL_NC logits) fitted to the pool's pixels (photo colour -> label id)."""
    xs, ys = [], []
    for p in sorted((root / "photos").iterdir()):
        xs.append(torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1).float() / 255.0)
        ys.append(torch.from_numpy(np.asarray(Image.open(root / "labels" / p.name)).astype(np.int64)))
    x, y = torch.stack(xs), torch.stack(ys)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 1), torch.nn.ReLU(), torch.nn.Conv2d(16, LABEL_NC, 1))
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = (net(x).argmax(1) == y).float().mean().item()
    assert acc > 0.95, acc  # the colours separate the classes: the net has learnt them
    return net.eval()


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = make_pool(tmp_path_factory.mktemp("seg"), n=6)
    net = _train_pixel_net(root)
    torch.jit.script(net).save(str(root / "seg.pt"))
    return root


def _predict_config(root: Path, **styles) -> dict:
    fields = {"labels": "predict", "segmenter": str(root / "seg.pt"), "per_sample": 1, "top_m": 1, **styles}
    data = _config(root, **fields)
    data["run_id"] = "pred"
    return data


def _run(cfg) -> pd.DataFrame:
    clear_model_cache()
    for shard in make_plan(cfg).shards:
        process_shard(cfg, shard)
    return read_index(cfg.run_uri)


def test_predicted_style_labels_drive_selection_and_transfer(pool):
    cfg = parse_config(_predict_config(pool))
    assert validate_config(cfg) == []
    plan = make_plan(cfg)
    # one label map per style, in the run folder, close to the true one
    for style in plan.styles:
        assert style.label_source == "predicted" and style.label_uri.startswith(cfg.run_uri + "/style_labels/")
        pred = np.asarray(Image.open(style.label_uri)).astype(np.int64)
        true = np.asarray(Image.open(pool / "labels" / f"{style.style_id}.png")).astype(np.int64)
        assert pred.shape == true.shape and (pred == true).mean() > 0.95
    index = read_style_index(cfg.run_uri)
    assert (index.label_source == "predicted").all() and index.error.isna().all()
    # computed once: planning again reuses the files (the segmenter is not even loaded)
    mtimes = {s.style_id: Path(s.label_uri).stat().st_mtime_ns for s in plan.styles}
    (pool / "seg.pt").rename(pool / "seg.moved")
    try:
        with pytest.raises(ConfigError, match="styles.segmenter"):
            make_plan(cfg)  # the key includes the model's bytes: without the file it is named, not guessed
    finally:
        (pool / "seg.moved").rename(pool / "seg.pt")
    again = make_plan(cfg)
    assert {s.style_id: Path(s.label_uri).stat().st_mtime_ns for s in again.styles} == mtimes
    # the selection is the one the true label maps give
    given = parse_config({**_config(pool, per_sample=1, top_m=1), "run_id": "given"})
    assert [sh.style_ids for sh in again.shards] == [sh.style_ids for sh in make_plan(given).shards]

    df = _run(cfg)
    assert (df.status == "ok").all(), df.error.tolist()
    assert set(df.style_labels) == {"predicted"}
    assert df.q_coverage.notna().all() and df.style_score.notna().all()
    row = df.iloc[0]
    style = next(s for s in again.styles if s.style_id == row.style_id)
    cache, _ = get_style_cache(cfg, "cpu", row.style_id, row.style_uri, style.label_uri)
    assert cache.has_seg  # label-aware transfer with the predicted map

    gdf = _run(given)
    assert set(gdf.style_labels) == {"given"}
    assert (read_style_index(given.run_uri).label_source == "given").all()


def test_module_function_segmenter(pool, tmp_path, monkeypatch):
    (tmp_path / "my_seg.py").write_text(
        "import torch\n"
        f"def build():\n    return torch.jit.load({str(pool / 'seg.pt')!r})\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    data = _predict_config(pool, segmenter="my_seg:build")
    data["run_id"] = "module"
    cfg = parse_config(data)
    assert validate_config(cfg) == []
    plan = make_plan(cfg)
    assert all(s.label_source == "predicted" for s in plan.styles)
    bad = parse_config({**data, "styles": {**data["styles"], "segmenter": "no_such_module_xyz:build"}})
    assert any("styles.segmenter" in p and "no_such_module_xyz" in p for p in validate_config(bad))


class _Scores(torch.nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _Ids(torch.nn.Module):
    def __init__(self, value: int) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((1, x.shape[2], x.shape[3]), self.value, dtype=torch.long)


class _Half(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros((1, 4, x.shape[2] // 2, x.shape[3] // 2))


@pytest.mark.parametrize("model, expect", [
    (_Scores(7), r"float32 tensor of shape \(1, 7, 64, 64\).*7 classes.*4 label channels"),
    (_Ids(9), r"label ids outside preset 'custom'.*: 9 \(valid: 0\.\.3\)"),
    (_Ids(-1), r"label ids outside preset 'custom'.*: -1"),
    (_Half(), r"shape \(1, 4, 32, 32\).*expected scores \(1, 4, 64, 64\)"),
])
def test_wrong_model_output_is_refused_with_what_it_returned(pool, tmp_path, model, expect):
    path = tmp_path / "bad.pt"
    torch.jit.script(model).save(str(path))
    data = _predict_config(pool, segmenter=str(path))
    data["run_id"] = "bad"
    cfg = parse_config(data)
    with pytest.raises(ConfigError, match=r"styles\.segmenter") as info:
        make_plan(cfg)
    import re

    assert re.search(expect, str(info.value)), str(info.value)
    assert not (Path(cfg.run_uri) / "style_labels").exists() or not any((Path(cfg.run_uri) / "style_labels").iterdir())
    # the function itself, on one image
    with pytest.raises(ConfigError, match=expect):
        segment(load_segmenter(str(path)), np.zeros((64, 64, 3), np.uint8), get_preset("custom", label_nc=LABEL_NC))


def test_config_errors_name_the_fields(pool, tmp_path):
    with pytest.raises(ConfigError, match=r"styles: .*labels: predict needs styles\.segmenter"):
        parse_config(_config(pool, labels="predict"))
    with pytest.raises(ConfigError, match=r"segmenter is set but styles\.labels is not 'predict'"):
        parse_config(_config(pool, segmenter=str(pool / "seg.pt")))
    missing = parse_config(_predict_config(pool, segmenter=str(tmp_path / "nope.pt")))
    assert any(p.startswith("styles.segmenter:") and "does not exist" in p for p in validate_config(missing))
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ConfigError, match=r"styles\.segmenter: .*junk\.pt.* is not a TorchScript file"):
        load_segmenter(str(tmp_path / "junk.pt"))
