"""The manifest's schema: one Parquet row per output image, its explicit pyarrow schema, and the row builder.

:data:`SCHEMA` names every column with its type, nullability and description; :class:`RowBuilder` makes the
rows of one shard attempt from it (the columns a shard shares once, the rest per output, every other column
at its default), and :func:`rows_to_table` turns rows into a table the storage commits. Columns are only
ever added; ``schema_version`` is stored in every row and in the file's key-value metadata
(``spadepis.schema_version``). Readers are in :mod:`.manifest`.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from .._version import __version__

__all__ = [
    "SCHEMA_VERSION",
    "SCHEMA",
    "STAGES",
    "QUALITY",
    "URI_COLUMNS",
    "RowBuilder",
    "rows_to_table",
    "upgrade_table",
    "table_schema_version",
    "schema_json",
]

SCHEMA_VERSION = 4
"""1: the original columns. 2: ``style_score``, ``style_rank``, ``q_structure``, ``q_style``, ``q_coverage``,
``q_clipped``, ``t_quality_ms``. 3: ``wct_numerics``. 4: ``label_remap``, ``style_labels``. (Added columns are null in rows of older runs, which
:func:`upgrade_table` fills in.)"""
STAGES = ("t_load_ms", "t_synth_ms", "t_stylize_ms", "t_smooth_ms", "t_quality_ms", "t_write_ms", "t_total_ms")
QUALITY = ("style_score", "q_structure", "q_style", "q_coverage", "q_clipped")
"""Per-row scores (see :mod:`spadepis.pipeline.quality` and :mod:`spadepis.pipeline.styles`)."""

_FIELDS: list[tuple[str, pa.DataType, bool, str]] = [
    # identity
    ("sample_id", pa.string(), False, "sha256(source_id, style_id, seed, config hash)[:20]"),
    ("run_id", pa.string(), False, "run folder name"),
    ("shard_id", pa.string(), False, "shard name, e.g. shard=00042"),
    ("attempt_id", pa.string(), False, "attempt that wrote the committed part"),
    # source
    ("dataset", pa.string(), False, "dataset name (config dataset.name or the preset)"),
    ("preset", pa.string(), False, "SPADE preset (coco, ade20k, cityscapes, custom)"),
    ("source_id", pa.string(), False, "label map id (file stem)"),
    ("label_uri", pa.string(), False, "label map pixel-aligned with image_uri: the source label map, or, when its size "
     "differs from the output's (SPADE preset size, or a stylize-only photo downscaled to dataset.max_side), its "
     "NEAREST-resized copy labels/shard=NNNNN/<source_id>.png (models.compat: fastphotostyle with exact smoothing: also "
     "cropped by 2 px on every side, like the outputs)"),
    ("instance_uri", pa.string(), True, "source instance map, if any"),
    ("label_nc", pa.int32(), False, "number of label classes of the preset"),
    # style
    ("style_id", pa.string(), False, "style photo id (file stem)"),
    ("style_uri", pa.string(), False, "style photo"),
    ("style_score", pa.float64(), True, "coverage score of the style for this label map, in [0, 1], higher is better; "
     "null without label maps for both (styles.labels)"),
    ("style_rank", pa.int32(), True, "rank of the style among the pool for this source by style_score (0 = best); "
     "null when not scored"),
    # outputs
    ("synth_uri", pa.string(), True, "SPADE output (stylize-only runs: the source photo)"),
    ("image_uri", pa.string(), True, "stylized output; null when status is error"),
    ("width", pa.int32(), True, "output width (px)"),
    ("height", pa.int32(), True, "output height (px)"),
    ("sha256", pa.string(), True, "sha256 of the output PNG's bytes"),
    # models
    ("synth_model", pa.string(), False, "e.g. spade-coco, spade-ade20k random-init, none (stylize-only)"),
    ("synth_weights_sha256", pa.string(), True, "sha256 of the SPADE weights"),
    ("stylizer", pa.string(), False, "photowct, wct16x or color"),
    ("stylizer_weights_sha256", pa.string(), True, "sha256 of the stylizer weights (null for color)"),
    ("smoothing", pa.string(), False, "exact, fast or none"),
    # timings (ms); shared costs are split evenly over the rows that share them
    ("t_load_ms", pa.float64(), False, "reading + validating the label/instance map (or photo)"),
    ("t_synth_ms", pa.float64(), False, "SPADE forward pass (batch time / batch size)"),
    ("t_stylize_ms", pa.float64(), False, "feature transform incl. style preparation when first used"),
    ("t_smooth_ms", pa.float64(), False, "smoothing incl. the per-content factorisation"),
    ("t_write_ms", pa.float64(), False, "PNG encoding + writing"),
    ("t_quality_ms", pa.float64(), True, "computing the q_* scores (null in runs before schema 2)"),
    ("t_total_ms", pa.float64(), False, "sum of the stages"),
    # quality (schema 2): computed from the arrays in memory, no extra weights
    ("q_structure", pa.float64(), True, "content structure kept: gradient-magnitude SSIM of content vs output, "
     "weighted to where either has edges; [-1, 1] (in practice [0, 1]), higher is better, 1 = identical edges"),
    ("q_style", pa.float64(), True, "closeness of the output's per-class CIELAB mean/std to the style's matching "
     "regions (global without label maps), exp(-distance/20); (0, 1], higher is better"),
    ("q_coverage", pa.float64(), True, "fraction of the content's (non-ignored) pixels whose class has a usable "
     "style region; [0, 1], higher is better; null without label maps for both"),
    ("q_clipped", pa.float64(), True, "fraction of output pixels with a channel at 0 or 255; [0, 1], lower is better"),
    # status
    ("status", pa.string(), False, "ok or error"),
    ("error", pa.string(), True, "what went wrong; null when ok"),
    # provenance
    ("created_at", pa.timestamp("us", tz="UTC"), False, "when the row was made"),
    ("device", pa.string(), False, "device the models ran on"),
    ("spadepis_version", pa.string(), False, "library version"),
    ("schema_version", pa.int32(), False, "manifest schema version"),
    # schema 3 (null in rows written before it)
    ("wct_numerics", pa.string(), True, "WCT numerics of the stylization: reference (FastPhotoStyle's float32 covariance + "
     "SVD), float64-fallback (some region fell back to float64 where the reference fails: one pixel, constant, no SVD "
     "convergence) or float64 (models.wct_precision: float64); null when status is error or in older manifests"),
    # schema 4
    ("label_remap", pa.string(), True, "dataset.label_remap the label map went through before SPADE: the shipped "
     "table's name (camvid->cityscapes), <file name>@<12 hex> or inline:<12 hex> (sha256 of the mapping); label_uri "
     "keeps the dataset's own ids. Null: the map was used as it is"),
    ("style_labels", pa.string(), True, "the style's label map: given (styles.labels), predicted (styles.labels: "
     "predict, by styles.segmenter) or none; null in older manifests"),
]

SCHEMA = pa.schema(
    [pa.field(name, typ, nullable=nullable, metadata={"description": desc}) for name, typ, nullable, desc in _FIELDS],
    metadata={"spadepis.schema_version": str(SCHEMA_VERSION)},
)


_ADDED_V2 = ("style_score", "style_rank", "t_quality_ms", "q_structure", "q_style", "q_coverage", "q_clipped",
             "wct_numerics", "label_remap", "style_labels")  # + schemas 3 and 4


def rows_to_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Rows (dicts with every column) -> a table with :data:`SCHEMA`; missing or extra keys are refused.

    The nullable columns added in schemas 2 to 4 may be left out (null).
    """
    names = SCHEMA.names
    rows = [row if all(n in row for n in _ADDED_V2) else {**dict.fromkeys(_ADDED_V2), **row} for row in rows]
    for i, row in enumerate(rows):
        missing = [n for n in names if n not in row]
        extra = [k for k in row if k not in SCHEMA.names]
        if missing or extra:
            raise ValueError(f"manifest row {i}: missing columns {missing}, unknown columns {extra}")
    columns = {n: [row.get(n) for row in rows] for n in names}
    return pa.Table.from_pydict(columns, schema=SCHEMA)


