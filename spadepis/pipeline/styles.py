"""Style pools with label maps: the class-composition index and the choice of styles per label map.

A style pool is ``styles.source`` (photos) plus, optionally, ``styles.labels`` (their label maps in the
dataset's label space, paired by id: file stem with ``dataset.strip_suffixes`` removed). The pool may be
the dataset's own photos; a source is never stylized with its own photo (same id).

The **style index** (``<run>/style_index.parquet``, next to ``run.json``) holds one row per style:
``style_id``, ``style_uri``, ``label_uri``, ``width``/``height`` (of the label map), ``n_pixels``,
``fractions`` (pixel fraction of every label id ``0..L-1``, ``L`` = the preset's label channels) and
``error`` (why a style label map could not be used; such a style is never chosen by ``semantic``) and
``label_source`` (``given``: from ``styles.labels``; ``predicted``: by ``styles.segmenter`` with
``styles.labels: predict``, see :mod:`.segmenter`; null: no label map).
``<run>/source_index.parquet`` holds the same for the dataset's label maps. Both are computed once per
run (label maps read in a thread pool) and reused on resume while the inputs are the same (the key of
the inputs is in the file's metadata ``spadepis.index_key``).

Score
-----
For a content label map with class fractions :math:`p` and a style with fractions :math:`q` (both
renormalised after removing the ignored labels, ``styles.ignore_labels``), the **coverage score** is the
histogram intersection weighted by the content's own fractions:

.. math::

    s(p, q) = \\frac{\\sum_c p_c \\min(p_c, q_c)}{\\sum_c p_c^2} \\in [0, 1].

It is 1 exactly when the style has at least the content's share of every class the content has (for
normalised histograms: the same composition), 0 when the style has none of the content's classes, and a
class counts in proportion to its size, so covering the content's large classes is what matters. A
content map whose every pixel is ignored scores 0 with every style. Self pairs and styles whose label
map is missing or unusable are not ranked (no score).

Selection (``styles.select``)
-----------------------------
* ``all``: every style (minus the source's own photo);
* ``random``: ``per_sample`` styles drawn by a hash of (seed, source id) (today's ``per_sample``);
* ``semantic``: styles are ranked by ``s`` (ties: style id order), then ``per_sample`` of the ``top_m``
  best (default ``4 x per_sample``) are drawn uniformly without replacement, keyed by sha256(seed, source
  id) (the positions with the smallest SplitMix64(key + j)): seeded diversity by top-m sampling, no cap
  per style; a source's draw depends only on its id, the seed and the pool. ``style_rank`` is the chosen style's rank
  (0 = best) among the whole pool for that source, ``style_score`` its score.

The scores are computed with elementwise float32 operations in a fixed order (no BLAS reductions), so
the plan is bit-identical on any machine. Cost: ``O(N x S x C)`` elementwise numpy work for N label
maps, S styles and C label ids present in a chunk of label maps, chunked to bound memory, plus a
partial sort per row; see ``bench/bench_semantic.py --scale`` for measured figures.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, InputError

if TYPE_CHECKING:
    from ..data.presets import Preset

# This module sits below config, plan and storage (plan calls it), so it takes the config, sources and
# styles as plain objects (``RunConfig``, ``SourceItem``, ``StyleItem``) and reads / writes the index with
# fsspec itself: importing those modules would close an import cycle.

__all__ = [
    "STYLE_INDEX",
    "SOURCE_INDEX",
    "ClassIndex",
    "Selection",
    "ignored_labels",
    "build_class_index",
    "load_or_build_index",
    "read_style_index",
    "normalised_fractions",
    "coverage_scores",
    "select_styles",
    "plan_selection",
]

STYLE_INDEX = "style_index.parquet"
SOURCE_INDEX = "source_index.parquet"
_CHUNK_ELEMENTS = 1 << 20  # label maps x styles per score chunk (4 MiB of float32)


# ----------------------------------------------------------------------------------------- the index


@dataclass
class ClassIndex:
    """Per item (style or source): id, URIs, label-map size and per-class pixel fractions ``(N, L)``."""

    kind: str  # "style" or "source"
    ids: list[str]
    uris: list[str]
    label_uris: list[str | None]
    width: np.ndarray
    height: np.ndarray
    fractions: np.ndarray  # (N, L) float32; zero rows where the label map is missing or unusable
    errors: list[str | None]
    key: str = ""
    label_sources: list[str | None] | None = None  # styles: given / predicted / None per row

    @property
    def n_labels(self) -> int:
        return int(self.fractions.shape[1])

    @property
    def valid(self) -> np.ndarray:
        return np.array([e is None and u is not None for e, u in zip(self.errors, self.label_uris)], dtype=bool)

    def to_table(self):
        import pyarrow as pa

        id_col = f"{self.kind}_id"
        uri_col = "style_uri" if self.kind == "style" else "photo_uri"
        n_pixels = (self.width.astype(np.int64) * self.height.astype(np.int64))
        table = pa.table({
            id_col: pa.array(self.ids, pa.string()),
            uri_col: pa.array(self.uris, pa.string()),
            "label_uri": pa.array(self.label_uris, pa.string()),
            "width": pa.array(self.width, pa.int32()),
            "height": pa.array(self.height, pa.int32()),
            "n_pixels": pa.array(n_pixels, pa.int64()),
            "fractions": pa.array(list(self.fractions), pa.list_(pa.float32())),
            "error": pa.array(self.errors, pa.string()),
        })
        if self.kind == "style":
            sources = self.label_sources or [("given" if u is not None else None) for u in self.label_uris]
            table = table.append_column("label_source", pa.array(sources, pa.string()))
        meta = {b"spadepis.index_key": self.key.encode(), b"spadepis.n_labels": str(self.n_labels).encode(),
                b"spadepis.index_kind": self.kind.encode()}
        return table.replace_schema_metadata(meta)

    @classmethod
    def from_table(cls, table) -> "ClassIndex":
        meta = table.schema.metadata or {}
        kind = meta.get(b"spadepis.index_kind", b"style").decode()
        n = int(meta.get(b"spadepis.n_labels", b"0"))
        uri_col = "style_uri" if kind == "style" else "photo_uri"
        frac = table.column("fractions").to_pylist()
        fractions = np.array(frac, dtype=np.float32).reshape(len(frac), n) if frac else np.zeros((0, n), np.float32)
        return cls(
            kind=kind,
            ids=table.column(f"{kind}_id").to_pylist(),
            uris=table.column(uri_col).to_pylist(),
            label_uris=table.column("label_uri").to_pylist(),
            width=np.asarray(table.column("width").to_numpy(zero_copy_only=False), dtype=np.int32),
            height=np.asarray(table.column("height").to_numpy(zero_copy_only=False), dtype=np.int32),
            fractions=fractions,
            errors=table.column("error").to_pylist(),
            key=meta.get(b"spadepis.index_key", b"").decode(),
            label_sources=table.column("label_source").to_pylist() if "label_source" in table.column_names else None,
        )


def ignored_labels(config: Any, preset: "Preset") -> list[int]:
    """``styles.ignore_labels``, or the preset's dontcare id (``label_nc``) when it has one."""
    if config.styles.ignore_labels is not None:
        return sorted({int(v) for v in config.styles.ignore_labels})
    return [preset.label_nc] if preset.contain_dontcare_label else []


