"""The embedded demo: data made on the spot, the real pipeline, a contact sheet.

* label maps: procedurally generated outdoor scenes with ADE20K ids (sky, mountains, buildings,
  trees, road, water ...), 256x256, seeded;
* style photos: scikit-image's bundled sample photos (astronaut, chelsea, coffee, rocket), read from
  the installed package, nothing is downloaded;
* models: SPADE with seeded random weights at reduced width (the manifest says ``random-init`` and
  records the digest of those weights), the ``color`` stylizer and exact smoothing.

``spadepis demo`` (``spadepis/cli/run.py``) calls :func:`prepare_demo`, runs the flow, then
:func:`contact_sheet` and :func:`closing_note`. This module itself never imports Prefect.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .config import RunConfig, parse_config
from .sheet import colorize

__all__ = ["ADE20K", "DEMO_STYLES", "make_label_maps", "write_styles", "demo_config", "prepare_demo", "contact_sheet",
           "colorize", "closing_note", "ensure_demo_inputs", "prepare_inputs", "write_config"]

# ADE20K (SceneParsing, objectInfo150) ids as stored in the annotation PNGs (0 = other).
ADE20K = {
    "wall": 1, "building": 2, "sky": 3, "tree": 5, "road": 7, "grass": 10, "sidewalk": 12, "person": 13,
    "earth": 14, "mountain": 17, "plant": 18, "car": 21, "water": 22, "house": 26, "sea": 27, "field": 30,
    "fence": 33, "rock": 35, "sand": 47, "skyscraper": 49, "path": 53, "river": 61, "bridge": 62, "hill": 69,
}
DEMO_STYLES = ("astronaut", "chelsea", "coffee", "rocket")
_SCENES = ("street", "countryside", "coast", "lake")


def _ridge(rng: np.random.Generator, width: int, base: float, amp: float, waves: int = 3) -> np.ndarray:
    """A smooth random horizon: ``base`` + a few sines, one height per column."""
    x = np.linspace(0, 2 * np.pi, width)
    y = np.full(width, base, dtype=np.float64)
    for k in range(1, waves + 1):
        y += amp / k * np.sin(k * x * rng.uniform(0.5, 1.5) + rng.uniform(0, 2 * np.pi))
    return y


def _blob(lab: np.ndarray, cy: float, cx: float, ry: float, rx: float, value: int) -> None:
    h, w = lab.shape
    yy, xx = np.ogrid[:h, :w]
    lab[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0] = value


def _tree(lab: np.ndarray, rng: np.random.Generator, ground_y: float, x: float, size: float) -> None:
    trunk_w = max(2, int(size * 0.12))
    top = int(ground_y - size * 1.6)
    lab[max(0, int(ground_y - size * 0.7)) : int(ground_y), max(0, int(x - trunk_w / 2)) : int(x + trunk_w / 2) + 1] = ADE20K["tree"]
    _blob(lab, top + size * 0.6, x, size * 0.7, size * 0.55 * rng.uniform(0.8, 1.2), ADE20K["tree"])


def _scene(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    h = w = size
    lab = np.full((h, w), ADE20K["sky"], dtype=np.uint8)
    rows = np.arange(h)[:, None]
    if kind == "street":
        horizon = int(h * rng.uniform(0.55, 0.65))
        x = 0
        while x < w:  # a skyline of buildings
            bw = int(rng.integers(w // 10, w // 4))
            top = int(rng.uniform(0.08, 0.45) * h)
            lab[top:horizon, x : x + bw] = ADE20K["skyscraper"] if top < 0.15 * h else ADE20K["building"]
            x += bw + int(rng.integers(0, w // 20))
        lab[horizon : horizon + h // 12, :] = ADE20K["sidewalk"]
        lab[horizon + h // 12 :, :] = ADE20K["road"]
        for _ in range(int(rng.integers(1, 4))):  # cars on the road
            cx, cw = int(rng.integers(0, w - w // 5)), int(rng.integers(w // 7, w // 4))
            cy = int(rng.uniform(horizon + h // 8, h - h // 10))
            lab[cy : cy + h // 10, cx : cx + cw] = ADE20K["car"]
        for _ in range(int(rng.integers(1, 3))):
            _tree(lab, rng, horizon + h // 24, rng.uniform(0, w), h * rng.uniform(0.08, 0.14))
        px = int(rng.integers(w // 8, w - w // 8))
        lab[horizon - h // 8 : horizon + h // 20, px : px + max(3, w // 40)] = ADE20K["person"]
    elif kind == "countryside":
        mountains = _ridge(rng, w, h * rng.uniform(0.3, 0.4), h * 0.08)
        hills = _ridge(rng, w, h * rng.uniform(0.5, 0.58), h * 0.04)
        lab[rows >= mountains[None, :]] = ADE20K["mountain"]
        lab[rows >= hills[None, :]] = ADE20K["field"]
        lab[rows >= (hills + h * 0.18)[None, :]] = ADE20K["grass"]
        path_x = w * rng.uniform(0.3, 0.7)
        for y in range(int(hills.min()) + h // 10, h):  # a path widening toward the viewer
            half = (y - hills.min()) * 0.15
            lab[y, max(0, int(path_x - half)) : int(path_x + half)] = ADE20K["path"]
        hx, hy = int(rng.uniform(0.1, 0.6) * w), int(hills.mean() + h * 0.05)
        lab[hy - h // 8 : hy, hx : hx + w // 6] = ADE20K["house"]
        for _ in range(int(rng.integers(2, 6))):
            x = rng.uniform(0, w)
            _tree(lab, rng, hills[int(min(x, w - 1))] + h * rng.uniform(0.05, 0.3), x, h * rng.uniform(0.05, 0.12))
        lab[int(h * 0.85) : int(h * 0.88), :] = ADE20K["fence"]
    elif kind == "coast":
        sea_y = int(h * rng.uniform(0.45, 0.55))
        far = _ridge(rng, w, sea_y - h * 0.05, h * 0.04)
        lab[(rows >= far[None, :]) & (rows < sea_y)] = ADE20K["mountain"]
        lab[sea_y:, :] = ADE20K["sea"]
        beach = _ridge(rng, w, h * rng.uniform(0.72, 0.8), h * 0.05, waves=2)
        lab[rows >= beach[None, :]] = ADE20K["sand"]
        for _ in range(int(rng.integers(1, 4))):
            _blob(lab, rng.uniform(0.75, 0.95) * h, rng.uniform(0, w), h * rng.uniform(0.03, 0.07), w * rng.uniform(0.04, 0.1), ADE20K["rock"])
    else:  # lake
        mountains = _ridge(rng, w, h * rng.uniform(0.25, 0.35), h * 0.1)
        shore = int(h * rng.uniform(0.5, 0.58))
        lab[(rows >= mountains[None, :]) & (rows < shore)] = ADE20K["mountain"]
        lab[shore - h // 20 : shore, :] = ADE20K["tree"]
        lab[shore:, :] = ADE20K["water"]
        bank = _ridge(rng, w, h * rng.uniform(0.8, 0.88), h * 0.04, waves=2)
        lab[rows >= bank[None, :]] = ADE20K["grass"]
        for _ in range(int(rng.integers(1, 4))):
            x = rng.uniform(0, w)
            _tree(lab, rng, bank[int(min(x, w - 1))] + h * 0.08, x, h * rng.uniform(0.06, 0.12))
    return lab


def make_label_maps(folder: str | Path, n: int = 12, *, size: int = 256, seed: int = 0) -> list[Path]:
    """Write ``n`` seeded scene label maps (8-bit PNGs of ADE20K ids) to ``folder``; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        kind = _SCENES[i % len(_SCENES)]
        lab = _scene(kind, size, np.random.default_rng([seed, i]))
        path = folder / f"{kind}_{i:03d}.png"
        Image.fromarray(lab, mode="L").save(path)
        paths.append(path)
    return paths


