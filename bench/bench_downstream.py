"""Does the data help? Train a small segmentation network on CamVid with and without spadepis outputs.

Everything goes through what a training job would use: a stylize-only spadepis run (``spadepis run``,
the real flow) over the training frames writes a manifest, and the augmentation images and their label
maps are read back with :class:`spadepis.pipeline.manifest.AugmentedDataset` (labels from ``label_uri``).

Data (``../shared/data/camvid``, 480x360 photos, 11 classes + void 11), split by time so that no
evaluation frame has a near-duplicate neighbour in the training set:

* ``train``: daytime sequences 0006R0 and 0016E5 (train + val folders) at their regular 1 s spacing,
  minus the held-back and style frames below (254 frames; ``--quick`` keeps every 4th: 64);
* ``day-val`` (held back, in-domain evaluation, the only set settings were chosen on): 0006R0 frames
  >= 3360 (the last 20 s) and 0016E5 frames 4350-4920 (the 20 s after its recording gap);
* ``dusk`` (domain shift): the later half (by frame number) of the 62 frames of 0001TP; never trained on,
  never a style;
* ``target`` photos: the earlier half of 0001TP, used as styles WITHOUT their labels by the target arms
  (``--target-photos DIR``: other photos);
* style pool: CamVid daytime frames used neither for training nor evaluation (the 5-6 s buffers
  between the training and day-val blocks, and every 4th frame of the dense 0016E5 07959-08159
  block, whose other frames are left out), with their label maps; plus the photos of
  ``../shared/data/coco_stuff`` (train + val) and ``../shared/data/wct2_examples/style``, without
  label maps (COCO-Stuff ids are another label space; with ``select: semantic`` only styles with
  label maps are ranked, so these photos are used by ``--select random`` only).

Arms, every one with the same network, seeds, number of optimisation steps and batch size:

* ``a-real``: real training frames only;
* ``b-aug``: every batch has ``round(batch * aug_fraction)`` spadepis outputs (k styles per training
  frame) and real frames for the rest;
* ``c-filtered``: as ``b-aug``, keeping only the rows that pass ``--filter`` on the manifest's quality
  scores (``AugmentedDataset(where=...)``);
* ``b-random`` (optional): as ``b-aug`` with a second run that selects styles at random from the whole
  pool (``--select semantic`` is the default of the main run);
* ``p-photo``: what a user would do instead: the same share of every batch holds real frames through a
  ``torchvision.transforms.v2`` photometric jitter (:data:`JITTER`, ranges fixed a priori);
* ``t-target``: a run whose styles are the target photos, without labels, ``select: random``;
* ``t-pseudo``: the target photos pseudo-labelled through ``styles.labels: predict`` / ``styles.segmenter``
  by the ``a-real`` model of the same seed (exported to TorchScript; ``--pseudo-labeller p-photo``: the
  ``p-photo`` model, trained with the jitter), ``select: semantic``, label-aware transfer
  (``--unmatched``: ``styles.unmatched``), one run per seed;
* ``tp``: the outputs of the better target arm (per seed, by day-val mIoU; ``--tp-base``) plus the jitter
  on every sample (``--tp-jitter real``: on the real frames only; ``slots``: on real frames in a share of
  their own, next to the outputs' share; ``outputs``: on the outputs only).

The report gives mean +- std over seeds per arm and evaluation set, the paired difference to ``p-photo``
per seed, and the issue's goal (best target-aware arm >= p-photo + 3 at dusk on every seed, tp >= either
target arm, day-val within 1.5 of a-real) as MET / NOT MET.

Seeds run in rounds (seed 0 of every arm, then seed 1, ...); the JSON and the table are rewritten after
each round, so an interrupted run still compares the arms on the same seeds.

Network: a compact U-Net (stride-2 stem, 4 levels, width 16, ~0.5 M parameters) built from scratch,
trained at 160x120 with AdamW + one-cycle, horizontal flips for every arm; cross-entropy ignoring void.
Metric: dataset-level IoU per class from the confusion matrix over the whole evaluation set (void
pixels ignored), mIoU = mean over the 11 classes that occur in the set's labels or predictions.

Usage::

    python bench/bench_downstream.py --quick          # 64 frames, k=1, 80 steps, 3 seeds
    python bench/bench_downstream.py --threads 1      # 254 frames, k=2, 600 steps, 3 seeds x 7 arms (~1.5 h on 2 cores)
    python bench/bench_downstream.py --threads 1 --arms a-real,p-photo,t-target,t-pseudo,tp   # the target arms
    python bench/bench_downstream.py --threads 1 --seeds 5 --arms a-real,p-photo,t-target,t-pseudo,tp \
        --pseudo-labeller p-photo --unmatched global --tp-base t-pseudo --tp-jitter slots   # README's table
    python bench/bench_downstream.py --reuse-run bench/results/downstream-work/runs/<run_id>
    python bench/bench_downstream.py --eval-name kitti --eval-photos DIR --eval-labels DIR   # extra eval sets

Prints the table (mIoU and road/car/pedestrian/sky/building IoU, mean +- std over seeds, per arm and
evaluation set) and the spadepis run's throughput; writes JSON beside it (bench/results/).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "sign", "fence", "car", "pedestrian", "bicyclist")
VOID = 11
N_CLASSES = len(CLASSES)
REPORT_CLASSES = ("road", "car", "pedestrian", "sky", "building")
ARMS = ("a-real", "b-aug", "c-filtered", "b-random", "p-photo", "t-target", "t-pseudo", "tp")
TARGET_ARMS = ("t-target", "t-pseudo")

# Photometric jitter of arm p-photo (and tp), fixed before any result was seen (the ranges); each
# factor is drawn uniformly per sample: brightness, contrast and saturation factors, gamma, and a colour cast
# (an independent gain per RGB channel).
JITTER = {"brightness": (0.4, 1.3), "contrast": (0.5, 1.5), "saturation": (0.5, 1.5), "gamma": (0.7, 2.0),
          "cast": (0.85, 1.15)}
DAY_SEQUENCES = ("0006R0", "0016E5")
DUSK_SEQUENCE = "0001TP"
IMAGE_EXTS = (".jpg", ".jpeg", ".png")

# ---------------------------------------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class Frame:
    id: str
    photo: Path
    label: Path

    @property
    def sequence(self) -> str:
        return self.id.split("_", 1)[0]

    @property
    def number(self) -> int:
        return int(re.sub(r"\D", "", self.id.split("_", 1)[1]))


def list_frames(photos: Path, labels: Path) -> list[Frame]:
    """Photos and label maps paired by file stem; a photo without a label map is refused."""
    photos, labels = Path(photos), Path(labels)
    if not photos.is_dir():
        raise SystemExit(f"photo folder {photos} does not exist; check the path (--camvid or --eval-photos)")
    if not labels.is_dir():
        raise SystemExit(f"label folder {labels} does not exist; check the path (--camvid or --eval-labels)")
    by_stem = {p.stem: p for p in labels.iterdir() if p.suffix.lower() == ".png"}
    frames, missing = [], []
    for p in sorted(photos.iterdir()):
        if p.suffix.lower() not in IMAGE_EXTS:
            continue
        if p.stem in by_stem:
            frames.append(Frame(p.stem, p, by_stem[p.stem]))
        else:
            missing.append(p.name)
    if missing:
        raise SystemExit(f"{photos}: {len(missing)} photo(s) have no label map of the same stem in {labels}, e.g. {missing[:3]}")
    if not frames:
        raise SystemExit(f"{photos}: no photos ({', '.join(IMAGE_EXTS)}) paired with label maps in {labels}")
    return frames


def split_camvid(camvid: Path) -> dict[str, list[Frame]]:
    """The fixed split described in the module docstring (deterministic, by sequence and frame number)."""
    frames = list_frames(camvid / "train_img", camvid / "train_label") + list_frames(camvid / "val_img", camvid / "val_label")
    out: dict[str, list[Frame]] = {"train": [], "day-val": [], "style": [], "unused": [], "dusk": []}
    for f in sorted(frames, key=lambda f: (f.sequence, f.number)):
        seq, n = f.sequence, f.number
        if seq == DUSK_SEQUENCE:
            out["dusk"].append(f)  # split into target (earlier half) and dusk (later half) below
        elif seq == "0006R0":
            out["day-val" if n >= 3360 else "style" if n >= 3210 else "train"].append(f)
        elif seq == "0016E5":
            if 4350 <= n <= 4920:
                out["day-val"].append(f)
            elif 4950 <= n <= 5100:
                out["style"].append(f)
            elif 7959 <= n <= 8159:  # dense block (2-frame spacing): every 4th frame is a style, the rest unused
                out["style" if (n - 7959) % 8 == 0 else "unused"].append(f)
            else:
                out["train"].append(f)
        else:
            out["unused"].append(f)
    dusk = out["dusk"]  # sorted by frame number: the earlier half is the target pool, the later half the evaluation
    out["target"], out["dusk"] = dusk[: len(dusk) // 2], dusk[len(dusk) // 2 :]
    return out


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    dst.symlink_to(src.resolve())


def link_frames(frames: Sequence[Frame], photos_dir: Path, labels_dir: Path | None) -> None:
    for f in frames:
        _link(f.photo, photos_dir / f.photo.name)
        if labels_dir is not None:
            _link(f.label, labels_dir / f.label.name)


def build_style_pool(work: Path, style_frames: Sequence[Frame], extra_dirs: Sequence[Path]) -> dict[str, Any]:
    """``work/styles/photos`` (+ ``labels`` for the CamVid frames) as symlinks; returns what it holds."""
    photos, labels = work / "styles" / "photos", work / "styles" / "labels"
    for d in (photos, labels):
        if d.exists():
            for p in d.iterdir():
                p.unlink()
    link_frames(style_frames, photos, labels)
    extra = []
    for d in extra_dirs:
        if not d.is_dir():
            print(f"style folder {d} not found; left out of the pool")
            continue
        for p in sorted(d.iterdir()):
            if p.suffix.lower() in IMAGE_EXTS:
                _link(p, photos / p.name)
                extra.append(p.stem)
    return {"photos": str(photos), "labels": str(labels), "camvid_frames": [f.id for f in style_frames],
            "unlabelled_photos": extra}


# ------------------------------------------------------------------------------------- the spadepis run


def _supports_semantic() -> bool:
    from spadepis.pipeline.config import StylesConfig

    return "select" in StylesConfig.model_fields


def run_config(train_dir: Path, pool: dict[str, Any], out: Path, args, select: str,
               styles: dict[str, Any] | None = None) -> dict[str, Any]:
    """The stylize-only run config (a plain dict, written as YAML for ``spadepis run``). ``styles``: the styles
    section to use instead of the day pool's (target arms)."""
    if styles is None:
        styles = {"source": pool["photos"], "per_sample": args.k, "max_side": args.style_max_side}
        if _supports_semantic():
            styles["select"] = select
            styles["labels"] = pool["labels"]
            styles["ignore_labels"] = [VOID]
        elif select != "random":
            raise SystemExit("--select semantic needs styles.select (issue 13) in this spadepis; use --select random")
    return {
        "dataset": {
            "preset": "custom",
            "preset_overrides": {"label_nc": VOID + 1, "contain_dontcare_label": False, "no_instance": True},
            "name": "camvid-day-train",
            "labels": str(train_dir / "labels"),
            "photos": str(train_dir / "photos"),
            "max_side": args.run_max_side,
        },
        "styles": styles,
        "models": {"stylizer": args.stylizer, "stylizer_weights": args.stylizer_weights, "smoothing": args.smoothing},
        "output": str(out),
        "seed": 0,
        "shard_size": 16,
        "device": "cpu",
        "runner": {"kind": "thread", "max_concurrency": 1},
    }


