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

__all__ = ["validate_config", "check_config"]


def _check_weights(config: RunConfig, problems: list[str]) -> None:
    import fsspec

    m = config.models
    if not config.stylize_only and m.synth_checkpoint != RANDOM_INIT:
        try:
            fs, path = fsspec.core.url_to_fs(m.synth_checkpoint)
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
        fs, path = fsspec.core.url_to_fs(m.stylizer_weights)
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
    import fsspec

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
    try:
        from ..data.buckets import put_bytes

        fs, path = fsspec.core.url_to_fs(probe)
        put_bytes(fs, path, b"ok")  # the one write path (never makedirs on an object store)
        fs.rm(path)
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
    return problems


def _check_selection(config: RunConfig) -> list[str]:
    st = config.styles
    out = []
    if st.labels is not None:
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
