"""Looking at a run: the contact sheet (a PNG) and small inline thumbnails (data URIs) for reports.

Both are laid out the same way: a header row with the style photos, then one row per source
(its id, the label map in colour, the synthesized image, then one output per style). The pipeline
uses them after a run (``spadepis run`` / ``spadepis demo`` write ``contact_sheet.png`` into the
run folder's parent or where asked; ``spadepis sheet RUN`` makes one for any run), and the Prefect
flow embeds :func:`samples_grid_markdown` in its samples artifact. Library code: no Prefect here.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["colorize", "contact_sheet", "score_caption", "sheet_layout", "thumbnail_data_uri", "samples_grid_markdown",
           "run_relative", "SCORE_KEY", "content_title", "SAMPLES_MAX_WIDTH"]

SCORE_KEY = ("scores: r = style rank (0 = best), s = style_score, cov = q_coverage, st = q_structure, "
             "sty = q_style, cl = q_clipped; - = no score")
"""The key of :func:`score_caption`'s abbreviations, printed on every sheet and samples report that shows scores."""
SAMPLES_MAX_WIDTH = 1400
"""Widest the samples artifact's grid may be, in pixels of thumbnails plus cell padding (a Prefect UI page)."""
_CELL_PAD = 18  # horizontal padding per markdown table cell in the Prefect UI (px), counted against the width

# A few ADE20K classes get natural colours (the demo's scenes); the other ids a fixed random colour.
_NAMED_COLOURS = {3: (135, 190, 235), 5: (40, 120, 40), 10: (90, 170, 60), 22: (40, 90, 170), 27: (30, 70, 150),
                  7: (110, 110, 110), 2: (170, 120, 90), 17: (120, 100, 80), 47: (220, 200, 140)}


def colorize(labels: np.ndarray) -> np.ndarray:
    """A label map as RGB with a fixed colour per id (for looking at, not for training)."""
    ids = np.asarray(labels).astype(np.int64)
    rng = np.random.default_rng(12345)
    table = rng.integers(40, 256, size=(max(int(ids.max()) + 1 if ids.size else 1, 256), 3), dtype=np.int64).astype(np.uint8)
    for k, v in _NAMED_COLOURS.items():
        table[k] = v
    return table[np.clip(ids, 0, None)]


def run_relative(uri: str | None, run_uri: str) -> str:
    """``uri`` relative to the run folder when it lies inside it (``images/shard=00000/a__b.png``), else as is."""
    if not uri:
        return ""
    root = str(run_uri).rstrip("/") + "/"
    return uri[len(root):] if uri.startswith(root) else uri


# ------------------------------------------------------------------------------------------ layout


def sheet_layout(df, *, max_rows: int | None = None) -> dict[str, Any]:
    """What a sheet shows: ``styles`` ``[(style_id, style_uri)]``, ``rows`` (one per source, in id order)
    with ``source_id``, ``label_uri``, ``synth_uri`` and ``cells`` ``{style_id: row}`` (ok or error), and
    ``n_sources`` (all sources of the run, also when ``max_rows`` cut the rows)."""
    if len(df) == 0:
        return {"styles": [], "rows": [], "n_sources": 0, "stylize_only": False}
    df = df.sort_values(["source_id", "style_id"])
    styles = df.drop_duplicates("style_id")[["style_id", "style_uri"]].itertuples(index=False)
    styles = [(str(s), str(u)) for s, u in styles]
    sources = list(dict.fromkeys(df["source_id"]))
    rows = []
    for source in sources if max_rows is None else sources[:max_rows]:
        sub = df[df["source_id"] == source]
        ok = sub[sub["status"] == "ok"]
        first = (ok if len(ok) else sub).iloc[0]
        rows.append({
            "source_id": str(source),
            "label_uri": first["label_uri"],
            "synth_uri": first["synth_uri"] if isinstance(first["synth_uri"], str) else None,
            "cells": {str(r["style_id"]): r for _, r in sub.iterrows()},
        })
    stylize_only = "synth_model" in df and bool(len(df)) and all(
        str(m).startswith("none") for m in df["synth_model"].dropna().unique())
    return {"styles": styles, "rows": rows, "n_sources": len(sources), "stylize_only": stylize_only}


def content_title(layout: dict[str, Any]) -> str:
    """What the second column shows: ``synthesized`` (SPADE's output), or ``photo`` in stylize-only runs."""
    return "photo" if layout.get("stylize_only") else "synthesized"


