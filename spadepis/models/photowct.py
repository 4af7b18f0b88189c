"""PhotoWCT networks: VGG-19 encoders with max-pool indices and mirrored decoders.

Two weight sets fit this structure:

* :class:`PhotoWCT` -- FastPhotoStyle's ``photo_wct.pth`` (Li et al., ECCV 2018): four encoders
  ``e1..e4`` (VGG-19 up to ``relu1_1 .. relu4_1``) and four decoders ``d1..d4``; ``state_dict()`` keys
  and shapes equal the official file (``ALGORITHMS.md`` 2.1-2.2). Style features for every level come
  from one pass of ``e4`` (the reference's ``forward_multiple``).
* :class:`WCT16x` -- the 16x-pruned VGG-19 encoders/decoders of Collaborative Distillation
  (Wang et al., CVPR 2020; files ``encoder_l1..5.pth``, ``decoder_l1..5.pth``, each ``{'epoch', 'model'}``,
  keys ``conv0, conv11, conv12, conv21, ...``). Each level has its own encoder, so the style is encoded
  by every ``eL``. The decoders were trained with nearest-neighbour 2x upsampling and a ReLU after their
  last conv; see :data:`WCT16X_UNPOOL` for how they are used here.

Layers (both): ``conv0`` is a 1x1 conv (3 -> 3, the Caffe-VGG input normalisation, no ReLU); every other
conv is ``ReflectionPad2d(1)`` + 3x3 conv + ReLU; pools are ``MaxPool2d(2, 2)`` (floor mode) with indices.
A decoder mirrors its encoder: a 3x3 conv per encoder conv (channels reversed), with ReLU except after the
last one (PhotoWCT) and an unpooling where the encoder pooled. Max-unpooling uses the indices and the
pre-pool size of the *content* encoder pass, so odd sizes round-trip (75 -> 37 -> 18 -> 9 and back).

Images enter as RGB float in ``[0, 1]``, ``(B, 3, H, W)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import check_state_dict, read_checkpoint, tensor_digest
from ..errors import CheckpointError, ConfigError

__all__ = [
    "PoolRecord",
    "VGGEncoder",
    "VGGDecoder",
    "WCTNetwork",
    "PhotoWCT",
    "WCT16x",
    "PHOTOWCT_WIDTHS",
    "WCT16X_WIDTHS",
    "WCT16X_UNPOOL",
    "load_photowct",
    "load_wct16x",
]

# Encoder layer sequence of VGG-19 (canonical names "r_c" = conv r_c); "pool" marks a 2x2 max-pool.
# Level L ends at conv L_1.
_VGG_SEQUENCE: tuple[str, ...] = (
    "1_1", "1_2", "pool", "2_1", "2_2", "pool", "3_1", "3_2", "3_3", "3_4", "pool",
    "4_1", "4_2", "4_3", "4_4", "pool", "5_1",
)  # fmt: skip

PHOTOWCT_WIDTHS: dict[str, int] = {
    "1_1": 64, "1_2": 64, "2_1": 128, "2_2": 128, "3_1": 256, "3_2": 256, "3_3": 256, "3_4": 256, "4_1": 512,
}  # fmt: skip
"""Output channels of each VGG-19 conv (full width, as in ``photo_wct.pth``)."""

WCT16X_WIDTHS: dict[int, dict[str, int]] = {
    1: {"1_1": 24},
    **{
        level: {
            "1_1": 16, "1_2": 16, "2_1": 32, "2_2": 32, "3_1": 64, "3_2": 64, "3_3": 64, "3_4": 64,
            "4_1": 128, "4_2": 128, "4_3": 128, "4_4": 128, "5_1": 128,
        }
        for level in (2, 3, 4, 5)
    },
}  # fmt: skip
"""Per level, output channels of each conv in the 16x-pruned files (read off the real files: level 1
keeps 24 channels at conv11, the deeper levels 16)."""

WCT16X_UNPOOL = "nearest"
"""How the 16x decoders undo pooling: ``"nearest"`` (default) or ``"max"``.