def run_spadepis(config: dict[str, Any], work: Path, threads: int, name: str = "run.yaml") -> dict[str, Any]:
    """``spadepis run`` in a subprocess (its own threads); returns the run URI and the wall time."""
    import yaml

    from spadepis.pipeline.config import parse_config

    cfg = parse_config(config, source="bench config")
    path = work / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    # the ephemeral Prefect API of `spadepis run` takes longer than Prefect's default 20 s to start on a busy machine
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    cmd = [sys.executable, "-m", "spadepis", "run", str(path)]
    print("spadepis run:", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=str(ROOT))
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"spadepis run failed (exit {proc.returncode}); see its output above; config {path}")
    return {"run_uri": cfg.run_uri, "wall_s": wall}


def run_throughput(run_uri: str, wall_s: float | None) -> dict[str, Any]:
    from spadepis.pipeline.manifest import read_index

    df = read_index(run_uri)
    ok = df[df.status == "ok"]
    out: dict[str, Any] = {
        "run_uri": run_uri, "rows": int(len(df)), "ok": int(len(ok)), "errors": int((df.status != "ok").sum()),
        "stylizer": str(ok.stylizer.iloc[0]) if len(ok) else None, "smoothing": str(ok.smoothing.iloc[0]) if len(ok) else None,
        "size": f"{int(ok.width.iloc[0])}x{int(ok.height.iloc[0])}" if len(ok) else None,
        "ms_per_output_p50": float(ok.t_total_ms.median()) if len(ok) else None,
        "ms_per_output_mean": float(ok.t_total_ms.mean()) if len(ok) else None,
        "wall_s": wall_s,
        "outputs_per_s_wall": (len(ok) / wall_s) if wall_s else None,
        "outputs_per_s_stages": (1000.0 / float(ok.t_total_ms.mean())) if len(ok) else None,
    }
    for col in ("style_score", "q_structure", "q_style", "q_coverage", "q_clipped"):
        if col in ok and ok[col].notna().any():
            out[f"{col}_p10_p50_p90"] = [float(x) for x in ok[col].quantile([0.1, 0.5, 0.9])]
    return out