def _label_rgb(uri: str) -> np.ndarray:
    from ..data.images import open_image

    img = open_image(uri)
    if img.mode in ("RGB", "RGBA"):  # colour-coded label maps are shown as they are
        return np.asarray(img.convert("RGB"))
    if img.mode in ("LA", "PA"):
        img = img.getchannel(0)
    return colorize(np.asarray(img))


def _tile(kind: str, uri: str | None, size: int) -> Image.Image | None:
    """A ``size`` x ``size`` thumbnail (aspect kept, letterboxed), or ``None`` when it cannot be read."""
    from ..errors import InputError
    from ..data.images import read_rgb

    if not uri:
        return None
    try:
        arr = _label_rgb(uri) if kind == "label" else read_rgb(uri)
    except (InputError, OSError, ValueError):
        return None
    img = Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8))
    scale = size / max(img.width, img.height)  # fit the tile (up or down), aspect kept
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                     Image.NEAREST if kind == "label" else Image.BILINEAR)
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    return canvas


def _placeholder(size: int, text: str) -> Image.Image:
    img = Image.new("RGB", (size, size), (245, 225, 225))
    ImageDraw.Draw(img).text((4, size // 2 - 6), text[: max(4, size // 7)], fill=(150, 0, 0))
    return img


# ------------------------------------------------------------------------------------------ the PNG


def _fmt(value: Any) -> str:
    try:
        return "-" if value is None or value != value else f"{float(value):.2f}"
    except (TypeError, ValueError):
        return "-"


def score_caption(row: Any) -> list[str]:
    """Two short caption lines for one manifest row (a dict or a pandas row); ``[]`` when it has no scores.

    ``r0 s0.97 cov1.00`` = style rank 0, style_score 0.97, q_coverage 1.00;
    ``st0.71 sty0.62 cl0.01`` = q_structure, q_style, q_clipped. ``-`` marks a null score.
    """
    get = row.get if hasattr(row, "get") else (lambda k, d=None: getattr(row, k, d))
    keys = ("style_rank", "style_score", "q_coverage", "q_structure", "q_style", "q_clipped")
    if all(_fmt(get(k)) == "-" for k in keys):
        return []
    rank = get("style_rank")
    rank_txt = "r-" if rank is None or rank != rank else f"r{int(rank)}"
    return [f"{rank_txt} s{_fmt(get('style_score'))} cov{_fmt(get('q_coverage'))}",
            f"st{_fmt(get('q_structure'))} sty{_fmt(get('q_style'))} cl{_fmt(get('q_clipped'))}"]


def contact_sheet(source, out_uri: str | None = None, *, max_rows: int | None = None, tile: int = 128,
                  sources: list[str] | None = None) -> bytes:
    """Render a run's contact sheet; write it to ``out_uri`` (path or fsspec URI) when given; return the PNG bytes.

    ``source`` is a run URI or a DataFrame of manifest rows; ``sources`` picks which sources to show. Every
    source gets a row unless ``max_rows`` says otherwise (then the title says "first N of M"). Each row starts
    with the source id, its label map and synthesized image (or photo). When every source was paired with
    every style, a header row shows the style photos and each column is one style; when sources got their
    own styles (``styles.select: random`` / ``semantic``), each output sits next to its style photo, in rank
    order. Outputs carry their scores (:func:`score_caption`) when the manifest has them; a failed output
    shows "error".
    """
    from .manifest import read_index

    df = read_index(source) if isinstance(source, str) else source
    if sources is not None:
        df = df[df["source_id"].isin(list(sources))]
    lay = sheet_layout(df, max_rows=max_rows)
    styles, rows = lay["styles"], lay["rows"]
    per_source = any(len(r["cells"]) < len(styles) for r in rows)
    slots = max((len(r["cells"]) for r in rows), default=0) if per_source else len(styles)
    scored = any(score_caption(c) for r in rows for c in r["cells"].values())
    pad, title_h, text_h = 4, 18, 14
    cap_h = 26 if scored else 0
    key_h = text_h if scored else 0
    cols = 2 + (2 * slots if per_source else slots)
    width = max(cols * (tile + pad) + pad, 320)
    header_h = text_h + (0 if per_source else tile + pad)  # column titles (+ style photos)
    row_h = text_h + tile + cap_h + pad
    if scored:  # the key must fit on one line
        width = max(width, 6 * len(SCORE_KEY) + 2 * pad)
    height = title_h + header_h + len(rows) * row_h + key_h + pad
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    shown = f"{len(rows)} source(s)" if len(rows) == lay["n_sources"] else f"first {len(rows)} of {lay['n_sources']} sources"
    content = content_title(lay)
    what = (f"{slots} chosen style(s) each: label map | {content} | style photo + output, by rank" if per_source
            else f"{len(styles)} style(s): label map | {content} | one output per style")
    draw.text((pad, 3), f"{shown} x {what}", fill=(0, 0, 0))

    def x_of(c: int) -> int:
        return pad + c * (tile + pad)

    def put_output(cell, x: int, y: int) -> None:
        img = _tile("photo", cell["image_uri"], tile) if cell["status"] == "ok" else None
        sheet.paste(img or _placeholder(tile, "error" if cell["status"] != "ok" else "missing"), (x, y))
        for j, line in enumerate(score_caption(cell)):
            draw.text((x, y + tile + 1 + 12 * j), line[: max(8, tile // 6)], fill=(0, 0, 0))

    y = title_h
    titles = ["label map", content] + (
        [t for i in range(slots) for t in (f"style #{i + 1}", f"output #{i + 1}")] if per_source
        else [f"style: {s}" for s, _ in styles])
    for c, title in enumerate(titles):
        draw.text((x_of(c), y), title[: max(8, tile // 7)], fill=(0, 0, 0))
    if not per_source:
        for c, (style_id, uri) in enumerate(styles):
            sheet.paste(_tile("photo", uri, tile) or _placeholder(tile, "unreadable"), (x_of(2 + c), y + text_h))
    y += header_h
    for row in rows:
        draw.text((x_of(0), y), row["source_id"][: max(8, cols * tile // 7)], fill=(0, 0, 80))
        ty = y + text_h
        sheet.paste(_tile("label", row["label_uri"], tile) or _placeholder(tile, "label?"), (x_of(0), ty))
        sheet.paste(_tile("photo", row["synth_uri"], tile) or _placeholder(tile, "no image"), (x_of(1), ty))
        if per_source:
            def rank(cell) -> float:
                r = cell.get("style_rank")
                return 1e9 if r is None or r != r else float(r)

            ordered = sorted(row["cells"].items(), key=lambda kv: (rank(kv[1]), kv[0]))
            for i, (style_id, cell) in enumerate(ordered):
                sheet.paste(_tile("photo", cell["style_uri"], tile) or _placeholder(tile, style_id), (x_of(2 + 2 * i), ty))
                draw.text((x_of(2 + 2 * i), ty + tile + 1), style_id[: max(8, tile // 6)], fill=(0, 0, 80))
                put_output(cell, x_of(3 + 2 * i), ty)
        else:
            for c, (style_id, _) in enumerate(styles):
                cell = row["cells"].get(style_id)
                if cell is not None:  # None: this source was not paired with this style
                    put_output(cell, x_of(2 + c), ty)
        y += row_h
    if scored:
        draw.text((pad, y), SCORE_KEY, fill=(60, 60, 60))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    data = buf.getvalue()
    if out_uri is not None:
        from ..data.fs import url_to_fs

        from ..data.buckets import put_bytes

        fs, path = url_to_fs(str(out_uri))
        put_bytes(fs, path, data)  # the one write path: atomic, never makedirs on an object store
    return data


# ------------------------------------------------------------------------------------------ data URIs


def thumbnail_data_uri(img: Image.Image, *, quality: int = 70) -> str:
    """``data:image/jpeg;base64,...`` of ``img`` (JPEG keeps inline thumbnails small)."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def samples_grid_markdown(source, run_uri: str, *, budget_bytes: int = 100_000, max_rows: int = 4,
                          thumb: int = 72, max_styles: int = 8, max_width: int = SAMPLES_MAX_WIDTH) -> str:
    """A markdown table laid out like the contact sheet, with inline JPEG thumbnails (data URIs).

    When every source was paired with every style: a header row with the style photos, then one row per source
    (up to ``max_rows``): id, label map, synthesized image (``photo`` in stylize-only runs), one output per style.
    When sources got their own styles (``styles.select: random`` / ``semantic``): per source its chosen styles
    in rank order, each style photo next to its output. Under each source row, a text row gives each output's
    scores (:func:`score_caption`, key below the table). The grid fits ``max_width`` pixels (thumbnails plus
    cell padding): thumbnails shrink, and styles beyond what fits at 48 px are left out (said below the table).
    Thumbnails then shrink, and rows are dropped, until the whole table fits in ``budget_bytes``. Below the
    table: the shown outputs' paths relative to the run folder.
    """
    from .manifest import read_index

    df = read_index(source) if isinstance(source, str) else source
    lay = sheet_layout(df, max_rows=max_rows)
    rows, n_styles = lay["rows"], len(lay["styles"])
    if not rows:
        return "_no outputs to show_"
    content = content_title(lay)
    per_source = any(len(r["cells"]) < n_styles for r in rows)
    min_thumb = 48
    fixed = 3  # source, label map, content
    fit = max(1, max_width // (min_thumb + _CELL_PAD) - fixed)  # columns left for styles/outputs at the smallest size

    def rank(cell) -> float:
        r = cell.get("style_rank")
        return 1e9 if r is None or r != r else float(r)

    if per_source:
        slots_all = max(len(r["cells"]) for r in rows)
        slots = min(slots_all, max_styles, max(1, fit // 2))
        styles = []
        ncols = fixed + 2 * slots
    else:
        styles = lay["styles"][: min(max_styles, fit)]
        slots_all, slots = n_styles, len(styles)
        ncols = fixed + len(styles)
    thumb = max(min_thumb, min(thumb, max_width // ncols - _CELL_PAD))
    scored = any(score_caption(c) for r in rows for c in r["cells"].values())
    cache: dict[tuple[str, str | None, int], str] = {}

    def cell(kind: str, uri: str | None, size: int, alt: str) -> str:
        key = (kind, uri, size)
        if key not in cache:
            img = _tile(kind, uri, size)
            cache[key] = "" if img is None else f"![{alt}]({thumbnail_data_uri(img)})"
        return cache[key] or f"_{alt}: unreadable_"

    def output(row, style_id: str, c, size: int) -> str:
        if c is None:
            return ""
        if c["status"] != "ok":
            return "**error**"
        return cell("photo", c["image_uri"], size, f"{row['source_id']} x {style_id}")

    def caption(c) -> str:
        return " ".join(score_caption(c)) if c is not None else ""

    def render(size: int, n_rows: int) -> str:
        if per_source:
            head = f"| source | label map | {content} | " + " | ".join(
                f"style #{i + 1} | output #{i + 1}" for i in range(slots)) + " |"
            lines = [head, "|" + "---|" * ncols]
        else:
            head = f"| source | label map | {content} | " + " | ".join(f"style `{sid}`" for sid, _ in styles) + " |"
            photos = "| _style photo_ | | | " + " | ".join(cell("photo", u, size, sid) for sid, u in styles) + " |"
            lines = [head, "|" + "---|" * ncols, photos]
        for row in rows[:n_rows]:
            start = (f"| `{row['source_id']}` | {cell('label', row['label_uri'], size, 'label')} | "
                     f"{cell('photo', row['synth_uri'], size, content)} | ")
            if per_source:
                ordered = sorted(row["cells"].items(), key=lambda kv: (rank(kv[1]), kv[0]))[:slots]
                ordered += [(None, None)] * (slots - len(ordered))
                outs = [f"{cell('photo', c['style_uri'], size, sid)} | {output(row, sid, c, size)}" if sid else " | "
                        for sid, c in ordered]
                notes = [f"`{sid}` | {caption(c)}" if sid else " | " for sid, c in ordered]
            else:
                cs = [(sid, row["cells"].get(sid)) for sid, _ in styles]
                outs = [output(row, sid, c, size) for sid, c in cs]
                notes = [caption(c) for _, c in cs]
            lines.append(start + " | ".join(outs) + " |")
            if scored or per_source:
                lines.append("| | | | " + " | ".join(notes) + " |")
        return "\n".join(lines)

    size, n_rows = thumb, len(rows)
    text = render(size, n_rows)
    while len(text.encode()) > budget_bytes and (size > 32 or n_rows > 1):
        if size > 32:
            size = max(32, int(size * 0.8))
        else:
            n_rows -= 1
        text = render(size, n_rows)
    shown = rows[:n_rows]
    if per_source:
        paths = [f"- `{run_relative(c['image_uri'], run_uri)}`" for row in shown
                 for _, c in sorted(row["cells"].items(), key=lambda kv: (rank(kv[1]), kv[0]))[:slots]
                 if c["status"] == "ok"]
    else:
        paths = [f"- `{run_relative(c['image_uri'], run_uri)}`" for row in shown for sid, _ in styles
                 if (c := row["cells"].get(sid)) is not None and c["status"] == "ok"]
    cut = [f"first {n_rows} of {lay['n_sources']} sources"] if n_rows < lay["n_sources"] else []
    if slots < slots_all:
        cut += [f"first {slots} of {slots_all} {'styles per source' if per_source else 'styles'}"]
    note = f"\n\n_{', '.join(cut)}; all of them: `spadepis sheet {run_uri} --max-rows 0`_" if cut else ""
    key = f"\n\n_{SCORE_KEY}_" if scored else ""
    listing = ["", "", f"Outputs shown (relative to `{run_uri}`):", "", *paths] if paths else []  # no heading over nothing
    return text + note + key + "\n".join(listing)
