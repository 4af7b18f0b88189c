"""Deployments end to end, with real components: ``prefect server start``, ``spadepis deploy`` (which
runs ``prefect deploy`` on ``deployments/prefect.yaml``), ``prefect worker start --pool spadepis`` and
``prefect deployment run spadepis-augment/adhoc``.

The server and the worker are subprocesses in their own process groups on a free loopback port
with a temporary PREFECT_HOME; they are stopped by process-group id (worker first, then server) and
the test checks that none of their processes is left.

Also here, fast: ``deployments/prefect.yaml`` is well-formed and its default parameters are the
configs it names.

``SPADEPIS_E2E_VENV=/path/to/venv`` runs the end-to-end tests against that environment's spadepis (``.ci/run``
points it at a plain, non-editable ``pip install .``): ``spadepis deploy``, ``prefect`` and the worker come from
there, run outside the checkout, and the flow runs work in an empty folder instead of a copy of the checkout.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PREFECT_FILE = ROOT / "deployments" / "prefect.yaml"
FLOW = "spadepis-augment"
E2E_VENV = os.environ.get("SPADEPIS_E2E_VENV")
BIN = Path(E2E_VENV) / "bin" if E2E_VENV else Path(sys.executable).parent
PYTHON = str(BIN / "python") if E2E_VENV else sys.executable


# --------------------------------------------------------------------------------------- fast checks


def _prefect_yaml() -> dict:
    return yaml.safe_load(PREFECT_FILE.read_text())


def _named_config(text: str, deployment: str) -> Path:
    """The ``# parameters: configs/X.yaml`` comment inside a deployment's block."""
    block = text.split(f"- name: {deployment}", 1)[1].split("- name:", 1)[0]
    m = re.search(r"#\s*parameters:\s*(configs/\S+\.yaml)", block)
    assert m, f"deployment {deployment!r} in {PREFECT_FILE} has no '# parameters: configs/<name>.yaml' comment"
    return ROOT / m.group(1)


def test_prefect_yaml_shape():
    spec = _prefect_yaml()
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert {"nightly-augmentation", "adhoc"} <= set(deployments)
    for name, d in deployments.items():
        assert d["entrypoint"] == "spadepis.flows.augment:augment", name  # a module: works from any install
        assert d["enforce_parameter_schema"] is True, name
        assert d["work_pool"]["name"] == "spadepis", name
        env = d["work_pool"]["job_variables"]["env"]
        assert "CUDA_VISIBLE_DEVICES" in env, name
        assert set(d["parameters"]) == {"config"}, name
    nightly = deployments["nightly-augmentation"]
    assert len(nightly["schedules"]) == 1
    sched = nightly["schedules"][0]
    assert sched["active"] is False, "the nightly schedule must stay off until the user turns it on"
    from prefect.client.schemas.schedules import CronSchedule

    CronSchedule(cron=sched["cron"], timezone=sched["timezone"])  # a valid cron expression
    (step,) = spec["pull"]
    assert step["prefect.deployments.steps.set_working_directory"]["directory"] == "{{ $SPADEPIS_PROJECT_DIR }}"


def test_the_package_ships_the_deployment_file():
    """A plain install has no checkout: ``spadepis deploy`` uses the copy inside the package, the same file."""
    import tomllib

    from spadepis.cli import deploy

    assert deploy.PACKAGED_PREFECT_FILE.read_text() == PREFECT_FILE.read_text()
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["spadepis"]
    assert deploy.PACKAGED_PREFECT_FILE.relative_to(ROOT / "spadepis").as_posix() in data


