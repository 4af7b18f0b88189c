"""Photorealistic smoothing: parity with FastPhotoStyle, solver accuracy, guided filter, errors, reuse.

The parity fixtures in ``../shared/reference/smoothing`` were made by running FastPhotoStyle's
``photo_smooth.Propagator`` (see ``../shared/reference/README.md`` section 3). The independent checks
below rebuild the matting affinity with explicit python loops over windows on tiny images.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg

from conftest import shared_path
from spadepis.errors import ConfigError, InputError
from spadepis.data.images import read_rgb, write_png
from spadepis.models import smoothing
from spadepis.models.smoothing import (
    SmoothingSystem,
    guided_filter_smooth,
    matting_affinity,
    prepare_smoother,
)


# Every exact solver is checked on its own: superlu (the default of a plain install) always, cholmod (the
# spadepis[cholmod] extra, GPL cvxopt; in the test extra) where cvxopt is installed.
SOLVERS = [
    "superlu",
    pytest.param("cholmod", marks=pytest.mark.skipif(
        not smoothing.cholmod_available(), reason="cvxopt is not installed (pip install 'spadepis[cholmod]')")),
]


def _rng_image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _smooth_image(h, w, seed=0):
    """A photo-like image: smooth gradients plus a hard edge plus a little noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([120 + 100 * x, 60 + 150 * y, 200 - 120 * x * y], axis=-1)
    base[: h // 2, w // 3 :] *= 0.5
    return np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# an independent, loop-based matting affinity (Levin et al.) for tiny images
# --------------------------------------------------------------------------------------------------
def _naive_affinity(img: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    h, w, _ = img.shape
    n = h * w
    dense = np.zeros((n, n))
    for cy in range(1, h - 1):
        for cx in range(1, w - 1):
            idx = [(cy + dy) * w + (cx + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
            pix = img.reshape(n, 3)[idx]
            mu = pix.mean(axis=0)
            cov = (pix - mu).T @ (pix - mu) / 9.0
            inv = np.linalg.inv(cov + eps / 9.0 * np.eye(3))
            for a, i in enumerate(idx):
                for b, j in enumerate(idx):
                    dense[i, j] += (1.0 + (pix[a] - mu) @ inv @ (pix[b] - mu)) / 9.0
    return dense


def test_matting_affinity_matches_loop_definition():
    img = _rng_image(6, 7, seed=1).astype(np.float64) / 255.0
    got = matting_affinity(img).toarray()
    want = _naive_affinity(img)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    # every window's affinities sum to 1 along a row, so the degree counts the full windows holding a pixel
    degree = got.sum(axis=1).reshape(6, 7)
    assert degree[0, 0] == pytest.approx(1.0) and degree[3, 3] == pytest.approx(9.0)


@pytest.mark.parametrize("solver", SOLVERS)
def test_grid_pattern_is_analysed_once_per_size_and_reused(solver):
    """The order/analysis depends only on H x W: contents of one size share it, CHOLMOD factors are recycled."""
    pattern = smoothing.grid_pattern(17, 19)
    before = pattern.symbolic_analyses
    outs = []
    for seed in range(3):
        content = _rng_image(17, 19, seed=20 + seed)
        with SmoothingSystem(content, solver=solver) as system:  # close() hands the factor back
            assert system._pattern is pattern and system.solver == solver
            outs.append(system.solve(_rng_image(17, 19, seed=30 + seed)))
    assert pattern.symbolic_analyses - before <= 1
    # a recycled factor gives the same answer as a fresh analysis
    smoothing._PATTERNS.pop((17, 19))
    fresh = SmoothingSystem(_rng_image(17, 19, seed=22), solver=solver).solve(_rng_image(17, 19, seed=32))
    np.testing.assert_allclose(outs[2], fresh, atol=1e-12)
    assert smoothing.grid_pattern(17, 19) is not pattern and len(smoothing._PATTERNS) <= smoothing._PATTERN_CACHE_MAX


def test_solve_many_equals_single_solves_and_closed_system_refuses():
    content = _smooth_image(21, 18, seed=4)
    inits = [_rng_image(21, 18, seed=s) for s in range(3)]
    system = SmoothingSystem(content)
    many = system.smooth_many(inits)
    for init, out in zip(inits, many):
        np.testing.assert_array_equal(out, system.smooth(init))
    system.close()
    with pytest.raises(RuntimeError, match="after close"):
        system.solve(inits[0])


# --------------------------------------------------------------------------------------------------
# solver accuracy against scipy's direct solve
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("compat", [None, "fastphotostyle"])
def test_solve_agrees_with_scipy_spsolve(compat, solver):
    content = _rng_image(23, 31, seed=2)
    init = _rng_image(23, 31, seed=3)
    system = SmoothingSystem(content, compat=compat, solver=solver)
    v = system.solve(init)
    beta = system.beta
    # the textbook system, built independently of SmoothingSystem
    guide = content if compat is None else smoothing._resize_bilinear_uint8(content, 19, 27)
    if compat:
        guide = np.pad(guide, ((2, 2), (2, 2), (0, 0)), mode="edge")
    w_aff = scipy.sparse.csc_matrix(_naive_affinity(guide.astype(np.float64) / 255.0))
    d = np.asarray(w_aff.sum(axis=0)).ravel()
    n = d.size
    b = init.astype(np.float64) / 255.0
    if compat is None:
        # random-walk normalisation: (I - beta D^-1 W) V = (1 - beta) B
        a = scipy.sparse.identity(n, format="csc") - beta * scipy.sparse.diags(1.0 / d) @ w_aff
    else:
        dd = scipy.sparse.diags(d**-0.5)
        a = scipy.sparse.identity(n, format="csc") - beta * (dd @ w_aff @ dd)
        b = np.pad(b[2:-2, 2:-2], ((2, 2), (2, 2), (0, 0)), mode="edge")
    want = scipy.sparse.linalg.spsolve(a.tocsc(), b.reshape(n, 3)) * (1 - beta)
    want = want.reshape(guide.shape)
    if compat:
        want = want[2:-2, 2:-2]
    assert v.shape == want.shape and v.dtype == np.float64
    assert np.abs(v - want).max() < 1e-6
    assert system.residual(init) < 1e-10


# --------------------------------------------------------------------------------------------------
# parity with FastPhotoStyle (../shared)
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("pair", ["pair0", "pair1"])
def test_parity_with_fastphotostyle(pair, solver):
    folder = shared_path("reference", "smoothing", pair)
    content = read_rgb(folder / "content.png")
    init = read_rgb(folder / "init.png")
    expected = read_rgb(folder / "output.png")
    internals = np.load(folder / "internals.npz")
    system = SmoothingSystem(content, compat="fastphotostyle", solver=solver)
    assert np.array_equal(system.content_resized, internals["content_resized_uint8"])
    np.testing.assert_array_equal(system.rhs(init), internals["rhs_padded_B_float64"])
    v = system.solve(init)
    assert v.shape == internals["V_float64"].shape
    err = np.abs(v - internals["V_float64"]).max()
    assert err < 1e-6, f"{pair}: V max |diff| {err:.3g} >= 1e-6"
    out = system.smooth(init)
    assert out.shape == expected.shape
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1


# --------------------------------------------------------------------------------------------------
# behaviour
# --------------------------------------------------------------------------------------------------
def test_full_size_output_and_compat_size():
    content = _smooth_image(30, 41)
    init = _rng_image(30, 41, seed=5)
    out = SmoothingSystem(content).smooth(init)
    assert out.shape == (30, 41, 3) and out.dtype == np.uint8
    assert SmoothingSystem(content, compat="fastphotostyle").smooth(init).shape == (26, 37, 3)


def test_constant_image_stays_constant():
    colour = np.array([200, 100, 30])
    init = np.broadcast_to(colour.astype(np.uint8), (24, 28, 3)).copy()
    for content in (_rng_image(24, 28, seed=6), np.full((24, 28, 3), 90, np.uint8)):
        v = SmoothingSystem(content).solve(init)
        assert np.abs(v * 255 - colour).max() < 1e-6


def test_smoothing_removes_noise_but_keeps_edges():
    content = _smooth_image(40, 48, seed=7)
    rng = np.random.default_rng(8)
    noisy = np.clip(content.astype(int) + rng.normal(0, 25, content.shape), 0, 255).astype(np.uint8)
    out = SmoothingSystem(content).smooth(noisy)
    err_before = np.abs(noisy.astype(float) - content).mean()
    err_after = np.abs(out.astype(float) - content).mean()
    assert err_after < 0.5 * err_before


def test_factorisation_built_once_and_reused(monkeypatch):
    calls = []
    real_numeric = smoothing._GridPattern.factorise

    def counting_factorise(self, bands, solver="cholmod"):
        calls.append(self.shape)
        return real_numeric(self, bands, solver)

    monkeypatch.setattr(smoothing._GridPattern, "factorise", counting_factorise)
    content = _smooth_image(20, 25, seed=9)
    smoother = prepare_smoother(content, mode="exact")
    outs = [smoother(_rng_image(20, 25, seed=s)) for s in range(4)]
    assert len(calls) == 1
    assert smoother.system.solves == 4
    # each result equals a fresh system's result for that image
    fresh = SmoothingSystem(content).smooth(_rng_image(20, 25, seed=3))
    np.testing.assert_array_equal(outs[3], fresh)


# --------------------------------------------------------------------------------------------------
# guided filter (fast mode)
# --------------------------------------------------------------------------------------------------
def _reflect(i: int, n: int) -> int:
    """BORDER_REFLECT index (fedcba|abcdef|fedcba), by repeated mirroring."""
    while i < 0 or i >= n:
        i = -i - 1 if i < 0 else 2 * n - 1 - i
    return i


def _naive_guided_filter(guide: np.ndarray, src: np.ndarray, r: int, eps: float) -> np.ndarray:
    """He et al.'s colour guided filter with explicit windows (float64, 0..255 scale)."""
    h, w, _ = guide.shape
    g, p = guide.astype(np.float64), src.astype(np.float64)

    def window(y, x):
        ys = [_reflect(y + dy, h) for dy in range(-r, r + 1)]
        xs = [_reflect(x + dx, w) for dx in range(-r, r + 1)]
        return np.ix_(ys, xs)

    a = np.zeros((h, w, 3, 3))
    b = np.zeros((h, w, 3))
    for y in range(h):
        for x in range(w):
            win = window(y, x)
            gi = g[win].reshape(-1, 3)
            pi = p[win].reshape(-1, 3)
            mu, pm = gi.mean(0), pi.mean(0)
            sigma = gi.T @ gi / len(gi) - np.outer(mu, mu)
            cross = gi.T @ pi / len(gi) - np.outer(mu, pm)
            a[y, x] = np.linalg.solve(sigma + eps * np.eye(3), cross)
            b[y, x] = pm - mu @ a[y, x]
    q = np.zeros((h, w, 3))
    for y in range(h):
        for x in range(w):
            win = window(y, x)
            q[y, x] = g[y, x] @ a[win].reshape(-1, 3, 3).mean(0) + b[win].reshape(-1, 3).mean(0)
    return np.clip(np.rint(q), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape,radius", [((9, 11), 2), ((6, 5), 7)])
def test_guided_filter_matches_explicit_windows(shape, radius):
    content = _smooth_image(*shape, seed=10)
    init = _rng_image(*shape, seed=11)
    got = guided_filter_smooth(content, init, radius=radius, eps=1e-3)
    want = _naive_guided_filter(content, init, radius, 1e-3)
    assert got.shape == shape + (3,) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    assert (got == want).mean() > 0.97


def test_guided_filter_default_radius_full_size():
    content = _smooth_image(50, 60, seed=12)
    init = _rng_image(50, 60, seed=13)
    out = prepare_smoother(content, mode="fast")(init)
    assert out.shape == (50, 60, 3)
    # the guide explains the output: much closer to the content's structure than the noise was
    assert np.abs(out.astype(float) - out.mean((0, 1))).std() < np.abs(init.astype(float) - init.mean((0, 1))).std()


def test_prepare_smoother_none_is_identity():
    content = _rng_image(8, 9)
    init = _rng_image(8, 9, seed=1)
    np.testing.assert_array_equal(prepare_smoother(content, mode="none")(init), init)


# --------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors():
    content = _rng_image(10, 12)
    with pytest.raises(InputError, match="uint8"):
        SmoothingSystem(content.astype(np.float32))
    with pytest.raises(InputError, match=r"\(H, W, 3\)"):
        SmoothingSystem(content[..., 0])
    with pytest.raises(InputError, match="at least 3x3"):
        SmoothingSystem(_rng_image(2, 12))
    with pytest.raises(ConfigError, match="compat"):
        SmoothingSystem(content, compat="paper")
    with pytest.raises(ConfigError, match="beta"):
        SmoothingSystem(content, beta=1.0)
    system = SmoothingSystem(content)
    with pytest.raises(InputError, match="10x12"):
        system.solve(_rng_image(11, 12))
    with pytest.raises(ConfigError, match="exact\\|fast\\|none|exact, fast, none"):
        prepare_smoother(content, mode="slow")
    with pytest.raises(InputError, match="same size"):
        guided_filter_smooth(content, _rng_image(10, 13))
    with pytest.raises(ConfigError, match="radius"):
        guided_filter_smooth(content, content, radius=0)


def test_compat_size_follows_the_stylized_image():
    content = _smooth_image(40, 50)
    init = _rng_image(30, 36, seed=2)
    system = SmoothingSystem(content, compat="fastphotostyle", size=init.shape[:2])
    assert system.smooth(init).shape == (26, 32, 3)
    assert system.content_resized.shape == (26, 32, 3)


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------
def test_cli_smooth(tmp_path, capsys):
    from spadepis.cli import main

    content = _smooth_image(20, 24, seed=14)
    init = _rng_image(20, 24, seed=15)
    write_png(tmp_path / "c.png", content)
    write_png(tmp_path / "i.png", init)
    out, raw = tmp_path / "out" / "o.png", tmp_path / "out" / "v.npy"
    argv = ["smooth", "--content", str(tmp_path / "c.png"), "--init", str(tmp_path / "i.png")]
    assert main(argv + ["--out", str(out), "--raw", str(raw)]) == 0
    v = np.load(raw)
    assert v.shape == (20, 24, 3) and v.dtype == np.float64
    np.testing.assert_array_equal(read_rgb(out), np.clip(v * 255, 0, 255).astype(np.uint8))
    assert main(argv + ["--compat", "fastphotostyle", "--out", str(out), "--raw", str(raw)]) == 0
    assert np.load(raw).shape == (16, 20, 3) and read_rgb(out).shape == (16, 20, 3)
    assert main(argv + ["--mode", "fast", "--out", str(out)]) == 0
    assert read_rgb(out).shape == (20, 24, 3)

    write_png(tmp_path / "small.png", init[:10])
    capsys.readouterr()
    assert main(["smooth", "--content", str(tmp_path / "c.png"), "--init", str(tmp_path / "small.png"),
                 "--out", str(out)]) == 1
    assert "must have the same size" in capsys.readouterr().err
    assert main(["smooth", "--content", str(tmp_path / "missing.png"), "--init", str(tmp_path / "i.png"),
                 "--out", str(out)]) == 1
    assert "missing.png" in capsys.readouterr().err
    assert main(argv + ["--mode", "fast", "--raw", str(raw), "--out", str(out)]) == 1
    assert "--raw" in capsys.readouterr().err


def test_fast_smoother_reuses_the_guide_for_every_style():
    """prepare_smoother('fast') computes the guide's statistics once; each style equals the one-shot filter."""
    from spadepis.models.smoothing import GuidedFilter, guided_filter_smooth, prepare_smoother

    rng = np.random.default_rng(3)
    content = rng.integers(0, 256, (33, 41, 3), dtype=np.uint8)
    smoother = prepare_smoother(content, "fast", radius=4)
    assert isinstance(smoother, GuidedFilter)
    for _ in range(3):
        init = rng.integers(0, 256, content.shape, dtype=np.uint8)
        np.testing.assert_array_equal(smoother(init), guided_filter_smooth(content, init, radius=4))
    with pytest.raises(InputError, match="same size"):
        smoother(content[:-1])


def test_default_solver_is_permissive_unless_cholmod_is_installed_or_named(monkeypatch):
    """A plain install (no cvxopt) smooths with SuperLU; the cholmod extra is picked up when installed; the
    environment variable names one explicitly, and an unknown or missing one is refused with the fix."""
    monkeypatch.delenv(smoothing.cholesky.SOLVER_ENV, raising=False)
    assert smoothing.default_exact_solver() == ("cholmod" if smoothing.cholmod_available() else "superlu")
    monkeypatch.setenv(smoothing.cholesky.SOLVER_ENV, "superlu")
    content = _smooth_image(12, 14)
    assert SmoothingSystem(content).solver == "superlu"
    monkeypatch.setenv(smoothing.cholesky.SOLVER_ENV, "umfpack")
    with pytest.raises(ConfigError, match="SPADEPIS_EXACT_SOLVER='umfpack'.*superlu, cholmod"):
        SmoothingSystem(content)
    monkeypatch.setattr(smoothing.cholesky, "cholmod_available", lambda: False)  # as a plain install
    monkeypatch.delenv(smoothing.cholesky.SOLVER_ENV)
    assert smoothing.default_exact_solver() == "superlu"
    with pytest.raises(ConfigError, match=r"pip install 'spadepis\[cholmod\]'"):
        SmoothingSystem(content, solver="cholmod")


@pytest.mark.skipif(not smoothing.cholmod_available(), reason="cvxopt is not installed (pip install 'spadepis[cholmod]')")
@pytest.mark.parametrize("compat", [None, "fastphotostyle"])
def test_superlu_and_cholmod_give_the_same_solution(compat):
    content, init = _smooth_image(40, 52, seed=5), _rng_image(40, 52, seed=6)
    a = SmoothingSystem(content, compat=compat, solver="superlu").solve(init)
    b = SmoothingSystem(content, compat=compat, solver="cholmod").solve(init)
    assert np.abs(a - b).max() < 1e-10
