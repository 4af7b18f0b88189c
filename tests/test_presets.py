"""The preset records (``spadepis.data.presets``): each official preset's checkpoint record is recounted
against the generator built on the meta device (torchvision's num_params test) and, where ../shared is
present, against the official key listing; the class names line up with the label channels."""

from __future__ import annotations

import json
from math import prod

import pytest
import torch

from conftest import shared_path
from spadepis.data.presets import PRESETS, get_preset
from spadepis.errors import ConfigError
from spadepis.models.spade import SPADEGenerator, expected_state_dict_shapes

OFFICIAL = [name for name, p in PRESETS.items() if p.checkpoint is not None]


def test_every_dataset_preset_has_a_record():
    assert OFFICIAL == ["coco", "ade20k", "cityscapes"]
    custom = PRESETS["custom"]
    assert custom.checkpoint is None and custom.categories == ()


@pytest.mark.parametrize("name", ["coco", "ade20k", "cityscapes"])
def test_record_recounted_on_the_meta_device(name):
    preset = PRESETS[name]
    record = preset.checkpoint
    with torch.device("meta"):
        gen = SPADEGenerator.from_preset(preset)
    assert sum(p.numel() for p in gen.parameters()) == record.num_params
    shapes = expected_state_dict_shapes(preset)
    assert len(shapes) == record.num_keys
    for key, shape in record.key_shapes:
        assert shapes[key] == shape, key
    assert record.shape("fc.weight") == (16 * preset.ngf, preset.semantic_nc, 3, 3)
    assert record.path == f"{name}_pretrained/latest_net_G.pth"


@pytest.mark.shared
@pytest.mark.parametrize("name", ["coco", "ade20k", "cityscapes"])
def test_record_matches_the_official_key_listing(name):
    spec = json.loads(shared_path("reference", "spade", "keys_and_shapes.json").read_text())[f"{name}_pretrained"]
    record = PRESETS[name].checkpoint
    official = {k: tuple(s) for k, s, _ in spec["keys"]}
    assert len(official) == record.num_keys
    assert all(official[k] == s for k, s in record.key_shapes)
    buffers = ("weight_u", "weight_v", "running_mean", "running_var", "num_batches_tracked")
    assert sum(prod(s) for k, s in official.items() if not k.endswith(buffers)) == record.num_params


def test_class_names_line_up_with_the_label_channels():
    coco, ade, city = PRESETS["coco"].categories, PRESETS["ade20k"].categories, PRESETS["cityscapes"].categories
    assert (len(coco), len(ade), len(city)) == (183, 151, 35)
    for preset in (PRESETS[n] for n in OFFICIAL):
        assert len(preset.categories) == preset.num_label_channels
        assert len(set(preset.categories)) == len(preset.categories)
    # COCO-Stuff id - 1 = channel; 255 -> dontcare channel 182
    assert (coco[0], coco[11], coco[90], coco[91], coco[181], coco[182]) == (
        "person", "street sign", "hair brush", "banner", "wood", "unlabeled")
    # ADE20K raw values: 0 = other, 3 = sky, 150 = flag
    assert (ade[0], ade[1], ade[3], ade[150]) == ("other", "wall", "sky", "flag")
    assert (city[7], city[24], city[26], city[33], city[34]) == ("road", "person", "car", "bicycle", "license plate")


def test_overrides_drop_the_records_they_invalidate():
    same = get_preset("coco", ngf=64, crop_size=64)
    assert same.checkpoint is PRESETS["coco"].checkpoint and same.categories == PRESETS["coco"].categories
    wider = get_preset("coco", ngf=32)
    assert wider.checkpoint is None and wider.categories == PRESETS["coco"].categories
    relabelled = get_preset("ade20k", label_nc=20)
    assert relabelled.checkpoint is None and relabelled.categories == ()
    assert get_preset("ade20k", num_upsampling_layers="most").checkpoint is None
    with pytest.raises(ConfigError, match="unknown preset field"):
        get_preset("coco", categories=("a",))
