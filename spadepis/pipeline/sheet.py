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

__all__ = ["colorize", "contact_sheet", "score_caption", "sheet_layout", "thumbnail_data_uri", "samples_grid_markdown", "run_relative"]

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
        return {"styles": [], "rows": [], "n_sources": 0}
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
    return {"styles": styles, "rows": rows, "n_sources": len(sources)}


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
    cols = 2 + (2 * slots if per_source else slots)
    width = max(cols * (tile + pad) + pad, 320)
    header_h = text_h + (0 if per_source else tile + pad)  # column titles (+ style photos)
    row_h = text_h + tile + cap_h + pad
    height = title_h + header_h + len(rows) * row_h + pad
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    shown = f"{len(rows)} source(s)" if len(rows) == lay["n_sources"] else f"first {len(rows)} of {lay['n_sources']} sources"
    what = (f"{slots} chosen style(s) each: label map | synthesized | style photo + output, by rank" if per_source
            else f"{len(styles)} style(s): label map | synthesized | one output per style")
    draw.text((pad, 3), f"{shown} x {what}", fill=(0, 0, 0))

    def x_of(c: int) -> int:
        return pad + c * (tile + pad)

    def put_output(cell, x: int, y: int) -> None:
        img = _tile("photo", cell["image_uri"], tile) if cell["status"] == "ok" else None
        sheet.paste(img or _placeholder(tile, "error" if cell["status"] != "ok" else "missing"), (x, y))
        for j, line in enumerate(score_caption(cell)):
            draw.text((x, y + tile + 1 + 12 * j), line[: max(8, tile // 6)], fill=(0, 0, 0))

    y = title_h
    titles = ["label map", "synthesized"] + (
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
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    data = buf.getvalue()
    if out_uri is not None:
        import fsspec

        from ..data.buckets import put_bytes

        fs, path = fsspec.core.url_to_fs(str(out_uri))
        put_bytes(fs, path, data)  # the one write path: atomic, never makedirs on an object store
    return data


# ------------------------------------------------------------------------------------------ data URIs


def thumbnail_data_uri(img: Image.Image, *, quality: int = 70) -> str:
    """``data:image/jpeg;base64,...`` of ``img`` (JPEG keeps inline thumbnails small)."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def samples_grid_markdown(source, run_uri: str, *, budget_bytes: int = 100_000, max_rows: int = 4,
                          thumb: int = 72, max_styles: int = 8) -> str:
    """A markdown table laid out like the contact sheet, with inline JPEG thumbnails (data URIs).

    Header row: the style photos; one row per source (up to ``max_rows``): id, label map, synthesized,
    one output per style. Thumbnails shrink, then rows are dropped, until the whole table fits in
    ``budget_bytes``. Below the table: the shown outputs' paths relative to the run folder.
    """
    from .manifest import read_index

    df = read_index(source) if isinstance(source, str) else source
    lay = sheet_layout(df, max_rows=max_rows)
    rows, n_styles = lay["rows"], len(lay["styles"])
    styles = lay["styles"][:max_styles]
    if not rows:
        return "_no outputs to show_"
    cache: dict[tuple[str, str | None, int], str] = {}

    def cell(kind: str, uri: str | None, size: int, alt: str) -> str:
        key = (kind, uri, size)
        if key not in cache:
            img = _tile(kind, uri, size)
            cache[key] = "" if img is None else f"![{alt}]({thumbnail_data_uri(img)})"
        return cache[key] or f"_{alt}: unreadable_"

    def render(size: int, n_rows: int) -> str:
        head = "| source | label map | synthesized | " + " | ".join(f"style `{s}`" for s, _ in styles) + " |"
        sep = "|" + "---|" * (3 + len(styles))
        photos = "| _style photo_ | | | " + " | ".join(cell("photo", u, size, s) for s, u in styles) + " |"
        lines = [head, sep, photos]
        for row in rows[:n_rows]:
            outs = []
            for s, _ in styles:
                c = row["cells"].get(s)
                if c is None:
                    outs.append("")
                elif c["status"] != "ok":
                    outs.append("**error**")
                else:
                    outs.append(cell("photo", c["image_uri"], size, f"{row['source_id']} x {s}"))
            lines.append(f"| `{row['source_id']}` | {cell('label', row['label_uri'], size, 'label')} | "
                         f"{cell('photo', row['synth_uri'], size, 'synthesized')} | " + " | ".join(outs) + " |")
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
    paths = [f"- `{run_relative(c['image_uri'], run_uri)}`" for row in shown for s, _ in styles
             if (c := row["cells"].get(s)) is not None and c["status"] == "ok"]
    cut = [f"first {n_rows} of {lay['n_sources']} sources"] if n_rows < lay["n_sources"] else []
    cut += [f"first {len(styles)} of {n_styles} styles"] if len(styles) < n_styles else []
    note = f"\n\n_{', '.join(cut)}; all of them: `spadepis sheet {run_uri} --max-rows 0`_" if cut else ""
    listing = ["", "", f"Outputs shown (relative to `{run_uri}`):", "", *paths] if paths else []  # no heading over nothing
    return text + note + "\n".join(listing)
