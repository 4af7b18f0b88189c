"""Run configuration: one pydantic model, loaded from YAML with ``--set key=value`` overrides.

The flow ``spadepis-augment`` takes a single :class:`RunConfig`, so the Prefect UI renders it as a
form and the server rejects bad values. Every model forbids unknown fields, so a typo is refused
with the field's dotted name. The checks that go further than types (inputs exist, weights are where
the config says, the output is writable) are in :mod:`.preflight`.

Example
-------
>>> cfg = load_config("configs/demo.yaml", overrides=["shard_size=4", "models.smoothing=fast"])
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..data.presets import PRESETS
from ..errors import ConfigError
from ..models.registry import COMPAT_MODES, SMOOTHERS, STYLIZERS, WCT_PRECISIONS

__all__ = [
    "DatasetConfig",
    "StylesConfig",
    "ModelsConfig",
    "RunnerConfig",
    "RetriesConfig",
    "LeaseConfig",
    "RunConfig",
    "RANDOM_INIT",
    "load_config",
    "parse_config",
    "apply_overrides",
    "config_hash",
    "apply_storage_options",
]

RANDOM_INIT = "random-init"
"""Value of ``models.synth_checkpoint`` that asks for seeded random SPADE weights (demo, tests)."""

_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


_SNAKE = re.compile(r"[\w.*/:<>-]*_[\w.*/:<>-]*\w")


def _form_schema(schema: dict[str, Any], model: type) -> None:
    """What the Prefect UI's run form shows of each field: descriptions are rendered as markdown, so every word
    with an underscore (field names, file names) goes into a code span (no underscores read as italics), and a
    field whose default comes from a factory shows that default (pydantic leaves it out: "No items" for a list)."""
    for name, prop in (schema.get("properties") or {}).items():
        desc = prop.get("description")
        if desc:
            parts = re.split(r"(`[^`]*`)", desc)  # keep existing code spans as they are
            prop["description"] = "".join(
                part if part.startswith("`") else _SNAKE.sub(lambda m: f"`{m.group(0)}`", part)
                for part in parts)
        field = model.model_fields.get(name)
        if field is not None and field.default_factory is not None and "default" not in prop:
            try:
                prop["default"] = field.default_factory()  # type: ignore[call-arg]
            except TypeError:  # a factory that takes the validated data: no static default
                pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, json_schema_extra=_form_schema)


class DatasetConfig(_Strict):
    """Where the label maps (and optional instance maps or source photos) are."""

    preset: Literal[tuple(PRESETS)] = Field(  # type: ignore[valid-type]
        "coco",
        title="Dataset preset",
        description=f"Label set and preprocessing of the SPADE model: {', '.join(PRESETS)}.",
    )
    preset_overrides: dict[str, Any] = Field(
        default_factory=dict,
        title="Preset overrides",
        description="Fields of the preset to change, e.g. {label_nc: 20, crop_size: 256} for a custom label set.",
    )
    name: str | None = Field(
        None, title="Dataset name", description="Written to the manifest's `dataset` column; defaults to the preset."
    )
    labels: str = Field(
        ...,
        title="Label maps",
        description="Folder, glob (e.g. s3://bucket/labels/*.png) or list file (.txt, one URI per line) of label-map PNGs.",
    )
    instances: str | None = Field(
        None,
        title="Instance maps",
        description="Folder, glob or list file of instance maps, matched to label maps by file stem (optional).",
    )
    photos: str | None = Field(
        None,
        title="Source photos (stylize-only)",
        description="Folder, glob or list file of photos matched to label maps by stem. When set, SPADE is "
        "skipped and the photos themselves are stylized.",
    )
    strip_suffixes: list[str] = Field(
        default_factory=lambda: ["_labelIds", "_instanceIds", "_gtFine", "_leftImg8bit"],
        title="Suffixes stripped from ids",
        description="File-stem suffixes removed to get the source id, so aachen_..._gtFine_labelIds.png and "
        "aachen_..._gtFine_instanceIds.png pair up (Cityscapes).",
    )
    limit: int | None = Field(
        None, ge=1, title="Limit", description="Use only the first N sources (sorted by id); for trials."
    )
    use_instance: bool | None = Field(
        None,
        title="Use instance maps",
        description="coco and cityscapes models take instance edges: set dataset.instances, or use_instance: false to "
        "run without instance maps (the label map's own boundaries are used as edges; outputs differ from the official "
        "input). Empty: instance maps are required for those presets.",
    )
    demo_inputs: bool = Field(
        False,
        title="Generate demo inputs",
        description="Generate the demo's label maps and style photos at dataset.labels / styles.source when those "
        "folders are missing or empty (configs/demo.yaml), so the demo config runs on a fresh checkout or deployment. "
        "A folder holding anything is left alone.",
    )
    max_side: int | None = Field(
        1024,
        ge=16,
        le=16384,
        title="Photo max side (stylize-only)",
        description="Stylize-only runs: downscale photos whose longer side exceeds this (pixels, bicubic) and their "
        "label maps to the same size (nearest; written under labels/ and named by label_uri); empty keeps full size.",
    )
    label_remap: dict[int, int] | str | None = Field(
        None,
        title="Label remap",
        description="Map the dataset's label ids into the preset's label space before SPADE: an inline mapping "
        "{source_id: target_id} (e.g. {0: 23, 1: 11}), a CSV/YAML file 'source_id,target_id[,name]', or a table "
        "shipped with spadepis (camvid->cityscapes, cityscapes_trainid->cityscapes). label_uri keeps naming the "
        "original maps; the manifest's label_remap column names the table. Empty: the maps are in the preset's ids.",
    )
    unmapped: Literal["error", "dontcare"] | None = Field(
        None,
        title="Unmapped label ids",
        description="With dataset.label_remap, ids the table does not name: error (the map becomes an error row) or "
        "dontcare (the preset's dontcare label; needs a preset with one). Empty: error.",
    )


class StylesConfig(_Strict):
    """The style photos and how many of them each sample gets."""

    source: str = Field(
        ..., title="Style photos", description="Folder, glob or list file of style photos (JPEG/PNG), any fsspec URI."
    )
    per_sample: int | None = Field(
        None,
        ge=1,
        title="Styles per sample",
        description="Stylize each sample with k styles chosen by seed; empty means every style.",
    )
    max_side: int | None = Field(
        None,
        ge=16,
        le=8192,
        title="Style max side",
        description="Downscale style photos whose longer side exceeds this (pixels); empty keeps them as they are.",
    )
    labels: str | None = Field(
        None,
        title="Style label maps",
        description="Folder, glob or list file of label maps of the style photos, in the dataset's label space, paired "
        "with styles.source by id (file stem, dataset.strip_suffixes removed). Enables semantic selection, "
        "label-aware transfer and the q_coverage score. 'predict': label maps predicted by styles.segmenter for "
        "unlabelled style photos (stored in the run folder). Optional.",
    )
    segmenter: str | None = Field(
        None,
        title="Style segmenter",
        description="With labels: predict, the segmentation model that labels the style photos in the dataset's label "
        "space: a TorchScript file (path or URI) or module:function returning a callable. It gets float32 "
        "(1, 3, H, W) RGB in [0, 1] and returns scores (1, C, H, W), C = the preset's label channels, or ids "
        "(1, H, W); run once per style on the run's device.",
    )
    select: Literal["all", "random", "semantic"] | None = Field(
        None,
        title="Style selection",
        description="all: every style for every sample; random: per_sample styles chosen by seed; semantic: the "
        "per_sample styles whose class composition best covers the label map's (needs styles.labels), drawn by seed "
        "among the top_m. Empty: random when per_sample is set, else all.",
    )
    top_m: int | None = Field(
        None,
        ge=1,
        le=100_000,
        title="Semantic candidates",
        description="select: semantic draws per_sample styles (seeded, without replacement) among the top_m best "
        "scored ones, so one great style is not given to every sample. Empty: 4 x per_sample.",
    )
    unmatched: Literal["keep", "global"] = Field(
        "keep",
        title="Unmatched classes",
        description="Label-aware transfer: content pixels whose class has no usable style region keep the content's "
        "own features (keep, the reference's behaviour) or get the style's global statistics (global).",
    )
    ignore_labels: list[int] | None = Field(
        None,
        title="Labels ignored by the scores",
        description="Label ids left out of style_score and q_coverage (e.g. void / unlabelled). Empty: the preset's "
        "dontcare id, if any.",
    )

    @model_validator(mode="after")
    def _segmenter_ok(self) -> "StylesConfig":
        if self.labels == "predict" and not self.segmenter:
            raise ValueError(
                "labels: predict needs styles.segmenter (a TorchScript file or module:function returning a "
                "segmentation model in the dataset's label space); set it, or give label maps in styles.labels"
            )
        if self.segmenter and self.labels != "predict":
            raise ValueError(
                "segmenter is set but styles.labels is not 'predict'; set labels: predict to label the style photos "
                "with it, or remove segmenter"
            )
        return self

    def effective_select(self) -> str:
        """``select``, or what an older config meant: random with per_sample, else all."""
        return self.select or ("random" if self.per_sample else "all")


class ModelsConfig(_Strict):
    """Which models to run."""

    synth_checkpoint: str = Field(
        RANDOM_INIT,
        title="SPADE checkpoint",
        description="Path or fsspec URI of the official latest_net_G.pth, or 'random-init' for seeded random "
        "weights (demo only: the outputs are not photos).",
    )
    ngf: int | None = Field(
        None,
        ge=2,
        le=256,
        title="SPADE width (ngf)",
        description="Generator width; the official checkpoints use 64. random-init defaults to 16.",
    )
    synth_seed: int = Field(0, ge=0, title="Random-init seed", description="Seed of the random-init weights.")
    stylizer: STYLIZERS.literal() = Field(  # type: ignore[valid-type]
        "photowct",
        title="Stylizer",
        description=STYLIZERS.help(weights=True) + ".",
    )
    stylizer_weights: str | None = Field(
        None,
        title="Stylizer weights",
        description="photowct: path/URI of photo_wct.pth; wct16x: folder with encoder_l1..5.pth and decoder_l1..5.pth; "
        "color: leave empty.",
    )
    smoothing: SMOOTHERS.literal() = Field(  # type: ignore[valid-type]
        "exact",
        title="Smoothing",
        description=SMOOTHERS.help() + ".",
    )
    smoothing_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        title="Smoothing device",
        description="Where exact smoothing runs. cpu: a direct sparse solve (SuperLU; CHOLMOD with the cholmod extra) on runner.smoothing_workers "
        "processes; cuda: batched preconditioned CG on the GPU (every style of a SPADE batch at once); auto: "
        "the run's device.",
    )
    wct_precision: WCT_PRECISIONS.literal() = Field(  # type: ignore[valid-type]
        "reference",
        title="WCT precision",
        description="reference (default): FastPhotoStyle's float32 covariance + SVD and its 1e-5 rank cut, so photowct "
        "reproduces the original's outputs; regions where the original fails (one pixel, constant, SVD not converging) "
        "fall back to float64 and the manifest's wct_numerics says 'float64-fallback'. float64: float64 "
        "eigendecompositions everywhere; drops the float32-noise directions the original keeps, so photowct outputs "
        "differ visibly from FastPhotoStyle's.",
    )
    compat: COMPAT_MODES.literal() | None = Field(  # type: ignore[valid-type]
        None,
        title="Reference mode",
        description="fastphotostyle: full FastPhotoStyle mode, its WCT numerics and its exact-smoothing crop/resize: "
        "with smoothing exact every output is 4 px smaller (2 px cropped from each side) and label_uri names the label "
        "map cropped the same way, so pairs stay pixel-aligned. Needs smoothing exact or none and wct_precision "
        "reference. Empty: full-size outputs.",
    )

    @model_validator(mode="after")
    def _compat_ok(self) -> "ModelsConfig":
        if self.compat == "fastphotostyle" and self.wct_precision == "float64":
            raise ValueError(
                "compat: fastphotostyle uses the reference's float32 WCT numerics; set wct_precision: reference "
                "(or drop compat to keep float64)"
            )
        if self.compat == "fastphotostyle" and self.smoothing == "fast":
            raise ValueError(
                "compat: fastphotostyle is for smoothing exact or none (the guided filter has no reference crop); "
                "change smoothing or drop compat"
            )
        return self


class RunnerConfig(_Strict):
    """How shards are executed."""

    kind: Literal["thread", "dask"] = Field(
        "thread", title="Runner", description="thread: a bounded thread pool in the flow process; dask: a Dask cluster."
    )
    address: str | None = Field(
        None, title="Dask scheduler", description="Address of an existing Dask scheduler (dask only); empty starts a local cluster."
    )
    n_workers: int = Field(1, ge=1, le=1024, title="Dask workers", description="Workers of the local Dask cluster.")
    max_concurrency: int = Field(
        1, ge=1, le=1024, title="Max concurrent shards", description="Shards processed at once (threads or Dask tasks)."
    )
    smoothing_workers: int | None = Field(
        None,
        ge=1,
        le=1024,
        title="Smoothing processes",
        description="Processes that smooth different content images at once (CPU exact smoothing). Empty: the "
        "cores this worker process may run on (its CPU affinity). Dask workers cannot start processes: there "
        "smoothing runs in the worker itself (scale with n_workers).",
    )


class RetriesConfig(_Strict):
    """Retries of a shard after a transient failure (storage, out of memory, lost worker)."""

    count: int = Field(3, ge=0, le=20, title="Retries", description="Retries of a shard after a transient failure.")
    delay: float = Field(
        2.0, ge=0, le=3600, title="Retry delay (s)", description="First delay; doubles at each retry (exponential backoff)."
    )


class LeaseConfig(_Strict):
    """The run folder's lease: one run at a time writes into <output>/<run_id>/."""

    ttl_s: float = Field(
        120.0, ge=5, le=86400, title="Lease TTL (s)",
        description="A lease not renewed for this long (the holder was killed) is taken over; renewed every ttl/4.",
    )
    wait_s: float = Field(
        0.0, ge=0, le=7 * 86400, title="Wait for the lease (s)",
        description="When another run holds the folder: 0 refuses at once (naming it), N waits up to N seconds.",
    )


