"""Pseudo-labelled style pools: label maps for unlabelled style photos from a segmentation model.

With ``styles.labels: predict`` and ``styles.segmenter: SPEC``, every style photo gets a label map in the
dataset's label space, predicted once per style and stored in the run folder as
``<run>/style_labels/<style_id>.<key>.png`` (``key``: 12 hex of sha256 of the segmenter, the preset, the
photo URI and ``styles.max_side``; an existing file is reused, so a resumed run or a second ``spadepis
check`` predicts nothing again). The plan then treats these maps like given ``styles.labels``: semantic
selection, label-aware transfer and ``q_coverage`` use them; the style index says ``label_source:
predicted`` and the manifest ``style_labels: predicted``.

The segmenter (``SPEC``):

* a TorchScript file (local path or fsspec URI, e.g. made with ``torch.jit.script(model).save(path)``), or
* ``module:function``: an importable function that takes no argument and returns a callable
  (a ``torch.nn.Module`` is put in eval mode and moved to the run's device).

It is called once per style photo, under ``torch.no_grad()``, on a float32 tensor ``(1, 3, H, W)``: RGB in
``[0, 1]``, the photo as the stylizer sees it (downscaled to ``styles.max_side``), on the run's device (GPU
when there is one). It must return, at the same ``H x W``, either per-class scores ``(1, C, H, W)`` with
``C`` = the preset's label channels (the label is the argmax), or integer ids ``(1, H, W)`` / ``(H, W)``
in ``0..C-1``. Anything else is refused with what it returned, as a :class:`ConfigError` naming
``styles.segmenter``: a model for another label space must not silently steer the selection.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..errors import ConfigError, InputError

if TYPE_CHECKING:
    from ..data.presets import Preset

__all__ = ["PREDICT", "STYLE_LABELS_DIR", "is_module_spec", "load_segmenter", "segment", "predict_style_labels"]

PREDICT = "predict"
"""The value of ``styles.labels`` that asks for predicted style label maps."""
STYLE_LABELS_DIR = "style_labels"
_MODULE_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_FIELD = "styles.segmenter"


def is_module_spec(spec: str) -> bool:
    """``module:function`` (not a path, not a URI, no such file)."""
    return "://" not in spec and bool(_MODULE_SPEC.match(spec)) and not Path(spec).exists()


def _read_spec_bytes(spec: str) -> bytes:
    from ..data.fs import open_uri

    try:
        with open_uri(spec, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ConfigError(
            f"{_FIELD}: {spec!r} does not exist; give a TorchScript file (torch.jit.script(model).save(path)) or "
            "module:function returning a callable"
        ) from None
    except Exception as exc:  # noqa: BLE001 - unknown protocol, credentials
        raise ConfigError(f"{_FIELD}: cannot read {spec!r} ({type(exc).__name__}: {exc}); check the path or URI") from None


def segmenter_digest(spec: str) -> str:
    """sha256 of the TorchScript file's bytes, or of the ``module:function`` text."""
    data = spec.encode() if is_module_spec(spec) else _read_spec_bytes(spec)
    return hashlib.sha256(data).hexdigest()


def load_segmenter(spec: str, device: Any = "cpu") -> Callable:
    """The segmenter named by ``spec`` (see the module docstring), ready on ``device``."""
    import torch

    if is_module_spec(spec):
        mod_name, fn_name = spec.split(":", 1)
        try:
            factory = getattr(importlib.import_module(mod_name), fn_name)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"{_FIELD}: cannot import {spec!r} ({type(exc).__name__}: {exc}); module:function must name an "
                "importable function (is the module on PYTHONPATH?)"
            ) from None
        try:
            model = factory()
        except Exception as exc:  # noqa: BLE001 - user code
            raise ConfigError(f"{_FIELD}: {spec}() failed ({type(exc).__name__}: {exc})") from None
        if not callable(model):
            raise ConfigError(f"{_FIELD}: {spec}() returned {type(model).__name__}, not a callable (a model)")
    else:
        data = _read_spec_bytes(spec)
        try:
            model = torch.jit.load(io.BytesIO(data), map_location=torch.device(device))
        except Exception as exc:  # noqa: BLE001 - not TorchScript
            raise ConfigError(
                f"{_FIELD}: {spec!r} is not a TorchScript file ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                "save one with torch.jit.script(model).save(path) or torch.jit.trace(...).save(path), or give "
                "module:function"
            ) from None
    if isinstance(model, torch.nn.Module) or hasattr(model, "eval"):
        try:
            model = model.to(torch.device(device))
        except Exception:  # noqa: BLE001 - a callable without .to
            pass
        model.eval()
    return model


