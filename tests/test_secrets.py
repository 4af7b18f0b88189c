"""Secrets by type, not by guess; storage options passed to each filesystem, never process-wide."""

from __future__ import annotations

import warnings

import pytest

from pipeline_helpers import make_inputs, small_config
from spadepis.errors import ConfigError


@pytest.mark.parametrize("options, field", [
    ({"s3": {"secret": 987654321012}}, "storage_options.s3.secret"),  # an unquoted number is a secret too
    ({"s3": {"key": 12345}}, "storage_options.s3.key"),
    ({"s3": {"token": 3.5}}, "storage_options.s3.token"),
    ({"s3": {"client_kwargs": {"aws_session_token": "FQoGZXIvYXdzE"}}}, "storage_options.s3.client_kwargs.aws_session_token"),
    ({"gcs": {"token": {"type": "service_account", "private_key": "-----BEGIN"}}}, "storage_options.gcs.token"),
    ({"abfs": {"sas_token": "sv=2020&sig=abc"}}, "storage_options.abfs.sas_token"),
    ({"sftp": {"password": 1234}}, "storage_options.sftp.password"),
    ({"http": {"headers": {"Proxy-Authorization": "Basic dXNlcg=="}}}, "storage_options.http.headers.Proxy-Authorization"),
    ({"s3": {"endpoint_url": "https://ghp_T0KEN@minio.internal:9000"}}, "storage_options.s3.endpoint_url"),
])
def test_credential_fields_must_be_references_whatever_their_type(tmp_path, options, field):
    root = make_inputs(tmp_path, n_maps=1)
    with pytest.raises(ConfigError) as err:
        small_config(root, storage_options=options)
    msg = str(err.value)
    assert f"literal credentials in {field}" in msg and "{env:" in msg
    for secret in ("987654321012", "12345", "FQoGZXIvYXdzE", "BEGIN", "sig=abc", "1234", "dXNlcg", "ghp_T0KEN"):
        assert secret not in msg


def test_userinfo_in_any_url_of_the_config_is_refused(tmp_path):
    root = make_inputs(tmp_path, n_maps=1)
    with pytest.raises(ConfigError, match=r"literal credentials in dataset\.labels") as err:
        small_config(root, dataset={"labels": "https://TOKEN123@data.example.com/labels.txt"})
    assert "TOKEN123" not in str(err.value)


def test_other_options_pass_and_a_name_guess_only_warns(tmp_path, monkeypatch):
    root = make_inputs(tmp_path, n_maps=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning either
        cfg = small_config(root, storage_options={"s3": {
            "config_kwargs": {"signature_version": "s3v4", "s3": {"addressing_style": "path"}},
            "client_kwargs": {"region_name": "eu-west-1"}, "anon": False, "requester_pays": True,
            "key": {"env": "K"}, "secret": {"secret": "blk"}, "token": None,
        }, "gcs": {"token": "google_default"}, "http": {"headers": {"User-Agent": "spadepis"}}})
    assert cfg.storage_options["s3"]["config_kwargs"]["signature_version"] == "s3v4"
    with pytest.warns(UserWarning, match=r"storage_options\.s3\.my_api_secret: the name looks like a credential"):
        small_config(root, storage_options={"s3": {"my_api_secret": "x1"}})


def test_redact_hides_numbers_and_url_tokens():
    from spadepis.pipeline.secrets import redact, redact_url

    assert redact({"s3": {"secret": 987654321012, "key": {"env": "K"}, "region_name": "x"}}) == {
        "s3": {"secret": "***", "key": {"env": "K"}, "region_name": "x"}}
    assert redact_url("see https://TOKEN@host/x and s3://u:pw@b/k") == "see https://***@host/x and s3://u:***@b/k"


def test_two_configs_in_one_process_do_not_share_credentials(tmp_path, monkeypatch):
    """Each config's options reach its own filesystems; a config without a key does not sign with another's."""
    import threading

    import fsspec.config

    from spadepis.data.fs import current_storage_options, url_to_fs
    from spadepis.pipeline.config import apply_storage_options

    monkeypatch.setenv("SPADEPIS_T_KEY_A", "key-of-a")
    root = make_inputs(tmp_path, n_maps=1)
    a = small_config(root, storage_options={"memory": {"key": {"env": "SPADEPIS_T_KEY_A"}}})
    b = small_config(root, storage_options={"memory": {"spadepis_tag": "b"}})
    seen: dict[str, dict] = {}

    def job(name, cfg, barrier):
        apply_storage_options(cfg)
        barrier.wait()  # both applied before either looks
        seen[name] = current_storage_options()

    barrier = threading.Barrier(2)
    threads = [threading.Thread(target=job, args=(n, c, barrier)) for n, c in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen["a"] == {"memory": {"key": "key-of-a"}}
    assert seen["b"] == {"memory": {"spadepis_tag": "b"}}
    assert "memory" not in fsspec.config.conf  # never the process-wide config
    # in one thread, one after the other: the second replaces the first (no merge)
    apply_storage_options(a)
    apply_storage_options(b)
    assert current_storage_options() == {"memory": {"spadepis_tag": "b"}}
    # and the options are passed to the filesystem explicitly
    fs, _ = url_to_fs("memory://x/y")
    assert fs.storage_options.get("spadepis_tag") == "b" and "key" not in fs.storage_options


def test_missing_credentials_are_named_and_not_retried():
    """No credentials anywhere (botocore's NoCredentialsError): named as such, not a transient storage error."""
    pytest.importorskip("botocore")
    from botocore.exceptions import NoCredentialsError

    from spadepis.pipeline.failures import classify, describe

    try:
        try:
            raise NoCredentialsError()
        except NoCredentialsError as exc:
            raise PermissionError("Access to s3://bucket/x failed") from exc
    except PermissionError as outer:
        failure = classify(outer)
        text = describe(outer)
    assert failure.kind == "credentials-missing" and not failure.transient
    assert "no credentials" in text and "retrying will not help" in text and "AWS_ACCESS_KEY_ID" in text
