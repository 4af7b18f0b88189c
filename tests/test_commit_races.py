"""Committed means untouchable (issue 18), with real concurrency: two processes race on one shard and on one
expired lease, 20 rounds each with random delays, on local disk and on a real moto S3 server on loopback; a
stalled lease holder (SIGSTOP past its TTL, takeover, SIGCONT) is fenced off."""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline_helpers import make_inputs, small_config

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 20
BUCKET = "spadepis-races"


class Racer:
    """A tests/race_worker.py process: one JSON command in, one JSON answer out."""

    def __init__(self, tmp: Path, name: str, env: dict[str, str] | None = None):
        self.err = open(tmp / f"{name}.stderr", "w+")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "race_worker.py")], cwd=ROOT, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err,
            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})},
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        assert "ready" in self.read(180)

    def send(self, cmd: dict) -> None:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def _pump(self) -> None:
        for line in self.proc.stdout:  # a thread, not select(): lines buffered by readline would be missed
            self.lines.put(line)
        self.lines.put(None)

    def read(self, timeout: float = 120) -> dict:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.err.seek(0)
            raise AssertionError(f"racer {self.proc.pid} answered nothing in {timeout} s: {self.err.read()[-2000:]}") from None
        if line is None:
            self.err.seek(0)
            raise AssertionError(f"racer {self.proc.pid} exited: {self.err.read()[-3000:]}")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.err.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moto_s3():
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed: pip install -e '.[test]'")
    import boto3

    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    creds = dict(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", **creds).create_bucket(Bucket=BUCKET)
    env = {"SPADEPIS_RACE_S3_KEY": "testing", "SPADEPIS_RACE_S3_SECRET": "testing"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    options = {"endpoint_url": f"http://127.0.0.1:{port}", "key": {"env": "SPADEPIS_RACE_S3_KEY"},
               "secret": {"env": "SPADEPIS_RACE_S3_SECRET"}, "client_kwargs": {"region_name": "us-east-1"}}
    plain = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "testing", "secret": "testing",
             "client_kwargs": {"region_name": "us-east-1"}}
    yield {"options": options, "plain": plain, "env": env}
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(params=["local", "s3"])
def where(request, tmp_path):
    """(output folder, config overrides, racer env, fsspec options) of one store."""
    if request.param == "local":
        yield str(tmp_path / "runs"), {}, {}, None
        return
    s3 = request.getfixturevalue("moto_s3")
    from spadepis.data.fs import current_storage_options, use_storage_options

    saved = current_storage_options()  # this test's own readers: the options passed to each filesystem
    use_storage_options({**saved, "s3": s3["plain"]})
    prefix = f"s3://{BUCKET}/{tmp_path.name}"
    yield prefix, {"storage_options": {"s3": s3["options"]}}, s3["env"], s3["plain"]
    use_storage_options(saved)


def _config(root: Path, output: str, run_id: str, extra: dict, **kw):
    return small_config(root, output=output, run_id=run_id, models={"smoothing": "none"}, **extra, **kw)


def test_two_processes_race_on_one_shard(tmp_path, where):
    """(a) and issue case 1: each round two processes run shard 0 of a fresh run at once (one with batch_size 1,
    the other 2: different SPADE rounding, as on two GPUs), after random delays. Each round: exactly one valid
    marker and one part, every file a committed row names matches its sha256 and the size / sha256 the commit
    recorded, and the only files under the shard's output folders are the winner's (the loser removed its own)."""
    from spadepis.pipeline.storage import RunStorage
    from spadepis.pipeline.verify import verify_run

    output, extra, env, _ = where
    root = make_inputs(tmp_path / "in", n_maps=2, n_styles=2)
    a, b = Racer(tmp_path, "a", env), Racer(tmp_path, "b", env)
    rng = random.Random(18)
    both_computed = 0
    try:
        for r in range(ROUNDS):
            run_id = f"race{r:02d}"
            for racer, bs in ((a, 1), (b, 2)):
                cfg = _config(root, output, run_id, extra, batch_size=bs)
                racer.send({"op": "shard", "config": cfg.model_dump(mode="json"), "shard": 0, "delay": rng.uniform(0, 0.4)})
            answers = [a.read(), b.read()]
            if not all(x.get("ok") for x in answers):
                pytest.fail(f"round {r}: " + json.dumps(answers, indent=1))
            storage = RunStorage(_config(root, output, run_id, extra).resolved().run_uri)
            committed = storage.committed_shards()
            assert list(committed) == ["shard=00000"], (r, storage.invalid_markers)
            winner = committed["shard=00000"]["attempt_id"]
            assert {x["attempt_id"] for x in answers} == {winner}
            assert sum(not x["skipped"] for x in answers) == 1, answers
            both_computed += any(x["superseded"] for x in answers)
            listing = [p[len(storage.root) + 1:] for p in storage.fs.find(storage.root)]
            assert [p for p in listing if p.startswith("manifest/")] == [
                committed["shard=00000"]["part"], storage.success_rel(0)] or sorted(
                p for p in listing if p.startswith("manifest/")) == sorted([committed["shard=00000"]["part"], storage.success_rel(0)])
            outputs = [p for p in listing if not p.startswith("manifest/")]
            assert outputs and all(p.split("/")[2] == winner for p in outputs), (winner, outputs)
            assert set(outputs) == set(committed["shard=00000"]["files"])
            report = verify_run(storage)
            assert report.ok and report.files == 2 + 4, report.describe()  # 2 SPADE outputs, 4 images
    finally:
        a.close()
        b.close()
    print(f"\n{'s3' if where[0].startswith('s3://') else 'local'}: {ROUNDS} rounds, both processes computed the shard in {both_computed}")
    assert both_computed >= 1, "the delays never let both processes compute the shard: no race was tested"


def test_two_processes_race_to_take_over_an_expired_lease(tmp_path, where):
    """(b): each round an expired lease of a run elsewhere lies in a fresh run folder; two processes try to take it
    over at the same instant (jitter under 10 ms): exactly one wins, and the lease file names the winner."""
    from spadepis.pipeline.lease import LEASE, LeaseInfo
    from spadepis.pipeline.storage import RunStorage

    output, _, env, plain = where
    a, b = Racer(tmp_path, "a", env), Racer(tmp_path, "b", env)
    rng = random.Random(1818)
    try:
        for r in range(ROUNDS):
            storage = RunStorage(f"{output}/lease{r:02d}")
            t = time.time() - 100
            storage.write_bytes(LEASE, LeaseInfo("old", "a dead run", "elsewhere", 1, t, t, t + 1).to_json())
            at = time.time() + 0.5
            for racer in (a, b):
                racer.send({"op": "lease", "run_uri": storage.run_uri, "at": at + rng.uniform(0, 0.01), "ttl": 60,
                            "storage_options": {"s3": plain} if plain else None})
            answers = [a.read(), b.read()]
            assert all(x.get("ok") for x in answers), answers
            winners = [x["won"] for x in answers if x["won"]]
            assert len(winners) == 1, (r, answers)
            assert LeaseInfo.from_json(storage.read_bytes(LEASE)).lease_id == winners[0]
    finally:
        a.close()
        b.close()


def test_stalled_lease_holder_is_fenced(tmp_path):
    """(c) and issue case 2: a holder (TTL 2 s) is stopped with SIGSTOP after its first shard; a second process
    takes the lease over once it expired and does the rest; the first, resumed with SIGCONT, writes nothing
    more: it reports the lost lease, every committed file matches its row, and each marker names the lease
    of the process that committed it."""
    from spadepis.pipeline.storage import RunStorage
    from spadepis.pipeline.verify import verify_run

    root = make_inputs(tmp_path / "in", n_maps=8, n_styles=2)
    cfg = _config(root, str(tmp_path / "runs"), "stalled", {}, shard_size=2)
    a, b = Racer(tmp_path, "a"), Racer(tmp_path, "b")
    try:
        a.send({"op": "hold", "config": cfg.model_dump(mode="json"), "ttl": 2.0, "pause": 0.3})
        lease_a = a.read()["lease_id"]
        first = a.read()
        assert first["event"] == "shard" and not first["skipped"]
        os.kill(a.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(3.0)  # past its TTL
            b.send({"op": "hold", "config": cfg.model_dump(mode="json"), "ttl": 60.0})
            lease_b = b.read()["lease_id"]
            events_b = []
            while "done" not in (ev := b.read()):
                events_b.append(ev)
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)
        events_a = []
        while "done" not in (ev := a.read()):
            events_a.append(ev)
    finally:
        a.close()
        b.close()
    assert any(e["event"] == "lost" for e in events_a), events_a
    assert not any(e["event"] == "shard" and not e["skipped"] for e in events_a), events_a
    storage = RunStorage(cfg.resolved().run_uri)
    markers = storage.committed_shards()
    assert sorted(markers) == [f"shard={i:05d}" for i in range(4)]
    assert markers[first["shard"]]["lease_id"] == lease_a
    assert {m["lease_id"] for s, m in markers.items() if s != first["shard"]} == {lease_b}, events_b
    report = verify_run(storage)
    assert report.ok and report.files == 4 * (2 + 4), report.describe()


def test_check_probes_conditional_writes(tmp_path, where):
    """``spadepis check`` probes the output store: local disks, memory:// and moto's S3 refuse a second exclusive
    create (so first commit and lease takeover are atomic there)."""
    from spadepis.pipeline.storage import RunStorage

    output = where[0]
    assert RunStorage(f"{output}/probe").probe_conditional_write() is True
    assert RunStorage(f"memory://probe-{tmp_path.name}/r").probe_conditional_write() is True