@pytest.mark.parametrize("deployment", ["nightly-augmentation", "adhoc"])
def test_prefect_yaml_defaults_are_the_named_config(deployment):
    from spadepis.pipeline.config import parse_config

    text = PREFECT_FILE.read_text()
    path = _named_config(text, deployment)
    assert path.is_file(), f"{PREFECT_FILE}: deployment {deployment!r} names {path}, which does not exist"
    params = {d["name"]: d for d in _prefect_yaml()["deployments"]}[deployment]["parameters"]["config"]
    expected = yaml.safe_load(path.read_text())
    assert params == expected, (
        f"{PREFECT_FILE}: the default `config` of {deployment!r} differs from {path.name}; copy the file's "
        "content into the deployment's parameters.config"
    )
    parse_config(params, source=f"{PREFECT_FILE.name}:{deployment}")  # a valid RunConfig


def test_deploy_command_errors_say_what_to_do(tmp_path):
    from spadepis.cli import main

    def run(*argv):
        import contextlib
        import io

        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(["deploy", *argv])
        return code, err.getvalue()

    port = _free_port()  # nothing listens there
    code, err = run("--api-url", f"http://127.0.0.1:{port}/api")
    assert code == 1 and "not reachable" in err and "prefect server start" in err, err
    code, err = run("--gpu-slots", "-1", "--api-url", f"http://127.0.0.1:{port}/api")
    assert code == 1 and "--gpu-slots -1" in err and "0 (no limit) or more" in err, err
    code, err = run("--prefect-file", str(tmp_path / "nope.yaml"), "--api-url", f"http://127.0.0.1:{port}/api")
    assert code == 1 and "nope.yaml" in err and "not found" in err and "--prefect-file" in err, err


def test_run_form_descriptions_render_as_written_and_show_list_defaults():
    """The Prefect UI renders field descriptions as markdown: no underscore may sit outside a code span (it would
    turn text into italics); a list or dict whose default comes from a factory shows that default, not "No items"."""
    from prefect.utilities.callables import parameter_schema

    from spadepis.flows.augment import augment

    defs = parameter_schema(augment).model_dump()["definitions"]
    bad = [f"{model}.{name}: {prop['description']}" for model, d in defs.items()
           for name, prop in d.get("properties", {}).items()
           if "_" in re.sub(r"`[^`]*`", "", prop.get("description", ""))]
    assert not bad, "\n".join(bad)
    dataset = defs["DatasetConfig"]["properties"]
    assert dataset["strip_suffixes"]["default"] == ["_labelIds", "_instanceIds", "_gtFine", "_leftImg8bit"]
    assert "`aachen_..._gtFine_labelIds.png`" in dataset["strip_suffixes"]["description"]
    assert dataset["preset_overrides"]["default"] == {}


def test_gpu_slots_default_to_the_gpus_found(monkeypatch):
    from spadepis.cli import deploy

    args = deploy.argparse.ArgumentParser()
    deploy.register(args.add_subparsers())
    assert args.parse_args(["deploy"]).gpu_slots is None  # decided in deploy(): the GPUs found
    try:
        import torch

        want = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:  # pragma: no cover
        want = 0
    assert deploy.gpus_found() == want


# ------------------------------------------------------------------------------- process harness


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a pid reused by another user
        return True
    return True


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _alive(pids: list[int]) -> list[int]:
    import psutil

    out = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


