"""Buckets of object stores: which filesystems have them, and whether one exists. Nothing here creates one.

On s3fs (and other object-store filesystems) ``makedirs`` creates a missing bucket, so a misspelt bucket
would silently become a new one: spadepis never calls ``makedirs`` there (objects need no folders) and
checks the bucket instead.
"""

from __future__ import annotations

from typing import Any

__all__ = ["is_object_store", "missing_bucket"]

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


