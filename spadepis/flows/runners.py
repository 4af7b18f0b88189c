"""Task runners for the ``spadepis-augment`` flow: a bounded thread pool or a Dask cluster.

The runner is chosen by the run's config (``RunConfig.runner``), so it is opened *inside* the flow,
not fixed in the ``@flow`` decorator::

    with open_shard_runner(config) as runner:          # config: spadepis.pipeline.config.RunConfig
        futures = [runner.submit(shard_task, {"config": config, "shard": s}) for s in shards]

* ``kind: thread``: Prefect's ``ThreadPoolTaskRunner`` with ``max_workers = runner.max_concurrency``
  (Prefect's default pool is unbounded; a GPU box must not run 50 shards at once).
* ``kind: dask``: ``prefect_dask.DaskTaskRunner`` on a ``distributed.LocalCluster`` of
  ``runner.n_workers`` worker *processes* (one thread each: one shard at a time per process, and the
  models cached in ``spadepis.pipeline.worker`` are loaded once per process), or on the existing scheduler at
  ``runner.address``.
* GPU placement: when the run's device is CUDA, model tasks are submitted with the Dask annotation
  ``resources={"GPU": 1}``, so a scheduler only hands them to workers started with
  ``--resources GPU=1`` (a mixed CPU/GPU cluster sends them to GPU workers only). On a CPU run the
  annotation is left out, because CPU-only workers advertise no ``GPU`` resource and would never be
  given the task. A local cluster on a CUDA box gets one worker per visible GPU by default, each
  advertising ``GPU=1`` and pinned to its own device.

Nothing in ``spadepis/`` imports this module (the library never imports Prefect).
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterable

from prefect import task
from prefect.cache_policies import NO_CACHE

try:  # the dask extra is optional: thread runs do not need it
    from distributed import WorkerPlugin as _WorkerPluginBase
except ImportError:  # pragma: no cover
    _WorkerPluginBase = object  # type: ignore[assignment,misc]

__all__ = [
    "GPU_RESOURCE",
    "ShardRunner",
    "open_shard_runner",
    "build_task_runner",
    "cuda_requested",
    "PinCudaDevice",
    "probe_worker",
]

GPU_RESOURCE = "GPU"
"""Name of the Dask worker resource a GPU worker advertises (``dask worker ADDR --resources GPU=1``)."""

_log = logging.getLogger("spadepis.runners")


def cuda_requested(device: str) -> bool:
    """Whether a run's ``device`` setting ends up on CUDA *on this machine* (``auto`` checks torch)."""
    name = str(device)
    if name.startswith("cuda"):
        return True
    if name == "auto":
        import torch

        return torch.cuda.is_available()
    return False


class PinCudaDevice(_WorkerPluginBase):  # type: ignore[misc]
    """Dask worker plugin: pin each local worker process to one GPU (worker ``i`` -> ``cuda:i % n``).

    ``LocalCluster`` names its workers 0, 1, 2, ...; with this plugin ``device="cuda"`` in the
    library means "this worker's GPU", so N workers use N GPUs instead of all sharing ``cuda:0``.
    On a real multi-machine cluster, start one ``dask worker`` per GPU with ``CUDA_VISIBLE_DEVICES``
    set instead (or use dask-cuda's ``LocalCUDACluster``).
    """

    name = "spadepis-pin-cuda-device"
    idempotent = True

    def setup(self, worker: Any) -> None:  # distributed.WorkerPlugin protocol
        import torch

        if not torch.cuda.is_available():
            return
        try:
            index = int(worker.name)
        except (TypeError, ValueError):
            return  # not a LocalCluster worker: leave the device alone
        torch.cuda.set_device(index % torch.cuda.device_count())


def _dashboard_address() -> str | None:
    """``":0"`` (a free port) when bokeh is installed, else no dashboard (it would only warn)."""
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return None
    return ":0"


def build_task_runner(
    kind: str = "thread",
    *,
    max_concurrency: int = 1,
    n_workers: int = 1,
    address: str | None = None,
    gpu_workers: bool = False,
) -> Any:
    """A Prefect task runner (not started) for ``kind`` ``thread`` or ``dask``.

    ``gpu_workers`` (local Dask cluster only): each worker advertises ``GPU=1`` and is pinned to its
    own device by :class:`PinCudaDevice` (registered when the runner starts, see :class:`ShardRunner`).
    """
    if kind == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=max(1, int(max_concurrency)))
    if kind != "dask":
        raise ValueError(f"runner.kind {kind!r} is not one of thread, dask; fix runner.kind in the config")
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:  # pragma: no cover - the dask extra is part of [test]
        raise ImportError(
            "runner.kind 'dask' needs prefect-dask and distributed: pip install 'spadepis[dask]' (or use kind: thread)"
        ) from exc
    if address:
        return DaskTaskRunner(address=address)
    cluster_kwargs: dict[str, Any] = {
        "n_workers": max(1, int(n_workers)),
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": _dashboard_address(),
    }
    if gpu_workers:
        cluster_kwargs["resources"] = {GPU_RESOURCE: 1}
    return DaskTaskRunner(cluster_kwargs=cluster_kwargs)


