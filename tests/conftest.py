"""Shared test fixtures.

* ``shared``: the ``../shared`` folder (parity fixtures, sample data, real weights). Tests that use it
  skip with a clear reason when it is absent (a user's fresh clone has none of it).
* ``prefect_harness``: one Prefect test harness (ephemeral API + SQLite) for the whole session;
  starting it costs ~10 s, so every test that needs Prefect shares it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPADEPIS_SHARED", ROOT.parent / "shared")).resolve()


def shared_path(*parts: str) -> Path:
    """Path inside ../shared, or skip the calling test with the reason."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the ../shared fixtures, not part of a fresh clone); set SPADEPIS_SHARED to use another copy")
    return path


@pytest.fixture(scope="session")
def shared() -> Path:
    return shared_path()


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
