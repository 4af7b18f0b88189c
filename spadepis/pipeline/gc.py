"""``spadepis gc RUN``: delete what crashed attempts left in a run folder and nobody reads.

* parts in ``manifest/shard=N/`` that no valid ``_SUCCESS.json`` names (crashed or superseded attempts);
* ``*.tmp-*`` files of interrupted atomic writes and ``.write-check-*`` probes of ``spadepis check``;
* in committed shards, files under ``synth/``, ``images/`` and ``labels/`` that the committed part does
  not name (outputs of a crashed attempt the committed one did not reuse).

Outputs of shards that are not committed are kept: a resume redoes and overwrites them. A run folder
whose lease is live (a run is writing) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .storage import RunStorage
from .lease import LeaseHeldError, RunLease

__all__ = ["GcReport", "collect_garbage"]


@dataclass
class GcReport:
    run_uri: str
    removed: list[str] = field(default_factory=list)
    kept_uncommitted: list[str] = field(default_factory=list)
    dry_run: bool = False

    def describe(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        lines = [f"{self.run_uri}: {verb} {len(self.removed)} file(s) nobody reads"]
        lines += [f"  {p}" for p in self.removed[:20]] + ([f"  ... ({len(self.removed) - 20} more)"] if len(self.removed) > 20 else [])
        if self.kept_uncommitted:
            lines.append(f"kept {len(self.kept_uncommitted)} shard folder(s) not committed yet (a resume redoes them): "
                         + ", ".join(self.kept_uncommitted[:10]))
        return "\n".join(lines)


def _path_of(storage: RunStorage, uri: str | None) -> str | None:
    if not uri:
        return None
    if uri.startswith(("images/", "synth/", "labels/")):  # run-relative
        return storage.path(uri)
    from .manifest import resolve_uri

    # files the run wrote, named as older releases did (cwd-relative) or before the folder was moved: resolved
    # inside this run folder, so gc never takes them for unnamed outputs
    return storage.fs._strip_protocol(resolve_uri(uri, storage.run_uri)).rstrip("/")


def collect_garbage(run_uri: str, *, dry_run: bool = False) -> GcReport:
    """Find (and unless ``dry_run`` delete) the leftovers listed in the module docstring."""
    storage = RunStorage(run_uri)
    held = RunLease(storage).read()
    if held is not None and not held.expired() and not held.holder_dead_here():
        raise LeaseHeldError(f"{storage.run_uri} is in use by {held.describe()}; gc only cleans a run nobody is writing")
    report = GcReport(storage.run_uri, dry_run=dry_run)
    markers = storage.committed_shards()
    fs = storage.fs
    victims: set[str] = set()
    try:
        every = [p.rstrip("/") for p in fs.find(storage.root)]
    except FileNotFoundError:
        every = []
    for p in every:
        base = p.rsplit("/", 1)[-1]
        if ".tmp-" in base or base.startswith(".write-check-"):
            victims.add(p)
    shard_folders = sorted({p[len(storage.root) + 1:].split("/")[1] for p in every
                            if p[len(storage.root) + 1:].split("/")[0] in ("manifest", "images", "synth", "labels")
                            and p[len(storage.root) + 1:].count("/") >= 2})
    for shard in shard_folders:
        marker = markers.get(shard)
        victims.update(storage.orphans_of_shard(shard, marker["part"] if marker else None))
        if marker is None:
            report.kept_uncommitted.append(shard)
            continue
        table = storage.read_part(marker)
        named = {_path_of(storage, u) for col in ("image_uri", "synth_uri", "label_uri") for u in table.column(col).to_pylist()}
        for sub in ("images", "synth", "labels"):
            prefix = storage.path(f"{sub}/{shard}/")
            victims.update(p for p in every if p.startswith(prefix) and p not in named)
    report.removed = sorted(victims)
    if not dry_run:
        for p in report.removed:
            try:
                fs.rm(p)
            except FileNotFoundError:
                pass
    return report
