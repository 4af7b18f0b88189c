"""Deterministic planning: which sources, which styles, which shards, which sample ids.

The same config gives the same plan on any machine: sources are sorted by id, shards have a fixed
size, the styles of a sample are chosen by :mod:`spadepis.pipeline.styles` (``styles.select``: all,
random by a hash of (seed, source id), or semantic by the style index), and every ``sample_id`` is a
hash of (source id, style id, seed, config hash).

Runs over a living dataset (a nightly rerun while label maps are added or removed): the committed
manifest parts are the record of what is done. :func:`committed_sources` reads the source ids they hold,
and :meth:`Plan.remaining` keeps only the listed sources that no committed shard holds, cut into shards
(``shard_size`` each, sorted ids) that take the lowest shard numbers no committed shard uses. So a rerun
processes exactly the sources not yet committed, never one twice, whatever was added or removed, and a
resume of an unchanged dataset gets back the very shards it planned first. Sources that were committed
and are no longer listed are "gone": their rows stay in the index (:class:`DatasetChange` names them).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from .config import RunConfig

__all__ = [
    "IMAGE_EXTS",
    "SourceItem",
    "StyleItem",
    "ShardSpec",
    "Plan",
    "DatasetChange",
    "committed_sources",
    "write_plan_record",
    "read_plan_record",
    "PLAN_RECORD",
    "shard_name",
    "sample_id",
    "list_inputs",
    "make_plan",
    "safe_id",
    "renamed_inputs",
    "storage_name_problems",
    "MAX_ID_BYTES",
]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_LIST_EXTS = (".txt", ".lst", ".list")


def shard_name(index: int) -> str:
    """The one place shard names are built: ``shard_name(42) == "shard=00042"`` (a hive partition)."""
    if index < 0:
        raise ValueError(f"shard index must be >= 0, got {index}")
    return f"shard={index:05d}"


def sample_id(source_id: str, style_id: str, seed: int, config_hash: str) -> str:
    """Deterministic 20-hex id of one output: sha256 of source id, style id, seed and config hash."""
    key = "\x00".join((source_id, style_id, str(seed), config_hash))
    return hashlib.sha256(key.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class SourceItem:
    """One label map (plus its instance map or source photo)."""

    source_id: str
    label_uri: str
    instance_uri: str | None = None
    photo_uri: str | None = None


@dataclass(frozen=True)
class StyleItem:
    style_id: str
    uri: str
    label_uri: str | None = None
    """The style's label map (``styles.labels``), when it has one."""
    label_source: str | None = None
    """Where ``label_uri`` comes from: ``given`` (styles.labels), ``predicted`` (styles.segmenter) or None."""


@dataclass(frozen=True)
class ShardSpec:
    """Everything a worker needs to process one shard: URIs and ids, never pixels."""

    index: int
    sources: tuple[SourceItem, ...]
    style_ids: tuple[tuple[str, ...], ...]
    """Style ids for each source, in the same order as ``sources``."""
    styles: tuple[StyleItem, ...] = ()
    """The styles this shard uses (id and URI)."""
    style_scores: tuple[tuple[float, ...], ...] = ()
    """Coverage score of each chosen style (NaN when not scored), aligned with ``style_ids``; empty: none."""
    style_ranks: tuple[tuple[int, ...], ...] = ()
    """Rank of each chosen style for its source (0 = best, -1 when not ranked), aligned with ``style_ids``."""

    @property
    def name(self) -> str:
        return shard_name(self.index)

    @property
    def n_samples(self) -> int:
        return sum(len(s) for s in self.style_ids)

    def style_item(self, style_id: str) -> StyleItem:
        for style in self.styles:
            if style.style_id == style_id:
                return style
        raise KeyError(f"style {style_id!r} is not used by {self.name}")

    def style_uri(self, style_id: str) -> str:
        return self.style_item(style_id).uri

    def score_of(self, i: int, j: int) -> tuple[float | None, int | None]:
        """``(style_score, style_rank)`` of the ``j``-th style of the ``i``-th source; ``None`` when not scored."""
        if not self.style_scores:
            return None, None
        score, rank = self.style_scores[i][j], self.style_ranks[i][j]
        return (None if score != score else float(score)), (None if rank < 0 else int(rank))


