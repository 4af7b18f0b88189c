"""One source of a shard on its way through the worker, and its loading.

An :class:`Item` holds what the stages know about one source (label map, instance map, content image,
the URIs written so far, its timings, or the error that turned its rows into error rows).
:func:`load_item` reads and validates it:

* SPADE runs: the label map (and instance map) at the preset's size (official NEAREST resize); a label file
  of another size gets a pixel-aligned copy to write (``label_png``);
* stylize-only runs (``dataset.photos``): the photo is the content; a photo larger than
  ``dataset.max_side`` is downscaled, and its label map NEAREST-resized with it (again with a copy to write);
* in the reference mode (``models.compat: fastphotostyle`` with exact smoothing) the outputs lose 2 px on
  every side, and so does the label copy.

A bad input becomes ``item.error`` (its rows become error rows; the shard goes on). That includes local
files that cannot be read at all: a symlink loop, a dangling link, a FIFO, socket or device (checked before
opening, so a FIFO never blocks the shard), a folder, a file without read permission.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.images import check_local_input, downscale_rgb, local_path, read_rgb
from ..data.labelmaps import load_label_and_instance, read_id_map, read_label_map, resize_nearest, resized_label_png
from ..data.presets import Preset
from ..errors import InputError
from .config import RunConfig
from .model_cache import run_label_remap

__all__ = ["Item", "load_item", "reference_crop", "check_local_input"]


@dataclass
class Item:
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
    source_labels: np.ndarray | None = None  # dataset.label_remap: the dataset's own ids at the outputs' size

    @property
    def seg_labels(self) -> np.ndarray | None:
        """The label map in the dataset's ids at the outputs' size (label-aware transfer, scores): what
        ``styles.labels`` and ``label_uri`` hold; ``labels`` itself is in the generator's ids."""
        return self.source_labels if self.source_labels is not None else self.labels

    @property
    def row_label_uri(self) -> str:
        """The label map the rows name: the aligned copy when one was written, else the source's."""
        return self.label_uri or self.source.label_uri


def reference_crop(config: RunConfig) -> int:
    """Pixels the outputs lose on every side: 2 in the reference mode with exact smoothing (FastPhotoStyle's
    smoothing crops them), else 0."""
    m = config.models
    return 2 if m.compat == "fastphotostyle" and m.smoothing == "exact" else 0


def load_item(item: Item, config: RunConfig, preset: Preset) -> None:
    """Fill ``item``'s maps and content (or its ``error``) and ``t_load`` (ms); see the module docstring."""
    src = item.source
    crop = reference_crop(config)
    t0 = time.perf_counter()
    try:
        for uri in (src.label_uri, src.instance_uri, src.photo_uri):
            check_local_input(uri)
        if config.stylize_only:
            photo = read_rgb(src.photo_uri)
            label = read_label_map(src.label_uri, preset)
            if label.shape != photo.shape[:2]:
                raise InputError(
                    f"{src.label_uri}: label map is {label.shape[1]}x{label.shape[0]} but its photo {src.photo_uri} is "
                    f"{photo.shape[1]}x{photo.shape[0]} (WxH); pair each photo with its own label map"
                )
            resized = downscale_rgb(photo, config.dataset.max_side)
            if resized is not photo:  # keep the label map pixel-aligned with the (smaller) outputs
                label = resize_nearest(label, resized.shape[:2])
            if resized is not photo or crop:
                item.label_png = resized_label_png(src.label_uri, resized.shape[:2], crop)
            item.labels, item.content = label, resized
            item.synth_uri = src.photo_uri
        else:
            # dataset.label_remap: SPADE sees the mapped ids; the file (and label_uri, or its copy) keeps the dataset's
            remap = run_label_remap(config)
            item.labels, item.instances = load_label_and_instance(src.label_uri, src.instance_uri, preset, remap=remap)
            if remap is not None:
                item.source_labels = resize_nearest(read_id_map(src.label_uri), item.labels.shape)
            # SPADE outputs have the preset's size; a label file of another size gets an aligned copy
            item.label_png = resized_label_png(src.label_uri, item.labels.shape, crop)
            if not preset.no_instance and item.instances is None and config.dataset.use_instance is not False:
                raise InputError(
                    f"{src.label_uri}: no instance map for source {src.source_id!r}, but preset {preset.name!r} uses "
                    "instance maps; add it to dataset.instances (matched by file stem), or set dataset.use_instance: false "
                    "to use the label boundaries instead"
                )
    except InputError as exc:
        item.error = str(exc)
    except OSError as exc:
        if not all(local_path(u) is not None for u in (src.label_uri, src.instance_uri, src.photo_uri) if u):
            raise  # remote storage: maybe transient, the shard is retried
        item.error = f"{src.label_uri}: cannot be read ({type(exc).__name__}: {exc}); fix or remove the file"
    item.t_load = (time.perf_counter() - t0) * 1000.0