# ------------------------------------------------------------------------------------ tensors in memory


def to_size(image, label, size: tuple[int, int]):
    """``image`` (3,H,W) float [0,1] or uint8 and ``label`` (H,W) int at ``size`` = (H, W): area/bilinear
    with antialias for the photo, nearest for the label. Returns (uint8 (3,h,w), uint8 (h,w))."""
    import torch
    import torch.nn.functional as F

    img = image.float() / (255.0 if image.dtype == torch.uint8 else 1.0)
    if tuple(img.shape[-2:]) != tuple(size):
        img = F.interpolate(img[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    lab = label.long()
    if tuple(lab.shape[-2:]) != tuple(size):
        lab = F.interpolate(lab[None, None].float(), size=size, mode="nearest")[0, 0].long()
    lab = torch.where((lab < 0) | (lab > VOID), torch.full_like(lab, VOID), lab)
    return (img * 255).round().clamp_(0, 255).to(torch.uint8), lab.to(torch.uint8)


def load_frames(frames: Sequence[Frame], size: tuple[int, int]):
    """Real photos + label maps -> uint8 tensors (N,3,H,W), (N,H,W) at ``size``."""
    import numpy as np
    import torch
    from PIL import Image

    xs, ys = [], []
    for f in frames:
        img = np.asarray(Image.open(f.photo).convert("RGB"))
        lab = Image.open(f.label)
        if lab.mode not in ("L", "P", "I", "I;16"):
            lab = lab.convert("L")
        x, y = to_size(torch.from_numpy(img.transpose(2, 0, 1).copy()), torch.from_numpy(np.asarray(lab).astype(np.int64)), size)
        xs.append(x)
        ys.append(y)
    return torch.stack(xs), torch.stack(ys)


def augmented_dataset(run_uri_or_rows, where: str | Callable | None):
    """``AugmentedDataset`` with the quality filter (issue 13's ``where``), or a clear refusal without it."""
    from spadepis.pipeline.manifest import AugmentedDataset

    if where is None:
        return AugmentedDataset(run_uri_or_rows)
    if "where" not in inspect.signature(AugmentedDataset).parameters:
        raise RuntimeError("this spadepis has no AugmentedDataset(where=...) (issue 13: quality scores); drop arm c")
    return AugmentedDataset(run_uri_or_rows, where=where)


def load_augmented(ds, size: tuple[int, int]):
    """Every item of an ``AugmentedDataset`` -> uint8 tensors at ``size`` plus the source ids."""
    import torch

    xs, ys, ids = [], [], []
    for i in range(len(ds)):
        image, label, meta = ds[i]
        x, y = to_size(image, label, size)
        xs.append(x)
        ys.append(y)
        ids.append(meta["source_id"])
    if not xs:
        return torch.zeros((0, 3, *size), dtype=torch.uint8), torch.zeros((0, *size), dtype=torch.uint8), ids
    return torch.stack(xs), torch.stack(ys), ids


# --------------------------------------------------------------------------------------------- model


def build_unet(n_classes: int = N_CLASSES, width: int = 16):
    """A compact U-Net: stride-2 stem, 4 levels (w, 2w, 4w, 8w), bilinear decoder, logits at input size."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    def block(i: int, o: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
            nn.Conv2d(o, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
        )

    class UNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            w = width
            self.stem = nn.Sequential(nn.Conv2d(3, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True))
            self.e1, self.e2, self.e3, self.e4 = block(w, w), block(w, 2 * w), block(2 * w, 4 * w), block(4 * w, 8 * w)
            self.d3, self.d2, self.d1 = block(12 * w, 4 * w), block(6 * w, 2 * w), block(3 * w, w)
            self.head = nn.Conv2d(w, n_classes, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            def up(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
                return F.interpolate(t, size=ref.shape[-2:], mode="bilinear", align_corners=False)

            e1 = self.e1(self.stem(x))
            e2 = self.e2(F.max_pool2d(e1, 2))
            e3 = self.e3(F.max_pool2d(e2, 2))
            e4 = self.e4(F.max_pool2d(e3, 2))
            d3 = self.d3(torch.cat([up(e4, e3), e3], 1))
            d2 = self.d2(torch.cat([up(d3, e2), e2], 1))
            d1 = self.d1(torch.cat([up(d2, e1), e1], 1))
            return up(self.head(d1), x)

    return UNet()


_MEAN, _STD = (0.39, 0.41, 0.42), (0.30, 0.31, 0.31)  # rough CamVid statistics; the same for every arm


def export_segmenter(model, size: tuple[int, int], path: Path, example_hw: tuple[int, int] = (240, 320)) -> Path:
    """The trained network as a ``styles.segmenter`` TorchScript file: takes (1,3,H,W) RGB in [0,1], resizes it
    to the training ``size`` as :func:`to_size` does, normalises, and returns scores (1, 12, H, W) (the 11
    classes upsampled bilinearly, plus a never-chosen void channel: the run's label space has 12 ids)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Labeller(nn.Module):
        def __init__(self, net) -> None:
            super().__init__()
            self.net = net
            self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h, w = x.shape[-2], x.shape[-1]
            y = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
            logits = self.net((y - self.mean) / self.std)
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
            return torch.cat([logits, torch.full_like(logits[:, :1], -1e4)], 1)

    wrapper = Labeller(model).eval()
    with torch.no_grad():
        traced = torch.jit.trace(wrapper, torch.rand(1, 3, *example_hw), check_trace=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(path))
    return path



def normalise(x_u8):
    import torch

    mean = torch.tensor(_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(_STD).view(1, 3, 1, 1)
    return (x_u8.float() / 255.0 - mean) / std


def photometric_jitter(x_u8, gen):
    """``torchvision.transforms.v2`` photometric jitter of a uint8 batch (N,3,H,W), factors drawn per sample from
    :data:`JITTER` with ``gen`` (seeded, so every arm's draws are reproducible)."""
    import torch
    from torchvision.transforms.v2 import functional as TF

    def u(lo_hi, n=1):
        lo, hi = lo_hi
        return (lo + (hi - lo) * torch.rand(n, generator=gen)).tolist()

    out = []
    for img in x_u8:
        (b,), (c,), (s,), (g,) = u(JITTER["brightness"]), u(JITTER["contrast"]), u(JITTER["saturation"]), u(JITTER["gamma"])
        cast = torch.tensor(u(JITTER["cast"], 3)).view(3, 1, 1)
        img = TF.adjust_brightness(img, b)
        img = TF.adjust_contrast(img, c)
        img = TF.adjust_saturation(img, s)
        img = TF.adjust_gamma(img, g)
        out.append((img.float() * cast).round_().clamp_(0, 255).to(torch.uint8))
    return torch.stack(out) if out else x_u8


@dataclasses.dataclass
class TrainSettings:
    steps: int
    batch: int = 8
    aug_fraction: float = 0.25
    lr: float = 3e-3
    weight_decay: float = 1e-4
    width: int = 16


def train(real_x, real_y, aug_x, aug_y, settings: TrainSettings, seed: int, log_every: int = 0, jitter: str = "none"):
    """Train from scratch; every step draws ``n_aug = round(batch * aug_fraction)`` augmentation images
    (none when ``aug_x`` is empty or None) and real frames for the rest. Returns (model, losses).

    ``jitter``: ``none``; ``slots`` (arm p-photo): the ``n_aug`` augmentation slots hold jittered real frames
    instead (same share of each batch); ``all`` (arm tp): every sample of the batch is jittered; ``real`` (arm tp
    with ``--tp-jitter real``): only the real frames of each batch, next to unjittered spadepis outputs;
    ``both`` (arm tp with ``--tp-jitter slots``): ``n_aug`` spadepis outputs and ``n_aug`` jittered real frames,
    clean real frames for the rest; ``outputs`` (arm tp with ``--tp-jitter outputs``): only the spadepis outputs,
    next to clean real frames."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    model = build_unet(width=settings.width)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings.lr, total_steps=max(settings.steps, 1), pct_start=0.15)
    gen = torch.Generator().manual_seed(10_000 + seed)
    has_aug = (aug_x is not None and len(aug_x) > 0) or jitter == "slots"
    n_aug = int(round(settings.batch * settings.aug_fraction)) if has_aug else 0
    n_jit = n_aug if jitter == "both" else 0
    n_real = settings.batch - n_aug - n_jit
    if n_real < 0:
        raise SystemExit(f"--aug-fraction {settings.aug_fraction}: with --tp-jitter slots two shares of "
                         f"{n_aug} samples do not fit in a batch of {settings.batch}")
    losses = []
    model.train()
    t0 = time.perf_counter()
    for step in range(settings.steps):
        ri = torch.randint(len(real_x), (n_real,), generator=gen)
        xs, ys = [real_x[ri]], [real_y[ri]]
        if n_aug and jitter == "slots":
            ai = torch.randint(len(real_x), (n_aug,), generator=gen)
            xs.append(photometric_jitter(real_x[ai], gen))
            ys.append(real_y[ai])
        elif n_aug:
            ai = torch.randint(len(aug_x), (n_aug,), generator=gen)
            xs.append(aug_x[ai])
            ys.append(aug_y[ai])
        if n_jit:
            ji = torch.randint(len(real_x), (n_jit,), generator=gen)
            xs.append(photometric_jitter(real_x[ji], gen))
            ys.append(real_y[ji])
        x, y = torch.cat(xs), torch.cat(ys).long()
        if jitter == "all":
            x = photometric_jitter(x, gen)
        elif jitter == "real":
            x = torch.cat([photometric_jitter(x[:n_real], gen), x[n_real:]])
        elif jitter == "outputs":
            x = torch.cat([x[:n_real], photometric_jitter(x[n_real:], gen)])
        flip = torch.rand(len(x), generator=gen) < 0.5
        x[flip], y[flip] = x[flip].flip(-1), y[flip].flip(-1)
        loss = F.cross_entropy(model(normalise(x)), y, ignore_index=VOID)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if log_every and (step + 1) % log_every == 0:
            print(f"  step {step + 1}/{settings.steps}: loss {sum(losses[-log_every:]) / log_every:.3f}, "
                  f"{(time.perf_counter() - t0) / (step + 1):.2f} s/step", flush=True)
    return model, losses


# -------------------------------------------------------------------------------------------- metric


def confusion(pred, target, n_classes: int = N_CLASSES, ignore: int = VOID):
    """(n, n) int64 confusion matrix, rows = ground truth, columns = prediction; ``ignore`` pixels left out."""
    import torch

    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    keep = (target != ignore) & (target >= 0) & (target < n_classes)
    idx = target[keep] * n_classes + pred[keep].clamp(0, n_classes - 1)
    return torch.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def iou_per_class(cm):
    """IoU_c = TP / (TP + FP + FN) from a confusion matrix; NaN for a class absent from labels and predictions."""
    import torch

    cm = cm.double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))


def mean_iou(cm) -> float:
    import torch

    iou = iou_per_class(cm)
    return float(torch.nanmean(iou))


def evaluate(model, x_u8, y_u8, batch: int = 16):
    import torch

    model.eval()
    cm = torch.zeros(N_CLASSES, N_CLASSES, dtype=torch.long)
    with torch.no_grad():
        for i in range(0, len(x_u8), batch):
            pred = model(normalise(x_u8[i : i + batch])).argmax(1)
            cm += confusion(pred, y_u8[i : i + batch])
    return cm


# ---------------------------------------------------------------------------------------------- report


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    import numpy as np

    v = np.asarray([x for x in values if x == x], dtype=float)
    if not v.size:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def format_table(results: dict[str, Any]) -> str:
    cols = ["mIoU", *REPORT_CLASSES]
    lines = ["| arm | eval set | train rows (aug) | seeds | " + " | ".join(cols) + " |",
             "|---|---|---|---:|" + "---:|" * len(cols)]
    for arm, r in results["arms"].items():
        for name in results["eval_sets"]:
            per_seed = r["eval"][name]
            cells = []
            for c in cols:
                vals = [s["miou"] if c == "mIoU" else s["iou"][c] for s in per_seed]
                m, sd = _mean_std(vals)
                cells.append(f"{100 * m:.1f} ± {100 * sd:.1f}")
            lines.append(f"| {arm} | {name} | {r['n_real']} ({r['n_aug']}) | {len(per_seed)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _per_seed(results: dict[str, Any], arm: str, name: str) -> dict[int, float]:
    r = results["arms"].get(arm)
    return {e["seed"]: e["miou"] for e in r["eval"].get(name, [])} if r else {}


def format_paired(results: dict[str, Any], ref: str = "p-photo") -> str:
    """mIoU difference to ``ref`` per seed (same seed: same initial weights and batch draws): mean (per seed)."""
    if ref not in results["arms"]:
        return f"(no paired differences: arm {ref} was not run)"
    lines = [f"| arm | eval set | mIoU - {ref}: mean | per seed |", "|---|---|---:|---|"]
    for arm in results["arms"]:
        if arm == ref:
            continue
        for name in results["eval_sets"]:
            a, b = _per_seed(results, arm, name), _per_seed(results, ref, name)
            seeds = sorted(set(a) & set(b))
            if not seeds:
                continue
            d = [100 * (a[s] - b[s]) for s in seeds]
            lines.append(f"| {arm} | {name} | {sum(d) / len(d):+.1f} | " + ", ".join(f"{x:+.1f}" for x in d) + " |")
    return "\n".join(lines)


def format_goal(results: dict[str, Any]) -> str:
    """The issue's goal, checked on the seeds done: best target-aware arm >= p-photo + 3 at dusk with a positive
    paired difference on every seed; tp >= both target arms alone; its day-val within 1.5 of a-real."""
    arms = results["arms"]
    if "p-photo" not in arms or "dusk" not in results["eval_sets"]:
        return "goal: not checked (needs p-photo and the dusk set)"
    mean = lambda arm, name: (lambda v: sum(v.values()) / len(v) if v else float("nan"))(_per_seed(results, arm, name))  # noqa: E731
    cands = [a for a in ("t-target", "t-pseudo", "tp") if a in arms and _per_seed(results, a, "dusk")]
    if not cands:
        return "goal: not checked (no target-aware arm)"
    best = max(cands, key=lambda a: mean(a, "dusk"))
    a, p = _per_seed(results, best, "dusk"), _per_seed(results, "p-photo", "dusk")
    diffs = [100 * (a[s] - p[s]) for s in sorted(set(a) & set(p))]
    md = sum(diffs) / len(diffs) if diffs else float("nan")
    ok1 = md >= 3.0 and all(d > 0 for d in diffs)
    lines = [f"goal 1 (best target-aware arm {best} >= p-photo + 3.0 at dusk, positive on every seed): "
             f"{md:+.1f} ({', '.join(f'{d:+.1f}' for d in diffs)}) -> {'MET' if ok1 else 'NOT MET'}"]
    if "tp" in arms:
        others = [x for x in ("t-target", "t-pseudo") if x in arms]
        ok2 = all(mean("tp", "dusk") >= mean(x, "dusk") for x in others)
        lines.append(f"goal 2 (tp >= {' and '.join(others)} at dusk): tp {100 * mean('tp', 'dusk'):.1f} vs "
                     + ", ".join(f"{x} {100 * mean(x, 'dusk'):.1f}" for x in others) + f" -> {'MET' if ok2 else 'NOT MET'}")
    if "a-real" in arms and "day-val" in results["eval_sets"]:
        ref = mean("a-real", "day-val")
        lines.append(f"goal 3 (day-val within 1.5 of a-real {100 * ref:.1f}): "
                     + ", ".join(f"{x} {100 * (mean(x, 'day-val') - ref):+.1f}" for x in cands)
                     + f" -> {best}: {'MET' if mean(best, 'day-val') >= ref - 0.015 else 'NOT MET'}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ main


def _eval_sets(args, split) -> dict[str, tuple[Any, ...]]:
    sets: dict[str, list[Frame]] = {"day-val": split["day-val"], "dusk": split["dusk"]}
    photos, labels, names = args.eval_photos or [], args.eval_labels or [], args.eval_name or []
    if len(photos) != len(labels):
        raise SystemExit(f"--eval-photos given {len(photos)} time(s) but --eval-labels {len(labels)}; give them in pairs")
    if len(names) > len(photos):
        raise SystemExit("--eval-name given more often than --eval-photos; one name per --eval-photos/--eval-labels pair")
    for i, (p, l) in enumerate(zip(photos, labels)):
        name = names[i] if i < len(names) else f"eval{i + 1}"
        if name in sets:
            raise SystemExit(f"--eval-name {name!r} is used twice (day-val and dusk are built in)")
        sets[name] = list_frames(Path(p), Path(l))
    return sets


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="64 training frames, k=1, fewer steps (~8 min)")
    ap.add_argument("--camvid", type=Path, default=ROOT.parent / "shared" / "data" / "camvid")
    ap.add_argument("--style-dir", type=Path, action="append", default=None,
                    help="extra style photos without label maps (repeatable; default: ../shared coco_stuff train/val "
                    "and wct2_examples/style)")
    ap.add_argument("--arms", default="a-real,b-aug,c-filtered,p-photo,t-target,t-pseudo,tp",
                    help="comma list of a-real, b-aug, c-filtered, b-random (b-aug with select: random, a second run), "
                    "p-photo (photometric jitter), t-target (styles = target photos, select random), t-pseudo (target "
                    "photos pseudo-labelled by a model of the seed, --pseudo-labeller, select semantic), tp (the better "
                    "target arm on day-val + the jitter, --tp-jitter)")
    ap.add_argument("--target-photos", type=Path, default=None,
                    help="photos of the target conditions, used as styles without labels (default: the earlier half, "
                    "by frame number, of the 0001TP dusk frames; the dusk evaluation uses only the later half)")
    ap.add_argument("--tp-base", choices=["auto", "t-target", "t-pseudo"], default="auto",
                    help="the target arm whose outputs tp uses; auto: per seed, the one with the higher day-val mIoU")
    ap.add_argument("--tp-jitter", choices=["all", "real", "slots", "outputs"], default="all",
                    help="tp: the jitter on every sample (all, the arm's definition), on the real frames only, next "
                    "to unjittered spadepis outputs (real), or in slots of its own (slots: the same share of each "
                    "batch as p-photo gets, next to the spadepis outputs' share; the rest stays clean real frames), or on the "
                    "spadepis outputs only, next to clean real frames (outputs)")
    ap.add_argument("--pseudo-labeller", choices=["a-real", "p-photo"], default="a-real",
                    help="t-pseudo: which model of the same seed labels the target photos (a-real: the real-only "
                    "model, the arm's definition; p-photo: the model trained with the photometric jitter, what a "
                    "user who tried the jitter first already has)")
    ap.add_argument("--unmatched", choices=["keep", "global"], default="keep",
                    help="styles.unmatched of the t-pseudo runs: what content classes that the style photo lacks get")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=None, help="optimisation steps per training (full 600, quick 80)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--aug-fraction", type=float, default=0.25, help="share of each batch taken from spadepis outputs")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--width", type=int, default=16, help="U-Net base width")
    ap.add_argument("--size", default="120x160", help="training/eval resolution HxW (default 120x160)")
    ap.add_argument("--k", type=int, default=None, help="styles per training frame (full 2, quick 1)")
    ap.add_argument("--select", choices=["semantic", "random"], default="semantic")
    ap.add_argument("--filter", default="q_structure >= 0.6 and q_clipped <= 0.05",
                    help="arm c: AugmentedDataset(where=...) query on the manifest's quality columns")
    ap.add_argument("--stylizer", choices=["wct16x", "photowct", "color"], default=None,
                    help="default wct16x with ../shared/weights/wct_16x when present, else color")
    ap.add_argument("--stylizer-weights", default=None)
    ap.add_argument("--smoothing", choices=["exact", "fast", "none"], default="exact")
    ap.add_argument("--run-max-side", type=int, default=160, help="dataset.max_side of the spadepis run (default 160)")
    ap.add_argument("--style-max-side", type=int, default=320, help="styles.max_side of the spadepis run")
    ap.add_argument("--reuse-run", default=None, help="an existing stylize-only run (URI) of the training frames "
                    "(made with --select; arms b-aug, c-filtered)")
    ap.add_argument("--reuse-random-run", default=None, help="the same for arm b-random (select: random)")
    ap.add_argument("--eval-photos", action="append", help="extra evaluation photos (repeatable, paired with --eval-labels)")
    ap.add_argument("--eval-labels", action="append", help="label maps (CamVid ids) of the --eval-photos of the same rank")
    ap.add_argument("--eval-name", action="append", help="name of the extra evaluation set of the same rank")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "results" / "downstream-work")
    ap.add_argument("--json", type=Path, default=None, help="default bench/results/downstream[-quick].json")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="at most N training frames, evenly spaced (trials)")
    ap.add_argument("--log-every", type=int, default=100, help="print the loss every N steps (0: never)")
    args = ap.parse_args(argv)

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise SystemExit(f"--arms: unknown arm(s) {unknown}; use {', '.join(ARMS)}")
    if "b-random" in arms and args.select == "random":
        raise SystemExit("--arms b-random compares random with semantic selection; it needs --select semantic")
    if not re.match(r"^\d+x\d+$", args.size):
        raise SystemExit(f"--size {args.size!r}: expected HxW, e.g. 120x160")
    size = tuple(int(v) for v in args.size.split("x"))
    steps = args.steps or (80 if args.quick else 600)
    k = args.k or (1 if args.quick else 2)
    args.k = k
    if args.stylizer is None:
        wdir = ROOT.parent / "shared" / "weights" / "wct_16x"
        args.stylizer, args.stylizer_weights = ("wct16x", str(wdir)) if wdir.is_dir() else ("color", None)
    if not 0.0 <= args.aug_fraction < 1.0:
        raise SystemExit(f"--aug-fraction {args.aug_fraction}: must be in [0, 1)")
    if not args.camvid.is_dir():
        raise SystemExit(f"--camvid {args.camvid}: not a folder; point it at the CamVid folder (train_img/, train_label/, ...)")

    split = split_camvid(args.camvid)
    train_frames = split["train"][::4] if args.quick else split["train"]
    if args.limit:
        train_frames = train_frames[:: max(1, len(train_frames) // args.limit)][: args.limit]
    eval_sets = _eval_sets(args, split)
    load = os.getloadavg()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} torch threads, OMP/MKL/OpenBLAS {args.threads}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(f"split: train {len(train_frames)} frames (of {len(split['train'])}), day-val {len(split['day-val'])}, "
          f"dusk {len(split['dusk'])}, CamVid style frames {len(split['style'])}, unused {len(split['unused'])}")

    work = args.work / ("quick" if args.quick else "full")
    work.mkdir(parents=True, exist_ok=True)
    pool: dict[str, Any] = {}
    runs: dict[str, dict[str, Any]] = {}  # run name (semantic, random, target, pseudo-seedN) -> run info
    train_linked = False

    def link_train() -> None:
        nonlocal train_linked
        if not train_linked:
            link_frames(train_frames, work / "train" / "photos", work / "train" / "labels")
            train_linked = True

    wanted = {args.select for a in arms if a in ("b-aug", "c-filtered")} | ({"random"} if "b-random" in arms else set())
    for select in sorted(wanted):
        reuse = args.reuse_random_run if (select == "random" and args.select != "random") else args.reuse_run
        if reuse:
            run_uri, wall = reuse, None
            print(f"reusing the spadepis run {run_uri} (select: {select})")
        else:
            link_train()
            if not pool:
                extra = args.style_dir if args.style_dir is not None else [
                    ROOT.parent / "shared" / "data" / "coco_stuff" / "train_img",
                    ROOT.parent / "shared" / "data" / "coco_stuff" / "val_img",
                    ROOT.parent / "shared" / "data" / "wct2_examples" / "style"]
                pool = build_style_pool(work, split["style"], extra)
                print(f"style pool: {len(pool['camvid_frames'])} CamVid day frames with label maps + "
                      f"{len(pool['unlabelled_photos'])} photos without (coco_stuff, wct2_examples)")
            cfg = run_config(work / "train", pool, work / "runs", args, select)
            res = run_spadepis(cfg, work, args.threads, f"run-{select}.yaml")
            run_uri, wall = res["run_uri"], res["wall_s"]
        runs[select] = run_throughput(run_uri, wall)
        print(f"spadepis run ({select}):", json.dumps(runs[select]), flush=True)
    run_info = runs.get(args.select, {})

    # the target pool: photos of the conditions the model will meet, used without their labels
    target_arms = [a for a in arms if a in TARGET_ARMS]
    if "tp" in arms:
        for base in (TARGET_ARMS if args.tp_base == "auto" else (args.tp_base,)):
            if base not in target_arms:
                target_arms.append(base)
    target_dir = None
    if target_arms:
        if args.target_photos is not None:
            target_dir = args.target_photos
            if not target_dir.is_dir():
                raise SystemExit(f"--target-photos {target_dir}: not a folder of photos")
        else:
            target_dir = work / "target" / "photos"
            if target_dir.exists():
                for p in target_dir.iterdir():
                    p.unlink()
            link_frames(split["target"], target_dir, None)
        n_target = sum(1 for p in target_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        print(f"target pool: {n_target} photos in {target_dir} (used without labels"
              + ("; the earlier half of 0001TP, the dusk evaluation is the later half)" if args.target_photos is None else ")"))

    def target_styles(select: str, segmenter: Path | None = None) -> dict[str, Any]:
        st: dict[str, Any] = {"source": str(target_dir), "per_sample": args.k, "max_side": args.style_max_side,
                              "select": select}
        if segmenter is not None:
            st.update(labels="predict", segmenter=str(segmenter), ignore_labels=[VOID], unmatched=args.unmatched)
        return st

    if "t-target" in target_arms:
        link_train()
        cfg = run_config(work / "train", pool, work / "runs", args, "random", styles=target_styles("random"))
        res = run_spadepis(cfg, work, args.threads, "run-target.yaml")
        runs["target"] = run_throughput(res["run_uri"], res["wall_s"])
        print("spadepis run (target, select: random):", json.dumps(runs["target"]), flush=True)

    t0 = time.perf_counter()
    real_x, real_y = load_frames(train_frames, size)
    evals = {name: load_frames(frames, size) for name, frames in eval_sets.items()}
    aug: dict[str, tuple[Any, Any, list[str]]] = {}
    if "b-aug" in arms:
        aug["b-aug"] = load_augmented(augmented_dataset(run_info["run_uri"], None), size)
    if "b-random" in arms:
        aug["b-random"] = load_augmented(augmented_dataset(runs["random"]["run_uri"], None), size)
    if "c-filtered" in arms:
        try:
            aug["c-filtered"] = load_augmented(augmented_dataset(run_info["run_uri"], args.filter), size)
        except RuntimeError as exc:
            print(f"arm c-filtered skipped: {exc}")
            arms.remove("c-filtered")
    if "target" in runs:
        aug["t-target"] = load_augmented(augmented_dataset(runs["target"]["run_uri"], None), size)
    print(f"data loaded in {time.perf_counter() - t0:.1f} s: real {tuple(real_x.shape)}, "
          + ", ".join(f"{a} {len(v[0])} rows" for a, v in aug.items()), flush=True)
    train_ids = {f.id for f in train_frames}

    def check_rows(a: str, ids: list[str]) -> None:
        foreign = sorted(set(ids) - train_ids)
        if foreign:
            raise SystemExit(f"{a}: the spadepis run has rows of frames outside the training set, e.g. {foreign[:3]}; "
                             "--reuse-run must be a run over the training frames of this mode")

    for a, (_, _, ids) in aug.items():
        check_rows(a, ids)
    if "c-filtered" in aug and len(aug["c-filtered"][0]) == 0:
        print(f"arm c-filtered skipped: --filter {args.filter!r} keeps no row")
        arms.remove("c-filtered")

    settings = TrainSettings(steps=steps, batch=args.batch, aug_fraction=args.aug_fraction, lr=args.lr, width=args.width)
    print("photometric jitter (p-photo, tp; fixed a priori, uniform per sample): "
          + ", ".join(f"{k} {lo}-{hi}" for k, (lo, hi) in JITTER.items()), flush=True)
    results: dict[str, Any] = {
        "command": "python bench/bench_downstream.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": dataclasses.asdict(settings), "size_hw": list(size), "k": k, "select": args.select,
        "filter": args.filter, "stylizer": args.stylizer, "smoothing": args.smoothing, "jitter": JITTER,
        "tp_jitter": args.tp_jitter, "pseudo_labeller": args.pseudo_labeller, "unmatched": args.unmatched,
        "seeds": list(range(args.seeds)), "threads": args.threads, "torch": torch.__version__,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", "load_avg_start": load,
        "split": {name: [f.id for f in frames] for name, frames in split.items()} | {"train_used": sorted(train_ids)},
        "style_pool": pool, "target_photos": str(target_dir) if target_dir else None,
        "spadepis_run": run_info, "spadepis_runs": runs, "eval_sets": list(evals), "arms": {},
    }
    out = args.json or (ROOT / "bench" / "results" / f"downstream{'-quick' if args.quick else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    for arm in arms:
        n_aug = len(aug[arm][0]) if arm in aug else 0
        results["arms"][arm] = {"n_real": len(real_x), "n_aug": n_aug, "eval": {n: [] for n in evals}, "train_s": []}
    if "tp" in arms:
        results["arms"]["tp"]["base"] = []
    # seed-major order: after every round the table holds the same seeds for every arm (an interrupted run
    # still compares like with like); the JSON and table are rewritten after each round
    # a target arm that is only tp's base is trained too when tp chooses it on day-val (auto); t-pseudo's
    # outputs are made in its turn (one run per seed), so it is kept whenever tp may use them
    seed_arms = [a for a in ARMS if a in arms or (a in target_arms and (args.tp_base == "auto" or a == "t-pseudo"))]
    if "t-pseudo" in seed_arms and args.pseudo_labeller not in seed_arms:
        seed_arms.insert(0, args.pseudo_labeller)  # its model labels the target photos
    for seed in range(args.seeds):
        models: dict[str, Any] = {}
        seed_evals: dict[str, dict[str, float]] = {}
        for arm in seed_arms:
            jitter = {"p-photo": "slots", "tp": {"slots": "both"}.get(args.tp_jitter, args.tp_jitter)}.get(arm, "none")
            if arm == "t-pseudo":  # a model of this seed (--pseudo-labeller) labels the target photos
                labeller = args.pseudo_labeller
                seg = export_segmenter(models[labeller], size, work / "segmenters" / f"{labeller}-seed{seed}.pt")
                link_train()
                cfg = run_config(work / "train", pool, work / "runs", args, "semantic",
                                 styles=target_styles("semantic", seg))
                res = run_spadepis(cfg, work, args.threads, f"run-pseudo-{labeller}-seed{seed}.yaml")
                runs[f"pseudo-seed{seed}"] = run_throughput(res["run_uri"], res["wall_s"])
                print(f"spadepis run (target pseudo-labelled by {labeller} seed {seed}, select: semantic, "
                      f"unmatched: {args.unmatched}):",
                      json.dumps(runs[f"pseudo-seed{seed}"]), flush=True)
                aug["t-pseudo"] = load_augmented(augmented_dataset(res["run_uri"], None), size)
                check_rows("t-pseudo", aug["t-pseudo"][2])
                if "t-pseudo" in results["arms"]:
                    results["arms"]["t-pseudo"]["n_aug"] = len(aug["t-pseudo"][0])
            if arm == "tp":
                if args.tp_base != "auto":
                    base = args.tp_base
                else:  # the target arm with the better day-val mIoU of this seed (never dusk)
                    base = max((a for a in TARGET_ARMS if a in seed_evals), key=lambda a: seed_evals[a]["day-val"])
                aug["tp"] = aug[base]
                results["arms"]["tp"]["base"].append({"seed": seed, "base": base})
                results["arms"]["tp"]["n_aug"] = len(aug[base][0])
            ax, ay = (aug[arm][0], aug[arm][1]) if arm in aug else (None, None)
            t0 = time.perf_counter()
            model, losses = train(real_x, real_y, ax, ay, settings, seed, log_every=args.log_every, jitter=jitter)
            models[arm] = model
            dt = time.perf_counter() - t0
            line = [f"{arm} seed {seed}: {steps} steps in {dt:.0f} s, loss {losses[0]:.2f} -> "
                    f"{sum(losses[-10:]) / len(losses[-10:]):.2f}" + (f" (base {base})" if arm == "tp" else "")]
            seed_evals[arm] = {}
            for name, (ex, ey) in evals.items():
                cm = evaluate(model, ex, ey)
                iou = iou_per_class(cm)
                entry = {"seed": seed, "miou": mean_iou(cm), "iou": {c: float(iou[i]) for i, c in enumerate(CLASSES)}}
                seed_evals[arm][name] = entry["miou"]
                if arm in results["arms"]:
                    results["arms"][arm]["eval"][name].append(entry)
                line.append(f"{name} mIoU {100 * entry['miou']:.1f}")
            if arm in results["arms"]:
                results["arms"][arm]["train_s"].append(dt)
            print("; ".join(line), flush=True)
        results["seeds_done"] = seed + 1
        results["load_avg_end"] = os.getloadavg()
        results["table"] = format_table(results) + "\n\n" + format_paired(results) + "\n\n" + format_goal(results)
        out.write_text(json.dumps(results, indent=1, default=str))
        if seed + 1 < args.seeds:
            print(f"after seed {seed}:\n{results['table']}", flush=True)

    print()
    print(results["table"])
    for select, run_info in runs.items():
        print(f"\nspadepis run (select: {select}): {run_info['ok']} outputs ({run_info['size']}, {run_info['stylizer']} + "
              f"{run_info['smoothing']} smoothing), {run_info['ms_per_output_p50']:.0f} ms/output p50 (stages), "
              + (f"{run_info['outputs_per_s_wall']:.2f} outputs/s over the whole `spadepis run` ({run_info['wall_s']:.0f} s "
                 "incl. Prefect start)" if run_info.get("wall_s") else "reused run"))
    print(f"JSON: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
