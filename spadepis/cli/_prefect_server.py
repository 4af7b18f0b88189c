"""Prefect's temporary API server as the CLI meets it: a start-up deadline that fits a busy machine, and three
plain lines instead of a traceback when it still does not start.

Without ``PREFECT_API_URL``, Prefect starts a temporary ("ephemeral") API server for each command that runs a
flow and waits ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`` for it (Prefect's default: 20 s, which a
loaded 2-core machine misses: the server migrates its SQLite database and imports its whole app first).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

STARTUP_VAR = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
STARTUP_DEFAULT_S = 180  # the CLI's deadline when the user set none (Prefect's own default is 20 s)
_TIMEOUT_TEXT = "attempting to connect to ephemeral Prefect API server"


def _set_in_profile(var: str) -> bool:
    """Whether the active Prefect profile (``prefect config set ...``) sets ``var``."""
    home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml")).expanduser()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, ValueError):
        return False
    active = os.environ.get("PREFECT_PROFILE") or data.get("active") or "ephemeral"
    return var in (data.get("profiles", {}).get(active) or {})


def default_startup_deadline() -> None:
    """Give the temporary server :data:`STARTUP_DEFAULT_S` seconds to start unless the user chose a deadline (in
    the environment or the active Prefect profile). Call before Prefect is imported (it reads settings then)."""
    if STARTUP_VAR not in os.environ and not _set_in_profile(STARTUP_VAR):
        os.environ[STARTUP_VAR] = str(STARTUP_DEFAULT_S)


def is_startup_timeout(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) is Prefect's "timed out ... ephemeral Prefect API server"."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, RuntimeError) and _TIMEOUT_TEXT in str(exc):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def startup_timeout_message(command: str) -> str:
    """The three lines the CLI prints instead of Prefect's traceback."""
    deadline = os.environ.get(STARTUP_VAR, "20")
    raised = max(2 * int(float(deadline)) if deadline.replace(".", "", 1).isdigit() else 0, 300)
    return (
        f"spadepis {command}: error: Prefect's temporary API server did not start within {deadline} s "
        "(the machine is busy or slow); no flow run was started.\n"
        f"  Give it longer: export {STARTUP_VAR}={raised}\n"
        "  Or use a running server instead: `prefect server start` in another shell, then "
        "export PREFECT_API_URL=http://127.0.0.1:4200/api"
    )
