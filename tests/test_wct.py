"""WCT maths without ../shared: statistics, label rules, degenerate regions, sizes, cache reuse."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from spadepis.models import wct
from spadepis.errors import InputError


def _feat(c: int, h: int, w: int, seed: int, scale: float = 50.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(c, c, generator=g, dtype=torch.float64)
    x = mix @ torch.randn(c, h * w, generator=g, dtype=torch.float64) * scale + 10.0
    return x.reshape(c, h, w).to(torch.float32)


def _cov(x: torch.Tensor) -> torch.Tensor:
    x = x.reshape(x.shape[0], -1).double()
    xc = x - x.mean(1, keepdim=True)
    return xc @ xc.T / (x.shape[1] - 1)


def test_resize_label_map_matches_pil_nearest_and_keeps_any_values():
    rng = np.random.default_rng(0)
    seg = rng.integers(0, 7, (37, 53)).astype(np.uint8)
    for h, w in [(9, 13), (37, 53), (80, 11), (1, 1)]:
        expected = np.asarray(Image.fromarray(seg).resize((w, h), Image.NEAREST))
        np.testing.assert_array_equal(wct.resize_label_map(seg, (h, w)), expected)
    big = seg.astype(np.int64) * 1_000_000_007 - 5  # values outside uint8/int32
    out = wct.resize_label_map(big, (9, 13))
    np.testing.assert_array_equal(out, wct.resize_label_map(seg, (9, 13)).astype(np.int64) * 1_000_000_007 - 5)


def test_global_wct_gives_style_mean_and_covariance():
    c = 6
    content, style = _feat(c, 20, 30, 1), _feat(c, 25, 17, 2, scale=20.0)
    out = wct.feature_wct(content, style)
    assert out.shape == content.shape and out.dtype == torch.float32
    sf = style.reshape(c, -1).double()
    np.testing.assert_allclose(out.reshape(c, -1).double().mean(1), sf.mean(1), rtol=1e-4, atol=1e-3)
    # independent numpy check: cov(out) = Cs W Sc W Cs with W = (Sc + I)^-1/2, Cs = Ss^1/2
    sc, ss = _cov(content).numpy(), _cov(style).numpy()
    ec, vc = np.linalg.eigh(sc + np.eye(c))
    es, vs = np.linalg.eigh(ss)
    w = vc @ np.diag(ec**-0.5) @ vc.T
    cs = vs @ np.diag(np.sqrt(es)) @ vs.T
    expected = cs @ w @ sc @ w @ cs
    np.testing.assert_allclose(_cov(out).numpy(), expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())
    # and since the content covariance is >> I, that is close to the style covariance itself
    np.testing.assert_allclose(_cov(out).numpy(), ss, rtol=0.05, atol=0.02 * np.abs(ss).max())


def test_rank_cut_drops_style_null_space_only():
    c = 8
    g = torch.Generator().manual_seed(3)
    low_rank = (torch.randn(c, 2, generator=g) @ torch.randn(2, 40, generator=g) * 30).reshape(c, 5, 8)
    mean, cs = wct.colouring(low_rank.reshape(c, -1), precision="float64")
    evals = torch.linalg.eigvalsh(cs)
    assert int((evals.abs() > 1e-6).sum()) == 2  # only the two real directions survive the 1e-5 cut
    out = wct.feature_wct(_feat(c, 6, 7, 4), low_rank, precision="float64")
    assert torch.isfinite(out).all()
    assert torch.linalg.matrix_rank(_cov(out), tol=1e-3) == 2
    # The reference's float32 SVD (the default) keeps rounding-noise eigenvalues of this rank-2
    # covariance above the 1e-5 cut: more directions, each tiny next to the two real ones.
    _, cs32 = wct.colouring(low_rank.reshape(c, -1))
    e32 = torch.linalg.eigvalsh(cs32).abs()
    assert int((e32 > 1e-6).sum()) > 2
    assert float(e32[:-2].max()) < 1e-3 * float(e32.max())


@pytest.mark.parametrize("compat", [None, "fastphotostyle"])
def test_degenerate_regions_are_finite(compat):
    c = 5
    content, style = _feat(c, 8, 8, 5), _feat(c, 8, 8, 6)
    style[:, 4:, :] = 7.0  # label 2 region of the style is constant
    cseg = np.zeros((8, 8), np.int64)
    cseg[4:, :] = 2
    cseg[0, 0] = 9  # one-pixel label in content ...
    sseg = np.zeros((8, 8), np.int64)
    sseg[4:, :] = 2
    sseg[0, 0] = 9  # ... and style (not used: <= 10 px, so content kept)
    out = wct.feature_wct(content, style, cseg, sseg, compat=compat)
    assert torch.isfinite(out).all()
    # constant style region: the output region is exactly the style's constant
    np.testing.assert_allclose(out[:, 4:, :].numpy(), 7.0, atol=1e-4)
    # unused one-pixel label keeps the content feature
    torch.testing.assert_close(out[:, 0, 0], content[:, 0, 0])
    # one-pixel regions through the core directly (the reference divides by N - 1 = 0 here)
    one = content[:, :1, :1]
    out1 = wct.feature_wct(one, one * 0 + 3.0, compat=compat)
    assert torch.isfinite(out1).all()
    np.testing.assert_allclose(out1.numpy(), 3.0, atol=1e-5)
    mean, w = wct.whitening(one.reshape(c, 1), compat=compat)
    assert torch.isfinite(w).all()


def test_label_rules_and_mismatched_sizes():
    c = 4
    content, style = _feat(c, 12, 16, 7), _feat(c, 7, 23, 8)
    # maps of other sizes than the features (and than each other)
    cseg = np.zeros((120, 160), np.int64)
    cseg[:, 80:] = 1  # label 1: right half
    cseg[:2, :2] = 5  # label 5: 4 px in content (<= 10): never used
    sseg = np.zeros((35, 46), np.int64)
    sseg[:, 23:] = 1
    sseg[:, :3] = 5
    sseg[0, 3] = 3  # label 3 only in style: irrelevant
    out = wct.feature_wct(content, style, cseg, sseg)
    assert out.shape == content.shape and torch.isfinite(out).all()
    small = wct.resize_label_map(cseg, (12, 16))
    for label in (0, 1):
        s_small = wct.resize_label_map(sseg, (7, 23))
        region_out = out[:, torch.from_numpy(small == label)]
        region_style = style[:, torch.from_numpy(s_small == label)]
        np.testing.assert_allclose(region_out.double().mean(1), region_style.double().mean(1), rtol=1e-4, atol=1e-3)

    # a label the style lacks keeps the content features bit for bit
    sseg2 = np.zeros_like(sseg)
    out2 = wct.feature_wct(content, style, cseg, sseg2)
    right = torch.from_numpy(small == 1)
    torch.testing.assert_close(out2[:, right], content[:, right], rtol=0, atol=0)
    # ratio rule: 100x more content than style pixels -> not used
    assert wct.usable_labels({1: 10_000, 2: 50}, {1: 100, 2: 60}) == [2]
    assert wct.usable_labels({1: 9_999}, {1: 100}) == [1]
    assert wct.usable_labels({1: 11}, {1: 10}) == []


def test_one_side_segmentation_is_global():
    content, style = _feat(3, 9, 9, 9), _feat(3, 9, 9, 10)
    seg = np.arange(81).reshape(9, 9) % 2
    ref = wct.feature_wct(content, style)
    torch.testing.assert_close(wct.feature_wct(content, style, seg, None), ref)
    torch.testing.assert_close(wct.feature_wct(content, style, None, seg), ref)


def test_bad_inputs_raise_clear_errors():
    content, style = _feat(3, 4, 4, 11), _feat(3, 4, 4, 12)
    with pytest.raises(InputError, match="2-D integer label map"):
        wct.feature_wct(content, style, np.zeros((4, 4, 3), np.int64), np.zeros((4, 4), np.int64))
    with pytest.raises(InputError, match="non-integer"):
        wct.feature_wct(content, style, np.full((4, 4), 0.5), np.zeros((4, 4), np.int64))
    with pytest.raises(InputError, match="compat"):
        wct.style_statistics(style, compat="torch7")
    stats = wct.style_statistics(_feat(5, 4, 4, 13))
    with pytest.raises(InputError, match="channels"):
        wct.apply_wct(content, stats)


def test_style_statistics_computed_once_and_reused(monkeypatch):
    calls = {"colouring": 0}
    real = wct._colouring

    def counting(*args, **kwargs):
        calls["colouring"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(wct, "_colouring", counting)
    style = _feat(4, 10, 10, 14)
    sseg = np.zeros((10, 10), np.int64)
    sseg[5:] = 1
    stats = wct.style_statistics(style, sseg)
    assert calls["colouring"] == 3  # global + two regions
    contents = [_feat(4, 8, 12, s) for s in (15, 16)]
    cseg = np.zeros((8, 12), np.int64)
    cseg[:, 6:] = 1
    first = [wct.apply_wct(c, stats, cseg) for c in contents]
    again = [wct.apply_wct(c, stats, cseg) for c in contents]
    assert calls["colouring"] == 3  # the content side never recomputes style statistics
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(first[0], wct.feature_wct(contents[0], style, cseg, sseg), rtol=0, atol=0)


def test_compat_agrees_with_float64_on_full_rank_covariances():
    content, style = _feat(16, 20, 20, 17), _feat(16, 18, 22, 18)
    a = wct.feature_wct(content, style)
    b = wct.feature_wct(content, style, compat="fastphotostyle")
    assert float((a - b).abs().max() / a.abs().max()) < 1e-4
