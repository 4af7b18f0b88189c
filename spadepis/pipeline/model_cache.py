"""The process-wide model cache of the shard worker: each model and each style's statistics built once per process.

A worker process (a thread runner's flow process, a Dask worker) runs many shards; :func:`get_synthesizer`
and :func:`get_stylizer` load a model the first time a config asks for it and hand the same object to every
later shard, and :func:`get_style_cache` prepares a style once per process (threads asking for a style
being prepared wait for it instead of preparing it again; a style that cannot be read is remembered as its
:class:`InputError`). Everything is guarded by one lock; :func:`model_info` counts the loads.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

import numpy as np

from ..data.images import downscale_rgb, read_rgb
from ..data.labelmaps import read_label_map, resize_nearest
from ..data.presets import Preset, get_preset
from ..errors import CheckpointError, InputError
from .config import RANDOM_INIT, RunConfig

__all__ = [
    "run_preset",
    "run_label_remap",
    "label_space_preset",
    "get_synthesizer",
    "get_stylizer",
    "read_style",
    "read_style_labels",
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


def run_preset(config: RunConfig) -> Preset:
    """The SPADE preset of a run: ``dataset.preset`` with ``dataset.preset_overrides``."""
    return get_preset(config.dataset.preset, **config.dataset.preset_overrides)


_REMAPS: dict[str, Any] = {}


def run_label_remap(config: RunConfig):
    """The run's :class:`~spadepis.data.label_remap.LabelRemap` (``dataset.label_remap`` with ``dataset.unmapped``),
    read once per process, or ``None`` when the label maps are in the preset's ids. A table that cannot feed the
    run's preset raises :class:`~spadepis.errors.ConfigError` (preflight reports it before any work)."""
    import json

    from ..data.label_remap import load_label_remap

    d = config.dataset
    if d.label_remap is None:
        return None
    key = json.dumps([d.label_remap, d.unmapped], sort_keys=True, default=str)
    with _LOCK:
        remap = _REMAPS.get(key)
        if remap is None:
            remap = _REMAPS[key] = load_label_remap(d.label_remap, unmapped=d.unmapped)
    remap.check(run_preset(config))
    return remap


def label_space_preset(config: RunConfig) -> Preset:
    """The preset the dataset's own label maps are read with (style label maps, class fractions, quality scores):
    the run's preset, or with ``dataset.label_remap`` the dataset's id space (:meth:`LabelRemap.source_preset`)."""
    remap = None if config.stylize_only else run_label_remap(config)
    return remap.source_preset() if remap is not None else run_preset(config)


def get_synthesizer(config: RunConfig, device):
    """The SPADE synthesizer of ``config`` on ``device``, loaded once per process."""
    from ..models.spade import load_synthesizer, random_synthesizer

    m = config.models
    preset = run_preset(config)
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


def read_style(uri: str, max_side: int | None) -> np.ndarray:
    """A style photo as the stylizer sees it: RGB uint8, downscaled to ``styles.max_side``."""
    return downscale_rgb(read_rgb(uri), max_side)


def read_style_labels(config: RunConfig, label_uri: str, size_hw: tuple[int, int]) -> np.ndarray:
    """The style's label map in the dataset's label space, NEAREST-resized to the (downscaled) style photo."""
    return resize_nearest(read_label_map(label_uri, label_space_preset(config)), size_hw)


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
            style = read_style(uri, config.styles.max_side)
            seg = read_style_labels(config, label_uri, style.shape[:2]) if label_uri else None
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
