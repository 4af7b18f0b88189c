"""What a run shows in the Prefect UI, as pure functions (the flow publishes them; no Prefect import here).

* :func:`summary_table`: one row per stage with numeric ms columns (p50, p95, mean) and the row count;
  :func:`summary_description`: models, device, sources x styles, counts, wall time (the table's caption);
* :func:`progress_text`: shards ok / failed / left;
* :func:`shard_log_line`: one line per shard (sources, ok/error, stage ms);
* :func:`completion_message`: the state message of a run that completed with error rows;
* :func:`run_tags`: ``preset:…``, ``stylizer:…``, ``run:…`` flow-run tags;
* :func:`timing_chart_png` / :func:`timing_chart_data_uri`: a per-stage timing chart (p50 and p95 bars).
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

__all__ = ["STAGE_NAMES", "summary_table", "summary_description", "progress_text", "shard_log_line", "plan_text",
           "nothing_to_do_message",
           "completion_message", "run_tags", "timing_chart_png", "timing_chart_data_uri", "failure_message",
           "samples_report"]

STAGE_NAMES = {"t_load_ms": "load", "t_synth_ms": "synthesize", "t_stylize_ms": "stylize", "t_smooth_ms": "smooth",
               "t_quality_ms": "quality", "t_write_ms": "write", "t_total_ms": "total"}


def _num(x: Any) -> float | None:
    """A finite float rounded to 0.1 ms, or ``None`` (shown empty, never ``nan``)."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return round(x, 1) if math.isfinite(x) else None