@dataclass(frozen=True)
class DatasetChange:
    """How the listed sources compare with what a run folder has committed (see the module docstring)."""

    listed: int
    """Sources the config lists now."""
    done: int
    """Listed sources some committed shard already holds (skipped)."""
    new: tuple[str, ...]
    """Listed sources no committed shard holds (to do): new files, or sources of shards not committed yet."""
    gone: tuple[str, ...]
    """Committed sources the config no longer lists: their rows stay in the index."""
    committed_shards: tuple[str, ...] = ()
    """Names of the committed shards."""

    def describe(self) -> str:
        """``"12 new sources, 3 gone: their rows stay in the index, marked by `spadepis summary`"`` (plus counts)."""
        new = f"{len(self.new)} new source{'' if len(self.new) == 1 else 's'}"
        if not self.committed_shards:
            return f"{new} (nothing committed yet)"
        text = f"{new} to do, {self.done} already committed"
        if self.gone:
            text += (f", {len(self.gone)} gone from the dataset (e.g. {', '.join(self.gone[:3])}): their rows stay in "
                     "the index, marked by `spadepis summary`")
        return text


@dataclass(frozen=True)
class Plan:
    run_id: str
    config_hash: str
    seed: int
    sources: tuple[SourceItem, ...]
    styles: tuple[StyleItem, ...]
    shards: tuple[ShardSpec, ...]
    style_uris: dict[str, str] = field(default_factory=dict, compare=False)
    shard_size: int = 64
    change: DatasetChange | None = field(default=None, compare=False)
    """Set by :meth:`remaining`: what the run folder already holds; ``shards`` are then only the ones to do."""

    @property
    def n_samples(self) -> int:
        return sum(s.n_samples for s in self.shards)

    def sample_id(self, source_id: str, style_id: str) -> str:
        return sample_id(source_id, style_id, self.seed, self.config_hash)

    def remaining(self, done: dict[str, str]) -> "Plan":
        """The plan of what is left once the sources in ``done`` (``{source_id: committed shard name}``, see
        :func:`committed_sources`) are committed: the other sources, sorted, cut into shards of ``shard_size``
        numbered with the lowest indices no committed shard uses. ``change`` says what is new and what is gone.
        """
        used = set(done.values())
        per_source = [(src, ids, scores, ranks) for shard in self.shards for src, ids, scores, ranks in _rows_of(shard)]
        todo = sorted((r for r in per_source if r[0].source_id not in done), key=lambda r: r[0].source_id)
        listed = {s.source_id for s in self.sources}
        indices: list[int] = []
        i = 0
        while len(indices) * self.shard_size < len(todo):
            if shard_name(i) not in used:
                indices.append(i)
            i += 1
        by_id = {s.style_id: s for s in self.styles}
        scored = any(shard.style_scores for shard in self.shards)
        shards = tuple(
            _shard(index, todo[k * self.shard_size : (k + 1) * self.shard_size], by_id, scored)
            for k, index in enumerate(indices)
        )
        change = DatasetChange(
            listed=len(self.sources), done=sum(1 for s in listed if s in done),
            new=tuple(r[0].source_id for r in todo), gone=tuple(sorted(s for s in done if s not in listed)),
            committed_shards=tuple(sorted(used)),
        )
        return Plan(self.run_id, self.config_hash, self.seed, self.sources, self.styles, shards, self.style_uris,
                    self.shard_size, change)


def _rows_of(shard: ShardSpec):
    for i, (src, ids) in enumerate(zip(shard.sources, shard.style_ids)):
        yield src, ids, (shard.style_scores[i] if shard.style_scores else ()), (shard.style_ranks[i] if shard.style_ranks else ())


def _shard(index: int, rows: list, by_id: dict[str, StyleItem], scored: bool) -> ShardSpec:
    used = sorted({sid for r in rows for sid in r[1]})
    return ShardSpec(
        index=index,
        sources=tuple(r[0] for r in rows),
        style_ids=tuple(tuple(r[1]) for r in rows),
        styles=tuple(by_id[sid] for sid in used),
        style_scores=tuple(tuple(r[2]) for r in rows) if scored else (),
        style_ranks=tuple(tuple(r[3]) for r in rows) if scored else (),
    )


