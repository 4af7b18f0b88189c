"""SPADE checkpoint inspection and conversion: expected keys and shapes per preset, the options a
state dict's shapes imply (``ngf``, the ``most`` block, matching presets), the error suggestion naming the
flags that would load it, and the cleaned float32 state dict the generator loads.
"""

from __future__ import annotations

import torch

from ...data.presets import PRESETS, Preset, get_preset
from ...errors import CheckpointError
from .reference import SPADEGenerator

__all__ = ["expected_state_dict_shapes", "infer_generator_options", "suggestion", "resolve_options", "clean_state_dict"]


def expected_state_dict_shapes(preset: Preset, ngf: int | None = None) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the official generator for ``preset`` (built on the meta device, no memory)."""
    with torch.device("meta"):
        g = SPADEGenerator.from_preset(preset, ngf)
    return {k: tuple(v.shape) for k, v in g.state_dict().items()}


def infer_generator_options(state_dict) -> dict | None:
    """What the shapes tell: ``{'semantic_nc', 'ngf', 'most', 'presets'}``, or None if not a SPADE generator."""
    fc = state_dict.get("fc.weight")
    if not isinstance(fc, torch.Tensor) or fc.dim() != 4 or fc.shape[0] % 16:
        return None
    sem = int(fc.shape[1])
    presets = [n for n, p in PRESETS.items() if p.checkpoint and p.checkpoint.shape("fc.weight")[1] == sem]
    return {"semantic_nc": sem, "ngf": int(fc.shape[0]) // 16, "most": any(k.startswith("up_4.") for k in state_dict),
            "presets": presets}


def suggestion(state_dict, preset: Preset) -> str:
    info = infer_generator_options(state_dict)
    if info is None:
        return ("the file does not look like a SPADE generator (no 'fc.weight' of shape [16*ngf, semantic_nc, 3, 3]); "
                "pass the generator file latest_net_G.pth of an official checkpoint folder (not latest_net_D.pth).")
    sem, ngf, most = info["semantic_nc"], info["ngf"], info["most"]
    opts = f" --ngf {ngf}" + (" --num-upsampling-layers most" if most else "")
    found = f"its shapes say semantic_nc={sem}, ngf={ngf}{', with the up_4 block (most)' if most else ''}"
    if info["presets"]:
        name = info["presets"][0]
        official = PRESETS[name].checkpoint
        return f"{found}: it matches preset {name!r}; use --preset {name}{opts} (the official file is {official.path})."
    return (f"{found}; no built-in preset has {sem} input channels: use --preset custom with label_nc + dontcare + "
            f"instance = {sem}, e.g. --label-nc {sem} --no-instance, or --label-nc {sem - 1} (with instance maps){opts}.")


def resolve_options(state_dict, preset: Preset, ngf: int | None, num_upsampling_layers: str | None) -> Preset:
    info = infer_generator_options(state_dict)
    if ngf is None:
        ngf = info["ngf"] if info else preset.ngf
    nul = num_upsampling_layers
    if nul is None:
        nul = preset.num_upsampling_layers
        if info and info["most"]:
            nul = "most"
        elif info and nul == "most":
            nul = "normal"
    return get_preset(preset, ngf=ngf, num_upsampling_layers=nul)


def clean_state_dict(state_dict, expected: dict[str, tuple[int, ...]], uri: str) -> dict[str, torch.Tensor]:
    """The ``expected`` keys of a checked state dict as the generator loads them: float32 weights, int64
    ``num_batches_tracked`` (zero when absent); refuses non-float weights and non-finite values."""
    clean = {}
    for k in expected:
        if k in state_dict:
            t = state_dict[k]
            if k.endswith("num_batches_tracked"):
                clean[k] = t.long()
            elif not t.is_floating_point():
                raise CheckpointError(f"checkpoint {uri!r}: tensor {k} has dtype {t.dtype}, expected floating point weights.")
            else:
                clean[k] = t.float()
        else:
            clean[k] = torch.zeros((), dtype=torch.long)
    bad = [k for k, t in clean.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise CheckpointError(f"checkpoint {uri!r} has non-finite values (NaN/inf) in {', '.join(bad[:5])}; the file is corrupt.")
    return clean
