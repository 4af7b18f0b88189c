"""PhotoWCT network: official key layout, odd sizes, checkpoint errors, parity with FastPhotoStyle.

Parity fixtures (../shared/reference/photowct) were produced by the official FastPhotoStyle code with
random weights; the metrics are those its README recommends (the pipeline is discontinuous at max-unpool
ties, so end to end is compared with percentiles, not max-abs).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from spadepis.models import wct
from spadepis.models.checkpoints import read_checkpoint
from spadepis.errors import CheckpointError
from spadepis.models.photowct import PHOTOWCT_WIDTHS, PhotoWCT, load_photowct
from tests.conftest import shared_path

# Key list from ALGORITHMS.md 2.1: eK.conv0, eK.conv1_1, [e>=2: conv1_2, conv2_1], [e>=3: conv2_2, conv3_1],
# [e4: conv3_2, conv3_3, conv3_4, conv4_1]; dK.conv1_1, [d>=2: conv2_1, conv1_2], ...
_ENC = {1: ["conv0", "conv1_1"], 2: ["conv1_2", "conv2_1"], 3: ["conv2_2", "conv3_1"], 4: ["conv3_2", "conv3_3", "conv3_4", "conv4_1"]}
_DEC = {1: ["conv1_1"], 2: ["conv2_1", "conv1_2"], 3: ["conv3_1", "conv2_2"], 4: ["conv4_1", "conv3_4", "conv3_3", "conv3_2"]}


def _official_keys() -> set[str]:
    keys = set()
    for level in (1, 2, 3, 4):
        enc = [n for lv in range(1, level + 1) for n in _ENC[lv]]
        dec = [n for lv in range(1, level + 1) for n in _DEC[lv]]
        for prefix, names in (("e", enc), ("d", dec)):
            for n in names:
                keys |= {f"{prefix}{level}.{n}.weight", f"{prefix}{level}.{n}.bias"}
    return keys


SMALL = {"1_1": 4, "1_2": 4, "2_1": 6, "2_2": 6, "3_1": 8, "3_2": 8, "3_3": 8, "3_4": 8, "4_1": 10}


def test_full_size_keys_and_shapes_match_the_official_layout():
    with torch.device("meta"):
        model = PhotoWCT()
    sd = model.state_dict()
    assert set(sd) == _official_keys() and len(sd) == 80
    assert sd["e4.conv4_1.weight"].shape == (512, 256, 3, 3)
    assert sd["d4.conv4_1.weight"].shape == (256, 512, 3, 3)
    assert sd["d1.conv1_1.weight"].shape == (3, 64, 3, 3)
    assert sd["e2.conv0.weight"].shape == (3, 3, 1, 1)
    n_params = sum(v.numel() for v in sd.values())
    assert 8.3e6 < n_params < 8.4e6  # ~8.35 M (ALGORITHMS.md 2.1)
    assert PHOTOWCT_WIDTHS["4_1"] == 512


@pytest.mark.parametrize("legacy", [True, False])
def test_seeded_checkpoint_round_trip(tmp_path, legacy):
    torch.manual_seed(0)
    model = PhotoWCT()
    path = tmp_path / "photo_wct.pth"
    torch.save(model.state_dict(), path, _use_new_zipfile_serialization=not legacy)
    loaded, sha = load_photowct(path)
    assert len(sha) == 64
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)
    assert not loaded.training


def test_bad_checkpoints_name_the_problem(tmp_path):
    torch.manual_seed(0)
    sd = PhotoWCT(SMALL).state_dict()  # reduced widths: every shape is wrong
    path = tmp_path / "small.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"shape mismatches.*e1.conv1_1.weight"):
        load_photowct(path)
    full = PhotoWCT().state_dict()
    del full["d4.conv3_2.bias"]
    full["extra.weight"] = torch.zeros(1)
    path2 = tmp_path / "partial.pth"
    torch.save(full, path2)
    with pytest.raises(CheckpointError, match=r"missing keys: d4.conv3_2.bias[\s\S]*unexpected keys: extra.weight"):
        load_photowct(path2)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_photowct(tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        load_photowct(junk)


def test_odd_sizes_round_trip_with_content_indices():
    torch.manual_seed(1)
    model = PhotoWCT(SMALL).eval()
    x = torch.rand(1, 3, 75, 61)
    with torch.no_grad():
        feat, pools = model.encode(4, x)
        assert [tuple(p.size) for p in pools] == [(75, 61), (37, 30), (18, 15)]
        assert feat.shape == (1, 10, 9, 7)
        y = model.decode(4, feat, pools)
        assert y.shape == x.shape
        # every level of the cascade keeps the size (identity "WCT")
        out = model.transform(x, lambda level, f: f)
        assert out.shape == x.shape and torch.isfinite(out).all()
        multi = model.e4.forward_multiple(x)
        assert {k: tuple(v.shape[1:]) for k, v in multi.items()} == {1: (4, 75, 61), 2: (6, 37, 30), 3: (8, 18, 15), 4: (10, 9, 7)}
        torch.testing.assert_close(multi[4], feat)


# --------------------------------------------------------------------------------------------- parity


@pytest.fixture(scope="module")
def reference():
    root = shared_path("reference", "photowct")
    model, sha = load_photowct(root / "photo_wct.pth.xz")
    cases = json.loads((root / "cases.json").read_text())
    assert read_checkpoint(root / "photo_wct.pth.xz").sha256 == sha
    return root, model, cases


def _case(root, name):
    d = root / name
    segs = (None, None)
    if (d / "content_seg.png").exists():
        segs = (np.asarray(Image.open(d / "content_seg.png")), np.asarray(Image.open(d / "style_seg.png")))
    return d, segs


@pytest.mark.parametrize("name", ["nosegm", "segm"])
def test_wct_core_parity(reference, name):
    root, _, _ = reference
    d, (cseg, sseg) = _case(root, name)
    z = np.load(d / "level4_features.npz")
    cf, sf, csf = (torch.from_numpy(z[k]) for k in ("cF4", "sF4", "csF4"))
    scale = float(csf.abs().max())
    out = wct.feature_wct(cf, sf, cseg, sseg, compat="fastphotostyle")
    assert float((out - csf).abs().max()) / scale < 1e-3
    # float64 default: the same up to the reference's float32-SVD noise directions. The style covariance
    # is rank-deficient here (144 style pixels, 512 channels); the reference keeps ~370 noise eigenvalues
    # (1e-4..5e-3) that the float64 rank cut drops, so the difference lies in the style's null space.
    out64 = wct.feature_wct(cf, sf, cseg, sseg)
    rel = float((out64 - csf).abs().max()) / scale
    assert rel < 2e-3
    if name == "segm":
        assert rel < 1e-3
    else:
        s = sf[0].reshape(sf.shape[1], -1).double()
        basis, svals, _ = torch.linalg.svd(s - s.mean(1, keepdim=True), full_matrices=False)
        basis = basis[:, svals > svals[0] * 1e-6]
        diff = (out64 - csf)[0].reshape(csf.shape[1], -1).double()
        in_range = basis @ (basis.T @ diff)
        assert float(in_range.abs().max()) / scale < 2e-4


@pytest.mark.parametrize("name,compat", [("nosegm", "fastphotostyle"), ("segm", "fastphotostyle"), ("segm", None)])
def test_decoder_stage_parity(reference, name, compat):
    """Each level fed the reference's previous stage: e_L -> WCT -> d_L vs the reference's Im_L."""
    root, model, _ = reference
    d, (cseg, sseg) = _case(root, name)
    content = torch.from_numpy(np.load(d / "content_tensor.npy"))
    style = torch.from_numpy(np.load(d / "style_tensor.npy"))
    inter = np.load(d / "intermediates.npz")
    with torch.no_grad():
        feats = model.style_features(style)
        for level, fed in ((4, content), (3, "Im4"), (2, "Im3"), (1, "Im2")):
            x = fed if isinstance(fed, torch.Tensor) else torch.from_numpy(inter[fed])
            stats = wct.style_statistics(feats[level], sseg, compat=compat)
            f, pools = model.encode(level, x)
            out = model.decode(level, wct.apply_wct(f, stats, cseg), pools)
            diff = (out - torch.from_numpy(inter[f"Im{level}"])).abs().flatten()
            assert float(diff.quantile(0.99)) < 1e-3, (level, float(diff.quantile(0.99)))
            assert float(diff.mean()) < 1e-4


@pytest.mark.parametrize("name", ["nosegm", "segm"])
def test_end_to_end_parity(reference, name):
    from spadepis.models.stylizers import NetworkStylizer

    root, model, cases = reference
    d, (cseg, sseg) = _case(root, name)
    stylizer = NetworkStylizer(model, weights_sha256="fixture", device=torch.device("cpu"), compat="fastphotostyle")
    content = np.asarray(Image.open(d / "content.png").convert("RGB"))
    style = np.asarray(Image.open(d / "style.png").convert("RGB"))
    # the images reach the network exactly as the reference's ToTensor did
    np.testing.assert_array_equal(content.transpose(2, 0, 1)[None] / np.float32(255), np.load(d / "content_tensor.npy"))
    raw = stylizer.stylize(content, stylizer.prepare_style(style, sseg), cseg)
    ref = np.load(d / "output_raw.npy")[0]
    assert raw.shape == ref.shape and raw.dtype == np.float32
    diff = np.abs(raw - ref)
    assert np.median(diff) < 1e-3 and np.quantile(diff, 0.99) < 0.05
    assert abs(float(raw.min()) - cases[name]["raw_min"]) < 0.05
