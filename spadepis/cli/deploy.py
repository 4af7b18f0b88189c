"""``spadepis deploy``: stand up the work pool, the ``gpu`` concurrency limit and the deployments.

Idempotent: run it again after editing ``deployments/prefect.yaml`` and it updates what is there.
The plain ``prefect`` sequence it performs (documented in README.md, "Deploy and schedule") is::

    prefect work-pool create spadepis --type process --overwrite
    prefect concurrency-limit create gpu 1          # only with GPUs: --gpu-slots defaults to the GPUs found
    SPADEPIS_PROJECT_DIR=$PWD prefect deploy --all --prefect-file deployments/prefect.yaml

It works from a checkout and from a plain (non-editable) install: the deployment file ships inside the package
(``spadepis/flows/prefect.yaml``, the same file as the checkout's ``deployments/prefect.yaml``) and the
deployments' entrypoint is the module path ``spadepis.flows.augment:augment``.

Prefect is imported inside the command function only (the library never imports it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import ConfigError, SpadepisError
from ..tasks import GPU_TAG

__all__ = ["register", "deploy", "PROJECT_ROOT", "PREFECT_FILE", "GPU_TAG"]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
"""The checkout (editable install), or the site-packages folder holding ``spadepis`` (plain install)."""
PREFECT_FILE = Path("deployments") / "prefect.yaml"
PACKAGED_PREFECT_FILE = Path(__file__).resolve().parents[1] / "flows" / "prefect.yaml"
"""The deployment file as the package ships it (package data; in a checkout, a link to ``deployments/prefect.yaml``)."""
FLOW_NAME = "spadepis-augment"


def in_checkout() -> bool:
    """Whether spadepis runs from a source checkout (``pip install -e``), not from site-packages."""
    return (PROJECT_ROOT / PREFECT_FILE).is_file() and (PROJECT_ROOT / "pyproject.toml").is_file()


def default_prefect_file() -> Path:
    return PROJECT_ROOT / PREFECT_FILE if in_checkout() else PACKAGED_PREFECT_FILE


def gpus_found() -> int:
    """CUDA devices this machine has (0 without torch.cuda)."""
    try:
        import torch

        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken CUDA setup counts as none
        return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "deploy",
        help="create the work pool, the gpu concurrency limit and the deployments (idempotent)",
        description="Stand up spadepis on a Prefect API: a process work pool, a concurrency limit on the "
        "'gpu' task tag (one model task per GPU), and every deployment of deployments/prefect.yaml "
        "(nightly-augmentation with an inactive cron schedule, adhoc). Safe to run again.",
    )
    p.add_argument("--api-url", default=None, help="Prefect API URL, e.g. http://127.0.0.1:4200/api "
                   "(default: PREFECT_API_URL or the active Prefect profile)")
    p.add_argument("--pool", default="spadepis", help="work pool name (default: spadepis)")
    p.add_argument("--gpu-slots", type=int, default=None, help="concurrent model tasks allowed, all workers "
                   "together: the number of GPUs (default: the GPUs found on this machine; none found: no limit, "
                   "so CPU shards are not serialized; 0 removes the limit)")
    p.add_argument("--prefect-file", default=None, help=f"deployment file (default: {PREFECT_FILE} in the checkout, "
                   "else the copy installed with the package)")
    p.add_argument("--project-dir", default=None, help="folder the workers chdir into before running the flow; "
                   "relative paths in configs (out/...) resolve there (default: SPADEPIS_PROJECT_DIR, else this "
                   "checkout, else the current folder)")
    p.add_argument("--name", action="append", default=None, help="deploy only this deployment (repeatable), "
                   "e.g. --name adhoc")
    p.add_argument("--schedules", choices=["keep", "on", "off"], default="keep",
                   help="schedule state after deploying: keep (default: a schedule you turned on stays on; new "
                   "ones start as the file says, inactive), on (activate them all), off (pause them all)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    deploy(
        api_url=args.api_url,
        pool=args.pool,
        gpu_slots=args.gpu_slots,
        prefect_file=args.prefect_file,
        project_dir=args.project_dir,
        names=args.name,
        schedules=args.schedules,
    )
    return 0


def _prefect_executable() -> list[str]:
    exe = Path(sys.executable).with_name("prefect")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("prefect")
    if found:
        return [found]
    return [sys.executable, "-m", "prefect"]


def deploy(
    *,
    api_url: str | None = None,
    pool: str = "spadepis",
    gpu_slots: int | None = None,
    prefect_file: str | Path | None = None,
    project_dir: str | Path | None = None,
    names: list[str] | None = None,
    schedules: str = "keep",
    quiet: bool = False,
) -> dict[str, object]:
    """Create or update the pool, the ``gpu`` limit and the deployments; return what is now on the server."""
    if schedules not in ("keep", "on", "off"):
        raise ConfigError(f"--schedules {schedules!r}: use keep, on or off")
    slots_source = "--gpu-slots"
    if gpu_slots is None:
        gpu_slots, slots_source = gpus_found(), "GPUs found on this machine"
    if gpu_slots < 0:
        raise ConfigError(f"--gpu-slots {gpu_slots}: must be 0 (no limit) or more (the number of GPUs model tasks "
                          "may use at once)")
    prefect_file = Path(prefect_file) if prefect_file else default_prefect_file()
    if not prefect_file.is_file():
        raise ConfigError(f"deployment file {prefect_file} not found; pass --prefect-file PATH (the package's copy is "
                          f"{PACKAGED_PREFECT_FILE})")
    default_dir = PROJECT_ROOT if in_checkout() else Path.cwd()
    project_dir = Path(project_dir or os.environ.get("SPADEPIS_PROJECT_DIR") or default_dir).resolve()
    if project_dir == PROJECT_ROOT and not in_checkout():
        raise ConfigError(f"--project-dir {project_dir} is where the package is installed; runs would write their "
                          "outputs there: pass the folder the runs should work in")
    deploy_cwd = PROJECT_ROOT if in_checkout() else Path.cwd()

    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = api_url or os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()
    if not url:
        raise ConfigError(
            "no Prefect API to deploy to: pass --api-url http://HOST:4200/api, set PREFECT_API_URL, or "
            "`prefect profile use` a profile that has one (start one with `prefect server start`)"
        )
    say = (lambda *a: None) if quiet else print

    with temporary_settings({PREFECT_API_URL: url}):
        try:
            with get_client(sync_client=True) as client:
                err = client.api_healthcheck()  # returns the exception instead of raising
                if err is not None:
                    raise SpadepisError(
                        f"the Prefect API at {url} is not reachable ({err}); start it with `prefect server start` "
                        "or fix --api-url / PREFECT_API_URL"
                    )
                _ensure_pool(client, pool, say, ObjectNotFound)
                _ensure_gpu_limit(client, gpu_slots, slots_source, say, ObjectNotFound)
                active_before = _active_schedules(client, prefect_file)
        except SpadepisError:
            raise
        except Exception as exc:  # httpx errors, server errors: say where and what
            raise SpadepisError(f"talking to the Prefect API at {url} failed: {type(exc).__name__}: {exc}") from exc

    cmd = _prefect_executable() + ["deploy", "--no-prompt", "--prefect-file", str(prefect_file), "--pool", pool]
    if names:
        for n in names:
            cmd += ["--name", n]
    else:
        cmd += ["--all"]
    env = dict(os.environ)
    env.update({
        "PREFECT_API_URL": url,
        "SPADEPIS_PROJECT_DIR": str(project_dir),
        "DO_NOT_TRACK": env.get("DO_NOT_TRACK", "1"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": env.get("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
        "PREFECT_CLI_WRAP_LINES": "false",
    })
    say(f"$ {' '.join(cmd)}   (in {deploy_cwd})")
    proc = subprocess.run(cmd, cwd=deploy_cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SpadepisError(
            f"`prefect deploy` failed (exit {proc.returncode}) for {prefect_file}:\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\nfix the deployment file or the API, then run "
            "`spadepis deploy` again (it is idempotent)"
        )

    with temporary_settings({PREFECT_API_URL: url}):
        with get_client(sync_client=True) as client:
            _apply_schedule_state(client, prefect_file, schedules, active_before, say)
            deployments = _summarise(client, pool)
    say(f"Prefect API: {url}")
    say(f"work pool {pool!r} (process); concurrency limit on tag {GPU_TAG!r}: "
        + (f"{gpu_slots} ({slots_source})" if gpu_slots else f"none ({slots_source}: 0)"))
    for d in deployments:
        say(f"  deployment {d['name']}: schedules {d['schedules'] or '-'}; enforce_parameter_schema={d['enforce_parameter_schema']}")
    commands = worker_commands(url, project_dir, pool)
    say(f"start a worker on each box that runs flows:  {commands['worker']}")
    say(f"trigger a run:                               {commands['run']}")
    return {"api_url": url, "pool": pool, "gpu_slots": gpu_slots, "deployments": deployments, "commands": commands}


def worker_commands(url: str, project_dir: Path, pool: str) -> dict[str, str]:
    """The commands ``spadepis deploy`` prints, complete: they work as printed in a fresh shell with the venv active."""
    import shlex

    api = f"PREFECT_API_URL={shlex.quote(url)}"
    return {
        "worker": f"{api} SPADEPIS_PROJECT_DIR={shlex.quote(str(project_dir))} prefect worker start --pool {shlex.quote(pool)}",
        "run": f"{api} prefect deployment run {FLOW_NAME}/adhoc",
    }


def _ensure_pool(client, pool: str, say, ObjectNotFound) -> None:
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.workers.process import ProcessWorker

    try:
        existing = client.read_work_pool(pool)
    except ObjectNotFound:
        existing = None
    if existing is not None:
        if existing.type != "process":
            raise ConfigError(
                f"work pool {pool!r} exists with type {existing.type!r}, not 'process'; pick another --pool name "
                f"or delete it (`prefect work-pool delete {pool}`)"
            )
        say(f"work pool {pool!r} exists (process)")
        return
    client.create_work_pool(
        WorkPoolCreate(name=pool, type="process", base_job_template=ProcessWorker.get_default_base_job_template(),
                       description="spadepis: SPADE + PhotoWCT augmentation runs (one worker per GPU box)")
    )
    say(f"created work pool {pool!r} (process)")


def _ensure_gpu_limit(client, slots: int, source: str, say, ObjectNotFound) -> None:
    try:
        current = client.read_concurrency_limit_by_tag(GPU_TAG)
    except ObjectNotFound:
        current = None
    if slots == 0:  # no GPUs: no limit, so shard tasks run untagged and in parallel (see spadepis.tasks.shard)
        if current is not None:
            client.delete_concurrency_limit_by_tag(GPU_TAG)
            say(f"removed the concurrency limit {GPU_TAG!r} (was {current.concurrency_limit}; {source}: 0)")
        else:
            say(f"no concurrency limit on {GPU_TAG!r} ({source}: 0): CPU shards run side by side")
        return
    if current is not None and current.concurrency_limit == slots:
        say(f"concurrency limit {GPU_TAG!r} = {slots} (unchanged)")
        return
    client.create_concurrency_limit(tag=GPU_TAG, concurrency_limit=slots)  # upserts
    after = client.read_concurrency_limit_by_tag(GPU_TAG)
    if after.concurrency_limit != slots:
        raise SpadepisError(
            f"the Prefect API kept the {GPU_TAG!r} concurrency limit at {after.concurrency_limit}, not {slots}; "
            f"delete it (`prefect concurrency-limit delete {GPU_TAG}`) and run `spadepis deploy` again"
        )
    say(f"concurrency limit {GPU_TAG!r} set to {slots}")


def _deployment_names(prefect_file: Path) -> list[str]:
    import yaml

    spec = yaml.safe_load(prefect_file.read_text()) or {}
    return [d["name"] for d in spec.get("deployments", []) if isinstance(d, dict) and d.get("name")]


def _schedule_key(s) -> str:
    inner = s.schedule
    return f"{getattr(inner, 'cron', None) or getattr(inner, 'interval', None) or getattr(inner, 'rrule', None)}|" \
           f"{getattr(inner, 'timezone', None)}"


def _active_schedules(client, prefect_file: Path) -> dict[str, set[str]]:
    """Before deploying: which schedules of our deployments are active (``prefect deploy`` resets them)."""
    from prefect.exceptions import ObjectNotFound

    out: dict[str, set[str]] = {}
    for name in _deployment_names(prefect_file):
        try:
            dep = client.read_deployment_by_name(f"{FLOW_NAME}/{name}")
        except ObjectNotFound:
            continue
        out[name] = {_schedule_key(s) for s in dep.schedules or [] if s.active}
    return out


def _apply_schedule_state(client, prefect_file: Path, mode: str, active_before: dict[str, set[str]], say) -> None:
    """``keep``: re-activate what was active before the deploy; ``on``/``off``: set every schedule."""
    from prefect.exceptions import ObjectNotFound

    for name in _deployment_names(prefect_file):
        try:
            dep = client.read_deployment_by_name(f"{FLOW_NAME}/{name}")
        except ObjectNotFound:
            continue
        for s in dep.schedules or []:
            want = {"on": True, "off": False}.get(mode)
            if want is None:
                want = s.active or _schedule_key(s) in active_before.get(name, set())
            if want != s.active:
                client.update_deployment_schedule(dep.id, s.id, active=want)
                say(f"schedule {_schedule_key(s).split('|')[0]} of {name}: {'activated' if want else 'paused'}"
                    + (" (it was active before this deploy)" if mode == "keep" else ""))


def _summarise(client, pool: str) -> list[dict[str, object]]:
    from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName

    out = []
    for d in client.read_deployments(work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool]))):
        scheds = []
        for s in d.schedules or []:
            cron = getattr(s.schedule, "cron", None) or str(s.schedule)
            scheds.append(f"{cron} ({'active' if s.active else 'inactive'})")
        out.append({
            "name": d.name,
            "id": str(d.id),
            "schedules": ", ".join(scheds),
            "enforce_parameter_schema": d.enforce_parameter_schema,
        })
    return sorted(out, key=lambda r: str(r["name"]))
