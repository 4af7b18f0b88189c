"""The downstream benchmark's plumbing (bench/bench_downstream.py) on tiny generated data (no ../shared):
a stylize-only run -> manifest -> AugmentedDataset -> one training step, the CamVid split rules, and the
IoU metric on crafted predictions whose IoU is known."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spadepis.pipeline.config import parse_config
from spadepis.pipeline.plan import make_plan
from spadepis.pipeline.worker import process_shard
from spadepis.pipeline.storage import RunStorage

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bm():
    spec = importlib.util.spec_from_file_location("bench_downstream", ROOT / "bench" / "bench_downstream.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_iou_on_crafted_prediction(bm):
    sky, road, car, void = 0, 3, 8, bm.VOID
    target = torch.full((4, 4), road)
    target[:2] = sky
    target[3, 3] = void
    pred = target.clone()
    pred[3, 3] = car  # on a void pixel: ignored, so car is not "predicted" by it
    pred[2, 0] = sky  # road -> sky
    pred[2, 1] = sky  # road -> sky
    pred[2, 2] = car  # road -> car
    cm = bm.confusion(pred, target)
    assert int(cm.sum()) == 15  # 16 pixels minus the void one
    iou = bm.iou_per_class(cm)
    # sky: TP 8, FP 2, FN 0; road: TP 4 of 7, no FP; car: predicted once, never true -> 0; the rest absent -> NaN
    assert iou[sky].item() == pytest.approx(8 / 10)
    assert iou[road].item() == pytest.approx(4 / 7)
    assert iou[car].item() == 0.0
    assert all(math.isnan(iou[c].item()) for c in range(bm.N_CLASSES) if c not in (sky, road, car))
    assert bm.mean_iou(cm) == pytest.approx((8 / 10 + 4 / 7 + 0.0) / 3)
    # a perfect prediction is 1.0 whatever the void pixels hold
    assert bm.mean_iou(bm.confusion(torch.where(target == void, torch.tensor(car), target), target)) == 1.0


def test_camvid_split_is_disjoint_and_by_time(bm, tmp_path):
    names = ["0001TP_006690", "0001TP_008520", "0006R0_f00930", "0006R0_f03180", "0006R0_f03210", "0006R0_f03360",
             "0016E5_00390", "0016E5_04350", "0016E5_04920", "0016E5_04950", "0016E5_05130", "0016E5_07959",
             "0016E5_07961", "0016E5_07967", "0016E5_08190"]
    for split in ("train", "val"):
        (tmp_path / f"{split}_img").mkdir()
        (tmp_path / f"{split}_label").mkdir()
    for n in names:  # the dense 0016E5 block is CamVid's val split
        split = "val" if n.startswith("0016E5_079") else "train"
        (tmp_path / f"{split}_img" / f"{n}.jpg").touch()
        (tmp_path / f"{split}_label" / f"{n}.png").touch()
    s = {k: {f.id for f in v} for k, v in bm.split_camvid(tmp_path).items()}
    assert s["target"] == {"0001TP_006690"}  # the earlier half of 0001TP: target photos (styles, no labels)
    assert s["dusk"] == {"0001TP_008520"}  # the later half: the dusk evaluation, never a style
    assert s["day-val"] == {"0006R0_f03360", "0016E5_04350", "0016E5_04920"}
    assert s["style"] == {"0006R0_f03210", "0016E5_04950", "0016E5_07959", "0016E5_07967"}
    assert s["train"] == {"0006R0_f00930", "0006R0_f03180", "0016E5_00390", "0016E5_05130", "0016E5_08190"}
    assert s["unused"] == {"0016E5_07961"}
    all_ids = [i for v in s.values() for i in v]
    assert len(all_ids) == len(set(all_ids)) == len(names)


def _tiny_camvid(bm, root: Path, n: int = 3) -> list:
    """n photos 64x48 with CamVid label maps (sky top, building left, road bottom, a car, void corner)."""
    (root / "photos").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "styles").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        lab = np.full((48, 64), 3, np.uint8)  # road
        lab[:16] = 0  # sky
        lab[16:30, : 20 + 4 * i] = 1  # building
        lab[30:40, 30:44] = 8  # car
        lab[-4:, -4:] = 11  # void
        colours = np.array([[120, 170, 230], [150, 90, 70], [0, 0, 0], [90, 90, 90], [0, 0, 0], [0, 0, 0],
                            [0, 0, 0], [0, 0, 0], [200, 20, 20], [0, 0, 0], [0, 0, 0], [10, 10, 10]], np.float64)
        photo = (colours[lab] + rng.normal(0, 8, (48, 64, 3))).clip(0, 255).astype(np.uint8)
        Image.fromarray(photo).save(root / "photos" / f"0016E5_0{i}390.png")
        Image.fromarray(lab).save(root / "labels" / f"0016E5_0{i}390.png")
    for j in range(2):
        style = (rng.random((40, 48, 3)) * 90 + np.array([40 + 100 * j, 100, 180 - 100 * j])).clip(0, 255).astype(np.uint8)
        Image.fromarray(style).save(root / "styles" / f"style{j}.png")
    return bm.list_frames(root / "photos", root / "labels")


def test_manifest_to_training_step(bm, tmp_path):
    root = tmp_path
    frames = _tiny_camvid(bm, root)
    cfg = parse_config({
        "dataset": {"preset": "custom", "name": "tiny-camvid", "labels": str(root / "labels"), "photos": str(root / "photos"),
                    "preset_overrides": {"label_nc": bm.VOID + 1, "contain_dontcare_label": False, "no_instance": True},
                    "max_side": 32},
        "styles": {"source": str(root / "styles"), "per_sample": 1},
        "models": {"stylizer": "color", "smoothing": "none"},
        "output": str(root / "runs"), "run_id": "t", "shard_size": 2, "device": "cpu",
    })
    for shard in make_plan(cfg).shards:
        process_shard(cfg, shard)
    RunStorage(cfg.run_uri).write_index()

    size = (24, 32)
    ds = bm.augmented_dataset(cfg.run_uri, None)
    assert len(ds) == len(frames)  # k = 1 style per frame
    ax, ay, ids = bm.load_augmented(ds, size)
    assert ax.shape == (3, 3, 24, 32) and ax.dtype == torch.uint8 and ay.shape == (3, 24, 32)
    rx, ry = bm.load_frames(frames, size)
    # the augmentation rows' labels come from label_uri (the run's 32x24 copy) and match the source's
    by_id = {f.id: i for i, f in enumerate(frames)}
    for j, sid in enumerate(ids):
        assert torch.equal(ay[j], ry[by_id[sid]])
    # the stylized image is not the photo (the style changed it), the real one is
    assert not torch.equal(ax[0], rx[by_id[ids[0]]])

    # arm c: the quality filter on the manifest's scores goes through AugmentedDataset(where=...)
    assert len(bm.augmented_dataset(cfg.run_uri, "q_clipped <= 1.0 and q_structure >= -1.0")) == len(frames)
    assert len(bm.augmented_dataset(cfg.run_uri, "q_structure > 1.0")) == 0

    settings = bm.TrainSettings(steps=1, batch=4, aug_fraction=0.5, width=4)
    model, losses = bm.train(rx, ry, ax, ay, settings, seed=0)
    assert len(losses) == 1 and math.isfinite(losses[0]) and losses[0] > 0
    # the untrained network of seed 0 has the same initial weights as a fresh one of seed 0; one step moved them
    torch.manual_seed(0)
    init = [p.detach().clone() for p in bm.build_unet(width=4).parameters()]
    assert any(not torch.equal(a, b.detach()) for a, b in zip(init, model.parameters()))
    cm = bm.evaluate(model, rx, ry)
    assert int(cm.sum()) == int((ry != bm.VOID).sum())
    assert 0.0 <= bm.mean_iou(cm) <= 1.0


def test_photometric_jitter_ranges_and_determinism(bm):
    x = torch.full((6, 3, 8, 8), 128, dtype=torch.uint8)
    x[:, 0] = 200
    a = bm.photometric_jitter(x, torch.Generator().manual_seed(1))
    b = bm.photometric_jitter(x, torch.Generator().manual_seed(1))
    assert a.dtype == torch.uint8 and a.shape == x.shape and torch.equal(a, b)  # seeded
    assert not torch.equal(a, x) and len({tuple(v.float().mean((1, 2)).tolist()) for v in a}) == 6  # per-sample draws
    # the identity factors leave an image as it is: the ranges are what is printed and recorded
    saved = dict(bm.JITTER)
    try:
        bm.JITTER.update({k: (1.0, 1.0) for k in bm.JITTER})
        assert torch.equal(bm.photometric_jitter(x, torch.Generator().manual_seed(1)), x)
    finally:
        bm.JITTER.update(saved)


def test_new_arms_train_and_pseudo_labeller(bm, tmp_path):
    """p-photo (jitter in the augmentation slots), tp (jitter on every sample), and the a-real model exported as a
    styles.segmenter that the pipeline accepts (scores for the 12 ids, void never chosen)."""
    from spadepis.data.presets import get_preset
    from spadepis.pipeline.segmenter import load_segmenter, segment

    frames = _tiny_camvid(bm, tmp_path)
    rx, ry = bm.load_frames(frames, (24, 32))
    settings = bm.TrainSettings(steps=2, batch=4, aug_fraction=0.5, width=4)
    for jitter, aug in (("slots", None), ("all", rx), ("real", rx), ("none", rx), ("both", rx), ("outputs", rx)):
        model, losses = bm.train(rx, ry, aug, ry if aug is not None else None, settings, seed=0, jitter=jitter)
        assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    p_model, p_losses = bm.train(rx, ry, None, None, settings, seed=0, jitter="slots")
    a_model, a_losses = bm.train(rx, ry, None, None, settings, seed=0)
    assert p_losses[0] != a_losses[0]  # the jittered slots changed what the network saw

    path = bm.export_segmenter(a_model, (24, 32), tmp_path / "seg.pt", example_hw=(36, 48))
    preset = get_preset("custom", label_nc=bm.VOID + 1, contain_dontcare_label=False, no_instance=True)
    photo = np.asarray(Image.open(frames[0].photo).convert("RGB"))  # 48x64: another size than the trace's
    ids = segment(load_segmenter(str(path)), photo, preset)
    assert ids.shape == photo.shape[:2] and ids.min() >= 0 and ids.max() < bm.VOID


def test_tp_slots_batch_holds_outputs_jittered_and_clean_real_frames(bm, monkeypatch):
    """--tp-jitter slots (train jitter="both"): per batch of 8 at share 0.25, 2 spadepis outputs, 2 jittered real
    frames and 4 clean real frames; a share that does not fit twice is refused with the flag named."""
    import torch.nn as nn

    seen = []

    class Probe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1, bm.N_CLASSES, 1, 1))

        def forward(self, x):
            seen.append(x.clone())
            return self.w.expand(x.shape[0], -1, x.shape[2], x.shape[3])

    monkeypatch.setattr(bm, "build_unet", lambda **kw: Probe())
    # real frames are all 100, spadepis outputs all 30: a sample's source shows in its pixels (flips keep them)
    rx = torch.full((5, 3, 4, 4), 100, dtype=torch.uint8)
    ax = torch.full((7, 3, 4, 4), 30, dtype=torch.uint8)
    ry = torch.zeros((5, 4, 4), dtype=torch.uint8)
    ay = torch.zeros((7, 4, 4), dtype=torch.uint8)
    settings = bm.TrainSettings(steps=3, batch=8, aug_fraction=0.25, width=4)
    bm.train(rx, ry, ax, ay, settings, seed=0, jitter="both")
    clean = bm.normalise(rx[:1])[0]
    out = bm.normalise(ax[:1])[0]
    for x in seen:
        kinds = ["clean" if torch.equal(v, clean) else "output" if torch.equal(v, out) else "jittered" for v in x]
        assert sorted(kinds) == ["clean"] * 4 + ["jittered"] * 2 + ["output"] * 2
    seen.clear()  # --tp-jitter outputs: the 2 outputs jittered, the 6 real frames clean
    bm.train(rx, ry, ax, ay, settings, seed=0, jitter="outputs")
    for x in seen:
        kinds = ["clean" if torch.equal(v, clean) else "output" if torch.equal(v, out) else "jittered" for v in x]
        assert sorted(kinds) == ["clean"] * 6 + ["jittered"] * 2
    with pytest.raises(SystemExit, match="--tp-jitter slots"):
        bm.train(rx, ry, ax, ay, bm.TrainSettings(steps=1, batch=8, aug_fraction=0.75), seed=0, jitter="both")


def test_paired_differences_and_goal_report(bm):
    def entries(values):
        return [{"seed": i, "miou": v, "iou": {}} for i, v in enumerate(values)]

    results = {"eval_sets": ["day-val", "dusk"], "arms": {
        "a-real": {"eval": {"day-val": entries([0.40, 0.40]), "dusk": entries([0.10, 0.12])}},
        "p-photo": {"eval": {"day-val": entries([0.39, 0.39]), "dusk": entries([0.20, 0.22])}},
        "t-target": {"eval": {"day-val": entries([0.39, 0.385]), "dusk": entries([0.25, 0.24])}},
        "tp": {"eval": {"day-val": entries([0.37, 0.37]), "dusk": entries([0.21, 0.30])}},
    }}
    paired = bm.format_paired(results)
    assert "| t-target | dusk | +3.5 | +5.0, +2.0 |" in paired
    assert "| a-real | dusk | -10.0 | -10.0, -10.0 |" in paired
    goal = bm.format_goal(results)
    assert "goal 1 (best target-aware arm tp >= p-photo + 3.0 at dusk, positive on every seed): +4.5 (+1.0, +8.0) -> MET" in goal
    assert "goal 2 (tp >= t-target at dusk): tp 25.5 vs t-target 24.5 -> MET" in goal
    assert "t-target -1.3, tp -3.0 -> tp: NOT MET" in goal  # the best arm's day-val is 3.0 below a-real
    results["arms"]["tp"]["eval"]["dusk"] = entries([0.19, 0.30])  # the best arm, but one seed below p-photo
    results["arms"]["t-target"]["eval"]["dusk"] = entries([0.19, 0.24])
    assert "+3.5 (-1.0, +8.0) -> NOT MET" in bm.format_goal(results)
