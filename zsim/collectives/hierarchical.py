"""Hierarchical algorithms: an intra-node phase, an inter-node phase, an intra-node phase.

The intra-node parts run over NVLink among the ranks of a node; the inter-node part runs
among the ranks with the same local index (one group per rail, all at once), on S/g bytes:

- all_reduce: reduce_scatter in the node, all_reduce across nodes, all_gather in the node;
- all_gather: all_gather across nodes (each rank gathers its rail's S/g), then in the node;
- reduce_scatter: reduce_scatter in the node, then across nodes on S/g;
- reduce / broadcast: reduce_scatter (scatter) in the node, reduce (broadcast) across nodes
  on S/g, gather to (all_gather from) the root's node.

This is the two-level scheme of hierarchical all-reduce implementations and of ZeRO++'s
hierarchical partitioning; the phases do not overlap, so it loses to NCCL's pipelined ring
at large sizes but takes fewer latency steps. With one node or one rank per node it is the
ring. Each phase runs under the call's protocol (the ring's entries of the profile).
"""

from __future__ import annotations

from dataclasses import replace

from ..network.topology import Cluster
from . import ring
from .base import GroupShape, LinkParams, Phase, hop_latency

NAME = "hierarchical"
SUPPORTED_OPS = ("all_gather", "reduce_scatter", "all_reduce", "reduce", "broadcast")

_PLAN = {  # (intra op before, inter op, intra op after)
    "all_reduce": ("reduce_scatter", "all_reduce", "all_gather"),
    "all_gather": (None, "all_gather", "all_gather"),
    "reduce_scatter": ("reduce_scatter", "reduce_scatter", None),
    "reduce": ("reduce_scatter", "reduce", "gather"),
    "broadcast": ("scatter", "broadcast", "all_gather"),
}


def _intra(cluster: Cluster, links: LinkParams, g: int, op: str | None,
           nbytes: float) -> list[Phase]:
    if op is None:
        return []
    inner = GroupShape(g, 1)
    if op in ("gather", "scatter"):
        # The root's link carries (g-1)/g of the buffer; one step of latency.
        (ph,) = ring.phases(cluster, links, inner, "all_gather", nbytes)
        return [replace(ph, latency_s=hop_latency(cluster, links, 1, 0))]
    return ring.phases(cluster, links, inner, op, nbytes)


def phases(cluster: Cluster, links: LinkParams, shape: GroupShape, op: str,
           nbytes: float) -> list[Phase]:
    """Intra-node, inter-node (per rail, concurrently), intra-node phases in sequence."""
    g, m = shape.ranks_per_node, shape.nodes
    if g == 1 or m == 1:
        return ring.phases(cluster, links, shape, op, nbytes)
    before, across, after = _PLAN[op]
    rails = GroupShape(1, m, rails_busy=True)
    return (_intra(cluster, links, g, before, nbytes)
            + ring.phases(cluster, links, rails, across, nbytes / g)
            + _intra(cluster, links, g, after, nbytes))
