"""Tree algorithms, as NCCL runs them: a double binary tree across nodes, a chain inside.

NCCL splits the buffer over two complementary binary trees, so every node is a leaf in one
and (at most) an interior node in the other; each node sends about 2·S out of its NICs for
an all_reduce (reduce up, broadcast down), like a ring, but in O(log nodes) steps instead of
O(ranks). Inside a node the ranks form a chain that carries S up and S down, so a single
node gains nothing from a tree. NCCL runs only all_reduce with trees; reduce and broadcast
here are the halves of it.
"""

from __future__ import annotations

from dataclasses import replace

from ..network.topology import Cluster
from .base import (GroupShape, LinkParams, Phase, hop_latency, intra_stream, log2_ceil,
                   node_crossing_streams)

NAME = "tree"
SUPPORTED_OPS = ("all_reduce", "reduce", "broadcast")
#: Fraction of the ring's bandwidth a tree achieves, from NCCL's tuning model.
TREE_BANDWIDTH_FACTOR = 0.9


def phases(cluster: Cluster, links: LinkParams, shape: GroupShape, op: str,
           nbytes: float) -> list[Phase]:
    """One pipelined phase through chain and trees (up and/or down)."""
    passes = 2 if op == "all_reduce" else 1  # reduce up and broadcast down
    g, m = shape.ranks_per_node, shape.nodes
    streams = []
    if g > 1:
        streams.append(intra_stream(cluster, links, passes * nbytes))
    if m > 1:
        streams.extend(node_crossing_streams(cluster, links, passes * nbytes, shape))
    # NCCL's model derates tree bandwidth by 0.9 against the ring (src/graph/tuning.cc,
    # ncclTopoTuneModel: "if (a == NCCL_ALGO_TREE) busBw = std::min(busBw*.9, ...)").
    streams = [replace(s, bandwidth_GBps=s.bandwidth_GBps * TREE_BANDWIDTH_FACTOR) for s in streams]
    latency = hop_latency(cluster, links, passes * (g - 1), passes * log2_ceil(m))
    return [Phase(latency, tuple(streams), bus_bytes=passes * nbytes)]
