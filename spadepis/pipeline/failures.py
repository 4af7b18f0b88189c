"""What went wrong, in the user's terms, and whether retrying can help.

:func:`classify` looks through an exception and its ``__cause__``/``__context__`` chain and names the
failure: the Prefect API unreachable, disk full, permission denied, bucket missing, a name too long,
a path conflict, storage unreachable, out of memory, a lost worker, a bad input, a configuration or
checkpoint problem, or a bug. :func:`describe` turns that into one line for logs and the flow's state.
Local ``FileExistsError``, ``ENOSPC`` and ``ENAMETOOLONG`` are *not* transient: a retry would fail the
same way. Nothing here imports Prefect (Prefect's exceptions are recognised by name and module).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from ..errors import CheckpointError, ConfigError, InputError, SpadepisError, StorageError

__all__ = ["Failure", "classify", "describe", "is_transient"]


@dataclass(frozen=True)
class Failure:
    kind: str
    """Short name: prefect-api-unreachable, credentials-missing, disk-full, permission, bucket-missing, name-too-long, path-conflict,
    not-found, read-only, storage-unreachable, storage, out-of-memory, worker-lost, input, config, checkpoint, bug."""
    transient: bool
    what: str
    """What happened, in words."""
    advice: str
    """What to do."""

    @property
    def retry_text(self) -> str:
        return "transient: the shard is retried" if self.transient else "retrying will not help"


_PREFECT_API = Failure(
    "prefect-api-unreachable", True, "the Prefect API is unreachable",
    "check that the Prefect server at PREFECT_API_URL is up; shards not committed are redone when the same config runs again",
)


_NO_CREDENTIALS = {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError", "DefaultCredentialsError",
                   "NoAuthTokenError"}
_NO_CREDENTIALS_TEXT = ("unable to locate credentials", "could not automatically determine credentials",
                        "partial credentials found")
_CREDENTIALS_MISSING = Failure(
    "credentials-missing", False, "no credentials for the storage were found",
    "give them to the process doing the I/O: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or ~/.aws, a role) for s3, "
    "GOOGLE_APPLICATION_CREDENTIALS for gs, or references in storage_options ({env: VARIABLE} / {secret: BLOCK}); "
    "for `spadepis summary|gc|sheet` also --set storage_options.PROTOCOL.OPTION=...",
)


def _chain(exc: BaseException | None) -> list[BaseException]:
    out: list[BaseException] = []
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _oserror(exc: OSError, text: str) -> Failure | None:
    code = exc.errno
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return Failure("disk-full", False, "the disk is full (no space left on device)",
                       "free space on the output volume or choose another output, then run the same config again")
    if code == errno.ENAMETOOLONG:
        return Failure("name-too-long", False, "a file name is too long for the filesystem",
                       "shorten the output path or the input file names")
    if code == errno.EROFS:
        return Failure("read-only", False, "the filesystem is read-only", "choose a writable output")
    if "bucket does not exist" in text or "nosuchbucket" in text:
        return Failure("bucket-missing", False, "the bucket does not exist",
                       "create the bucket (spadepis never creates buckets) or fix its name in the config")
    if isinstance(exc, PermissionError) or code in (errno.EACCES, errno.EPERM) or "access denied" in text or "forbidden" in text:
        return Failure("permission", False, "permission denied",
                       "check the credentials and the permissions on the output (bucket policy, folder mode)")
    if isinstance(exc, (FileExistsError, NotADirectoryError, IsADirectoryError)) or code in (errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
        return Failure("path-conflict", False, "a file stands where a folder must go (or the reverse)",
                       "remove or rename what is in the way under the run folder")
    if isinstance(exc, FileNotFoundError):
        return Failure("not-found", False, "a file or folder is missing", "check the path; inputs must exist")
    return None


def classify(exc: BaseException | None) -> Failure:
    """Name the failure ``exc`` stands for (see the module docstring)."""
    chain = _chain(exc)
    if not chain:
        return Failure("none", False, "no error", "")
    for e in chain:  # first: a missing credential hides behind permission / connection errors of the storage library
        if type(e).__name__ in _NO_CREDENTIALS or any(t in str(e).lower() for t in _NO_CREDENTIALS_TEXT):
            return _CREDENTIALS_MISSING
    for e in chain:
        name, module = type(e).__name__, type(e).__module__ or ""
        text = str(e).lower()
        failure = getattr(e, "failure", None)
        if isinstance(failure, Failure):
            return failure
        if name in ("ConcurrencySlotAcquisitionError", "ConcurrencySlotAcquisitionServiceError") or (
            module.startswith(("httpx", "httpcore")) and ("connect" in name.lower() or "timeout" in name.lower())
        ):
            return _PREFECT_API
        if name == "OutOfMemoryError" or "out of memory" in text:
            return Failure("out-of-memory", True, "the device ran out of memory",
                           "retried; if it persists lower batch_size or max_side, or use a bigger device")
        if name in ("KilledWorker", "CommClosedError", "BrokenProcessPool"):  # Dask worker, smoothing process
            return Failure("worker-lost", True, "a worker process was lost", "retried on another worker")
        code = ""
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            code = str((response.get("Error") or {}).get("Code", ""))
        if code == "NoSuchBucket":
            return Failure("bucket-missing", False, "the bucket does not exist",
                           "create the bucket (spadepis never creates buckets) or fix its name in the config")
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "AllAccessDisabled"):
            return Failure("permission", False, f"the storage service refused the credentials ({code})",
                           "check the credentials (environment or Secret block) and the bucket policy")
        if isinstance(e, InputError):
            return Failure("input", False, "a bad input item", "fix or remove the input named in the message")
        if isinstance(e, CheckpointError):
            return Failure("checkpoint", False, "a checkpoint cannot be used", "fix the models.* fields as the message says")
        if isinstance(e, ConfigError):
            return Failure("config", False, "a configuration problem", "fix the config field named in the message")
        if isinstance(e, OSError) and not isinstance(e, StorageError):
            found = _oserror(e, text)
            if found is not None:
                return found
    for e in chain:
        name, module = type(e).__name__, type(e).__module__ or ""
        if isinstance(e, (ConnectionError, TimeoutError)) or module.startswith(
            ("botocore", "aiobotocore", "aiohttp", "s3fs", "urllib3", "requests", "gcsfs")
        ):
            return Failure("storage-unreachable", True, "the storage service is unreachable or timed out",
                           "retried; check the storage service and the network if it persists")
        if isinstance(e, OSError):
            return Failure("storage", True, "a storage operation failed",
                           "retried; check the storage service and credentials if it persists")
        if isinstance(e, SpadepisError):
            return Failure("error", False, "an error", "see the message")
    return Failure("bug", False, "an unexpected error (probably a bug)",
                   "report it with the traceback (spadepis version prints the versions)")


def describe(exc: BaseException) -> str:
    """``"<what happened> (<retry>): <Type>: <message>; <advice>"`` for logs and states (just ``"<Type>: <message>"``
    when the exception carries its :class:`Failure` and its message already says what, retry and advice)."""
    from .secrets import scrub

    f = classify(exc)
    if getattr(exc, "failure", None) is f:  # its message says all three already (storage errors): say them once
        return scrub(f"{type(exc).__name__}: {exc}")
    return scrub(f"{f.what} ({f.retry_text}): {type(exc).__name__}: {exc}; {f.advice}")


def is_transient(exc: BaseException | None) -> bool:
    """Whether retrying the shard may help (see :func:`classify`)."""
    return exc is not None and classify(exc).transient
