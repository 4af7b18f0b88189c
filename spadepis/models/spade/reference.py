"""The SPADE generator of NVlabs/SPADE (Park et al. 2019) at inference, with the official parameter names.

:class:`SPADEGenerator` is the straightforward module: its ``state_dict()`` keys and shapes equal the
official ``latest_net_G.pth`` (spectral-norm convs keep ``weight_orig``/``weight_u``/``weight_v``); its
``forward(seg)`` runs the dense one-hot map through every SPADE convolution in float32, exactly as the
official code does in eval mode. The fast exact forward built from it is in :mod:`.fast`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...data.presets import UPSAMPLING_LAYERS, Preset

__all__ = ["SNConv2d", "SPADE", "SPADEResnetBlock", "SPADEGenerator"]

_NHIDDEN = 128


class SNConv2d(nn.Module):
    """Conv2d stored the way ``torch.nn.utils.spectral_norm`` stores it.

    Keys ``bias``, ``weight_orig``, ``weight_u``, ``weight_v``. At inference the effective weight is
    ``W = weight_orig / sigma`` with ``sigma = u . (W_mat v)`` from the stored vectors (no power iteration).
    """

    def __init__(self, cin: int, cout: int, kernel_size: int, bias: bool = True):
        super().__init__()
        if bias:
            self.bias = nn.Parameter(torch.empty(cout))
        else:
            self.register_parameter("bias", None)
        self.weight_orig = nn.Parameter(torch.empty(cout, cin, kernel_size, kernel_size))
        self.register_buffer("weight_u", torch.empty(cout))
        self.register_buffer("weight_v", torch.empty(cin * kernel_size * kernel_size))
        self.padding = kernel_size // 2

    def folded_weight(self) -> torch.Tensor:
        w = self.weight_orig
        sigma = torch.dot(self.weight_u, torch.mv(w.reshape(w.shape[0], -1), self.weight_v))
        return w / sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.folded_weight(), self.bias, padding=self.padding)


class SPADE(nn.Module):
    """``BN(x) * (1 + gamma(seg)) + beta(seg)`` with BN in eval mode (stored running statistics)."""

    def __init__(self, norm_nc: int, label_nc: int, nhidden: int = _NHIDDEN):
        super().__init__()
        self.param_free_norm = nn.BatchNorm2d(norm_nc, affine=False)
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, nhidden, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(nhidden, norm_nc, 3, padding=1)
        self.mlp_beta = nn.Conv2d(nhidden, norm_nc, 3, padding=1)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        normalized = F.batch_norm(
            x, self.param_free_norm.running_mean, self.param_free_norm.running_var, None, None, False, 0.0,
            self.param_free_norm.eps,
        )
        segmap = F.interpolate(segmap, size=x.shape[2:], mode="nearest")
        actv = self.mlp_shared(segmap)
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResnetBlock(nn.Module):
    """``shortcut(x) + conv_1(lrelu(norm_1(conv_0(lrelu(norm_0(x))))))``; learned 1x1 shortcut iff fin != fout."""

    def __init__(self, fin: int, fout: int, semantic_nc: int):
        super().__init__()
        self.learned_shortcut = fin != fout
        fmid = min(fin, fout)
        self.conv_0 = SNConv2d(fin, fmid, 3)
        self.conv_1 = SNConv2d(fmid, fout, 3)
        if self.learned_shortcut:
            self.conv_s = SNConv2d(fin, fout, 1, bias=False)
        self.norm_0 = SPADE(fin, semantic_nc)
        self.norm_1 = SPADE(fmid, semantic_nc)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, semantic_nc)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        x_s = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return x_s + dx


class SPADEGenerator(nn.Module):
    """The official SPADE generator (``netG=spade``, ``norm_G=spectralspadesyncbatch3x3``, no VAE).

    Parameters
    ----------
    semantic_nc:
        input channels (label channels + dontcare + instance edge), 184 for COCO-Stuff.
    ngf:
        width; 64 for the official models.
    num_upsampling_layers:
        ``normal`` | ``more`` | ``most``.
    crop_size, aspect_ratio:
        output width and W/H ratio; the latent grid is ``(round(sw / aspect), sw)`` with
        ``sw = crop_size // 2**n``.

    ``forward(seg)`` takes ``(B, semantic_nc, H, W)`` float one-hot maps and returns ``(B, 3, H', W')``
    in [-1, 1]. Always use it in ``eval()`` mode (this class has no training code).
    """

    def __init__(self, semantic_nc: int, ngf: int = 64, num_upsampling_layers: str = "normal",
                 crop_size: int = 256, aspect_ratio: float = 1.0):
        super().__init__()
        if num_upsampling_layers not in UPSAMPLING_LAYERS:
            raise ValueError(f"num_upsampling_layers must be one of {list(UPSAMPLING_LAYERS)}, got {num_upsampling_layers!r}")
        nf = ngf
        self.semantic_nc = semantic_nc
        self.ngf = ngf
        self.num_upsampling_layers = num_upsampling_layers
        sw = crop_size // 2 ** UPSAMPLING_LAYERS[num_upsampling_layers]
        self.sw, self.sh = sw, round(sw / aspect_ratio)
        self.fc = nn.Conv2d(semantic_nc, 16 * nf, 3, padding=1)
        self.head_0 = SPADEResnetBlock(16 * nf, 16 * nf, semantic_nc)
        self.G_middle_0 = SPADEResnetBlock(16 * nf, 16 * nf, semantic_nc)
        self.G_middle_1 = SPADEResnetBlock(16 * nf, 16 * nf, semantic_nc)
        self.up_0 = SPADEResnetBlock(16 * nf, 8 * nf, semantic_nc)
        self.up_1 = SPADEResnetBlock(8 * nf, 4 * nf, semantic_nc)
        self.up_2 = SPADEResnetBlock(4 * nf, 2 * nf, semantic_nc)
        self.up_3 = SPADEResnetBlock(2 * nf, 1 * nf, semantic_nc)
        final_nc = nf
        if num_upsampling_layers == "most":
            self.up_4 = SPADEResnetBlock(nf, nf // 2, semantic_nc)
            final_nc = nf // 2
        self.conv_img = nn.Conv2d(final_nc, 3, 3, padding=1)

    @classmethod
    def from_preset(cls, preset: Preset, ngf: int | None = None) -> SPADEGenerator:
        return cls(preset.semantic_nc, ngf or preset.ngf or 64, preset.num_upsampling_layers, preset.crop_size,
                   preset.aspect_ratio)

    def blocks(self) -> list[tuple[str, SPADEResnetBlock, bool]]:
        """(name, block, upsample-before) in forward order."""
        more = self.num_upsampling_layers in ("more", "most")
        out = [("head_0", self.head_0, False), ("G_middle_0", self.G_middle_0, True),
               ("G_middle_1", self.G_middle_1, more)]
        out += [(f"up_{i}", getattr(self, f"up_{i}"), True) for i in range(4)]
        if self.num_upsampling_layers == "most":
            out.append(("up_4", self.up_4, True))
        return out

    def forward(self, seg: torch.Tensor) -> torch.Tensor:
        x = self.fc(F.interpolate(seg, size=(self.sh, self.sw)))
        for _, block, up in self.blocks():
            if up:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = block(x, seg)
        return torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))
