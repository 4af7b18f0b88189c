"""What a run records about itself: ``run.json`` (frozen config, checksums, plan) and its reports.

Pure functions used by the flow (``spadepis/flows/augment.py``) to write ``run.json`` and to build the summary
table and the sample-outputs markdown it publishes as Prefect artifacts.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from typing import Any

from .._version import __version__
from .config import RANDOM_INIT, RunConfig
from .schema import SCHEMA_VERSION
from .secrets import redact
from .plan import Plan

__all__ = ["redact", "file_sha256", "run_record"]



def file_sha256(uri: str) -> str | dict[str, str] | None:
    from ..data.fs import url_to_fs

    fs, path = url_to_fs(uri)
    if fs.isdir(path):
        return {p.rsplit("/", 1)[-1]: file_sha256(fs.unstrip_protocol(p)) for p in sorted(fs.find(path)) if p.endswith(".pth")}
    h = hashlib.sha256()
    with fs.open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_record(config: RunConfig, plan: Plan) -> dict[str, Any]:
    """What ``run.json`` holds: the frozen config (secrets redacted), checksums, plan size, versions."""
    m = config.models
    models: dict[str, Any] = {"stylizer": m.stylizer, "smoothing": m.smoothing}
    if config.stylize_only:
        models["synth"] = "none (stylize-only)"
    elif m.synth_checkpoint == RANDOM_INIT:
        models["synth"] = f"random-init (seed {m.synth_seed}, ngf {m.ngf or 16}); weights digest in the manifest"
    else:
        models["synth"] = m.synth_checkpoint
        models["synth_sha256"] = file_sha256(m.synth_checkpoint)
    if m.stylizer_weights:
        models["stylizer_sha256"] = file_sha256(m.stylizer_weights)
    return {
        "run_id": plan.run_id,
        "config": redact(config.model_dump(mode="json")),
        "config_hash": plan.config_hash,
        "schema_version": SCHEMA_VERSION,
        "spadepis_version": __version__,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "plan": {
            "sources": len(plan.sources),
            "styles": len(plan.styles),
            "shards": len(plan.shards),
            "samples": plan.n_samples,
            "shard_size": config.shard_size,
        },
        "models": models,
    }
