"""The work of one shard, without any orchestration: load, synthesize, stylize, smooth, write, commit.

:func:`process_shard` is what a Prefect task (``spadepis/tasks/shard.py``) or any other runner calls. It

1. returns at once when the shard is already committed (resume);
2. loads and validates every label map (a bad item becomes ``status="error"`` rows; the shard goes on);
   a label map whose size differs from the outputs' (SPADE: the preset's size; stylize-only: a photo larger
   than ``dataset.max_side`` is downscaled) is NEAREST-resized to it and written to
   ``labels/<shard>/<attempt>/<source_id>.png``, which the rows' ``label_uri`` names (label and image stay pixel-aligned);
   in the reference mode (``models.compat: fastphotostyle`` with exact smoothing) the outputs lose 2 px on
   every side, and so does that label copy;
3. runs SPADE in batches of ``config.batch_size`` and writes ``synth/<shard>/<attempt>/<source_id>.png``;
4. for each synthesized image, prepares the smoother once (the exact system is factorised once per
   content image) and, for each of its styles, stylizes with the style's cache (prepared once per
   process and style; label-aware with the source's label map at output size when the style has a
   label map, ``styles.unmatched`` for the classes it lacks), smooths, scores the output
   (:mod:`spadepis.pipeline.quality`, ``t_quality_ms``) and writes ``images/<shard>/<attempt>/<source_id>/<style_id>.png``;
5. writes the manifest part, then creates the ``_SUCCESS.json`` marker naming it (a conditional write: the
   first attempt to commit wins; a later one removes its own files). Every file an attempt writes lies in
   folders of that attempt only, so nothing a committed row names is ever rewritten.

:func:`process_shard` is that list as a page of named steps over one explicit :class:`ShardState`.

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

__all__ = ["ShardResult", "ShardState", "process_shard"]


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
    superseded: str | None = None  # this attempt's id when another attempt committed the shard first


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


@dataclass
class ShardState:
    """Everything one attempt of one shard knows, passed explicitly from step to step of :func:`process_shard`."""

    config: RunConfig
    shard: ShardSpec
    storage: RunStorage
    writer: ShardWriter
    attempt_id: str
    t_start: float
    device: Any = None
    stylizer: Any = None
    synth: Any = None
    rows: RowBuilder | None = None
    items: list[Item] = field(default_factory=list)
    item_rows: list[list[tuple[int, dict[str, Any]]]] = field(default_factory=list)  # per item: (style position, row)
    samples: list[dict[str, str]] = field(default_factory=list)
    segs: dict[tuple[int, int], tuple[Any, Any]] = field(default_factory=dict)  # (item, style pos) -> (seg, style stats)
    numerics_of: dict[tuple[int, int], str] = field(default_factory=dict)  # (item, style pos) -> WCT numerics taken
    pending: deque = field(default_factory=deque)  # (index, item, styles, stylize ms, future), in submission order
    ignore: Any = None
    crop: int = 0
    smooth_kw: dict[str, Any] = field(default_factory=dict)
    smooth_device: Any = None
    pool: Any = None
    max_pending: int = 2


def process_shard(
    config: RunConfig,
    shard: ShardSpec,
    *,
    attempt_id: str | None = None,
    fence: str | None = None,
) -> ShardResult:
    """Process and commit one shard of ``config`` (see the module docstring). Idempotent per shard.

    ``fence``: the id of the run folder's lease the caller holds; the shard stops before writing when the lease
    is no longer that one (:class:`~spadepis.pipeline.lease.LeaseLostError`), and the commit records it.
    Raises on transient failures (:class:`StorageError`, CUDA out-of-memory) so the caller retries; bad
    items become error rows. Progress is the caller's: one result per shard.
    """
    st = _open_shard(config, shard, attempt_id, fence)
    if isinstance(st, ShardResult):
        return st  # committed already
    _load_models(st)
    _load_items(st)
    _open_smoothing(st)
    _synthesize_and_stage(st)
    return _commit(st)


# ------------------------------------------------------------------------------------ the steps


def _open_shard(config: RunConfig, shard: ShardSpec, attempt_id: str | None, fence: str | None) -> ShardState | ShardResult:
    """Step 1: the shard's state, or its result when a marker commits it already; stops when the lease is lost."""
    t_start = time.perf_counter()
    config = config.resolved()
    apply_storage_options(config)
    set_max_image_pixels(config.max_image_pixels)
    storage = RunStorage(config.run_uri)
    storage.check_fence(fence, shard.name)  # a run that lost its lease starts nothing, not even a skip
    existing = storage.marker(shard.name)
    if existing is not None:
        return ShardResult(shard.name, True, existing.get("rows", 0), existing.get("ok", 0), existing.get("error", 0),
                           existing.get("attempt_id"), existing.get("part"), 0.0)
    attempt_id = attempt_id or new_attempt_id()
    return ShardState(config, shard, storage, ShardWriter(storage, shard.name, attempt_id, fence=fence), attempt_id, t_start)


