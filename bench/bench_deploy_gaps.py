"""Idle time between shards in a deployment run on a real Prefect server: before and after issue 20.

Before: `spadepis deploy` set a concurrency limit of 1 on the task tag ``gpu`` whatever the machine, so on a
CPU-only box every shard task was tagged and the shards of a run went one at a time, each paying Prefect's
concurrency-lease bookkeeping (about 2 s at its end) and waiting for the slot. After: ``--gpu-slots`` defaults to
the GPUs found, none here, so there is no limit, the shard tasks run untagged and side by side (the adhoc
default config runs 2 shards at once).

Both arms run the same thing: a real ``prefect server start`` on loopback (temporary PREFECT_HOME), ``spadepis
deploy`` (before: ``--gpu-slots 1``; after: the default), a process worker for the pool, and the ``adhoc``
deployment's default config (configs/adhoc.yaml: 12 generated label maps x 4 styles, 256 px, exact smoothing, 3
shards of 4 maps, at most 2 at once) with its own output folder per run. Read back through the API: every
shard task run's start and end. Printed per run: the flow run's wall time, the shards' span (first start to
last end), the idle time inside the span (no shard task running), its stretches and the longest. Both arms must write byte-identical images (sha256 column).

Usage::

    python bench/bench_deploy_gaps.py                 # before, after, 1 run each
    python bench/bench_deploy_gaps.py --repeat 2      # interleaved: before, after, before, after
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))


def _intervals(client, flow_run_id):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    trs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    out = []
    for tr in trs:
        if "shard=" in (tr.name or "") and tr.start_time and tr.end_time:
            out.append((tr.start_time.timestamp(), tr.end_time.timestamp(), tr.name, sorted(tr.tags or [])))
    return sorted(out)


def idle_figures(intervals: list[tuple[float, float, str, list[str]]]) -> dict:
    """Span of the shard tasks, time inside it with none running, and those idle stretches (the longest first)."""
    if not intervals:
        return {"span_s": 0.0, "idle_s": 0.0, "longest_idle_s": 0.0, "gaps_s": []}
    start, end = intervals[0][0], max(e for _, e, _, _ in intervals)
    busy, cur_s, cur_e, idle_parts = 0.0, intervals[0][0], intervals[0][1], []
    for s, e, _, _ in intervals[1:]:
        if s > cur_e:
            busy += cur_e - cur_s
            idle_parts.append(s - cur_e)
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    busy += cur_e - cur_s
    return {"span_s": end - start, "idle_s": (end - start) - busy, "longest_idle_s": max(idle_parts, default=0.0),
            "gaps_s": [round(g, 2) for g in idle_parts]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=1)
    args = p.parse_args()

    import yaml
    from test_deploy_e2e import Service, _client, _free_port, _prefect_env, _wait_healthy

    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-deploy-gaps-{os.getpid()}"
    tmp.mkdir(parents=True)
    home, work = tmp / "prefect-home", tmp / "work"
    home.mkdir()
    work.mkdir()
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = _prefect_env(home, api)
    env["SPADEPIS_PROJECT_DIR"] = str(work)
    bin_dir = Path(sys.executable).parent
    print(f"# python {sys.version.split()[0]}, {os.cpu_count()} cores; flow-run job variables OMP_NUM_THREADS=4 "
          f"(deployments/prefect.yaml); load average at start {os.getloadavg()}")
    server = Service("server", [str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                     env, tmp)
    worker = None
    base = yaml.safe_load((ROOT / "configs" / "adhoc.yaml").read_text())
    rows, shas = [], {}
    try:
        _wait_healthy(api, server)
        arms = [a for _ in range(args.repeat) for a in ("before", "after")]
        for k, arm in enumerate(arms):
            extra = ["--gpu-slots", "1"] if arm == "before" else []
            dep = subprocess.run([sys.executable, "-m", "spadepis", "deploy", "--api-url", api, *extra], env=env,
                                 cwd=ROOT, capture_output=True, text=True, timeout=300)
            assert dep.returncode == 0, dep.stdout + dep.stderr
            limit_line = [ln for ln in dep.stdout.splitlines() if "concurrency limit on tag" in ln]
            if worker is None:
                worker = Service("worker", [str(bin_dir / "prefect"), "worker", "start", "--pool", "spadepis",
                                            "--type", "process", "--limit", "1"], env, tmp)
            cfg = json.loads(json.dumps(base))
            cfg["output"] = f"out/{arm}-{k}/runs"
            out = subprocess.run([str(bin_dir / "prefect"), "deployment", "run", "spadepis-augment/adhoc", "--params",
                                  json.dumps({"config": cfg})], env=env, cwd=ROOT, capture_output=True, text=True,
                                 timeout=120)
            import re

            flow_run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", out.stdout).group(1)
            with _client(api) as client:
                while True:
                    run = client.read_flow_run(flow_run_id)
                    if run.state is not None and run.state.is_final():
                        break
                    time.sleep(1.0)
                assert run.state.is_completed(), f"{run.state!r}\n{worker.tail()}"
                ivs = _intervals(client, flow_run_id)
            fig = idle_figures(ivs)
            wall = (run.end_time - run.start_time).total_seconds()
            tags = sorted({t for *_, tt in ivs for t in tt})
            rows.append((arm, wall, fig, tags, limit_line[0].strip() if limit_line else "?"))
            import pandas as pd

            idx = pd.read_parquet(work / cfg["output"] / "adhoc" / "index.parquet")
            shas[f"{arm}-{k}"] = sorted(idx["sha256"].dropna())
            print(f"{arm:6s} run {k}: flow run {wall:6.1f} s; shards span {fig['span_s']:6.1f} s, idle inside it "
                  f"{fig['idle_s']:5.1f} s (longest {fig['longest_idle_s']:4.1f} s; stretches "
                  f"{fig['gaps_s']}); shard tags {tags}; {limit_line[0].strip() if limit_line else ''}", flush=True)
    finally:
        if worker is not None:
            worker.stop()
        server.stop()
    first = next(iter(shas.values()))
    print(f"# same outputs in every run (sha256 of all {len(first)} images): "
          f"{all(v == first for v in shas.values())}")
    print(f"# load average at end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
