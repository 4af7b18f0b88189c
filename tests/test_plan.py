"""Deterministic plan: sorted ids, fixed shards, stable sample ids and style choice, input listing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from spadepis.pipeline.config import parse_config
from spadepis.errors import ConfigError
from spadepis.pipeline.plan import list_inputs, make_plan, sample_id, shard_name


@pytest.fixture()
def inputs(tmp_path):
    for sub in ("labels", "styles", "inst"):
        (tmp_path / sub).mkdir()
    for name in ["c", "a", "e", "b", "d"]:
        Image.fromarray(np.ones((16, 16), np.uint8)).save(tmp_path / "labels" / f"{name}.png")
        Image.fromarray(np.ones((16, 16), np.uint8)).save(tmp_path / "inst" / f"{name}.png")
    for name in ["s3", "s1", "s2", "s0"]:
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "styles" / f"{name}.jpg")
    return tmp_path


def _config(root, **kw):
    data = {
        "dataset": {"preset": "coco", "labels": str(root / "labels"), "instances": str(root / "inst")},
        "styles": {"source": str(root / "styles"), "per_sample": 2},
        "models": {"stylizer": "color"},
        "output": str(root / "out"),
        "shard_size": 2,
    }
    data.update(kw)
    return parse_config(data)


def test_shard_name_is_the_one_helper():
    assert shard_name(42) == "shard=00042"
    with pytest.raises(ValueError):
        shard_name(-1)


def test_plan_is_deterministic_and_sorted(inputs):
    p1, p2 = make_plan(_config(inputs)), make_plan(_config(inputs, output="memory://other", batch_size=9))
    assert p1 == p2
    assert [s.source_id for s in p1.sources] == ["a", "b", "c", "d", "e"]
    assert [s.name for s in p1.shards] == ["shard=00000", "shard=00001", "shard=00002"]
    assert [len(s.sources) for s in p1.shards] == [2, 2, 1]
    assert all(len(ids) == 2 and list(ids) == sorted(ids) for s in p1.shards for ids in s.style_ids)
    assert p1.n_samples == 10
    assert p1.shards[0].sources[0].instance_uri.endswith("inst/a.png")
    # sample ids: hash of (source, style, seed, config hash); a changed seed changes them and the style choice
    sid = p1.sample_id("a", p1.shards[0].style_ids[0][0])
    assert sid == sample_id("a", p1.shards[0].style_ids[0][0], 0, p1.config_hash) and len(sid) == 20
    p3 = make_plan(_config(inputs, seed=7))
    assert p3.config_hash != p1.config_hash
    choices = lambda p: [ids for s in p.shards for ids in s.style_ids]  # noqa: E731
    assert choices(make_plan(_config(inputs, seed=7))) == choices(p3)


def test_all_styles_when_per_sample_is_empty(inputs):
    cfg = _config(inputs, styles={"source": str(inputs / "styles")})
    plan = make_plan(cfg)
    assert all(ids == ("s0", "s1", "s2", "s3") for s in plan.shards for ids in s.style_ids)
    assert [st.style_id for st in plan.shards[0].styles] == ["s0", "s1", "s2", "s3"]


def test_glob_and_list_file(inputs):
    assert len(list_inputs(str(inputs / "labels" / "*.png"))) == 5
    (inputs / "list.txt").write_text("# two of them\nlabels/b.png\n\n" + str(inputs / "labels" / "a.png") + "\n")
    assert list_inputs(str(inputs / "list.txt")) == sorted([str(inputs / "labels" / "a.png"), str(inputs / "labels/b.png")])
    with pytest.raises(ConfigError, match="matches no file"):
        list_inputs(str(inputs / "labels" / "*.tif"), field="dataset.labels")


def test_memory_filesystem_inputs():
    import fsspec

    fs = fsspec.filesystem("memory")
    for name in ("x", "y"):
        fs.pipe(f"/plan-test/labels/{name}.png", b"png")
    uris = list_inputs("memory://plan-test/labels")
    assert uris == ["memory:///plan-test/labels/x.png", "memory:///plan-test/labels/y.png"]
    assert fsspec.open(uris[0]).open().read() == b"png"


def test_duplicate_ids_and_missing_photos_are_config_errors(inputs):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(inputs / "styles" / "s1.png")
    with pytest.raises(ConfigError, match="two files have the id 's1'"):
        make_plan(_config(inputs))
    (inputs / "styles" / "s1.png").unlink()
    (inputs / "photos").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(inputs / "photos" / "a.jpg")
    with pytest.raises(ConfigError, match="no photo for 4 label map"):
        make_plan(_config(inputs, dataset={"preset": "coco", "labels": str(inputs / "labels"), "photos": str(inputs / "photos")}))


def test_cityscapes_suffixes_pair_labels_and_instances(tmp_path):
    for sub in ("l", "i", "s"):
        (tmp_path / sub).mkdir()
    Image.fromarray(np.ones((8, 8), np.uint8)).save(tmp_path / "l" / "aachen_000000_000019_gtFine_labelIds.png")
    Image.fromarray(np.ones((8, 8), np.uint8)).save(tmp_path / "i" / "aachen_000000_000019_gtFine_instanceIds.png")
    Image.fromarray(np.ones((8, 8, 3), np.uint8)).save(tmp_path / "s" / "x.png")
    cfg = parse_config({"dataset": {"preset": "cityscapes", "labels": str(tmp_path / "l"), "instances": str(tmp_path / "i")},
                        "styles": {"source": str(tmp_path / "s")}, "output": str(tmp_path / "o")})
    src = make_plan(cfg).sources[0]
    assert src.source_id == "aachen_000000_000019" and src.instance_uri.endswith("_instanceIds.png")
