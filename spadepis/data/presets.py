"""The dataset presets of the official SPADE models: label channels, label size and generator shape.

A :class:`Preset` says how a label map of that dataset is read (size, dontcare slot, instance edges)
and which generator it feeds (``semantic_nc``, ``num_upsampling_layers``, ``ngf``). ``PRESETS`` holds
the official ones (COCO-Stuff, ADE20K, Cityscapes) and the ``custom`` template; :func:`get_preset`
returns one with fields overridden.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["Preset", "PRESETS", "UPSAMPLING_LAYERS", "PREPROCESS_MODES", "get_preset"]

UPSAMPLING_LAYERS: dict[str, int] = {"normal": 5, "more": 6, "most": 7}
"""``num_upsampling_layers`` -> number of 2x doublings from the generator's latent grid to its output."""
PREPROCESS_MODES = ("resize_and_crop", "fixed")
"""How the official loader sizes a label map (see :attr:`Preset.label_size`)."""


@dataclass(frozen=True)
class Preset:
    """Options of one SPADE model family (the official dataset presets, test mode).

    Attributes
    ----------
    label_nc:
        number of label ids in the dataset (0..label_nc-1), not counting dontcare.
    contain_dontcare_label:
        the map value 255 means "unknown" and gets its own channel (index ``label_nc``).
    no_instance:
        True when the model takes no instance-edge channel.
    crop_size, aspect_ratio, preprocess_mode:
        label size: ``resize_and_crop`` gives ``crop x crop``; ``fixed`` gives
        ``round(crop / aspect) x crop`` (H x W).
    num_upsampling_layers:
        ``normal`` | ``more`` | ``most`` (5/6/7 doublings from the latent grid).
    ngf:
        generator width (64 for the official models); ``None`` means "infer from the checkpoint".
    """

    name: str
    label_nc: int
    contain_dontcare_label: bool
    no_instance: bool
    crop_size: int = 256
    aspect_ratio: float = 1.0
    num_upsampling_layers: str = "normal"
    preprocess_mode: str = "resize_and_crop"
    ngf: int | None = 64

    def __post_init__(self) -> None:
        if self.label_nc < 1:
            raise ConfigError(f"preset {self.name!r}: label_nc={self.label_nc} must be >= 1 (the number of label ids).")
        if self.num_upsampling_layers not in UPSAMPLING_LAYERS:
            raise ConfigError(
                f"preset {self.name!r}: num_upsampling_layers={self.num_upsampling_layers!r} must be one of "
                f"{', '.join(UPSAMPLING_LAYERS)}."
            )
        if self.preprocess_mode not in PREPROCESS_MODES:
            raise ConfigError(
                f"preset {self.name!r}: preprocess_mode={self.preprocess_mode!r} must be one of {', '.join(PREPROCESS_MODES)}."
            )
        if self.aspect_ratio <= 0:
            raise ConfigError(f"preset {self.name!r}: aspect_ratio={self.aspect_ratio} must be > 0.")
        if self.ngf is not None and self.ngf < 2:
            raise ConfigError(f"preset {self.name!r}: ngf={self.ngf} must be >= 2 (64 for the official models).")
        n = 2 ** UPSAMPLING_LAYERS[self.num_upsampling_layers]
        if self.crop_size < n or self.crop_size % n:
            raise ConfigError(
                f"preset {self.name!r}: crop_size={self.crop_size} must be a multiple of {n} with "
                f"num_upsampling_layers={self.num_upsampling_layers!r} (e.g. {max(n, self.crop_size // n * n)})."
            )
        if self.output_size != self.label_size:
            raise ConfigError(
                f"preset {self.name!r}: the generator output {self.output_size} (H, W) differs from the label size "
                f"{self.label_size}; choose crop_size/aspect_ratio so that crop_size / aspect_ratio is a multiple of "
                f"{n} (e.g. aspect_ratio 1.0 or 2.0 with crop_size 256/512)."
            )

    @property
    def num_label_channels(self) -> int:
        """One-hot channels for labels: ``label_nc`` (+1 for dontcare)."""
        return self.label_nc + (1 if self.contain_dontcare_label else 0)

    @property
    def semantic_nc(self) -> int:
        """Generator input channels: label channels (+1 for instance edges)."""
        return self.num_label_channels + (0 if self.no_instance else 1)

    @property
    def label_size(self) -> tuple[int, int]:
        """(H, W) of the label map after the official test-time resize."""
        if self.preprocess_mode == "fixed":
            return (round(self.crop_size / self.aspect_ratio), self.crop_size)
        return (self.crop_size, self.crop_size)

    @property
    def latent_size(self) -> tuple[int, int]:
        """(sh, sw) of the generator's first feature map."""
        sw = self.crop_size // 2 ** UPSAMPLING_LAYERS[self.num_upsampling_layers]
        return (round(sw / self.aspect_ratio), sw)

    @property
    def output_size(self) -> tuple[int, int]:
        """(H, W) of the generated image."""
        sh, sw = self.latent_size
        n = 2 ** UPSAMPLING_LAYERS[self.num_upsampling_layers]
        return (sh * n, sw * n)

    def describe(self) -> str:
        return (
            f"{self.name} (label_nc={self.label_nc}, dontcare={self.contain_dontcare_label}, "
            f"instance={not self.no_instance}, semantic_nc={self.semantic_nc}, size={self.label_size[1]}x{self.label_size[0]}, "
            f"upsampling={self.num_upsampling_layers}, ngf={self.ngf})"
        )


PRESETS: dict[str, Preset] = {
    "coco": Preset("coco", label_nc=182, contain_dontcare_label=True, no_instance=False),
    "ade20k": Preset("ade20k", label_nc=150, contain_dontcare_label=True, no_instance=True),
    "cityscapes": Preset(
        "cityscapes",
        label_nc=35,
        contain_dontcare_label=False,
        no_instance=False,
        crop_size=512,
        aspect_ratio=2.0,
        num_upsampling_layers="more",
        preprocess_mode="fixed",
    ),
    # The official 'custom' dataset mode: 13 labels, no dontcare. We default to no instance maps
    # (most custom label sets have none); override any field with get_preset("custom", ...).
    "custom": Preset("custom", label_nc=13, contain_dontcare_label=False, no_instance=True),
}


def get_preset(name: str | Preset, **overrides) -> Preset:
    """A preset by name, with fields overridden (``None`` values are ignored).

    >>> get_preset("custom", label_nc=20, no_instance=True).semantic_nc
    20
    """
    if isinstance(name, Preset):
        base = name
    else:
        try:
            base = PRESETS[str(name)]
        except KeyError:
            raise ConfigError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)}.") from None
    fields = {f.name for f in dataclasses.fields(Preset)} - {"name"}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise ConfigError(f"unknown preset field(s) {', '.join(bad)} for preset {base.name!r}: valid fields are {', '.join(sorted(fields))}.")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(base, **overrides) if overrides else base
