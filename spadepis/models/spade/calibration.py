"""Random-init SPADE weights for demos and tests: seeded weights, then batch-norm statistics and the
output scale calibrated on a seeded blocky label map so the random model gives colourful, unsaturated images.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...data.labelmaps import build_semantics
from ...data.presets import Preset
from .reference import SPADE, SNConv2d, SPADEGenerator

__all__ = ["randomize"]


def randomize(gen: SPADEGenerator, preset: Preset, seed: int) -> None:
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, mod in gen.named_modules():
            if isinstance(mod, SNConv2d):
                w = mod.weight_orig
                w.copy_(torch.randn(w.shape, generator=rng) / math.sqrt(w[0].numel()))
                if mod.bias is not None:
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=rng) * 0.1)
                v = torch.randn(mod.weight_v.shape, generator=rng)
                v /= v.norm()
                u = torch.mv(w.reshape(w.shape[0], -1), v)
                mod.weight_v.copy_(v)
                mod.weight_u.copy_(u / u.norm())
            elif isinstance(mod, nn.Conv2d):
                one_hot_input = name == "fc" or name.endswith("mlp_shared.0")
                fan = 9 if one_hot_input else mod.weight[0].numel()
                scale = 0.5 if name.endswith(("mlp_gamma", "mlp_beta")) else 1.0
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=rng) * scale / math.sqrt(fan))
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=rng) * 0.1)
            elif isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.zero_()
                mod.running_var.fill_(1.0)
                mod.num_batches_tracked.zero_()
        # Calibrate: BN statistics from one pass over a seeded blocky map, then the output scale.
        labels = _blocky_labels(preset, rng)
        sem = build_semantics(labels, None, preset)
        feats = {}
        # SPADE.forward normalises with the running statistics: set them from each layer's input first.
        hooks = [mod.register_forward_pre_hook(_bn_calibration_hook) for mod in gen.modules() if isinstance(mod, SPADE)]
        hooks.append(gen.conv_img.register_forward_hook(lambda m, i, o: feats.__setitem__("pre", o)))
        gen.eval()
        gen(sem)
        for h in hooks:
            h.remove()
        std = float(feats["pre"].std()) or 1.0
        gen.conv_img.weight.mul_(0.8 / std)
        gen.conv_img.bias.mul_(0.8 / std)


def _bn_calibration_hook(module: SPADE, args) -> None:
    x = args[0]
    bn = module.param_free_norm
    var = x.var((0, 2, 3), unbiased=False)
    bn.running_mean.copy_(x.mean((0, 2, 3)))
    bn.running_var.copy_(var.clamp(min=0.1 * float(var.mean())) + 1e-2)  # no blow-up on near-constant channels


def _blocky_labels(preset: Preset, rng: torch.Generator) -> torch.Tensor:
    h, w = preset.label_size
    coarse = torch.randint(0, preset.num_label_channels, (1, 1, 4, 4), generator=rng).float()
    return F.interpolate(coarse, size=(h, w), mode="nearest")[:, 0].long()
