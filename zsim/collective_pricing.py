"""The join between the collective layer and the system layer.

The system layer prices a collective op through one callable, ``(op, bytes, group) ->
(seconds, bottleneck)`` (:data:`zsim.system.costs.CollectiveTimer`); this module builds it
from a cluster and a loaded hardware profile, and sums the per-link busy time of a
schedule's collectives for the link-utilisation report.
"""

from __future__ import annotations

from .collectives import collective_cost, link_table
from .groups import Group
from .hardware import HardwareProfile
from .network.topology import Cluster
from .ops import LOGGER_TO_COLLECTIVE


def collective_timer(cluster: Cluster, hw: HardwareProfile):
    """Adapter from the collective layer to the system layer's (op, bytes, group) interface."""
    table = link_table(hw)  # the profile's link data, derived once for every call

    def timer(op: str, buffer_bytes: int, group: Group) -> tuple[float, str]:
        cost = collective_cost(cluster, table, op, int(buffer_bytes), group=group)
        return cost.time_s, cost.bottleneck or "none"

    return timer


def link_utilisation(ops, cluster: Cluster, hw: HardwareProfile, step_s: float) -> dict[str, float]:
    """Fraction of the step each link type is busy (summed over the rank's collectives)."""
    table = link_table(hw)
    busy: dict[str, float] = {}
    # A step repeats a few collective shapes thousands of times: each shape's link seconds
    # are looked up once (the same values, added in the same op order).
    per_shape: dict[tuple, tuple] = {}
    for op in ops:
        if op.kind != "collective":
            continue
        shape = (op.collective, op.buffer_bytes, op.group)
        links = per_shape.get(shape)
        if links is None:
            cost = collective_cost(cluster, table, LOGGER_TO_COLLECTIVE[op.collective], int(op.buffer_bytes),
                                   group=op.group)
            links = per_shape[shape] = tuple((cost.link_busy_s or {}).items())
        for link, sec in links:
            busy[link] = busy.get(link, 0.0) + sec
    return {k: min(v / step_s, 1.0) for k, v in sorted(busy.items())}
