"""Parity with the official NVlabs/SPADE code on the ../shared/reference/spade fixtures.

The fixtures were produced by running the official test code (random weights in the official checkpoint
format); see ../shared/reference/README.md section 1. Checked per case: the loader tensors (label and
instance maps after the official transforms), the generator input (one-hot + edges) exactly, and the
generator output within 1e-4 max abs, for the fast path and the straightforward path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import shared_path
from spadepis.data.labelmaps import build_semantics, load_label_and_instance
from spadepis.data.presets import get_preset
from spadepis.models.spade import expected_state_dict_shapes, load_synthesizer

# case -> (preset, overrides, label glob, instance glob); the official batch order is the natural sort of paths
CASES = {
    "coco": ("coco", {}, "inputs/val_label/*.png", "inputs/val_inst/*.png"),
    "ade20k": ("ade20k", {}, "inputs/annotations/validation/*.png", None),
    "ade20k_more": ("ade20k", {"num_upsampling_layers": "more"}, "inputs/annotations/validation/*.png", None),
    "ade20k_most": ("ade20k", {"num_upsampling_layers": "most"}, "inputs/annotations/validation/*.png", None),
    "cityscapes": ("cityscapes", {"num_upsampling_layers": "normal"}, "inputs/gtFine/val/*/*_labelIds.png",
                   "inputs/gtFine/val/*/*_instanceIds.png"),
}


# SPADEPIS_TEST_DEVICE=cuda runs the generator parity on a GPU (TF32 off: the fixtures are exact fp32).
DEVICE = os.environ.get("SPADEPIS_TEST_DEVICE", "cpu")


@pytest.fixture(scope="module", autouse=True)
def _threads():
    before = torch.get_num_threads()
    torch.set_num_threads(min(2, before))
    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.set_num_threads(before)
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32


def _load_inputs(case: str):
    folder = shared_path("reference", "spade", case)
    name, overrides, lab_glob, inst_glob = CASES[case]
    preset = get_preset(name, **overrides)
    labels = sorted(folder.glob(lab_glob))
    insts = sorted(folder.glob(inst_glob)) if inst_glob else [None] * len(labels)
    assert len(labels) == 2 and len(insts) == 2
    pairs = [load_label_and_instance(lab, inst, preset) for lab, inst in zip(labels, insts)]
    lab = np.stack([p[0] for p in pairs])
    inst = None if pairs[0][1] is None else np.stack([p[1] for p in pairs])
    return folder, preset, lab, inst


@pytest.mark.shared
@pytest.mark.parametrize("case", list(CASES))
def test_loader_and_semantics_exact(case):
    folder, preset, lab, inst = _load_inputs(case)
    ref = np.load(folder / "loader_tensors.npz")
    np.testing.assert_array_equal(lab, ref["label"][:, 0].astype(np.int64))
    if inst is None:
        assert ref["instance"].ndim == 1  # no_instance: the official loader passes 0
    else:
        # Pillow >= 10 opens 16-bit PNGs as I;16 and torchvision wraps them to int16; we keep true ids.
        np.testing.assert_array_equal(inst.astype(np.int16).astype(np.int64), ref["instance"][:, 0])
    sem = build_semantics(torch.from_numpy(lab), None if inst is None else torch.from_numpy(inst), preset)
    expected = np.load(folder / "input_semantics.npz")["input_semantics"]
    assert sem.shape == expected.shape
    np.testing.assert_array_equal(sem.numpy(), expected)


@pytest.mark.shared
@pytest.mark.parametrize("case", list(CASES))
def test_generator_output(case):
    folder, preset, lab, inst = _load_inputs(case)
    name, overrides, _, _ = CASES[case]
    synth = load_synthesizer(folder / "latest_net_G.pth.xz", name, device=DEVICE, **overrides)
    opts = json.loads((folder / "options.json").read_text())
    assert synth.preset.ngf == opts["ngf"] and synth.preset.semantic_nc == opts["semantic_nc"]
    expected = np.load(folder / "output.npy")
    fast = synth.synthesize(lab, inst).numpy()
    assert fast.shape == expected.shape
    assert np.abs(fast - expected).max() < 1e-4, f"{case}: fast path max abs diff {np.abs(fast - expected).max():.2e}"
    if case != "coco":  # the straightforward path is the same code for every case; once is enough
        return
    ref = synth.synthesize_reference(lab, inst).numpy()
    assert np.abs(ref - expected).max() < 1e-4, f"{case}: straightforward path max abs diff {np.abs(ref - expected).max():.2e}"


@pytest.mark.shared
@pytest.mark.parametrize("model", ["coco_pretrained", "ade20k_pretrained", "cityscapes_pretrained"])
def test_full_size_keys_and_shapes(model):
    spec = json.loads(Path(shared_path("reference", "spade", "keys_and_shapes.json")).read_text())[model]
    o = spec["options"]
    preset = get_preset(model.split("_")[0])
    assert (preset.label_nc, preset.contain_dontcare_label, preset.no_instance, preset.semantic_nc) == (
        o["label_nc"], o["contain_dontcare_label"], o["no_instance"], o["semantic_nc"])
    assert (preset.crop_size, preset.aspect_ratio, preset.num_upsampling_layers, preset.preprocess_mode) == (
        o["crop_size"], o["aspect_ratio"], o["num_upsampling_layers"], o["preprocess_mode"])
    assert list(preset.latent_size) == spec["latent_hw"]
    shapes = expected_state_dict_shapes(preset, ngf=o["ngf"])
    official = {k: tuple(s) for k, s, _ in spec["keys"]}
    assert list(shapes) == list(official)  # same keys, same order
    assert shapes == official
    counted = sum(int(np.prod(s)) for k, s in shapes.items() if not k.endswith("num_batches_tracked"))
    assert counted == spec["num_params"]  # parameters + BN running statistics
