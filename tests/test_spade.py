"""SPADE generator, checkpoint loading, fast path and CLI on small seeded models (no ../shared needed)."""

from __future__ import annotations

import copy
import hashlib
import io
import lzma

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from spadepis.cli import main as cli_main
from spadepis.data.labelmaps import build_semantics
from spadepis.data.presets import PRESETS, get_preset
from spadepis.errors import CheckpointError, InputError
from spadepis.models.spade import (
    FastSPADE,
    SPADEGenerator,
    expected_state_dict_shapes,
    load_synthesizer,
    random_synthesizer,
    to_uint8,
)

SMALL = dict(label_nc=6, contain_dontcare_label=True, no_instance=False, crop_size=64)


def _blocky(preset, batch, seed):
    g = torch.Generator().manual_seed(seed)
    h, w = preset.label_size
    coarse = torch.randint(0, preset.num_label_channels, (batch, 1, 6, 5), generator=g).float()
    labels = F.interpolate(coarse, size=(h, w), mode="nearest")[:, 0].long()
    labels[:, h // 3, :] = 0  # thin line
    inst = labels * 10 + (torch.arange(w) > w // 2).long()
    return labels, inst


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small models run fastest single-threaded (and do not fight other test processes for cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small():
    preset = get_preset("custom", **SMALL)
    return random_synthesizer(preset, ngf=8, seed=3, device="cpu")


def _save(sd, path, legacy: bool):
    torch.save(sd, path, _use_new_zipfile_serialization=not legacy)
    return path


def test_full_size_key_count_on_meta():
    for name, n in (("coco", 234), ("ade20k", 234), ("cityscapes", 234)):
        shapes = expected_state_dict_shapes(get_preset(name))
        assert len(shapes) == n
        assert shapes["fc.weight"] == (1024, get_preset(name).semantic_nc, 3, 3)
    most = expected_state_dict_shapes(get_preset("ade20k", num_upsampling_layers="most"))
    assert most["up_4.conv_0.weight_orig"] == (32, 64, 3, 3) and most["conv_img.weight"] == (3, 32, 3, 3)


@pytest.mark.parametrize("legacy", [True, False])
def test_round_trip_both_serialisations(small, tmp_path, legacy):
    sd = small.generator.state_dict()
    path = _save(sd, tmp_path / "latest_net_G.pth", legacy)
    loaded = load_synthesizer(path, small.preset.name, device="cpu", **SMALL)
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.preset.ngf == 8  # inferred from the shapes
    sd2 = loaded.generator.state_dict()
    assert list(sd2) == list(sd)
    for k in sd:
        assert sd2[k].shape == sd[k].shape and torch.equal(sd2[k], sd[k]), k
    labels, inst = _blocky(small.preset, 2, 0)
    assert torch.equal(loaded.synthesize(labels, inst), small.synthesize(labels, inst))


def test_xz_and_missing_num_batches_tracked(small, tmp_path):
    sd = {k: v for k, v in small.generator.state_dict().items() if not k.endswith("num_batches_tracked")}
    buf = io.BytesIO()
    torch.save(sd, buf, _use_new_zipfile_serialization=False)
    (tmp_path / "g.pth.xz").write_bytes(lzma.compress(buf.getvalue(), preset=0))
    loaded = load_synthesizer(tmp_path / "g.pth.xz", "custom", device="cpu", **SMALL)
    labels, inst = _blocky(small.preset, 1, 1)
    assert torch.equal(loaded.synthesize(labels, inst), small.synthesize(labels, inst))


def test_most_block_is_inferred(tmp_path):
    preset = get_preset("custom", **{**SMALL, "crop_size": 128, "num_upsampling_layers": "most"})
    synth = random_synthesizer(preset, ngf=4, seed=0, device="cpu")
    path = _save(synth.generator.state_dict(), tmp_path / "most.pth", legacy=False)
    loaded = load_synthesizer(path, "custom", device="cpu", **{**SMALL, "crop_size": 128})
    assert loaded.preset.num_upsampling_layers == "most"


def test_truncated_and_foreign_checkpoints(small, tmp_path):
    path = _save(small.generator.state_dict(), tmp_path / "g.pth", legacy=True)
    data = path.read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="trunc.pth"):
        load_synthesizer(tmp_path / "trunc.pth", "custom", device="cpu", **SMALL)
    torch.save({"layer.weight": torch.zeros(3)}, tmp_path / "d.pth")
    with pytest.raises(CheckpointError, match="does not look like a SPADE generator"):
        load_synthesizer(tmp_path / "d.pth", "custom", device="cpu", **SMALL)


def test_wrong_keys_listed_and_preset_suggested(small, tmp_path):
    sd = dict(small.generator.state_dict())
    sd.pop("up_1.conv_s.weight_orig")
    sd["up_1.conv_s.weight"] = torch.zeros(1)
    path = _save(sd, tmp_path / "g.pth", legacy=False)
    with pytest.raises(CheckpointError) as exc:
        load_synthesizer(path, "custom", device="cpu", **SMALL)
    msg = str(exc.value)
    assert "g.pth" in msg and "1 missing keys: up_1.conv_s.weight_orig" in msg
    assert "1 unexpected keys: up_1.conv_s.weight" in msg
    # a model built for COCO's 184 input channels, loaded with the wrong preset
    coco_small = get_preset("coco", crop_size=64)
    gen = random_synthesizer(coco_small, ngf=2, seed=0, device="cpu").generator
    path = _save(gen.state_dict(), tmp_path / "coco.pth", legacy=True)
    with pytest.raises(CheckpointError) as exc:
        load_synthesizer(path, "ade20k", device="cpu", crop_size=64)
    msg = str(exc.value)
    assert "shape mismatches" in msg and "fc.weight: file (32, 184, 3, 3) vs model (32, 151, 3, 3)" in msg
    assert "matches preset 'coco'; use --preset coco --ngf 2" in msg
    with pytest.raises(CheckpointError, match="ngf=2"):
        load_synthesizer(path, "coco", ngf=4, device="cpu", crop_size=64)


@pytest.mark.parametrize("threshold", [0.55, 0.0, 2.0])
def test_fast_path_matches_straightforward(small, threshold):
    labels, inst = _blocky(small.preset, 3, 5)
    ref = small.synthesize_reference(labels, inst)
    fast = FastSPADE(small.generator, small.preset.num_label_channels, True, dense_threshold=threshold)
    out = fast(labels, inst)
    assert out.shape == ref.shape == (3, 3, 64, 64)
    assert (out - ref).abs().max().item() < 1e-4
    assert ref.std() > 0.1  # the random model is not degenerate


def test_fast_path_without_instances_and_wide_aspect():
    preset = get_preset("custom", label_nc=5, crop_size=128, aspect_ratio=2.0, preprocess_mode="fixed")
    synth = random_synthesizer(preset, ngf=4, seed=1, device="cpu")
    labels, _ = _blocky(preset, 2, 2)
    labels = labels.clamp(max=4)
    out = synth.synthesize(labels)
    assert out.shape == (2, 3, 64, 128)
    ref = synth.synthesize_reference(labels)
    # float64 truth: the fast path is as accurate as the straightforward float32 forward
    gen64 = copy.deepcopy(synth.generator).double()
    with torch.no_grad():
        truth = gen64(build_semantics(labels, None, preset).double()).float()
    err_ref = (ref - truth).abs().max().item()
    assert (out - truth).abs().max().item() <= 2 * err_ref + 1e-5
    assert (out - ref).abs().max().item() < 1e-3


def test_synthesizer_refuses_bad_inputs(small):
    with pytest.raises(InputError, match=r"size \(32, 32\).*expected \(64, 64\)"):
        small.synthesize(np.zeros((1, 32, 32), np.int64))
    bad = np.zeros((1, 64, 64), np.int64)
    bad[0, 3, 4] = 7
    with pytest.raises(InputError, match=r"label id 7 at \(batch, y, x\) = \(0, 3, 4\).*0..6"):
        small.synthesize(bad)
    with pytest.raises(InputError, match="instance maps have shape"):
        small.synthesize(np.zeros((1, 64, 64), np.int64), np.zeros((2, 64, 64), np.int64))


def test_random_synthesizer_is_seeded(small):
    again = random_synthesizer(small.preset, ngf=8, seed=3, device="cpu")
    assert again.sha256 == small.sha256 and "random-init" in again.model_name
    assert random_synthesizer(small.preset, ngf=8, seed=4, device="cpu").sha256 != small.sha256


def test_to_uint8_truncates_like_tensor2im():
    x = torch.tensor([-1.0, -0.999, 0.0, 0.999, 1.0, 1.5]).view(1, 3, 1, 2)
    out = to_uint8(x)
    assert out.shape == (1, 1, 2, 3) and out.dtype == np.uint8
    # channel 0: -1, -0.999 -> 0, 0 (0.13 truncated); channel 1: 0, 0.999 -> 127 (127.5), 254 (254.87); channel 2 clipped
    np.testing.assert_array_equal(out[0, 0].T, [[0, 0], [127, 254], [255, 255]])


def test_generator_forward_shapes():
    with torch.device("meta"):
        g = SPADEGenerator(36, ngf=64, num_upsampling_layers="more", crop_size=512, aspect_ratio=2.0)
    assert (g.sh, g.sw) == (4, 8)
    assert round(sum(p.numel() for p in g.parameters()) / 1e4) == 9305  # cityscapes_pretrained: 93.05 M (ALGORITHMS.md 1.2)


def test_cli_choices_come_from_the_preset_registry(capsys):
    from spadepis.cli import build_parser
    from spadepis.data.presets import PREPROCESS_MODES, UPSAMPLING_LAYERS

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["synthesize"]
    choices = {a.dest: a.choices for a in sub._actions if a.choices}
    assert choices["preset"] == list(PRESETS) == ["coco", "ade20k", "cityscapes", "custom"]
    assert choices["num_upsampling_layers"] == list(UPSAMPLING_LAYERS) == ["normal", "more", "most"]
    assert choices["preprocess_mode"] == list(PREPROCESS_MODES) == ["resize_and_crop", "fixed"]
    with pytest.raises(SystemExit):
        cli_main(["synthesize", "--checkpoint", "x.pth", "--label", "a.png", "--out", "b.png", "--preset", "kitti"])
    err = capsys.readouterr().err
    assert "--preset" in err and "kitti" in err and "coco" in err and "cityscapes" in err, err


def test_cli_single_and_batch(small, tmp_path, capsys):
    ckpt = _save(small.generator.state_dict(), tmp_path / "latest_net_G.pth", legacy=True)
    (tmp_path / "labels").mkdir()
    (tmp_path / "inst").mkdir()
    for i in range(3):
        labels, inst = _blocky(small.preset, 1, 10 + i)
        lab = labels[0].numpy().astype(np.uint8)
        Image.fromarray(lab).save(tmp_path / "labels" / f"m{i}.png")
        Image.fromarray(inst[0].numpy().astype(np.uint8)).save(tmp_path / "inst" / f"m{i}.png")
    opts = ["--preset", "custom", "--label-nc", "6", "--dontcare", "--use-instance", "--crop-size", "64", "--device", "cpu"]
    rc = cli_main(["synthesize", "--checkpoint", str(ckpt), *opts, "--label", str(tmp_path / "labels" / "m0.png"),
                   "--instance", str(tmp_path / "inst" / "m0.png"), "--out", str(tmp_path / "o.png"),
                   "--raw", str(tmp_path / "o.npy")])
    assert rc == 0
    raw = np.load(tmp_path / "o.npy")
    assert raw.shape == (3, 64, 64) and raw.dtype == np.float32 and -1 <= raw.min() and raw.max() <= 1
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o.png")), to_uint8(torch.from_numpy(raw))[0])
    rc = cli_main(["synthesize", "--checkpoint", str(ckpt), *opts, "--label-dir", str(tmp_path / "labels"),
                   "--instance-dir", str(tmp_path / "inst"), "--out-dir", str(tmp_path / "out"), "--batch-size", "2"])
    assert rc == 0 and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["m0.png", "m1.png", "m2.png"]
    rc = cli_main(["synthesize", "--checkpoint", str(ckpt), "--preset", "ade20k", "--label",
                   str(tmp_path / "labels" / "m0.png"), "--out", str(tmp_path / "x.png")])
    assert rc == 1 and "does not fit" in capsys.readouterr().err