def upgrade_table(table: pa.Table) -> pa.Table:
    """A manifest table of any schema version as the current :data:`SCHEMA` (columns added since are null).

    Older runs stay readable: their rows keep their ``schema_version`` column; the file-level metadata
    is the current one, plus ``spadepis.upgraded_from`` when the table was older.
    """
    if table.schema.remove_metadata() == SCHEMA.remove_metadata():
        return table
    old = table_schema_version(table)
    cols = []
    for f in SCHEMA:
        if f.name in table.column_names:
            cols.append(table.column(f.name).cast(f.type))
        elif f.nullable:
            cols.append(pa.nulls(table.num_rows, f.type))
        else:
            raise ValueError(f"manifest table lacks the required column {f.name!r}; it is not a spadepis manifest")
    meta = dict(table.schema.metadata or {})
    meta.update(SCHEMA.metadata)
    if old is not None and old != SCHEMA_VERSION:
        meta[b"spadepis.upgraded_from"] = str(old).encode()
    return pa.Table.from_arrays(cols, schema=SCHEMA.with_metadata(meta))


def table_schema_version(table_or_schema: pa.Table | pa.Schema) -> int | None:
    schema = table_or_schema.schema if isinstance(table_or_schema, pa.Table) else table_or_schema
    raw = (schema.metadata or {}).get(b"spadepis.schema_version")
    return int(raw) if raw is not None else None


URI_COLUMNS = ("label_uri", "instance_uri", "style_uri", "synth_uri", "image_uri")
"""The columns that hold URIs (absolute, without ``..``, as the worker writes them)."""

_DEFAULTS: dict[str, Any] = {
    **{name: None for name, _, nullable, _ in _FIELDS if nullable},
    **dict.fromkeys(STAGES, 0.0),
    "status": "ok",
    "spadepis_version": __version__,
    "schema_version": SCHEMA_VERSION,
}
"""Every column's value unless a row says otherwise: null where nullable, 0 ms for the stage timings."""


class RowBuilder:
    """The rows of one shard attempt.

    ``RowBuilder(run_id=..., shard_id=..., ...)`` takes the columns every row of the attempt shares;
    :meth:`row` adds one output's columns, fills every other column with its default (null, 0 ms,
    ``status="ok"``, the library and schema versions, ``created_at`` now) and sums ``t_total_ms`` over the
    stages. A name that is not a column is a ``ValueError`` (a bug, not bad input).
    """

    def __init__(self, **shared: Any) -> None:
        self._check(shared)
        self.shared = shared

    @staticmethod
    def _check(values: dict[str, Any]) -> None:
        unknown = sorted(set(values) - set(SCHEMA.names))
        if unknown:
            raise ValueError(f"not manifest columns: {', '.join(unknown)} (see spadepis.pipeline.schema.SCHEMA)")

    def row(self, **values: Any) -> dict[str, Any]:
        self._check(values)
        row = {**_DEFAULTS, **self.shared, "created_at": _dt.datetime.now(_dt.timezone.utc), **values}
        row["t_total_ms"] = sum(row[k] for k in STAGES if k != "t_total_ms")
        return row


def schema_json() -> str:
    """The schema as JSON (name, type, nullable, description), for run.json and docs."""
    return json.dumps(
        [{"name": n, "type": str(t), "nullable": nl, "description": d} for n, t, nl, d in _FIELDS], indent=1
    )
