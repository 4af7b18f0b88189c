"""The shard writer: where one shard attempt's files go, and its commit.

The worker hands every output to a :class:`ShardWriter` and, at the end, the shard's rows: the writer
encodes nothing and decides no names of its own; it puts bytes at the storage layout's places
(:class:`~spadepis.pipeline.storage.RunStorage`: ``labels/``, ``synth/``, ``images/`` of the shard) and
commits the rows as the shard's manifest part plus the ``_SUCCESS.json`` marker naming it
(img2dataset's writer role: the worker never touches the storage itself). Every file goes into folders
only this attempt writes (``<shard>/<attempt_id>/``), so a duplicate or stalled attempt never changes a
byte a committed row points to.

A file name the storage refuses (too long for the filesystem) becomes that item's :class:`InputError`,
so one bad name never takes its neighbours down; every other storage failure propagates as
:class:`StorageError` and the shard is retried.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from ..errors import InputError, StorageError
from .failures import classify
from .schema import rows_to_table
from .storage import RunStorage

__all__ = ["ShardWriter"]


class ShardWriter:
    """Writes the files of one attempt of shard ``shard`` into ``storage`` and commits its rows."""

    def __init__(self, storage: RunStorage, shard: str, attempt_id: str, *, fence: str | None = None) -> None:
        self.storage = storage
        self.shard = shard
        self.attempt_id = attempt_id
        self.fence = fence
        self.files: dict[str, list] = {}
        """``{run-relative path: [bytes, sha256]}`` of every file this attempt wrote (recorded in the marker)."""

    def _write(self, rel: str, data: bytes) -> str:
        try:
            uri = self.storage.write_bytes(rel, data)
            self.files[rel] = [len(data), hashlib.sha256(data).hexdigest()]
            return uri
        except StorageError as exc:
            if classify(exc).kind != "name-too-long":
                raise
            raise InputError(f"{self.storage.uri(rel)}: the storage refuses this file name ({exc.__cause__}); rename "
                             "the input file (shorter, plainer name)") from exc

    def write_label(self, source_id: str, png: bytes) -> str:
        """A label map pixel-aligned with the source's outputs: ``labels/<shard>/<attempt>/<source_id>.png``; its URI."""
        return self._write(self.storage.label_rel(self.shard, source_id, self.attempt_id), png)

    def write_synth(self, source_id: str, png: bytes) -> str:
        """The SPADE output of a source: ``synth/<shard>/<attempt>/<source_id>.png``; its URI."""
        return self._write(self.storage.synth_rel(self.shard, source_id, self.attempt_id), png)

    def write_image(self, source_id: str, style_id: str, png: bytes) -> str:
        """A stylized output: ``images/<shard>/<attempt>/<source_id>/<style_id>.png``; its URI."""
        return self._write(self.storage.image_rel(self.shard, source_id, style_id, self.attempt_id), png)

    def commit(self, rows: Sequence[dict[str, Any]], *, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write the rows as the shard's manifest part, then create the marker naming it (first commit wins, fenced
        by the lease id this run holds); returns the marker (the winner's, with ``superseded_attempt``, when
        another attempt committed first)."""
        extra = {**(extra or {}), "files": dict(sorted(self.files.items()))}
        return self.storage.commit_shard(self.shard, self.attempt_id, rows_to_table(rows), extra=extra, fence=self.fence)