class Service:
    """A subprocess in its own session/process group, stopped by group id; output goes to a log file."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_dir: Path, cwd: Path = ROOT):
        self.name = name
        self.log = log_dir / f"{name}.log"
        self._fh = open(self.log, "wb")
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=self._fh, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.pgid = self.proc.pid  # new session: the leader's pid is the group id
        self.seen: set[int] = {self.proc.pid}

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def track(self) -> None:
        """Remember every current descendant, so the stop check also covers processes that left the group."""
        self.seen.update(_descendants(self.proc.pid))

    def stop(self, timeout: float = 30.0) -> list[int]:
        """SIGTERM the group, wait, SIGKILL what is left; return the pids still alive afterwards (should be [])."""
        self.track()
        if _group_alive(self.pgid):
            os.killpg(self.pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        again = time.monotonic() + 10  # Prefect's worker turns a first SIGTERM into a graceful SIGINT of itself, which
        # can hang; a second SIGTERM is its documented escalation (it then kills itself): send it after 10 s
        while time.monotonic() < deadline and (_group_alive(self.pgid) or _alive(sorted(self.seen))):
            if again is not None and time.monotonic() >= again:
                again = None
                try:
                    os.killpg(self.pgid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            if self.proc.poll() is None:
                try:
                    self.proc.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    pass
            else:
                time.sleep(0.2)
        leftovers = _alive(sorted(self.seen))
        if _group_alive(self.pgid) or leftovers:
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            for pid in leftovers:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        self._fh.close()
        time.sleep(0.2)
        return leftovers + ([self.pgid] if _group_alive(self.pgid) else [])


def _prefect_env(home: Path, api_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    if E2E_VENV:  # the installed copy only: nothing of the checkout on the path
        env.pop("PYTHONPATH", None)
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update({
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api_url,
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_CLI_WRAP_LINES": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",  # only the runs the test makes
        "SPADEPIS_PROJECT_DIR": str(ROOT),
        "PYTHONUNBUFFERED": "1",
    })
    return env


def _wait_healthy(url: str, server: Service, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with {server.proc.returncode}:\n{server.tail()}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"prefect server not healthy at {url}/health after {timeout:.0f}s:\n{server.tail()}")


# ------------------------------------------------------------------------------------ test data


def _make_inputs(root: Path, n_labels: int = 6, size: int = 64) -> tuple[Path, Path]:
    """A few procedurally generated ADE20K label maps (blobs of a handful of classes) and 2 style photos."""
    from PIL import Image
    from skimage import data as skdata

    labels = root / "labels"
    styles = root / "styles"
    labels.mkdir(parents=True)
    styles.mkdir(parents=True)
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n_labels):
        lab = np.full((size, size), 3, np.uint8)  # ADE20K 1-based ids as stored in the PNGs: 3 = sky
        for cls in rng.choice([1, 2, 5, 7, 13, 18], size=4, replace=False):
            cy, cx, r = rng.integers(0, size, 2).tolist() + [int(rng.integers(size // 8, size // 3))]
            lab[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = cls
        Image.fromarray(lab, mode="L").save(labels / f"scene_{i:02d}.png")
    for name, img in (("coffee", skdata.coffee()), ("chelsea", skdata.chelsea())):
        Image.fromarray(img).resize((size, size)).save(styles / f"{name}.png")
    return labels, styles


def _small_config(inputs: Path, out: Path, run_id: str, **extra) -> dict:
    labels, styles = inputs / "labels", inputs / "styles"
    cfg = {
        "dataset": {"preset": "ade20k", "preset_overrides": {"crop_size": 64}, "labels": str(labels)},
        "styles": {"source": str(styles)},
        "models": {"synth_checkpoint": "random-init", "ngf": 8, "stylizer": "color", "smoothing": "fast"},
        "output": str(out),
        "run_id": run_id,
        "shard_size": 2,
        "batch_size": 2,
        "device": "cpu",
        "runner": {"kind": "thread", "max_concurrency": 1},
        "retries": {"count": 0, "delay": 0},
    }
    for key, value in extra.items():
        cfg[key] = value
    return cfg


# ---------------------------------------------------------------------------------- the stack


def _fresh_checkout(dest: Path) -> Path:
    """A copy of the project as a fresh clone has it: no out/, runs/, venvs or caches (so no demo inputs)."""
    import shutil

    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".ci-venv", ".ci-venv-plain", "out", "runs", "__pycache__", "*.egg-info", ".pytest_cache", "results", ".gl"))
    assert not (dest / "out").exists()
    return dest


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A real Prefect server + ``spadepis deploy`` from a fresh copy of the checkout (or, with SPADEPIS_E2E_VENV,
    from a plain install, run in an empty folder) + a process worker for the pool started with the command
    ``spadepis deploy`` printed, as printed; torn down by pgid."""
    tmp = tmp_path_factory.mktemp("prefect-e2e")
    home = tmp / "prefect-home"
    home.mkdir()
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    if E2E_VENV:
        project = tmp / "work"
        project.mkdir()
    else:
        project = _fresh_checkout(tmp / "checkout")
    env = _prefect_env(home, api)
    env["SPADEPIS_PROJECT_DIR"] = str(project)
    prefect = str(BIN / "prefect")
    services: list[Service] = []
    server = Service("server", [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, tmp)
    services.append(server)
    leftovers: dict[str, list[int]] = {}

    def shutdown() -> dict[str, list[int]]:
        # Worker first (it may hold flow-run subprocesses), then the server. Idempotent.
        for svc in reversed(services):
            if svc.name not in leftovers:
                leftovers[svc.name] = svc.stop()
        return dict(leftovers)

    try:
        _wait_healthy(api, server)
        out = _spadepis_deploy(api, env, cwd=project)  # no --gpu-slots: the GPUs found (none here: no limit)
        # The worker command exactly as `spadepis deploy` printed it, in a shell that has neither PREFECT_API_URL
        # nor SPADEPIS_PROJECT_DIR (the printed line must carry both).
        m = re.search(r"start a worker on each box that runs flows:\s+(.+)", out.stdout)
        assert m, out.stdout
        printed = m.group(1).strip()
        assert f"PREFECT_API_URL={api}" in printed and f"SPADEPIS_PROJECT_DIR={project}" in printed, printed
        bare = {k: v for k, v in env.items() if k not in ("PREFECT_API_URL", "SPADEPIS_PROJECT_DIR")}
        bare["PATH"] = f"{BIN}{os.pathsep}{bare.get('PATH', '')}"  # `prefect` of the venv, as an activated venv has it
        worker = Service("worker", ["bash", "-c", f"{printed} --type process --name e2e-worker"], bare, tmp)
        services.append(worker)
        yield {"api": api, "env": env, "tmp": tmp, "server": server, "worker": worker, "deploy_out": out.stdout,
               "shutdown": shutdown, "project": project}
    finally:
        shutdown()


def _spadepis_deploy(api: str, env: dict[str, str], *extra: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run([PYTHON, "-m", "spadepis", "deploy", "--api-url", api, *extra],
                         env=env, cwd=cwd or ROOT, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, f"spadepis deploy failed:\n{out.stdout}\n{out.stderr}"
    return out


def _client(api: str):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    class _Ctx:
        def __enter__(self):
            self._settings = temporary_settings({PREFECT_API_URL: api})
            self._settings.__enter__()
            self._client = get_client(sync_client=True)
            return self._client.__enter__()

        def __exit__(self, *exc):
            self._client.__exit__(*exc)
            self._settings.__exit__(*exc)

    return _Ctx()


def _run_deployment(stack, params: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "prefect"), "deployment", "run", f"{FLOW}/adhoc", "--params", json.dumps({"config": params})],
        env=stack["env"], cwd=ROOT, capture_output=True, text=True, timeout=120,
    )


def _flow_run_id(out: subprocess.CompletedProcess) -> str:
    m = re.search(r"UUID:\s*([0-9a-f-]{36})", out.stdout)
    assert out.returncode == 0 and m, f"prefect deployment run failed:\n{out.stdout}\n{out.stderr}"
    return m.group(1)


def _wait_final(stack, flow_run_id: str, timeout: float = 240.0):
    deadline = time.monotonic() + timeout
    with _client(stack["api"]) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                return run
            if stack["worker"].proc.poll() is not None:
                raise AssertionError(f"the worker exited:\n{stack['worker'].tail()}")
            stack["worker"].track()
            time.sleep(1.0)
    raise AssertionError(
        f"flow run {flow_run_id} not finished after {timeout:.0f}s (state {run.state!r})\nworker log:\n{stack['worker'].tail()}"
    )


# ------------------------------------------------------------------------------------ the tests


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_deployments_on_a_real_server(stack):
    from prefect.exceptions import ObjectNotFound

    api = stack["api"]
    with _client(api) as client:
        pool = client.read_work_pool("spadepis")
        assert pool.type == "process"
        if "GPUs found on this machine: 0" in stack["deploy_out"]:  # a CPU-only box: no limit on the tag
            with pytest.raises(ObjectNotFound):
                client.read_concurrency_limit_by_tag("gpu")
        nightly = client.read_deployment_by_name(f"{FLOW}/nightly-augmentation")
        adhoc = client.read_deployment_by_name(f"{FLOW}/adhoc")
        assert nightly.enforce_parameter_schema and adhoc.enforce_parameter_schema
        assert [s.active for s in nightly.schedules] == [False], "nightly schedule must be created inactive"
        assert nightly.schedules[0].schedule.cron == "0 2 * * *"
        assert adhoc.work_pool_name == "spadepis"
        assert adhoc.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(stack["project"])}}]
        schema = adhoc.parameter_openapi_schema
        assert schema["required"] == ["config"]
        run_config = schema["definitions"]["RunConfig"]
        assert run_config["additionalProperties"] is False
        assert adhoc.parameters["config"]["run_id"] == "adhoc"  # configs/adhoc.yaml: its own run folder

    # The user turns the nightly schedule on; deploying again (idempotent) keeps it on and
    # leaves exactly one of each deployment, pool and limit.
    sched_id = str(nightly.schedules[0].id)
    out = subprocess.run([str(BIN / "prefect"), "deployment", "schedule", "resume", f"{FLOW}/nightly-augmentation", sched_id],
                         env=stack["env"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    again = _spadepis_deploy(api, stack["env"], "--gpu-slots", "1", cwd=stack["project"])
    assert "activated" in again.stdout, again.stdout
    with _client(api) as client:
        deps = client.read_deployments()
        assert sorted(d.name for d in deps) == ["adhoc", "nightly-augmentation"]
        nightly = client.read_deployment_by_name(f"{FLOW}/nightly-augmentation")
        assert [s.active for s in nightly.schedules] == [True]
        assert [p.name for p in client.read_work_pools()].count("spadepis") == 1
        assert client.read_concurrency_limit_by_tag("gpu").concurrency_limit == 1
        client.update_deployment_schedule(nightly.id, nightly.schedules[0].id, active=False)
    # --gpu-slots 0 removes the limit again (the later runs here are CPU runs: untagged shards, side by side)
    third = _spadepis_deploy(api, stack["env"], "--gpu-slots", "0", cwd=stack["project"])
    assert "removed the concurrency limit 'gpu' (was 1" in third.stdout, third.stdout
    with _client(api) as client:
        with pytest.raises(ObjectNotFound):
            client.read_concurrency_limit_by_tag("gpu")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_server_refuses_bad_parameters(stack):
    """Unknown field / wrong type: refused by the server at `deployment run`; no flow run is created."""
    inputs = stack["tmp"] / "inputs-bad"
    cfg = _small_config(inputs, stack["tmp"] / "out-bad", "bad")
    with _client(stack["api"]) as client:
        before = len(client.read_flow_runs())
    typo = dict(cfg, shard_sise=2)  # unknown field
    out = _run_deployment(stack, typo)
    assert out.returncode != 0, out.stdout
    text = out.stdout + out.stderr
    assert "shard_sise" in text and "Validation failed" in text, text
    wrong = dict(cfg, shard_size="many")  # wrong type
    out = _run_deployment(stack, wrong)
    assert out.returncode != 0, out.stdout
    text = out.stdout + out.stderr
    assert "many" in text and "integer" in text, text
    nested = json.loads(json.dumps(cfg))
    nested["models"]["smoothing"] = "fastest"  # not one of exact|fast|none
    out = _run_deployment(stack, nested)
    assert out.returncode != 0 and "fastest" in out.stdout + out.stderr, out.stdout + out.stderr
    # The same through the client: a clear 409 naming the field.
    from prefect.exceptions import PrefectHTTPStatusError

    with _client(stack["api"]) as client:
        dep = client.read_deployment_by_name(f"{FLOW}/adhoc")
        with pytest.raises(PrefectHTTPStatusError) as err:
            client.create_flow_run_from_deployment(dep.id, parameters={"config": typo})
        assert err.value.response.status_code == 409
        assert "shard_sise" in err.value.response.text
        assert len(client.read_flow_runs()) == before, "a refused run must not exist on the server"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_adhoc_run_completes_and_failed_shard_is_named(stack):
    import pandas as pd
    from PIL import Image

    from spadepis.pipeline.plan import shard_name

    inputs = stack["tmp"] / "inputs"
    _make_inputs(inputs, n_labels=6)
    out_ok = stack["tmp"] / "out-ok"
    out_fail = stack["tmp"] / "out-fail"

    # Run 1: everything succeeds. Run 2: shard 1 cannot be written (a file sits where its synth
    # folder must go), so that shard fails after its retries while shards 0 and 2 commit.
    # Both are triggered before waiting, so the worker (one flow run at a time is fine) keeps busy.
    ok_cfg = _small_config(inputs, out_ok, "e2e-ok")
    fail_cfg = _small_config(inputs, out_fail, "e2e-fail")
    blocker = out_fail / "e2e-fail" / "synth" / shard_name(1)
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder: makes shard=00001 unwritable for this test\n")

    ok_id = _flow_run_id(_run_deployment(stack, ok_cfg))
    fail_id = _flow_run_id(_run_deployment(stack, fail_cfg))

    ok_run = _wait_final(stack, ok_id)
    assert ok_run.state.is_completed(), f"{ok_run.state!r}\nworker log:\n{stack['worker'].tail()}"

    # The manifest the run wrote: 6 label maps x 2 styles, all ok, every file there and decodable.
    run_uri = out_ok / "e2e-ok"
    index = pd.read_parquet(run_uri / "index.parquet")
    assert len(index) == 12 and set(index["status"]) == {"ok"}
    assert index["sample_id"].is_unique
    assert sorted(index["shard_id"].unique()) == [shard_name(i) for i in range(3)]
    assert set(index["stylizer"]) == {"color"} and index["synth_model"].str.contains("random-init").all()
    for uri in index["image_uri"]:
        with Image.open(uri) as im:
            assert im.size == (64, 64)
    for i in range(3):
        assert (run_uri / "manifest" / shard_name(i) / "_SUCCESS.json").is_file()

    # The run's artifacts, read back through the Prefect client.
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with _client(stack["api"]) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[ok_run.id])))
    kinds = {a.type for a in arts}
    assert {"table", "markdown", "progress"} <= kinds, f"artifacts: {[(a.key, a.type) for a in arts]}"
    progress = [a for a in arts if a.type == "progress"]
    assert float(progress[0].data) == 100.0, progress[0].data  # every shard done
    text = json.dumps([a.data for a in arts], default=str)
    assert "e2e-ok" in text, "the artifacts should name the run id"
    tables = [a for a in arts if a.type == "table"]
    assert any("ok" in json.dumps(a.data, default=str) for a in tables)

    # Run 2 ends Failed, naming the failed shard; the other shards committed.
    fail_run = _wait_final(stack, fail_id)
    assert fail_run.state.is_failed(), f"{fail_run.state!r}\nworker log:\n{stack['worker'].tail()}"
    assert shard_name(1) in (fail_run.state.message or ""), fail_run.state.message
    fail_uri = out_fail / "e2e-fail"
    assert (fail_uri / "manifest" / shard_name(0) / "_SUCCESS.json").is_file()
    assert (fail_uri / "manifest" / shard_name(2) / "_SUCCESS.json").is_file()
    assert not (fail_uri / "manifest" / shard_name(1) / "_SUCCESS.json").exists()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_adhoc_default_run_works_on_a_fresh_deploy(stack):
    """`prefect deployment run spadepis-augment/adhoc` with its default config (configs/adhoc.yaml) on a fresh
    deployment: nothing made its inputs beforehand; the run generates them (dataset.demo_inputs) and completes,
    in its own run folder (not the one `spadepis demo` uses). Run again, it has nothing to do and says so, in its
    state message and its log; the two flow runs have different names."""
    import pandas as pd

    project = stack["project"]
    assert not (project / "out").exists(), "the test must start without the demo inputs"
    # the printed trigger command, as printed, from a shell without PREFECT_API_URL
    m = re.search(r"trigger a run:\s+(.+)", stack["deploy_out"])
    assert m and f"PREFECT_API_URL={stack['api']}" in m.group(1), stack["deploy_out"]
    bare = {k: v for k, v in stack["env"].items() if k != "PREFECT_API_URL"}
    bare["PATH"] = f"{BIN}{os.pathsep}{bare.get('PATH', '')}"
    out = subprocess.run(["bash", "-c", m.group(1).strip()], env=bare, cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    run = _wait_final(stack, _flow_run_id(out), timeout=840)
    assert run.state.is_completed(), f"{run.state!r}\nworker log:\n{stack['worker'].tail()}"
    assert len(list((project / "out/adhoc/inputs/labels").glob("*.png"))) == 12
    run_folder = project / "out/adhoc/runs/adhoc"
    index = pd.read_parquet(run_folder / "index.parquet")
    assert len(index) == 12 * 4 and (index.status == "ok").all()
    assert not (project / "out/demo").exists()

    again = _wait_final(stack, _flow_run_id(subprocess.run(["bash", "-c", m.group(1).strip()], env=bare, cwd=ROOT,
                                                           capture_output=True, text=True, timeout=120)))
    assert again.state.is_completed()
    want = f"nothing to do: 3 shard(s) already committed in {run_folder}"
    assert (again.state.message or "").startswith(want), again.state.message
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + 60  # the flow run's logs reach the API in batches, after its final state
    with _client(stack["api"]) as client:
        while True:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[again.id])))
            if any(want in entry.message for entry in logs) or time.monotonic() > deadline:
                break
            time.sleep(2)
    assert any(want in entry.message for entry in logs), [entry.message for entry in logs]
    assert run.name != again.name and run.name.startswith("augment-adhoc-") and again.name.startswith("augment-adhoc-")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_zz_worker_then_server_stop_by_pid_leaving_nothing(stack):
    """Runs last in this module: stop the worker, then the server, by process group; nothing is left."""
    worker, server = stack["worker"], stack["server"]
    worker.track()
    server.track()
    leftovers = stack["shutdown"]()
    assert leftovers == {"worker": [], "server": []}, f"processes still alive after shutdown: {leftovers}"
    for svc in (worker, server):
        assert svc.proc.poll() is not None
        assert not _group_alive(svc.pgid)
        assert _alive(sorted(svc.seen)) == [], f"{svc.name}: {_alive(sorted(svc.seen))}"
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{stack['api']}/health", timeout=2)


@pytest.mark.parametrize("deployment", ["nightly-augmentation", "adhoc"])
def test_every_deployment_default_passes_check_on_a_fresh_checkout(deployment, tmp_path, monkeypatch):
    """Issue 10.9: the default run of every deployment works on a fresh deploy: nothing of its inputs
    exists yet (the flow run's working directory is a fresh checkout), and its preflight check passes
    because the product makes the demo inputs itself; this test prepares nothing."""
    from spadepis.cli import main
    from spadepis.pipeline.plan import make_plan
    from spadepis.pipeline.config import parse_config

    params = {d["name"]: d for d in _prefect_yaml()["deployments"]}[deployment]["parameters"]["config"]
    monkeypatch.chdir(tmp_path)
    assert not any(tmp_path.iterdir())
    cfg_file = tmp_path / "deployment-default.yaml"
    cfg_file.write_text(yaml.safe_dump(params))
    assert main(["check", str(cfg_file)]) == 0
    plan = make_plan(parse_config(params))
    assert plan.sources and plan.styles
