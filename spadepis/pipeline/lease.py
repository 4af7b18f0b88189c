"""A lease on a run folder: one run at a time writes into ``<output>/<run_id>/``.

``<run>/_LEASE.json`` names its holder (owner, host, pid, flow run id), when it was taken, its last
heartbeat and when it expires. A run takes the lease before it writes anything and renews it from a
background thread every ``ttl/4`` seconds; a second run on the same folder is refused with who holds
it and since when, or waits for it (``lease.wait_s``). A lease whose holder stopped renewing is taken
over after it expires, and at once when its holder is a dead process on this same host (a killed run).

Creating the lease is a conditional write where the filesystem has one: ``O_EXCL`` on local disks,
``If-None-Match: *`` on S3 (AWS S3, MinIO and other stores that support it), ``xb`` in memory. Elsewhere
it is best effort (check, write, read back) and the record says ``"conditional": false``. Taking over an
expired lease deletes it and creates a new one conditionally, then reads it back; two runs racing for
the same expired lease can both get past the delete only where conditional writes are missing.
Expiry compares the reader's clock with the holder's heartbeat: keep clocks in sync (NTP) and the TTL
well above the clock skew.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import SpadepisError

__all__ = ["LEASE", "LeaseHeldError", "LeaseLostError", "LeaseInfo", "RunLease"]

LEASE = "_LEASE.json"


class LeaseHeldError(SpadepisError):
    """Another run holds the run folder's lease."""


class LeaseLostError(LeaseHeldError):
    """This run held the lease and another run took it over: nothing more may be written or committed."""