def _image_size(uri: str) -> tuple[int, int]:
    """``(width, height)`` of an image from its header."""
    from ..data.fs import open_uri
    from ..data.images import check_local_input
    from PIL import Image

    check_local_input(uri)  # never open a FIFO
    try:
        with open_uri(uri, "rb") as f:
            with Image.open(f) as img:
                return img.size
    except FileNotFoundError:
        raise InputError(f"{uri}: file not found") from None
    except Exception as exc:  # noqa: BLE001 - unreadable header
        raise InputError(f"{uri}: not a readable image ({type(exc).__name__}: {exc})") from None


def _one(label_uri: str | None, photo_uri: str | None, preset: "Preset", n_labels: int) -> tuple[int, int, np.ndarray, str | None]:
    from ..data.labelmaps import read_label_map

    zeros = np.zeros(n_labels, np.float32)
    if label_uri is None:
        return 0, 0, zeros, None
    try:
        label = read_label_map(label_uri, preset)
        h, w = label.shape
        if photo_uri is not None:
            pw, ph = _image_size(photo_uri)
            if abs(pw / ph - w / h) > 0.02 * (w / h):
                raise InputError(
                    f"{label_uri}: label map is {w}x{h} (WxH) but its photo {photo_uri} is {pw}x{ph}; pair each photo with "
                    "its own label map"
                )
        counts = np.bincount(label.reshape(-1), minlength=n_labels)[:n_labels]
        return w, h, (counts / float(label.size)).astype(np.float32), None
    except InputError as exc:
        return 0, 0, zeros, str(exc)


