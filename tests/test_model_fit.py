"""Models against the run's data, before any work: checkpoint shapes vs the preset (no model built),
explicit instance-map choice for coco/cityscapes, fix hints in config terms, errors once per source."""

from __future__ import annotations

import pytest
import torch

from pipeline_helpers import make_inputs, small_config


def _fake_checkpoint(path, preset: str, ngf: int) -> str:
    """A state dict with the official generator's keys and shapes for ``preset`` at width ``ngf`` (zeros)."""
    from spadepis.data.presets import get_preset
    from spadepis.models.spade import expected_state_dict_shapes

    shapes = expected_state_dict_shapes(get_preset(preset, ngf=ngf))
    torch.save({k: torch.zeros(s) if not k.endswith("num_batches_tracked") else torch.zeros((), dtype=torch.long)
                for k, s in shapes.items()}, path)
    return str(path)


def _check(argv):
    import contextlib
    import io

    from spadepis.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue() + err.getvalue()


def _yaml(tmp_path, cfg) -> str:
    import yaml

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True)))
    return str(path)


def test_check_refuses_a_checkpoint_that_does_not_fit_the_preset(tmp_path):
    inputs = make_inputs(tmp_path)
    ckpt = _fake_checkpoint(tmp_path / "ade_G.pth", "ade20k", ngf=8)
    cfg = small_config(inputs, dataset={"preset": "coco", "preset_overrides": {}, "use_instance": False},
                       models={"synth_checkpoint": ckpt, "ngf": 16})
    code, text = _check(["check", _yaml(tmp_path, cfg)])
    assert code == 1, text
    assert "does not fit dataset.preset 'coco'" in text and "151 input channels" in text, text
    assert "--set dataset.preset=ade20k --set models.ngf=8" in text, text
    assert "--preset " not in text and "--ngf" not in text  # config language, not the synthesize flags
    fits = small_config(inputs, dataset={"preset": "ade20k", "preset_overrides": {}}, models={"synth_checkpoint": ckpt, "ngf": 8})
    code, text = _check(["check", _yaml(tmp_path, fits)])
    assert code == 0, text


def test_inside_a_run_the_fix_hint_speaks_config(tmp_path):
    from spadepis.errors import ConfigError
    from spadepis.pipeline.plan import make_plan
    from spadepis.pipeline.worker import process_shard

    inputs = make_inputs(tmp_path)
    ckpt = _fake_checkpoint(tmp_path / "ade_G.pth", "ade20k", ngf=8)
    cfg = small_config(inputs, models={"synth_checkpoint": ckpt}).resolved()  # custom 8 labels: does not fit
    with pytest.raises(ConfigError) as err:
        process_shard(cfg, make_plan(cfg).shards[0])
    msg = str(err.value)
    assert "--set dataset.preset=ade20k" in msg and "--preset " not in msg, msg


def test_coco_without_instance_maps_must_be_explicit(tmp_path):
    from spadepis.pipeline.config import validate_config

    inputs = make_inputs(tmp_path)
    base = {"preset": "coco", "preset_overrides": {}}
    problems = validate_config(small_config(inputs, dataset=base))
    assert any("dataset.instances" in p and "dataset.use_instance: false" in p for p in problems), problems
    assert not any("instance" in p for p in validate_config(small_config(inputs, dataset={**base, "use_instance": False})))
    city = validate_config(small_config(inputs, dataset={"preset": "cityscapes", "preset_overrides": {}}))
    assert any("preset 'cityscapes' takes instance edges" in p for p in city), city
    ade = validate_config(small_config(inputs, dataset={"preset": "ade20k", "preset_overrides": {}, "use_instance": True}))
    assert any("dataset.use_instance: preset 'ade20k' takes no instance maps" in p for p in ade), ade
    # unset keeps the config hash of configs written before the field existed; an explicit choice changes it
    a = small_config(inputs, dataset=base)
    assert a.config_hash != small_config(inputs, dataset={**base, "use_instance": False}).config_hash
    assert "use_instance" not in str(a.model_dump(exclude={"dataset": {"use_instance"}}))


def test_coco_run_without_instances_uses_label_boundaries(tmp_path):
    from spadepis.pipeline.plan import make_plan
    from spadepis.pipeline.worker import process_shard

    inputs = make_inputs(tmp_path, n_maps=2, n_styles=1)
    cfg = small_config(inputs, dataset={"preset": "coco", "preset_overrides": {"crop_size": 64}, "use_instance": False},
                       models={"smoothing": "none"}).resolved()
    res = process_shard(cfg, make_plan(cfg).shards[0])
    assert res.ok == 2 and res.error == 0, res.errors


def test_a_bad_source_is_reported_once_not_once_per_style(tmp_path):
    from spadepis.pipeline.manifest import format_summary, read_index, summary
    from spadepis.pipeline.plan import make_plan
    from spadepis.pipeline.worker import process_shard
    from spadepis.pipeline.storage import RunStorage

    inputs = make_inputs(tmp_path, n_maps=2, n_styles=3, bad=(0,))
    cfg = small_config(inputs, models={"smoothing": "none"}).resolved()
    res = process_shard(cfg, make_plan(cfg).shards[0])
    assert res.error == 3 and len(res.errors) == 1
    RunStorage(cfg.run_uri).write_index()
    s = summary(read_index(cfg.run_uri))
    assert s["error"] == 3 and s["error_sources"] == 1 and len(s["errors"]) == 1
    assert s["errors"][0]["styles"] == ["style0", "style1", "style2"]
    text = format_summary(s)
    assert text.count("label id 200") == 1 and "m000 x 3 styles (style0, style1, style2)" in text, text
