"""Small real inputs for pipeline tests: label maps of a small custom label set and a few style photos."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from spadepis.pipeline.config import RunConfig, parse_config

LABEL_NC = 8
SIZE = 64


def make_inputs(root: Path, n_maps: int = 6, n_styles: int = 2, *, bad: tuple[int, ...] = ()) -> Path:
    """``root/labels/m000.png ...`` (ids < LABEL_NC; indices in ``bad`` get an out-of-range id) + ``root/styles``."""
    (root / "labels").mkdir(parents=True, exist_ok=True)
    (root / "styles").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n_maps):
        lab = np.zeros((SIZE, SIZE), np.uint8)
        lab[: SIZE // 2] = 1 + i % (LABEL_NC - 1)
        lab[SIZE // 2 :, : SIZE // 3] = 2
        lab[SIZE // 2 :, SIZE // 3 :] = 3 + (i % 4)
        if i in bad:
            lab[5, 7] = 200
        Image.fromarray(lab).save(root / "labels" / f"m{i:03d}.png")
    for j in range(n_styles):
        style = (rng.random((40, 48, 3)) * 80 + np.array([60 * j, 100, 200 - 60 * j])).clip(0, 255).astype(np.uint8)
        Image.fromarray(style).save(root / "styles" / f"style{j}.png")
    return root


def small_config(root: Path, **overrides: Any) -> RunConfig:
    data: dict[str, Any] = {
        "dataset": {
            "preset": "custom",
            "preset_overrides": {"label_nc": LABEL_NC, "crop_size": SIZE, "contain_dontcare_label": False, "no_instance": True},
            "name": "tiny",
            "labels": str(root / "labels"),
        },
        "styles": {"source": str(root / "styles")},
        "models": {"synth_checkpoint": "random-init", "ngf": 8, "stylizer": "color", "smoothing": "exact"},
        "output": str(root / "runs"),
        "run_id": "t",
        "shard_size": 2,
        "batch_size": 2,
        "device": "cpu",
        "runner": {"kind": "thread", "max_concurrency": 2},
        "retries": {"count": 1, "delay": 0},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return parse_config(data)


def run_all_shards(cfg: RunConfig) -> RunConfig:
    """Process every shard of ``cfg`` in this process (no Prefect), then write the index; the resolved config."""
    from spadepis.pipeline.plan import make_plan
    from spadepis.pipeline.storage import RunStorage
    from spadepis.pipeline.worker import process_shard

    cfg = cfg.resolved()
    for shard in make_plan(cfg).shards:
        process_shard(cfg, shard)
    RunStorage(cfg.run_uri).write_index()
    return cfg
