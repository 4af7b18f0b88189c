"""Stylize-only runs downscale large photos to ``dataset.max_side`` and keep ``label_uri`` pixel-aligned."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from pipeline_helpers import LABEL_NC, make_inputs, small_config
from spadepis.pipeline.config import config_hash
from spadepis.errors import ConfigError
from spadepis.data.images import read_rgb
from spadepis.pipeline.manifest import AugmentedDataset, read_index
from spadepis.pipeline.plan import make_plan
from spadepis.pipeline.worker import process_shard


def _stylize_only_inputs(root):
    """``big`` (96x64 photo and label map: downscaled with max_side 48) and ``small`` (40x30: kept)."""
    make_inputs(root, n_maps=0, n_styles=2)
    (root / "photos").mkdir()
    rng = np.random.default_rng(1)
    for name, (w, h) in {"big": (96, 64), "small": (40, 30)}.items():
        Image.fromarray(rng.integers(0, LABEL_NC, (h, w), dtype=np.uint8)).save(root / "labels" / f"{name}.png")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "photos" / f"{name}.png")
    return root


def _cfg(root, **dataset):
    return small_config(root, dataset={"photos": str(root / "photos"), "max_side": 48, **dataset}, shard_size=4)


def _run(cfg):
    for shard in make_plan(cfg).shards:
        process_shard(cfg, shard)
    df = read_index(cfg.run_uri)
    assert len(df) == 4 and (df.status == "ok").all(), df.error.tolist()
    return df.set_index(["source_id", "style_id"]).sort_index()


def test_large_photo_is_downscaled_with_a_nearest_resized_label_map(tmp_path):
    root = _stylize_only_inputs(tmp_path)
    cfg = _cfg(root)
    df = _run(cfg)

    big = df.loc["big"]
    assert (big.width == 48).all() and (big.height == 32).all()
    for row in big.itertuples():
        assert read_rgb(row.image_uri).shape == (32, 48, 3)
        assert row.synth_uri == str(root / "photos" / "big.png")  # the source photo, as before
    (label_uri,) = set(big.label_uri)
    assert re.fullmatch(re.escape(f"{cfg.run_uri}/labels/shard=00000/") + r"[^/]+/big\.png", label_uri)  # attempt folder
    written = Image.open(label_uri)
    assert written.size == (48, 32) and written.mode == "L"
    expected = np.asarray(Image.open(root / "labels" / "big.png").resize((48, 32), Image.NEAREST))
    np.testing.assert_array_equal(np.asarray(written), expected)

    small = df.loc["small"]  # fits: full size, label_uri is the source label map
    assert (small.width == 40).all() and (small.height == 30).all()
    assert set(small.label_uri) == {str(root / "labels" / "small.png")}
    assert not (root / "runs" / "t" / "labels" / "shard=00000" / "small.png").exists()

    ds = AugmentedDataset(cfg.run_uri)
    assert len(ds) == 4
    for i in range(len(ds)):
        image, label, meta = ds[i]
        assert tuple(label.shape) == tuple(image.shape[1:]) == (meta["height"], meta["width"])
        if meta["source_id"] == "big":
            np.testing.assert_array_equal(label.numpy(), expected)


def test_max_side_none_keeps_full_size(tmp_path):
    root = _stylize_only_inputs(tmp_path)
    df = _run(_cfg(root, max_side=None))
    assert (df.loc["big"].width == 96).all() and (df.loc["big"].height == 64).all()
    assert set(df.loc["big"].label_uri) == {str(root / "labels" / "big.png")}
    assert not (root / "runs" / "t" / "labels").exists()


def test_max_side_config_bounds_check_command_and_hash(tmp_path):
    import yaml

    from spadepis.cli import main

    root = _stylize_only_inputs(tmp_path)
    assert small_config(root).dataset.max_side == 1024  # the default
    assert _cfg(root, max_side=None).dataset.max_side is None
    for bad in (15, 0, 20000, "big"):
        with pytest.raises(ConfigError, match="dataset.max_side"):
            _cfg(root, max_side=bad)

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(_cfg(root).model_dump(mode="json")))
    assert main(["check", str(path), "--set", "dataset.max_side=256"]) == 0
    assert main(["check", str(path), "--set", "dataset.max_side=8"]) == 1

    # it changes stylize-only outputs, so their hash; SPADE runs ignore it (their sample ids stay the same)
    assert config_hash(_cfg(root)) != config_hash(_cfg(root, max_side=64))
    spade = small_config(root)
    assert config_hash(spade) == config_hash(small_config(root, dataset={"max_side": 64}))


def test_spade_run_writes_an_aligned_label_map_when_the_label_file_has_another_size(tmp_path):
    """SPADE outputs have the preset's size; a label file of another size gets a NEAREST-resized copy."""
    root = make_inputs(tmp_path, n_maps=1, n_styles=1)
    rng = np.random.default_rng(2)
    odd = rng.integers(0, LABEL_NC, (50, 70), dtype=np.uint8)
    Image.fromarray(odd).save(root / "labels" / "odd.png")
    cfg = small_config(root)
    for shard in make_plan(cfg).shards:
        process_shard(cfg, shard)
    df = read_index(cfg.run_uri).set_index("source_id")
    assert (df.status == "ok").all(), df.error.tolist()
    size = int(df.loc["m000", "width"])
    assert df.loc["m000", "label_uri"] == str(root / "labels" / "m000.png")  # already the preset's size
    label_uri = df.loc["odd", "label_uri"]
    assert re.fullmatch(re.escape(f"{cfg.run_uri}/labels/shard=00000/") + r"[^/]+/odd\.png", label_uri)  # attempt folder
    written = np.asarray(Image.open(label_uri))
    np.testing.assert_array_equal(written, np.asarray(Image.fromarray(odd).resize((size, size), Image.NEAREST)))
    assert read_rgb(df.loc["odd", "image_uri"]).shape[:2] == written.shape
