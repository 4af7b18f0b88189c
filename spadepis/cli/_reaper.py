"""Clean exits for ``spadepis run``: every process it started ends with it, however it ends.

* SIGTERM is turned into an orderly exit (like Ctrl-C / SIGINT): the flow run is marked Crashed, the lease
  is released, the temporary Prefect server and the smoothing processes are stopped by their owners.
* A *reaper* process watches the command from outside (its own session, a pipe whose end closes when the
  command's process dies for any reason, ``kill -9`` included). It keeps a list of the processes the
  command started (its descendants, polled every 0.3 s from ``/proc``); when the pipe closes without the
  command having said "done", it sends SIGTERM to those still alive, then SIGKILL after 3 s. Processes that
  existed before it started are never touched (a test runner calling ``main(["run", ...])``).

Linux only (``/proc``); elsewhere the reaper is not started and the signal handling alone applies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

__all__ = ["Reaper", "graceful_sigterm"]

POLL_S = 0.3
GRACE_S = 3.0


def _stat(pid: int) -> tuple[int, str] | None:
    """``(parent pid, start time)`` of ``pid`` from ``/proc``, or ``None`` when it is gone (a zombie is gone:
    it has ended and only waits for its parent to collect its status)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except OSError:
        return None
    rest = data[data.rfind(")") + 2 :].split()  # after "pid (comm) ": state, ppid, ..., starttime
    if rest[0] in ("Z", "X"):
        return None
    return int(rest[1]), rest[19]


def _descendants(root: int) -> dict[int, str]:
    """``{pid: start time}`` of every live descendant of ``root``."""
    children: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = _stat(int(name))
        if st is not None:
            children.setdefault(st[0], []).append(int(name))
            starts[int(name)] = st[1]
    out: dict[int, str] = {}
    todo = list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        if pid in out or pid not in starts:
            continue
        out[pid] = starts[pid]
        todo.extend(children.get(pid, ()))
    return out


def _alive(pid: int, start: str) -> bool:
    st = _stat(pid)
    return st is not None and st[1] == start


def _reap(tracked: dict[int, str]) -> None:
    me = os.getpid()
    victims = {p: s for p, s in tracked.items() if p != me and _alive(p, s)}
    for pid in victims:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline and any(_alive(p, s) for p, s in victims.items()):
        time.sleep(0.05)
    for pid, start in victims.items():
        if _alive(pid, start):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _watch(parent: int, baseline: set[int]) -> None:
    """The reaper's main loop (runs in the reaper process)."""
    import select

    tracked: dict[int, str] = {}
    stdin = sys.stdin.buffer
    while True:
        ready, _, _ = select.select([stdin], [], [], POLL_S)
        if ready:
            line = stdin.readline()
            if line.strip() == b"done":
                return  # the command ended normally: its own cleanup ran
            if not line:  # the command's process is gone (any way, kill -9 too)
                _reap(tracked)
                return
        for pid, start in _descendants(parent).items():
            if pid not in baseline and pid != os.getpid():
                tracked[pid] = start


class Reaper:
    """Start with :meth:`start` at the beginning of the command, call :meth:`done` when it ends normally."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Reaper":
        if not sys.platform.startswith("linux") or not os.path.isdir("/proc"):
            return self
        baseline = ",".join(str(p) for p in _descendants(os.getpid()))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from spadepis.cli._reaper import _watch; "
             "_watch(int(sys.argv[1]), {int(p) for p in sys.argv[2].split(',') if p})", str(os.getpid()), baseline],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # not in the command's process group: a Ctrl-C / killpg does not stop it first
            close_fds=True,
        )
        return self

    def done(self) -> None:
        """The command ended in order: the reaper leaves without touching anything."""
        if self.proc is None:
            return
        try:
            self.proc.stdin.write(b"done\n")  # type: ignore[union-attr]
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.proc = None


class Terminated(SystemExit):
    """SIGTERM arrived: exit in order, with status 143 (128 + 15)."""


EXIT_GRACE_S = 3.0
"""After SIGTERM / SIGINT, the orderly exit gets this long; then the process ends at once (the reaper ends
what is left), so a stop never takes more than a few seconds."""


@contextmanager
def graceful_sigterm():
    """Inside the block, SIGTERM raises :class:`Terminated` in the main thread (as Ctrl-C raises
    KeyboardInterrupt), so ``finally`` blocks, Prefect's crash handling and atexit cleanups run; if that takes
    more than :data:`EXIT_GRACE_S`, the process exits anyway (status 128 + signal).

    While a flow runs, Prefect's engine puts its own SIGTERM handler in front (it reports the crash, then calls
    this one), so after SIGTERM the deadline starts only once Prefect's crash report is done."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def deadline(signum: int) -> None:
        def stop() -> None:
            time.sleep(EXIT_GRACE_S)
            os._exit(128 + signum)

        threading.Thread(target=stop, name="spadepis-exit-deadline", daemon=True).start()

    def on_term(signum, frame):  # noqa: ARG001 - signal handler signature
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
        deadline(signum)
        raise Terminated(128 + signal.SIGTERM)

    def on_int(signum, frame):  # noqa: ARG001
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # a second Ctrl-C ends the process at once
        deadline(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term), signal.signal(signal.SIGINT, on_int)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
