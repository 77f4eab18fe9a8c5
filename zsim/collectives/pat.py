"""PAT (Parallel Aggregated Trees), NCCL's log-latency all_gather / reduce_scatter (NCCL >= 2.23).

NCCL runs PAT only with one GPU per node (``ncclPatEnable``: nNodes == nRanks) and only with
the Simple protocol; in zsim that is the ``inter_node`` group (ZeRO++'s secondary groups) or
a cluster of one-GPU nodes. Each rank still moves (n-1)/n of the buffer through its NIC, but
in log2(n) network steps instead of n-1. NCCL's tuner prices it as base latency +
log2(nodes) × a per-level latency + a per-rank term ("still a linear part") and 0.75 of the
ring's bus bandwidth; those figures are the profile's ``algorithms: {pat: ...}`` entries of
the network link's Simple protocol (``latency_s`` per level, ``rank_latency_s``,
``bandwidth_fraction``). Without such entries PAT is not offered.
"""

from __future__ import annotations

from ..errors import ZsimInputError
from ..network.topology import Cluster
from .base import GroupShape, LinkParams, Phase, log2_ceil, node_crossing_streams

NAME = "pat"
SUPPORTED_OPS = ("all_gather", "reduce_scatter")
#: PAT is priced only under protocols whose hop links list an entry for it.
LISTED_ONLY = True


def eligible(shape: GroupShape) -> bool:
    """Whether NCCL would run PAT for this group: one rank per node, more than one node."""
    return shape.ranks_per_node == 1 and shape.nodes > 1


def check(shape: GroupShape) -> None:
    """Refuse a group NCCL would not run PAT on (several ranks per node)."""
    if shape.ranks_per_node > 1:
        raise ZsimInputError(
            f"algorithm 'pat' runs with one rank per node (NCCL enables PAT only when every "
            f"node has one GPU); this group has {shape.ranks_per_node} per node: use "
            f"group 'inter_node' or another algorithm")


def phases(cluster: Cluster, links: LinkParams, shape: GroupShape, op: str,
           nbytes: float) -> list[Phase]:
    """One phase: log-depth network steps, the ring's bytes through each rank's NIC."""
    check(shape)
    n = shape.size
    sent = (n - 1) / n * nbytes
    latency = (links.base_latency_s + log2_ceil(n) * links.latency_s("ib")
               + n * links.rank_latency_s)
    return [Phase(latency, node_crossing_streams(cluster, links, sent, shape), bus_bytes=sent)]
