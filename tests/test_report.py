"""run.json contents and the artifact reports (spadepis.pipeline.report)."""

from __future__ import annotations

import hashlib

from pipeline_helpers import make_inputs, small_config

from spadepis.pipeline.plan import make_plan
from spadepis.pipeline.report import file_sha256, redact, run_record


def test_redact_hides_secrets_at_any_depth():
    cfg = {"storage_options": {"s3": {"key": "AKIA", "secret": "s3cr3t", "endpoint_url": "http://x"}},
           "list": [{"token": "t"}], "empty_password": None}
    out = redact(cfg)
    assert out["storage_options"]["s3"] == {"key": "***", "secret": "***", "endpoint_url": "http://x"}
    assert out["list"] == [{"token": "***"}]
    assert out["empty_password"] is None  # nothing to hide


def test_file_sha256_of_file_and_weights_folder(tmp_path):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "encoder_l1.pth").write_bytes(b"abc")
    (tmp_path / "w" / "notes.txt").write_bytes(b"ignored")
    assert file_sha256(str(tmp_path / "w" / "encoder_l1.pth")) == hashlib.sha256(b"abc").hexdigest()
    assert file_sha256(str(tmp_path / "w")) == {"encoder_l1.pth": hashlib.sha256(b"abc").hexdigest()}


def test_run_record_and_reports(tmp_path):
    cfg = small_config(make_inputs(tmp_path, n_maps=3)).resolved()
    plan = make_plan(cfg)
    rec = run_record(cfg, plan)
    assert rec["config_hash"] == plan.config_hash and rec["plan"]["shards"] == len(plan.shards)
    assert rec["models"]["synth"].startswith("random-init")


def test_redact_catches_every_secret_shape():
    cfg = {"az": {"connection_string": "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=abc123=="},
           "gcs": {"credential": "c", "passphrase": "p"},
           "s3": {"client_kwargs": {"aws_access_key_id": "AKIA1", "aws_secret_access_key": "x", "region_name": "eu"},
                  "endpoint_url": "https://user:pw123@minio:9000", "secret": {"env": "AWS_SECRET_ACCESS_KEY"}},
           "http": {"headers": {"Authorization": "Bearer tok", "X-Custom": "value"}}}
    out = redact(cfg)
    text = repr(out)
    for leaked in ("abc123", "AKIA1", "pw123", "Bearer", "'c'", "'p'", "value"):
        assert leaked not in text, leaked
    assert out["s3"]["client_kwargs"]["region_name"] == "eu"
    assert out["s3"]["endpoint_url"] == "https://user:***@minio:9000"
    assert out["s3"]["secret"] == {"env": "AWS_SECRET_ACCESS_KEY"}  # a reference is no secret
