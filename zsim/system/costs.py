"""Pricing ops: the one place where the system layer meets compute, network and host models.

:class:`OpCoster` maps an :class:`~zsim.ops.Op` to an :class:`~zsim.system.engine.OpCost`.
Collectives are priced by a ``collective_time`` callable (the collective layer), so the
engine never knows which network model runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter
from typing import Callable, Iterable

from ..compute import module_time_s, optimizer_time_s, step_passes_time_s
from ..groups import Group
from ..hardware import HardwareProfile
from ..hostcost import cpu_pass_rate, loop_op_s
from ..ops import LOGGER_TO_COLLECTIVE, Op
from ..workload import Workload
from .engine import OpCost

#: (collective op, full buffer bytes, process group) -> (seconds, bottleneck link type)
CollectiveTimer = Callable[[str, int, Group], tuple[float, str]]


@dataclass(frozen=True)
class HostShare:
    """How a node's ranks share its host: CPU optimizer cores and PCIe to host memory.

    ``pcie_share`` scales the one-GPU pinned-copy bandwidth of the hardware profile down to
    what each GPU gets when every GPU of the node copies at once (GPUs behind one PCIe
    switch share its uplink to the CPU).
    """

    ranks_per_node: int
    pcie_share: float = 1.0
    cpu_threads_per_rank: float = 0.0   # 0: the node's cores shared by its ranks

    def threads(self, hw: HardwareProfile) -> float:
        """Threads each rank's CPU passes run on."""
        if self.cpu_threads_per_rank > 0:
            return self.cpu_threads_per_rank
        return max(1.0, hw.host.cpu_threads / self.ranks_per_node) if hw.host.cpu_threads else 1.0


#: The fields an op's price depends on (the cache key of :class:`OpCoster`), read in one call.
_price_key = attrgetter("kind", "stream", "modules", "pass_", "collective", "buffer_bytes", "group", "nbytes",
                        "params", "overhead", "count", "syncs", "pageable", "cpu_pass")
#: The same per kind: only the fields :meth:`OpCoster._price` reads for that kind (a step
#: prices tens of thousands of ops; a short key is quicker to make and hash). Keep them in
#: step with ``_price``; a kind not listed takes the full key.
_KIND_PRICE_KEYS = {
    "compute": attrgetter("kind", "modules", "pass_"),
    "dispatch": attrgetter("kind", "modules", "pass_"),
    "collective": attrgetter("kind", "collective", "buffer_bytes", "group"),
    "copy": attrgetter("kind", "stream", "pageable", "nbytes"),
    "optimizer": attrgetter("kind", "params"),
    "step_passes": attrgetter("kind", "nbytes"),
    "cpu_adam": attrgetter("kind", "params"),
    "cpu_pass": attrgetter("kind", "cpu_pass", "params"),
    "host_loop": attrgetter("kind", "count", "syncs"),
    "overhead": attrgetter("kind", "overhead", "count"),
}


class OpCoster:
    """Prices ops for one rank; results are cached per distinct op shape."""

    def __init__(self, workload: Workload, precision: str, hw: HardwareProfile,
                 collective: CollectiveTimer, host: HostShare):
        self.workload, self.precision, self.hw = workload, precision, hw
        self.collective, self.host = collective, host
        self._cache: dict[tuple, OpCost] = {}

    def __call__(self, op: Op) -> OpCost:
        return self.prices((op,))[0]

    def prices(self, ops: Iterable[Op]) -> list[OpCost]:
        """``[self(op) for op in ops]`` in one loop (no call per op: a step is tens of
        thousands of ops; :func:`zsim.system.engine.simulate` asks for them this way)."""
        cache, keys, out = self._cache, _KIND_PRICE_KEYS, []
        append = out.append
        for op in ops:
            key = keys.get(op.kind, _price_key)(op)
            cost = cache.get(key)
            if cost is None:
                cost = cache[key] = self._price(op)
            append(cost)
        return out

    def _price(self, op: Op) -> OpCost:
        hw = self.hw
        if op.kind == "compute":
            t = sum(module_time_s(self.workload, m, op.pass_, hw, self.precision)[0] for m in op.modules)
            return OpCost(t, "compute")
        if op.kind == "dispatch":
            t = sum(module_time_s(self.workload, m, op.pass_, hw, self.precision)[1] for m in op.modules)
            return OpCost(t, "host")
        if op.kind == "collective":
            t, link = self.collective(LOGGER_TO_COLLECTIVE[op.collective], op.buffer_bytes, op.group)
            return OpCost(t, f"comm:{link}")
        if op.kind == "copy":
            direction = "h2d" if op.stream == "h2d" else "d2h"
            bw = hw.host.h2d_bandwidth_GBps if direction == "h2d" else hw.host.d2h_bandwidth_GBps
            if op.pageable and hw.host.pageable_d2h_bandwidth_GBps > 0:
                # A copy into pageable memory is staged by the driver through its own
                # pinned buffer: far slower than a pinned copy, and not PCIe-limited.
                return OpCost(op.nbytes / (hw.host.pageable_d2h_bandwidth_GBps * 1e9), "copy:d2h_pageable")
            return OpCost(op.nbytes / (bw * self.host.pcie_share * 1e9), f"copy:{direction}")
        if op.kind == "optimizer":
            return OpCost(optimizer_time_s(op.params, hw), "optimizer")
        if op.kind == "step_passes":
            return OpCost(step_passes_time_s(op.nbytes, hw), "optimizer")
        if op.kind in ("cpu_adam", "cpu_pass"):
            name = "adam" if op.kind == "cpu_adam" else op.cpu_pass
            rate = cpu_pass_rate(hw, name, self.host.threads(hw))
            if rate <= 0 and op.kind == "cpu_adam":
                # Profiles without per-thread rates: a node's ranks share its cores.
                rate = hw.host.cpu_adam_params_per_s / self.host.ranks_per_node
            return OpCost(op.params / rate if rate > 0 else 0.0, "cpu_optimizer")
        if op.kind == "host_loop":
            return OpCost(op.count * loop_op_s(hw) + op.syncs * hw.host.sync_s, "host")
        if op.kind == "overhead":
            per = getattr(hw.overheads, op.overhead, None)
            if per is None:
                raise ValueError(f"op {op.name}: unknown overhead {op.overhead!r}")
            return OpCost(per * op.count, "host")
        raise ValueError(f"op {op.name}: cannot price kind {op.kind!r}")