PhotoWCT max-unpools with the content encoder's indices. The 16x decoders were trained with nearest 2x
upsampling (``UpsamplingNearest2d`` in Collaborative Distillation's decoders), and they do not tolerate
the sparse maps max-unpooling makes. Encode -> decode reconstruction PSNR (dB) on three
``wct2_examples`` photos at 256 px wide, levels 1..5:

=================  ====  ====  ====  ====  ====
unpooling           L1    L2    L3    L4    L5
=================  ====  ====  ====  ====  ====
nearest (trained)  43.5  27.9  21.6  19.3  17.7
max-unpool          43.5  10.3   8.5   5.3   4.7
max-unpool x 4      43.5   8.6   7.8   8.0   8.0
=================  ====  ====  ====  ====  ====

So ``wct16x`` upsamples with nearest to the content encoder's stored pre-pool size (odd sizes still
round-trip) and keeps the rest of PhotoWCT: levels 4 -> 1, each level re-encoding the previous output,
label-aware WCT; pixel alignment with the content comes back in the smoothing step.
``unpool="max"`` stays available for comparison."""


def _canonical_levels(seq: tuple[str, ...], level: int) -> list[str]:
    end = seq.index(f"{level}_1")
    return list(seq[: end + 1])


@dataclass(frozen=True)
class PoolRecord:
    """What a max-pool remembers for its unpooling: argmax indices and the pre-pool spatial size."""

    indices: torch.Tensor
    size: torch.Size


class VGGEncoder(nn.Module):
    """VGG-19 prefix up to ``relu{level}_1`` with a leading 1x1 ``conv0``.

    ``forward(x)`` returns ``(features, pools)``; ``pools`` lists a :class:`PoolRecord` per pooling,
    outermost first. ``forward_multiple(x)`` returns ``{level: relu{level}_1}`` for every level <= this one.
    """

    def __init__(self, level: int, widths: Mapping[str, int], key: callable) -> None:
        super().__init__()
        self.level = level
        self.sequence = _canonical_levels(_VGG_SEQUENCE, level)
        self.conv0 = nn.Conv2d(3, 3, 1)
        self._names: dict[str, str] = {}
        cin = 3
        for item in self.sequence:
            if item == "pool":
                continue
            name = key(item)
            self._names[item] = name
            self.add_module(name, nn.Conv2d(cin, widths[item], 3))
            cin = widths[item]
        self.out_channels = cin

    def _pointwise(self, x: torch.Tensor) -> torch.Tensor:
        """``conv0`` (1x1) through the same kernel at any thread count.

        Single-threaded CPU torch sends 1x1 convolutions to another kernel than multi-threaded torch
        (oneDNN), which rounds differently; the multi-level WCT then turns that float32 rounding into
        visibly different outputs (the reference's noise eigen-directions and max-pool near-ties). A
        dilation has no effect on a 1x1 kernel but keeps torch on oneDNN, so one and many threads give
        bit-identical features (those of the reference's multi-threaded run).
        """
        return F.conv2d(x, self.conv0.weight, self.conv0.bias, dilation=2)

    def _run(self, x: torch.Tensor, *, keep_pools: bool, taps: dict[int, torch.Tensor] | None):
        x = self._pointwise(x)
        pools: list[PoolRecord] = []
        for item in self.sequence:
            if item == "pool":
                size = x.shape[-2:]
                if keep_pools:
                    x, idx = F.max_pool2d(x, 2, 2, return_indices=True)
                    pools.append(PoolRecord(idx, size))
                else:
                    x = F.max_pool2d(x, 2, 2)
                continue
            x = F.relu(getattr(self, self._names[item])(F.pad(x, (1, 1, 1, 1), mode="reflect")))
            if taps is not None and item.endswith("_1"):
                taps[int(item[0])] = x
        return x, pools

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[PoolRecord]]:
        return self._run(x, keep_pools=True, taps=None)

    def forward_multiple(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        taps: dict[int, torch.Tensor] = {}
        self._run(x, keep_pools=False, taps=taps)
        return taps


class VGGDecoder(nn.Module):
    """Mirror of :class:`VGGEncoder` (``level``): ``forward(features, pools) -> image``.

    ``unpool``: ``"max"`` (max-unpooling with the encoder's indices and pre-pool sizes) or ``"nearest"``
    (nearest resize to the pre-pool size). ``final_relu``: ReLU after the last conv (16x decoders).
    """

    def __init__(
        self,
        level: int,
        widths: Mapping[str, int],
        key: callable,
        *,
        unpool: str = "max",
        final_relu: bool = False,
    ) -> None:
        super().__init__()
        if unpool not in ("max", "nearest"):
            raise ConfigError(f"unpool={unpool!r}: use 'max' or 'nearest'.")
        self.level = level
        self.unpool = unpool
        self.final_relu = final_relu
        enc = _canonical_levels(_VGG_SEQUENCE, level)
        ins: dict[str, int] = {}
        cin = 3
        for item in enc:
            if item != "pool":
                ins[item] = cin
                cin = widths[item]
        self.sequence = list(reversed(enc))
        self._names: dict[str, str] = {}
        for item in self.sequence:
            if item == "pool":
                continue
            name = key(item)
            self._names[item] = name
            self.add_module(name, nn.Conv2d(widths[item], ins[item], 3))

    def forward(self, x: torch.Tensor, pools: list[PoolRecord]) -> torch.Tensor:
        pending = list(pools)
        convs = [item for item in self.sequence if item != "pool"]
        last = convs[-1]
        for item in self.sequence:
            if item == "pool":
                if not pending:
                    raise ValueError(f"decoder level {self.level} needs {self.sequence.count('pool')} pool records")
                rec = pending.pop()
                if self.unpool == "max":
                    x = F.max_unpool2d(x, rec.indices, 2, 2, output_size=rec.size)
                else:
                    x = F.interpolate(x, size=tuple(rec.size), mode="nearest")
                continue
            x = getattr(self, self._names[item])(F.pad(x, (1, 1, 1, 1), mode="reflect"))
            if item != last or self.final_relu:
                x = F.relu(x)
        return x


class WCTNetwork(nn.Module):
    """Encoders ``e1..eN`` and decoders ``d1..dN`` for the multi-level WCT (levels run ``N -> 1``)."""

    levels: tuple[int, ...]
    name: str = "wct"

    def encode(self, level: int, x: torch.Tensor) -> tuple[torch.Tensor, list[PoolRecord]]:
        return getattr(self, f"e{level}")(x)

    def decode(self, level: int, feat: torch.Tensor, pools: list[PoolRecord]) -> torch.Tensor:
        return getattr(self, f"d{level}")(feat, pools)

    def style_features(self, style: torch.Tensor) -> dict[int, torch.Tensor]:
        """Style features for every level used by :meth:`transform`."""
        raise NotImplementedError

    def transform(self, content: torch.Tensor, apply_level) -> torch.Tensor:
        """Multi-level stylization: for each level (deepest first) encode, ``apply_level(level, feat)``, decode.

        ``apply_level(level, features (1,C,h,w)) -> features`` is the WCT with the style's cached statistics.
        """
        x = content
        for level in self.levels:
            feat, pools = self.encode(level, x)
            x = self.decode(level, apply_level(level, feat), pools)
        return x


def _photowct_key(item: str) -> str:
    return f"conv{item}"


class PhotoWCT(WCTNetwork):
    """FastPhotoStyle's PhotoWCT: ``e1..e4``, ``d1..d4``; ``state_dict()`` == ``photo_wct.pth``."""

    name = "photowct"

    def __init__(self, widths: Mapping[str, int] = PHOTOWCT_WIDTHS) -> None:
        super().__init__()
        self.levels = (4, 3, 2, 1)
        # registration order e1, d1, e2, d2, ... as the official module
        for level in (1, 2, 3, 4):
            self.add_module(f"e{level}", VGGEncoder(level, widths, _photowct_key))
            self.add_module(f"d{level}", VGGDecoder(level, widths, _photowct_key))

    def style_features(self, style: torch.Tensor) -> dict[int, torch.Tensor]:
        """``e4.forward_multiple``: relu4_1, relu3_1, relu2_1, relu1_1 of one ``e4`` pass."""
        return self.e4.forward_multiple(style)


def _wct16x_key(item: str) -> str:
    return "conv" + item.replace("_", "")


class WCT16x(WCTNetwork):
    """16x-pruned VGG-19 WCT (Collaborative Distillation), used PhotoWCT-style.

    ``levels``: which levels run (deepest first); default ``(4, 3, 2, 1)`` as PhotoWCT (level 5
    distorts photos). ``unpool``: see :data:`WCT16X_UNPOOL`.
    """

    name = "wct16x"

    def __init__(self, levels: tuple[int, ...] = (4, 3, 2, 1), *, unpool: str = WCT16X_UNPOOL) -> None:
        super().__init__()
        bad = [lv for lv in levels if lv not in (1, 2, 3, 4, 5)]
        if bad or not levels:
            raise ConfigError(f"wct16x levels {levels!r}: each level must be in 1..5 (e.g. (4, 3, 2, 1)).")
        self.levels = tuple(sorted(set(levels), reverse=True))
        self.unpool = unpool
        for level in sorted(self.levels):
            self.add_module(f"e{level}", VGGEncoder(level, WCT16X_WIDTHS[level], _wct16x_key))
            self.add_module(
                f"d{level}",
                VGGDecoder(level, WCT16X_WIDTHS[level], _wct16x_key, unpool=unpool, final_relu=True),
            )

    def style_features(self, style: torch.Tensor) -> dict[int, torch.Tensor]:
        """Each level's own encoder (the levels were distilled separately, so features differ per encoder)."""
        return {level: self.encode(level, style)[0] for level in self.levels}


# --------------------------------------------------------------------------------------------- builders


def _expected(module: nn.Module) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in module.state_dict().items()}


def load_photowct(checkpoint: str | Path, *, device: str | torch.device = "cpu") -> tuple[PhotoWCT, str]:
    """Build :class:`PhotoWCT` and fill it from ``photo_wct.pth`` (path or fsspec URI, ``.xz`` accepted).

    Returns ``(model in eval mode on device, sha256 of the file)``. A file that does not fit raises
    :class:`CheckpointError` naming missing/unexpected keys and shape mismatches.
    """
    loaded = read_checkpoint(checkpoint)
    with torch.device("meta"):
        skeleton = PhotoWCT()
    check_state_dict(
        _expected(skeleton),
        loaded.state_dict,
        uri=loaded.uri,
        what="PhotoWCT (FastPhotoStyle photo_wct.pth: e1..e4, d1..d4)",
        suggestion="pass FastPhotoStyle's photo_wct.pth; for the 16x-pruned files use --stylizer wct16x with their folder.",
    )
    model = PhotoWCT()
    model.load_state_dict(loaded.state_dict)
    return model.to(device).eval(), loaded.sha256


def load_wct16x(
    folder: str | Path,
    *,
    levels: tuple[int, ...] = (4, 3, 2, 1),
    unpool: str = WCT16X_UNPOOL,
    device: str | torch.device = "cpu",
) -> tuple[WCT16x, str]:
    """Build :class:`WCT16x` from a folder with ``encoder_l{L}.pth`` / ``decoder_l{L}.pth``.

    ``*_aux`` keys (training-only 1x1 projections) are ignored. Returns ``(model, digest)`` where the
    digest is :func:`tensor_digest` over the used weights (one identifier for the whole folder).
    """
    folder_s = str(folder).rstrip("/")
    model = WCT16x(levels, unpool=unpool)
    state: dict[str, torch.Tensor] = {}
    for level in model.levels:
        for part, prefix in (("encoder", "e"), ("decoder", "d")):
            uri = f"{folder_s}/{part}_l{level}.pth"
            try:
                loaded = read_checkpoint(uri, unwrap=("model",))
            except CheckpointError as exc:
                if "does not exist" in str(exc):
                    raise CheckpointError(
                        f"wct16x weights folder {folder_s!r} has no {part}_l{level}.pth: pass the folder holding "
                        "encoder_l1..5.pth and decoder_l1..5.pth (Collaborative-Distillation 16x models)."
                    ) from exc
                raise
            sd = {k: v for k, v in loaded.state_dict.items() if "_aux." not in k}
            sub = getattr(model, f"{prefix}{level}")
            check_state_dict(
                _expected(sub),
                sd,
                uri=uri,
                what=f"the 16x-pruned VGG-19 {part} of level {level}",
                suggestion=f"expected the Collaborative-Distillation 16x {part}_l{level}.pth (keys conv0, conv11, ...).",
            )
            sub.load_state_dict(sd)
            state.update({f"{prefix}{level}.{k}": v for k, v in sd.items()})
    digest = tensor_digest(dict(sorted(state.items())))
    return model.to(device).eval(), digest
