"""Object storage end to end against a real S3-compatible server (moto's standalone server) on loopback.

A full run, a resume, reading the index back over s3://, and a run during which the server is
unreachable for several seconds (a loopback proxy drops every connection): the shard task fails
with a StorageError, Prefect retries it, and nothing is lost.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import pytest

from pipeline_helpers import make_inputs, small_config
from spadepis.data.images import read_rgb
from spadepis.pipeline.manifest import read_index

moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed: pip install -e '.[test]'")
pytest.importorskip("s3fs", reason="s3fs is not installed: pip install -e '.[test]' (or the s3 extra)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FlakyProxy:
    """TCP proxy on loopback; ``outage(seconds)`` drops open connections and refuses new ones meanwhile."""

    def __init__(self, upstream_port: int):
        self.upstream = ("127.0.0.1", upstream_port)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.down_until = 0.0
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.dropped = 0
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            if time.monotonic() < self.down_until:
                self.dropped += 1
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def outage(self, seconds: float) -> None:
        self.down_until = time.monotonic() + seconds
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def close(self) -> None:
        self.closed = True
        self.sock.close()


@pytest.fixture(scope="module")
def s3():
    import boto3
    import fsspec.config

    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    proxy = FlakyProxy(port)
    creds = dict(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", **creds).create_bucket(Bucket="spadepis-test")
    saved = fsspec.config.conf.get("s3")
    saved_env = {k: os.environ.get(k) for k in ("SPADEPIS_TEST_S3_KEY", "SPADEPIS_TEST_S3_SECRET")}
    os.environ.update(SPADEPIS_TEST_S3_KEY="testing", SPADEPIS_TEST_S3_SECRET="testing")
    options = {
        "endpoint_url": f"http://127.0.0.1:{proxy.port}",
        # credentials by reference only: literal secrets in a config are refused
        "key": {"env": "SPADEPIS_TEST_S3_KEY"},
        "secret": {"env": "SPADEPIS_TEST_S3_SECRET"},
        "client_kwargs": {"region_name": "us-east-1"},
        # fail fast so an outage reaches the task instead of hiding in client-side retries
        "config_kwargs": {"retries": {"max_attempts": 1, "mode": "standard"}, "connect_timeout": 2, "read_timeout": 10},
    }
    yield {"port": port, "proxy": proxy, "options": options}
    proxy.close()
    server.stop()
    for k, v in saved_env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    if saved is None:
        fsspec.config.conf.pop("s3", None)
    else:
        fsspec.config.conf["s3"] = saved


def _s3_config(root, s3, run_id, **kw):
    return small_config(root, output="s3://spadepis-test/runs", run_id=run_id, storage_options={"s3": s3["options"]}, **kw)


def test_full_run_resume_and_read_back(tmp_path, s3, prefect_harness):
    import fsspec

    from spadepis.flows.augment import augment

    cfg = _s3_config(make_inputs(tmp_path, n_maps=4), s3, "full", models={"smoothing": "fast"})
    first = augment(config=cfg)
    assert first["processed"] == 2 and first["summary"]["ok"] == 8
    # the run's storage options reach its own filesystems only: a reader here applies them (what a trainer does)
    from spadepis.pipeline.config import apply_storage_options

    fs = fsspec.filesystem("s3", **apply_storage_options(cfg)["s3"])
    assert fs.exists("spadepis-test/runs/full/run.json")
    assert fs.exists("spadepis-test/runs/full/manifest/shard=00001/_SUCCESS.json")
    again = augment(config=cfg)  # resume: everything committed, nothing redone
    assert again["processed"] == 0 and again["summary"]["ok"] == 8
    df = read_index("s3://spadepis-test/runs/full")
    assert len(df) == 8 and df.sample_id.is_unique and (df.status == "ok").all()
    assert df.image_uri.str.startswith("s3://spadepis-test/runs/full/images/shard=").all()
    assert read_rgb(df.image_uri.iloc[0]).shape == (64, 64, 3)


def test_server_outage_is_retried_and_nothing_lost(tmp_path, s3, prefect_harness, monkeypatch):
    import boto3
    import s3fs

    # s3fs's own retry loop (5 tries with backoff, a class attribute) can ride out a short outage on a
    # quiet machine; with one try the outage reaches the shard task, which Prefect must retry.
    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from spadepis.flows.augment import augment

    cfg = _s3_config(make_inputs(tmp_path, n_maps=6), s3, "outage", retries={"count": 3, "delay": 2})
    direct = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{s3['port']}", aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    started = threading.Event()

    def break_server_when_busy() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            listed = direct.list_objects_v2(Bucket="spadepis-test", Prefix="runs/outage/synth/")
            if listed.get("KeyCount", 0):
                s3["proxy"].outage(6.0)
                started.set()
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=break_server_when_busy, daemon=True)
    watcher.start()
    state = augment(config=cfg, return_state=True)
    watcher.join(timeout=5)
    assert started.is_set(), "the outage never started"
    assert state.is_completed(), state.message
    assert s3["proxy"].dropped > 0, "no request hit the outage"

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    assert max(r.run_count for r in runs) >= 2, "no shard task was retried"

    from spadepis.pipeline.config import apply_storage_options

    apply_storage_options(cfg)  # the run's options are this run's only: a reader applies them
    df = read_index("s3://spadepis-test/runs/outage")
    assert len(df) == 12 and df.sample_id.is_unique and (df.status == "ok").all()
    keys = {o["Key"] for o in direct.list_objects_v2(Bucket="spadepis-test", Prefix="runs/outage/images/")["Contents"]}
    assert {u.split("spadepis-test/", 1)[1] for u in df.image_uri} <= keys


def test_uris_normalised_and_dataset_reads_from_any_cwd(tmp_path, s3, monkeypatch):
    """Label paths typed with ``..`` relative to the start directory; an s3:// run folder with ``..`` in the
    output; the manifest holds normalised absolute URIs, and AugmentedDataset reads it from elsewhere."""
    from spadepis.pipeline.manifest import AugmentedDataset
    from spadepis.pipeline.plan import make_plan
    from spadepis.pipeline.worker import process_shard
    from spadepis.pipeline.storage import RunStorage

    make_inputs(tmp_path / "data", n_maps=2)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    cfg = small_config(tmp_path / "data", output="s3://spadepis-test/x/../runs", run_id="uris",
                       storage_options={"s3": s3["options"]}, models={"smoothing": "none"},
                       dataset={"labels": "../data/labels"}).resolved()
    for shard in make_plan(cfg).shards:
        process_shard(cfg, shard)
    RunStorage(cfg.run_uri).write_index()
    monkeypatch.chdir(tmp_path)
    ds = AugmentedDataset("s3://spadepis-test/runs/uris")
    assert len(ds) == 4
    image, label, meta = ds[3]
    assert image.shape == (3, 64, 64) and label.shape == (64, 64)
    assert meta["image_uri"].startswith("s3://spadepis-test/runs/uris/images/shard=")
    assert meta["label_uri"] == str(tmp_path / "data" / "labels" / meta["source_id"]) + ".png"


def test_missing_bucket_is_named_by_check_and_run_and_never_created(tmp_path, s3, capsys):
    import boto3
    import yaml

    from spadepis.cli import main
    from spadepis.pipeline.preflight import check_config, validate_config
    from spadepis.errors import ConfigError, StorageError
    from spadepis.pipeline.failures import is_transient
    from spadepis.pipeline.storage import RunStorage

    direct = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{s3['port']}", aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    buckets = lambda: {b["Name"] for b in direct.list_buckets()["Buckets"]}  # noqa: E731
    cfg = small_config(make_inputs(tmp_path, n_maps=2), output="s3://spadepis-tset/runs", run_id="typo",
                       storage_options={"s3": s3["options"]})
    problems = validate_config(cfg)
    assert any("bucket 'spadepis-tset'" in p and "never creates buckets" in p for p in problems), problems
    with pytest.raises(ConfigError, match="bucket 'spadepis-tset'"):
        check_config(cfg)  # what `spadepis run` and the flow do first
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    assert main(["check", str(path)]) == 1
    assert "bucket 'spadepis-tset'" in capsys.readouterr().err
    assert main(["run", str(path)]) == 1
    assert "bucket 'spadepis-tset'" in capsys.readouterr().err
    with pytest.raises(StorageError, match="bucket 'spadepis-tset' does not exist") as err:
        RunStorage("s3://spadepis-tset/runs/typo").write_bytes("synth/shard=00000/a.png", b"x")
    assert not is_transient(err.value)
    assert "spadepis-tset" not in buckets(), "a bucket was created"


def test_secrets_never_reach_flow_parameters_run_json_or_logs(tmp_path, s3, prefect_harness, monkeypatch):
    import fsspec
    import yaml
    from prefect.blocks.system import Secret
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, LogFilter, LogFilterFlowRunId

    from spadepis.cli import main

    key_id, secret = "AKIDSPADEPIS7TEST", "s3cr3t-spadepis-9f8e7d"
    monkeypatch.setenv("SPADEPIS_TEST_KEY_ID", key_id)
    Secret(value=secret).save("spadepis-test-s3-secret", overwrite=True)
    options = {**s3["options"], "key": {"env": "SPADEPIS_TEST_KEY_ID"}, "secret": {"secret": "spadepis-test-s3-secret"}}
    cfg = small_config(make_inputs(tmp_path, n_maps=2), output="s3://spadepis-test/runs", run_id="secrets",
                       storage_options={"s3": options}, models={"smoothing": "none"})
    path = tmp_path / "secrets.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    assert main(["run", str(path)]) == 0
    # the credentials were used (resolved inside the process doing the I/O, passed to its filesystems only) ...
    assert secret not in json.dumps(fsspec.config.conf.get("s3", {}), default=str)
    # ... but never stored: not in the flow run's parameters (the Prefect database), run.json, or the logs
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_="augment-secrets-")))
        assert len(runs) == 1 and runs[0].state.is_completed()
        params = json.dumps(runs[0].parameters, default=str)
        logs = " ".join(log.message for log in client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[runs[0].id]))))
    assert "spadepis-test-s3-secret" in params and "SPADEPIS_TEST_KEY_ID" in params  # references only
    from spadepis.pipeline.config import apply_storage_options

    run_json = fsspec.filesystem("s3", **apply_storage_options(cfg)["s3"]).cat_file(
        "spadepis-test/runs/secrets/run.json").decode()
    assert "spadepis-test-s3-secret" in run_json
    for text in (params, logs, run_json):
        assert secret not in text and key_id not in text


def test_lease_on_s3_uses_a_conditional_write(tmp_path, s3):
    from spadepis.pipeline.config import apply_storage_options
    from spadepis.pipeline.lease import LEASE, LeaseHeldError, RunLease
    from spadepis.pipeline.storage import RunStorage

    apply_storage_options(small_config(make_inputs(tmp_path, n_maps=1), storage_options={"s3": s3["options"]}))
    storage = RunStorage("s3://spadepis-test/runs/leased")
    first = RunLease(storage, ttl_s=60, owner="flow run first")
    first.acquire()
    try:
        assert first._create(b"{}") is False  # If-None-Match: * refuses to replace the existing lease
        with pytest.raises(LeaseHeldError, match="in use by flow run first"):
            RunLease(storage, ttl_s=60, owner="flow run second").acquire()
    finally:
        first.release()
    assert not storage.exists(LEASE)
