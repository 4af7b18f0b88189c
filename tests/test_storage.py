"""Storage layout and the commit protocol: part first, _SUCCESS.json last, readers trust only markers."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pytest

from spadepis.errors import ConfigError, InputError, StorageError
from spadepis.pipeline.manifest import SCHEMA, SCHEMA_VERSION, rows_to_table, table_schema_version
from spadepis.pipeline.failures import is_transient
from spadepis.pipeline.storage import RunStorage, new_attempt_id


def _rows(shard: str, n: int, attempt: str, *, error_at: int | None = None) -> pa.Table:
    rows = []
    for i in range(n):
        bad = i == error_at
        rows.append({
            "sample_id": f"{shard}-{i}", "run_id": "r", "shard_id": shard, "attempt_id": attempt, "dataset": "d",
            "preset": "ade20k", "source_id": f"src{i}", "label_uri": f"/l/{i}.png", "instance_uri": None, "label_nc": 150,
            "style_id": "s", "style_uri": "/s.png", "synth_uri": f"/synth/{i}.png", "image_uri": None if bad else f"/img/{i}.png",
            "width": None if bad else 8, "height": None if bad else 8, "sha256": None if bad else "0" * 64,
            "synth_model": "m", "synth_weights_sha256": None, "stylizer": "color", "stylizer_weights_sha256": None,
            "smoothing": "none", "t_load_ms": 1.0, "t_synth_ms": 2.0, "t_stylize_ms": 3.0, "t_smooth_ms": 4.0,
            "t_write_ms": 5.0, "t_total_ms": 15.0, "status": "error" if bad else "ok", "error": "bad item" if bad else None,
            "created_at": dt.datetime.now(dt.timezone.utc), "device": "cpu", "spadepis_version": "0", "schema_version": SCHEMA_VERSION,
        })
    return rows_to_table(rows)


@pytest.fixture(params=["local", "memory"])
def storage(request, tmp_path):
    if request.param == "local":
        return RunStorage(str(tmp_path / "runs" / "r"))
    return RunStorage(f"memory://storage-test-{new_attempt_id()}/r")


def test_layout_names(storage):
    assert storage.synth_rel(42, "a", "t1") == "synth/shard=00042/t1/a.png"
    assert storage.image_rel("shard=00042", "a", "s", "t1") == "images/shard=00042/t1/a/s.png"
    # issue 18 case 4: ids that used to collide ("a" x "b__c" and "a__b" x "c") map to different paths
    assert storage.image_rel(0, "a", "b__c", "t") != storage.image_rel(0, "a__b", "c", "t")
    # ids are data: no folder walking, no glob characters, no hidden names
    assert storage.image_rel(0, "../x", "[1]*", "t") == "images/shard=00000/t/%2E.%2Fx/%5B1%5D%2A.png"
    assert storage.synth_rel(0, "a/b", "t") != storage.synth_rel(0, "a%2Fb", "t")
    assert storage.part_rel(3, "x") == "manifest/shard=00003/part-x.parquet"
    assert storage.success_rel(3) == "manifest/shard=00003/_SUCCESS.json"


def test_commit_part_then_marker(storage):
    attempt = new_attempt_id()
    assert storage.marker(0) is None
    marker = storage.commit_shard(0, attempt, _rows("shard=00000", 3, attempt, error_at=1))
    assert marker["part"] == f"manifest/shard=00000/part-{attempt}.parquet"
    assert (marker["rows"], marker["ok"], marker["error"]) == (3, 2, 1)
    on_disk = json.loads(storage.read_bytes(storage.success_rel(0)))
    assert on_disk["part"] == marker["part"] and on_disk["part_sha256"] == marker["part_sha256"]
    assert storage.marker("shard=00000")["attempt_id"] == attempt
    assert set(storage.committed_shards()) == {"shard=00000"}


def test_orphans_torn_markers_and_missing_parts_are_not_commits(storage):
    a1, a2 = new_attempt_id(), new_attempt_id()
    storage.commit_shard(0, a1, _rows("shard=00000", 2, a1))
    # shard 1: an attempt crashed after its part (orphan, no marker)
    storage.write_bytes(storage.part_rel(1, a2), b"half a parquet file")
    # shard 2: torn marker; shard 3: marker names a part that is not there
    storage.write_bytes(storage.success_rel(2), b'{"part": "manifest/sha')
    storage.write_bytes(storage.success_rel(3), json.dumps({"part": "manifest/shard=00003/part-x.parquet", "part_bytes": 10}).encode())
    assert set(storage.committed_shards()) == {"shard=00000"}
    assert storage.marker(2) is None and storage.marker(3) is None
    table = storage.merge_committed()
    assert table.num_rows == 2 and set(table.column("attempt_id").to_pylist()) == {a1}


def test_first_commit_wins_and_orphans_are_cleaned(storage):
    a0, a1, a2 = new_attempt_id(), new_attempt_id(), new_attempt_id()
    # a crashed attempt left a part and a temporary marker behind
    storage.write_bytes(storage.part_rel(0, a0), b"half a parquet file")
    storage.write_bytes("manifest/shard=00000/_SUCCESS.json.tmp-1a2b3c4d", b"{")
    first = storage.commit_shard(0, a1, _rows("shard=00000", 2, a1))
    assert not storage.exists(storage.part_rel(0, a0)), "orphan part of the crashed attempt left behind"
    # a temporary file may be a racing attempt's write in flight: the commit leaves it to gc
    assert storage.exists("manifest/shard=00000/_SUCCESS.json.tmp-1a2b3c4d")
    assert storage.orphans_of_shard(0, first["part"]) == []
    again = storage.commit_shard(0, a2, _rows("shard=00000", 2, a2))  # e.g. a duplicate attempt on a lost worker
    assert again["attempt_id"] == a1 and again["superseded_attempt"] == a2
    assert not storage.exists(storage.part_rel(0, a2)) and storage.exists(storage.part_rel(0, a1))
    table = storage.merge_committed()
    assert table.num_rows == 2 and set(table.column("attempt_id").to_pylist()) == {a1}


def test_damaged_part_of_the_right_size_uncommits_the_shard(storage):
    a = new_attempt_id()
    marker = storage.commit_shard(0, a, _rows("shard=00000", 2, a))
    data = bytearray(storage.read_bytes(marker["part"]))
    data[len(data) // 2] ^= 0xFF  # same size, other content
    storage.write_bytes(marker["part"], bytes(data))
    assert storage.marker(0) is None and storage.committed_shards() == {}
    assert "damaged" in storage.invalid_markers["shard=00000"]
    b = new_attempt_id()
    assert storage.commit_shard(0, b, _rows("shard=00000", 2, b))["attempt_id"] == b  # the redo commits
    assert storage.merge_committed().num_rows == 2


def test_index_merges_committed_parts_and_knows_when_stale(storage):
    a = new_attempt_id()
    storage.commit_shard(0, a, _rows("shard=00000", 2, a))
    index = storage.write_index()
    assert index.num_rows == 2 and table_schema_version(index) == SCHEMA_VERSION
    assert storage.read_manifest().num_rows == 2
    b = new_attempt_id()
    storage.commit_shard(1, b, _rows("shard=00001", 3, b))  # committed after the index was written
    assert storage.read_manifest().num_rows == 5  # stale index is not trusted
    assert storage.write_index().num_rows == 5
    assert storage.read_manifest().schema.remove_metadata() == SCHEMA.remove_metadata()


def test_tampered_part_is_refused(storage):
    a = new_attempt_id()
    marker = storage.commit_shard(0, a, _rows("shard=00000", 2, a))
    data = bytearray(storage.read_bytes(marker["part"]))
    data[-20] ^= 0xFF
    storage.write_bytes(marker["part"], bytes(data))
    with pytest.raises(StorageError, match="does not match its _SUCCESS.json sha256"):
        storage.merge_committed({"shard=00000": marker})  # a reader holding the marker from before the damage


def test_run_record_is_frozen(storage):
    storage.write_run_record({"config_hash": "abc", "run_id": "r"})
    assert storage.write_run_record({"config_hash": "abc", "x": 1}) == {"config_hash": "abc", "run_id": "r"}
    with pytest.raises(ConfigError, match="already holds a run with another configuration"):
        storage.write_run_record({"config_hash": "def"})


def test_storage_failures_say_what_happened_and_whether_retry_helps(tmp_path):
    import errno

    from spadepis.pipeline.failures import classify, describe

    blocker = tmp_path / "file"
    blocker.write_text("x")
    storage = RunStorage(str(blocker / "run"))
    with pytest.raises(StorageError, match="a file stands where a folder must go.*retrying will not help") as err:
        storage.write_bytes("a/b.png", b"x")
    assert not is_transient(err.value) and classify(err.value).kind == "path-conflict"
    # local failures a retry would repeat are not transient
    for exc, kind in ((FileExistsError(errno.EEXIST, "exists"), "path-conflict"),
                      (OSError(errno.ENOSPC, "No space left on device"), "disk-full"),
                      (OSError(errno.ENAMETOOLONG, "File name too long"), "name-too-long"),
                      (PermissionError(errno.EACCES, "denied"), "permission")):
        wrapped = StorageError("writing x failed")
        wrapped.__cause__ = exc
        assert (classify(exc).kind, is_transient(exc)) == (kind, False)
        assert classify(wrapped).kind == kind and not is_transient(wrapped)
    assert "disk is full" in describe(OSError(errno.ENOSPC, "No space left on device"))
    # the Prefect API going away is named as such (Prefect's exception, recognised by name)
    ConcurrencySlotAcquisitionError = type("ConcurrencySlotAcquisitionError", (Exception,), {})
    api = ConcurrencySlotAcquisitionError("Unable to acquire concurrency slots for tag:gpu")
    assert classify(api).kind == "prefect-api-unreachable"
    assert describe(api).startswith("the Prefect API is unreachable")


def test_is_transient_classification():
    assert is_transient(StorageError("x"))
    assert is_transient(ConnectionRefusedError("refused"))
    assert is_transient(TimeoutError())
    assert is_transient(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    wrapped = RuntimeError("outer")
    wrapped.__cause__ = ConnectionResetError()
    assert is_transient(wrapped)
    assert not is_transient(InputError("bad label"))
    assert not is_transient(ConfigError("bad config"))
    assert not is_transient(ValueError("a bug"))
    assert not is_transient(FileNotFoundError("gone"))
    assert not is_transient(None)


def test_rows_to_table_refuses_missing_columns():
    with pytest.raises(ValueError, match="missing columns"):
        rows_to_table([{"sample_id": "x"}])
