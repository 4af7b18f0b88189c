"""Smoothing for the pipeline: one entry point per content image and a pool of processes for many contents.

* :func:`prepare_smoother`: a callable ``stylized -> smoothed`` for one content image and a mode of
  :data:`SMOOTHING_MODES` (``exact``: :class:`.cholesky.SmoothingSystem`; ``fast``: :class:`.guided.GuidedFilter`;
  ``none``);
* :func:`smooth_content`: every stylized image of one content at once, one bad style never taking its
  neighbours down;
* :class:`SmoothingPool` / :func:`smoothing_pool`: :func:`smooth_content` for many contents in spawned worker
  processes (CHOLMOD keeps the GIL), :func:`default_smoothing_workers` the cores to use.

The workers receive :func:`smooth_content` and :func:`_warm_worker` pickled by their qualified names
(``spadepis.models.smoothing.pool.smooth_content``): keep them top-level functions of this module.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ...data.images import check_rgb_uint8
from ...errors import ConfigError, InputError
from ..registry import SMOOTHERS
from .cholesky import SmoothingSystem, to_uint8_truncated
from .guided import GuidedFilter

SMOOTHING_MODES = SMOOTHERS.names


# --------------------------------------------------------------------------------------------------
# one entry point for the pipeline
# --------------------------------------------------------------------------------------------------
def prepare_smoother(content: np.ndarray, mode: str = "exact", **kw: Any) -> Callable[[np.ndarray], np.ndarray]:
    """A callable ``stylized uint8 (H, W, 3) -> smoothed uint8`` for one content image.

    ``mode="exact"`` builds and factorises :class:`SmoothingSystem` here, once, and every call only solves
    (keywords: ``beta``, ``eps``, ``compat``, ``size``); ``"fast"`` returns a :class:`GuidedFilter` (the guide's statistics computed once; keywords: ``radius``, ``eps``); ``"none"`` returns the stylized image unchanged.
    """
    SMOOTHERS.check(mode)
    if mode == "exact":
        system = SmoothingSystem(content, **kw)

        def exact(stylized: np.ndarray) -> np.ndarray:
            return system.smooth(stylized)

        exact.system = system  # type: ignore[attr-defined]
        return exact
    if mode == "fast":
        unknown = set(kw) - {"radius", "eps"}
        if unknown:
            raise ConfigError(f"prepare_smoother(mode='fast'): unknown options {sorted(unknown)}; valid: radius, eps.")

        return GuidedFilter(content, **kw)  # guide statistics computed once, reused for every style
    # mode == "none"
    if kw:
        raise ConfigError(f"prepare_smoother(mode='none') takes no options, got {sorted(kw)}.")
    content = check_rgb_uint8(content, "prepare_smoother content")

    def none(stylized: np.ndarray) -> np.ndarray:
        stylized = check_rgb_uint8(stylized, "stylized image")
        if stylized.shape != content.shape:
            raise InputError(
                f"stylized image is {stylized.shape[:2]} but the content is {content.shape[:2]} (HxW); they must "
                "have the same size."
            )
        return stylized

    return none


# --------------------------------------------------------------------------------------------------
# every style of one content at once, and a pool of processes for many contents
# --------------------------------------------------------------------------------------------------
def smooth_content(
    content: np.ndarray, inits: list[np.ndarray], mode: str = "exact", **kw: Any
) -> tuple[list[np.ndarray | str], float, float]:
    """Smooth every stylized image of one content image: ``(results, prepare_s, smooth_s)``.

    ``results[k]`` is the uint8 output for ``inits[k]``, or the error message (a string) when that stylized image
    is unusable (wrong size or type), so one bad style never takes its neighbours down. ``prepare_s`` is the
    system's build and factorisation (``mode="exact"``, once for all styles), ``smooth_s`` the solves. Raises
    :class:`InputError` / :class:`ConfigError` when the content itself cannot be smoothed. Top-level and
    picklable: :class:`SmoothingPool` runs it in worker processes.
    """
    t0 = time.perf_counter()
    results: list[np.ndarray | str] = [""] * len(inits)
    if mode == "exact":
        with SmoothingSystem(content, **kw) as system:  # checks the content
            good, checked = [], []
            for k, init in enumerate(inits):
                try:
                    checked.append(system._check_init(init))
                    good.append(k)
                except InputError as exc:
                    results[k] = str(exc)
            t1 = time.perf_counter()
            outs = [to_uint8_truncated(v) for v in system._solve_many(checked)]
    else:
        smoother = prepare_smoother(content, mode, **kw)  # checks the content
        t1 = time.perf_counter()
        good, outs = [], []
        for k, init in enumerate(inits):
            try:
                outs.append(smoother(init))  # checks the stylized image
                good.append(k)
            except InputError as exc:
                results[k] = str(exc)
    for k, out in zip(good, outs):
        results[k] = out
    return results, t1 - t0, time.perf_counter() - t1


_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _warm_worker() -> int:
    """Import the solver in a fresh worker process (so the first real task does not pay for it)."""
    import scipy.sparse.linalg  # noqa: F401

    from .cholesky import default_exact_solver

    if default_exact_solver() == "cholmod":
        import cvxopt.cholmod  # noqa: F401

    return 1


def _exit_with_parent(parent_pid: int, interval_s: float = 0.5) -> None:
    """Pool initializer: end this smoothing process within ``interval_s`` once the process that started the pool
    is gone (killed with SIGKILL, say), instead of lingering, reparented to init, until its queue notices."""
    import os
    import threading
    import time

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="spadepis-parent-watch", daemon=True).start()


class SmoothingPool:
    """Runs :func:`smooth_content` for many content images at once on ``workers`` processes.

    cvxopt keeps the GIL inside CHOLMOD, so factorisations of different contents run in parallel only in separate
    processes (spawned, one BLAS thread each; each keeps its own per-size analysis). ``workers=1`` runs every
    task inline in the calling thread (no process, no copies). Inside a daemonic process (a Dask worker), which
    may not have children, the pool runs inline too and says so in :attr:`note`.

    >>> pool = SmoothingPool(1)
    >>> img = np.zeros((8, 8, 3), np.uint8)
    >>> outs, prep_s, solve_s = pool.submit(img, [img, img]).result()
    >>> len(outs), outs[0].shape
    (2, (8, 8, 3))
    """

    def __init__(self, workers: int) -> None:
        import multiprocessing

        if int(workers) < 1:
            raise ConfigError(f"smoothing workers = {workers}: must be >= 1 (runner.smoothing_workers).")
        self.workers = int(workers)
        self.note = ""
        self._executor = None
        if self.workers > 1 and multiprocessing.current_process().daemon:
            self.note = (
                f"runner.smoothing_workers={self.workers} ignored: this worker process is daemonic (a Dask worker) "
                "and may not start processes; smoothing runs in the worker's own thread (scale with more Dask workers)"
            )
            self.workers = 1
        if self.workers > 1:
            self._start()

    def _start(self) -> None:
        import concurrent.futures
        import multiprocessing
        import os

        # spawned children read the thread limits from the environment when they load their BLAS
        with _ENV_LOCK:
            saved = {v: os.environ.get(v) for v in _THREAD_VARS}
            try:
                for v in _THREAD_VARS:
                    os.environ[v] = "1"
                self._executor = concurrent.futures.ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_exit_with_parent, initargs=(os.getpid(),),
                )
                for f in [self._executor.submit(_warm_worker) for _ in range(self.workers)]:
                    f.result()
            finally:
                for v, old in saved.items():
                    if old is None:
                        os.environ.pop(v, None)
                    else:
                        os.environ[v] = old

    @property
    def broken(self) -> bool:
        return self._executor is not None and bool(getattr(self._executor, "_broken", False))

    def submit(self, content: np.ndarray, inits: list[np.ndarray], mode: str = "exact", **kw: Any):
        """A ``concurrent.futures.Future`` of :func:`smooth_content` ``(results, prepare_s, smooth_s)``."""
        import concurrent.futures

        if self._executor is not None:
            return self._executor.submit(smooth_content, content, inits, mode, **kw)
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(smooth_content(content, inits, mode, **kw))
        except Exception as exc:  # delivered by future.result(), as from a process
            future.set_exception(exc)
        return future

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


_ENV_LOCK = threading.Lock()
_POOLS: dict[int, SmoothingPool] = {}
_POOLS_LOCK = threading.Lock()


def smoothing_pool(workers: int) -> SmoothingPool:
    """The process's :class:`SmoothingPool` of ``workers`` (started once, shared by every shard; a broken pool,
    e.g. after a worker was killed for memory, is replaced)."""
    with _POOLS_LOCK:
        pool = _POOLS.get(workers)
        if pool is None or pool.broken:
            if pool is not None:
                pool.shutdown()
            pool = _POOLS[workers] = SmoothingPool(workers)
        return pool


def default_smoothing_workers() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
