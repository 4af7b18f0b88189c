"""spadepis: segmentation training data from semantic label maps.

SPADE synthesis (Park et al., CVPR 2019) followed by photorealistic stylization
(PhotoWCT + closed-form smoothing, Li et al., ECCV 2018). Layers, each importing only those
before it: ``errors``/``devices`` < ``data`` < ``models`` < ``pipeline`` < ``tasks`` < ``flows`` < ``cli``.
Only the Prefect layer (``spadepis.tasks``, ``spadepis.flows``) and the CLI import Prefect.

The public API for training consumers is this package's top level (stable; the module paths under it may move)::

    from spadepis import AugmentedDataset, read_index

``import spadepis`` stays light: the reader (pandas, pyarrow, torch) is imported on first use of one of these
names. ``spadepis.manifest`` is the same API as a module (``from spadepis.manifest import AugmentedDataset``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

# public name -> the module that defines it (imported on first access)
_PUBLIC = {
    "AugmentedDataset": "spadepis.pipeline.manifest",
    "read_index": "spadepis.pipeline.manifest",
    "filter_rows": "spadepis.pipeline.manifest",
    "summary": "spadepis.pipeline.manifest",
    "format_summary": "spadepis.pipeline.manifest",
}

__all__ = ["__version__", *_PUBLIC]

if TYPE_CHECKING:  # pragma: no cover
    from .pipeline.manifest import AugmentedDataset, filter_rows, format_summary, read_index, summary


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'spadepis' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