def write_styles(folder: str | Path, names: tuple[str, ...] = DEMO_STYLES) -> list[Path]:
    """Copy scikit-image's bundled sample photos ``names`` into ``folder`` as PNGs (no download)."""
    import skimage.data

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        arr = np.asarray(getattr(skimage.data, name)())
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        path = folder / f"{name}.png"
        Image.fromarray(arr[..., :3].astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def demo_config(root: str | Path, *, run_id: str = "demo", **overrides: Any) -> RunConfig:
    """The demo's run config (same fields as ``configs/demo.yaml``), rooted at ``root``."""
    root = Path(root)
    data: dict[str, Any] = {
        "dataset": {"preset": "ade20k", "name": "demo-scenes", "labels": str(root / "inputs" / "labels"), "demo_inputs": True},
        "styles": {"source": str(root / "inputs" / "styles"), "max_side": 256},
        "models": {"synth_checkpoint": "random-init", "ngf": 16, "synth_seed": 0, "stylizer": "color", "smoothing": "exact"},
        "output": str(root / "runs"),
        "run_id": run_id,
        "shard_size": 4,
        "batch_size": 4,
        "device": "auto",
        "runner": {"kind": "thread", "max_concurrency": 2},
        "retries": {"count": 2, "delay": 1.0},
    }
    for key, value in overrides.items():
        data[key] = value
    return parse_config(data, source="demo config")


def prepare_demo(root: str | Path, *, n_maps: int = 12, seed: int = 0, **overrides: Any) -> RunConfig:
    """Generate the demo inputs under ``root/inputs`` and return the run config."""
    root = Path(root)
    make_label_maps(root / "inputs" / "labels", n_maps, seed=seed)
    write_styles(root / "inputs" / "styles")
    return demo_config(root, **overrides)


def ensure_demo_inputs(config: RunConfig, *, n_maps: int = 12, seed: int = 0) -> list[str]:
    """Generate the demo's label maps at ``dataset.labels`` and style photos at ``styles.source`` when a folder
    is missing or empty (``dataset.demo_inputs: true``, as in ``configs/demo.yaml``); returns what it made.

    Local folders only (a fresh deployment's working directory). A folder that holds anything (the user's
    JPEGs, a list file, hidden files) is the user's: nothing is written into it.
    """
    from ..errors import ConfigError

    made = []
    for field, spec, make in (("dataset.labels", config.dataset.labels, lambda d: make_label_maps(d, n_maps, seed=seed)),
                              ("styles.source", config.styles.source, write_styles)):
        if "://" in spec and not spec.startswith("file://"):
            raise ConfigError(f"dataset.demo_inputs: {field} {spec!r} is not a local folder; the demo inputs are only "
                              "generated into local folders (or set dataset.demo_inputs: false and point it at your data)")
        folder = Path(spec[len("file://"):] if spec.startswith("file://") else spec)
        if folder.is_dir() and any(folder.iterdir()):
            continue  # the user's folder: never written into
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"dataset.demo_inputs: {field} {spec!r} exists and is not a folder; remove it or change {field}")
        make(folder)
        made.append(str(folder))
    return made


