"""Looking at runs: the contact sheet (every source it claims, a header row of style photos, source ids),
``spadepis sheet``, the inline-thumbnail samples grid, help texts, and the label-range message."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from pipeline_helpers import make_inputs, small_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A committed run of 5 label maps (one bad) x 2 styles, made by the shard worker without Prefect."""
    from spadepis.pipeline.plan import make_plan
    from spadepis.pipeline.worker import process_shard
    from spadepis.pipeline.storage import RunStorage

    root = tmp_path_factory.mktemp("sheet")
    make_inputs(root, n_maps=5, n_styles=2, bad=(2,))
    cfg = small_config(root, models={"smoothing": "fast"}).resolved()
    for shard in make_plan(cfg).shards:
        process_shard(cfg, shard)
    RunStorage(cfg.run_uri).write_index()
    return cfg


def _rows_with_content(sheet: np.ndarray, x0: int, x1: int) -> list[tuple[int, int]]:
    """Vertical runs of non-white pixels in columns x0..x1 (the tiles of one column)."""
    busy = (sheet[:, x0:x1] < 250).any(axis=(1, 2))
    runs, start = [], None
    for y, b in enumerate(busy):
        if b and start is None:
            start = y
        elif not b and start is not None:
            runs.append((start, y))
            start = None
    if start is not None:
        runs.append((start, len(busy)))
    return [r for r in runs if r[1] - r[0] >= 40]  # tiles, not text lines


def test_contact_sheet_shows_every_source_and_a_style_header(run, tmp_path):
    from spadepis.pipeline.sheet import contact_sheet, sheet_layout
    from spadepis.pipeline.manifest import read_index

    tile, pad = 64, 4
    data = contact_sheet(run.run_uri, str(tmp_path / "s.png"), tile=tile)
    assert (tmp_path / "s.png").read_bytes() == data
    sheet = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    lay = sheet_layout(read_index(run.run_uri))
    assert [r["source_id"] for r in lay["rows"]] == [f"m{i:03d}" for i in range(5)]  # all 5, the bad one too
    assert [s for s, _ in lay["styles"]] == ["style0", "style1"]
    # column 0 (label maps): one tile per source; column 2 (first style): the style photo + one per source
    label_col = _rows_with_content(sheet, pad, pad + tile)
    style_col = _rows_with_content(sheet, pad + 2 * (tile + pad), pad + 2 * (tile + pad) + tile)
    assert len(label_col) == 5, label_col
    assert len(style_col) == 6, style_col  # header photo + 5 rows (the bad source's cell says "error")
    assert style_col[0][1] <= label_col[0][0], "the style photos form a header row above the sources"
    # the header tile is the style photo itself (its mean colour), not an output
    style0 = np.asarray(Image.open(run.styles.source + "/style0.png").convert("RGB")).reshape(-1, 3).mean(0)
    y0, y1 = style_col[0]
    head = sheet[y0:y1, pad + 2 * (tile + pad): pad + 2 * (tile + pad) + tile].reshape(-1, 3)
    head = head[(head < 250).any(1)].mean(0)
    assert np.abs(head - style0).max() < 12, (head, style0)


def test_contact_sheet_says_when_it_shows_fewer_rows(run):
    from spadepis.pipeline.sheet import contact_sheet

    full = Image.open(io.BytesIO(contact_sheet(run.run_uri, tile=48)))
    cut = Image.open(io.BytesIO(contact_sheet(run.run_uri, max_rows=2, tile=48)))
    assert cut.size[1] < full.size[1] and cut.size[0] == full.size[0]


def test_sheet_command_writes_into_the_run(run, capsys):
    from spadepis.cli import main

    assert main(["sheet", run.run_uri]) == 0
    out = capsys.readouterr().out.strip()
    assert out == f"{run.run_uri}/contact_sheet.png"
    with Image.open(out) as im:
        assert im.size[1] > 5 * 64
    assert main(["sheet", run.run_uri + "-nope"]) == 1


