"""Runs over a living dataset: one config rerun after label maps are added and removed, on local disk and on
a real S3-compatible server (moto on loopback). Every source ends up exactly once in the index, the rows
committed earlier are never redone, sample ids stay those of the config, and ``spadepis summary`` marks the
sources that are gone. Also: ``run.json`` as the run's contract (damaged or another config: refused)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline_helpers import LABEL_NC, SIZE, make_inputs, small_config
try:
    from test_s3 import s3  # noqa: F401 - the moto S3 server fixture
except BaseException as exc:  # pytest.importorskip's Skipped: moto / s3fs not installed
    _why = str(exc)

    @pytest.fixture
    def s3():
        pytest.skip(_why)
from spadepis.pipeline.plan import sample_id


def _add_map(root, name: str, value: int) -> None:
    lab = np.zeros((SIZE, SIZE), np.uint8)
    lab[: SIZE // 2] = value % LABEL_NC
    lab[SIZE // 2 :] = (value + 3) % LABEL_NC
    Image.fromarray(lab).save(root / "labels" / f"{name}.png")


def _remove_map(fs_root, name: str) -> None:
    (fs_root / "labels" / f"{name}.png").unlink()


def _run(cfg):
    from spadepis.flows.augment import augment

    state = augment(config=cfg, return_state=True)
    assert state.is_completed(), state.message
    return state.result()


def _index(cfg):
    from spadepis.pipeline.config import apply_storage_options
    from spadepis.pipeline.manifest import read_index

    apply_storage_options(cfg)  # what a trainer does to read an index on a custom endpoint
    return read_index(cfg.run_uri)


def _assert_each_once(df, expected_sources: set[str], n_styles: int) -> None:
    assert df.sample_id.is_unique, df[df.sample_id.duplicated()][["source_id", "style_id", "shard_id"]]
    assert not df.duplicated(["source_id", "style_id"]).any()
    counts = df.groupby("source_id").size().to_dict()
    assert set(counts) == expected_sources, (sorted(counts), sorted(expected_sources))
    assert set(counts.values()) == {n_styles}
    # one source lives in one shard only
    assert (df.groupby("source_id").shard_id.nunique() == 1).all()


def _living_dataset_scenario(cfg, root, capsys):
    from spadepis.cli import main

    first = _run(cfg)
    df1 = _index(cfg)
    names0 = {f"m{i:03d}" for i in range(5)}
    _assert_each_once(df1, names0, 2)
    attempts = df1.groupby("shard_id").attempt_id.first().to_dict()

    # a nightly rerun after two label maps arrived: one sorts between existing ones (it used to shift every shard)
    _add_map(root, "m001b", 1)
    _add_map(root, "m009", 2)
    second = _run(cfg)
    df2 = _index(cfg)
    _assert_each_once(df2, names0 | {"m001b", "m009"}, 2)
    assert second["processed"] == 1, "both new sources fit one new shard of 2"
    assert df2[df2.shard_id.isin(attempts)].groupby("shard_id").attempt_id.first().to_dict() == attempts, \
        "a committed shard was redone"
    assert first["shards"] == 3 and second["shards"] == 4
    # the same config gives the same sample ids
    for r in df2.itertuples():
        assert r.sample_id == sample_id(r.source_id, r.style_id, cfg.seed, cfg.config_hash)

    # two label maps removed, one more added: only the new one is processed; the gone ones keep their rows
    _remove_map(root, "m000")
    _remove_map(root, "m003")
    _add_map(root, "m004a", 3)
    import yaml

    path = root / "living.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    capsys.readouterr()
    assert main(["check", str(path)]) == 0  # says what a run would find
    out = capsys.readouterr().out
    assert "1 new source to do, 5 already committed, 2 gone from the dataset" in out, out
    third = _run(cfg)
    df3 = _index(cfg)
    _assert_each_once(df3, names0 | {"m001b", "m009", "m004a"}, 2)
    assert third["processed"] == 1
    assert set(df3[df3.attempt_id.isin(set(df2.attempt_id))].sample_id) == set(df2.sample_id)

    # and a rerun of the unchanged dataset does nothing at all
    fourth = _run(cfg)
    assert fourth["processed"] == 0
    assert len(_index(cfg)) == len(df3)

    capsys.readouterr()
    assert main(["summary", cfg.run_uri, *_set_options(cfg)]) == 0
    out = capsys.readouterr().out
    assert "2 source(s) gone from the dataset" in out and "m000" in out and "m003" in out, out
    assert "shards committed 5 of 5 planned" in out, out


def _set_options(cfg) -> list[str]:
    import json

    return [a for proto, opts in cfg.storage_options.items() for a in ("--set", f"storage_options.{proto}={json.dumps(opts)}")]


def test_rerun_after_adding_and_removing_label_maps_local(tmp_path, prefect_harness, capsys):
    root = make_inputs(tmp_path, n_maps=5)
    cfg = small_config(root, run_id="living", models={"smoothing": "none"}, runner={"kind": "thread", "max_concurrency": 2})
    _living_dataset_scenario(cfg, root, capsys)


def test_rerun_after_adding_and_removing_label_maps_s3(tmp_path, s3, prefect_harness, capsys, monkeypatch):
    root = make_inputs(tmp_path, n_maps=5)
    cfg = small_config(root, output="s3://spadepis-test/living", run_id="living", models={"smoothing": "none"},
                       storage_options={"s3": s3["options"]})
    _living_dataset_scenario(cfg, root, capsys)

    # summary / gc of an s3 run from a shell: the endpoint given with --set, the credentials of the shell
    from spadepis.cli import main

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    endpoint = ["--set", f"storage_options.s3.endpoint_url={s3['options']['endpoint_url']}"]
    capsys.readouterr()
    # no credentials anywhere: named as such, not "unreachable ... retried"
    assert main(["summary", cfg.run_uri, *endpoint]) == 1
    err = capsys.readouterr().err
    assert "no credentials for the storage were found" in err and "retrying will not help" in err, err
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # a new shell command is a new process
    assert main(["summary", cfg.run_uri, *endpoint]) == 0
    assert "shards committed 5 of 5 planned" in capsys.readouterr().out
    assert main(["gc", cfg.run_uri, "--dry-run", *endpoint]) == 0
    assert main(["summary", cfg.run_uri, "--set", "storage_options.s3.secret=987654321012"]) == 1
    assert "literal credentials in storage_options.s3.secret" in capsys.readouterr().err


def test_old_run_folder_resumes(tmp_path, prefect_harness):
    """A run folder made before the plan followed committed sources (shards as fixed slices of the sorted ids),
    interrupted after its first shard, then the dataset grew: the rerun does exactly the sources left."""
    from spadepis.pipeline.plan import make_plan
    from spadepis.pipeline.worker import process_shard

    root = make_inputs(tmp_path, n_maps=6)
    cfg = small_config(root, run_id="old", models={"smoothing": "none"}).resolved()
    process_shard(cfg, make_plan(cfg).shards[0])  # what an old run committed: shard=00000 = m000, m001
    _add_map(root, "m000a", 4)  # sorts into the first slice
    result = _run(cfg)
    df = _index(cfg)
    _assert_each_once(df, {f"m{i:03d}" for i in range(6)} | {"m000a"}, 2)
    assert result["processed"] == 3


def test_damaged_or_foreign_run_json_is_refused(tmp_path, prefect_harness, capsys):
    import yaml

    from spadepis.cli import main

    root = make_inputs(tmp_path, n_maps=2)
    cfg = small_config(root, run_id="contract", models={"smoothing": "none"})
    _run(cfg)
    run_json = tmp_path / "runs" / "contract" / "run.json"
    good = run_json.read_bytes()
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    before = sorted(p.name for p in (tmp_path / "runs" / "contract").iterdir())

    run_json.write_bytes(good[: len(good) // 2])  # truncated
    capsys.readouterr()
    assert main(["run", str(path), "--set", "models.smoothing=fast"]) == 1
    err = capsys.readouterr().err
    assert str(run_json) in err and "damaged" in err and "Traceback" not in err, err
    assert main(["check", str(path)]) == 1
    assert "damaged" in capsys.readouterr().err
    assert run_json.read_bytes() == good[: len(good) // 2], "the damaged run.json was rewritten"

    run_json.write_bytes(good)
    assert main(["run", str(path), "--set", "models.smoothing=fast"]) == 1  # another config, same run_id
    err = capsys.readouterr().err
    assert "belongs to another configuration" in err and str(run_json) in err, err
    assert main(["check", str(path), "--set", "models.smoothing=fast"]) == 1
    assert "belongs to another configuration" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "runs" / "contract").iterdir()) == before
    assert set(_index(cfg).smoothing) == {"none"}


def test_check_leaves_nothing_behind(tmp_path):
    import yaml

    from spadepis.cli import main

    root = make_inputs(tmp_path, n_maps=2)
    cfg = small_config(root, output=str(tmp_path / "out" / "deep"), run_id="probe")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    assert main(["check", str(path)]) == 0
    assert not (tmp_path / "out").exists(), list((tmp_path / "out").rglob("*"))


def test_lease_refusal_is_one_line(tmp_path, capfd):
    """`spadepis run` on a folder another live run holds: one clear error line, no traceback, nothing written."""
    import yaml

    from spadepis.cli import main
    from spadepis.pipeline.storage import RunStorage
    from test_lease import _write_lease

    cfg = small_config(make_inputs(tmp_path, n_maps=2), run_id="held", models={"smoothing": "none"})
    _write_lease(RunStorage(cfg.run_uri), owner="flow run busy-run", host="gpu-box-7")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    capfd.readouterr()
    assert main(["run", str(path)]) == 1
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "in use by flow run busy-run on host gpu-box-7" in lines[0], err
    assert not (tmp_path / "runs" / "held" / "synth").exists()