class RunConfig(_Strict):
    """A whole augmentation run. The flow ``spadepis-augment`` takes exactly this."""

    dataset: DatasetConfig
    styles: StylesConfig
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    output: str = Field(
        ..., title="Output root", description="Folder or fsspec URI (s3://bucket/prefix, memory://x); the run goes to <output>/<run_id>/."
    )
    run_id: str | None = Field(
        None,
        title="Run id",
        description="Name of the run folder. Empty: derived from the config hash, so re-running the same config resumes it.",
    )
    seed: int = Field(0, ge=0, title="Seed", description="Seed of the style choice and of the sample ids.")
    shard_size: int = Field(64, ge=1, le=100_000, title="Shard size", description="Sources per shard (one task each).")
    batch_size: int = Field(4, ge=1, le=1024, title="SPADE batch size", description="Label maps per SPADE forward pass.")
    device: str = Field("auto", title="Device", description="auto (CUDA when present), cpu, cuda or cuda:N.")
    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    retries: RetriesConfig = Field(default_factory=RetriesConfig)
    lease: LeaseConfig = Field(default_factory=LeaseConfig)
    max_image_pixels: int = Field(
        89_478_485, ge=1, le=10**10, title="Max image pixels",
        description="Images (label and instance maps, photos, styles) with more pixels (width x height) are refused, "
        "naming the file: a label map becomes an error row, a style's pairs become error rows. Guards against "
        "decompression bombs; the default is PIL's.",
    )
    storage_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        title="Storage options",
        description="fsspec options per protocol, e.g. {s3: {endpoint_url: 'http://127.0.0.1:9000'}}, passed to this "
        "run's filesystems only. Credential options (key, secret, token, password, session tokens, account keys, "
        "..., inside client_kwargs too) only by reference, whatever their type: {env: VARIABLE} (the worker's "
        "environment) or {secret: BLOCK} (a Prefect Secret block); literal ones are refused.",
    )

    @field_validator("run_id")
    @classmethod
    def _run_id_ok(cls, value: str | None) -> str | None:
        if value is not None and not _RUN_ID_RE.match(value):
            raise ValueError(
                f"run_id {value!r} must be 1-128 characters of letters, digits, '.', '_' or '-', starting with a "
                "letter or digit (it becomes a folder name)"
            )
        return value

    @field_validator("device")
    @classmethod
    def _device_ok(cls, value: str) -> str:
        if not re.match(r"^(auto|cpu|cuda(:\d+)?|mps)$", value):
            raise ValueError(f"device {value!r} is not one of auto, cpu, cuda, cuda:N")
        return value

    @model_validator(mode="after")
    def _no_literal_secrets(self) -> "RunConfig":
        from .secrets import literal_secrets, suspicious_fields

        found = [f for proto, opts in self.storage_options.items() for f in literal_secrets(opts, f"storage_options.{proto}")]
        found += literal_secrets(self.model_dump(mode="json", exclude={"storage_options"}))
        maybe = [f for proto, opts in self.storage_options.items() for f in suspicious_fields(opts, f"storage_options.{proto}")]
        if maybe and not found:
            import warnings

            warnings.warn(
                f"{', '.join(maybe)}: the name looks like a credential but is no known credential option of fsspec, "
                "s3fs, gcsfs or adlfs; if it holds a secret, write a reference ({env: VARIABLE} or {secret: BLOCK}) "
                "instead, since the config is stored in run.json and the Prefect database",
                UserWarning, stacklevel=2,
            )
        if found:
            raise ValueError(
                f"literal credentials in {', '.join(found)}: a config travels as the Prefect flow parameter and into "
                "run.json, so it must not hold secrets. Write a reference instead: {env: AWS_SECRET_ACCESS_KEY} (read "
                "from the environment of the process doing the I/O) or {secret: my-block} (a Prefect Secret block), "
                "or leave the key out and let the storage library find credentials (AWS_* variables, ~/.aws, roles); "
                "URLs must not carry userinfo (user@ or user:password@): pass credentials as storage options"
            )
        return self

    @property
    def stylize_only(self) -> bool:
        return self.dataset.photos is not None

    @property
    def dataset_name(self) -> str:
        return self.dataset.name or self.dataset.preset

    @property
    def config_hash(self) -> str:
        return config_hash(self)

    @property
    def resolved_run_id(self) -> str:
        """``run_id``, or ``<dataset>-<first 10 hex of the config hash>`` when it is empty."""
        return self.run_id or f"{self.dataset_name}-{self.config_hash[:10]}"

    @property
    def run_uri(self) -> str:
        return self.output.rstrip("/") + "/" + self.resolved_run_id

    def resolved(self) -> "RunConfig":
        """A copy with ``run_id`` filled in (what the flow records in run.json)."""
        return self.model_copy(update={"run_id": self.resolved_run_id})


