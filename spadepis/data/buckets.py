"""Buckets of object stores: which filesystems have them, and whether one exists. Nothing here creates one.

On s3fs (and other object-store filesystems) ``makedirs`` creates a missing bucket, so a misspelt bucket
would silently become a new one: spadepis never calls ``makedirs`` there (objects need no folders) and
checks the bucket instead.
"""

from __future__ import annotations

from typing import Any

__all__ = ["is_object_store", "missing_bucket", "put_bytes", "has_conditional_write"]

_OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl", "oss", "r2", "cos", "obs"}


def is_object_store(fs: Any) -> bool:
    """Whether ``fs`` is a bucket-based object store (where ``makedirs`` may create a bucket)."""
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return any(p in _OBJECT_STORES for p in protocols)


def missing_bucket(uri: str) -> str | None:
    """The bucket of ``uri`` when it is on an object store and the bucket does not exist; else ``None``.

    Never creates anything. Other failures (no network, access denied) propagate to the caller.
    """
    from .fs import url_to_fs

    fs, path = url_to_fs(uri)
    if not is_object_store(fs):
        return None
    bucket = path.strip("/").split("/", 1)[0]
    if not bucket:
        return None
    try:
        fs.invalidate_cache(bucket)
    except Exception:  # noqa: BLE001 - cache invalidation is an optimisation
        pass
    try:
        fs.ls(bucket, detail=False)
    except FileNotFoundError:
        return bucket
    return None




def _protocol(fs: Any) -> str:
    return fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]


def has_conditional_write(fs: Any) -> bool:
    """Whether :func:`put_bytes` ``exclusive=True`` is a real conditional write on ``fs``: ``O_EXCL`` (a hard link
    of a complete temporary file) on local disks, exclusive create on ``memory://``, ``If-None-Match: *`` on S3
    (s3fs ``mode="create"``; AWS S3, MinIO, moto). Elsewhere it is check-then-write (best effort)."""
    return _protocol(fs) in ("file", "local", "memory", "s3", "s3a")


def _precondition_failed(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return "precondition" in text or "412" in text


def put_bytes(fs: Any, path: str, data: bytes, *, exclusive: bool = False) -> bool:
    """THE write path of spadepis: put ``data`` at ``path`` of ``fs`` atomically (a reader sees the old file or the
    whole new one, never a torn one). Local disks: a complete, fsynced temporary file renamed into place (or, with
    ``exclusive``, hard-linked: fails when ``path`` exists). Other filesystems: one ``pipe_file`` (one PUT on
    object stores; ``mode="create"`` with ``exclusive``). Folders are created on local disks only, never on object
    stores (``makedirs`` there can create a bucket). Returns ``False`` when ``exclusive`` and ``path`` exists."""
    import os
    import uuid

    protocol = _protocol(fs)
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if protocol in ("file", "local"):
        if parent:
            os.makedirs(parent, exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if not exclusive:
                os.replace(tmp, path)
                return True
            try:
                os.link(tmp, path)  # atomic, and fails when path exists
            except FileExistsError:
                return False
            except OSError:  # a file system without hard links: O_EXCL create (exclusive, written in place)
                try:
                    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            return True
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    if parent and not is_object_store(fs) and protocol != "memory":
        fs.makedirs(parent, exist_ok=True)
    if not exclusive:
        fs.pipe_file(path, data)
        return True
    if not has_conditional_write(fs):  # best effort: check, then write
        if fs.exists(path):
            return False
        fs.pipe_file(path, data)
        return True
    try:
        fs.pipe_file(path, data, mode="create")
    except FileExistsError:
        return False
    except OSError as exc:
        if _precondition_failed(exc):
            return False
        raise
    except Exception as exc:  # noqa: BLE001 - botocore's ClientError for a 412 on some versions
        if _precondition_failed(exc):
            return False
        raise
    return True
