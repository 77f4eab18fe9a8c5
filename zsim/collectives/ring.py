"""Ring algorithms, as NCCL runs them (its default for large messages).

One ring per channel; within a node the ring visits every GPU over NVLink (or PCIe), and it
leaves/enters each node once, through a NIC. NCCL gives each channel its own NIC, so a node's
ring traffic spreads over all its NICs ("crosses nodes once per rail").

Per rank, a ring of n ranks moves (n-1)/n·S for all_gather/reduce_scatter and 2(n-1)/n·S
for all_reduce in n-1 (2(n-1)) steps; reduce and broadcast run as a pipelined chain that
moves S through every rank in n-1 steps.
"""

from __future__ import annotations

from ..network.topology import Cluster
from .base import (GroupShape, LinkParams, Phase, hop_latency, intra_stream,
                   node_crossing_streams)

NAME = "ring"
SUPPORTED_OPS = ("all_gather", "reduce_scatter", "all_reduce", "reduce", "broadcast")


def volume(op: str, n: int, nbytes: float) -> tuple[float, int]:
    """Bytes each rank sends, and the number of steps, for a ring of ``n`` ranks."""
    if op == "all_reduce":
        return 2.0 * (n - 1) / n * nbytes, 2 * (n - 1)
    if op in ("all_gather", "reduce_scatter"):
        return (n - 1) / n * nbytes, n - 1
    return float(nbytes), n - 1  # reduce, broadcast: pipelined chain


def phases(cluster: Cluster, links: LinkParams, shape: GroupShape, op: str,
           nbytes: float) -> list[Phase]:
    """One pipelined phase: every hop of the ring busy at once."""
    sent, steps = volume(op, shape.size, nbytes)
    _, inter_steps = volume(op, shape.nodes, nbytes) if shape.nodes > 1 else (0.0, 0)
    g = shape.ranks_per_node
    streams = []
    if shape.nodes > 1:
        # Each node sends the ring's per-rank volume once per channel out of the node.
        streams.extend(node_crossing_streams(cluster, links, sent, shape))
        if g > 1:
            streams.append(intra_stream(cluster, links, sent * (g - 1) / g))
    else:
        streams.append(intra_stream(cluster, links, sent))
    latency = hop_latency(cluster, links, steps - inter_steps, inter_steps, ring=True)
    return [Phase(latency, tuple(streams), bus_bytes=sent)]
