"""Does the model fit the run? Checked before any work starts, without building the model.

* the SPADE checkpoint's tensor shapes against the preset's generator (``expected_state_dict_shapes``,
  shapes only); a misfit names the keys and says which config fields would fit
  (``--set dataset.preset=coco --set models.ngf=16``);
* instance maps: the ``coco`` and ``cityscapes`` models take instance edges, so a run without
  ``dataset.instances`` must say ``dataset.use_instance: false`` (label boundaries used instead).

Used by ``spadepis check`` / the flow's config check (through :func:`spadepis.pipeline.config.validate_config`)
and by the shard worker, so a run and a check speak the same config language.
"""

from __future__ import annotations

from typing import Any

__all__ = ["check_model_fit", "checkpoint_fit_problem", "instance_problem", "config_hint", "explain_checkpoint_error"]


def config_hint(info: dict[str, Any], config) -> str:
    """The ``--set`` overrides that make a checkpoint with ``info`` (``infer_generator_options``) fit."""
    sets = []
    if info["presets"]:
        label_keys = {"label_nc", "contain_dontcare_label", "no_instance"} & set(config.dataset.preset_overrides)
        if info["presets"][0] != config.dataset.preset or label_keys:
            sets.append(f"--set dataset.preset={info['presets'][0]}")
        if label_keys:
            sets.append("--set 'dataset.preset_overrides={}'")
    else:
        sem = info["semantic_nc"]
        sets.append(f"--set dataset.preset=custom --set dataset.preset_overrides='{{label_nc: {sem - 1}, "
                    f"contain_dontcare_label: false, no_instance: false}}' (or label_nc {sem} with no_instance: true)")
    if config.models.ngf not in (None, info["ngf"]):
        sets.append(f"--set models.ngf={info['ngf']}")
    return " ".join(sets)


def _preset(config):
    from ..data.presets import get_preset

    return get_preset(config.dataset.preset, **config.dataset.preset_overrides)


def checkpoint_fit_problem(config, state_dict) -> str | None:
    """``None`` when the SPADE ``state_dict`` fits the config's preset (and ``models.ngf``), else the problem."""
    from ..models.spade import expected_state_dict_shapes, infer_generator_options

    uri = config.models.synth_checkpoint
    info = infer_generator_options(state_dict)
    if info is None:
        return (f"models.synth_checkpoint: {uri!r} is not a SPADE generator (no 'fc.weight' of shape "
                "[16*ngf, semantic_nc, 3, 3]); use the latest_net_G.pth of an official checkpoint folder (not latest_net_D.pth)")
    preset = _preset(config)
    p = preset
    from ..data.presets import get_preset

    nul = "most" if info["most"] else ("normal" if preset.num_upsampling_layers == "most" else preset.num_upsampling_layers)
    try:
        p = get_preset(preset, ngf=config.models.ngf or info["ngf"], num_upsampling_layers=nul)
    except Exception as exc:  # noqa: BLE001 - a preset the checkpoint cannot even describe
        return f"models.synth_checkpoint: {uri!r} does not fit preset {preset.name!r}: {exc}"
    expected = expected_state_dict_shapes(p)
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    wrong = [(k, tuple(state_dict[k].shape), shape) for k, shape in expected.items()
             if k in state_dict and tuple(state_dict[k].shape) != shape]
    unexpected = [k for k in state_dict if k not in expected]
    if not (missing or wrong or unexpected):
        return None
    what = []
    if wrong:
        k, got, want = wrong[0]
        what.append(f"{len(wrong)} tensor(s) of another shape (e.g. {k}: file {list(got)}, preset {list(want)})")
    if missing:
        what.append(f"{len(missing)} missing key(s) (e.g. {', '.join(missing[:3])})")
    if unexpected:
        what.append(f"{len(unexpected)} unexpected key(s) (e.g. {', '.join(unexpected[:3])})")
    found = f"its shapes say {info['semantic_nc']} input channels, ngf {info['ngf']}"
    hint = config_hint(info, config)
    fix = f"; run with {hint}" if hint else "; choose the checkpoint made for this preset"
    return (f"models.synth_checkpoint: {uri!r} does not fit dataset.preset {preset.name!r} "
            f"({preset.semantic_nc} input channels{', ngf ' + str(config.models.ngf) if config.models.ngf else ''}): "
            f"{'; '.join(what)}; {found}{fix}")


def instance_problem(config) -> str | None:
    """The instance-map choice must be explicit for presets whose model takes instance edges."""
    if config.stylize_only:
        return None
    try:
        preset = _preset(config)
    except Exception:  # noqa: BLE001 - reported by the preset check
        return None
    use = config.dataset.use_instance
    if preset.no_instance:
        if use:
            return (f"dataset.use_instance: preset {preset.name!r} takes no instance maps; remove the field (or use "
                    "preset_overrides: {no_instance: false} for a custom model trained with instance edges)")
        return None
    if config.dataset.instances is None and use is not False:
        return (f"dataset.instances: preset {preset.name!r} takes instance edges (the official input), but no instance "
                "maps are set; point dataset.instances at them (matched by file stem), or set dataset.use_instance: false "
                "to run without (the label boundaries are used as edges; the outputs differ)")
    if config.dataset.instances is not None and use is False:
        return "dataset.use_instance: false but dataset.instances is set; remove one of the two"
    return None


def check_model_fit(config, *, check_checkpoint: bool = True) -> list[str]:
    """Problems with the models against the data, for :func:`spadepis.pipeline.config.validate_config`
    (``check_checkpoint=False`` for random-init weights)."""
    problems = []
    p = instance_problem(config)
    if p:
        problems.append(p)
    uri = config.models.synth_checkpoint
    if config.stylize_only or not check_checkpoint:
        return problems
    from ..data.fs import url_to_fs

    try:
        fs, path = url_to_fs(uri)
        if not fs.isfile(path):
            return problems  # reported by the weights check
    except Exception:  # noqa: BLE001
        return problems
    from ..models.checkpoints import read_checkpoint
    from ..errors import SpadepisError

    try:
        sd = read_checkpoint(uri).state_dict
    except SpadepisError as exc:
        problems.append(f"models.synth_checkpoint: {exc}")
        return problems
    p = checkpoint_fit_problem(config, sd)
    if p:
        problems.append(p)
    return problems


def explain_checkpoint_error(config, exc: Exception) -> Exception:
    """Inside a run: a checkpoint that does not fit the preset becomes a :class:`ConfigError` whose fix is
    in config terms (``--set dataset.preset=... --set models.ngf=...``), not the ``synthesize`` flags."""
    from ..models.checkpoints import read_checkpoint
    from ..errors import ConfigError, SpadepisError

    try:
        problem = checkpoint_fit_problem(config, read_checkpoint(config.models.synth_checkpoint).state_dict)
    except SpadepisError:
        return exc
    return ConfigError(problem) if problem else exc
