"""Prefect task around :func:`spadepis.pipeline.worker.process_shard`: one task run per shard.

Retried with exponential backoff, but only for transient failures (storage and connection errors,
CUDA out-of-memory, a lost Dask worker): ``retry_transient`` is the task's ``retry_condition_fn``.
Bad items never fail the task (they are error rows); configuration errors and bugs fail it at once.
Tagged ``gpu`` so a tag concurrency limit (``prefect concurrency-limit create gpu N``) can bound
how many shards hold models at once across all runs. A run drops the tag when the API holds no limit on
it when the run starts (:func:`gpu_tag_limited`): Prefect 3.9 keeps a concurrency lease for every tagged
task run, and joining its renewal thread costs about 2 s at the end of every shard task longer than a
few seconds, limit or not (measured: 4 busy 5-s tasks, 1 thread, gaps 1.8-2.6 s with the tag, 0.01 s
without, ephemeral and real server alike).
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from spadepis.pipeline.config import RunConfig
from spadepis.pipeline.plan import ShardSpec
from spadepis.pipeline.secrets import register_secret_resolver
from spadepis.pipeline.failures import is_transient
from spadepis.pipeline.worker import ShardResult, process_shard
from spadepis.pipeline.storage import new_attempt_id
from spadepis.tasks import GPU_TAG

__all__ = ["GPU_TAG", "gpu_tag_limited", "process_shard_task", "retry_transient", "shard_task_for", "load_secret_block"]


def load_secret_block(name: str) -> Any:
    """Value of the Prefect Secret block ``name``: resolves ``{secret: name}`` in ``storage_options``."""
    from prefect.blocks.system import Secret

    return Secret.load(name, _sync=True).get()


# Importing the task (flow process, Dask workers unpickling it) lets the library resolve {secret: ...}.
register_secret_resolver(load_secret_block)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """``retry_condition_fn``: retry only when the failure is transient (see ``spadepis.pipeline.failures.is_transient``)."""
    exc = state.data if isinstance(getattr(state, "data", None), BaseException) else None
    if exc is None:
        try:
            exc = state.result(raise_on_failure=False)
        except Exception as err:  # noqa: BLE001 - a result that cannot be read is itself the error
            exc = err
    return is_transient(exc if isinstance(exc, BaseException) else None)


def _task_run_name() -> str:
    from prefect.runtime import task_run

    params = task_run.parameters
    config, shard = params.get("config"), params.get("shard")
    run_id = config.resolved_run_id if isinstance(config, RunConfig) else "run"
    name = shard.name if isinstance(shard, ShardSpec) else "shard"
    return f"{run_id}/{name}"


@task(
    name="process-shard",
    tags=[GPU_TAG],
    retries=3,
    retry_delay_seconds=[2, 4, 8],
    retry_condition_fn=retry_transient,
    task_run_name=_task_run_name,
    cache_policy=NO_CACHE,
    persist_result=False,
    log_prints=True,
)
def process_shard_task(config: RunConfig, shard: ShardSpec, fence: str | None = None) -> ShardResult:
    """Synthesize, stylize, write and commit one shard (skipped when already committed); ``fence``: the id of the
    run folder's lease the flow holds (the shard stops before writing once another run took the lease over)."""
    try:
        from prefect.runtime import task_run

        attempt = f"{new_attempt_id()}-try{int(task_run.run_count or 1)}"
    except Exception:  # noqa: BLE001 - outside a task run (``.fn()`` in tests)
        attempt = new_attempt_id()
    result = process_shard(config, shard, attempt_id=attempt, fence=fence)
    _log_shard(result)
    return result


def _log_shard(result: ShardResult) -> None:
    """One line per shard in the task run's log: sources, ok / error, stage ms."""
    from spadepis.pipeline.ui import shard_log_line

    try:
        from prefect import get_run_logger

        get_run_logger().info(shard_log_line(result))
    except Exception:  # noqa: BLE001 - outside a run context (``.fn()`` in tests) there is no run logger
        pass


def gpu_tag_limited() -> bool:
    """Whether the Prefect API holds a concurrency limit on the task tag ``gpu`` (a tag limit, as
    ``spadepis deploy`` and ``prefect concurrency-limit create gpu N`` make, or a global limit named
    ``tag:gpu``). When the API cannot say, True: the tag stays and any limit is honoured."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            try:
                client.read_concurrency_limit_by_tag(GPU_TAG)
                return True
            except ObjectNotFound:
                pass
            try:
                client.read_global_concurrency_limit_by_name(f"tag:{GPU_TAG}")
                return True
            except ObjectNotFound:
                return False
    except Exception:  # noqa: BLE001 - the API will be asked again by the task runs; keep the safe side
        return True


def shard_task_for(config: RunConfig, *, gpu_tag: bool = True):
    """The shard task with the config's retry policy: ``retries.count`` tries, delay doubling from ``retries.delay``;
    without the ``gpu`` tag when ``gpu_tag`` is False (no limit on it: see the module docstring)."""
    n = config.retries.count
    delays = [config.retries.delay * 2**i for i in range(n)] if n else 0
    options: dict[str, Any] = {"retries": n, "retry_delay_seconds": delays}
    if not gpu_tag:
        options["tags"] = set(process_shard_task.tags) - {GPU_TAG}
    return process_shard_task.with_options(**options)
