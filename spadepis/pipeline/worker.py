"""The work of one shard, without any orchestration: load, synthesize, stylize, smooth, write, commit.

:func:`process_shard` is what a Prefect task (``spadepis/tasks/shard.py``) or any other runner calls. It

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

The pieces it uses, in the order data flows: :mod:`.items` (one source and its loading),
:mod:`.model_cache` (models and style statistics, built once per process), :mod:`.schema` (the
:class:`~.schema.RowBuilder` of the manifest rows) and :mod:`.writer` (the files and the commit).
Transient failures (storage, CUDA out-of-memory) propagate so that the caller retries the shard;
:func:`spadepis.pipeline.failures.is_transient` tells them apart from bugs and configuration errors.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data.images import encode_png, float_to_uint8, set_max_image_pixels
from ..errors import ConfigError, InputError
from .config import RunConfig, apply_storage_options
from .items import Item, load_item, reference_crop
from .model_cache import (
    get_style_cache,
    get_stylizer,
    get_synthesizer,
    label_space_preset,
    run_label_remap,
    run_preset,
)
from .plan import ShardSpec, sample_id
from .schema import STAGES, URI_COLUMNS, RowBuilder
from .storage import RunStorage, new_attempt_id, normalize_uri
from .writer import ShardWriter

__all__ = ["ShardResult", "process_shard"]


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


# ------------------------------------------------------------------------------------ the shard


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def _synthesize_batch(synth, batch: list[Item], writer: ShardWriter) -> None:
    """SPADE for one batch of items; each content image is written to ``synth/<shard>/<source_id>.png``."""
    from ..models.spade import to_uint8

    t0 = time.perf_counter()
    images = to_uint8(synth.synthesize_maps([it.labels for it in batch], [it.instances for it in batch],
                                            batch_size=len(batch)))  # one forward pass per batch
    dt = _ms(t0) / len(batch)
    for it, img in zip(batch, images):
        it.content, it.t_synth = np.ascontiguousarray(img), dt
        t0 = time.perf_counter()
        try:
            it.synth_uri = writer.write_synth(it.source.source_id, encode_png(it.content))
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
) -> ShardResult:
    """Process and commit one shard of ``config`` (see the module docstring). Idempotent per shard.

    Raises on transient failures (:class:`StorageError`, CUDA out-of-memory) so the caller retries; bad
    items become error rows. Progress is the caller's: one result per shard.
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
    writer = ShardWriter(storage, shard.name, attempt_id)
    device = resolve_device(config.device)
    preset = run_preset(config)
    chash = config.config_hash
    m = config.models

    stylizer = get_stylizer(config, device)
    if config.stylize_only:
        synth, synth_model, synth_sha = None, "none (stylize-only)", None
    else:
        synth = get_synthesizer(config, device)
        synth_model, synth_sha = synth.model_name, synth.sha256

    items = [Item(src, styles) for src, styles in zip(shard.sources, shard.style_ids)]
    for item in items:
        load_item(item, config, preset)
        if item.label_png is not None and item.error is None:
            t0 = time.perf_counter()
            try:
                item.label_uri = writer.write_label(item.source.source_id, item.label_png)
            except InputError as exc:
                item.error = str(exc)
            item.label_png, item.t_write_source = None, _ms(t0)

    samples: list[dict[str, str]] = []
    remap = None if config.stylize_only else run_label_remap(config)  # dataset.label_remap (preflight checked it)
    rows = RowBuilder(
        run_id=config.resolved_run_id, shard_id=shard.name, attempt_id=attempt_id, dataset=config.dataset_name,
        preset=preset.name, label_nc=preset.label_nc, synth_model=synth_model, synth_weights_sha256=synth_sha,
        stylizer=m.stylizer, stylizer_weights_sha256=stylizer.weights_sha256, smoothing=m.smoothing, device=str(device),
        label_remap=remap.label if remap is not None else None,
    )

    def row(idx: int, j: int, **kw) -> dict[str, Any]:
        """The row of item ``idx`` with its ``j``-th style."""
        item, style_id = items[idx], items[idx].styles[j]
        score, rank = shard.score_of(idx, j)
        r = rows.row(
            sample_id=sample_id(item.source.source_id, style_id, config.seed, chash), source_id=item.source.source_id,
            label_uri=item.row_label_uri, instance_uri=item.source.instance_uri, style_id=style_id,
            style_uri=shard.style_uri(style_id), style_score=score, style_rank=rank, synth_uri=item.synth_uri,
            style_labels=shard.style_item(style_id).label_source or "none", **kw,
        )
        for key in URI_COLUMNS:  # absolute, no ".."
            r[key] = normalize_uri(r[key])
        return r

    from .quality import row_quality
    from .styles import ignored_labels

    ignore = ignored_labels(config, label_space_preset(config))
    segs: dict[tuple[int, int], tuple[Any, Any]] = {}  # (item, style position) -> (content seg or None, style stats)

    # Stage thread: stylize and smooth one SPADE batch while the main thread synthesizes the next. CPU exact
    # smoothing of different contents runs on the smoothing pool's processes (factorisations in parallel);
    # GPU smoothing solves every content and style of a batch in one batched call.
    smooth_device = _smoothing_device(config, device)
    crop = reference_crop(config)
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

    def stylize_item(idx: int, item: Item) -> tuple[list[int], list[np.ndarray], list[float]]:
        """The item's stylized images (style positions, uint8 images, ms each); error rows for failures."""
        k = max(1, len(item.styles))
        shared = {"t_load_ms": item.t_load / k, "t_synth_ms": item.t_synth / k}
        if item.error is not None:
            item_rows[idx].extend((j, row(idx, j, status="error", error=item.error, **shared)) for j in range(len(item.styles)))
            return [], [], []
        ok, inits, t_sty = [], [], []
        for j, style_id in enumerate(item.styles):
            try:
                style_item = shard.style_item(style_id)
                cache, t_cache = get_style_cache(config, device, style_id, style_item.uri, style_item.label_uri)
                seg = item.seg_labels if cache.has_seg else None  # label-aware when both maps exist (dataset ids)
                t0 = time.perf_counter()
                raw, numerics_of[(idx, j)] = stylizer.stylize_with_numerics(
                    item.content, cache, seg, unmatched=config.styles.unmatched
                )
                init = float_to_uint8(raw)
                t_sty.append(_ms(t0) + t_cache)
                segs[(idx, j)] = (seg, cache.meta["quality"])
            except InputError as exc:
                item_rows[idx].append((j, row(idx, j, status="error", error=str(exc), **shared)))
            else:
                ok.append(j)
                inits.append(init)
        return ok, inits, t_sty

    def finish(idx: int, item: Item, ok: list[int], t_sty: list[float], smoothed) -> None:
        """Write the smoothed outputs of one item and make its rows. ``smoothed``: a future of smooth_content."""
        k = max(1, len(item.styles))
        shared = {"t_load_ms": item.t_load / k, "t_synth_ms": item.t_synth / k}
        try:
            results, prep_s, smooth_s = smoothed.result()
        except (InputError, ConfigError) as exc:
            item_rows[idx].extend(
                (j, row(idx, j, status="error", error=f"smoothing: {exc}", **shared)) for j in ok
            )
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
                uri = writer.write_image(item.source.source_id, style_id, data)
                t_wr = _ms(t0) + item.t_write_source / k
            except InputError as exc:
                item_rows[idx].append((j, row(idx, j, status="error", error=str(exc), **shared)))
            else:
                item_rows[idx].append((j, row(
                    idx, j, image_uri=uri, width=int(out.shape[1]), height=int(out.shape[0]),
                    sha256=hashlib.sha256(data).hexdigest(), t_stylize_ms=t_st, t_smooth_ms=t_sm, t_write_ms=t_wr,
                    t_quality_ms=t_q, **quality, **shared, wct_numerics=numerics_of.get((idx, j)),
                )))
                if len(samples) < 4:
                    samples.append({"source_id": item.source.source_id, "style_id": style_id,
                                    "label_uri": item.row_label_uri,
                                    "synth_uri": item.synth_uri or "", "image_uri": uri})

    def drain(block_until: int) -> None:
        """Finish pending items in order: done ones, and any beyond ``block_until`` still pending."""
        while pending and (len(pending) > block_until or pending[0][4].done()):
            finish(*pending.popleft())

    def stage(batch: list[tuple[int, Item]]) -> None:
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

    from ..data.fs import inherit_storage_options

    indexed = list(enumerate(items))
    good = [(i, it) for i, it in indexed if it.error is None]
    stage_runner = ThreadPoolExecutor(1, thread_name_prefix=f"spadepis-{shard.name}", **inherit_storage_options())
    stage_futures = []
    try:
        # items with a load error make their rows at once
        stage_futures.append(stage_runner.submit(stage, [(i, it) for i, it in indexed if it.error is not None]))
        for b in range(0, len(good), config.batch_size):
            batch = good[b : b + config.batch_size]
            if synth is not None:
                _synthesize_batch(synth, [it for _, it in batch], writer)
            if any(f.done() and f.exception() is not None for f in stage_futures):
                break  # a transient failure downstream: stop synthesizing, re-raise below
            stage_futures.append(stage_runner.submit(stage, batch))
    finally:
        stage_runner.shutdown(wait=True)
    for f in stage_futures:
        f.result()  # re-raises a stage failure (transient: the caller retries the shard)
    drain(0)
    shard_rows = [r for per_item in item_rows for _, r in sorted(per_item, key=lambda jr: jr[0])]
    marker = writer.commit(shard_rows, extra={"device": str(device), "wall_s": time.perf_counter() - t_start})
    return ShardResult(
        shard=shard.name,
        skipped=False,
        rows=marker["rows"],
        ok=marker["ok"],
        error=marker["error"],
        attempt_id=attempt_id,
        part=marker["part"],
        wall_s=time.perf_counter() - t_start,
        errors=sorted({r["error"] for r in shard_rows if r["error"]})[:10],
        samples=samples,
        sources=len(items),
        stage_ms={k: float(sum(r.get(k) or 0.0 for r in shard_rows)) for k in STAGES},
    )
