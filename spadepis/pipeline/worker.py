"""The work of one shard, without any orchestration: load, synthesize, stylize, smooth, write, commit.

:func:`process_shard` is what a Prefect task (``tasks/shard.py``) or any other runner calls. It

1. returns at once when the shard is already committed (resume);
2. loads and validates every label map (a bad item becomes ``status="error"`` rows; the shard goes on);
   a label map whose size differs from the outputs' (SPADE: the preset's size; stylize-only: a photo larger
   than ``dataset.max_side`` is downscaled) is NEAREST-resized to it and written to
   ``labels/<shard>/<source_id>.png``, which the rows' ``label_uri`` names (label and image stay pixel-aligned);
   in the reference mode (``models.compat: fastphotostyle`` with exact smoothing) the outputs lose 2 px on
   every side, and so does that label copy;
3. runs SPADE in batches of ``config.batch_size`` and writes ``synth/<shard>/<source_id>.png``;
4. for each synthesized image, prepares the smoother once (the exact system is factorised once per
   content image) and, for each of its styles, stylizes with the style's cache (prepared once per
   process and style; label-aware with the source's label map at output size when the style has a
   label map, ``styles.unmatched`` for the classes it lacks), smooths, scores the output
   (:mod:`spadepis.pipeline.quality`, ``t_quality_ms``) and writes ``images/<shard>/<source_id>__<style_id>.png``;
5. writes the manifest part, then the ``_SUCCESS.json`` marker naming it: the commit.

Models live in a module-level cache, so a worker process loads each model once and reuses it for
every shard it runs. Transient failures (storage, CUDA out-of-memory) propagate so that the caller
retries the shard; :func:`is_transient` tells them apart from bugs and configuration errors.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import __version__
from .config import RANDOM_INIT, RunConfig, apply_storage_options
from ..errors import CheckpointError, ConfigError, InputError, StorageError
from ..data.images import encode_png, float_to_uint8, read_rgb, set_max_image_pixels
from .failures import classify
from .failures import is_transient as _is_transient
from .manifest import SCHEMA_VERSION, STAGES, rows_to_table
from .plan import ShardSpec, sample_id
from .storage import RunStorage, new_attempt_id, normalize_uri

__all__ = [
    "ShardResult",
    "process_shard",
    "is_transient",
    "get_synthesizer",
    "get_stylizer",
    "get_style_cache",
    "clear_model_cache",
    "model_info",
]

_LOCK = threading.RLock()
_MODELS: dict[tuple, Any] = {}
_STYLES: OrderedDict[tuple, Any] = OrderedDict()
_STYLES_PENDING: dict[tuple, threading.Event] = {}  # styles being prepared right now (one thread each)
_STYLE_CACHE_MAX = 256
_MODEL_LOADS = {"synthesizer": 0, "stylizer": 0, "style": 0}


@dataclass
class ShardResult:
    """What a shard task returns (small: counts, timings and a few output URIs, never pixels)."""

    shard: str
    skipped: bool
    rows: int
    ok: int
    error: int
    attempt_id: str | None
    part: str | None
    wall_s: float
    errors: list[str] = field(default_factory=list)
    samples: list[dict[str, str]] = field(default_factory=list)
    sources: int | None = None  # label maps in the shard
    stage_ms: dict[str, float] = field(default_factory=dict)  # each stage summed over the shard's rows


# ------------------------------------------------------------------------------------ model cache


def _preset(config: RunConfig):
    from ..data.presets import get_preset

    return get_preset(config.dataset.preset, **config.dataset.preset_overrides)


def get_synthesizer(config: RunConfig, device):
    """The SPADE synthesizer of ``config`` on ``device``, loaded once per process."""
    from ..models.spade import load_synthesizer, random_synthesizer

    m = config.models
    preset = _preset(config)
    key = ("spade", m.synth_checkpoint, preset, m.ngf, m.synth_seed if m.synth_checkpoint == RANDOM_INIT else None, str(device))
    with _LOCK:
        synth = _MODELS.get(key)
        if synth is None:
            if m.synth_checkpoint == RANDOM_INIT:
                synth = random_synthesizer(preset, ngf=m.ngf or 16, seed=m.synth_seed, device=device)
            else:
                try:
                    synth = load_synthesizer(m.synth_checkpoint, preset, ngf=m.ngf, device=device)
                except CheckpointError as exc:  # say the fix in config fields, not the synthesize flags
                    from .model_fit import explain_checkpoint_error

                    raise explain_checkpoint_error(config, exc) from None
            _MODELS[key] = synth
            _MODEL_LOADS["synthesizer"] += 1
        return synth


def get_stylizer(config: RunConfig, device):
    """The stylizer of ``config`` on ``device``, loaded once per process."""
    from ..models.stylizers import load_stylizer

    m = config.models
    key = ("stylizer", m.stylizer, m.stylizer_weights, m.wct_precision, str(device))
    with _LOCK:
        stylizer = _MODELS.get(key)
        if stylizer is None:
            stylizer = load_stylizer(m.stylizer, m.stylizer_weights, device=device, precision=m.wct_precision)
            _MODELS[key] = stylizer
            _MODEL_LOADS["stylizer"] += 1
        return stylizer


def _fit_size(w: int, h: int, max_side: int | None) -> tuple[int, int] | None:
    """``(w, h)`` scaled so that the longer side is ``max_side`` (aspect kept), or ``None`` when it fits."""
    if not max_side or max(h, w) <= max_side:
        return None
    scale = max_side / max(h, w)
    return max(1, round(w * scale)), max(1, round(h * scale))


def _downscale_rgb(img: np.ndarray, max_side: int | None) -> np.ndarray:
    """Bicubic downscale of an ``(H, W, 3)`` image to ``max_side`` (as FastPhotoStyle's memory_limit_image_resize)."""
    from PIL import Image

    size = _fit_size(img.shape[1], img.shape[0], max_side)
    return img if size is None else np.asarray(Image.fromarray(img).resize(size, Image.BICUBIC))


def _read_style(uri: str, max_side: int | None) -> np.ndarray:
    return _downscale_rgb(read_rgb(uri), max_side)


def _read_style_labels(config: RunConfig, label_uri: str, size_hw: tuple[int, int]) -> np.ndarray:
    """The style's label map in the dataset's label space, NEAREST-resized to the (downscaled) style photo."""
    from ..data.labelmaps import read_label_map, resize_nearest

    label = read_label_map(label_uri, _preset(config))
    return resize_nearest(label, size_hw)


def get_style_cache(config: RunConfig, device, style_id: str, uri: str, label_uri: str | None = None) -> tuple[Any, float]:
    """``(cache, ms spent)``: the style's features/colouring, computed once per process and style.

    With ``label_uri`` (``styles.labels``) the per-region statistics are prepared too (label-aware
    transfer), and ``cache.meta["quality"]`` holds the style's colour statistics for the ``q_*`` scores.
    A style that cannot be read raises :class:`InputError` (remembered, so it is not re-read).
    """
    from .quality import style_quality_stats

    m = config.models
    key = (m.stylizer, m.stylizer_weights, m.wct_precision, str(device), uri, config.styles.max_side, label_uri)
    while True:
        with _LOCK:
            hit = _STYLES.get(key)
            if hit is not None:
                _STYLES.move_to_end(key)
                if isinstance(hit, InputError):
                    raise hit
                return hit, 0.0
            pending = _STYLES_PENDING.get(key)
            if pending is None:  # this thread prepares the style; others wait for it
                pending = _STYLES_PENDING[key] = threading.Event()
                break
        pending.wait()  # then look again (if the preparing thread failed transiently, try ourselves)
    t = time.perf_counter()
    try:
        stylizer = get_stylizer(config, device)
        try:
            style = _read_style(uri, config.styles.max_side)
            seg = _read_style_labels(config, label_uri, style.shape[:2]) if label_uri else None
            cache = stylizer.prepare_style(style, seg, style_id=style_id)
            if isinstance(getattr(cache, "meta", None), dict):
                cache.meta["quality"] = style_quality_stats(style, seg)
        except InputError as exc:
            err = InputError(f"style {style_id!r}: {exc}")
            with _LOCK:
                _STYLES[key] = err
            raise err from None
        with _LOCK:
            _STYLES[key] = cache
            _MODEL_LOADS["style"] += 1
            while len(_STYLES) > _STYLE_CACHE_MAX:
                _STYLES.popitem(last=False)
    finally:
        with _LOCK:
            _STYLES_PENDING.pop(key, None)
        pending.set()
    return cache, (time.perf_counter() - t) * 1000.0


def clear_model_cache() -> None:
    with _LOCK:
        _MODELS.clear()
        _STYLES.clear()
        for k in _MODEL_LOADS:
            _MODEL_LOADS[k] = 0


def model_info() -> dict[str, int]:
    """How many models / style caches this process has built (tests check "loaded once")."""
    with _LOCK:
        return dict(_MODEL_LOADS)


# ------------------------------------------------------------------------------------ errors


def is_transient(exc: BaseException | None) -> bool:
    """Whether retrying the shard may help: storage and connection errors, CUDA out-of-memory, a lost worker
    (a Dask worker, or a smoothing process killed e.g. for memory: the pool is replaced on the next shard).

    Bad inputs, configuration and checkpoint errors, programming errors, and local failures a retry would
    repeat (disk full, permission, name too long, a file in the way, a missing bucket) are not transient.
    The exception's ``__cause__``/``__context__`` chain is searched too (``spadepis.pipeline.failures``).
    """
    return _is_transient(exc)


# ------------------------------------------------------------------------------------ the shard


@dataclass
class _Item:
    source: Any
    styles: tuple[str, ...]
    labels: np.ndarray | None = None
    instances: np.ndarray | None = None
    content: np.ndarray | None = None
    error: str | None = None
    t_load: float = 0.0
    t_synth: float = 0.0
    t_write_source: float = 0.0  # writing this source's synth image or resized label map
    synth_uri: str | None = None
    label_png: bytes | None = None  # the label map resized to the outputs' size, to write
    label_uri: str | None = None  # where label_png was written (the rows' label_uri); None: the source's

    @property
    def row_label_uri(self) -> str:
        """The label map the rows name: the aligned copy when one was written, else the source's."""
        return self.label_uri or self.source.label_uri


def _write_item(storage: RunStorage, rel: str, data: bytes) -> str:
    """Write one item's output; a name the storage refuses becomes that item's :class:`InputError` (an error
    row), so one bad name never takes its neighbours down. Other failures propagate (the shard is retried)."""
    try:
        return storage.write_bytes(rel, data)
    except StorageError as exc:
        if classify(exc).kind != "name-too-long":
            raise
        raise InputError(f"{storage.uri(rel)}: the storage refuses this file name ({exc.__cause__}); rename the input "
                         "file (shorter, plainer name)") from exc


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def _reference_crop(config: RunConfig) -> int:
    """Pixels the outputs lose on every side: 2 in the reference mode with exact smoothing (FastPhotoStyle's
    smoothing crops them), else 0."""
    m = config.models
    return 2 if m.compat == "fastphotostyle" and m.smoothing == "exact" else 0


def _aligned_label_png(label_uri: str, size: tuple[int, int], crop: int = 0) -> bytes | None:
    """The label file NEAREST-resized to ``size`` (H, W), then ``crop`` px cut from every side, as PNG bytes,
    keeping its raw ids, mode and palette (so ``label_uri`` and ``image_uri`` are pixel-aligned); ``None``
    when it already has that size and nothing is cropped."""
    from PIL import Image

    from ..data.images import open_image

    img = open_image(label_uri)
    h, w = size
    if img.size == (w, h) and not crop:
        return None
    if img.size != (w, h):
        img = img.resize((w, h), Image.NEAREST)
    if crop and h > 2 * crop and w > 2 * crop:  # smaller images fail smoothing anyway (error rows)
        img = img.crop((crop, crop, w - crop, h - crop))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _load_item(item: _Item, config: RunConfig, preset) -> None:
    from ..data.labelmaps import load_label_and_instance, read_label_map

    src = item.source
    crop = _reference_crop(config)
    t0 = time.perf_counter()
    try:
        if config.stylize_only:
            photo = read_rgb(src.photo_uri)
            label = read_label_map(src.label_uri, preset)
            if label.shape != photo.shape[:2]:
                raise InputError(
                    f"{src.label_uri}: label map is {label.shape[1]}x{label.shape[0]} but its photo {src.photo_uri} is "
                    f"{photo.shape[1]}x{photo.shape[0]} (WxH); pair each photo with its own label map"
                )
            resized = _downscale_rgb(photo, config.dataset.max_side)
            if resized is not photo:  # keep the label map pixel-aligned with the (smaller) outputs
                from ..data.labelmaps import resize_nearest

                label = resize_nearest(label, resized.shape[:2])
            if resized is not photo or crop:
                item.label_png = _aligned_label_png(src.label_uri, resized.shape[:2], crop)
            item.labels, item.content = label, resized
            item.synth_uri = src.photo_uri
        else:
            item.labels, item.instances = load_label_and_instance(src.label_uri, src.instance_uri, preset)
            # SPADE outputs have the preset's size; a label file of another size gets an aligned copy
            item.label_png = _aligned_label_png(src.label_uri, item.labels.shape, crop)
            if not preset.no_instance and item.instances is None and config.dataset.use_instance is not False:
                raise InputError(
                    f"{src.label_uri}: no instance map for source {src.source_id!r}, but preset {preset.name!r} uses "
                    "instance maps; add it to dataset.instances (matched by file stem), or set dataset.use_instance: false "
                    "to use the label boundaries instead"
                )
    except InputError as exc:
        item.error = str(exc)
    item.t_load = _ms(t0)


def _synthesize_batch(synth, batch: list[_Item], storage: RunStorage, shard_name: str) -> None:
    """SPADE for one batch of items; each content image is written to ``synth/<shard>/<source_id>.png``."""
    from ..models.spade import to_uint8

    t0 = time.perf_counter()
    labels = np.stack([it.labels for it in batch])
    inst = np.stack([it.instances for it in batch]) if batch[0].instances is not None else None
    images = to_uint8(synth.synthesize(labels, inst))
    dt = _ms(t0) / len(batch)
    for it, img in zip(batch, images):
        it.content, it.t_synth = np.ascontiguousarray(img), dt
        t0 = time.perf_counter()
        try:
            it.synth_uri = _write_item(storage, storage.synth_rel(shard_name, it.source.source_id), encode_png(it.content))
        except InputError as exc:
            it.error = str(exc)
        it.t_write_source = _ms(t0)


def _smoothing_device(config: RunConfig, device):
    """The torch device exact smoothing runs on, or ``None`` for the CPU (CHOLMOD on the smoothing pool)."""
    from ..devices import resolve_device

    m = config.models
    if m.smoothing != "exact":
        return None
    dev = device if m.smoothing_device == "auto" else resolve_device(m.smoothing_device)
    return dev if dev.type != "cpu" else None


def _done(content: np.ndarray, inits: list[np.ndarray]):
    """A finished future of ``smooth_content`` for mode ``none`` (no smoothing: nothing to run in parallel)."""
    from concurrent.futures import Future

    from ..models.smoothing import smooth_content

    fut: Future = Future()
    try:
        fut.set_result(smooth_content(content, inits, "none"))
    except Exception as exc:
        fut.set_exception(exc)
    return fut


def process_shard(
    config: RunConfig,
    shard: ShardSpec,
    *,
    attempt_id: str | None = None,
    on_output: Callable[[int], None] | None = None,
) -> ShardResult:
    """Process and commit one shard of ``config`` (see the module docstring). Idempotent per shard.

    ``on_output(n)`` is called after every ``n`` outputs (progress bars). Raises on transient failures
    (:class:`StorageError`, CUDA out-of-memory) so the caller retries; bad items become error rows.
    """
    from ..devices import resolve_device
    from ..models.smoothing import default_smoothing_workers, smooth_batch_torch, smoothing_pool

    t_start = time.perf_counter()
    config = config.resolved()
    apply_storage_options(config)
    set_max_image_pixels(config.max_image_pixels)
    storage = RunStorage(config.run_uri)
    existing = storage.marker(shard.name)
    if existing is not None:
        return ShardResult(shard.name, True, existing.get("rows", 0), existing.get("ok", 0), existing.get("error", 0),
                           existing.get("attempt_id"), existing.get("part"), 0.0)
    attempt_id = attempt_id or new_attempt_id()
    device = resolve_device(config.device)
    preset = _preset(config)
    chash = config.config_hash
    run_id = config.resolved_run_id
    m = config.models

    stylizer = get_stylizer(config, device)
    if config.stylize_only:
        synth, synth_model, synth_sha = None, "none (stylize-only)", None
    else:
        synth = get_synthesizer(config, device)
        synth_model, synth_sha = synth.model_name, synth.sha256

    items = [_Item(src, styles) for src, styles in zip(shard.sources, shard.style_ids)]
    for item in items:
        _load_item(item, config, preset)
        if item.label_png is not None and item.error is None:
            t0 = time.perf_counter()
            try:
                item.label_uri = _write_item(storage, storage.label_rel(shard.name, item.source.source_id), item.label_png)
            except InputError as exc:
                item.error = str(exc)
            item.label_png, item.t_write_source = None, _ms(t0)

    samples: list[dict[str, str]] = []
    now = lambda: _dt.datetime.now(_dt.timezone.utc)  # noqa: E731

    def row(item: _Item, style_id: str, **kw) -> dict[str, Any]:
        base = {
            "sample_id": sample_id(item.source.source_id, style_id, config.seed, chash),
            "run_id": run_id,
            "shard_id": shard.name,
            "attempt_id": attempt_id,
            "dataset": config.dataset_name,
            "preset": preset.name,
            "source_id": item.source.source_id,
            "label_uri": item.row_label_uri,
            "instance_uri": item.source.instance_uri,
            "label_nc": preset.label_nc,
            "style_id": style_id,
            "style_uri": shard.style_uri(style_id),
            "style_score": None,
            "style_rank": None,
            "synth_uri": item.synth_uri,
            "image_uri": None,
            "width": None,
            "height": None,
            "sha256": None,
            "synth_model": synth_model,
            "synth_weights_sha256": synth_sha,
            "stylizer": m.stylizer,
            "stylizer_weights_sha256": stylizer.weights_sha256,
            "smoothing": m.smoothing,
            "t_load_ms": 0.0,
            "t_synth_ms": 0.0,
            "t_stylize_ms": 0.0,
            "t_smooth_ms": 0.0,
            "t_write_ms": 0.0,
            "t_quality_ms": 0.0,
            "t_total_ms": 0.0,
            "q_structure": None,
            "q_style": None,
            "q_coverage": None,
            "q_clipped": None,
            "status": "ok",
            "error": None,
            "created_at": now(),
            "device": str(device),
            "spadepis_version": __version__,
            "schema_version": SCHEMA_VERSION,
            "wct_numerics": None,
        }
        base.update(kw)
        for key in ("label_uri", "instance_uri", "style_uri", "synth_uri", "image_uri"):  # absolute, no ".."
            base[key] = normalize_uri(base[key])
        base["t_total_ms"] = sum(
            base[k] for k in ("t_load_ms", "t_synth_ms", "t_stylize_ms", "t_smooth_ms", "t_quality_ms", "t_write_ms")
        )
        return base

    from .quality import row_quality
    from .styles import ignored_labels

    ignore = ignored_labels(config, preset)
    segs: dict[tuple[int, int], tuple[Any, Any]] = {}  # (item, style position) -> (content seg or None, style stats)

    def sel(idx: int, j: int) -> dict[str, Any]:
        score, rank = shard.score_of(idx, j)
        return {"style_score": score, "style_rank": rank}

    # Stage thread: stylize and smooth one SPADE batch while the main thread synthesizes the next. CPU exact
    # smoothing of different contents runs on the smoothing pool's processes (factorisations in parallel);
    # GPU smoothing solves every content and style of a batch in one batched call.
    smooth_device = _smoothing_device(config, device)
    crop = _reference_crop(config)
    smooth_kw = {"compat": m.compat} if crop else {}
    if smooth_kw:
        smooth_device = None  # the reference's crop/resize/pad runs in the CPU solver only
    pool = None
    if smooth_device is None and m.smoothing != "none":
        pool = smoothing_pool(config.runner.smoothing_workers or default_smoothing_workers())
    item_rows: list[list[tuple[int, dict[str, Any]]]] = [[] for _ in items]
    numerics_of: dict[tuple[int, int], str] = {}  # (item, style position) -> the WCT numerics it took
    pending: deque = deque()  # (index, item, styles, stylize ms, future), in submission order
    max_pending = 2 * (pool.workers if pool is not None else 1)

    def progress(n: int) -> None:
        if on_output and n:
            on_output(n)

    def stylize_item(idx: int, item: _Item) -> tuple[list[int], list[np.ndarray], list[float]]:
        """The item's stylized images (style positions, uint8 images, ms each); error rows for failures."""
        k = max(1, len(item.styles))
        shared = {"t_load_ms": item.t_load / k, "t_synth_ms": item.t_synth / k}
        if item.error is not None:
            item_rows[idx].extend(
                (j, row(item, s, status="error", error=item.error, **shared, **sel(idx, j))) for j, s in enumerate(item.styles)
            )
            progress(len(item.styles))
            return [], [], []
        ok, inits, t_sty = [], [], []
        for j, style_id in enumerate(item.styles):
            try:
                style_item = shard.style_item(style_id)
                cache, t_cache = get_style_cache(config, device, style_id, style_item.uri, style_item.label_uri)
                seg = item.labels if cache.has_seg else None  # label-aware when both maps exist
                t0 = time.perf_counter()
                raw, numerics_of[(idx, j)] = stylizer.stylize_with_numerics(
                    item.content, cache, seg, unmatched=config.styles.unmatched
                )
                init = float_to_uint8(raw)
                t_sty.append(_ms(t0) + t_cache)
                segs[(idx, j)] = (seg, cache.meta["quality"])
            except InputError as exc:
                item_rows[idx].append((j, row(item, style_id, status="error", error=str(exc), **shared, **sel(idx, j))))
                progress(1)
            else:
                ok.append(j)
                inits.append(init)
        return ok, inits, t_sty

    def finish(idx: int, item: _Item, ok: list[int], t_sty: list[float], smoothed) -> None:
        """Write the smoothed outputs of one item and make its rows. ``smoothed``: a future of smooth_content."""
        k = max(1, len(item.styles))
        shared = {"t_load_ms": item.t_load / k, "t_synth_ms": item.t_synth / k}
        try:
            results, prep_s, smooth_s = smoothed.result()
        except (InputError, ConfigError) as exc:
            item_rows[idx].extend(
                (j, row(item, item.styles[j], status="error", error=f"smoothing: {exc}", **shared, **sel(idx, j))) for j in ok
            )
            progress(len(ok))
            return
        t_sm = (prep_s + smooth_s) * 1000.0 / max(1, len(ok))
        for j, t_st, out in zip(ok, t_sty, results):
            style_id = item.styles[j]
            try:
                if isinstance(out, str):
                    raise InputError(f"smoothing: {out}")
                t0 = time.perf_counter()
                seg, style_stats = segs.pop((idx, j))
                content = item.content
                if crop and out.shape[:2] != content.shape[:2]:  # reference mode: score the cropped pair
                    content, seg = content[crop:-crop, crop:-crop], None if seg is None else seg[crop:-crop, crop:-crop]
                quality = row_quality(content, out, seg, style_stats, ignore=ignore)
                t_q = _ms(t0)
                t0 = time.perf_counter()
                data = encode_png(out)
                uri = _write_item(storage, storage.image_rel(shard.name, item.source.source_id, style_id), data)
                t_wr = _ms(t0) + item.t_write_source / k
            except InputError as exc:
                item_rows[idx].append((j, row(item, style_id, status="error", error=str(exc), **shared, **sel(idx, j))))
            else:
                item_rows[idx].append((j, row(
                    item, style_id, image_uri=uri, width=int(out.shape[1]), height=int(out.shape[0]),
                    sha256=hashlib.sha256(data).hexdigest(), t_stylize_ms=t_st, t_smooth_ms=t_sm, t_write_ms=t_wr,
                    t_quality_ms=t_q, **quality, **shared, **sel(idx, j), wct_numerics=numerics_of.get((idx, j)),
                )))
                if len(samples) < 4:
                    samples.append({"source_id": item.source.source_id, "style_id": style_id,
                                    "label_uri": item.row_label_uri,
                                    "synth_uri": item.synth_uri or "", "image_uri": uri})
            progress(1)

    def drain(block_until: int) -> None:
        """Finish pending items in order: done ones, and any beyond ``block_until`` still pending."""
        while pending and (len(pending) > block_until or pending[0][4].done()):
            finish(*pending.popleft())

    def stage(batch: list[tuple[int, _Item]]) -> None:
        stylized = [(idx, item, *stylize_item(idx, item)) for idx, item in batch]
        if smooth_device is not None:  # one batched GPU solve for the whole batch
            todo = [(idx, item, ok, inits, t) for idx, item, ok, inits, t in stylized if ok]
            futures = smooth_batch_torch([(it.content, inits) for _, it, _, inits, _ in todo], m.smoothing, smooth_device)
            for (idx, item, ok, _, t_sty), fut in zip(todo, futures):
                finish(idx, item, ok, t_sty, fut)
            return
        for idx, item, ok, inits, t_sty in stylized:
            if not ok:
                continue
            fut = pool.submit(item.content, inits, m.smoothing, **smooth_kw) if pool is not None else _done(item.content, inits)
            pending.append((idx, item, ok, t_sty, fut))
            drain(max_pending)

    from concurrent.futures import ThreadPoolExecutor

    indexed = list(enumerate(items))
    good = [(i, it) for i, it in indexed if it.error is None]
    stage_runner = ThreadPoolExecutor(1, thread_name_prefix=f"spadepis-{shard.name}")
    stage_futures = []
    try:
        # items with a load error make their rows at once
        stage_futures.append(stage_runner.submit(stage, [(i, it) for i, it in indexed if it.error is not None]))
        for b in range(0, len(good), config.batch_size):
            batch = good[b : b + config.batch_size]
            if synth is not None:
                _synthesize_batch(synth, [it for _, it in batch], storage, shard.name)
            if any(f.done() and f.exception() is not None for f in stage_futures):
                break  # a transient failure downstream: stop synthesizing, re-raise below
            stage_futures.append(stage_runner.submit(stage, batch))
    finally:
        stage_runner.shutdown(wait=True)
    for f in stage_futures:
        f.result()  # re-raises a stage failure (transient: the caller retries the shard)
    drain(0)
    rows = [r for per_item in item_rows for _, r in sorted(per_item, key=lambda jr: jr[0])]

    table = rows_to_table(rows)
    marker = storage.commit_shard(shard.name, attempt_id, table, extra={"device": str(device), "wall_s": time.perf_counter() - t_start})
    return ShardResult(
        shard=shard.name,
        skipped=False,
        rows=marker["rows"],
        ok=marker["ok"],
        error=marker["error"],
        attempt_id=attempt_id,
        part=marker["part"],
        wall_s=time.perf_counter() - t_start,
        errors=sorted({r["error"] for r in rows if r["error"]})[:10],
        samples=samples,
        sources=len(items),
        stage_ms={k: float(sum(r.get(k) or 0.0 for r in rows)) for k in STAGES},
    )