def _load_models(st: ShardState) -> None:
    """Step 2: the models (cached per process) and the row builder."""
    from ..devices import resolve_device

    config, m = st.config, st.config.models
    st.device = resolve_device(config.device)
    preset = run_preset(config)
    st.stylizer = get_stylizer(config, st.device)
    if config.stylize_only:
        synth_model, synth_sha = "none (stylize-only)", None
    else:
        st.synth = get_synthesizer(config, st.device)
        synth_model, synth_sha = st.synth.model_name, st.synth.sha256
    remap = None if config.stylize_only else run_label_remap(config)  # dataset.label_remap (preflight checked it)
    st.rows = RowBuilder(
        run_id=config.resolved_run_id, shard_id=st.shard.name, attempt_id=st.attempt_id, dataset=config.dataset_name,
        preset=preset.name, label_nc=preset.label_nc, synth_model=synth_model, synth_weights_sha256=synth_sha,
        stylizer=m.stylizer, stylizer_weights_sha256=st.stylizer.weights_sha256, smoothing=m.smoothing,
        device=str(st.device),
        label_remap=remap.label if remap is not None else None,
    )


def _load_items(st: ShardState) -> None:
    """Step 3: load and validate every label map; write the resized label maps."""
    from .styles import ignored_labels

    preset = run_preset(st.config)
    st.items = [Item(src, styles) for src, styles in zip(st.shard.sources, st.shard.style_ids)]
    st.item_rows = [[] for _ in st.items]
    st.ignore = ignored_labels(st.config, label_space_preset(st.config))
    for item in st.items:
        load_item(item, st.config, preset)
        if item.label_png is not None and item.error is None:
            t0 = time.perf_counter()
            try:
                item.label_uri = st.writer.write_label(item.source.source_id, item.label_png)
            except InputError as exc:
                item.error = str(exc)
            item.label_png, item.t_write_source = None, _ms(t0)


def _open_smoothing(st: ShardState) -> None:
    """Step 4: where smoothing runs. CPU exact smoothing of different contents runs on the smoothing pool's
    processes (factorisations in parallel); GPU smoothing solves a whole batch in one batched call."""
    from ..models.smoothing import default_smoothing_workers, smoothing_pool

    m = st.config.models
    st.smooth_device = _smoothing_device(st.config, st.device)
    st.crop = reference_crop(st.config)
    st.smooth_kw = {"compat": m.compat} if st.crop else {}
    if st.smooth_kw:
        st.smooth_device = None  # the reference's crop/resize/pad runs in the CPU solver only
    if st.smooth_device is None and m.smoothing != "none":
        st.pool = smoothing_pool(st.config.runner.smoothing_workers or default_smoothing_workers())
    st.max_pending = 2 * (st.pool.workers if st.pool is not None else 1)


