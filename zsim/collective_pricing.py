"""The join between the collective layer and the system layer.

The system layer prices a collective op through one callable, ``(op, bytes, group) ->
(seconds, bottleneck)``; this module builds it from a cluster and a loaded hardware profile,
and sums the per-link busy time of a schedule's collectives for the link-utilisation report.
"""

from __future__ import annotations

from .collectives import collective_cost
from .hardware import HardwareProfile
from .ops import LOGGER_TO_COLLECTIVE


def collective_timer(cluster, hw: HardwareProfile):
    """Adapter from the collective layer to the system layer's (op, bytes, group) interface."""

    def timer(op: str, buffer_bytes: int, group: str) -> tuple[float, str]:
        cost = collective_cost(cluster, hw, op, int(buffer_bytes), group=group)
        return cost.time_s, cost.bottleneck or "none"

    return timer


def link_utilisation(ops, cluster, hw: HardwareProfile, step_s: float) -> dict[str, float]:
    """Fraction of the step each link type is busy (summed over the rank's collectives)."""
    busy: dict[str, float] = {}
    for op in ops:
        if op.kind != "collective":
            continue
        cost = collective_cost(cluster, hw, LOGGER_TO_COLLECTIVE[op.collective], int(op.buffer_bytes),
                               group=op.group)
        for link, sec in (cost.link_busy_s or {}).items():
            busy[link] = busy.get(link, 0.0) + sec
    return {k: min(v / step_s, 1.0) for k, v in sorted(busy.items())}