def prepare_inputs(config: RunConfig) -> list[str]:
    """What runs and checks call first: the demo inputs when the config asks for them (``dataset.demo_inputs``)."""
    return ensure_demo_inputs(config) if config.dataset.demo_inputs else []


def write_config(config: RunConfig, path: str | Path) -> Path:
    """Write ``config`` as YAML (the fields a user would write; unset ones left out) so it can be run again."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    def drop_empty(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: drop_empty(v) for k, v in obj.items() if v not in ({}, [])}
        return obj

    data = drop_empty(config.model_dump(mode="json", exclude_none=True))
    text = (f"# The config `spadepis demo` ran. Run it again (resumes, or reruns after a change):\n"
            f"#     spadepis run {path}\n")
    path.write_text(text + yaml.safe_dump(data, sort_keys=False))
    return path


def contact_sheet(run_uri: str, out_path: str | Path, *, max_rows: int | None = None, tile: int = 128) -> Path:
    """The run's contact sheet (see :func:`spadepis.pipeline.sheet.contact_sheet`): a header row with the style
    photos, then one row per source (id, label map, synthesized, one column per style); every source by default."""
    from .sheet import contact_sheet as _sheet

    _sheet(run_uri, str(out_path), max_rows=max_rows, tile=tile)
    return Path(out_path)


def closing_note(result: dict[str, Any], sheet: Path) -> str:
    from .manifest import RATE_BASIS

    s = result["summary"]
    return f"""
spadepis demo finished: {s['ok']} outputs ok, {s['error']} errors, {s['outputs_per_s']:.2f} outputs/s ({RATE_BASIS}).
  run folder     {result['run_uri']}   (images/, synth/, manifest/, run.json)
  manifest       {result['index_uri']}
  contact sheet  {sheet}   (label map | synthesized | each style)
  summary        spadepis summary {result['run_uri']}

The synthesized images come from SPADE with *random* weights (manifest synth_model says
'random-init'): they show the pipeline, not photos. With the official checkpoints:
  spadepis run configs/ade20k.yaml --set models.synth_checkpoint=/path/to/ade20k_pretrained/latest_net_G.pth \\
      --set models.stylizer_weights=/path/to/photo_wct.pth --set dataset.labels=/path/to/label/maps
To watch runs in the Prefect UI: `prefect server start`, then in another shell
  export PREFECT_API_URL=http://127.0.0.1:4200/api && spadepis demo --out out/demo2
and open http://127.0.0.1:4200 (flow 'spadepis-augment': progress, summary and sample artifacts).
"""
