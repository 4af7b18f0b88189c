"""Label/instance loading, presets, palettes and generator inputs (no ../shared needed)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from spadepis.errors import ConfigError, InputError
from spadepis.data.labelmaps import (
    build_semantics,
    instance_edges,
    load_instance_map,
    load_label_and_instance,
    load_label_map,
    load_palette,
    read_label_map,
    resize_nearest,
)
from spadepis.data.presets import PRESETS, get_preset


def _png(path, arr, mode=None):
    Image.fromarray(arr, mode=mode).save(path)
    return path


def test_presets_match_official_options():
    assert PRESETS["coco"].semantic_nc == 184 and PRESETS["coco"].label_size == (256, 256)
    assert PRESETS["ade20k"].semantic_nc == 151 and PRESETS["ade20k"].no_instance
    city = PRESETS["cityscapes"]
    assert city.semantic_nc == 36 and city.label_size == (256, 512) and city.num_upsampling_layers == "more"
    assert city.latent_size == (4, 8) and city.output_size == (256, 512)
    custom = get_preset("custom", label_nc=20, contain_dontcare_label=True, no_instance=False, crop_size=128)
    assert custom.semantic_nc == 22 and custom.label_size == (128, 128)
    assert get_preset("coco", ngf=None) is PRESETS["coco"]


@pytest.mark.parametrize(
    "name, kw, match",
    [
        ("nope", {}, "unknown preset 'nope'"),
        ("coco", {"colour": 1}, "unknown preset field"),
        ("coco", {"crop_size": 100}, "multiple of 32"),
        ("coco", {"num_upsampling_layers": "many"}, "normal, more, most"),
        ("custom", {"label_nc": 0}, "label_nc=0"),
        ("custom", {"aspect_ratio": 3.0}, "differs from the label size"),
    ],
)
def test_bad_presets(name, kw, match):
    with pytest.raises(ConfigError, match=match):
        get_preset(name, **kw)


def test_png_loading_resizes_like_pil_and_maps_dontcare(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 182, (37, 53)).astype(np.uint8)
    arr[0, 0] = 255
    path = _png(tmp_path / "lab.png", arr)
    out = load_label_map(path, PRESETS["coco"])
    expected = np.asarray(Image.fromarray(arr).resize((256, 256), Image.NEAREST)).astype(np.int64)
    expected[expected == 255] = 182
    assert out.dtype == np.int64 and out.shape == (256, 256)
    np.testing.assert_array_equal(out, expected)
    # numpy input gives the same map
    np.testing.assert_array_equal(load_label_map(arr, PRESETS["coco"]), expected)


def test_resize_nearest_matches_pil_for_many_sizes():
    rng = np.random.default_rng(1)
    for _ in range(10):
        h0, w0, h, w = rng.integers(3, 300, 4)
        a = rng.integers(0, 256, (h0, w0)).astype(np.uint8)
        ref = np.asarray(Image.fromarray(a).resize((int(w), int(h)), Image.NEAREST))
        np.testing.assert_array_equal(resize_nearest(a.astype(np.int64), (h, w)), ref)


def test_ade20k_values_are_used_raw(tmp_path):
    arr = np.array([[0, 1, 150], [149, 3, 0]], dtype=np.uint8)
    out = read_label_map(_png(tmp_path / "ade.png", arr), PRESETS["ade20k"])
    np.testing.assert_array_equal(out, arr.astype(np.int64))


def test_label_out_of_range_names_file_value_and_range(tmp_path):
    arr = np.zeros((8, 8), np.uint8)
    arr[2, 5] = 200
    path = _png(tmp_path / "bad.png", arr)
    with pytest.raises(InputError) as exc:
        load_label_map(path, PRESETS["coco"])
    msg = str(exc.value)
    assert "bad.png" in msg and "200" in msg and "valid ids are 0..182 and 255" in msg and "(y=2, x=5)" in msg
    # 255 is not a dontcare value for cityscapes
    arr[2, 5] = 255
    with pytest.raises(InputError, match=r"255 .*0\.\.34"):
        load_label_map(_png(tmp_path / "city.png", arr), PRESETS["cityscapes"])


def test_non_2d_and_colour_maps_without_palette_are_refused(tmp_path):
    with pytest.raises(InputError, match="expected a 2-D"):
        load_label_map(np.zeros((2, 3, 4, 5), np.uint8), PRESETS["coco"])
    rgb = _png(tmp_path / "rgb.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(InputError, match="rgb.png.*colour.*palette"):
        load_label_map(rgb, PRESETS["coco"])
    with pytest.raises(InputError, match="non-integer"):
        load_label_map(np.full((4, 4), 0.5), PRESETS["coco"])


def test_unreadable_truncated_and_missing_files(tmp_path):
    arr = np.random.default_rng(0).integers(0, 100, (64, 64)).astype(np.uint8)
    good = _png(tmp_path / "good.png", arr)
    data = good.read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    for name in ("trunc.png", "junk.png", "missing.png"):
        with pytest.raises(InputError, match=name):
            load_label_map(tmp_path / name, PRESETS["coco"])


def test_palette_text_and_json(tmp_path):
    (tmp_path / "pal.txt").write_text("# id r g b name\n0 0 0 0 background\n1 255 0 0 road\n2 0 255 0\n")
    (tmp_path / "pal.json").write_text(json.dumps({"0": [0, 0, 0], "1": [255, 0, 0], "2": [0, 255, 0]}))
    rgb = np.zeros((6, 6, 3), np.uint8)
    rgb[:3, :, 0] = 255
    rgb[4:, 2:, 1] = 255
    path = _png(tmp_path / "colour.png", rgb)
    preset = get_preset("custom", label_nc=3, crop_size=32)
    expected = np.zeros((6, 6), np.int64)
    expected[:3] = 1
    expected[4:, 2:] = 2
    for pal in ("pal.txt", "pal.json"):
        np.testing.assert_array_equal(read_label_map(path, preset, palette=tmp_path / pal), expected)
    rgb[5, 5] = (1, 2, 3)
    with pytest.raises(InputError, match=r"colour \(1, 2, 3\) at pixel \(y=5, x=5\) is not in palette"):
        read_label_map(_png(tmp_path / "c2.png", rgb), preset, palette=tmp_path / "pal.txt")
    (tmp_path / "badpal.txt").write_text("1 2 three 4\n")
    with pytest.raises(InputError, match="badpal.txt:1"):
        load_palette(tmp_path / "badpal.txt")


def test_instance_maps_16bit_and_size_mismatch(tmp_path):
    inst = np.full((20, 40), 7, np.uint16)
    inst[5:10, 5:30] = 26001  # cityscapes convention: labelId*1000 + k (>= 32768 wraps in int16)
    inst[12:, :] = 33000
    Image.fromarray(inst).save(tmp_path / "inst.png")
    preset = get_preset("cityscapes")
    out = load_instance_map(tmp_path / "inst.png", preset)
    assert out.shape == (256, 512) and out.max() == 33000 and set(np.unique(out)) == {7, 26001, 33000}
    with pytest.raises(InputError, match="inst.png: instance map is 40x20.*label map is 30x20"):
        load_instance_map(tmp_path / "inst.png", preset, label_shape=(20, 30))
    lab = _png(tmp_path / "lab.png", np.zeros((21, 40), np.uint8))
    with pytest.raises(InputError, match="same size"):
        load_label_and_instance(lab, tmp_path / "inst.png", preset)


def test_instance_edges_four_neighbour_rule():
    inst = torch.tensor([[[0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0], [2, 2, 2, 2]]])
    expected = torch.tensor([[[0, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]]], dtype=torch.float32)
    np.testing.assert_array_equal(instance_edges(inst)[:, 0].numpy(), expected.numpy())
    # diagonal neighbours do not count
    diag = torch.tensor([[[1, 0], [0, 1]]])
    assert instance_edges(diag).sum() == 4
    flat = torch.zeros(1, 1, 3, 3, dtype=torch.long)
    assert instance_edges(flat).sum() == 0


def test_build_semantics_one_hot_and_edges_last():
    preset = get_preset("custom", label_nc=4, contain_dontcare_label=True, no_instance=False, crop_size=32)
    labels = torch.tensor([[[0, 1], [4, 3]]])
    inst = torch.tensor([[[5, 5], [5, 6]]])
    sem = build_semantics(labels, inst, preset)
    assert sem.shape == (1, 6, 2, 2) and sem.dtype == torch.float32
    np.testing.assert_array_equal(sem[0, :5].argmax(0).numpy(), labels[0].numpy())
    assert sem[0, :5].sum(0).eq(1).all()
    np.testing.assert_array_equal(sem[0, 5].numpy(), [[0, 1], [1, 1]])
    # no instance map: the label boundaries are used
    np.testing.assert_array_equal(build_semantics(labels, None, preset)[0, 5].numpy(), [[1, 1], [1, 1]])
    with pytest.raises(InputError, match="label id 5 .*0..4"):
        build_semantics(torch.tensor([[[5]]]), None, preset)
    with pytest.raises(InputError, match="label id -1"):
        build_semantics(torch.tensor([[[-1]]]), None, preset)


def test_grey_plus_alpha_label_map_uses_the_id_channel(tmp_path):
    ids = (np.arange(32 * 32).reshape(32, 32) % 150).astype(np.uint8)
    la = np.stack([ids, np.full_like(ids, 255)], axis=-1)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    preset = get_preset("ade20k", crop_size=32)
    np.testing.assert_array_equal(load_label_map(tmp_path / "la.png", preset), ids.astype(np.int64))


def test_as_id_map_is_the_one_coercion():
    from spadepis.data.labelmaps import as_id_map

    ids = np.array([[0, 1], [2, 3]])
    for source in (ids.astype(np.uint16), ids.astype(np.float32), torch.from_numpy(ids)[None], ids.astype(bool)):
        out = as_id_map(source, "map")
        assert out.dtype == np.int64 and out.shape == (2, 2)
    np.testing.assert_array_equal(as_id_map(ids.astype(np.float64), "map"), ids)
    with pytest.raises(InputError, match=r"seg: holds non-integer values"):
        as_id_map(np.full((2, 2), np.nan), "seg:")
    with pytest.raises(InputError, match=r"m has dtype <U1"):
        as_id_map(np.array([["a"]]), "m")
    with pytest.raises(InputError, match=r"m is empty"):
        as_id_map(np.zeros((0, 3), np.int64), "m")
    with pytest.raises(InputError, match=r"expected a 2-D integer label map \(H, W\) of ids; use ids"):
        as_id_map(np.zeros((2, 2, 3), np.int64), "m", hint="; use ids")
    # instance maps get the same coercion (integral floats were refused before)
    inst = load_instance_map(np.array([[1.0, 2.0], [2.0, 2.0]]), get_preset("coco", crop_size=32))
    assert inst.dtype == np.int64 and inst.shape == (32, 32)


def test_resized_label_png_keeps_mode_and_matches_resize_nearest(tmp_path):
    from spadepis.data.labelmaps import resized_label_png

    ids = np.random.default_rng(1).integers(0, 30, (13, 17)).astype(np.uint8)
    img = Image.fromarray(ids, mode="L").convert("P")
    img.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
    img.save(tmp_path / "lab.png")
    assert resized_label_png(tmp_path / "lab.png", (13, 17)) is None
    out = Image.open(io.BytesIO(resized_label_png(tmp_path / "lab.png", (40, 25))))
    assert out.mode == "P" and out.size == (25, 40) and out.getpalette()[:6] == [0, 255, 0, 1, 254, 0]
    np.testing.assert_array_equal(np.asarray(out), resize_nearest(ids.astype(np.int64), (40, 25)))
