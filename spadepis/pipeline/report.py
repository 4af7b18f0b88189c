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
from .schema import SCHEMA_VERSION, STAGES
from .secrets import redact
from .plan import Plan

__all__ = ["redact", "file_sha256", "run_record", "summary_rows", "samples_markdown"]



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


def summary_rows(s: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the summary table artifact from :func:`spadepis.pipeline.manifest.summary` output."""
    rows: list[dict[str, Any]] = [
        {"metric": "outputs ok", "value": s["ok"]},
        {"metric": "outputs error", "value": s["error"]},
        {"metric": "shards committed", "value": s["shards"]},
        {"metric": "outputs/s (ok outputs / their summed stage time)",
         "value": round(s["outputs_per_s"], 3) if s["outputs_per_s"] == s["outputs_per_s"] else "n/a"},
    ]
    for stage in STAGES:
        v = s["stages"][stage]
        rows.append({"metric": f"{stage} p50 / p95", "value": f"{v['p50']:.1f} / {v['p95']:.1f}"})
    return rows


def samples_markdown(run_uri: str, samples: list[dict[str, Any]], failures: dict[str, str], s: dict[str, Any]) -> str:
    """Markdown report: up to 8 sample outputs, the failed shards and the first error rows."""
    lines = [f"# spadepis run `{run_uri}`", "", f"{s['ok']} ok, {s['error']} error rows; index: `{run_uri}/index.parquet`", ""]
    samples = samples[:8]
    if samples:
        lines += ["| source | style | label map | synthesized | output |", "|---|---|---|---|---|"]
        for x in samples:
            lines.append(f"| {x['source_id']} | {x['style_id']} | `{x['label_uri']}` | `{x['synth_uri']}` | `{x['image_uri']}` |")
    if failures:
        lines += ["", "## Failed shards", ""] + [f"- `{k}`: {v}" for k, v in sorted(failures.items())]
    if s["errors"]:
        lines += ["", "## Error rows (first)", ""] + [f"- {e['shard_id']} {e['source_id']} x {e['style_id']}: {e['error']}" for e in s["errors"]]
    lines += ["", "Read it: `pandas.read_parquet('<run>/index.parquet')` or `spadepis summary <run>`."]
    return "\n".join(lines)
