"""``spadepis verify RUN``: check every committed row's files against what the commit recorded.

For each committed shard (a valid ``_SUCCESS.json``), every file its rows name inside the run folder
(``image_uri``, ``synth_uri``, ``label_uri``) must exist with the size and sha256 the marker recorded for it
(``files``), and each ok row's image must match the row's ``sha256``. A marker that does not commit its shard
(torn, naming another shard's or a foreign part, a damaged part) and a damaged ``index.parquet`` are named too.
``spadepis run CONFIG --verify`` redoes the shards with damaged files; :class:`~.manifest.AugmentedDataset`
with ``verify=True`` checks each image it serves.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from .storage import RunStorage

__all__ = ["VerifyReport", "verify_run", "run_relative"]


@dataclass
class VerifyReport:
    run_uri: str
    shards: int = 0
    files: int = 0
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (shard or "", uri, what is wrong)

    @property
    def ok(self) -> bool:
        return not self.problems

    def damaged_shards(self) -> set[str]:
        return {s for s, _, _ in self.problems if s}

    def problems_of(self, shard: str) -> list[str]:
        return [f"{uri}: {what}" for s, uri, what in self.problems if s == shard]

    def headline(self) -> str:
        if self.ok:
            return f"{self.run_uri}: {self.files} file(s) of {self.shards} committed shard(s) verified, all match"
        return (f"{self.run_uri}: {len(self.problems)} problem(s) in {len(self.damaged_shards())} shard(s) "
                f"({self.files} file(s) of {self.shards} committed shard(s) checked)")

    def describe(self, limit: int = 50) -> str:
        lines = [self.headline()]
        for shard, uri, what in self.problems[:limit]:
            lines.append(f"  {shard or '-'} {uri}: {what}")
        if len(self.problems) > limit:
            lines.append(f"  ... ({len(self.problems) - limit} more)")
        if not self.ok:
            lines.append("redo the damaged shards with `spadepis run CONFIG --verify` (the same config as the run)")
        return "\n".join(lines)


def run_relative(storage: RunStorage, uri: str | None, run_id: str | None = None) -> str | None:
    """The run-relative path (``images/shard=.../...``) of a manifest URI that names a file of this run, else
    ``None`` (see :func:`spadepis.pipeline.manifest.run_relative_path`)."""
    from .manifest import run_relative_path

    return run_relative_path(uri, storage.run_uri, run_id)


def _check(storage: RunStorage, rel: str, size: int | None, sha: str | None) -> str | None:
    try:
        data = storage.read_bytes(rel)
    except FileNotFoundError:
        return "missing"
    if size is not None and len(data) != int(size):
        return f"size {len(data)} bytes, committed {size} (truncated or replaced)"
    if sha is not None and hashlib.sha256(data).hexdigest() != sha:
        return "sha256 does not match the committed one (damaged or replaced)"
    return None


def verify_run(storage: RunStorage | str, *, markers: dict[str, dict[str, Any]] | None = None) -> VerifyReport:
    """Check the committed files of a run (see the module docstring); never changes anything."""
    storage = storage if isinstance(storage, RunStorage) else RunStorage(storage)
    markers = storage.committed_shards() if markers is None else markers
    report = VerifyReport(storage.run_uri, shards=len(markers))
    for shard, why in sorted(storage.invalid_markers.items()):
        report.problems.append((shard, storage.uri(storage.success_rel(shard)), f"marker does not commit the shard: {why}"))
    for shard, marker in sorted(markers.items()):
        recorded: dict[str, list] = marker.get("files") or {}
        table = storage.read_part(marker)
        expect: dict[str, tuple[int | None, str | None]] = {}
        for row in table.select(["run_id", "image_uri", "synth_uri", "label_uri", "sha256", "status"]).to_pylist():
            for col in ("image_uri", "synth_uri", "label_uri"):
                rel = run_relative(storage, row[col], row["run_id"])
                if rel is None:
                    continue  # a source file outside the run (the user's label map): not the run's to verify
                size, sha = recorded.get(rel, (None, None))
                if col == "image_uri" and row["status"] == "ok" and row["sha256"]:
                    sha = row["sha256"]
                expect.setdefault(rel, (size, sha))
        for rel, (size, sha) in sorted(expect.items()):
            report.files += 1
            problem = _check(storage, rel, size, sha)
            if problem:
                report.problems.append((shard, storage.uri(rel), problem))
    problem = storage.index_problem()
    if problem:
        report.problems.append(("", storage.uri("index.parquet"), problem))
    return report