def _iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class LeaseInfo:
    lease_id: str
    owner: str
    host: str
    pid: int
    acquired_at: float
    heartbeat_at: float
    expires_at: float
    flow_run_id: str | None = None
    conditional: bool = True

    def to_json(self) -> bytes:
        d = dict(self.__dict__)
        d.update(acquired=_iso(self.acquired_at), heartbeat=_iso(self.heartbeat_at), expires=_iso(self.expires_at))
        return json.dumps(d, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "LeaseInfo | None":
        try:
            d = json.loads(data)
            return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
        except (ValueError, TypeError, KeyError):
            return None  # torn: treated as expired

    def expired(self, now: float | None = None) -> bool:
        return (now or time.time()) > self.expires_at

    def holder_dead_here(self) -> bool:
        """The holder is a process on this host that no longer exists (a killed run)."""
        if self.host != socket.gethostname() or self.pid <= 0:
            return False
        if self.pid == os.getpid():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def describe(self) -> str:
        who = f"{self.owner} on host {self.host} (pid {self.pid}" + (f", flow run {self.flow_run_id}" if self.flow_run_id else "") + ")"
        return f"{who} since {_iso(self.acquired_at)}, last heartbeat {_iso(self.heartbeat_at)}, expires {_iso(self.expires_at)}"


class RunLease:
    """The lease of one run folder. ``with RunLease(storage, ttl_s=120) as lease: ...``."""

    def __init__(self, storage: Any, *, ttl_s: float = 120.0, owner: str | None = None, flow_run_id: str | None = None,
                 log: Callable[[str], None] | None = None):
        self.storage = storage
        self.ttl_s = float(ttl_s)
        self.owner = owner or f"spadepis run {storage.run_uri.rsplit('/', 1)[-1]}"
        self.flow_run_id = flow_run_id
        self.log = log or (lambda msg: None)
        self.info: LeaseInfo | None = None
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------------------------- storage
    @property
    def _path(self) -> str:
        return self.storage.path(LEASE)

    def read(self) -> LeaseInfo | None:
        try:
            data = self.storage.read_bytes(LEASE)
        except FileNotFoundError:
            return None
        return LeaseInfo.from_json(data) or LeaseInfo("torn", "unknown", "unknown", 0, 0.0, 0.0, 0.0)

    def _create(self, data: bytes) -> bool:
        """Create the lease file only if absent (a conditional write where the store has one); ``False`` when it exists."""
        return self.storage.create_bytes(LEASE, data)

    def _claim_takeover(self, stale_raw: bytes) -> bool:
        """Claim the takeover of the expired lease whose bytes are ``stale_raw``: an exclusive create of
        ``_LEASE.takeover-<sha of those bytes>``, so of two runs racing to take over one expired lease exactly
        one wins (the token stays; it names one lease generation, which never comes back). A claim whose taker
        died before writing the new lease would block that lease for ever: a claim older than the lease's ttl
        (at least 10 s) is stale, and the next claim is the exclusive create of ``<token>.1`` (then ``.2``, ...),
        so exactly one of the runs that find it stale wins again."""
        import hashlib

        base = f"_LEASE.takeover-{hashlib.sha256(stale_raw).hexdigest()[:32]}"
        now = time.time()
        payload = json.dumps({"by": self.owner, "pid": os.getpid(), "host": socket.gethostname(), "at": _iso(now),
                              "at_s": now}).encode()
        for generation in range(1000):
            token = base if generation == 0 else f"{base}.{generation}"
            if self.storage.create_bytes(token, payload):
                return True
            try:
                claimed_at = float(json.loads(self.storage.read_bytes(token))["at_s"])
            except (FileNotFoundError, ValueError, KeyError, TypeError):
                return False  # a claim of an older release, or unreadable: counted as live
            if time.time() - claimed_at < max(10.0, self.ttl_s):
                return False  # its taker is writing the new lease
        return False

    # ---------------------------------------------------------------------------------- public
    def acquire(self, *, wait_s: float = 0.0, poll_s: float | None = None) -> LeaseInfo | None:
        """Take the lease, waiting up to ``wait_s`` for a live holder; returns the stale lease taken over
        (its holder's flow run can then be marked crashed) or ``None``. Raises :class:`LeaseHeldError`."""
        deadline = time.monotonic() + max(0.0, wait_s)
        poll = poll_s or min(5.0, max(0.2, self.ttl_s / 8))
        waited = False
        while True:
            now = time.time()
            mine = LeaseInfo(uuid.uuid4().hex, self.owner, socket.gethostname(), os.getpid(), now, now, now + self.ttl_s,
                             self.flow_run_id, conditional=self.storage.conditional_write)
            taken_over = None
            try:
                raw = self.storage.read_bytes(LEASE)
            except FileNotFoundError:
                raw = None
            current = None if raw is None else (LeaseInfo.from_json(raw) or LeaseInfo("torn", "unknown", "unknown", 0, 0.0, 0.0, 0.0))
            if current is not None and (current.expired() or current.holder_dead_here()):
                if self._claim_takeover(raw):
                    why = "its holder process is gone" if current.holder_dead_here() else "it expired"
                    self.log(f"taking over the lease of {current.owner} ({why}): {current.describe()}")
                    try:
                        self.storage.fs.rm(self._path)
                    except FileNotFoundError:
                        pass
                    taken_over, current = current, None
                else:  # another run claimed this takeover first: it holds (or is about to hold) the lease
                    time.sleep(min(0.05, poll))
                    current = self.read() or current
            if current is None and self._create(mine.to_json()):
                back = self.read()
                if back is not None and back.lease_id == mine.lease_id:
                    self.info = mine
                    self._start_heartbeat()
                    return taken_over
                current = back
            if current is None:
                continue  # raced with a release: try again
            if current.expired() or current.holder_dead_here():
                if time.monotonic() >= deadline + 5 * poll:
                    raise LeaseHeldError(f"{self.storage.run_uri}: the expired lease of {current.describe()} is being "
                                         "taken over by another run; try again")
                time.sleep(poll / 4)
                continue
            if time.monotonic() >= deadline:
                hint = "" if waited else " Wait for it with --wait-lease SECONDS (config lease.wait_s),"
                raise LeaseHeldError(
                    f"{self.storage.run_uri} is in use by {current.describe()}.{hint} or choose another run_id / output. "
                    f"A lease of a killed run is taken over when it expires (lease.ttl_s), at once when its process on "
                    f"this host is gone; delete {self.storage.uri(LEASE)} only if you are sure that run is dead."
                )
            if not waited:
                self.log(f"waiting up to {wait_s:.0f} s for the lease held by {current.describe()}")
                waited = True
            time.sleep(poll)

    def renew(self) -> bool:
        """Extend the lease; ``False`` (and ``lost`` set) when another run holds it now."""
        if self.info is None:
            return False
        current = self.read()
        if current is None or current.lease_id != self.info.lease_id:
            self.lost.set()
            self.log(f"lost the lease of {self.storage.run_uri}: now " + (current.describe() if current else "nobody holds it"))
            return False
        now = time.time()
        self.info = LeaseInfo(**{**self.info.__dict__, "heartbeat_at": now, "expires_at": now + self.ttl_s})
        self.storage.write_bytes(LEASE, self.info.to_json(), atomic=True)
        return True

    def _start_heartbeat(self) -> None:
        self._stop.clear()

        def beat() -> None:
            while not self._stop.wait(self.ttl_s / 4):
                try:
                    if not self.renew():
                        return
                except Exception as exc:  # noqa: BLE001 - a missed heartbeat is retried at the next beat
                    self.log(f"lease heartbeat failed ({type(exc).__name__}: {exc}); retrying")

        self._thread = threading.Thread(target=beat, name="spadepis-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop the heartbeat and delete the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self.info is None:
            return
        try:
            current = self.read()
            if current is not None and current.lease_id == self.info.lease_id:
                self.storage.fs.rm(self._path)
        except Exception as exc:  # noqa: BLE001 - it expires anyway
            self.log(f"could not release the lease ({type(exc).__name__}: {exc}); it expires by itself")
        self.info = None

    def __enter__(self) -> "RunLease":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
