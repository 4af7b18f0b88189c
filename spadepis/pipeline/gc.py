"""``spadepis gc RUN``: delete what crashed attempts left in a run folder and nobody reads.

* parts in ``manifest/shard=N/`` that no valid ``_SUCCESS.json`` names (crashed or superseded attempts);
* ``*.tmp-*`` files of interrupted atomic writes and ``.write-check-*`` probes of ``spadepis check``;
* in committed shards, files under ``synth/``, ``images/`` and ``labels/`` that the committed part does
  not name (outputs of a crashed attempt the committed one did not reuse).

Only what no valid marker names is deleted: outputs of shards that are not committed are kept (a resume
redoes them in a new attempt's folders). A run folder whose lease is live (a run is writing) is refused, and
gc holds the lease itself from its listing to its last deletion. Paths are listed, never globbed.
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


def _named_by(storage: RunStorage, marker: dict) -> set[str]:
    """Run-relative paths a valid marker keeps: its part, the files it recorded, the files its rows name."""
    from .manifest import run_relative_path

    named = {marker["part"], *(marker.get("files") or {})}
    table = storage.read_part(marker)
    for row in table.select(["run_id", "image_uri", "synth_uri", "label_uri"]).to_pylist():
        for col in ("image_uri", "synth_uri", "label_uri"):
            rel = run_relative_path(row[col], storage.run_uri, row["run_id"])
            if rel is not None:
                named.add(rel)
    return named


def collect_garbage(run_uri: str, *, dry_run: bool = False, ttl_s: float = 120.0) -> GcReport:
    """Find (and unless ``dry_run`` delete) the leftovers listed in the module docstring. Deleting holds the run
    folder's lease from the listing to the last deletion, so no run can commit meanwhile; a dry run only reads."""
    storage = RunStorage(run_uri)
    lease = RunLease(storage, ttl_s=ttl_s, owner="spadepis gc")
    if dry_run:
        held = lease.read()
        if held is not None and not held.expired() and not held.holder_dead_here():
            raise LeaseHeldError(f"{storage.run_uri} is in use by {held.describe()}; gc only cleans a run nobody is writing")
    else:
        try:
            lease.acquire()
        except LeaseHeldError as exc:
            raise LeaseHeldError(f"gc only cleans a run nobody is writing: {exc}") from None
    try:
        report = _collect(storage, dry_run)
        if not dry_run:
            storage.check_fence(lease.info.lease_id if lease.info else None)  # still ours: nothing committed meanwhile
            for p in report.removed:
                try:
                    storage.fs.rm(p)
                except FileNotFoundError:
                    pass
        return report
    finally:
        if not dry_run:
            lease.release()


def _collect(storage: RunStorage, dry_run: bool) -> GcReport:
    report = GcReport(storage.run_uri, dry_run=dry_run)
    markers = storage.committed_shards()
    root = storage.root + "/"
    try:
        every = [p.rstrip("/") for p in storage.fs.find(storage.root)]
    except FileNotFoundError:
        every = []
    rels = [p[len(root):] for p in every if p.startswith(root)]
    victims: set[str] = set()
    by_shard: dict[str, list[str]] = {}
    for rel in rels:
        base = rel.rsplit("/", 1)[-1]
        if ".tmp-" in base or base.startswith(".write-check-"):
            victims.add(rel)
            continue
        parts = rel.split("/")
        if len(parts) >= 3 and parts[0] in ("manifest", "images", "synth", "labels") and parts[1].startswith("shard="):
            by_shard.setdefault(parts[1], []).append(rel)
    for shard, files in sorted(by_shard.items()):
        marker = markers.get(shard)
        if marker is None:  # not committed (or its marker does not hold): a resume redoes it; only parts go
            report.kept_uncommitted.append(shard)
            victims.update(r for r in files if r.startswith("manifest/") and r.rsplit("/", 1)[-1].startswith("part-"))
            continue
        named = _named_by(storage, marker)
        for rel in files:
            base = rel.rsplit("/", 1)[-1]
            if rel.startswith("manifest/"):
                if base.startswith("part-") and base.endswith(".parquet") and rel not in named:
                    victims.add(rel)
            elif rel not in named:
                victims.add(rel)
    report.removed = sorted(storage.path(r) for r in victims)
    return report