def summary_table(s: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the summary table artifact: ``stage``, ``p50_ms``, ``p95_ms``, ``mean_ms``, ``ok_outputs`` (numbers)."""
    return [{"stage": STAGE_NAMES.get(k, k), "p50_ms": _num(v["p50"]), "p95_ms": _num(v["p95"]),
             "mean_ms": _num(v["mean"]), "ok_outputs": s["ok"]} for k, v in s["stages"].items()]


def _wall(seconds: float | None) -> str:
    if not seconds or not math.isfinite(seconds):
        return "n/a"
    m, sec = divmod(seconds, 60)
    return f"{int(m)} min {sec:.0f} s" if m else f"{sec:.1f} s"


def plan_text(n_sources: int, per_source: list[int] | tuple[int, ...], pool: int) -> str:
    """``6 sources x 2 styles each (chosen from a pool of 367) = 12 outputs``: the styles each source gets, not
    the pool (``per_source``: the number of styles of every source)."""
    counts = sorted(set(int(k) for k in per_source)) or [0]
    total = sum(int(k) for k in per_source)
    each = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    style_word = "style" if counts == [1] else "styles"
    text = f"{n_sources} source{'' if n_sources == 1 else 's'} x {each} {style_word} each"
    if pool > counts[-1]:
        text += f" (chosen from a pool of {pool})"
    return f"{text} = {total} output{'' if total == 1 else 's'}"


def rate_text(s: dict[str, Any]) -> str:
    """The one outputs/s figure (:func:`spadepis.pipeline.manifest.outputs_per_s`), the same in ``run``,
    ``summary`` and the UI: ``0.31 outputs/s``, or ``""`` when there is none."""
    rate = s.get("outputs_per_s")
    return f"{rate:.2f} outputs/s" if isinstance(rate, float) and math.isfinite(rate) else ""


def nothing_to_do_message(n_shards: int, run_uri: str) -> str:
    """The state message and log line of a run whose shards were all committed by earlier runs."""
    return (f"nothing to do: {n_shards} shard(s) already committed in {run_uri} (an earlier run of this config made "
            "them); to make new outputs, run with another output folder or run_id")


def summary_description(s: dict[str, Any], *, run_id: str, plan: dict[str, Any], new_ok: int, failed: int) -> str:
    """The summary's caption: what ran on what, how much, how long."""
    models = s.get("models") or {}
    rate = rate_text(s)
    rate = f", {rate}" if rate else ""
    planned = plan.get("text") or f"{plan['sources']} sources, {plan['samples']} outputs"
    parts = [
        f"run {run_id}: {s['ok']} ok, {s['error']} error rows",
        f"{planned} planned in {plan['shards']} shard(s)" + (f", {failed} failed" if failed else ""),
        f"models: {', '.join(models.get('synth_model') or ['-'])} | {', '.join(models.get('stylizer') or ['-'])} | "
        f"smoothing {', '.join(models.get('smoothing') or ['-'])}",
        f"device {', '.join(models.get('device') or ['-'])}",
        f"wall time {_wall(s.get('wall_s'))}, {new_ok} new outputs{rate}",
        "stage times in ms per output (ok rows)",
    ]
    return "; ".join(parts)


def progress_text(ok: int, failed: int, total: int) -> str:
    left = total - ok - failed
    return f"{ok}/{total} shards committed, {failed} failed" + (f", {left} to go" if left > 0 else "")


def shard_log_line(result: Any) -> str:
    """``shard=00003: 4 sources, 14 ok / 2 error; ms load 3 synth 41 stylize 9 smooth 120 write 6; 2.3 s``."""
    if getattr(result, "skipped", False):
        return f"{result.shard}: already committed ({result.ok} ok / {result.error} error), skipped"
    stages = getattr(result, "stage_ms", None) or {}
    ms = " ".join(f"{STAGE_NAMES.get(k, k).replace('synthesize', 'synth')} {v:.0f}" for k, v in stages.items()
                  if k != "t_total_ms")
    sources = getattr(result, "sources", None)
    src = f"{sources} source{'' if sources == 1 else 's'}, " if sources is not None else ""
    return (f"{result.shard}: {src}{result.ok} ok / {result.error} error; stage ms (sum over outputs) "
            f"{ms or 'n/a'}; {result.wall_s:.1f} s")


def completion_message(s: dict[str, Any]) -> str | None:
    """The state message of a run that completed but has error rows (``None`` when every row is ok)."""
    if not s["error"]:
        return None
    first = s["errors"][0]["error"] if s["errors"] else ""
    return (f"completed with {s['error']} error row(s) from {s.get('error_sources', '?')} source(s) and {s['ok']} ok; "
            f"first: {first[:300]} (see the summary artifact or spadepis summary)")


def failure_message(failures: dict[str, str], total: int, committed: int, run_uri: str) -> str:
    """Why the run ends Failed: the failed shards first, then what is committed (only when something is)."""
    names = ", ".join(sorted(failures))
    first = failures[sorted(failures)[0]]
    if committed:
        rest = f"{committed} other shard(s) are committed in {run_uri}"
    else:
        rest = f"no shard is committed in {run_uri}"
    return (f"{len(failures)} of {total} shard(s) failed after their retries: {names} (first: {first}). {rest}; fix "
            "the cause and run the same config again to resume.")


def _tag(value: str) -> str:
    return "".join(c if c.isalnum() or c in "._-/" else "-" for c in str(value))[:60]


def run_tags(config: Any, run_id: str) -> list[str]:
    """Flow-run tags that make runs findable in the UI's filters."""
    return [f"preset:{_tag(config.dataset.preset)}", f"stylizer:{_tag(config.models.stylizer)}", f"run:{_tag(run_id)}"]


# --------------------------------------------------------------------------------------- chart


def timing_chart_png(s: dict[str, Any], *, title: str = "") -> bytes:
    """A horizontal bar chart of each stage's p50 (solid) and p95 (light) in ms per output, as PNG bytes."""
    from PIL import Image, ImageDraw

    stages = [(STAGE_NAMES.get(k, k), _num(v["p50"]), _num(v["p95"]))
              for k, v in s["stages"].items() if k != "t_total_ms"]
    width, left, right, bar_h, gap, top = 560, 90, 70, 16, 10, 30
    height = top + len(stages) * (bar_h + gap) + 30
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.text((8, 8), (title or "stage time per output") + "  (ms; dark p50, light p95)", fill=(0, 0, 0))
    top_ms = max([p95 for _, _, p95 in stages if p95 is not None] + [1e-9])
    scale = (width - left - right) / top_ms
    for i, (name, p50, p95) in enumerate(stages):
        y = top + i * (bar_h + gap)
        draw.text((8, y + 2), name, fill=(0, 0, 0))
        if p50 is None or p95 is None:  # no ok output timed this stage: no bar (a 0 ms bar would say it took no time)
            draw.text((left, y + 2), "n/a", fill=(120, 120, 120))
            continue
        draw.rectangle([left, y, left + max(1, int(p95 * scale)), y + bar_h], fill=(170, 200, 240))
        draw.rectangle([left, y + 3, left + max(1, int(p50 * scale)), y + bar_h - 3], fill=(40, 90, 170))
        draw.text((left + int(p95 * scale) + 6, y + 2), f"{p50:.0f} / {p95:.0f}", fill=(60, 60, 60))
    if not s["ok"]:
        draw.text((left, height - 22), "no ok outputs in this run: nothing to time", fill=(150, 0, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def timing_chart_data_uri(s: dict[str, Any], *, title: str = "") -> str:
    return "data:image/png;base64," + base64.b64encode(timing_chart_png(s, title=title)).decode("ascii")


def samples_report(run_uri: str, df, failures: dict[str, str], s: dict[str, Any], *, budget_bytes: int = 100_000) -> str:
    """The samples artifact: a grid like the contact sheet with inline thumbnails (run-relative paths below it),
    then the failed shards and the error rows (once per source)."""
    from .manifest import _styles_text, resolve_uris
    from .sheet import samples_grid_markdown

    lines = [f"# run `{run_uri}`", "",
             f"{s['ok']} ok, {s['error']} error rows; index `index.parquet`; contact sheet: `spadepis sheet {run_uri}`", ""]
    if failures:
        lines += ["## Failed shards", ""] + [f"- `{k}`: {v[:400]}" for k, v in sorted(failures.items())] + [""]
    tail = []
    if s["errors"]:
        tail += ["", f"## Error rows ({s['error']} row(s) from {s.get('error_sources', '?')} source(s); once per source)", ""]
        tail += [f"- {e['shard_id']} `{e['source_id']}` x {_styles_text(e)}: {str(e['error'])[:300]}" for e in s["errors"]]
    tail += ["", "Read it: `from spadepis import read_index; read_index(run)` or `spadepis summary <run>`."]
    head_tail = "\n".join(lines + tail)
    grid = samples_grid_markdown(resolve_uris(df, run_uri), run_uri, budget_bytes=max(10_000, budget_bytes - len(head_tail.encode())))
    return "\n".join(lines) + "\n" + grid + "\n" + "\n".join(tail)