def _describe(out: Any) -> str:
    import torch

    if isinstance(out, torch.Tensor):
        return f"a {out.dtype} tensor of shape {tuple(out.shape)}"
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of {len(out)} item(s)"
    return f"a {type(out).__name__}"


def segment(model: Callable, image: np.ndarray, preset: "Preset", *, device: Any = "cpu", what: str = "style") -> np.ndarray:
    """Label ids ``(H, W)`` int64 of an RGB uint8 ``image`` ``(H, W, 3)``; a wrong output is a ConfigError."""
    import torch

    h, w = image.shape[:2]
    nc = preset.num_label_channels
    x = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).to(torch.device(device))
    x = x.permute(2, 0, 1)[None].float().div_(255.0)
    with torch.no_grad():
        try:
            out = model(x)
        except Exception as exc:  # noqa: BLE001 - user model
            raise ConfigError(
                f"{_FIELD}: the model failed on {what} (input float32 (1, 3, {h}, {w}), RGB in [0, 1]): "
                f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            ) from None
    expect = (f"expected scores (1, {nc}, {h}, {w}) (float, {nc} = the label channels of preset {preset.name!r}) or ids "
              f"(1, {h}, {w}) / ({h}, {w}) (integers 0..{nc - 1})")
    if not isinstance(out, torch.Tensor):
        raise ConfigError(f"{_FIELD}: the model returned {_describe(out)} for {what}; {expect}")
    shape = tuple(out.shape)
    if out.is_floating_point() and out.dim() == 4 and shape[0] == 1 and shape[2:] == (h, w):
        if shape[1] != nc:
            raise ConfigError(
                f"{_FIELD}: the model returned {_describe(out)} for {what}: {shape[1]} classes, but preset "
                f"{preset.name!r} has {nc} label channels; {expect}. Use a model trained for this dataset's label space."
            )
        ids = out[0].argmax(0)
    elif not out.is_floating_point() and not out.is_complex() and out.dtype != torch.bool and (
        shape == (1, h, w) or shape == (h, w)
    ):
        ids = out.reshape(h, w).long()
    else:
        raise ConfigError(f"{_FIELD}: the model returned {_describe(out)} for {what} (input (1, 3, {h}, {w})); {expect}")
    arr = ids.cpu().numpy().astype(np.int64)
    bad = (arr < 0) | (arr >= nc)
    if bad.any():
        values = np.unique(arr[bad])
        raise ConfigError(
            f"{_FIELD}: the model returned label ids outside preset {preset.name!r} for {what}: "
            f"{', '.join(map(str, values[:8].tolist()))}{', ...' if len(values) > 8 else ''} (valid: 0..{nc - 1}); "
            "use a model trained for this dataset's label space"
        )
    return arr


def _encode_ids(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    mode = "L" if arr.max(initial=0) < 256 else "I;16"
    Image.fromarray(arr.astype(np.uint8 if mode == "L" else np.uint16), mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def predict_style_labels(config: Any, styles: Any, run_uri: str) -> dict[str, str | None]:
    """``style_id -> label URI`` for every style of the plan (``StyleItem`` tuple), predicted once per style.

    Existing predictions (same key) are reused. A style photo that cannot be read maps to ``None`` (its
    pairs become error rows later, as without labels). A wrong model output stops the run (ConfigError).
    """
    from ..data.fs import url_to_fs
    from ..data.images import downscale_rgb, read_rgb
    from ..data.presets import get_preset
    from ..devices import resolve_device
    from .styles import _write

    st = config.styles
    if not st.segmenter:
        raise ConfigError("styles.labels: predict needs styles.segmenter (a TorchScript file or module:function)")
    preset = get_preset(config.dataset.preset, **config.dataset.preset_overrides)
    digest = segmenter_digest(st.segmenter)
    base = f"{str(run_uri).rstrip('/')}/{STYLE_LABELS_DIR}"
    out: dict[str, str | None] = {}
    todo = []
    for s in styles:
        key = hashlib.sha256("\x00".join(
            (digest, preset.name, str(preset.num_label_channels), s.uri, str(st.max_side))).encode()).hexdigest()[:12]
        uri = f"{base}/{s.style_id}.{key}.png"
        out[s.style_id] = uri
        fs, path = url_to_fs(uri)
        if not fs.exists(path):
            todo.append((s, uri))
    if not todo:
        return out
    device = resolve_device(config.device)
    model = load_segmenter(st.segmenter, device)
    for s, uri in todo:
        try:
            image = downscale_rgb(read_rgb(s.uri), st.max_side)
        except InputError:
            out[s.style_id] = None
            continue
        ids = segment(model, image, preset, device=device, what=f"style {s.style_id!r} ({s.uri})")
        _write(uri, _encode_ids(ids))
    return out