def _index_key(kind: str, preset: "Preset", ids: list[str], uris: list[str], label_uris: list[str | None]) -> str:
    data = json.dumps([kind, preset.name, preset.label_nc, preset.contain_dontcare_label, ids, uris, label_uris])
    return hashlib.sha256(data.encode()).hexdigest()


def build_class_index(
    kind: str,
    ids: list[str],
    uris: list[str],
    label_uris: list[str | None],
    preset: "Preset",
    *,
    photo_uris: list[str | None] | None = None,
    threads: int | None = None,
    label_sources: list[str | None] | None = None,
) -> ClassIndex:
    """Read every label map once (thread pool; PNG decoding releases the GIL) and count its classes.

    A label map that cannot be read or has ids outside the preset gets a zero row and its error.
    ``photo_uris`` (styles): each label map must have its photo's aspect ratio.
    """
    n_labels = preset.num_label_channels
    photos = photo_uris if photo_uris is not None else [None] * len(ids)
    workers = threads or min(8, (os.cpu_count() or 2))
    from ..data.fs import inherit_storage_options

    with ThreadPoolExecutor(max_workers=workers, **inherit_storage_options()) as pool:
        results = list(pool.map(lambda a: _one(a[0], a[1], preset, n_labels), zip(label_uris, photos)))
    fractions = np.stack([r[2] for r in results]) if results else np.zeros((0, n_labels), np.float32)
    return ClassIndex(
        kind=kind,
        ids=list(ids),
        uris=list(uris),
        label_uris=list(label_uris),
        width=np.array([r[0] for r in results], dtype=np.int32),
        height=np.array([r[1] for r in results], dtype=np.int32),
        fractions=fractions,
        errors=[r[3] for r in results],
        key=_index_key(kind, preset, list(ids), list(uris), list(label_uris)),
        label_sources=list(label_sources) if label_sources is not None else None,
    )


def load_or_build_index(
    run_uri: str | None,
    name: str,
    kind: str,
    ids: list[str],
    uris: list[str],
    label_uris: list[str | None],
    preset: "Preset",
    *,
    photo_uris: list[str | None] | None = None,
    label_sources: list[str | None] | None = None,
) -> ClassIndex:
    """The index stored at ``<run_uri>/<name>`` when its inputs are the same, else built and stored there."""
    import pyarrow.parquet as pq

    key = _index_key(kind, preset, list(ids), list(uris), list(label_uris))
    uri = f"{str(run_uri).rstrip('/')}/{name}" if run_uri else None
    if uri is not None:
        try:
            table = pq.read_table(io.BytesIO(_read(uri)))
            if (table.schema.metadata or {}).get(b"spadepis.index_key", b"").decode() == key:
                return ClassIndex.from_table(table)
        except FileNotFoundError:
            pass
        except Exception:  # noqa: BLE001 - a torn or foreign file is rebuilt
            pass
    index = build_class_index(kind, ids, uris, label_uris, preset, photo_uris=photo_uris, label_sources=label_sources)
    if uri is not None:
        buf = io.BytesIO()
        pq.write_table(index.to_table(), buf, compression="zstd")
        _write(uri, buf.getvalue())
    return index


