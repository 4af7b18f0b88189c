"""Semantic style pools: the style index, selection (determinism, self-exclusion, diversity), label-aware
transfer in runs for every stylizer, and the per-row quality columns on cases whose answer is known."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import shared_path
from spadepis.pipeline.config import config_hash, parse_config
from spadepis.pipeline.preflight import validate_config
from spadepis.data.images import float_to_uint8, read_rgb
from spadepis.pipeline.manifest import AugmentedDataset, read_index, summary, format_summary
from spadepis.pipeline.quality import q_structure, row_quality, style_quality_stats
from spadepis.pipeline.styles import STYLE_INDEX, coverage_scores, normalised_fractions, read_style_index, select_styles
from spadepis.pipeline.plan import make_plan
from spadepis.pipeline.model_cache import clear_model_cache, get_style_cache, get_stylizer
from spadepis.pipeline.worker import process_shard
from spadepis.models.stylizers import load_stylizer

LABEL_NC = 4
SIZE = 64


def _scene(rng, top: int, bottom: int, colours: dict[int, tuple[int, int, int]], split: int = SIZE // 2):
    lab = np.full((SIZE, SIZE), bottom, np.uint8)
    lab[:split] = top
    img = np.zeros((SIZE, SIZE, 3), np.float64)
    for label, colour in colours.items():
        img[lab == label] = colour
    img += rng.normal(0, 12, img.shape)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    img += 20 * np.sin(xx / 5.0)[..., None] * (lab == bottom)[..., None]  # some structure
    return lab, img.clip(0, 255).astype(np.uint8)


def make_pool(root: Path, n: int = 8) -> Path:
    """``root/photos``, ``root/labels``: n scenes of sky (1) over road (2) or grass (3) with varying splits."""
    rng = np.random.default_rng(0)
    colours = {1: (90, 140, 230), 2: (110, 110, 110), 3: (60, 160, 60)}
    (root / "photos").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        bottom = 2 if i % 2 == 0 else 3
        lab, img = _scene(rng, 1, bottom, {1: tuple(c + 5 * i for c in colours[1]), bottom: colours[bottom]},
                          split=16 + 4 * i)
        Image.fromarray(lab).save(root / "labels" / f"s{i:02d}.png")
        Image.fromarray(img).save(root / "photos" / f"s{i:02d}.png")
    return root


def _config(root: Path, **styles: Any) -> Any:
    data = {
        "dataset": {"preset": "custom", "preset_overrides": {"label_nc": LABEL_NC}, "name": "pool",
                    "labels": str(root / "labels"), "photos": str(root / "photos")},
        "styles": {"source": str(root / "photos"), "labels": str(root / "labels"), "select": "semantic", "per_sample": 2,
                   **styles},
        "models": {"stylizer": "color", "smoothing": "none"},
        "output": str(root / "runs"),
        "run_id": "r",
        "shard_size": 4,
        "device": "cpu",
    }
    return data


# ------------------------------------------------------------------------------------------ selection


def test_coverage_score_bounds_and_meaning():
    P = normalised_fractions(np.array([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], [0, 0, 0, 0]], np.float32))
    Q = normalised_fractions(np.array([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.9, 0.1, 0.0, 0.0]], np.float32))
    S = coverage_scores(P, Q)
    assert S[0, 0] == pytest.approx(1.0)  # same composition
    assert S[0, 1] == 0.0  # none of the content's classes
    assert S[0, 2] == pytest.approx((0.5 * 0.5 + 0.5 * 0.1) / 0.5)  # sum p*min(p,q) / sum p^2
    assert S[1].tolist() == [0.0, 0.0, 0.0]
    assert S[2].tolist() == [0.0, 0.0, 0.0]  # nothing but ignored labels
    assert ((S >= 0) & (S <= 1)).all()
    # ignored labels leave the score
    P2 = normalised_fractions(np.array([[0.5, 0.25, 0.25, 0.0]], np.float32), ignore=[2])
    assert coverage_scores(P2, normalised_fractions(np.array([[2 / 3, 1 / 3, 0, 0]], np.float32)))[0, 0] == pytest.approx(1.0)


def test_semantic_selection_ranks_match_brute_force_and_is_deterministic():
    rng = np.random.default_rng(1)
    P = normalised_fractions(rng.dirichlet(np.ones(6) * 0.5, size=50).astype(np.float32))
    Q = normalised_fractions(rng.dirichlet(np.ones(6) * 0.5, size=40).astype(np.float32))
    Q[7] = Q[3]  # an exact tie
    src = [f"c{i}" for i in range(50)]
    sty = [f"s{j}" for j in range(40)]
    a = select_styles(src, P, sty, Q, mode="semantic", k=3, seed=5, top_m=6)
    b = select_styles(src, P.copy(), sty, Q.copy(), mode="semantic", k=3, seed=5, top_m=6)
    assert a == b
    S = coverage_scores(P, Q)
    for i in range(50):
        order = sorted(range(40), key=lambda j: (-S[i, j], j))
        assert [order[r] for r in a.ranks[i]] == list(a.styles[i])
        assert all(r < 6 for r in a.ranks[i]) and len(set(a.styles[i])) == 3
        assert np.allclose(a.scores[i], [S[i, j] for j in a.styles[i]])
    c = select_styles(src, P, sty, Q, mode="semantic", k=3, seed=6, top_m=6)
    assert c.styles != a.styles  # the seed draws among the top m
    # diversity: identical contents do not all get the same styles
    same = select_styles([f"x{i}" for i in range(30)], np.repeat(P[:1], 30, 0), sty, Q, mode="semantic", k=1, seed=0, top_m=5)
    assert len({s for s in same.styles}) > 1 and all(r[0] < 5 for r in same.ranks)


def test_plan_semantic_deterministic_self_excluded_and_index_reused(tmp_path):
    root = make_pool(tmp_path)
    cfg = parse_config(_config(root))
    assert validate_config(cfg) == []
    plan = make_plan(cfg)
    index_file = Path(cfg.run_uri) / STYLE_INDEX
    assert index_file.exists()
    mtime = index_file.stat().st_mtime_ns
    again = make_plan(cfg)  # reuses the stored index
    assert index_file.stat().st_mtime_ns == mtime
    other = make_plan(parse_config({**_config(root), "output": str(tmp_path / "elsewhere")}))  # built afresh
    assert [s.style_ids for s in plan.shards] == [s.style_ids for s in again.shards] == [s.style_ids for s in other.shards]
    assert [s.style_scores for s in plan.shards] == [s.style_scores for s in other.shards]
    for shard in plan.shards:
        for src, ids, ranks in zip(shard.sources, shard.style_ids, shard.style_ranks):
            assert src.source_id not in ids and len(ids) == 2 and all(0 <= r < 8 for r in ranks)
    df = read_style_index(cfg.run_uri)
    assert list(df.style_id) == [f"s{i:02d}" for i in range(8)] and df.error.isna().all()
    assert np.allclose([sum(f) for f in df.fractions], 1.0)
    # all and random exclude the own photo too
    for styles in ({"select": "all", "per_sample": None}, {"select": "random"}):
        p = make_plan(parse_config(_config(root, **styles)))
        for shard in p.shards:
            for src, ids in zip(shard.sources, shard.style_ids):
                assert src.source_id not in ids
                assert len(ids) == (7 if styles["select"] == "all" else 2)


def test_old_configs_keep_their_hash_and_plan(tmp_path):
    from pipeline_helpers import make_inputs, small_config

    root = make_inputs(tmp_path, n_maps=6, n_styles=4)
    old = small_config(root, styles={"source": str(root / "styles"), "per_sample": 2})
    new = small_config(root, styles={"source": str(root / "styles"), "per_sample": 2, "select": "random"})
    from spadepis.pipeline.config import _EXECUTION_ONLY

    data = old.model_dump(mode="json", exclude=set(_EXECUTION_ONLY))
    for k in ("max_side", "demo_inputs", "use_instance", "label_remap", "unmapped"):  # not in the hash: no-op defaults / input generation
        data["dataset"].pop(k)
    for k in ("labels", "select", "top_m", "unmatched", "ignore_labels", "segmenter"):
        data["styles"].pop(k)
    expected = hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert config_hash(old) == config_hash(new) == expected  # the hash of configs written before these fields
    assert [s.style_ids for s in make_plan(old).shards] == [s.style_ids for s in make_plan(new).shards]
    assert config_hash(small_config(root, styles={"source": str(root / "styles"), "per_sample": 2, "unmatched": "global"})) != expected


def test_config_problems_for_selection(tmp_path):
    root = make_pool(tmp_path)
    bad = parse_config(_config(root, labels=None))
    assert any("styles.labels" in p for p in validate_config(bad))
    bad = parse_config(_config(root, per_sample=None))
    assert any("styles.per_sample" in p for p in validate_config(bad))
    bad = parse_config(_config(root, top_m=1))
    assert any("styles.top_m" in p for p in validate_config(bad))


# ------------------------------------------------------------------------------------------ runs


def _run(cfg) -> pd.DataFrame:
    clear_model_cache()
    for shard in make_plan(cfg).shards:
        process_shard(cfg, shard)
    return read_index(cfg.run_uri)


@pytest.mark.parametrize("name", ["color", "photowct", "wct16x"])
def test_label_aware_transfer_in_a_run(tmp_path, name):
    if name == "photowct":
        weights = str(shared_path("reference", "photowct", "photo_wct.pth.xz"))
    elif name == "wct16x":
        weights = str(shared_path("weights", "wct_16x"))
    else:
        weights = None
    root = make_pool(tmp_path, n=4)
    data = _config(root, per_sample=1, top_m=1)
    data["models"] = {"stylizer": name, "stylizer_weights": weights, "smoothing": "none"}
    data["dataset"]["limit"] = 1 if weights else 2
    cfg = parse_config(data)
    df = _run(cfg)
    assert (df.status == "ok").all(), df.error.tolist()
    stylizer = get_stylizer(cfg, "cpu")  # the instance the run used (loading photo_wct.pth.xz takes a while)
    for row in df.itertuples():
        content = read_rgb(row.synth_uri)
        content_seg = np.asarray(Image.open(row.label_uri)).astype(np.int64)
        label_uri = str(root / "labels" / f"{row.style_id}.png")
        if name == "color":  # prepared here from the files
            style = read_rgb(row.style_uri)
            cache = stylizer.prepare_style(style, np.asarray(Image.open(label_uri)).astype(np.int64))
        else:  # the run's cached preparation (a PhotoWCT preparation takes ~30 s on a loaded 2-core machine)
            cache, _ = get_style_cache(cfg, "cpu", row.style_id, row.style_uri, label_uri)
            assert cache.has_seg and cache.meta["quality"].label_counts
        expect = float_to_uint8(stylizer.stylize(content, cache, content_seg))
        unaware = float_to_uint8(stylizer.stylize(content, cache, None))  # the global statistics of the same cache
        got = read_rgb(row.image_uri)
        assert np.abs(got.astype(int) - expect.astype(int)).max() <= 1  # the run's output is the label-aware one
        assert np.abs(got.astype(int) - unaware.astype(int)).mean() > 1.0
        assert row.q_coverage == pytest.approx(1.0) and 0 <= row.style_score <= 1 and row.style_rank == 0
        assert 0 < row.q_style <= 1 and -1 <= row.q_structure <= 1 and 0 <= row.q_clipped <= 1
        assert row.t_quality_ms > 0 and row.source_id != row.style_id


def test_unmatched_keep_vs_global():
    rng = np.random.default_rng(0)
    content_seg, content = _scene(rng, 1, 3, {1: (90, 140, 230), 3: (60, 160, 60)})
    style_seg, style = _scene(rng, 1, 2, {1: (250, 120, 40), 2: (20, 20, 20)})  # no class 3 in the style
    stylizer = load_stylizer("color")
    cache = stylizer.prepare_style(style, style_seg)
    keep = float_to_uint8(stylizer.stylize(content, cache, content_seg, unmatched="keep"))
    glob = float_to_uint8(stylizer.stylize(content, cache, content_seg, unmatched="global"))
    grass = content_seg == 3
    assert np.abs(keep[grass].astype(int) - content[grass].astype(int)).max() <= 1  # kept as it was
    assert np.abs(glob[grass].astype(int) - content[grass].astype(int)).mean() > 20  # restyled globally
    assert np.array_equal(keep[~grass], glob[~grass])  # matched classes are the same either way
    q = row_quality(content, keep, content_seg, style_quality_stats(style, style_seg))
    assert q["q_coverage"] == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------ quality


def test_quality_on_crafted_cases():
    rng = np.random.default_rng(0)
    seg, content = _scene(rng, 1, 2, {1: (90, 140, 230), 2: (110, 110, 110)})
    assert q_structure(content, content) == pytest.approx(1.0)
    constant = np.full_like(content, 128)
    assert q_structure(content, constant) < 0.1
    blurred = np.asarray(Image.fromarray(content).resize((16, 16)).resize((SIZE, SIZE)))
    assert q_structure(content, constant) < q_structure(content, blurred) < 0.95

    same = row_quality(content, content, seg, style_quality_stats(content, seg))
    assert same["q_structure"] == pytest.approx(1.0) and same["q_style"] == pytest.approx(1.0)
    assert same["q_coverage"] == pytest.approx(1.0)

    other_seg = np.full_like(seg, 3)  # a style with none of the content's classes
    q = row_quality(content, content, seg, style_quality_stats(content, other_seg))
    assert q["q_coverage"] == 0.0
    q = row_quality(content, content, None, style_quality_stats(content))
    assert q["q_coverage"] is None and q["q_style"] == pytest.approx(1.0)

    clipped = content.copy()
    clipped[:16, :, 0] = 255
    assert row_quality(content, clipped, None, style_quality_stats(content))["q_clipped"] >= 0.25
    far = np.zeros_like(content)
    far[...] = (250, 20, 20)
    assert row_quality(content, far, seg, style_quality_stats(content, seg))["q_style"] < 0.05
    # ignored labels are left out of the coverage
    half = seg.copy()
    q = row_quality(content, content, half, style_quality_stats(content, np.where(seg == 2, 3, seg)), ignore=[2])
    assert q["q_coverage"] == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------ manifest


def test_schema_upgrade_old_parts_readable_and_mergeable(tmp_path):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from spadepis.pipeline.manifest import SCHEMA_VERSION, table_schema_version
    from spadepis.pipeline.storage import RunStorage

    root = make_pool(tmp_path, n=3)
    data = _config(root, per_sample=1, top_m=1)
    data["dataset"]["limit"] = 2
    data["shard_size"] = 1
    cfg = parse_config(data)
    _run(cfg)
    storage = RunStorage(cfg.run_uri)
    marker = storage.committed_shards()["shard=00000"]
    new = pq.read_table(io.BytesIO(storage.read_bytes(marker["part"])))
    added = ["style_score", "style_rank", "t_quality_ms", "q_structure", "q_style", "q_coverage", "q_clipped"]
    old = new.drop_columns(added)
    old = old.set_column(old.column_names.index("schema_version"), "schema_version", pa.array([1] * old.num_rows, pa.int32()))
    old = old.replace_schema_metadata({"spadepis.schema_version": "1"})
    buf = io.BytesIO()
    pq.write_table(old, buf)
    raw = buf.getvalue()
    storage.write_bytes(marker["part"], raw)
    marker.update(part_bytes=len(raw), part_sha256=hashlib.sha256(raw).hexdigest())
    storage.write_bytes(storage.success_rel("shard=00000"), json.dumps(marker).encode())
    index = storage.write_index()  # a resumed old run: a v1 part next to a v2 part
    assert table_schema_version(index) == SCHEMA_VERSION == 4
    df = read_index(cfg.run_uri)
    assert len(df) == 2 and sorted(df.schema_version.tolist()) == [1, SCHEMA_VERSION]
    v1 = df[df.schema_version == 1].iloc[0]
    assert pd.isna(v1.q_structure) and pd.isna(v1.style_score) and pd.isna(v1.t_quality_ms)
    text = format_summary(summary(df))
    assert "q_structure" in text and "t_quality_ms" in text
    assert len(AugmentedDataset(df, where="q_structure >= 0")) == 1  # the v1 row has no score: filtered out


def test_dataset_filter_string_and_callable(tmp_path):
    root = make_pool(tmp_path, n=4)
    data = _config(root, per_sample=2, top_m=3)
    data["dataset"]["limit"] = 3
    cfg = parse_config(data)
    df = _run(cfg)
    assert len(df) == 6 and df.q_coverage.notna().all()
    thr = float(df.q_structure.median())
    ds = AugmentedDataset(cfg.run_uri, where=f"q_structure >= {thr} and q_coverage >= 0.2")
    assert 0 < len(ds) < 6 and (ds.frame.q_structure >= thr).all()
    image, label, meta = ds[0]
    assert image.shape[1:] == label.shape and meta["q_structure"] >= thr
    ds2 = AugmentedDataset(cfg.run_uri, where=lambda row: row["q_structure"] >= thr and row["style_rank"] == 0)
    assert set(ds2.frame.sample_id) == set(df[(df.q_structure >= thr) & (df.style_rank == 0)].sample_id)
    with pytest.raises(ValueError, match="q_structur >= 1"):
        AugmentedDataset(cfg.run_uri, where="q_structur >= 1")
    text = format_summary(summary(df))
    assert "style_score" in text and "q_coverage" in text
