"""Filesystems opened with the current run's storage options, passed explicitly to each filesystem.

A config's ``storage_options`` (``{s3: {endpoint_url: ..., key: ...}}``, references already resolved) are
made current with :func:`use_storage_options`: a context variable, so they hold for the code of *that* run
only (its thread, its Prefect task), never for the whole process. Two configs in one process (a notebook,
a long-lived Dask worker running shards of two runs) never sign with each other's credentials, which the
process-wide ``fsspec.config.conf`` would do. Every filesystem spadepis opens goes through :func:`url_to_fs`
or :func:`open_uri`, which pass the options of the URI's protocol as keyword arguments.

Threads started with :class:`concurrent.futures.ThreadPoolExecutor` do not inherit context variables: give
the pool ``**inherit_storage_options()`` so its threads use the options of the code that made it.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

__all__ = ["use_storage_options", "storage_options", "current_storage_options", "options_for", "url_to_fs",
           "open_uri", "inherit_storage_options"]

_OPTIONS: ContextVar[Mapping[str, Mapping[str, Any]]] = ContextVar("spadepis_storage_options", default={})

# Protocols fsspec knows under more than one name.
_ALIASES = {"s3a": "s3", "gcs": "gs", "gs": "gcs", "az": "abfs", "abfs": "az", "abfss": "abfs", "local": "file"}


def use_storage_options(options: Mapping[str, Mapping[str, Any]] | None) -> Token:
    """Make ``options`` (``{protocol: {option: value}}``, resolved) the current ones; replaces, never merges."""
    return _OPTIONS.set({str(k): dict(v) for k, v in (options or {}).items()})


def current_storage_options() -> dict[str, dict[str, Any]]:
    return {k: dict(v) for k, v in _OPTIONS.get().items()}


@contextmanager
def storage_options(options: Mapping[str, Mapping[str, Any]] | None):
    """``with storage_options({...}):`` the options hold inside the block only."""
    token = use_storage_options(options)
    try:
        yield
    finally:
        _OPTIONS.reset(token)


def _protocol(uri: str) -> str:
    uri = str(uri)
    if "://" not in uri:
        return "file"
    return uri.split("://", 1)[0].split("::")[-1].lower()


def options_for(uri: str, options: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The options of ``uri``'s protocol (from ``options``, else the current ones); ``{}`` when none."""
    table = _OPTIONS.get() if options is None else options
    proto = _protocol(uri)
    found = table.get(proto)
    if found is None and proto in _ALIASES:
        found = table.get(_ALIASES[proto])
    return dict(found or {})


def url_to_fs(uri: str, options: Mapping[str, Mapping[str, Any]] | None = None):
    """``fsspec.core.url_to_fs(uri, **options of its protocol)``: ``(filesystem, path)``."""
    import fsspec

    return fsspec.core.url_to_fs(str(uri), **options_for(uri, options))


def open_uri(uri: str, mode: str = "rb", options: Mapping[str, Mapping[str, Any]] | None = None):
    """``fsspec.open(uri, mode, **options of its protocol)`` (use as a context manager)."""
    import fsspec

    return fsspec.open(str(uri), mode, **options_for(uri, options))


def inherit_storage_options() -> dict[str, Any]:
    """Keyword arguments for a ``ThreadPoolExecutor`` whose threads must use the current storage options."""
    return {"initializer": use_storage_options, "initargs": (current_storage_options(),)}