class ShardRunner:
    """A started Prefect task runner plus the placement rule for model tasks.

    Use :func:`open_shard_runner`; then ``submit(task, parameters)`` returns a Prefect future. Must be
    used inside a flow run (task runs attach to it).
    """

    def __init__(
        self,
        kind: str = "thread",
        *,
        max_concurrency: int = 1,
        n_workers: int = 1,
        address: str | None = None,
        device: str = "auto",
    ) -> None:
        self.kind = kind
        self.address = address
        self.device = device
        self._cuda = cuda_requested(device) if (kind == "dask" and not address) else False
        if kind == "dask" and not address and self._cuda and n_workers <= 1:
            import torch

            n_workers = max(1, torch.cuda.device_count())
        self.n_workers = n_workers
        self.max_concurrency = max_concurrency
        self.task_runner = build_task_runner(
            kind, max_concurrency=max_concurrency, n_workers=n_workers, address=address, gpu_workers=self._cuda
        )
        self.gpu_annotation = False
        self._stack: contextlib.ExitStack | None = None

    # ---------------------------------------------------------------------------------- lifecycle
    def __enter__(self) -> "ShardRunner":
        stack = contextlib.ExitStack()
        stack.enter_context(self.task_runner)
        self._stack = stack
        try:
            if self.kind == "dask":
                self._setup_dask()
        except BaseException:
            stack.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._stack is not None:
            self._stack.__exit__(*exc)
            self._stack = None

    def _setup_dask(self) -> None:
        client = self.task_runner.client  # creates the local cluster or connects to the address
        if self.address:
            # An existing cluster: annotate when the run wants CUDA and some worker offers a GPU.
            # A device of "auto" on a CPU-only scheduler host still uses the cluster's GPUs.
            try:
                info = client.scheduler_info(n_workers=-1)  # all workers (some versions default to 5)
            except TypeError:  # pragma: no cover - older distributed
                info = client.scheduler_info()
            workers = info.get("workers", {})
            gpu_workers = [w for w in workers.values() if (w.get("resources") or {}).get(GPU_RESOURCE, 0) > 0]
            wants_cuda = str(self.device).startswith("cuda") or (str(self.device) == "auto" and bool(gpu_workers))
            if str(self.device).startswith("cuda") and not gpu_workers:
                _log.warning(
                    "device %r but no worker of the Dask cluster at %s advertises a %s resource: shards will wait "
                    "until a worker started with `--resources %s=1` joins",
                    self.device,
                    self.address,
                    GPU_RESOURCE,
                    GPU_RESOURCE,
                )
            self.gpu_annotation = wants_cuda
        else:
            self.gpu_annotation = self._cuda
            if self._cuda:
                client.register_plugin(PinCudaDevice(), name=PinCudaDevice.name)

    # ------------------------------------------------------------------------------------ submit
    @property
    def annotations(self) -> dict[str, Any]:
        """The Dask annotations model tasks are submitted with (empty for threads and CPU runs)."""
        return {"resources": {GPU_RESOURCE: 1}} if self.gpu_annotation else {}

    def submit(self, task: Any, parameters: dict[str, Any], *, wait_for: Iterable[Any] | None = None,
               needs_gpu: bool = True) -> Any:
        """Submit ``task`` with ``parameters``; model tasks (``needs_gpu``) carry the GPU annotation."""
        if self._stack is None:
            raise RuntimeError("ShardRunner.submit() outside `with open_shard_runner(config) as runner:`")
        if self.kind == "dask" and needs_gpu and self.gpu_annotation:
            import dask

            with dask.annotate(**self.annotations):
                return self.task_runner.submit(task, parameters, wait_for=wait_for)
        return self.task_runner.submit(task, parameters, wait_for=wait_for)

    def describe(self) -> str:
        """One line for logs: what runs the shards."""
        if self.kind == "thread":
            return f"thread pool, at most {self.max_concurrency} shard(s) at once"
        where = f"Dask scheduler {self.address}" if self.address else f"local Dask cluster of {self.n_workers} worker process(es)"
        gpu = f", model tasks need {GPU_RESOURCE}=1" if self.gpu_annotation else ""
        return where + gpu


def open_shard_runner(config: Any) -> ShardRunner:
    """A :class:`ShardRunner` from a ``RunConfig`` (its ``runner`` section and ``device``)."""
    runner = config.runner
    return ShardRunner(
        runner.kind,
        max_concurrency=runner.max_concurrency,
        n_workers=runner.n_workers,
        address=runner.address,
        device=getattr(config, "device", "auto"),
    )


@task(name="probe-worker", cache_policy=NO_CACHE, persist_result=False)
def probe_worker() -> dict[str, Any]:
    """Where a task ran: Dask worker name and resources (if any), pid, the CUDA device it would use.

    A diagnostic for a cluster's placement: ``runner.submit(probe_worker, {})`` inside a flow.
    """
    info: dict[str, Any] = {"pid": os.getpid(), "worker": None, "resources": {}, "cuda": None}
    try:
        from distributed import get_worker

        worker = get_worker()
        info["worker"] = worker.name
        info["resources"] = dict(getattr(worker.state, "total_resources", {}) or {})
    except (ImportError, ValueError):
        pass  # not on a Dask worker (thread runner)
    try:
        import torch

        if torch.cuda.is_available():
            info["cuda"] = f"cuda:{torch.cuda.current_device()} ({torch.cuda.get_device_name()})"
    except Exception:  # noqa: BLE001 - a diagnostic must not fail
        pass
    return info