PLAN_RECORD = "plan.json"
"""What the latest run into a folder found and planned (counts, new and gone source ids); rewritten by every run."""


def write_plan_record(storage, plan: "Plan") -> dict:
    """Write ``plan.json`` (see :data:`PLAN_RECORD`) for a plan made by :meth:`Plan.remaining`; returns the record."""
    import datetime as _dt
    import json

    change = plan.change
    if change is None:
        raise ValueError("write_plan_record needs a plan from Plan.remaining")
    record = {
        "planned_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "scheme": "committed-sources",
        "sources_listed": change.listed,
        "sources_committed": change.done,
        "sources_new": len(change.new),
        "sources_gone": list(change.gone),
        "shards_committed": len(change.committed_shards),
        "shards_to_do": [s.name for s in plan.shards],
        "shards_planned": len(change.committed_shards) + len(plan.shards),
        "shard_size": plan.shard_size,
    }
    storage.write_bytes(PLAN_RECORD, json.dumps(record, indent=1).encode(), atomic=True)
    return record


def read_plan_record(storage) -> dict | None:
    """The ``plan.json`` of a run folder, or ``None`` (runs made before it existed, or a damaged file)."""
    import json

    try:
        record = json.loads(storage.read_bytes(PLAN_RECORD))
    except (FileNotFoundError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def committed_sources(storage) -> dict[str, str]:
    """``{source_id: shard name}`` of every source a committed shard of ``storage`` (a ``RunStorage``) holds,
    read from the committed manifest parts (the record of what is done; nothing else is trusted)."""
    import io

    import pyarrow.parquet as pq

    out: dict[str, str] = {}
    for shard, marker in sorted(storage.committed_shards().items()):
        data = storage.read_bytes(marker["part"])
        for sid in pq.read_table(io.BytesIO(data), columns=["source_id"]).column("source_id").to_pylist():
            out.setdefault(sid, shard)
    return out


# --------------------------------------------------------------------------------------- listing


def _with_protocol(spec: str, path: str) -> str:
    if "://" in spec:
        protocol = spec.split("://", 1)[0]
        return f"{protocol}://{path.lstrip('/')}" if protocol not in ("file", "memory") else f"{protocol}://{path}"
    return path


def list_inputs(spec: str, *, field: str = "input", exts: tuple[str, ...] = IMAGE_EXTS) -> list[str]:
    """Sorted URIs of the image files named by ``spec``: a folder, a glob, a list file or one file.

    A list file (``.txt``/``.lst``) holds one path or URI per line; relative lines are relative to the
    list file's folder; blank lines and ``#`` comments are skipped. ``field`` names the config field in
    errors.
    """
    from ..data.fs import url_to_fs

    try:
        fs, path = url_to_fs(spec)
    except Exception as exc:  # noqa: BLE001 - unknown protocol, missing extra, bad options
        raise ConfigError(f"{field}: cannot open {spec!r} ({type(exc).__name__}: {exc}); check the URI (s3 needs the s3 extra)") from None
    try:
        if any(ch in path for ch in "*?[") and not fs.exists(path):  # a folder named "set[1]" is a path, not a glob
            uris = [_with_protocol(spec, p) for p in fs.glob(path) if fs.isfile(p)]
            if not uris:
                raise ConfigError(f"{field}: the glob {spec!r} matches no file; check the pattern")
        elif path.lower().endswith(_LIST_EXTS) and fs.isfile(path):
            base = path.rsplit("/", 1)[0] if "/" in path else ""
            uris = []
            with fs.open(path, "r") as f:
                for line in f:
                    line = line.strip()
                    if not line or line.startswith("#"):
                        continue
                    if "://" in line or line.startswith("/"):
                        uris.append(line)
                    else:
                        uris.append(_with_protocol(spec, f"{base}/{line}" if base else line))
            if not uris:
                raise ConfigError(f"{field}: the list file {spec!r} names no file; add one path per line")
        elif fs.isdir(path):
            uris = [
                _with_protocol(spec, p)
                for p in fs.find(path)
                if p.lower().endswith(exts) and not p.rsplit("/", 1)[-1].startswith(".")
            ]
            if not uris:
                raise ConfigError(
                    f"{field}: the folder {spec!r} holds no image ({', '.join(exts)}); put the files there or fix the path"
                )
        elif fs.isfile(path):
            uris = [spec]
        else:
            from ..data.buckets import missing_bucket

            bucket = missing_bucket(spec)
            if bucket is not None:
                raise ConfigError(f"{field}: the bucket {bucket!r} of {spec!r} does not exist; fix the bucket name")
            raise ConfigError(f"{field}: {spec!r} does not exist; give a folder, a glob or a list file")
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - storage errors while listing
        raise ConfigError(f"{field}: cannot list {spec!r} ({type(exc).__name__}: {exc}); check the URI and credentials") from None
    return sorted(uris)


def _stem(uri: str) -> str:
    return PurePosixPath(uri.split("://", 1)[-1]).stem


MAX_ID_BYTES = 96
"""Longest id (UTF-8 bytes) before shortening: ``<source>__<style>.png`` stays far below the usual 255-byte
limit on a file name (ext4, XFS, APFS, NTFS) and S3's 1024-byte keys."""


def safe_id(stem: str) -> str:
    """The id a file stem gets: readable, unique and bounded.

    Letters and digits of any script (NFC-normalised), ``.``, ``_`` and ``-`` are kept; every other run of
    characters becomes ``_``. When that changed the stem or it is longer than :data:`MAX_ID_BYTES`, the id
    is the (shortened) readable part plus ``-`` and 8 hex of the stem's sha256, so two names never collapse
    into one and ids stay bounded.

    >>> safe_id("aachen_000000_000019"), safe_id("猫"), safe_id("a b")
    ('aachen_000000_000019', '猫', 'a_b-c8687a08')
    """
    import unicodedata

    norm = unicodedata.normalize("NFC", stem)
    kept = re.sub(r"[^\w.-]+", "_", norm).strip(".") or "_"
    if kept == stem and len(kept.encode()) <= MAX_ID_BYTES:
        return kept
    digest = hashlib.sha256(stem.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    room = MAX_ID_BYTES - 9
    short = kept.encode()[:room].decode("utf-8", "ignore")
    return f"{short}-{digest}"


def _source_id(uri: str, strip: tuple[str, ...] = ()) -> str:
    stem = _stem(uri)
    changed = True
    while changed:
        changed = False
        for suffix in strip:
            if suffix and stem.endswith(suffix) and len(stem) > len(suffix):
                stem, changed = stem[: -len(suffix)], True
    return safe_id(stem)


def renamed_inputs(plan: "Plan") -> list[tuple[str, str]]:
    """``(file name, id)`` of every source and style stored under another id than its file stem
    (characters a file name cannot safely hold, or a name longer than :data:`MAX_ID_BYTES`)."""
    out = []
    for uri, sid in [(s.label_uri, s.source_id) for s in plan.sources] + [(s.uri, s.style_id) for s in plan.styles]:
        stem = _stem(uri)
        if not stem.startswith(sid):  # a stripped suffix (_labelIds) leaves a prefix of the stem
            out.append((uri.rsplit("/", 1)[-1], sid))
    return out


def storage_name_problems(plan: "Plan", run_uri: str) -> list[str]:
    """Output names under ``run_uri`` that the storage cannot hold: a file name over 255 bytes, a local path
    over 4096 bytes or an object key over 1024 bytes (the run folder's own path is usually the cause)."""
    problems = []
    local = "://" not in run_uri or run_uri.startswith("file://")
    limit = 4096 if local else 1024
    for shard in plan.shards:
        for src, styles in zip(shard.sources, shard.style_ids):
            for style in styles or ("",):
                from .layout import image_rel  # the storage layout's own names (escaped ids, an attempt folder)

                rel = image_rel(shard.name, src.source_id, style, "20250101T000000Z-00000000-try1")
                name = rel.rsplit("/", 1)[-1]
                full = f"{run_uri}/{rel}".split("://", 1)[-1]
                if len(name.encode()) > 255:
                    problems.append(f"source {src.source_id!r} x style {style!r}: output file name {name!r} is over 255 bytes")
                elif len(full.encode()) > limit:
                    problems.append(
                        f"output: paths under {run_uri!r} reach {len(full.encode())} bytes, over the {limit}-byte limit of "
                        "the storage; choose a shorter output / run_id"
                    )
                if len(problems) >= 5:
                    return problems
    return problems


def _ids_by_stem(uris: list[str], field: str, strip: tuple[str, ...] = ()) -> dict[str, str]:
    out: dict[str, str] = {}
    for uri in uris:
        key = _source_id(uri, strip)
        if key in out:
            raise ConfigError(
                f"{field}: two files have the id {key!r} ({out[key]} and {uri}); ids are file stems and must be unique"
            )
        out[key] = uri
    return out


def make_plan(config: "RunConfig") -> Plan:
    """List the inputs and cut them into shards; deterministic for a given config and input set.

    Raises :class:`ConfigError` when an input is missing or empty, ids collide, or an instance map /
    photo is missing for a label map.
    """
    strip = tuple(config.dataset.strip_suffixes)
    labels = _ids_by_stem(list_inputs(config.dataset.labels, field="dataset.labels"), "dataset.labels", strip)
    instances: dict[str, str] = {}
    photos: dict[str, str] = {}
    if config.dataset.instances:
        instances = _ids_by_stem(list_inputs(config.dataset.instances, field="dataset.instances"), "dataset.instances", strip)
    if config.dataset.photos:
        photos = _ids_by_stem(list_inputs(config.dataset.photos, field="dataset.photos"), "dataset.photos", strip)
    source_ids = sorted(labels)
    if config.dataset.limit:
        source_ids = source_ids[: config.dataset.limit]
    if photos:
        missing = [s for s in source_ids if s not in photos]
        if missing:
            raise ConfigError(
                f"dataset.photos: no photo for {len(missing)} label map(s), e.g. {missing[:3]}; photos are matched to "
                "label maps by file stem"
            )
    sources = tuple(
        SourceItem(s, labels[s], instances.get(s) if instances else None, photos.get(s) if photos else None)
        for s in source_ids
    )
    # With style label maps, style ids follow the dataset's id rules (so photo and label map pair up, and a
    # pool made of the dataset's own photos has the sources' ids); without, they stay plain file stems.
    style_strip = strip if config.styles.labels is not None else ()
    styles_by_id = _ids_by_stem(list_inputs(config.styles.source, field="styles.source"), "styles.source", style_strip)
    style_labels: dict[str, str | None] = {}
    style_ids = sorted(styles_by_id)
    source_kind = "given"
    if config.styles.labels == "predict":  # predicted once per style by styles.segmenter, stored in the run folder
        from .segmenter import predict_style_labels

        source_kind = "predicted"
        style_labels = predict_style_labels(config, tuple(StyleItem(s, styles_by_id[s]) for s in style_ids), config.run_uri)
    elif config.styles.labels is not None:
        style_labels = _ids_by_stem(list_inputs(config.styles.labels, field="styles.labels"), "styles.labels", strip)
    styles = tuple(
        StyleItem(s, styles_by_id[s], style_labels.get(s), source_kind if style_labels.get(s) else None) for s in style_ids
    )
    by_id = {s.style_id: s for s in styles}
    from .styles import plan_selection

    selection, _ = plan_selection(config, sources, styles, run_uri=config.run_uri)
    chosen = [tuple(style_ids[j] for j in cols) for cols in selection.styles]
    scored = config.styles.labels is not None
    size = config.shard_size
    rows = [
        (src, chosen[i], tuple(selection.scores[i]) if scored else (), tuple(selection.ranks[i]) if scored else ())
        for i, src in enumerate(sources)
    ]
    shards = tuple(_shard(i // size, rows[i : i + size], by_id, scored) for i in range(0, len(rows), size))
    return Plan(
        run_id=config.resolved_run_id,
        config_hash=config.config_hash,
        seed=config.seed,
        sources=sources,
        styles=styles,
        shards=shards,
        style_uris=dict(styles_by_id),
        shard_size=size,
    )
