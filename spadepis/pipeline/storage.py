"""Run storage on any fsspec filesystem, and the shard commit protocol.

Layout under ``<output>/<run_id>/`` (local path, ``s3://``, ``gs://``, ``memory://``)::

    run.json                                              frozen config, model checksums, schema version
    synth/shard=00042/<source_id>.png                     SPADE output
    images/shard=00042/<source_id>__<style_id>.png        stylized output
    labels/shard=00042/<source_id>.png                    label map NEAREST-resized to its outputs' size, when it differs
    manifest/shard=00042/part-<attempt_id>.parquet        one attempt's rows
    manifest/shard=00042/_SUCCESS.json                    written last: names the committed part
    index.parquet                                         merged from committed parts only

Object stores have no atomic rename, so the marker written last *is* the commit: a reader trusts
only the part a valid marker names, checks its size and sha256, and ignores orphan parts of
crashed attempts. Every storage failure is raised as :class:`StorageError` (an ``OSError``) whose
message says what happened (disk full, permission, bucket missing, ...) and whether a retry can help
(``spadepis.pipeline.failures``). Buckets are never created: writes on object stores skip ``makedirs``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import posixpath
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ConfigError, SpadepisError, StorageError
from .schema import SCHEMA, SCHEMA_VERSION, table_schema_version, upgrade_table
from ..data.buckets import has_conditional_write, is_object_store, missing_bucket, put_bytes
from .failures import Failure, classify
from . import layout
from .plan import shard_name
from ..data.fs import url_to_fs

__all__ = ["RunStorage", "new_attempt_id", "normalize_uri", "is_object_store", "missing_bucket", "SUCCESS", "INDEX"]

SUCCESS = "_SUCCESS.json"
INDEX = "index.parquet"
T = TypeVar("T")


def new_attempt_id() -> str:
    """Sortable, unique attempt id: ``20250101T120000Z-1a2b3c4d``."""
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{now}-{uuid.uuid4().hex[:8]}"


def normalize_uri(uri: str | None) -> str | None:
    """An absolute, normalised form of ``uri`` (what the manifest stores), so rows read the same from any cwd.

    Local paths (and ``file://``) become absolute paths without ``.``/``..``; URIs of other filesystems
    (``s3://b/a/../c``) get their path normalised (``s3://b/c``). ``None`` stays ``None``.
    """
    if uri is None:
        return None
    uri = str(uri)
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    elif "://" in uri:
        protocol, rest = uri.split("://", 1)
        trailing = "/" if rest.endswith("/") and len(rest) > 1 else ""
        norm = posixpath.normpath(rest) if rest else rest
        return f"{protocol}://{norm.lstrip('/') if not rest.startswith('/') else norm}{trailing}"
    return os.path.abspath(os.path.expanduser(uri))


def _storage_error(what: str, exc: BaseException, failure: Failure) -> StorageError:
    err = StorageError(f"{what} failed: {failure.what} ({type(exc).__name__}: {exc}); {failure.retry_text}; {failure.advice}")
    err.failure = failure  # type: ignore[attr-defined]
    return err


def _as_shard(shard: int | str) -> str:
    return shard_name(shard) if isinstance(shard, int) else shard


class RunStorage:
    """One run's folder. ``RunStorage("s3://bucket/runs/my-run")``."""

    def __init__(self, run_uri: str):

        self.run_uri = normalize_uri(str(run_uri).rstrip("/")).rstrip("/")  # absolute: output URIs work from any cwd
        try:
            self.fs, self.root = url_to_fs(self.run_uri)  # the current run's storage options, explicitly
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"cannot open storage {self.run_uri!r}: {type(exc).__name__}: {exc}") from None
        self.root = self.root.rstrip("/")
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        self.protocol = protocol
        self.is_local = protocol in ("file", "local")
        self.is_object_store = is_object_store(self.fs)
        self.bucket = self.root.split("/", 1)[0] if self.is_object_store else None
        self.invalid_markers: dict[str, str] = {}
        """Shards whose marker was found but does not commit them (missing or damaged part), with why."""

    def missing_bucket(self) -> str | None:
        """The bucket name when the run's bucket does not exist (object stores only), else ``None``."""
        return missing_bucket(self.run_uri)

    @classmethod
    def from_run_uri(cls, run_uri: str) -> "RunStorage":
        return cls(run_uri)

    # ------------------------------------------------------------------------------ names
    def uri(self, rel: str) -> str:
        return f"{self.run_uri}/{rel}"

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    @staticmethod
    def synth_rel(shard: int | str, source_id: str, attempt_id: str) -> str:
        return layout.synth_rel(_as_shard(shard), source_id, attempt_id)

    @staticmethod
    def label_rel(shard: int | str, source_id: str, attempt_id: str) -> str:
        return layout.label_rel(_as_shard(shard), source_id, attempt_id)

    @staticmethod
    def image_rel(shard: int | str, source_id: str, style_id: str, attempt_id: str) -> str:
        """``images/<shard>/<attempt>/<source>/<style>.png`` (:mod:`.layout`): no two pairs share a path."""
        return layout.image_rel(_as_shard(shard), source_id, style_id, attempt_id)

    @staticmethod
    def attempt_folders(shard: int | str, attempt_id: str) -> list[str]:
        """The folders only attempt ``attempt_id`` of ``shard`` writes into."""
        return layout.attempt_folders(_as_shard(shard), attempt_id)

    @staticmethod
    def part_rel(shard: int | str, attempt_id: str) -> str:
        return f"manifest/{_as_shard(shard)}/part-{attempt_id}.parquet"

    @staticmethod
    def success_rel(shard: int | str) -> str:
        return f"manifest/{_as_shard(shard)}/{SUCCESS}"

    # ------------------------------------------------------------------------------ raw I/O
    def _io(self, what: str, fn: Callable[[], T], *, writing: bool = False) -> T:
        try:
            return fn()
        except SpadepisError:
            raise
        except FileNotFoundError as exc:
            if not writing:
                raise  # reading: "not there" is an answer (run.json, markers), not a failure
            failure = classify(exc)
            if self.is_object_store:
                failure = Failure("bucket-missing", False, f"the bucket {self.bucket!r} does not exist",
                                  "create the bucket (spadepis never creates buckets) or fix its name in the config")
            raise _storage_error(what, exc, failure) from exc
        except Exception as exc:  # noqa: BLE001 - every storage failure becomes a StorageError that says what happened
            raise _storage_error(what, exc, classify(exc)) from exc

    def write_bytes(self, rel: str, data: bytes, *, atomic: bool = True) -> str:
        """Write ``data`` at ``rel`` through the one write path (:func:`~spadepis.data.buckets.put_bytes`: always
        atomic, folders only on local disks); ``atomic`` is kept for callers and has no effect."""
        self._io(f"writing {self.uri(rel)}", lambda: put_bytes(self.fs, self.path(rel), data), writing=True)
        return self.uri(rel)

    def create_bytes(self, rel: str, data: bytes) -> bool:
        """Create ``rel`` with ``data`` only if it does not exist (a conditional write where the store has one,
        :attr:`conditional_write`); ``False`` when it exists."""
        return self._io(f"creating {self.uri(rel)}", lambda: put_bytes(self.fs, self.path(rel), data, exclusive=True),
                        writing=True)

    def probe_conditional_write(self) -> bool:
        """Whether the store really refuses a second exclusive create of one path (``spadepis check``): a probe
        object is created twice and removed. ``False`` where the filesystem has no conditional write at all or the
        store ignores ``If-None-Match: *``: there, the first commit and the lease takeover are check-then-write."""
        if not self.conditional_write:
            return False
        rel = f".write-check-cond-{uuid.uuid4().hex[:12]}"
        created: list[str] = []  # folders the probe makes, removed again: `spadepis check` leaves nothing behind
        if not self.is_object_store:
            folder = self.root
            while folder and folder != "/" and not self.fs.exists(folder):
                created.append(folder)
                folder = folder.rsplit("/", 1)[0]
        try:
            first = self.create_bytes(rel, b"1")
            second = self.create_bytes(rel, b"2")
        finally:
            self._remove_quietly(rel)
            for folder in created:  # deepest first
                try:
                    self.fs.rmdir(folder)
                except Exception:  # noqa: BLE001 - a folder someone else filled meanwhile stays
                    pass
        return first and not second

    @property
    def conditional_write(self) -> bool:
        """Whether :meth:`create_bytes` is a real conditional write here (else check-then-write)."""
        return has_conditional_write(self.fs)

    def read_bytes(self, rel: str) -> bytes:
        def _read() -> bytes:
            # one GET (cat_file), not a buffered file: a ranged read fails (FileExpired) when the object is
            # replaced between its HEAD and GET, as a lease being renewed or taken over is
            return self.fs.cat_file(self.path(rel))

        return self._io(f"reading {self.uri(rel)}", _read)

    def exists(self, rel: str) -> bool:
        return self._io(f"checking {self.uri(rel)}", lambda: self.fs.exists(self.path(rel)))

    # ------------------------------------------------------------------------------ run.json
    def write_run_record(self, record: dict[str, Any]) -> dict[str, Any]:
        """Write ``run.json`` once; a later run with the same run id must have the same config hash."""
        existing = self.read_run_record()
        if existing is not None:
            if existing.get("config_hash") != record.get("config_hash"):
                raise ConfigError(
                    f"run_id: {self.run_uri} already holds a run with another configuration (config hash "
                    f"{str(existing.get('config_hash'))[:12]} vs {str(record.get('config_hash'))[:12]}); resume it with "
                    "the same config, or choose a new run_id / output"
                )
            return existing
        self.write_bytes("run.json", json.dumps(record, indent=2, sort_keys=True, default=str).encode(), atomic=True)
        return record

    def read_run_record(self) -> dict[str, Any] | None:
        try:
            data = self.read_bytes("run.json")
        except FileNotFoundError:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return None  # truncated by a crash before it was complete: rewritten

    # ------------------------------------------------------------------------------ commit
    def marker(self, shard: int | str) -> dict[str, Any] | None:
        """The shard's valid commit marker, or ``None`` when the shard is not committed."""
        try:
            data = self.read_bytes(self.success_rel(shard))
        except FileNotFoundError:
            return None
        return self._valid_marker(_as_shard(shard), data)

    def _valid_marker(self, shard: str, data: bytes) -> dict[str, Any] | None:
        """The marker in ``data`` when it commits ``shard``: it parses, names ``manifest/<shard>/part-<its attempt>.parquet``
        (its own shard's folder, no other path), that part exists with the marker's size and sha256, and every row
        of the part carries ``shard_id == shard``. Otherwise ``None``, and :attr:`invalid_markers` says why."""
        try:
            marker = json.loads(data)
            part, attempt = marker["part"], marker["attempt_id"]
        except (ValueError, KeyError, TypeError):
            self.invalid_markers[shard] = "its marker is torn (not the JSON a commit writes)"
            return None
        if not isinstance(part, str) or not isinstance(attempt, str) or part != self.part_rel(shard, attempt) \
                or "/" in attempt or attempt.startswith("."):
            self.invalid_markers[shard] = f"its marker names {part!r}, not a part of attempt {attempt!r} in its own folder"
            return None
        try:
            data = self.read_bytes(part)
        except FileNotFoundError:
            self.invalid_markers[shard] = f"its part {part} is missing"
            return None
        if len(data) != int(marker.get("part_bytes", -2)) or hashlib.sha256(data).hexdigest() != marker.get("part_sha256"):
            # a damaged part (even of the right size) is no commit: the shard is redone
            self.invalid_markers[shard] = f"its part {part} does not match the marker's size / sha256 (damaged)"
            return None
        try:
            ids = set(pq.read_table(io.BytesIO(data), columns=["shard_id"]).column("shard_id").to_pylist())
        except Exception as exc:  # noqa: BLE001 - not a parquet file of the manifest
            self.invalid_markers[shard] = f"its part {part} is not a manifest part ({type(exc).__name__}: {exc})"
            return None
        if ids - {shard}:
            self.invalid_markers[shard] = f"its part {part} holds rows of other shards ({', '.join(sorted(map(str, ids - {shard})))})"
            return None
        self.invalid_markers.pop(shard, None)
        marker["shard"] = shard
        return marker

    def shard_names(self) -> list[str]:
        """Names of the shard folders under ``manifest/`` (a listing, never a glob: the run path is data)."""
        folder = self.path("manifest")
        try:
            names = self._io(f"listing {self.uri('manifest/')}", lambda: self.fs.ls(folder, detail=False))
        except FileNotFoundError:
            return []
        out = []
        for p in names:
            name = p.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith("shard="):
                out.append(name)
        return sorted(set(out))

    def committed_shards(self) -> dict[str, dict[str, Any]]:
        """``{shard name: marker}`` of every committed shard."""
        out: dict[str, dict[str, Any]] = {}
        for shard in self.shard_names():
            marker = self.marker(shard)
            if marker is not None:
                out[shard] = marker
        return out

    # ------------------------------------------------------------------------------ fencing
    def check_fence(self, fence: str | None, shard: str = "") -> None:
        """Raise :class:`LeaseLostError` unless the run folder's lease still has id ``fence`` (``None``: no check)."""
        if fence is None:
            return
        from .lease import LEASE, LeaseInfo, LeaseLostError

        try:
            current = LeaseInfo.from_json(self.read_bytes(LEASE))
        except FileNotFoundError:
            current = None
        if current is None or current.lease_id != fence:
            who = current.describe() if current else "nobody"
            raise LeaseLostError(
                f"{shard + ': ' if shard else ''}this run no longer holds the lease of {self.run_uri} (now {who}); "
                "the shard was not written. Run the same config again when the other run is done."
            )

    def commit_shard(self, shard: int | str, attempt_id: str, table: pa.Table, *, extra: dict[str, Any] | None = None,
                     fence: str | None = None) -> dict[str, Any]:
        """Write the part, then create the marker naming it (the commit) with a conditional write: the first
        attempt to create it wins; a later one removes only its own files and gets the winner's marker back with
        ``superseded_attempt`` set. ``fence``: the lease id this run holds, checked before the commit and
        recorded in the marker. Returns the marker."""
        shard = _as_shard(shard)
        if table.schema.remove_metadata() != SCHEMA.remove_metadata():
            raise ValueError(f"manifest part for {shard} does not have the manifest schema: {table.schema}")
        existing = self.marker(shard)
        if existing is not None:
            self.clean_attempt(shard, attempt_id)
            return {**existing, "superseded_attempt": attempt_id}
        self.check_fence(fence, shard)
        buf = io.BytesIO()
        pq.write_table(table.replace_schema_metadata(SCHEMA.metadata), buf, compression="zstd")
        data = buf.getvalue()
        part = self.part_rel(shard, attempt_id)
        self.write_bytes(part, data)
        status = table.column("status").to_pylist()
        marker = {
            "shard": shard,
            "part": part,
            "attempt_id": attempt_id,
            "rows": table.num_rows,
            "ok": status.count("ok"),
            "error": table.num_rows - status.count("ok"),
            "part_bytes": len(data),
            "part_sha256": hashlib.sha256(data).hexdigest(),
            "schema_version": SCHEMA_VERSION,
            "committed_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
            "lease_id": fence,
            **(extra or {}),
        }
        self.check_fence(fence, shard)
        body = json.dumps(marker, indent=1).encode()
        created = self.create_bytes(self.success_rel(shard), body)
        if not created and self.marker(shard) is None and self.exists(self.success_rel(shard)):
            # a marker that commits nothing (torn, or its part damaged): nobody reads it; retire it and try once more
            self.retire_marker(shard, self.invalid_markers.get(shard, "it does not commit the shard"), only_invalid=True)
            created = self.create_bytes(self.success_rel(shard), body)
        if not created:
            winner = self.marker(shard)
            self.clean_attempt(shard, attempt_id)
            if winner is None:  # a marker that does not commit (damaged): this attempt's files are gone, redo
                raise StorageError(f"{self.uri(self.success_rel(shard))} exists but does not commit {shard} "
                                   f"({self.invalid_markers.get(shard, '?')}); run `spadepis verify` / `spadepis run --verify`")
            return {**winner, "superseded_attempt": attempt_id,
                    "note": f"{shard} already committed by attempt {winner.get('attempt_id')}"}
        self.clean_shard(shard, keep_part=part)  # parts of crashed or losing attempts: the marker never names them
        return marker

    def retire_marker(self, shard: str, why: str, *, only_invalid: bool = False) -> None:
        """Un-commit ``shard`` so that a run redoes it (``run --verify`` on damaged outputs): the marker is kept as
        ``manifest/<shard>/_RETIRED-<attempt>.json`` with ``why``, then deleted. ``only_invalid``: leave a marker
        that commits the shard alone (another attempt may have just committed)."""
        try:
            data = self.read_bytes(self.success_rel(shard))
        except FileNotFoundError:
            return
        if only_invalid and self._valid_marker(shard, data) is not None:
            return
        try:
            old = json.loads(data)
        except ValueError:
            old = {}
        tag = layout.segment(str(old.get("attempt_id", "torn")))
        self.write_bytes(f"manifest/{shard}/_RETIRED-{tag}.json", json.dumps({**old, "retired_because": why}, indent=1).encode())
        self._remove_quietly(self.success_rel(shard))

    # ------------------------------------------------------------------------------ cleanup
    def _remove_quietly(self, rel_or_path: str, *, is_path: bool = False) -> bool:
        try:
            self.fs.rm(rel_or_path if is_path else self.path(rel_or_path))
            return True
        except Exception:  # noqa: BLE001 - cleanup never fails the work
            return False

    def orphans_of_shard(self, shard: int | str, keep_part: str | None) -> list[str]:
        """Parts in the shard's manifest folder that no marker names: parts other than ``keep_part`` (crashed or
        losing attempts). Temporary files (``*.tmp-*``) are not listed: one may be a racing attempt's write in
        flight; ``spadepis gc`` (holding the lease) removes them."""
        folder = self.path(f"manifest/{_as_shard(shard)}")
        try:
            names = self.fs.ls(folder, detail=False)
        except FileNotFoundError:
            return []
        keep = self.path(keep_part) if keep_part else None
        out = []
        for p in names:
            base = p.rstrip("/").rsplit("/", 1)[-1]
            if base.startswith("part-") and base.endswith(".parquet") and p.rstrip("/") != keep:
                out.append(p)
        return sorted(out)

    def clean_shard(self, shard: int | str, *, keep_part: str) -> list[str]:
        """Delete the shard's orphan parts and temporary files (best effort); returns what was deleted."""
        try:
            victims = self.orphans_of_shard(shard, keep_part)
        except Exception:  # noqa: BLE001
            return []
        return [p for p in victims if self._remove_quietly(p, is_path=True)]

    def clean_attempt(self, shard: int | str, attempt_id: str) -> None:
        """Delete what attempt ``attempt_id`` of ``shard`` wrote (its part and its output folders), nothing else
        (best effort); never call it for the attempt a marker names."""
        self._remove_quietly(self.part_rel(shard, attempt_id))
        for folder in self.attempt_folders(shard, attempt_id):
            try:
                self.fs.rm(self.path(folder), recursive=True)
            except Exception:  # noqa: BLE001 - cleanup never fails the work; gc finds what is left
                pass

    def read_part(self, marker: dict[str, Any]) -> pa.Table:
        data = self.read_bytes(marker["part"])
        if hashlib.sha256(data).hexdigest() != marker.get("part_sha256"):
            raise StorageError(f"{self.uri(marker['part'])}: content does not match its _SUCCESS.json sha256; re-run to redo the shard")
        return pq.read_table(io.BytesIO(data))

    # ------------------------------------------------------------------------------ index
    def merge_committed(self, markers: dict[str, dict[str, Any]] | None = None) -> pa.Table:
        markers = self.committed_shards() if markers is None else markers
        tables = [self.read_part(markers[s]) for s in sorted(markers)]
        if not tables:
            return SCHEMA.empty_table()
        merged = pa.concat_tables([upgrade_table(t).replace_schema_metadata(SCHEMA.metadata) for t in tables])
        return merged.replace_schema_metadata(SCHEMA.metadata)

    def write_index(self) -> pa.Table:
        """Merge the committed parts into ``index.parquet`` (what trainers read); returns the table."""
        markers = self.committed_shards()
        table = self.merge_committed(markers)
        meta = dict(SCHEMA.metadata)
        meta[b"spadepis.committed"] = json.dumps({s: m["attempt_id"] for s, m in sorted(markers.items())}).encode()
        table = table.replace_schema_metadata(meta)
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        self.write_bytes(INDEX, buf.getvalue(), atomic=True)
        return table

    def index_problem(self) -> str | None:
        """Why ``index.parquet`` cannot be read (damaged), or ``None`` (readable, or not written yet)."""
        try:
            data = self.read_bytes(INDEX)
        except FileNotFoundError:
            return None
        try:
            pq.read_table(io.BytesIO(data))
        except Exception as exc:  # noqa: BLE001 - any reader failure means the file is damaged
            return f"damaged ({type(exc).__name__}: {exc}); readers use the committed parts; the next run rewrites it"
        return None

    def read_manifest(self) -> pa.Table:
        """The index when it is up to date with the committed shards, else a merge of committed parts. A damaged
        index is named in a warning and the committed parts are read instead."""
        import warnings

        markers = self.committed_shards()
        try:
            data = self.read_bytes(INDEX)
        except FileNotFoundError:
            data = None
        if data is not None:
            try:
                table = pq.read_table(io.BytesIO(data))
            except Exception as exc:  # noqa: BLE001 - a damaged index must not hide the committed parts
                warnings.warn(f"{self.uri(INDEX)} is damaged ({type(exc).__name__}: {exc}); reading the committed "
                              "parts instead (a run of the same config rewrites the index)", stacklevel=2)
                table = None
            raw = (table.schema.metadata or {}).get(b"spadepis.committed") if table is not None else None
            if raw is not None and json.loads(raw) == {s: m["attempt_id"] for s, m in sorted(markers.items())}:
                return upgrade_table(table)
        if not markers and data is None and not self.exists("run.json"):
            raise FileNotFoundError(
                f"{self.run_uri}: no run here (no run.json, no committed shard); pass <output>/<run_id> of a run"
            )
        return self.merge_committed(markers)

    def schema_version(self) -> int | None:
        try:
            return table_schema_version(pq.read_schema(io.BytesIO(self.read_bytes(INDEX))))
        except FileNotFoundError:
            return None
