"""The public SPADE API: :class:`Synthesizer` (a loaded generator and its fast path), :func:`load_synthesizer`
for official checkpoints, :func:`random_synthesizer` for seeded random weights, and :func:`to_uint8`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...data.labelmaps import _as_label_tensor, build_semantics, check_label_range
from ...data.presets import Preset, get_preset
from ...devices import resolve_device
from ...errors import InputError
from ..checkpoints import check_state_dict, read_checkpoint, tensor_digest
from .calibration import randomize
from .checkpoint import clean_state_dict, expected_state_dict_shapes, resolve_options, suggestion
from .fast import FastSPADE
from .reference import SPADEGenerator

__all__ = ["Synthesizer", "load_synthesizer", "random_synthesizer", "to_uint8"]


class Synthesizer:
    """A loaded SPADE generator ready for inference.

    Attributes: ``preset``, ``sha256`` (checkpoint file bytes, or tensor digest for random weights),
    ``model_name``, ``device``, ``generator`` (the straightforward module), ``fast`` (:class:`FastSPADE`).
    """

    def __init__(self, generator: SPADEGenerator, preset: Preset, *, sha256: str, model_name: str,
                 device: torch.device, batch_size: int = 8, dtype: torch.dtype = torch.float32):
        self.preset = preset
        self.sha256 = sha256
        self.model_name = model_name
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.generator = generator.eval().requires_grad_(False).to(self.device)
        self.fast = FastSPADE(self.generator, preset.num_label_channels, not preset.no_instance, dtype=dtype)

    def __repr__(self) -> str:
        return f"Synthesizer({self.model_name!r}, preset={self.preset.describe()}, device={self.device}, sha256={self.sha256[:12]})"

    def _prepare(self, labels, instances) -> tuple[torch.Tensor, torch.Tensor | None]:
        lab = _as_label_tensor(labels)
        if tuple(lab.shape[1:]) != self.preset.label_size:
            raise InputError(
                f"label maps have size {tuple(lab.shape[1:])} (H, W), expected {self.preset.label_size} for preset "
                f"{self.preset.name!r}; load them with spadepis.data.labelmaps.load_label_map (it resizes like the official loader)."
            )
        check_label_range(lab, self.preset)
        inst = None
        if instances is not None and not self.preset.no_instance:
            inst = _as_label_tensor(instances, "instances")
            if inst.shape != lab.shape:
                raise InputError(f"instance maps have shape {tuple(inst.shape)} but label maps {tuple(lab.shape)}; they must match.")
        return lab, inst

    def synthesize(self, labels, instances=None) -> torch.Tensor:
        """``labels`` (B, H, W) int64 at ``preset.label_size`` -> (B, 3, H, W) float32 in [-1, 1] on CPU (fast path).

        ``instances`` (B, H, W) ids or None; when the preset uses instance edges and none are given,
        the label map's own boundaries are used.
        """
        lab, inst = self._prepare(labels, instances)
        outs = []
        with torch.inference_mode():
            for s in range(0, lab.shape[0], self.batch_size):
                outs.append(self.fast(lab[s:s + self.batch_size], None if inst is None else inst[s:s + self.batch_size]).cpu())
        return torch.cat(outs)

    def synthesize_reference(self, labels, instances=None) -> torch.Tensor:
        """The straightforward path: dense one-hot through the official module structure (float32)."""
        lab, inst = self._prepare(labels, instances)
        with torch.inference_mode():
            sem = build_semantics(lab.to(self.device), None if inst is None else inst.to(self.device), self.preset)
            return self.generator(sem).float().cpu()


def load_synthesizer(checkpoint: str | Path, preset: str | Preset = "coco", *, ngf: int | None = None,
                     num_upsampling_layers: str | None = None, device="auto", **preset_overrides) -> Synthesizer:
    """Load an official ``latest_net_G.pth`` (legacy or zip serialisation, ``.xz`` allowed).

    ``ngf`` and the ``most`` block are inferred from the file unless given; the input channel count must
    match the preset (the error says which preset would). Spectral norm is folded with the stored
    ``weight_u``/``weight_v``; batch norm uses the stored running statistics.
    """
    base = get_preset(preset, **preset_overrides)
    dev = resolve_device(device)
    ck = read_checkpoint(checkpoint)
    sd = ck.state_dict
    p = resolve_options(sd, base, ngf, num_upsampling_layers)
    expected = expected_state_dict_shapes(p)
    check_state_dict(expected, sd, uri=ck.uri, what=f"the SPADE generator of preset {p.describe()}",
                     suggestion=suggestion(sd, p), optional=("num_batches_tracked",))
    clean = clean_state_dict(sd, expected, ck.uri)
    with torch.device("meta"):
        gen = SPADEGenerator.from_preset(p)
    gen.load_state_dict(clean, strict=True, assign=True)
    return Synthesizer(gen, p, sha256=ck.sha256, model_name=f"spade-{p.name}", device=dev)


def random_synthesizer(preset: str | Preset, *, ngf: int = 16, seed: int = 0, device="auto") -> Synthesizer:
    """A seeded random-weight generator (demos, tests); ``model_name`` says ``random-init``.

    Weights are drawn from a seeded generator; batch-norm statistics and the output scale are then
    calibrated on a seeded blocky label map, so the random model gives colourful, unsaturated images.
    ``sha256`` is :func:`spadepis.models.checkpoints.tensor_digest` of the weights.
    """
    p = get_preset(preset, ngf=ngf)
    dev = resolve_device(device)
    gen = SPADEGenerator.from_preset(p)
    randomize(gen, p, seed)
    return Synthesizer(gen, p, sha256=tensor_digest(gen.state_dict()), model_name=f"spade-{p.name} random-init",
                       device=dev)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8, as the official ``tensor2im`` (truncation, not rounding)."""
    x = images.detach().cpu().float().numpy() if isinstance(images, torch.Tensor) else np.asarray(images, np.float32)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] != 3:
        raise InputError(f"images have shape {x.shape}, expected (B, 3, H, W).")
    x = (np.transpose(x, (0, 2, 3, 1)) + 1) / 2.0 * 255.0
    return np.clip(x, 0, 255).astype(np.uint8)
