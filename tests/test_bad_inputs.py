"""Hostile inputs: decompression bombs and file names that cannot be stored as they are.

One bad item becomes error rows naming the file; its neighbours in the shard go on.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from pipeline_helpers import make_inputs, small_config
from spadepis.errors import InputError
from spadepis.data.images import open_image, set_max_image_pixels
from spadepis.pipeline.plan import make_plan
from spadepis.pipeline.worker import process_shard
from spadepis.pipeline.storage import RunStorage


def write_bomb_png(path: Path, side: int = 20000) -> Path:
    """A valid 1-bit greyscale PNG of side x side black pixels (a few tens of KB on disk)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def test_open_image_refuses_a_bomb_naming_the_file_and_the_field(tmp_path):
    bomb = write_bomb_png(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 600_000
    with pytest.raises(InputError, match=r"bomb\.png: image is 400 megapixels.*max_image_pixels"):
        open_image(bomb)
    try:
        set_max_image_pixels(1000)
        with pytest.raises(InputError, match="above the limit of 0 megapixels"):
            open_image(make_inputs(tmp_path, n_maps=1) / "labels" / "m000.png")
    finally:
        set_max_image_pixels(None)


def test_bomb_label_is_an_error_row_and_bomb_style_refused_by_name(tmp_path, capsys):
    root = make_inputs(tmp_path, n_maps=3, n_styles=2)
    write_bomb_png(root / "labels" / "m001.png")  # a label map
    write_bomb_png(root / "styles" / "style9.png")  # a style
    cfg = small_config(root, shard_size=3, models={"smoothing": "none"})
    shard = make_plan(cfg).shards[0]
    res = process_shard(cfg, shard)
    df = RunStorage(cfg.run_uri).merge_committed().to_pandas()
    assert len(df) == 9 and not res.skipped
    bad_label = df[df.source_id == "m001"]
    assert (bad_label.status == "error").all() and bad_label.error.str.contains("m001.png: image is 400 megapixels").all()
    bad_style = df[(df.style_id == "style9") & (df.source_id != "m001")]
    assert (bad_style.status == "error").all()
    assert bad_style.error.str.contains("style 'style9'").all() and bad_style.error.str.contains("style9.png").all()
    ok = df[(df.source_id != "m001") & (df.style_id != "style9")]
    assert len(ok) == 4 and (ok.status == "ok").all()
    # `spadepis check` names the style before the run
    import yaml

    from spadepis.cli import main

    path = tmp_path / "bomb.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    assert main(["check", str(path)]) == 0
    assert "style9.png is 400 megapixels, above max_image_pixels" in capsys.readouterr().out
    # the limit is a config field
    small = small_config(root, run_id="small-limit", max_image_pixels=1000, models={"smoothing": "none"})
    df2 = process_shard(small, make_plan(small).shards[0]) and RunStorage(small.run_uri).merge_committed().to_pandas()
    assert (df2.status == "error").all() and df2.error.str.contains("max_image_pixels").all()


def test_long_and_non_ascii_names_get_unique_bounded_readable_ids(tmp_path, capsys):
    import yaml

    from spadepis.cli import main
    from spadepis.pipeline.plan import MAX_ID_BYTES

    root = make_inputs(tmp_path, n_maps=2, n_styles=1)
    labels = root / "labels"
    for name in ("L" * 240 + ".png", "猫.png", "犬.png", "a b.png"):
        (labels / name).write_bytes((labels / "m000.png").read_bytes())
    (root / "styles" / "sunset_over_the_sea.png").write_bytes((root / "styles" / "style0.png").read_bytes())
    cfg = small_config(root, shard_size=6, models={"smoothing": "none"})
    plan = make_plan(cfg)
    ids = [s.source_id for s in plan.sources]
    assert len(ids) == len(set(ids)) == 6
    assert "猫" in ids and "犬" in ids  # readable characters of any script are kept
    assert all(len(i.encode()) <= MAX_ID_BYTES for i in ids)
    long_id = next(i for i in ids if i.startswith("LLLL"))
    assert len(long_id) < 240 and long_id[-9] == "-"  # shortened, with a short hash
    assert "a_b-" in " ".join(ids)

    path = tmp_path / "names.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), allow_unicode=True))
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "cannot be stored as they are" in out and long_id in out

    res = process_shard(cfg, plan.shards[0])  # every name, its neighbours included, is written
    df = RunStorage(cfg.run_uri).merge_committed().to_pandas()
    assert res.ok == 12 and len(df) == 12 and (df.status == "ok").all()
    assert all(Path(u).exists() for u in df.image_uri)


def test_a_name_the_filesystem_refuses_fails_only_its_own_rows(tmp_path):
    """A run folder so deep that only the long-named item's paths pass Linux's 4096-byte PATH_MAX:
    that item becomes error rows naming the problem, its neighbours are written and the shard commits."""
    import os

    root = make_inputs(tmp_path / "in", n_maps=2, n_styles=1)
    (root / "labels" / ("L" * 200 + ".png")).write_bytes((root / "labels" / "m000.png").read_bytes())
    deep = tmp_path / "out"
    target = 4000 - len("/runs")  # short names fit under 4096 bytes, the 96-byte id does not
    while len(str(deep).encode()) < target - 241:
        deep = deep / ("d" * 240)
    deep = deep / ("d" * (target - len(str(deep).encode()) - 1))
    os.makedirs(deep, exist_ok=True)
    cfg = small_config(root, output=str(deep / "runs"), shard_size=3, models={"smoothing": "none"})
    res = process_shard(cfg, make_plan(cfg).shards[0])
    df = RunStorage(cfg.run_uri).merge_committed().to_pandas()
    long = df[df.source_id.str.startswith("LLLL")]
    assert len(df) == 3 and res.ok == 2 and len(long) == 1
    assert long.status.iloc[0] == "error" and "refuses this file name" in long.error.iloc[0]
    assert (df[~df.source_id.str.startswith("LLLL")].status == "ok").all()
