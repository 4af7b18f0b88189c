"""Credentials by reference: configs name where a secret is, never the secret itself.

A config's ``storage_options`` may hold *references* instead of values::

    storage_options:
      s3:
        endpoint_url: https://minio.internal:9000
        key: {env: AWS_ACCESS_KEY_ID}              # read from the environment of the process that does the I/O
        secret: {secret: minio-secret-key}         # a Prefect Secret block, loaded by the Prefect layer

References travel in the flow's ``config`` parameter, in ``run.json`` and in logs; the values are
resolved only where they are used (:func:`resolve_references`, called by
:func:`spadepis.pipeline.config.apply_storage_options` in the flow process and in every shard worker) and
are passed explicitly to the filesystems of that run (:mod:`spadepis.data.fs`), never to the process-wide
fsspec config.

Secrets are known by *type*, not guessed: the credential-bearing options of fsspec, s3fs, gcsfs and adlfs
(:data:`CREDENTIAL_FIELDS`: ``key``, ``secret``, ``token``, ``password``, session tokens, account keys, SAS
tokens, connection strings, client secrets, ... at any depth, so inside ``client_kwargs`` too), the
credential HTTP headers (:data:`CREDENTIAL_HEADERS`) and the userinfo of any URL (``https://TOKEN@host``,
``s3://key:secret@bucket``) must be references, whatever their YAML type (an unquoted number is a
secret too): :func:`literal_secrets` names them and the config is refused. Every other option passes
(``config_kwargs: {signature_version: s3v4}``); a name that merely *looks* secret only gets a warning
(:func:`suspicious_fields`). :func:`redact` hides anything secret-looking that still reaches a record
(the second line of defence).

The library never imports Prefect: ``{secret: NAME}`` is resolved by a hook the Prefect layer
registers with :func:`register_secret_resolver` (``spadepis/tasks/shard.py`` registers Prefect Secret blocks).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError

__all__ = [
    "CREDENTIAL_FIELDS",
    "CREDENTIAL_HEADERS",
    "is_credential_field",
    "suspicious_fields",
    "is_secret_key",
    "is_reference",
    "literal_secrets",
    "has_secret_references",
    "resolve_references",
    "register_secret_resolver",
    "redact",
    "redact_url",
    "scrub",
    "REDACTED",
]

REDACTED = "***"

# Words that make a key name secret when they appear anywhere in it (separators and case ignored) ...
_SECRET_SUBSTRINGS = (
    "secret", "token", "password", "passwd", "passphrase", "credential", "authorization", "connectionstring",
    "apikey", "accesskey", "privatekey", "sessionkey", "accountkey", "sastoken", "cookie", "bearer",
)
# ... and short words that make it secret when they are a whole part of the name (key, aws_access_key_id, x-auth).
_SECRET_PARTS = {"key", "keys", "auth", "pwd", "pass", "sas", "jwt", "otp", "pin"}

CREDENTIAL_FIELDS = frozenset({
    # fsspec generic (ftp, sftp/ssh, smb, webhdfs, http auth, dbfs, ...)
    "password", "passwd", "passphrase", "token", "secret", "key", "pkey", "private_key", "client_secret",
    "credential", "credentials", "auth", "api_key", "access_token", "refresh_token", "bearer_token",
    # s3fs (key/secret/token, and their botocore names in client_kwargs / config)
    "session_token", "security_token", "aws_access_key_id", "aws_secret_access_key", "aws_session_token",
    "aws_security_token",
    # gcsfs (token: a credentials dict, or a file; mode words pass)
    "service_account_info",
    # adlfs / abfs
    "account_key", "sas_token", "connection_string", "client_certificate_password",
})
"""Option names (lower case, ``-`` as ``_``) whose value is a credential wherever they appear in ``storage_options``."""

CREDENTIAL_HEADERS = frozenset({
    "authorization", "proxy_authorization", "cookie", "x_api_key", "x_auth_token", "x_amz_security_token",
    "x_goog_api_key", "x_ms_authorization",
})
"""HTTP header names (normalised as above) whose value is a credential, under any ``headers`` option."""
# Keys whose values are all secret-ish (HTTP headers carry Authorization, cookies, API keys under any name).
_ALL_VALUES_SECRET = {"headers", "header"}
# Literal values that only name an authentication *mode*, not a secret (gcsfs ``token``, s3fs ``anon``).
_MODE_WORDS = {"anon", "anonymous", "google_default", "cloud", "browser", "cache", "none", "false", "true", ""}

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@\s:?#]*)(?::(?P<pw>[^/@\s?#]*))?@")


def _parts(name: str) -> list[str]:
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    return [p for p in re.split(r"[^A-Za-z0-9]+", snake.lower()) if p]


def is_secret_key(name: Any) -> bool:
    """Whether a key *name* says its value is a credential.

    >>> [is_secret_key(k) for k in ("secret", "aws_access_key_id", "connection_string", "Authorization", "endpoint_url")]
    [True, True, True, True, False]
    """
    if not isinstance(name, str):
        return False
    parts = _parts(name)
    flat = "".join(parts)
    return any(w in flat for w in _SECRET_SUBSTRINGS) or any(p in _SECRET_PARTS for p in parts)


def _norm(name: Any) -> str:
    return str(name).strip().lower().replace("-", "_")


def is_credential_field(name: Any, *, header: bool = False) -> bool:
    """Whether an option (or, with ``header``, an HTTP header) of this name carries a credential, by type.

    >>> [is_credential_field(k) for k in ("secret", "aws_session_token", "sas_token", "signature_version", "region_name")]
    [True, True, True, False, False]
    """
    return isinstance(name, str) and _norm(name) in (CREDENTIAL_HEADERS if header else CREDENTIAL_FIELDS)


def is_reference(value: Any) -> bool:
    """``{env: NAME}`` or ``{secret: BLOCK}`` (exactly one key, a non-empty string)."""
    return (
        isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("env", "secret")
        and isinstance(next(iter(value.values())), str) and bool(next(iter(value.values())).strip())
    )


def redact_url(text: str) -> str:
    """The userinfo of URLs hidden: ``s3://user:pw@host/x`` -> ``s3://user:***@host/x``,
    ``https://TOKEN@host`` -> ``https://***@host``."""
    def hide(m: re.Match) -> str:
        return f"{m['scheme']}{m['user']}:{REDACTED}@" if m["pw"] is not None else f"{m['scheme']}{REDACTED}@"

    return _USERINFO.sub(hide, text)


