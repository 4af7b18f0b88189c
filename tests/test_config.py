"""RunConfig: YAML loading, --set overrides, errors that name the field, validate_config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spadepis.pipeline.config import RunConfig, apply_overrides, config_hash, load_config, parse_config
from spadepis.pipeline.preflight import validate_config
from spadepis.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def inputs(tmp_path):
    (tmp_path / "labels").mkdir()
    (tmp_path / "styles").mkdir()
    for i in range(3):
        Image.fromarray(np.full((32, 32), i + 1, np.uint8)).save(tmp_path / "labels" / f"m{i}.png")
    for i in range(2):
        Image.fromarray(np.full((20, 24, 3), 40 * i, np.uint8)).save(tmp_path / "styles" / f"s{i}.png")
    return tmp_path


def _cfg(tmp_path, **kw):
    data = {
        "dataset": {"preset": "ade20k", "labels": str(tmp_path / "labels")},
        "styles": {"source": str(tmp_path / "styles")},
        "models": {"stylizer": "color", "smoothing": "none"},
        "output": str(tmp_path / "out"),
    }
    data.update(kw)
    return data


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_parse(path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)
    assert cfg.resolved_run_id


def test_unknown_field_is_refused_with_its_dotted_name(tmp_path):
    data = _cfg(tmp_path)
    data["models"]["smoothng"] = "exact"
    data["shard_sise"] = 4
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    msg = str(err.value)
    assert "models.smoothng: unknown field" in msg and "shard_sise: unknown field" in msg


def test_bounds_and_enums_name_the_field(tmp_path):
    data = _cfg(tmp_path, shard_size=0, runner={"kind": "slurm"})
    data["dataset"]["preset"] = "ade21k"
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    msg = str(err.value)
    assert "shard_size" in msg and "greater than or equal to 1" in msg
    assert "runner.kind" in msg and "'slurm'" in msg
    assert "dataset.preset" in msg and "ade21k" in msg


def test_yaml_and_set_overrides(tmp_path, inputs):
    import yaml

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(_cfg(inputs)))
    cfg = load_config(path, overrides=["models.smoothing=fast", "shard_size=2", "runner.max_concurrency=3", "run_id=abc"])
    assert (cfg.models.smoothing, cfg.shard_size, cfg.runner.max_concurrency, cfg.run_id) == ("fast", 2, 3, "abc")
    with pytest.raises(ConfigError, match="models.nope: unknown field"):
        load_config(path, overrides=["models.nope=1"])
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides({}, ["shard_size"])
    with pytest.raises(ConfigError, match="shard_size is a value, not a section"):
        apply_overrides({"shard_size": 3}, ["shard_size.x=1"])


def test_missing_config_file_says_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="not found; pass a YAML file"):
        load_config(tmp_path / "nope.yaml")


def test_config_hash_ignores_execution_only_fields(tmp_path):
    a = parse_config(_cfg(tmp_path))
    b = parse_config(_cfg(tmp_path, output="s3://elsewhere", device="cpu", runner={"max_concurrency": 8}, batch_size=16))
    c = parse_config(_cfg(tmp_path, seed=1))
    assert config_hash(a) == config_hash(b) != config_hash(c)
    assert a.resolved_run_id == b.resolved_run_id and a.resolved_run_id.startswith("ade20k-")


def test_validate_ok(inputs):
    assert validate_config(parse_config(_cfg(inputs))) == []


def test_validate_reports_every_problem_at_once(inputs, tmp_path):
    (inputs / "empty_styles").mkdir()
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the output folder should go")
    data = _cfg(inputs, output=str(blocker / "out"))
    data["dataset"]["labels"] = str(inputs / "missing")
    data["styles"]["source"] = str(inputs / "empty_styles")
    data["models"] = {"synth_checkpoint": str(inputs / "nope.pth"), "stylizer": "photowct", "smoothing": "exact"}
    data["dataset"]["preset_overrides"] = {"label_ncc": 3}
    problems = validate_config(parse_config(data))
    text = "\n".join(problems)
    assert len(problems) == 6, text
    assert "dataset.labels" in text and "does not exist" in text
    assert "styles.source" in text and "holds no image" in text
    assert "models.synth_checkpoint" in text and "latest_net_G.pth" in text
    assert "models.stylizer_weights" in text and "photo_wct.pth" in text
    assert "output: cannot write" in text
    assert "preset_overrides" in text and "label_ncc" in text


def test_validate_wct16x_folder_and_per_sample(inputs):
    (inputs / "wct").mkdir()
    (inputs / "wct" / "encoder_l1.pth").write_bytes(b"x")
    data = _cfg(inputs)
    data["models"] = {"stylizer": "wct16x", "stylizer_weights": str(inputs / "wct"), "smoothing": "none"}
    data["styles"]["per_sample"] = 5
    text = "\n".join(validate_config(parse_config(data)))
    assert "decoder_l1.pth" in text and "encoder_l5.pth" in text and "encoder_l1.pth," not in text
    assert "styles.per_sample: 5" in text and "holds only 2" in text


def test_check_and_run_commands_report_problems_before_work(inputs, tmp_path, capsys):
    import yaml

    from spadepis.cli import main

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(_cfg(inputs)))
    assert main(["check", str(path), "--set", "shard_size=2"]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "3 sources, 2 styles, 6 outputs in 2 shard(s)" in out
    assert main(["check", str(path), "--set", "styles.source=/nonexistent/styles"]) == 1
    assert "styles.source" in capsys.readouterr().err
    assert main(["run", str(path), "--set", "models.stylizer=photowct"]) == 1
    err = capsys.readouterr().err
    assert "models.stylizer_weights" in err and "nothing was run" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.png"))


def test_library_never_imports_prefect(inputs):
    # Regression: validate_config imported prefect_dask (and so Prefect) to check the dask extra.
    import subprocess
    import sys

    code = (
        "import sys, importlib, pkgutil, spadepis\n"
        "prefect_layer = ('spadepis.flows', 'spadepis.tasks', 'spadepis.cli')\n"
        "for m in pkgutil.walk_packages(spadepis.__path__, 'spadepis.'):\n"
        "    if m.name.endswith('__main__') or m.name.startswith(prefect_layer): continue\n"
        "    importlib.import_module(m.name)\n"
        "from spadepis.pipeline.config import parse_config\nfrom spadepis.pipeline.preflight import validate_config\n"
        f"cfg = parse_config({{'dataset': {{'labels': {str(inputs / 'labels')!r}, 'use_instance': False}}, 'styles': {{'source': {str(inputs / 'styles')!r}}},"
        f" 'output': {str(inputs / 'runs')!r}, 'models': {{'stylizer': 'color'}}, 'runner': {{'kind': 'dask'}}, 'device': 'cpu'}})\n"
        "assert validate_config(cfg) == [], validate_config(cfg)\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('prefect', 'prefect_dask'))\n"
        "assert not bad, bad[:5]\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("options", [
    {"s3": {"secret": "s3cr3t"}},
    {"s3": {"client_kwargs": {"aws_access_key_id": "AKIA"}}},
    {"abfs": {"connection_string": "AccountName=a;AccountKey=k"}},
    {"http": {"headers": {"Authorization": "Bearer t"}}},
    {"s3": {"endpoint_url": "https://user:pw@minio:9000"}},
])
def test_literal_secrets_are_refused_with_what_to_do(tmp_path, options):
    from pipeline_helpers import make_inputs, small_config

    root = make_inputs(tmp_path, n_maps=1)
    with pytest.raises(ConfigError, match=r"literal credentials in storage_options\.") as err:
        small_config(root, storage_options=options)
    assert "{env: AWS_SECRET_ACCESS_KEY}" in str(err.value) and "{secret: my-block}" in str(err.value)
    for value in ("s3cr3t", "AKIA", "AccountKey=k", "Bearer t", "pw@"):
        assert value not in str(err.value)


def test_secret_references_resolve_where_used(tmp_path, monkeypatch):
    import fsspec.config

    from pipeline_helpers import make_inputs, small_config
    from spadepis.data.fs import current_storage_options
    from spadepis.pipeline.config import apply_storage_options
    from spadepis.pipeline import secrets
    from spadepis.pipeline.secrets import register_secret_resolver

    cfg = small_config(make_inputs(tmp_path, n_maps=1), storage_options={
        "spadepistest": {"key": {"env": "SPADEPIS_T_KEY"}, "secret": {"secret": "blk"}, "anon": False}})
    monkeypatch.delenv("SPADEPIS_T_KEY", raising=False)
    with pytest.raises(ConfigError, match="SPADEPIS_T_KEY is not set"):
        apply_storage_options(cfg)
    monkeypatch.setenv("SPADEPIS_T_KEY", "k1")
    # the resolver is process-wide (spadepis.tasks.shard registers Prefect's): monkeypatch restores it afterwards
    monkeypatch.setattr(secrets, "_RESOLVER", None)
    with pytest.raises(ConfigError, match="Prefect Secret block"):
        apply_storage_options(cfg)
    register_secret_resolver({"blk": "v1"}.__getitem__)
    apply_storage_options(cfg)
    # passed to this run's filesystems (spadepis.data.fs), never to the process-wide fsspec config
    assert current_storage_options()["spadepistest"] == {"key": "k1", "secret": "v1", "anon": False}
    assert "spadepistest" not in fsspec.config.conf


def test_resolved_secret_values_are_scrubbed_from_failure_messages(tmp_path, monkeypatch):
    import fsspec.config

    from pipeline_helpers import make_inputs, small_config
    from spadepis.pipeline.config import apply_storage_options
    from spadepis.pipeline.failures import describe

    monkeypatch.setenv("SPADEPIS_T_SECRET", "hunter2-secret-value")
    cfg = small_config(make_inputs(tmp_path, n_maps=1), storage_options={"spadepistest2": {"secret": {"env": "SPADEPIS_T_SECRET"}}})
    try:
        apply_storage_options(cfg)
    finally:
        fsspec.config.conf.pop("spadepistest2", None)
    text = describe(ConnectionError("handshake with hunter2-secret-value failed for https://u:pw@host/x"))
    assert "hunter2-secret-value" not in text and "pw@" not in text and "***" in text
