"""The manifest of a run: readers, the summary and a PyTorch Dataset (the schema and row builder: :mod:`.schema`).

A trainer reads a run's ``index.parquet`` (merged from committed shards only)::

    >>> df = read_index("s3://bucket/runs/coco-1a2b3c4d5e")          # any fsspec URI
    >>> ok = df[df.status == "ok"]                                    # label_uri + image_uri pairs
    >>> ds = AugmentedDataset("s3://bucket/runs/coco-1a2b3c4d5e")     # (image, label, meta) items

The schema names are re-exported here, so a reader needs one import.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
from torch.utils.data import Dataset

from .schema import (
    QUALITY,
    SCHEMA,
    SCHEMA_VERSION,
    STAGES,
    URI_COLUMNS,
    rows_to_table,
    schema_json,
    table_schema_version,
    upgrade_table,
)
from .storage import RunStorage

__all__ = [
    "SCHEMA_VERSION",
    "SCHEMA",
    "STAGES",
    "QUALITY",
    "rows_to_table",
    "upgrade_table",
    "table_schema_version",
    "schema_json",
    "filter_rows",
    "read_index",
    "resolve_uri",
    "run_relative_path",
    "resolve_uris",
    "URI_COLUMNS",
    "read_index_table",
    "summary",
    "format_summary",
    "AugmentedDataset",
]

# ------------------------------------------------------------------------------------------ reading


def read_index_table(run_uri: str) -> pa.Table:
    """A run's manifest as a pyarrow table: ``index.parquet`` when present, else the committed parts.

    Only parts named by a shard's ``_SUCCESS.json`` are read, so an interrupted run can be inspected.
    """
    return upgrade_table(RunStorage.from_run_uri(run_uri).read_manifest())


# the run's own files, as run-relative paths: attempt-staged (this release) and the flat layout of older runs
_LAYOUT = {
    5: re.compile(r"images/shard=[^/]+/[^/]+/[^/]+/[^/]+"),
    4: re.compile(r"(?:synth|labels)/shard=[^/]+/[^/]+/[^/]+"),
    3: re.compile(r"(?:synth|images|labels)/shard=[^/]+/[^/]+"),
}


def run_relative_path(uri: str | None, run_uri: str, run_id: str | None = None) -> str | None:
    """The run-relative path (``images/shard=00000/<attempt>/<source>/<style>.png``) of a manifest URI naming a
    file of the run read from ``run_uri``, else ``None``.

    A URI under ``run_uri`` itself, or already run-relative, is taken as it is. A URI written under another folder
    (the run folder was moved or copied, or an older release wrote cwd-relative URIs) is parsed from its end by
    the layout's fixed depth, and counts only when the folder just above the layout part is named ``run_id``
    (the run folder's name): never by searching for the run id anywhere in the string.
    """
    from .storage import normalize_uri

    if uri is None or (isinstance(uri, float) and uri != uri):
        return None
    uri = str(uri)
    root = normalize_uri(str(run_uri)).rstrip("/")
    run_id = run_id or root.rsplit("/", 1)[-1]
    norm = normalize_uri(uri) if ("://" in uri or uri.startswith(("/", "~"))) else posixpath.normpath(uri)
    if norm.startswith(root + "/"):
        rel = norm[len(root) + 1:]
        return rel if any(p.fullmatch(rel) for p in _LAYOUT.values()) else None
    parts = norm.split("/")
    for depth, pattern in _LAYOUT.items():
        if len(parts) < depth:
            continue
        rel = "/".join(parts[-depth:])
        if not pattern.fullmatch(rel) or ".." in parts[-depth:]:
            continue
        above = parts[-depth - 1] if len(parts) > depth else None
        if above is None or above == run_id:
            return rel
    return None


def resolve_uri(uri: str | None, run_uri: str, run_id: str | None = None) -> str | None:
    """Where a manifest URI points when the run is read from ``run_uri``: a file of the run
    (:func:`run_relative_path`) inside ``run_uri``, so run folders read from another directory and run folders
    moved or copied elsewhere all read; any other URI normalised (absolute, without ``..``)."""
    from .storage import normalize_uri

    if uri is None or (isinstance(uri, float) and uri != uri):
        return None
    rel = run_relative_path(uri, run_uri, run_id)
    if rel is not None:
        return f"{normalize_uri(str(run_uri)).rstrip('/')}/{rel}"
    return normalize_uri(str(uri))


def resolve_uris(df, run_uri: str):
    """``df`` with every URI column resolved against the run folder ``run_uri`` (see :func:`resolve_uri`)."""
    df = df.copy()
    for col in URI_COLUMNS:
        if col in df.columns:
            run_ids = df["run_id"] if "run_id" in df.columns else [None] * len(df)
            values = df[col].tolist()
            resolved = [resolve_uri(u, run_uri, r) for u, r in zip(values, run_ids)]
            if resolved != [None if (isinstance(v, float) and v != v) else v for v in values]:
                df[col] = resolved  # only touched when something changed (dtypes stay as pyarrow made them)
    return df


def read_index(run_uri: str):
    """A run's manifest as a pandas DataFrame (see :func:`read_index_table`), URIs resolved against
    ``run_uri`` (:func:`resolve_uris`): they work from any working directory."""
    return resolve_uris(read_index_table(run_uri).to_pandas(), run_uri)


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else float("nan")


RATE_BASIS = "ok outputs / their summed stage time"


def outputs_per_s(n_ok: int, serial_s: float) -> float:
    """THE outputs/s figure of a run, the same in ``spadepis run``, ``spadepis summary``, the demo and the UI:
    ok outputs per second of their summed stage time (``t_total_ms``), i.e. the rate of one worker doing nothing
    else. It is read from the manifest alone, so it does not change when a run is resumed or summarised later;
    the wall time of one invocation is reported beside it, never as outputs/s."""
    return n_ok / serial_s if (n_ok and serial_s > 0) else float("nan")


def summary(source, *, wall_s: float | None = None, max_errors: int = 20) -> dict[str, Any]:
    """Counts, per-stage p50/p95 (ms, ok rows), outputs per second (:func:`outputs_per_s`) and the first errors.

    ``source`` is a run URI, a DataFrame or a pyarrow table. ``wall_s`` (one invocation's wall time) is kept
    beside the figures; it does not change ``outputs_per_s``.
    """
    if isinstance(source, str):
        df = read_index(source)
    elif isinstance(source, pa.Table):
        df = source.to_pandas()
    else:
        df = source
    ok = df[df["status"] == "ok"] if len(df) else df
    err = df[df["status"] != "ok"] if len(df) else df
    stages = {}
    for stage in STAGES:
        vals = ok[stage].to_numpy(dtype=float) if (len(ok) and stage in ok) else np.array([])
        vals = vals[np.isfinite(vals)]
        stages[stage] = {"p50": _pct(vals, 50), "p95": _pct(vals, 95), "mean": float(vals.mean()) if vals.size else float("nan")}
    quality = {}
    for col in QUALITY:
        vals = ok[col].to_numpy(dtype=float) if (len(ok) and col in ok) else np.array([])
        vals = vals[np.isfinite(vals)]
        quality[col] = {"n": int(vals.size), "mean": float(vals.mean()) if vals.size else float("nan"),
                        **{f"p{q}": _pct(vals, q) for q in (10, 50, 90)},
                        "min": float(vals.min()) if vals.size else float("nan"),
                        "max": float(vals.max()) if vals.size else float("nan")}
    serial_s = float(ok["t_total_ms"].sum()) / 1000.0 if len(ok) else 0.0
    out = {
        "rows": int(len(df)),
        "ok": int(len(ok)),
        "error": int(len(err)),
        "shards": int(df["shard_id"].nunique()) if len(df) else 0,
        "sources": int(df["source_id"].nunique()) if len(df) else 0,
        "styles": int(df["style_id"].nunique()) if len(df) else 0,
        "stages": stages,
        "quality": quality,
        "wall_s": wall_s,
        "serial_s": serial_s,
        "outputs_per_s": outputs_per_s(len(ok), serial_s),
        "errors": _grouped_errors(err, max_errors),
        "error_sources": int(err["source_id"].nunique()) if len(err) else 0,
        "models": {
            col: sorted({str(v) for v in df[col].dropna().unique()}) if len(df) else []
            for col in ("synth_model", "stylizer", "smoothing", "wct_numerics", "device")
            if col in df
        },
    }
    return out


def _grouped_errors(err, limit: int) -> list[dict[str, Any]]:
    """Error rows once per (shard, source, message): a source that failed fails every style the same way, so
    its styles are listed together instead of repeating the message once per style."""
    groups: dict[tuple, dict[str, Any]] = {}
    for r in err.itertuples():
        key = (r.shard_id, r.source_id, r.error)
        g = groups.get(key)
        if g is None:
            if len(groups) >= limit:
                continue
            groups[key] = {"shard_id": r.shard_id, "source_id": r.source_id, "style_id": r.style_id,
                           "styles": [r.style_id], "error": r.error}
        else:
            g["styles"].append(r.style_id)
    return list(groups.values())


def _styles_text(e: dict[str, Any]) -> str:
    styles = e.get("styles") or [e["style_id"]]
    return styles[0] if len(styles) == 1 else f"{len(styles)} styles ({', '.join(styles[:4])}{', ...' if len(styles) > 4 else ''})"


def format_summary(s: dict[str, Any]) -> str:
    """A plain-text table of :func:`summary`'s result."""
    lines = [
        f"rows {s['rows']}  ok {s['ok']}  error {s['error']}  shards {s['shards']}  "
        f"sources {s['sources']}  styles {s['styles']}",
    ]
    lines.append(f"outputs/s {s['outputs_per_s']:.3f} ({RATE_BASIS})")
    lines.append(f"{'stage':<14}{'p50 ms':>10}{'p95 ms':>10}{'mean ms':>10}")
    for stage, v in s["stages"].items():
        lines.append(f"{stage:<14}{v['p50']:>10.1f}{v['p95']:>10.1f}{v['mean']:>10.1f}")
    quality = s.get("quality") or {}
    if any(v["n"] for v in quality.values()):
        lines.append(f"{'score':<14}{'n':>7}{'mean':>8}{'min':>8}{'p10':>8}{'p50':>8}{'p90':>8}{'max':>8}")
        for col, v in quality.items():
            if v["n"]:
                lines.append(f"{col:<14}{v['n']:>7}" + "".join(f"{v[k]:>8.3f}" for k in ("mean", "min", "p10", "p50", "p90", "max")))
            else:
                lines.append(f"{col:<14}{0:>7}   (null: {'needs styles.labels' if col in ('style_score', 'q_coverage') else 'older run'})")
    models = s.get("models") or {}
    if models:
        lines.append("models: " + "; ".join(f"{k}={','.join(v)}" for k, v in models.items() if v))
    if s["errors"]:
        lines.append(f"errors: {s['error']} row(s) from {s.get('error_sources', '?')} source(s); once per source:")
        for e in s["errors"]:
            lines.append(f"  {e['shard_id']} {e['source_id']} x {_styles_text(e)}: {e['error']}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ dataset


class AugmentedDataset(Dataset):
    """PyTorch ``Dataset`` over a run's ok rows: ``(image, label, meta)``.

    * ``image``: ``(3, H, W)`` float32 in ``[0, 1]`` (the stylized output);
    * ``label``: ``(H, W)`` int64, the raw ids of the label map at ``label_uri`` (written at the image size by
      the pipeline; an older or hand-made row is nearest-resized to the image size, as SPADE's preprocessing does);
    * ``meta``: the manifest row as a dict (``created_at`` as ISO text).

    ``source`` is a run URI or a DataFrame of manifest rows. ``where`` keeps only some rows: a pandas
    query string on the columns (``"q_structure >= 0.6 and q_coverage >= 0.8"``; a null score fails every
    comparison, so rows without label maps drop out of a ``q_coverage`` filter) or a callable taking the
    row as a dict and returning a bool. Give ``run_uri`` with a DataFrame to resolve its URIs against the run
    folder, as :func:`read_index` does. Works from any working directory, for local and object-store runs.
    ``verify=True`` checks each image's bytes against the row's ``sha256`` before serving it (a missing or
    damaged file raises ``ValueError`` naming it and ``spadepis verify``).
    """

    def __init__(self, source, *, status: str = "ok", where: str | Callable[[dict], bool] | None = None,
                 run_uri: str | None = None, verify: bool = False):
        import pandas as pd

        df = read_index(source) if isinstance(source, str) else pd.DataFrame(source)
        if run_uri is not None and not isinstance(source, str):
            df = resolve_uris(df, run_uri)
        if status is not None:
            df = df[df["status"] == status]
        if where is not None:
            df = filter_rows(df, where)
        self.frame = df.reset_index(drop=True)
        self.verify = verify

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, i: int):
        import torch

        from ..data.images import open_image, read_rgb
        from ..data.labelmaps import resize_nearest

        row = self.frame.iloc[int(i)]
        if self.verify:
            _verify_image(row)
        image = read_rgb(row["image_uri"])
        h, w = image.shape[:2]
        label_img = open_image(row["label_uri"])
        if label_img.mode not in ("L", "P", "I", "I;16"):
            label_img = label_img.convert("L")
        label = resize_nearest(np.asarray(label_img).astype(np.int64), (h, w))
        meta = {k: (v.isoformat() if hasattr(v, "isoformat") else (None if _isna(v) else v)) for k, v in row.items()}
        return (
            torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0),
            torch.from_numpy(label),
            meta,
        )


def _verify_image(row) -> None:
    import hashlib

    from ..data.fs import open_uri

    uri, want = row["image_uri"], row.get("sha256")
    try:
        with open_uri(uri, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ValueError(f"{uri}: missing (row {row.get('sample_id')}); list every damaged file with "
                         "`spadepis verify RUN`, redo them with `spadepis run CONFIG --verify`") from None
    if want and hashlib.sha256(data).hexdigest() != want:
        raise ValueError(f"{uri}: its bytes do not match the row's sha256 (damaged or replaced; row "
                         f"{row.get('sample_id')}); list every damaged file with `spadepis verify RUN`, redo them with "
                         "`spadepis run CONFIG --verify`")


def filter_rows(df, where: str | Callable[[dict], bool]):
    """Rows of ``df`` matching ``where`` (a pandas query string or a callable on the row dict)."""
    if callable(where):
        keep = [bool(where(row)) for row in df.to_dict("records")]
        return df[np.array(keep, dtype=bool)] if len(df) else df
    if not isinstance(where, str):
        raise TypeError(f"where must be a query string or a callable on the row, got {type(where).__name__}")
    try:
        return df.query(where, engine="python")
    except Exception as exc:  # noqa: BLE001 - pandas raises many kinds; say what the columns are
        raise ValueError(
            f"where={where!r} is not a valid filter ({type(exc).__name__}: {exc}); write a pandas query on the manifest "
            f"columns, e.g. \"q_structure >= 0.6 and q_coverage >= 0.8\" (columns: {', '.join(df.columns)})"
        ) from None


def _isna(value) -> bool:
    try:
        return bool(value is None or (isinstance(value, float) and np.isnan(value)))
    except TypeError:
        return False