def _walk_strings(obj: Any, path: str):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk_strings(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _walk_strings(v, f"{path}[{i}]")
    elif isinstance(obj, str):
        yield path, obj


def _literal_value(key: str, value: Any) -> bool:
    """Whether ``value`` under the credential option ``key`` is a literal credential (not a reference, not
    empty, not a boolean, not gcsfs's authentication-mode words for ``token``)."""
    if value is None or isinstance(value, bool) or is_reference(value):
        return False
    if isinstance(value, str):
        if not value.strip():
            return False
        if _norm(key) == "token" and value.strip().lower() in _MODE_WORDS:
            return False
    return True


def literal_secrets(obj: Any, path: str = "", *, _headers: bool = False) -> list[str]:
    """Dotted names of literal credentials in ``obj`` (storage options, or a whole config): values of
    credential options (:data:`CREDENTIAL_FIELDS`, at any depth) and credential headers that are not
    references, whatever their type, and strings holding a URL with userinfo (``user@``, ``user:pw@``)."""
    found: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            where = f"{path}.{k}" if path else str(k)
            if is_reference(v):
                continue
            if is_credential_field(k, header=_headers) and _literal_value(k, v):
                found.append(where)
                continue
            found += literal_secrets(v, where, _headers=_norm(k) in _ALL_VALUES_SECRET)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found += literal_secrets(v, f"{path}[{i}]")
    elif isinstance(obj, str) and _USERINFO.search(obj):
        found.append(path or "(value)")
    return found


def suspicious_fields(obj: Any, path: str = "") -> list[str]:
    """Dotted names of literal values under names that *look* secret (``my_api_secret``) but are no known
    credential option: worth a warning, never a refusal (the name guess is only a guess)."""
    found: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            where = f"{path}.{k}" if path else str(k)
            if is_credential_field(k) or _norm(k) in _ALL_VALUES_SECRET or is_reference(v):
                continue
            if is_secret_key(k) and isinstance(v, (str, int, float)) and not isinstance(v, bool) and str(v).strip():
                found.append(where)
            else:
                found += suspicious_fields(v, where)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found += suspicious_fields(v, f"{path}[{i}]")
    return found


def has_secret_references(obj: Any) -> bool:
    """Whether some value inside ``obj`` is a ``{secret: BLOCK}`` reference (needs the Prefect layer)."""
    values = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()
    return any((is_reference(v) and "secret" in v) or has_secret_references(v) for v in values)


_RESOLVER: Callable[[str], str] | None = None
_RESOLVED: set[str] = set()  # values resolved in this process, scrubbed from messages (see scrub)


def _remember(value: Any) -> Any:
    if isinstance(value, str) and len(value) >= 4:
        _RESOLVED.add(value)
    return value


def scrub(text: str) -> str:
    """``text`` with every credential value this process resolved replaced by ``***`` and URL passwords hidden:
    applied to failure messages before they reach logs, states and artifacts."""
    for value in sorted(_RESOLVED, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return redact_url(text)


def register_secret_resolver(fn: Callable[[str], str] | None) -> None:
    """Install the function that turns ``{secret: NAME}`` into its value (the Prefect layer's Secret blocks)."""
    global _RESOLVER
    _RESOLVER = fn


def resolve_references(obj: Any, path: str = "storage_options") -> Any:
    """A copy of ``obj`` with every ``{env: NAME}`` / ``{secret: NAME}`` replaced by its value.

    Raises :class:`ConfigError` naming the field when a variable is not set or a block cannot be loaded;
    the message never contains a value.
    """
    if isinstance(obj, dict):
        return {k: _resolve_value(v, f"{path}.{k}") for k, v in obj.items()}
    if isinstance(obj, list):
        return [_resolve_value(v, f"{path}[{i}]") for i, v in enumerate(obj)]
    return obj


def _resolve_value(obj: Any, path: str) -> Any:
    if isinstance(obj, dict):
        if is_reference(obj):
            (kind, name), = obj.items()
            name = name.strip()
            if kind == "env":
                value = os.environ.get(name)
                if value is None:
                    raise ConfigError(
                        f"{path}: environment variable {name} is not set in this process (host {socket.gethostname()}); "
                        "set it in the environment of the process that reads and writes the data (the shell running "
                        "`spadepis run`, `prefect worker start` or each `dask worker`)"
                    )
                return _remember(value)
            if _RESOLVER is None:
                raise ConfigError(
                    f"{path}: {{secret: {name}}} names a Prefect Secret block, which only the Prefect flow can load; "
                    "run through `spadepis run` / the deployment, or use {env: VARIABLE} instead"
                )
            try:
                value = _RESOLVER(name)
            except Exception as exc:  # noqa: BLE001 - report which block, never a value
                raise ConfigError(
                    f"{path}: cannot load the Prefect Secret block {name!r} ({type(exc).__name__}); create it with "
                    f"`prefect block create secret` or Secret(value=...).save({name!r}), and check PREFECT_API_URL"
                ) from None
            return _remember(value)
    return resolve_references(obj, path)


def redact(obj: Any, *, _all: bool = False) -> Any:
    """A copy of ``obj`` safe to store or log: values under secret-looking keys and header values become
    ``***`` (references ``{env: ...}`` / ``{secret: ...}`` are kept: they are no secret), and the
    password of URL userinfo is hidden in every string."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            secret_here = _all or is_secret_key(k) or is_credential_field(k)
            if is_reference(v) and secret_here:
                out[k] = dict(v)
            elif secret_here and not isinstance(v, (dict, list)) and v not in (None, "", False):
                out[k] = REDACTED
            else:
                out[k] = redact(v, _all=secret_here or str(k).lower() in _ALL_VALUES_SECRET)
        return out
    if isinstance(obj, list):
        return [redact(v, _all=_all) for v in obj]
    if isinstance(obj, tuple):
        return tuple(redact(v, _all=_all) for v in obj)
    if isinstance(obj, str):
        return REDACTED if _all and obj else redact_url(obj)
    return obj