def test_samples_grid_inline_thumbnails_fit_the_budget(run):
    from spadepis.pipeline.sheet import samples_grid_markdown

    md = samples_grid_markdown(run.run_uri, run.run_uri, budget_bytes=100_000)
    assert len(md.encode()) <= 100_000
    uris = re.findall(r"\(data:image/jpeg;base64,([A-Za-z0-9+/=]+)\)", md)
    assert len(uris) >= 2 + 4 * 2  # style header + label/synth/outputs of the first rows
    for u in uris[:3]:
        import base64

        with Image.open(io.BytesIO(base64.b64decode(u))) as im:
            assert im.format == "JPEG" and max(im.size) <= 72
    assert "style `style0`" in md and "`m000`" in md and "**error**" not in md.split("\n")[3]
    assert re.search(r"images/shard=00000/[^/`]+/m000/style0\.png", md) and run.run_uri + "/images" not in md  # run-relative
    small = samples_grid_markdown(run.run_uri, run.run_uri, budget_bytes=15_000)
    assert len(small.encode()) <= 15_000 + 2_000  # thumbnails shrink / rows drop; paths listed after


@pytest.mark.parametrize("command", ["check", "summary", "demo", "version", "run", "sheet"])
def test_pipeline_commands_have_help_texts(command, capsys):
    from spadepis.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    p = sub.choices[command]
    assert p.description and len(p.description) > 60, f"spadepis {command} --help has no description"
    for action in p._actions:
        if action.dest != "help":
            assert action.help, f"spadepis {command}: argument {action.dest!r} has no help text"
    listed = {a.dest: a.help for a in sub._choices_actions}
    assert listed.get(command), f"spadepis --help lists {command} without a help text"


def test_label_range_message_names_the_valid_ids(tmp_path):
    from spadepis.errors import InputError
    from spadepis.data.labelmaps import read_label_map
    from spadepis.data.presets import get_preset

    ade = get_preset("ade20k")
    lab = np.full((8, 8), 150, np.uint8)
    Image.fromarray(lab).save(tmp_path / "ok.png")
    assert read_label_map(str(tmp_path / "ok.png"), ade).max() == 150  # 150 is accepted ...
    lab[3, 4] = 151
    Image.fromarray(lab).save(tmp_path / "bad.png")
    with pytest.raises(InputError) as err:
        read_label_map(str(tmp_path / "bad.png"), ade)
    msg = str(err.value)
    assert "valid ids are 0..150 and 255" in msg, msg  # ... so the text says so
    assert "151" in msg and "0..149" not in msg


