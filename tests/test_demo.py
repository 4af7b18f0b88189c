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
    # the demo writes the config it ran; running it again resumes the same run (same config hash)
    from spadepis.pipeline.config import load_config

    ran = load_config(tmp_path / "demo.yaml")
    assert ran.config_hash == cfg.config_hash and ran.run_uri == cfg.run_uri
    assert f"spadepis run {tmp_path / 'demo.yaml'}" in out


def test_demo_config_makes_its_inputs_when_missing(tmp_path, monkeypatch):
    """configs/demo.yaml on a fresh checkout (no out/demo/inputs): checking it generates the inputs."""
    from spadepis.pipeline.config import load_config
    from spadepis.pipeline.plan import make_plan

    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    monkeypatch.chdir(tmp_path)  # relative paths of the config land here, as in a fresh deployment's checkout
    cfg = load_config(root / "configs" / "demo.yaml")
    assert cfg.dataset.demo_inputs and not (tmp_path / "out").exists()
    from spadepis.cli import main

    assert main(["check", str(root / "configs" / "demo.yaml")]) == 0
    assert len(list((tmp_path / "out/demo/inputs/labels").glob("*.png"))) == 12
    assert sorted(p.stem for p in (tmp_path / "out/demo/inputs/styles").glob("*.png")) == sorted(DEMO_STYLES)
    plan = make_plan(cfg)
    assert len(plan.sources) == 12 and len(plan.styles) == 4
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "out/demo/inputs").rglob("*.png")}
    assert main(["check", str(root / "configs" / "demo.yaml")]) == 0  # existing inputs are left alone
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out/demo/inputs").rglob("*.png")} == before
