"""The embedded demo: generated label maps, bundled style photos, random-init SPADE, the real flow."""

from __future__ import annotations

import numpy as np
from PIL import Image

from spadepis.pipeline.demo import ADE20K, DEMO_STYLES, demo_config, make_label_maps, write_styles
from spadepis.pipeline.manifest import read_index


def test_label_maps_are_plausible_ade20k_scenes(tmp_path):
    paths = make_label_maps(tmp_path, 4, seed=3)
    again = make_label_maps(tmp_path / "again", 4, seed=3)
    for p, q in zip(paths, again):
        lab = np.asarray(Image.open(p))
        assert lab.shape == (256, 256) and lab.dtype == np.uint8
        assert np.array_equal(lab, np.asarray(Image.open(q)))  # seeded
        ids = set(np.unique(lab).tolist())
        assert ids <= set(ADE20K.values()) and ADE20K["sky"] in ids and len(ids) >= 4
        assert (lab[0] == ADE20K["sky"]).mean() > 0.5  # sky on top


def test_styles_come_from_the_installed_package(tmp_path):
    paths = write_styles(tmp_path)
    assert [p.stem for p in paths] == list(DEMO_STYLES)
    assert all(np.asarray(Image.open(p)).ndim == 3 for p in paths)


def test_demo_command_end_to_end(tmp_path, prefect_harness, capsys):
    from spadepis.cli import main
    from spadepis.devices import resolve_device
    from spadepis.pipeline.worker import get_synthesizer

    assert main(["demo", "--out", str(tmp_path), "--n-maps", "2"]) == 0
    out = capsys.readouterr().out
    assert "contact sheet" in out and "prefect server start" in out and "latest_net_G.pth" in out
    sheet = Image.open(tmp_path / "contact_sheet.png")
    assert sheet.size[0] > 6 * 128 and sheet.size[1] > 2 * 128  # label | synth | 4 styles, 2 rows
    df = read_index(str(tmp_path / "runs" / "demo"))
    assert len(df) == 8 and (df.status == "ok").all()
    assert (df.synth_model == "spade-ade20k random-init").all()
    cfg = demo_config(tmp_path)
    synth = get_synthesizer(cfg, resolve_device(cfg.device))  # the cached random-init model the flow used
    assert (df.synth_weights_sha256 == synth.sha256).all()
    assert set(df.stylizer) == {"color"} and set(df.smoothing) == {"exact"}
    assert cfg.run_uri == str(tmp_path / "runs" / "demo")