def _synthesize_and_stage(st: ShardState) -> None:
    """Step 5: SPADE batch by batch on this thread while a stage thread stylizes, smooths, scores and writes the
    previous batch (the stage overlap); a stage failure stops synthesis and is re-raised (the caller retries)."""
    from concurrent.futures import ThreadPoolExecutor

    from ..data.fs import inherit_storage_options

    indexed = list(enumerate(st.items))
    good = [(i, it) for i, it in indexed if it.error is None]
    runner = ThreadPoolExecutor(1, thread_name_prefix=f"spadepis-{st.shard.name}", **inherit_storage_options())
    futures = []
    try:
        futures.append(runner.submit(_stage, st, [(i, it) for i, it in indexed if it.error is not None]))
        for b in range(0, len(good), st.config.batch_size):
            batch = good[b : b + st.config.batch_size]
            if st.synth is not None:
                _synthesize_batch(st.synth, [it for _, it in batch], st.writer)
            if any(f.done() and f.exception() is not None for f in futures):
                break  # a transient failure downstream: stop synthesizing, re-raise below
            futures.append(runner.submit(_stage, st, batch))
    finally:
        runner.shutdown(wait=True)
    for f in futures:
        f.result()  # re-raises a stage failure
    _drain(st, 0)


def _commit(st: ShardState) -> ShardResult:
    """Step 6: the rows in item and style order, committed (first commit wins); the shard's result."""
    shard_rows = [r for per_item in st.item_rows for _, r in sorted(per_item, key=lambda jr: jr[0])]
    marker = st.writer.commit(shard_rows, extra={"device": str(st.device), "wall_s": time.perf_counter() - st.t_start})
    superseded = "superseded_attempt" in marker
    return ShardResult(
        shard=st.shard.name,
        skipped=superseded,  # another attempt committed first: its rows stand, this one's files are gone
        rows=marker["rows"],
        ok=marker["ok"],
        error=marker["error"],
        attempt_id=marker["attempt_id"],
        part=marker["part"],
        wall_s=time.perf_counter() - st.t_start,
        errors=[] if superseded else sorted({r["error"] for r in shard_rows if r["error"]})[:10],
        samples=[] if superseded else st.samples,
        sources=len(st.items),
        stage_ms={} if superseded else {k: float(sum(r.get(k) or 0.0 for r in shard_rows)) for k in STAGES},
        superseded=st.attempt_id if superseded else None,
    )


# ------------------------------------------------------------------------------------ the stage thread


def _row(st: ShardState, idx: int, j: int, **kw) -> dict[str, Any]:
    """The row of item ``idx`` with its ``j``-th style."""
    item, style_id = st.items[idx], st.items[idx].styles[j]
    score, rank = st.shard.score_of(idx, j)
    r = st.rows.row(
        sample_id=sample_id(item.source.source_id, style_id, st.config.seed, st.config.config_hash),
        source_id=item.source.source_id, label_uri=item.row_label_uri, instance_uri=item.source.instance_uri,
        style_id=style_id, style_uri=st.shard.style_uri(style_id), style_score=score, style_rank=rank,
        synth_uri=item.synth_uri, style_labels=st.shard.style_item(style_id).label_source or "none", **kw,
    )
    for key in URI_COLUMNS:  # absolute, no ".."
        r[key] = normalize_uri(r[key])
    return r


def _shared_times(item: Item) -> dict[str, float]:
    k = max(1, len(item.styles))
    return {"t_load_ms": item.t_load / k, "t_synth_ms": item.t_synth / k}


def _stylize_item(st: ShardState, idx: int, item: Item) -> tuple[list[int], list[np.ndarray], list[float]]:
    """The item's stylized images (style positions, uint8 images, ms each); error rows for failures."""
    shared = _shared_times(item)
    if item.error is not None:
        st.item_rows[idx].extend((j, _row(st, idx, j, status="error", error=item.error, **shared))
                                 for j in range(len(item.styles)))
        return [], [], []
    ok, inits, t_sty = [], [], []
    for j, style_id in enumerate(item.styles):
        try:
            style_item = st.shard.style_item(style_id)
            cache, t_cache = get_style_cache(st.config, st.device, style_id, style_item.uri, style_item.label_uri)
            seg = item.seg_labels if cache.has_seg else None  # label-aware when both maps exist (dataset ids)
            t0 = time.perf_counter()
            raw, st.numerics_of[(idx, j)] = st.stylizer.stylize_with_numerics(
                item.content, cache, seg, unmatched=st.config.styles.unmatched
            )
            init = float_to_uint8(raw)
            t_sty.append(_ms(t0) + t_cache)
            st.segs[(idx, j)] = (seg, cache.meta["quality"])
        except InputError as exc:
            st.item_rows[idx].append((j, _row(st, idx, j, status="error", error=str(exc), **shared)))
        else:
            ok.append(j)
            inits.append(init)
    return ok, inits, t_sty


