"""A long-lived worker process for the concurrency tests (tests/test_commit_races.py).

Reads one JSON command per line on stdin and answers one JSON line on stdout, so two of these race for real
(two processes, two interpreters) while the models are built once per process:

* ``{"op": "shard", "config": {...}, "shard": 0, "delay": 0.1}``: sleep ``delay``, then ``process_shard``;
* ``{"op": "lease", "run_uri": ..., "at": <epoch s>, "ttl": 30}``: at time ``at``, try to take the lease;
* ``{"op": "hold", "config": {...}, "ttl": 2}``: take the lease (heartbeat on), then process every shard fenced
  by it, reporting each one (the stalled-holder test stops this process with SIGSTOP in between).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback


def _answer(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> None:
    import torch

    torch.set_num_threads(1)
    from spadepis.pipeline.config import apply_storage_options, parse_config
    from spadepis.pipeline.lease import LeaseHeldError, RunLease
    from spadepis.pipeline.plan import make_plan
    from spadepis.pipeline.storage import RunStorage
    from spadepis.pipeline.worker import process_shard

    _answer({"ready": os.getpid()})
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            if cmd["op"] == "shard":
                cfg = parse_config(cmd["config"]).resolved()
                shard = make_plan(cfg).shards[cmd["shard"]]
                time.sleep(cmd.get("delay", 0.0))
                res = process_shard(cfg, shard)
                _answer({"ok": True, "skipped": res.skipped, "attempt_id": res.attempt_id, "superseded": res.superseded})
            elif cmd["op"] == "lease":
                if cmd.get("storage_options"):
                    from spadepis.data.fs import use_storage_options

                    use_storage_options(cmd["storage_options"])
                lease = RunLease(RunStorage(cmd["run_uri"]), ttl_s=cmd.get("ttl", 30), owner=f"racer {os.getpid()}")
                time.sleep(max(0.0, cmd["at"] - time.time()))
                try:
                    lease.acquire()
                    won = lease.info.lease_id
                    lease._stop.set()  # keep the lease file (the other racer must see it held), stop the heartbeat
                except LeaseHeldError as exc:
                    won = None
                    _answer({"ok": True, "won": None, "why": str(exc)[:200]})
                    continue
                _answer({"ok": True, "won": won})
            elif cmd["op"] == "hold":
                cfg = parse_config(cmd["config"]).resolved()
                apply_storage_options(cfg)
                storage = RunStorage(cfg.run_uri)
                lease = RunLease(storage, ttl_s=cmd["ttl"], owner=f"holder {os.getpid()}")
                lease.acquire()
                _answer({"event": "lease", "lease_id": lease.info.lease_id})
                for shard in make_plan(cfg).shards:
                    try:
                        res = process_shard(cfg, shard, fence=lease.info.lease_id)
                        _answer({"event": "shard", "shard": shard.name, "skipped": res.skipped})
                    except LeaseHeldError as exc:
                        _answer({"event": "lost", "shard": shard.name, "why": str(exc)})
                        break
                    time.sleep(cmd.get("pause", 0.0))
                lease.release()
                _answer({"ok": True, "done": True})
            else:
                _answer({"ok": False, "error": f"unknown op {cmd['op']}"})
        except Exception as exc:  # noqa: BLE001 - the test prints it
            _answer({"ok": False, "error": f"{type(exc).__name__}: {exc}", "tb": traceback.format_exc()[-3000:]})


if __name__ == "__main__":
    main()