def test_contact_sheet_per_source_styles_with_scores(tmp_path):
    """Sources with their own chosen styles (select: random/semantic): each output beside its style photo,
    in rank order, captioned with its scores; a row without scores gets no caption."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    from spadepis.pipeline.sheet import contact_sheet, score_caption

    def png(name, colour, mode="RGB"):
        p = tmp_path / name
        Image.fromarray(np.full((32, 32, 3), colour, np.uint8)).save(p)
        return str(p)

    lab = tmp_path / "lab.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(lab)
    styles = {s: png(f"{s}.png", c) for s, c in {"s1": (255, 0, 0), "s2": (0, 255, 0), "s3": (0, 0, 255)}.items()}
    rows = []
    for src, chosen in {"a": ["s2", "s1"], "b": ["s3", "s2"]}.items():
        for rank, s in enumerate(chosen):
            rows.append(dict(source_id=src, style_id=s, style_uri=styles[s], label_uri=str(lab),
                             synth_uri=png(f"{src}.png", (128, 128, 128)), image_uri=png(f"{src}__{s}.png", (9, 9, 9)),
                             status="ok", style_rank=rank, style_score=0.9 - rank / 10, q_coverage=1.0,
                             q_structure=0.8, q_style=0.7, q_clipped=0.0))
    df = pd.DataFrame(rows)
    out = tmp_path / "sheet.png"
    contact_sheet(df, str(out), tile=64)
    img = np.asarray(Image.open(out).convert("RGB"))
    # layout: 2 + 2 slots x (style, output) columns of 64+4 px; source a's first style (rank 0) is s2 (green)
    pad, tile, title_h, text_h = 4, 64, 18, 14
    y = title_h + text_h + text_h + tile // 2
    assert tuple(img[y, pad + 2 * (tile + pad) + tile // 2]) == (0, 255, 0)
    assert tuple(img[y, pad + 4 * (tile + pad) + tile // 2]) == (255, 0, 0)  # rank 1: s1
    assert score_caption(rows[0]) == ["r0 s0.90 cov1.00", "st0.80 sty0.70 cl0.00"]
    assert score_caption({"style_rank": None, "q_structure": float("nan")}) == []


def _frame(tmp_path, per_source: dict[str, list[str]], *, pool: int, synth_model: str = "spade-ade20k",
           scores: bool = True, size: int = 96):
    """Manifest rows for sources with the given chosen styles (rank order) out of a pool of styles."""
    import pandas as pd

    rng = np.random.default_rng(0)

    def png(name):
        p = tmp_path / name
        if not p.exists():
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(p)
        return str(p)

    lab = tmp_path / "lab.png"
    Image.fromarray(np.zeros((size, size), np.uint8)).save(lab)
    styles = {f"s{i}": png(f"s{i}.png") for i in range(pool)}
    rows = []
    for src, chosen in per_source.items():
        for rank, sid in enumerate(chosen):
            row = dict(source_id=src, style_id=sid, style_uri=styles[sid], label_uri=str(lab), synth_model=synth_model,
                       synth_uri=png(f"{src}.png"), image_uri=png(f"{src}__{sid}.png"), status="ok")
            if scores:
                row.update(style_rank=rank, style_score=0.9 - rank / 10, q_coverage=1.0, q_structure=0.8,
                           q_style=0.7, q_clipped=0.0)
            rows.append(row)
    return pd.DataFrame(rows)


def _text_matches(sheet: np.ndarray, xy: tuple[int, int], text: str) -> bool:
    """Whether ``text`` is drawn at ``xy`` in the sheet (rendered with the same default font, compared pixelwise)."""
    from PIL import ImageDraw

    probe = Image.new("RGB", (sheet.shape[1], sheet.shape[0]), (255, 255, 255))
    ImageDraw.Draw(probe).text(xy, text, fill=(0, 0, 0))
    ink = np.asarray(probe).min(axis=2) < 128
    ys, xs = np.nonzero(ink)
    drawn = sheet[ys, xs].min(axis=1) < 160
    return bool(ink.any()) and drawn.mean() > 0.95


@pytest.mark.parametrize("synth_model,title", [("spade-ade20k random-init", "synthesized"), ("none (stylize-only)", "photo")])
def test_second_column_says_photo_in_stylize_only_runs(tmp_path, synth_model, title):
    from spadepis.pipeline.sheet import contact_sheet, samples_grid_markdown, sheet_layout

    df = _frame(tmp_path, {"a": ["s0", "s1"], "b": ["s0", "s1"]}, pool=2, synth_model=synth_model, scores=False)
    assert sheet_layout(df)["stylize_only"] is (title == "photo")
    img = np.asarray(Image.open(io.BytesIO(contact_sheet(df, tile=128))).convert("RGB"))
    pad, tile, title_h = 4, 128, 18
    assert _text_matches(img, (pad + (tile + pad), title_h), title)
    other = "synthesized" if title == "photo" else "photo"
    assert not _text_matches(img, (pad + (tile + pad), title_h), other)
    md = samples_grid_markdown(df, str(tmp_path))
    assert md.splitlines()[0].startswith(f"| source | label map | {title} | ")
    assert ("synthesized" in md) is (title == "synthesized")


def test_score_captions_come_with_their_key(tmp_path):
    from spadepis.pipeline.sheet import SCORE_KEY, contact_sheet, samples_grid_markdown

    df = _frame(tmp_path, {"a": ["s0", "s1"], "b": ["s0", "s1"]}, pool=2)
    img = np.asarray(Image.open(io.BytesIO(contact_sheet(df, tile=64))).convert("RGB"))
    pad, tile, title_h, text_h, cap_h = 4, 64, 18, 14, 26
    y_key = title_h + (text_h + tile + pad) + 2 * (text_h + tile + cap_h + pad)
    assert img.shape[1] >= 6 * len(SCORE_KEY)  # the key fits on its line
    assert _text_matches(img, (pad, y_key), SCORE_KEY)
    assert SCORE_KEY in samples_grid_markdown(df, str(tmp_path))
    unscored = _frame(tmp_path / "..", {"a": ["s0"]}, pool=1, scores=False)
    assert SCORE_KEY not in samples_grid_markdown(unscored, str(tmp_path))


def _table_width(md: str) -> int:
    """Widest row of the markdown table: per cell its widest thumbnail (or its longest word of text, ~7 px a
    character, since text wraps at spaces) plus the UI's cell padding."""
    import base64

    from spadepis.pipeline.sheet import _CELL_PAD

    widest = 0
    for line in md.splitlines():
        if not line.startswith("|") or set(line) <= set("|-"):
            continue
        total = 0
        for cell in line.strip("|").split("|"):
            images = re.findall(r"\(data:image/jpeg;base64,([A-Za-z0-9+/=]+)\)", cell)
            if images:
                w = max(Image.open(io.BytesIO(base64.b64decode(u))).size[0] for u in images)
            else:
                w = 7 * max((len(word) for word in cell.split()), default=0)
            total += w + _CELL_PAD
        widest = max(widest, total)
    return widest


