"""Preflight: every problem that would stop a run, found before any work starts.

:func:`validate_config` goes further than the config's types: the preset and its overrides, the inputs
(they exist and are not empty), the weights the models need, the device, the runner and a write probe
of the output; each problem names the config field and what to do. :func:`check_config` raises them
all at once, once per run.

>>> problems = validate_config(load_config("configs/demo.yaml"))      # [] when the run can start
"""

from __future__ import annotations

import uuid

from ..data.presets import get_preset
from ..devices import resolve_device
from ..errors import ConfigError
from ..models.registry import STYLIZERS
from .config import RANDOM_INIT, RunConfig, apply_storage_options
from .model_fit import check_model_fit
from .plan import list_inputs

__all__ = ["validate_config", "check_config", "label_remap_report", "REMAP_SAMPLE", "read_run_contract", "RUN_RECORD"]

RUN_RECORD = "run.json"

REMAP_SAMPLE = 32
"""Label maps read (evenly spread over the run's sources) to find the ids ``dataset.label_remap`` meets."""


def _sample_ids(config: RunConfig) -> tuple[dict[int, int], int, int, list[str]]:
    """``(ids -> maps holding them, maps read, maps in the run, errors)`` over a sample of the run's label maps."""
    from ..data.label_remap import scan_ids

    uris = list_inputs(config.dataset.labels, field="dataset.labels")
    if config.dataset.limit:
        uris = uris[: config.dataset.limit]
    n = len(uris)
    step = max(1, -(-n // REMAP_SAMPLE))
    picked = uris[::step][:REMAP_SAMPLE]
    counts, errors = scan_ids(picked)
    return counts, len(picked), n, errors


def _check_label_remap(config: RunConfig) -> list[str]:
    d = config.dataset
    if d.label_remap is None:
        if d.unmapped is not None:
            return ["dataset.unmapped: only used with dataset.label_remap; remove it or set label_remap"]
        return []
    if config.stylize_only:
        return [("dataset.label_remap: maps label ids for the SPADE generator, and stylize-only runs (dataset.photos) "
                 "run none; remove label_remap (or dataset.photos)")]
    out: list[str] = []
    from ..data.label_remap import load_label_remap

    try:
        preset = get_preset(d.preset, **d.preset_overrides)
        remap = load_label_remap(d.label_remap, unmapped=d.unmapped)
    except ConfigError as exc:
        return out + [str(exc)]
    found = None
    if remap.unmapped == "dontcare" and not preset.contain_dontcare_label:
        try:
            counts = _sample_ids(config)[0]
            found = [i for i in counts if i not in remap.mapping]
        except ConfigError:
            found = None  # dataset.labels itself is reported by the input checks
    return out + remap.problems(preset, found)


def label_remap_report(config: RunConfig) -> list[str]:
    """Lines for ``spadepis check``: the ids found in a sample of the label maps, where each maps, which are
    unmapped; ``[]`` without ``dataset.label_remap``."""
    from ..data.label_remap import load_label_remap

    d = config.dataset
    if d.label_remap is None or config.stylize_only:
        return []
    try:
        preset = get_preset(d.preset, **d.preset_overrides)
        remap = load_label_remap(d.label_remap, unmapped=d.unmapped)
        counts, read, total, errors = _sample_ids(config)
    except ConfigError as exc:
        return [f"label remap: cannot report ({exc})"]
    lines = [(f"label remap {remap.label} -> preset {preset.name} (unmapped: {remap.unmapped}): ids found in "
              f"{read} of {total} label map(s):")]
    width = max((len(remap.describe_id(i, preset)) for i in counts), default=0)
    for i, n in counts.items():
        lines.append(f"  {remap.describe_id(i, preset):<{width}}  in {n} map(s)")
    missing = [i for i in counts if i not in remap.mapping]
    if missing:
        fate = ("error rows" if remap.unmapped == "error" else "the preset's dontcare label"
                if preset.contain_dontcare_label else f"refused: preset {preset.name!r} has no dontcare label")
        lines.append(f"  unmapped: {', '.join(map(str, missing))} -> {fate}")
    else:
        lines.append("  unmapped: none")
    lines += [f"  unreadable: {e}" for e in errors[:5]]
    return lines


def _check_weights(config: RunConfig, problems: list[str]) -> None:
    from ..data.fs import url_to_fs

    m = config.models
    if not config.stylize_only and m.synth_checkpoint != RANDOM_INIT:
        try:
            fs, path = url_to_fs(m.synth_checkpoint)
            if not fs.isfile(path):
                problems.append(
                    f"models.synth_checkpoint: {m.synth_checkpoint!r} is not a file; point it to the official "
                    "latest_net_G.pth (e.g. checkpoints/coco_pretrained/latest_net_G.pth) or use 'random-init' for a demo"
                )
        except Exception as exc:  # noqa: BLE001 - any failure here is a config problem to report
            problems.append(f"models.synth_checkpoint: cannot check {m.synth_checkpoint!r}: {exc}")
    needs = STYLIZERS[m.stylizer].weights
    if needs is None:
        if m.stylizer_weights:
            problems.append(f"models.stylizer_weights: the {m.stylizer} stylizer takes no weights; remove the field")
        return
    if not m.stylizer_weights:
        problems.append(f"models.stylizer_weights: the {m.stylizer} stylizer needs weights; set it to {needs}")
        return
    try:
        fs, path = url_to_fs(m.stylizer_weights)
        if m.stylizer == "photowct":
            if not fs.isfile(path):
                problems.append(
                    f"models.stylizer_weights: {m.stylizer_weights!r} is not a file; point it to FastPhotoStyle's photo_wct.pth"
                )
        else:
            if not fs.isdir(path):
                problems.append(
                    f"models.stylizer_weights: {m.stylizer_weights!r} is not a folder; point it to the folder holding "
                    "encoder_l1..5.pth and decoder_l1..5.pth"
                )
            else:
                names = {p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)}
                missing = [
                    f"{kind}_l{i}.pth" for i in range(1, 6) for kind in ("encoder", "decoder")
                    if not any(n.startswith(f"{kind}_l{i}") and n.endswith(".pth") for n in names)
                ]
                if missing:
                    problems.append(f"models.stylizer_weights: {m.stylizer_weights!r} lacks {', '.join(missing)}")
    except Exception as exc:  # noqa: BLE001
        problems.append(f"models.stylizer_weights: cannot check {m.stylizer_weights!r}: {exc}")


def _check_output(config: RunConfig, problems: list[str]) -> None:
    from ..data.fs import url_to_fs

    from ..data.buckets import missing_bucket

    try:
        bucket = missing_bucket(config.run_uri)
    except Exception:  # noqa: BLE001 - reported by the write probe below, with its cause
        bucket = None
    if bucket is not None:
        problems.append(
            f"output: the bucket {bucket!r} of {config.output!r} does not exist; spadepis never creates buckets: "
            "create it (e.g. `aws s3 mb s3://" + bucket + "`) or fix the bucket name"
        )
        return
    probe = f"{config.run_uri}/.write-check-{uuid.uuid4().hex[:12]}"
    created: list[str] = []  # folders the probe made, removed again: a check leaves nothing behind
    try:
        from ..data.buckets import is_object_store, put_bytes

        fs, path = url_to_fs(probe)
        parent = path.rsplit("/", 1)[0]
        if not is_object_store(fs):
            folder = parent
            while folder and folder != "/" and not fs.exists(folder):
                created.append(folder)
                folder = folder.rsplit("/", 1)[0]
        put_bytes(fs, path, b"ok")  # the one write path (never makedirs on an object store)
        fs.rm(path)
        for folder in created:  # deepest first
            fs.rmdir(folder)
    except Exception as exc:  # noqa: BLE001
        problems.append(
            f"output: cannot write under {config.run_uri!r} ({type(exc).__name__}: {exc}); choose a writable folder "
            "or URI (check the bucket exists and your credentials / storage_options)"
        )


def validate_config(config: RunConfig) -> list[str]:
    """Every problem that would stop the run, each naming the field and what to do; ``[]`` when fine.

    Checks: the preset and its overrides, the label / instance / photo / style inputs (they exist and
    are not empty), the weights the models need, the device, the runner, and that the output is writable.
    """
    problems: list[str] = []
    try:
        apply_storage_options(config)
    except ConfigError as exc:
        problems.append(str(exc))
    try:
        get_preset(config.dataset.preset, **config.dataset.preset_overrides)
    except ConfigError as exc:
        problems.append(f"dataset.preset / dataset.preset_overrides: {exc}")

    found: dict[str, int] = {}
    for field, spec in (
        ("dataset.labels", config.dataset.labels),
        ("dataset.instances", config.dataset.instances),
        ("dataset.photos", config.dataset.photos),
        ("styles.source", config.styles.source),
    ):
        if spec is None:
            continue
        try:
            uris = list_inputs(spec, field=field)
            found[field] = len(uris)
        except ConfigError as exc:
            problems.append(str(exc))
    n_styles = found.get("styles.source")
    if n_styles is not None and config.styles.per_sample and config.styles.per_sample > n_styles:
        problems.append(
            f"styles.per_sample: {config.styles.per_sample} styles per sample asked for but {config.styles.source!r} "
            f"holds only {n_styles}; lower it or add style photos"
        )
    problems.extend(_check_selection(config))
    problems.extend(_check_label_remap(config))
    _check_weights(config, problems)
    problems.extend(check_model_fit(config, check_checkpoint=config.models.synth_checkpoint != RANDOM_INIT))
    try:
        resolve_device(config.device)
    except ConfigError as exc:
        problems.append(f"device: {exc}")
    if config.models.smoothing == "exact" and config.models.smoothing_device == "cuda":
        import torch

        if not torch.cuda.is_available():
            problems.append("models.smoothing_device: 'cuda' but no CUDA GPU is visible here; use auto (the run's "
                            "device) or cpu")
    if config.runner.kind == "dask":
        import importlib.util

        # find_spec, not import: importing prefect_dask would import Prefect into the library.
        if any(importlib.util.find_spec(name) is None for name in ("distributed", "prefect_dask")):
            problems.append("runner.kind: 'dask' needs the dask extra: pip install 'spadepis[dask]' (or use kind: thread)")
    elif config.runner.address:
        problems.append("runner.address: only used with runner.kind: dask; remove it or set kind: dask")
    _check_output(config, problems)
    if not problems:
        _check_run_folder(config, problems)
    return problems


def _check_run_folder(config: RunConfig, problems: list[str]) -> None:
    """What the run would refuse in its folder: a damaged run.json or another config's run."""
    from .storage import RunStorage

    try:
        read_run_contract(RunStorage(config.run_uri), config)
    except ConfigError as exc:
        problems.append(str(exc))


def _check_selection(config: RunConfig) -> list[str]:
    st = config.styles
    out = []
    if st.labels == "predict":
        from .segmenter import is_module_spec, load_segmenter

        try:
            if is_module_spec(st.segmenter):
                load_segmenter(st.segmenter)  # imports it and builds the model: a bad spec is named now
            else:
                from ..data.fs import url_to_fs

                fs, path = url_to_fs(st.segmenter)
                if not fs.isfile(path):
                    out.append(f"styles.segmenter: {st.segmenter!r} does not exist; give a TorchScript file "
                               "(torch.jit.script(model).save(path)) or module:function returning a callable")
        except ConfigError as exc:
            out.append(str(exc))
        except Exception as exc:  # noqa: BLE001 - unknown protocol, credentials
            out.append(f"styles.segmenter: cannot open {st.segmenter!r} ({type(exc).__name__}: {exc})")
    elif st.labels is not None:
        try:
            list_inputs(st.labels, field="styles.labels")
        except ConfigError as exc:
            out.append(str(exc))
    sel = st.effective_select()
    if sel == "all" and st.per_sample:
        out.append("styles.per_sample: select: all uses every style; remove per_sample or choose select: random / semantic")
    if sel in ("random", "semantic") and not st.per_sample:
        out.append(f"styles.per_sample: select: {sel} needs the number of styles per sample; set per_sample (e.g. 2)")
    if sel == "semantic" and st.labels is None:
        out.append("styles.labels: select: semantic ranks styles by their label maps; set styles.labels (label maps of "
                   "the style photos, same ids) or use select: random")
    if st.top_m is not None:
        if sel != "semantic":
            out.append("styles.top_m: only used with select: semantic; remove it")
        elif st.per_sample and st.top_m < st.per_sample:
            out.append(f"styles.top_m: {st.top_m} is below per_sample ({st.per_sample}); set top_m >= per_sample")
    return out


_PASSED: set[str] = set()
"""Configs (as JSON, run id resolved) that passed :func:`check_config` in this process."""


def check_config(config: RunConfig) -> None:
    """Raise :class:`ConfigError` listing every problem :func:`validate_config` finds.

    Once per run: a config that passed is not checked again in the same process (``spadepis run`` checks
    before Prefect starts, and the flow, which deployments start directly, checks what it is given).
    """
    key = config.resolved().model_dump_json()
    if key in _PASSED:
        return
    problems = validate_config(config)
    if problems:
        raise ConfigError(
            f"{len(problems)} problem(s) in the run configuration; nothing was run:\n" + "\n".join(f"  - {p}" for p in problems)
        )
    _PASSED.add(key)


def read_run_contract(storage, config: RunConfig) -> dict | None:
    """The run folder's ``run.json`` when it belongs to ``config``; ``None`` when the folder holds no run yet.

    ``run.json`` is the run's contract: it is written once, atomically, when the run is created, and every
    later run into the folder must have the same configuration (config hash and run id). A ``run.json`` that
    cannot be read or parsed (damaged, truncated, edited) or that belongs to another configuration is
    refused with a :class:`ConfigError` naming the file and what to do; nothing is written.
    """
    import json

    uri = storage.uri(RUN_RECORD)
    try:
        data = storage.read_bytes(RUN_RECORD)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{uri}: cannot read the run's record ({exc}); check the storage and credentials, then run again") from None
    what = "delete the run folder (or move it away) to start a new run there, or choose another run_id / output"
    try:
        record = json.loads(data)
    except ValueError as exc:
        raise ConfigError(
            f"{uri} is damaged ({len(data)} bytes, not valid JSON: {exc}); it is the run's contract (its frozen config), "
            f"so this run cannot tell whether the outputs there are its own. Restore the file from a backup, or {what}"
        ) from None
    if not isinstance(record, dict) or not isinstance(record.get("config_hash"), str):
        raise ConfigError(f"{uri} is damaged (no config_hash); restore the file from a backup, or {what}")
    if record["config_hash"] != config.config_hash or record.get("run_id", config.resolved_run_id) != config.resolved_run_id:
        raise ConfigError(
            f"{uri} belongs to another configuration (run {record.get('run_id')!r}, config hash "
            f"{record['config_hash'][:12]}; this config: run {config.resolved_run_id!r}, hash {config.config_hash[:12]}): "
            "a run folder holds the outputs of one config only. Resume that run with its own config (run.json holds "
            f"it, under 'config'), or choose another run_id / output for this config"
        )
    return record
