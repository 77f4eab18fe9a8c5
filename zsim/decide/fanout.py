"""Where many independent predictions run: this process, a process pool, or a Dask cluster.

A backend maps a one-argument function over a sequence and yields the results in input
order, whatever order they finish in, so a sweep's rows do not depend on where it ran.
:class:`Serial` runs them here, :class:`ProcessPool` in worker processes
(``concurrent.futures``, ``zsim sweep --jobs N``), :class:`DaskCluster` on the workers of a
running Dask scheduler (``zsim sweep --dask ADDRESS``; the optional ``zsim[cluster]`` extra).
Any object with a ``map_in_order`` method of the same shape (a generator) is a backend too.

The function and items must be picklable for the last two: module-level functions, or
``functools.partial`` of them, with plain data.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generator, Protocol, Sequence, TypeVar

from .. import __version__
from ..errors import ZsimInputError

T = TypeVar("T")
R = TypeVar("R")
#: What a backend's map returns: a generator, so that a caller that stops early can close it
#: (shutting a pool down, closing a cluster client) without waiting for garbage collection.
Results = Generator[R, None, None]

#: How long ``--dask`` waits for the scheduler to answer before it gives up (one line, exit 2).
DASK_CONNECT_TIMEOUT_S = 10.0

#: What to install when ``--dask`` finds no dask.distributed.
CLUSTER_EXTRA_HINT = "pip install 'zsim[cluster]'"


class Backend(Protocol):
    """Maps ``fn`` over ``items``; the results come back in the order of ``items``."""

    def map_in_order(self, fn: Callable[[T], R], items: Sequence[T]) -> Results[R]:
        """Yield ``fn(item)`` for each item, in input order."""
        ...


@dataclass(frozen=True)
class Serial:
    """Every call in this process, one after the other."""

    def map_in_order(self, fn: Callable[[T], R], items: Sequence[T]) -> Results[R]:
        """Plain ``map``."""
        yield from map(fn, items)


@dataclass(frozen=True)
class ProcessPool:
    """``workers`` local worker processes (``concurrent.futures.ProcessPoolExecutor``)."""

    workers: int

    def __post_init__(self) -> None:
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ZsimInputError(f"jobs (worker processes) must be a positive integer, got {self.workers!r}")

    def map_in_order(self, fn: Callable[[T], R], items: Sequence[T]) -> Results[R]:
        """Executor.map (results in input order); one worker or one item runs here instead,
        since starting a process would only add its start-up time."""
        if self.workers == 1 or len(items) < 2:
            yield from map(fn, items)
            return
        with ProcessPoolExecutor(max_workers=min(self.workers, len(items))) as pool:
            yield from pool.map(fn, items)


@dataclass(frozen=True)
class DaskCluster:
    """The workers of a running Dask scheduler: ``address`` is its URL (``tcp://host:8786``)
    or the path of the scheduler file it wrote (``dask scheduler --scheduler-file``).

    The workers must import the same zsim version as this process (checked on connecting):
    a different version would give different rows."""

    address: str
    connect_timeout_s: float = DASK_CONNECT_TIMEOUT_S

    def __post_init__(self) -> None:
        if not str(self.address).strip():
            raise ZsimInputError("--dask needs a scheduler address (tcp://host:8786) or a scheduler file")
        if not self.connect_timeout_s > 0:
            raise ZsimInputError(f"dask connect timeout must be positive, got {self.connect_timeout_s!r} s")

    def map_in_order(self, fn: Callable[[T], R], items: Sequence[T]) -> Results[R]:
        """Submit one task per item, then wait for them in input order."""
        client = self._connect()
        try:
            self._check_workers(client)
            # pure=False: every item is its own task even when two are equal, so no result
            # is shared by key with an earlier, unrelated submission on the same scheduler.
            futures = client.map(fn, list(items), pure=False)
            for future in futures:
                yield self._result(future)
        finally:
            client.close()

    def _connect(self) -> Any:
        try:
            from distributed import Client
        except ImportError:
            raise ZsimInputError(f"--dask needs dask.distributed, which is not installed: "
                                 f"{CLUSTER_EXTRA_HINT}") from None
        where = str(self.address).strip()
        target = {"scheduler_file": where} if Path(where).is_file() else {"address": where}
        try:
            # set_as_default=False: the user's own dask configuration stays as it was.
            return Client(**target, timeout=self.connect_timeout_s, set_as_default=False)
        except (OSError, ValueError, KeyError) as exc:   # refused, timed out, bad URL or file
            raise ZsimInputError(f"--dask {where}: cannot reach a Dask scheduler "
                                 f"({_first_line(exc)})") from None

    def _check_workers(self, client: Any) -> None:
        try:
            versions = client.run(_zsim_version)
        except Exception as exc:   # raised on a worker (e.g. no zsim there) and re-raised here
            raise ZsimInputError(f"--dask {self.address}: a worker cannot import zsim "
                                 f"({_first_line(exc)}); install zsim {__version__} on the workers") from None
        if not versions:
            raise ZsimInputError(f"--dask {self.address}: the scheduler has no workers")
        other = sorted({v for v in versions.values() if v != __version__})
        if other:
            raise ZsimInputError(f"--dask {self.address}: workers run zsim {', '.join(other)}, this is "
                                 f"{__version__}; install the same version on the workers")

    def _result(self, future: Any) -> Any:
        from distributed import KilledWorker   # imported already by _connect: a lookup
        try:
            return future.result()
        except (KilledWorker, OSError) as exc:   # a worker or the scheduler went away
            raise ZsimInputError(f"--dask {self.address}: the cluster lost a task "
                                 f"({_first_line(exc)})") from None


def backend_for(jobs: int | None = None, dask: str | None = None) -> Backend:
    """The backend the command-line flags ask for: ``--dask ADDRESS``, ``--jobs N`` or
    neither (this process). Both at once is an input error."""
    if dask is not None and jobs is not None:
        raise ZsimInputError("--jobs and --dask both say where configurations run: give one")
    if dask is not None:
        # The module constant, read now, so that a test can shorten it.
        return DaskCluster(dask, connect_timeout_s=DASK_CONNECT_TIMEOUT_S)
    if jobs is not None and jobs != 1:
        return ProcessPool(jobs)
    return Serial()


def _zsim_version() -> str:
    """Run on each Dask worker: the zsim it imports (which fails there without zsim)."""
    import zsim
    return zsim.__version__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
