"""All-to-all as NCCL runs it: every rank sends its 1/n slice straight to every other rank.

``buffer_bytes`` is one rank's whole send buffer (nccl-tests' alltoall size), so each rank
sends (g-1)/n of it over NVLink to its node's peers and (m-1)/m of it out of its NIC, all
peers at once. Every GPU of a node sends at the same time, so each gets its own share of the
NICs, and traffic from every node to every other node crosses the fabric's uplinks (the
cluster's ``a2a_fabric_share``). With 2 nodes busbw is 2x the network bandwidth per GPU,
falling to 1x as nodes grow, as NCCL's maintainers describe it (nccl-tests issue #130).
Latency: one launch plus one hop of each link type (the sends run in parallel).
"""

from __future__ import annotations

from ..network.topology import Cluster
from .base import GroupShape, LinkParams, Phase, Stream, hop_latency, intra_stream

NAME = "direct"
SUPPORTED_OPS = ("all_to_all",)
#: NCCL runs all_to_all as point-to-point sends, which use Simple (LL for small ones), never
#: LL128 (src/enqueue.cc: p2p protocol choice).
PROTOCOLS = ("ll", "simple")


def phases(cluster: Cluster, links: LinkParams, shape: GroupShape, op: str,
           nbytes: float) -> list[Phase]:
    """One phase: NVLink and NIC traffic at once."""
    g, m, n = shape.ranks_per_node, shape.nodes, shape.size
    net = cluster.net
    streams: list[Stream] = []
    if g > 1:
        streams.append(intra_stream(cluster, links, nbytes * (g - 1) / n))
    if m > 1:
        inter = nbytes * (m - 1) / m
        streams.append(Stream("ib", inter, net.rail_ib_GBps * net.a2a_fabric_share
                              * links.efficiency("ib")))
        streams.append(Stream("pcie", inter, net.rail_pcie_GBps * links.efficiency("pcie")))
    latency = hop_latency(cluster, links, 1 if g > 1 else 0, 1 if m > 1 else 0)
    return [Phase(latency, tuple(streams), bus_bytes=nbytes * (n - 1) / n)]
