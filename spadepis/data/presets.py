"""The dataset presets of the official SPADE models: label channels, label size, generator shape, and
the record of the official checkpoint each one loads.

A :class:`Preset` says how a label map of that dataset is read (size, dontcare slot, instance edges)
and which generator it feeds (``semantic_nc``, ``num_upsampling_layers``, ``ngf``). Like torchvision's
weights records, an official preset also carries what its checkpoint holds (:class:`OfficialCheckpoint`:
file, source, number of parameters and state-dict keys, sentinel key shapes) and the class name of every
label channel (:mod:`.categories`). ``PRESETS`` is the registry of presets (COCO-Stuff, ADE20K,
Cityscapes and the ``custom`` template): the config's ``dataset.preset`` type, the CLI's ``--preset``
choices and the "unknown preset" error are built from it. :func:`get_preset` returns one with fields
overridden; an override that changes the generator or the label set drops the records it invalidates.
Nothing here downloads anything: the user supplies the checkpoint file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..errors import ConfigError
from .categories import ADE20K, CITYSCAPES, COCO_STUFF

__all__ = ["Preset", "OfficialCheckpoint", "PRESETS", "UPSAMPLING_LAYERS", "PREPROCESS_MODES", "get_preset"]

UPSAMPLING_LAYERS: dict[str, int] = {"normal": 5, "more": 6, "most": 7}
"""``num_upsampling_layers`` -> number of 2x doublings from the generator's latent grid to its output."""
PREPROCESS_MODES = ("resize_and_crop", "fixed")
"""How the official loader sizes a label map (see :attr:`Preset.label_size`)."""


@dataclass(frozen=True)
class OfficialCheckpoint:
    """What the official ``latest_net_G.pth`` of a preset holds (ngf=64), checked by the test suite against
    the generator built on the meta device and against the official key listing.

    Attributes
    ----------
    folder, file:
        where the file sits in the official ``checkpoints.tar.gz`` (``coco_pretrained/latest_net_G.pth``).
    source:
        where the user gets it (nothing downloads it).
    num_params:
        number of parameters (``sum(p.numel() for p in generator.parameters())``, without the
        spectral-norm ``weight_u``/``weight_v`` and batch-norm statistics buffers).
    num_keys:
        number of state-dict entries (parameters and buffers).
    key_shapes:
        sentinel keys and their shapes: ``fc.weight`` gives ``16 * ngf`` and ``semantic_nc``.
    """

    folder: str
    num_params: int
    key_shapes: tuple[tuple[str, tuple[int, ...]], ...]
    num_keys: int = 234
    file: str = "latest_net_G.pth"
    source: str = "NVlabs/SPADE README, pretrained models: checkpoints.tar.gz (Google Drive)"

    @property
    def path(self) -> str:
        return f"{self.folder}/{self.file}"

    def shape(self, key: str) -> tuple[int, ...] | None:
        return dict(self.key_shapes).get(key)


_GENERATOR_FIELDS = ("label_nc", "contain_dontcare_label", "no_instance", "num_upsampling_layers", "ngf")
"""Fields that change the generator's keys or shapes: overriding one drops the checkpoint record."""
_LABEL_FIELDS = ("label_nc", "contain_dontcare_label")
"""Fields that change the label set: overriding one drops the class names."""


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
    categories:
        class name of every one-hot label channel (``num_label_channels`` names; empty for ``custom``).
    checkpoint:
        the official checkpoint's record (:class:`OfficialCheckpoint`), ``None`` for ``custom`` or when an
        override changed the generator.
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
    categories: tuple[str, ...] = field(default=(), repr=False, compare=False)
    checkpoint: OfficialCheckpoint | None = field(default=None, repr=False, compare=False)

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
        if self.categories and len(self.categories) != self.num_label_channels:
            raise ConfigError(
                f"preset {self.name!r}: {len(self.categories)} class names for {self.num_label_channels} label channels."
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


def _official(folder: str, semantic_nc: int, num_params: int) -> OfficialCheckpoint:
    return OfficialCheckpoint(
        folder,
        num_params=num_params,
        key_shapes=(("fc.weight", (1024, semantic_nc, 3, 3)), ("up_3.conv_0.weight_orig", (64, 128, 3, 3)),
                    ("conv_img.weight", (3, 64, 3, 3))),
    )


PRESETS: dict[str, Preset] = {
    "coco": Preset(
        "coco", label_nc=182, contain_dontcare_label=True, no_instance=False,
        categories=COCO_STUFF, checkpoint=_official("coco_pretrained", 184, 97_480_899),
    ),
    "ade20k": Preset(
        "ade20k", label_nc=150, contain_dontcare_label=True, no_instance=True,
        categories=ADE20K, checkpoint=_official("ade20k_pretrained", 151, 96_492_483),
    ),
    "cityscapes": Preset(
        "cityscapes",
        label_nc=35,
        contain_dontcare_label=False,
        no_instance=False,
        crop_size=512,
        aspect_ratio=2.0,
        num_upsampling_layers="more",
        preprocess_mode="fixed",
        categories=CITYSCAPES,
        checkpoint=_official("cityscapes_pretrained", 36, 93_048_003),
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
    fields = {f.name for f in dataclasses.fields(Preset)} - {"name", "categories", "checkpoint"}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise ConfigError(f"unknown preset field(s) {', '.join(bad)} for preset {base.name!r}: valid fields are {', '.join(sorted(fields))}.")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if not overrides:
        return base
    changed = {k for k, v in overrides.items() if getattr(base, k) != v}
    if changed & set(_GENERATOR_FIELDS):
        overrides["checkpoint"] = None  # another generator than the official file
    if changed & set(_LABEL_FIELDS):
        overrides["categories"] = ()  # another label set
    return dataclasses.replace(base, **overrides)
