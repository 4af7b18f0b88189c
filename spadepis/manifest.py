"""The manifest reader under its short, stable path (the public API; defined in :mod:`spadepis.pipeline.manifest`).

::

    from spadepis.manifest import AugmentedDataset, read_index   # = from spadepis import AugmentedDataset, read_index
"""

from __future__ import annotations

from .pipeline.manifest import (
    QUALITY,
    SCHEMA,
    SCHEMA_VERSION,
    STAGES,
    URI_COLUMNS,
    AugmentedDataset,
    filter_rows,
    format_summary,
    read_index,
    read_index_table,
    resolve_uri,
    resolve_uris,
    summary,
)

__all__ = [
    "AugmentedDataset",
    "read_index",
    "read_index_table",
    "filter_rows",
    "resolve_uri",
    "resolve_uris",
    "summary",
    "format_summary",
    "SCHEMA",
    "SCHEMA_VERSION",
    "STAGES",
    "QUALITY",
    "URI_COLUMNS",
]