# Fields that change nothing in the outputs: left out of the config hash, so the same work on another
# machine, with another runner or another output location, gets the same sample ids.
_EXECUTION_ONLY = {
    "output", "run_id", "device", "runner", "retries", "batch_size", "storage_options", "lease",
    "max_image_pixels",  # a guard: raising it only turns refusals into outputs
}


# styles fields added with semantic selection: left out of the hash while they keep the meaning an older
# config had, so runs made before they existed keep their run id and sample ids (and resume).
_STYLES_DEFAULTS = {"labels": None, "top_m": None, "unmatched": "keep", "ignore_labels": None, "segmenter": None}


def config_hash(config: RunConfig) -> str:
    """sha256 of the canonical JSON of every field that can change the outputs."""
    exclude: dict[str, Any] = dict.fromkeys(_EXECUTION_ONLY, True)
    exclude["dataset"] = {"demo_inputs"}  # makes inputs, changes no output
    if not config.stylize_only:  # dataset.max_side only acts on stylize-only photos
        exclude["dataset"].add("max_side")
    if config.dataset.use_instance is None:  # unset: hashes stay those of configs written before the field
        exclude["dataset"].add("use_instance")
    for name in ("label_remap", "unmapped"):  # unset: hashes stay those of configs written before the fields
        if getattr(config.dataset, name) is None:
            exclude["dataset"].add(name)
    st = config.styles
    same = {k for k, v in _STYLES_DEFAULTS.items() if getattr(st, k) == v}
    if st.select is None or st.select == ("random" if st.per_sample else "all"):
        same.add("select")
    if same:
        exclude["styles"] = same
    data = config.model_dump(mode="json", exclude=exclude)
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# ----------------------------------------------------------------------------------------- loading


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: {exc.error_count()} configuration error(s):"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"  {loc}: unknown field; remove it or check its spelling (see configs/*.yaml for the fields)")
        elif err["type"] == "missing":
            lines.append(f"  {loc}: required field is missing; add it")
        else:
            from .secrets import is_secret_key, redact_url

            value = err.get("input")
            secret = any(is_secret_key(str(p)) for p in err["loc"])
            shown = f" (got {redact_url(repr(value))})" if not isinstance(value, dict) and not secret else ""
            lines.append(f"  {loc}: {err['msg']}{shown}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], *, source: str = "config") -> RunConfig:
    """Validate a plain dict into a :class:`RunConfig`; errors name every offending field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of fields at the top level, got {type(data).__name__}")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set models.smoothing=fast")
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"--set {item!r}: the key is empty; use e.g. --set shard_size=16")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: cannot parse the value as YAML ({exc}); quote it") from None
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(
                    f"--set {item!r}: {'.'.join(parts[: i + 1])} is a value, not a section; cannot set a field inside it"
                )
            node = child
        node[parts[-1]] = value
    return data


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML config (local path or fsspec URI) and apply ``--set`` overrides."""
    import fsspec

    path = str(path)
    try:
        with fsspec.open(path, "r") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} not found; pass a YAML file such as configs/demo.yaml") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path!r}: {exc}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc}); fix the syntax at the line shown") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of fields at the top level, got {type(data).__name__}")
    apply_overrides(data, list(overrides))
    return parse_config(data, source=path)


# -------------------------------------------------------------------------------------- validation


def apply_storage_options(config: RunConfig) -> dict[str, dict[str, Any]]:
    """Make ``config.storage_options`` the storage options of the calling code (workers call it too); returns them.

    Credential references (``{env: NAME}``, ``{secret: BLOCK}``) are resolved here, in the process that
    does the I/O. The resolved options are passed explicitly to every filesystem this context opens
    (:mod:`spadepis.data.fs`, a context variable: this thread / task only), never through the process-wide
    fsspec config, so two configs in one process never share credentials. A config without options
    clears those of an earlier config in the same context.
    """
    from ..data.fs import use_storage_options
    from .secrets import resolve_references

    resolved = {
        protocol: resolve_references(options, f"storage_options.{protocol}")
        for protocol, options in config.storage_options.items()
    }
    use_storage_options(resolved)
    return resolved
