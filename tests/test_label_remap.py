"""dataset.label_remap: a dataset's own label ids through an official SPADE preset (spadepis.data.label_remap).

The pipeline tests use the real CamVid label maps of ../shared (11 classes + void, 480x360) through the
cityscapes preset (35 labelIds, 512x256) with random-init weights at a small ngf: the generator receives the
mapped map, the manifest's label_uri names the CamVid ids pixel-aligned with the outputs, unmapped ids behave as
``dataset.unmapped`` says, and mappings into ids outside the preset are refused naming the entries.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, shared_path
from PIL import Image

from spadepis.data.categories import CITYSCAPES
from spadepis.data.label_remap import TABLES, load_label_remap
from spadepis.data.labelmaps import build_semantics, read_label_map
from spadepis.data.presets import get_preset
from spadepis.errors import ConfigError, InputError
from spadepis.pipeline.config import config_hash, parse_config

CITY = get_preset("cityscapes")
# CamVid class -> Cityscapes labelId, written out here from the two label tables (not read from the shipped file)
CAMVID_TO_CITY = {0: 23, 1: 11, 2: 17, 3: 7, 4: 8, 5: 21, 6: 20, 7: 13, 8: 26, 9: 24, 10: 25, 11: 0}


def _camvid_labels(n: int = 2) -> list[Path]:
    folder = shared_path("data", "camvid", "val_label")
    return sorted(folder.glob("*.png"))[:n]


def _cfg(tmp_path: Path, labels: str, **dataset) -> object:
    styles = shared_path("data", "camvid", "train_img")
    return parse_config({
        "dataset": {"preset": "cityscapes", "name": "camvid", "labels": labels, "use_instance": False,
                    "label_remap": "camvid->cityscapes", **dataset},
        "styles": {"source": str(styles / "0001TP_0067*.jpg"), "select": "random", "per_sample": 1},
        "models": {"synth_checkpoint": "random-init", "ngf": 8, "stylizer": "color", "smoothing": "none"},
        "output": str(tmp_path / "runs"), "run_id": "remap", "shard_size": 4, "batch_size": 4, "device": "cpu",
    })


def _run(cfg):
    from spadepis.pipeline.manifest import read_index
    from spadepis.pipeline.plan import make_plan
    from spadepis.pipeline.preflight import validate_config
    from spadepis.pipeline.worker import process_shard

    assert validate_config(cfg) == []
    for shard in make_plan(cfg).shards:
        process_shard(cfg, shard)
    return read_index(cfg.run_uri)


# ---------------------------------------------------------------------------------------------- tables



def _spy_on_generator(cfg, monkeypatch):
    """``(seen, real)``: the label maps that reach the run's (cached) generator, recorded as it runs them, and
    its unwrapped ``synthesize``."""
    import torch

    from spadepis.pipeline.model_cache import get_synthesizer

    synth = get_synthesizer(cfg, torch.device("cpu"))
    seen: list[np.ndarray] = []
    real = synth.synthesize

    def spy(labels, instances=None, **kw):
        seen.append(np.asarray(labels))
        return real(labels, instances, **kw)

    monkeypatch.setattr(synth, "synthesize", spy)
    return seen, real

def test_shipped_tables_name_both_sides_and_fit_the_cityscapes_preset():
    camvid = load_label_remap("camvid->cityscapes")
    assert dict(camvid.mapping) == CAMVID_TO_CITY and camvid.label == "camvid->cityscapes"
    trainid = load_label_remap("cityscapes_trainid->cityscapes")
    assert sorted(trainid.mapping) == [*range(19), 255] and trainid.mapping[255] == 0
    assert [trainid.mapping[i] for i in (0, 10, 13, 18)] == [7, 23, 26, 33]  # road, sky, car, bicycle
    for name in TABLES:
        table = load_label_remap(name)
        assert table.problems(CITY) == []
        assert set(table.source_names) == set(table.mapping) == set(table.target_names)
        for s, t in table.mapping.items():  # target names are the preset's class names for those ids
            assert table.target_names[s] == CITYSCAPES[t], (name, s, t)
        assert table.problems(get_preset("ade20k"))[0].startswith("dataset.label_remap: the table")


def test_camvid_table_source_names_are_those_of_the_camvid_readme():
    readme = shared_path("data", "camvid", "README.md").read_text()
    names = {int(i): n.strip() for i, n in re.findall(r"\|\s*(\d+)\s*\|\s*([a-z/ ()]+?)\s*(?=\|)", readme)}
    table = load_label_remap("camvid->cityscapes")
    assert len(names) == 12
    for i, name in names.items():
        assert name.startswith(table.source_names[i]), (i, name, table.source_names[i])


def test_files_and_inline_mappings_are_read_and_named(tmp_path):
    csv = tmp_path / "mine.csv"
    csv.write_text("# my ids\nsource_id,target_id,name\n0,7,street\n1,23,sky\n5,26\n")
    remap = load_label_remap(str(csv))
    assert dict(remap.mapping) == {0: 7, 1: 23, 5: 26} and remap.source_names == {0: "street", 1: "sky"}
    assert re.fullmatch(r"mine\.csv@[0-9a-f]{12}", remap.label)
    yml = tmp_path / "mine.yaml"
    yml.write_text("0: 7\n1: 23\n5: 26\n")
    lst = tmp_path / "list.yml"
    lst.write_text("- {source_id: 0, target_id: 7, name: street}\n- {source_id: 1, target_id: 23}\n- {source_id: 5, target_id: 26}\n")
    inline = load_label_remap({0: 7, 1: 23, 5: 26})
    assert inline.label == f"inline:{remap.digest[:12]}" and load_label_remap(str(yml)).digest == remap.digest
    assert load_label_remap(str(lst)).mapping == remap.mapping and load_label_remap(str(lst)).source_names[0] == "street"
    # the same mapping, whatever the key types (YAML gives ints, the Prefect UI / JSON gives strings)
    cfg = parse_config({"dataset": {"labels": "x", "label_remap": {"0": 7, "1": 23, "5": 26}}, "styles": {"source": "y"},
                        "output": "o"})
    assert load_label_remap(cfg.dataset.label_remap).label == inline.label

    dup = tmp_path / "dup.csv"
    dup.write_text("0,7\n0,8\n")
    with pytest.raises(ConfigError, match="source id 0 is mapped twice"):
        load_label_remap(str(dup))
    with pytest.raises(ConfigError, match=r"neither a table shipped with spadepis \(camvid->cityscapes"):
        load_label_remap("camvid->cityscape")
    with pytest.raises(ConfigError, match="'x' is not an integer label id"):
        load_label_remap({0: "x"})


def test_configs_without_the_fields_keep_their_hash():
    base = {"dataset": {"labels": "x"}, "styles": {"source": "y"}, "output": "o"}
    plain = parse_config(base)
    assert config_hash(plain) == config_hash(parse_config({**base, "dataset": {"labels": "x", "unmapped": None}}))
    remapped = parse_config({**base, "dataset": {"labels": "x", "label_remap": "camvid->cityscapes"}})
    assert config_hash(remapped) != config_hash(plain)


# ------------------------------------------------------------------------------------------- refusals


def test_mapping_into_ids_outside_the_preset_is_refused_naming_the_entries(tmp_path):
    from spadepis.pipeline.preflight import validate_config

    labels = _camvid_labels(1)[0].parent
    cfg = _cfg(tmp_path, str(labels), limit=2, label_remap={0: 23, 1: 40, 2: 255, 3: -1, 4: 34, 5: 35})
    problems = [p for p in validate_config(cfg) if p.startswith("dataset.label_remap")]
    assert len(problems) == 1, problems
    (msg,) = problems
    assert "4 entries map outside preset 'cityscapes' (valid target ids: 0..34)" in msg
    assert "{1: 40, 2: 255, 3: -1, 5: 35}" in msg and "0: 23" not in msg and "4: 34" not in msg
    # the library refuses the same table before any pixel is mapped
    remap = load_label_remap({0: 23, 1: 40})
    with pytest.raises(ConfigError, match=r"\{1: 40\}"):
        read_label_map(str(_camvid_labels(1)[0]), CITY, remap=remap)
    # a shipped table made for another preset, and label_remap in a stylize-only run
    ade = _cfg(tmp_path, str(labels), limit=2, preset="ade20k")
    assert any("maps into preset 'cityscapes', but dataset.preset is 'ade20k'" in p for p in validate_config(ade))
    photos = _cfg(tmp_path, str(labels), limit=2, photos=str(labels.parent / "val_img"))
    assert any(p.startswith("dataset.label_remap: maps label ids for the SPADE generator") for p in validate_config(photos))


def test_unmapped_dontcare_without_a_dontcare_label_is_refused_with_the_ids_and_the_line_to_add(tmp_path, capsys):
    import yaml

    from spadepis.cli import main

    labels = _camvid_labels(1)[0].parent
    partial = {k: v for k, v in CAMVID_TO_CITY.items() if k not in (10, 11)}  # bicyclist and void left out
    data = {
        "dataset": {"preset": "cityscapes", "labels": str(labels), "limit": 3, "use_instance": False,
                    "label_remap": partial, "unmapped": "dontcare"},
        "styles": {"source": str(labels.parent / "train_img" / "0001TP_0067*.jpg")},
        "models": {"synth_checkpoint": "random-init", "stylizer": "color", "smoothing": "none"},
        "output": str(tmp_path / "runs"), "device": "cpu",
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["check", str(path)]) == 1
    out, err = capsys.readouterr()
    assert "dataset.unmapped: dontcare needs a preset with a dontcare label, and preset 'cityscapes' has none" in err
    found = re.search(r"does not map: ([\d, ]+)\.", err).group(1)
    assert set(found.split(", ")) <= {"10", "11"} and "11" in found
    assert "`10: 0, 11: 0`" in err or "`11: 0`" in err
    assert "set `dataset.unmapped: error`" in err
    # the report still says where every id goes
    assert "3 -> 7 road" in out and "11 -> unmapped (dontcare)" in out  # inline: target names from the preset
    assert "unmapped: 10, 11 -> refused: preset 'cityscapes' has no dontcare label" in out or \
        "unmapped: 11 -> refused: preset 'cityscapes' has no dontcare label" in out
    # without the mapping, unmapped is meaningless
    data["dataset"].pop("label_remap")
    path.write_text(yaml.safe_dump(data))
    assert main(["check", str(path)]) == 1
    assert "dataset.unmapped: only used with dataset.label_remap" in capsys.readouterr().err


def test_unmapped_dontcare_goes_to_the_dontcare_label_of_a_preset_that_has_one():
    (uri,) = _camvid_labels(1)
    raw = np.asarray(Image.open(uri)).astype(np.int64)
    coco = get_preset("coco")
    remap = load_label_remap({0: 156, 3: 148, 8: 2}, unmapped="dontcare")  # sky-other, road, car
    mapped = read_label_map(str(uri), coco, remap=remap)
    expected = np.select([raw == 0, raw == 3, raw == 8], [156, 148, 2], coco.label_nc)  # the rest -> 182 (dontcare)
    np.testing.assert_array_equal(mapped, expected)
    with pytest.raises(InputError, match=r"label id\(s\) 1, 2, 4, 5, .* are not in dataset.label_remap"):
        read_label_map(str(uri), coco, remap=remap.with_unmapped("error"))


# ------------------------------------------------------------------------------------------ the pipeline


def test_camvid_maps_drive_the_cityscapes_generator_and_label_uri_keeps_camvid_ids(tmp_path, monkeypatch):
    import torch

    from spadepis.models.spade import to_uint8

    torch.set_num_threads(1)
    uris = _camvid_labels(2)
    cfg = _cfg(tmp_path, str(uris[0].parent), limit=2)
    seen, real = _spy_on_generator(cfg, monkeypatch)
    df = _run(cfg)
    assert len(df) == 2 and (df.status == "ok").all(), df.error.tolist()
    assert set(df.label_remap) == {"camvid->cityscapes"} and df.instance_uri.isna().all()
    (batch,) = seen
    assert batch.shape == (2, 256, 512)

    lut = np.zeros(256, np.int64)
    for s, t in CAMVID_TO_CITY.items():
        lut[s] = t
    expected_images = []
    for i, uri in enumerate(uris):
        row = df[df.source_id == uri.stem].iloc[0]
        original = Image.open(uri)
        resized = np.asarray(original.resize((512, 256), Image.NEAREST)).astype(np.int64)
        # label_uri: the CamVid ids themselves, resized to the output size (pixel-aligned), not the mapped ids
        written = Image.open(row.label_uri)
        assert written.size == (row.width, row.height) == (512, 256) and written.mode == original.mode
        np.testing.assert_array_equal(np.asarray(written), resized)
        assert set(np.unique(resized)) <= set(CAMVID_TO_CITY) and np.asarray(written).max() <= 11
        # the generator got the mapped map, pixel for pixel
        np.testing.assert_array_equal(batch[i], lut[resized])
        # its one-hot input: at one pixel of every CamVid class, the channel of the Cityscapes id is set
        sem = build_semantics(torch.from_numpy(batch[i]), None, CITY)[0]
        assert sem.shape == (CITY.semantic_nc, 256, 512)
        for cls in np.unique(resized).tolist():
            ys, xs = np.nonzero(resized == cls)
            y, x = int(ys[len(ys) // 2]), int(xs[len(xs) // 2])
            hot = torch.nonzero(sem[: CITY.num_label_channels, y, x]).flatten().tolist()
            assert hot == [CAMVID_TO_CITY[cls]], (uri.stem, cls, (y, x), hot)
        expected_images.append(lut[resized])
        assert np.asarray(Image.open(row.image_uri)).shape[:2] == (256, 512)
    # and the synthesized images are the generator's outputs for the mapped maps (same batch, same numerics)
    for uri, image in zip(uris, to_uint8(real(np.stack(expected_images)))):
        synth_png = np.asarray(Image.open(df[df.source_id == uri.stem].iloc[0].synth_uri))
        np.testing.assert_array_equal(synth_png, image)


def test_unmapped_ids_make_error_rows_and_spare_the_other_maps(tmp_path):
    (uri,) = _camvid_labels(1)
    labels = tmp_path / "labels"
    labels.mkdir()
    raw = np.asarray(Image.open(uri))
    Image.fromarray(raw).save(labels / "a_with_void.png")
    Image.fromarray(np.where(raw == 11, 3, raw).astype(np.uint8)).save(labels / "b_without_void.png")
    partial = {k: v for k, v in CAMVID_TO_CITY.items() if k != 11}
    cfg = _cfg(tmp_path, str(labels), label_remap=partial, unmapped="error")
    df = _run(cfg).set_index("source_id")
    bad, good = df.loc["a_with_void"], df.loc["b_without_void"]
    assert bad.status == "error" and good.status == "ok"
    ys, xs = np.nonzero(raw == 11)
    assert f"label id(s) 11 (first at pixel y={ys[0]}, x={xs[0]}) are not in dataset.label_remap (inline:" in bad.error
    assert "set dataset.unmapped: dontcare" in bad.error
    assert good.label_remap == bad.label_remap == load_label_remap(partial).label


def test_check_reports_the_ids_of_the_camvid_config(tmp_path, capsys, monkeypatch):
    from spadepis.cli import main

    shared_path("data", "camvid", "val_label")
    if not (ROOT.parent / "shared" / "data" / "camvid").exists():
        pytest.skip(f"configs/camvid-cityscapes.yaml reads ../shared; {ROOT.parent / 'shared'} is absent")
    monkeypatch.chdir(ROOT)
    args = ["check", "configs/camvid-cityscapes.yaml", "--set", "models.synth_checkpoint=random-init",
            "--set", "dataset.limit=4", "--set", f"output={tmp_path / 'runs'}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "label remap camvid->cityscapes -> preset cityscapes (unmapped: error): ids found in 4 of 4 label map(s)" in out
    for line in ("0 sky -> 23 sky", "4 pavement -> 8 sidewalk", "10 bicyclist -> 25 rider", "11 void -> 0 unlabeled"):
        assert line in out
    assert "unmapped: none" in out and "4 sources, 31 styles, 8 outputs" in out


def test_a_map_already_at_the_output_size_is_named_as_it_is(tmp_path):
    (uri,) = _camvid_labels(1)
    labels = tmp_path / "labels"
    labels.mkdir()
    at_size = Image.open(uri).resize((512, 256), Image.NEAREST)  # CamVid ids at the generator's size
    at_size.save(labels / "sized.png")
    df = _run(_cfg(tmp_path, str(labels)))
    assert (df.status == "ok").all(), df.error.tolist()
    assert set(df.label_uri) == {str(labels / "sized.png")}  # no copy: the dataset's own file, CamVid ids
    assert not (tmp_path / "runs" / "remap" / "labels").exists()
    assert (df.width == 512).all() and (df.height == 256).all() and set(df.label_remap) == {"camvid->cityscapes"}


def test_unmapped_dontcare_reaches_the_generator_as_the_dontcare_channel(tmp_path, monkeypatch):
    import torch


    torch.set_num_threads(1)
    (uri,) = _camvid_labels(1)
    coco = get_preset("coco")
    table = {0: 156, 3: 148, 8: 2}  # sky-other, road, car: the other CamVid ids are unmapped
    cfg = _cfg(tmp_path, str(uri.parent), limit=1, preset="coco", label_remap=table, unmapped="dontcare")
    seen, real = _spy_on_generator(cfg, monkeypatch)
    df = _run(cfg)
    assert (df.status == "ok").all(), df.error.tolist()
    resized = np.asarray(Image.open(uri).resize((256, 256), Image.NEAREST)).astype(np.int64)
    sem = build_semantics(torch.from_numpy(seen[0]), None, coco)[0]
    for cls in np.unique(resized).tolist():
        ys, xs = np.nonzero(resized == cls)
        y, x = int(ys[0]), int(xs[0])
        hot = torch.nonzero(sem[: coco.num_label_channels, y, x]).flatten().tolist()
        assert hot == [table.get(cls, coco.label_nc)], (cls, hot)  # unmapped -> channel 182 (coco's dontcare)
    np.testing.assert_array_equal(np.asarray(Image.open(df.label_uri.iloc[0])), resized)  # CamVid ids kept


def test_style_label_maps_stay_in_the_dataset_ids_for_selection_and_label_aware_transfer(tmp_path, monkeypatch):
    """CamVid train photos + their CamVid label maps as a semantic style pool of a remapped run: the selection
    scores and the label-aware transfer compare CamVid ids with CamVid ids; only SPADE sees Cityscapes ids."""
    import torch

    from spadepis.pipeline.model_cache import get_stylizer

    torch.set_num_threads(1)
    uris = _camvid_labels(2)
    train = shared_path("data", "camvid", "train_label")
    cfg = _cfg(tmp_path, str(uris[0].parent), limit=2)
    data = cfg.model_dump(mode="json")
    data["styles"].update(labels=str(train / "0001TP_0067*.png"), select="semantic", per_sample=1, top_m=1,
                          ignore_labels=[11])
    cfg = parse_config(data)
    stylizer = get_stylizer(cfg, torch.device("cpu"))
    segs: list[np.ndarray] = []
    real = stylizer.stylize_with_numerics

    def spy(content, cache, seg=None, **kw):  # records the content label map the transfer gets, then runs it
        segs.append(None if seg is None else np.asarray(seg))
        return real(content, cache, seg, **kw)

    monkeypatch.setattr(stylizer, "stylize_with_numerics", spy)
    df = _run(cfg)
    assert (df.status == "ok").all(), df.error.tolist()
    assert df.style_score.notna().all() and df.q_coverage.notna().all() and (df.style_rank == 0).all()
    assert df.q_coverage.min() > 0.5  # CamVid classes of the content found in the CamVid style maps
    resized = {np.asarray(Image.open(u).resize((512, 256), Image.NEAREST)).tobytes() for u in uris}
    assert len(segs) == 2 and all(s is not None and s.max() <= 11 and s.tobytes() in resized
                                  for s in (seg.astype(np.uint8) for seg in segs))


def test_the_dataset_label_space_covers_the_table_and_with_dontcare_every_8_bit_id():
    assert load_label_remap("camvid->cityscapes").source_preset().label_nc == 12
    assert load_label_remap("cityscapes_trainid->cityscapes").source_preset().label_nc == 256
    dc = load_label_remap({0: 156, 3: 148}, unmapped="dontcare").source_preset()
    assert dc.label_nc == 256 and not dc.contain_dontcare_label