@pytest.mark.parametrize("per_source,pool", [(4, 10), (9, 30), (1, 1)])
def test_samples_grid_of_per_source_styles_fits_1400_px_and_shows_scores(tmp_path, per_source, pool):
    from spadepis.pipeline.sheet import SAMPLES_MAX_WIDTH, samples_grid_markdown

    chosen = {f"src{k}": [f"s{(3 * k + j) % pool}" for j in range(per_source)] for k in range(3)}
    df = _frame(tmp_path, chosen, pool=pool)
    md = samples_grid_markdown(df, str(tmp_path), budget_bytes=400_000)
    assert _table_width(md) <= SAMPLES_MAX_WIDTH, md[:400]
    head = md.splitlines()[0]
    if per_source > 1 or pool > 1:
        assert "style #1 | output #1" in head
    # each source's best style first, next to its output, with its scores under them
    caption = "r0 s0.90 cov1.00 st0.80 sty0.70 cl0.00"
    assert (f"`s0` | {caption}" if pool > 1 else f"| | | | {caption} |") in md
    if per_source == 9:  # more than fit: the rest is named, not cut off at the edge
        assert re.search(r"first \d+ of 9 styles per source", md)
    n_outputs = len(re.findall(r"!\[src\d x s\d+\]", md))
    assert n_outputs >= 3 * min(per_source, 4)


def test_plan_text_counts_the_styles_each_source_gets():
    from spadepis.pipeline.ui import plan_text

    assert plan_text(6, [2] * 6, 367) == "6 sources x 2 styles each (chosen from a pool of 367) = 12 outputs"
    assert plan_text(4, [2] * 4, 2) == "4 sources x 2 styles each = 8 outputs"
    assert plan_text(1, [1], 1) == "1 source x 1 style each = 1 output"
    assert plan_text(3, [2, 3, 3], 5) == "3 sources x 2-3 styles each (chosen from a pool of 5) = 8 outputs"
