"""The CLI and Prefect's temporary API server: a start-up deadline fitting a busy machine when the user set none,
and three plain lines (what happened, the variable to raise, how to use a running server) instead of a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from spadepis.cli import _prefect_server as ps

ROOT = Path(__file__).resolve().parents[1]


def test_deadline_default_only_when_the_user_set_none(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    monkeypatch.delenv("PREFECT_PROFILES_PATH", raising=False)
    monkeypatch.delenv("PREFECT_PROFILE", raising=False)
    monkeypatch.delenv(ps.STARTUP_VAR, raising=False)
    ps.default_startup_deadline()
    assert os.environ[ps.STARTUP_VAR] == str(ps.STARTUP_DEFAULT_S) and ps.STARTUP_DEFAULT_S > 20
    monkeypatch.setenv(ps.STARTUP_VAR, "45")  # the user's environment wins
    ps.default_startup_deadline()
    assert os.environ[ps.STARTUP_VAR] == "45"
    monkeypatch.delenv(ps.STARTUP_VAR)  # so does the active profile (prefect config set ...)
    (tmp_path / "profiles.toml").write_text(
        f'active = "mine"\n[profiles.mine]\n{ps.STARTUP_VAR} = "33"\n[profiles.other]\n')
    ps.default_startup_deadline()
    assert ps.STARTUP_VAR not in os.environ
    monkeypatch.setenv("PREFECT_PROFILE", "other")
    ps.default_startup_deadline()
    assert os.environ[ps.STARTUP_VAR] == str(ps.STARTUP_DEFAULT_S)


def test_a_server_that_misses_its_deadline_gives_three_lines_not_a_traceback(tmp_path):
    """A 1 s deadline on a fresh Prefect home (the server must create its database first) is always missed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PYTHONPATH=str(ROOT), DO_NOT_TRACK="1",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", **{ps.STARTUP_VAR: "1"})
    proc = subprocess.run([sys.executable, "-m", "spadepis", "demo", "--out", str(tmp_path / "demo"), "--n-maps", "1"],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(("spadepis demo: error", "  "))]
    assert len(lines) == 3, proc.stderr
    assert "did not start within 1 s" in lines[0]
    assert f"export {ps.STARTUP_VAR}=300" in lines[1]
    assert "prefect server start" in lines[2] and "export PREFECT_API_URL=http://127.0.0.1:4200/api" in lines[2]
    assert not (tmp_path / "demo" / "runs").exists()  # nothing ran


def test_other_runtime_errors_are_not_mistaken_for_the_timeout():
    assert not ps.is_startup_timeout(RuntimeError("something else"))
    wrapped = ValueError("outer")
    wrapped.__cause__ = RuntimeError("Timed out while attempting to connect to ephemeral Prefect API server.")
    assert ps.is_startup_timeout(wrapped)
