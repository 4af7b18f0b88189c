"""The registries of what a run or a command can choose: stylizers, smoothing modes and compat modes
(the SPADE presets are :data:`spadepis.data.presets.PRESETS`).

A name is added in one place: the run config's ``Literal`` types, the CLI's ``choices`` and help, and
the "unknown name" errors are all built from these entries. This module imports nothing heavy, so the
config and the CLI can read it without loading torch models.

>>> STYLIZERS.names
('photowct', 'wct16x', 'color')
>>> STYLIZERS.check("colour")
Traceback (most recent call last):
...
spadepis.errors.ConfigError: unknown stylizer 'colour': choose one of photowct, wct16x, color.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError

__all__ = ["Entry", "Registry", "STYLIZERS", "SMOOTHERS", "COMPAT_MODES", "WCT_PRECISIONS"]


@dataclass(frozen=True)
class Entry:
    """One choice: its name, a one-line summary, and what weights it needs (``None``: it takes none)."""

    name: str
    summary: str
    weights: str | None = None
    identity: bool = False
    """The choice that leaves its input as it is (``smoothing: none``)."""


class Registry:
    """Named :class:`Entry` records of one kind, in the order the CLI and the docs list them."""

    def __init__(self, kind: str, *entries: Entry) -> None:
        self.kind = kind
        self._entries = {e.name: e for e in entries}

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __getitem__(self, name: str) -> Entry:
        return self._entries[name]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def literal(self):
        """``Literal[name, ...]`` for a pydantic field."""
        return Literal[self.names]  # type: ignore[valid-type]

    def check(self, name: str) -> Entry:
        """The entry called ``name``, or :class:`ConfigError` listing the valid names."""
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r}: choose one of {', '.join(self._entries)}.")
        return self._entries[name]

    def help(self, names: tuple[str, ...] | None = None, *, weights: bool = False) -> str:
        """``name: summary; ...`` for argparse help and field descriptions (``weights``: say what each loads)."""
        parts = []
        for e in self._entries.values():
            if names is not None and e.name not in names:
                continue
            extra = f" ({e.weights})" if weights and e.weights else (" (no weights)" if weights else "")
            parts.append(f"{e.name}: {e.summary}{extra}")
        return "; ".join(parts)


STYLIZERS = Registry(
    "stylizer",
    Entry("photowct", "FastPhotoStyle's PhotoWCT", weights="FastPhotoStyle's photo_wct.pth"),
    Entry("wct16x", "the 16x-pruned VGG-19 WCT", weights="the folder with encoder_l1..5.pth / decoder_l1..5.pth"),
    Entry("color", "whitening and colouring of the RGB pixels themselves"),
)

SMOOTHERS = Registry(
    "smoothing mode",
    Entry("exact", "closed-form photorealistic smoothing"),
    Entry("fast", "guided-filter approximation (radius 35, eps 1e-3)"),
    Entry("none", "no smoothing", identity=True),
)

COMPAT_MODES = Registry(
    "compat mode",
    Entry("fastphotostyle", "full FastPhotoStyle mode: its WCT numerics (float32 SVD, the default anyway) and the "
          "crop/resize/pad of exact smoothing (output 4 px smaller)"),
)

WCT_PRECISIONS = Registry(
    "WCT precision",
    Entry("reference", "FastPhotoStyle's float32 covariance + SVD and 1e-5 rank cut; float64 only in regions where "
          "it fails (one pixel, constant, no SVD convergence) (default)"),
    Entry("float64", "float64 eigendecompositions everywhere; drops the float32-noise directions FastPhotoStyle keeps, "
          "so photowct outputs differ visibly from the original's"),
)
