"""Clean exits of ``spadepis run`` with real signals: SIGTERM, SIGINT and SIGKILL of the command while it runs
with its temporary Prefect server and smoothing processes. Every process it started ends within a few seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from pipeline_helpers import make_inputs, small_config

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _gone(pids: dict[int, str]) -> bool:
    from spadepis.cli._reaper import _alive

    return not any(_alive(p, s) for p, s in pids.items())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=["SIGTERM", "SIGINT", "SIGKILL"])
def test_run_leaves_no_process_behind(tmp_path, sig):
    from spadepis.cli._reaper import _descendants

    root = make_inputs(tmp_path, n_maps=40)
    cfg = small_config(root, run_id="sig", models={"smoothing": "exact"},
                       runner={"kind": "thread", "max_concurrency": 1, "smoothing_workers": 2})
    path = tmp_path / "sig.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PYTHONPATH=ROOT, DO_NOT_TRACK="1",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
               OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "spadepis", "run", str(path)], env=env, cwd=str(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        seen: dict[int, str] = {}
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            now = _descendants(proc.pid)
            seen.update(now)
            cmds = [_cmdline(p) for p in now]
            server = any("uvicorn" in c or "prefect.server" in c for c in cmds)
            smoothing = sum("multiprocessing" in c and "spawn" in c for c in cmds)
            if server and smoothing >= 2:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"the run never had its server and smoothing processes up (exit {proc.poll()}): "
                        f"{proc.stderr.read().decode()[-2000:] if proc.poll() is not None else ''}")
        seen.update(_descendants(proc.pid))
        t0 = time.monotonic()
        os.kill(proc.pid, sig)
        exited = None
        while time.monotonic() - t0 < 15 and not (_gone(seen) and proc.poll() is not None):
            if exited is None and proc.poll() is not None:
                exited = time.monotonic() - t0
            time.sleep(0.1)
        elapsed = time.monotonic() - t0
        print(f"\n{sig.name}: the command ended after {exited if exited is not None else elapsed:.1f} s, every process "
              f"it started ({len(seen)}) after {elapsed:.1f} s")
        left = {p: _cmdline(p)[:120] for p, s in seen.items() if not _gone({p: s})}
        assert not left, f"still running {elapsed:.1f} s after {sig.name}: {left}"
        assert proc.poll() is not None
        if sig == signal.SIGTERM:
            assert proc.returncode == 143, proc.returncode
        elif sig == signal.SIGINT:
            assert proc.returncode == 130, proc.returncode
        assert elapsed < 10, f"{elapsed:.1f} s to end everything after {sig.name} (the command itself: {exited} s)"
        if sig != signal.SIGKILL:
            err = proc.stderr.read().decode()
            assert "Traceback" not in err.split("\n")[-5:], err[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