def _finish(st: ShardState, idx: int, item: Item, ok: list[int], t_sty: list[float], smoothed) -> None:
    """Write the smoothed outputs of one item and make its rows. ``smoothed``: a future of smooth_content."""
    from .quality import row_quality

    k = max(1, len(item.styles))
    shared = _shared_times(item)
    try:
        results, prep_s, smooth_s = smoothed.result()
    except (InputError, ConfigError) as exc:
        st.item_rows[idx].extend((j, _row(st, idx, j, status="error", error=f"smoothing: {exc}", **shared)) for j in ok)
        return
    t_sm = (prep_s + smooth_s) * 1000.0 / max(1, len(ok))
    for j, t_st, out in zip(ok, t_sty, results):
        style_id = item.styles[j]
        try:
            if isinstance(out, str):
                raise InputError(f"smoothing: {out}")
            t0 = time.perf_counter()
            seg, style_stats = st.segs.pop((idx, j))
            content = item.content
            if st.crop and out.shape[:2] != content.shape[:2]:  # reference mode: score the cropped pair
                c = st.crop
                content, seg = content[c:-c, c:-c], None if seg is None else seg[c:-c, c:-c]
            quality = row_quality(content, out, seg, style_stats, ignore=st.ignore)
            t_q = _ms(t0)
            t0 = time.perf_counter()
            data = encode_png(out)
            uri = st.writer.write_image(item.source.source_id, style_id, data)
            t_wr = _ms(t0) + item.t_write_source / k
        except InputError as exc:
            st.item_rows[idx].append((j, _row(st, idx, j, status="error", error=str(exc), **shared)))
        else:
            st.item_rows[idx].append((j, _row(
                st, idx, j, image_uri=uri, width=int(out.shape[1]), height=int(out.shape[0]),
                sha256=hashlib.sha256(data).hexdigest(), t_stylize_ms=t_st, t_smooth_ms=t_sm, t_write_ms=t_wr,
                t_quality_ms=t_q, **quality, **shared, wct_numerics=st.numerics_of.get((idx, j)),
            )))
            if len(st.samples) < 4:
                st.samples.append({"source_id": item.source.source_id, "style_id": style_id,
                                   "label_uri": item.row_label_uri, "synth_uri": item.synth_uri or "", "image_uri": uri})


def _drain(st: ShardState, block_until: int) -> None:
    """Finish pending items in order: done ones, and any beyond ``block_until`` still pending."""
    while st.pending and (len(st.pending) > block_until or st.pending[0][4].done()):
        _finish(st, *st.pending.popleft())


def _stage(st: ShardState, batch: list[tuple[int, Item]]) -> None:
    """Stylize one batch, then smooth it (one batched GPU solve, or the pool / inline) and finish its items."""
    from ..models.smoothing import smooth_batch_torch

    m = st.config.models
    stylized = [(idx, item, *_stylize_item(st, idx, item)) for idx, item in batch]
    if st.smooth_device is not None:  # one batched GPU solve for the whole batch
        todo = [(idx, item, ok, inits, t) for idx, item, ok, inits, t in stylized if ok]
        futures = smooth_batch_torch([(it.content, inits) for _, it, _, inits, _ in todo], m.smoothing, st.smooth_device)
        for (idx, item, ok, _, t_sty), fut in zip(todo, futures):
            _finish(st, idx, item, ok, t_sty, fut)
        return
    for idx, item, ok, inits, t_sty in stylized:
        if not ok:
            continue
        if st.pool is not None:
            fut = st.pool.submit(item.content, inits, m.smoothing, **st.smooth_kw)
        else:
            fut = _done(item.content, inits)
        st.pending.append((idx, item, ok, t_sty, fut))
        _drain(st, st.max_pending)
