"""A contact sheet for runs whose sources have different styles (``styles.select: semantic`` or ``random``).

One row per source: content (photo or synthesized) | label map | then, per chosen style in rank order,
the style photo and the output, each output captioned with its scores (:func:`score_caption`).

>>> style_sheet("runs/camvid-1a2b3c4d5e", "sheet.png", max_rows=8)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["score_caption", "label_colours", "style_sheet"]


def _fmt(value: Any, spec: str = ".2f") -> str:
    try:
        if value is None or value != value:
            return "-"
        return format(float(value), spec)
    except (TypeError, ValueError):
        return "-"


def score_caption(row: Any) -> list[str]:
    """Two short caption lines for one manifest row (a dict or a pandas row): selection, then quality.

    ``r0 s.97 cov1.00`` = style rank 0, style_score 0.97, q_coverage 1.00;
    ``st.71 sty.62 clip.01`` = q_structure, q_style, q_clipped. ``-`` marks a null score.
    """
    get = row.get if hasattr(row, "get") else (lambda k, d=None: getattr(row, k, d))
    rank = get("style_rank")
    rank_txt = "r-" if rank is None or rank != rank else f"r{int(rank)}"
    return [
        f"{rank_txt} s{_fmt(get('style_score'))} cov{_fmt(get('q_coverage'))}",
        f"st{_fmt(get('q_structure'))} sty{_fmt(get('q_style'))} clip{_fmt(get('q_clipped'))}",
    ]


def label_colours(label: np.ndarray) -> np.ndarray:
    """A fixed, well-separated colour per label id (golden-ratio hues), ``(H, W, 3)`` uint8."""
    import colorsys

    ids = np.asarray(label).astype(np.int64)
    top = int(ids.max()) + 1 if ids.size else 1
    table = np.array([colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.65, 0.95) for i in range(top)]) * 255
    return table.astype(np.uint8)[ids]


def style_sheet(run_uri: str, out_path: str | Path, *, max_rows: int = 8, tile: int = 160, sources: list[str] | None = None) -> Path:
    """Write the sheet of a run (ok rows only) and return its path; ``sources`` picks which sources to show."""
    from ..data.images import open_image, read_rgb
    from .manifest import read_index

    df = read_index(run_uri)
    ok = df[df["status"] == "ok"].copy()
    ok["_rank"] = ok["style_rank"].fillna(1e9)
    ok = ok.sort_values(["source_id", "_rank", "style_id"])
    ids = sources if sources is not None else sorted(ok["source_id"].unique())[:max_rows]
    k = int(ok.groupby("source_id").size().max()) if len(ok) else 0
    th = int(tile * 3 / 4)
    pad, head, cap = 4, 16, 26
    cols = 2 + 2 * k
    width = cols * (tile + pad) + pad
    height = head + len(ids) * (th + cap + pad) + pad
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    titles = ["content", "label map"] + [t for i in range(k) for t in (f"style #{i + 1}", f"output #{i + 1}")]
    for c, title in enumerate(titles):
        draw.text((pad + c * (tile + pad), 2), title, fill=(0, 0, 0))

    def put(img: np.ndarray, r: int, c: int) -> tuple[int, int]:
        x, y = pad + c * (tile + pad), head + r * (th + cap + pad)
        sheet.paste(Image.fromarray(np.asarray(img, dtype=np.uint8)).resize((tile, th), Image.BILINEAR), (x, y))
        return x, y + th + 1

    for r, source in enumerate(ids):
        rows = ok[ok["source_id"] == source]
        if not len(rows):
            continue
        first = rows.iloc[0]
        x, y = put(read_rgb(first["synth_uri"]), r, 0)
        draw.text((x, y), str(source)[:24], fill=(0, 0, 0))
        put(label_colours(np.asarray(open_image(first["label_uri"]))), r, 1)
        for i, (_, row) in enumerate(rows.iterrows()):
            x, y = put(read_rgb(row["style_uri"]), r, 2 + 2 * i)
            draw.text((x, y), str(row["style_id"])[:24], fill=(0, 0, 0))
            x, y = put(read_rgb(row["image_uri"]), r, 3 + 2 * i)
            for j, line in enumerate(score_caption(row)):
                draw.text((x, y + 12 * j), line, fill=(0, 0, 0))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_path)
    return out_path