def _read(uri: str) -> bytes:
    from ..data.fs import open_uri

    with open_uri(uri, "rb") as f:
        return f.read()


def _write(uri: str, data: bytes) -> None:
    """Write ``data`` through the one write path (:func:`~spadepis.data.buckets.put_bytes`: atomic, folders only on
    local disks, never ``makedirs`` on an object store)."""
    from ..data.fs import url_to_fs

    from ..data.buckets import put_bytes
    from ..errors import StorageError

    try:
        fs, path = url_to_fs(uri)
        put_bytes(fs, path, data)
    except Exception as exc:  # noqa: BLE001 - storage failures are transient for the caller
        raise StorageError(f"writing {uri} failed ({type(exc).__name__}: {exc}); check the output and credentials") from exc


def read_style_index(run_uri: str):
    """A run's style index as a pandas DataFrame (one row per style; ``fractions`` per label id)."""
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(_read(f"{str(run_uri).rstrip('/')}/{STYLE_INDEX}"))).to_pandas()


# ----------------------------------------------------------------------------------------- scores


def normalised_fractions(fractions: np.ndarray, ignore: list[int] | tuple[int, ...] = ()) -> np.ndarray:
    """Fractions with the ignored labels removed and each row renormalised to sum 1 (zero rows stay zero)."""
    f = np.array(fractions, dtype=np.float32, copy=True)
    for label in ignore:
        if 0 <= label < f.shape[1]:
            f[:, label] = 0.0
    total = f.sum(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
    np.divide(f, total, out=f, where=total > 0)
    return f


def coverage_scores(P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """``s(p, q)`` for every content row of ``P`` ``(B, C)`` and style row of ``Q`` ``(S, C)``: ``(B, S)`` float32.

    Inputs are normalised fractions (:func:`normalised_fractions`). Only the label ids present in ``P``
    are visited, one elementwise pass each, so the cost is ``B x S x (labels present)`` and the result is
    bit-identical on every machine.
    """
    P = np.asarray(P, dtype=np.float32)
    Q = np.asarray(Q, dtype=np.float32)
    num = np.zeros((P.shape[0], Q.shape[0]), dtype=np.float32)
    tmp = np.empty_like(num)
    den = np.zeros(P.shape[0], dtype=np.float32)
    for c in np.flatnonzero(P.any(axis=0)):
        pc = P[:, c : c + 1]
        np.minimum(pc, Q[None, :, c], out=tmp)
        tmp *= pc
        num += tmp
        den += P[:, c] * P[:, c]
    np.divide(num, den[:, None], out=num, where=den[:, None] > 0)
    num[den == 0] = 0.0
    return num


@dataclass
class Selection:
    """Per source: chosen style indices (into the pool), their scores (NaN: not ranked) and ranks (-1: none)."""

    styles: list[tuple[int, ...]]
    scores: list[tuple[float, ...]]
    ranks: list[tuple[int, ...]]


def _ranks_of(row: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Rank (0 = best; ties by index) of ``row[cols]`` among the finite entries of ``row``."""
    out = np.full(len(cols), -1, dtype=np.int64)
    for i, j in enumerate(cols):
        v = row[j]
        if np.isfinite(v):
            out[i] = int(np.count_nonzero(row > v) + np.count_nonzero(row[:j] == v))
    return out


def _top_m(block: np.ndarray, m: int) -> np.ndarray:
    """Per row, the indices of the ``m`` best finite entries, best first (ties: lower index first); ``-1`` pads
    rows with fewer finite entries. ``(B, min(m, S))`` int64."""
    b, s = block.shape
    m = min(m, s)
    cand = np.argpartition(-block, m - 1, axis=1)[:, :m]
    vals = np.take_along_axis(block, cand, axis=1)
    order = np.lexsort((cand, -vals), axis=1)
    cand = np.take_along_axis(cand, order, axis=1)
    vals = np.take_along_axis(vals, order, axis=1)
    thr = vals[:, -1]
    n_ge = np.count_nonzero(block >= thr[:, None], axis=1)
    for r in np.flatnonzero(n_ge > m):  # a tie straddles the boundary: resolve it by index, exactly
        idx = np.flatnonzero(block[r] >= thr[r])
        cand[r] = idx[np.lexsort((idx, -block[r, idx]))][:m]
    cand[~np.isfinite(np.take_along_axis(block, cand, axis=1))] = -1
    return cand


_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 arrays (wrapping arithmetic): a counter-based hash, same on every machine."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _draw_positions(source_ids: list[str], seed: int, n_cand: np.ndarray, m: int, k: int) -> np.ndarray:
    """Per source, ``min(k, n_cand)`` distinct positions in ``0..n_cand-1``, uniformly, sorted; ``-1`` pads.

    The key of a source is sha256(seed, source id), so its draw depends on nothing else; the positions
    are the ``k`` smallest of SplitMix64(key + j), j < n_cand.
    """
    keys = np.array([int.from_bytes(hashlib.sha256(f"semantic\x00{seed}\x00{sid}".encode()).digest()[:8], "big")
                     for sid in source_ids], dtype=np.uint64)
    with np.errstate(over="ignore"):
        u = _splitmix64(keys[:, None] + np.arange(m, dtype=np.uint64)[None, :])
    u[np.arange(m)[None, :] >= n_cand[:, None]] = _MASK64  # not a candidate
    order = np.argsort(u, axis=1, kind="stable")[:, :k]
    order = np.sort(order, axis=1)
    order[np.arange(k)[None, :] >= np.minimum(n_cand, k)[:, None]] = -1
    return order


def select_styles(
    source_ids: list[str],
    P: np.ndarray | None,
    style_ids: list[str],
    Q: np.ndarray | None,
    *,
    mode: str,
    k: int | None,
    seed: int,
    top_m: int | None = None,
    style_valid: np.ndarray | None = None,
) -> Selection:
    """Choose styles for every source (see the module docstring). ``P``/``Q`` normalised fractions or ``None``.

    Without ``P``/``Q`` there are no scores (``random``/``all`` only). ``semantic`` is vectorised in chunks of
    sources (scores, top m, the seeded draw); the only per-source Python work is hashing its id.
    """
    n_styles = len(style_ids)
    pos = {sid: i for i, sid in enumerate(style_ids)}
    self_col = np.array([pos.get(s, -1) for s in source_ids], dtype=np.int64)
    scored = P is not None and Q is not None
    if mode == "semantic" and not scored:
        raise ConfigError("styles.select: semantic needs label maps for the sources and styles.labels for the styles")
    valid = np.ones(n_styles, bool) if style_valid is None else np.asarray(style_valid, bool)
    out = Selection([], [], [])
    chunk = max(1, _CHUNK_ELEMENTS // max(n_styles, 1))
    m = min(top_m or 4 * (k or 1), n_styles)
    for start in range(0, len(source_ids), chunk):
        stop = min(start + chunk, len(source_ids))
        block = None
        if scored:
            block = coverage_scores(P[start:stop], Q)
            if not valid.all():
                block[:, ~valid] = -np.inf
            rows = np.arange(stop - start)
            has_self = self_col[start:stop] >= 0
            block[rows[has_self], self_col[start:stop][has_self]] = -np.inf
        ids = source_ids[start:stop]
        if mode == "semantic":
            tops = _top_m(block, m)  # (B, m) best first
            n_cand = np.count_nonzero(tops >= 0, axis=1)
            picks = _draw_positions(ids, seed, n_cand, tops.shape[1], min(k or tops.shape[1], tops.shape[1]))
            cols = np.where(picks >= 0, np.take_along_axis(tops, np.maximum(picks, 0), axis=1), -1)
            vals = np.where(cols >= 0, np.take_along_axis(block, np.maximum(cols, 0), axis=1), np.nan).astype(np.float64)
            if (picks >= 0).all():
                out.styles.extend(map(tuple, cols.tolist()))
                out.scores.extend(map(tuple, vals.tolist()))
                out.ranks.extend(map(tuple, picks.tolist()))
                continue
            for r in range(stop - start):
                keep = picks[r] >= 0
                out.styles.append(tuple(cols[r, keep].tolist()))
                out.scores.append(tuple(vals[r, keep].tolist()))
                out.ranks.append(tuple(picks[r, keep].tolist()))
            continue
        for r, sid in enumerate(ids):
            own = int(self_col[start + r])
            n_pool = n_styles - (own >= 0)
            if mode == "random" and k is not None and k < n_pool:
                # today's per_sample draw (same hash, same call); with the source's own photo in the pool, one
                # more is drawn and the own photo dropped (the first k others of a random order: uniform)
                digest = hashlib.sha256(f"{seed}\x00{sid}".encode()).digest()
                rng = random.Random(int.from_bytes(digest[:8], "big"))
                if own < 0:
                    names = rng.sample(style_ids, k)
                else:
                    names = [n for n in rng.sample(style_ids, k + 1) if n != sid][:k]
                cols = np.array(sorted(pos[n] for n in names), dtype=np.int64)
            else:
                cols = np.array([i for i in range(n_styles) if i != own], dtype=np.int64)
            ranks = _ranks_of(block[r], cols) if block is not None else np.full(len(cols), -1)
            scores = block[r, cols].astype(np.float64) if block is not None else np.full(len(cols), np.nan)
            scores[~np.isfinite(scores)] = np.nan
            out.styles.append(tuple(int(c) for c in cols))
            out.scores.append(tuple(float(v) for v in scores))
            out.ranks.append(tuple(int(v) for v in ranks))
    return out


# ----------------------------------------------------------------------------------------- the plan


def plan_selection(config: Any, sources: Any, styles: Any, *, run_uri: str | None = None) -> tuple[Selection, dict[str, Any]]:
    """Choose the styles of every source of a run; builds (or reuses) the run's style and source indexes.

    ``config`` is a ``RunConfig``, ``sources`` and ``styles`` the plan's ``SourceItem`` / ``StyleItem`` tuples.

    Returns the selection and a small record (index URIs, counts) for run.json and logs.
    """

    st = config.styles
    mode = st.effective_select()
    info: dict[str, Any] = {"select": mode}
    style_ids = [s.style_id for s in styles]
    P = Q = valid = None
    if st.labels is not None:
        from .model_cache import label_space_preset

        preset = label_space_preset(config)  # the dataset's ids (dataset.label_remap: before the mapping)
        ignore = ignored_labels(config, preset)
        sindex = load_or_build_index(
            run_uri, STYLE_INDEX, "style", style_ids, [s.uri for s in styles], [s.label_uri for s in styles], preset,
            photo_uris=[s.uri for s in styles], label_sources=[getattr(s, "label_source", None) for s in styles],
        )
        cindex = load_or_build_index(
            run_uri, SOURCE_INDEX, "source", [s.source_id for s in sources], [s.photo_uri or "" for s in sources],
            [s.label_uri for s in sources], preset,
        )
        valid = sindex.valid
        Q = normalised_fractions(sindex.fractions, ignore)
        P = normalised_fractions(cindex.fractions, ignore)
        info.update({
            "style_index": f"{run_uri}/{STYLE_INDEX}" if run_uri else None,
            "styles_with_labels": int(valid.sum()),
            "styles_without_labels": int(sum(u is None for u in sindex.label_uris)),
            "styles_with_predicted_labels": int(sum(getattr(s, "label_source", None) == "predicted" for s in styles)),
            "style_label_errors": [e for e in sindex.errors if e][:10],
            "ignore_labels": ignore,
        })
        if mode == "semantic" and not valid.any():
            raise ConfigError(
                f"styles.labels: no style photo of {st.source!r} has a usable label map in {st.labels!r} (ids are file "
                f"stems without {config.dataset.strip_suffixes}); e.g. {sindex.errors[:1] or style_ids[:3]}"
            )
    k = st.per_sample
    if mode == "all":
        k = None
    sel = select_styles([s.source_id for s in sources], P, style_ids, Q, mode=mode, k=k, seed=config.seed,
                        top_m=st.top_m, style_valid=valid)
    return sel, info
