"""Shared pieces of the collective cost model: ops, group shapes, link parameters, phases.

A collective runs as one or more *phases* one after another (each one NCCL kernel). Within a
phase every link type carries its bytes at once (NCCL pipelines chunks through all hops), so
a phase lasts ``base latency + hop latencies + max over link types of (bytes / bandwidth)``;
phases add up. As in NCCL's own model (src/graph/tuning.cc), the hop latencies are
``intra-node steps × intra latency + inter-node steps × network latency``; the base latency
is the hardware profile's ``compute.kernel_launch_s`` (one kernel per phase).
Bandwidths are per rank and effective: physical bandwidth (topology) × efficiency
(hardware profile, per link type) × fabric share (uplink contention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

from ..errors import ZsimInputError
from ..network.topology import Cluster

#: Collective operations, named as in torch.distributed / nccl-tests.
OPS = ("all_gather", "reduce_scatter", "all_reduce", "reduce", "broadcast", "all_to_all")
#: Process groups a collective may run on.
GROUPS = ("world", "intra_node", "inter_node")


@dataclass(frozen=True)
class LinkParams:
    """Efficiency and per-step latency of each link type, from a hardware profile (hashable)."""

    name: str
    params: tuple[tuple[str, float, float], ...]  # (link_type, efficiency, latency_s)
    base_latency_s: float = 0.0                  # per phase (kernel launch)

    def efficiency(self, link_type: str) -> float:
        """Achieved fraction of the physical bandwidth of ``link_type``."""
        return self._get(link_type)[1]

    def latency_s(self, link_type: str) -> float:
        """Latency of one algorithm step over ``link_type``."""
        return self._get(link_type)[2]

    def _get(self, link_type: str) -> tuple[str, float, float]:
        for p in self.params:
            if p[0] == link_type:
                return p
        raise ZsimInputError(
            f"hardware profile {self.name!r} has no link type {link_type!r} "
            f"(has: {', '.join(p[0] for p in self.params)})")


@dataclass(frozen=True)
class GroupShape:
    """Ranks of one process group: ``ranks_per_node`` × ``nodes``.

    ``rails_busy``: every GPU of a node runs its own copy of this group at the same time (the
    inter-node groups of ZeRO++ / the inter phase of hierarchical algorithms), so each GPU
    gets only its own share of the node's NICs.
    """

    ranks_per_node: int
    nodes: int
    rails_busy: bool = False

    @property
    def size(self) -> int:
        """Number of ranks in the group."""
        return self.ranks_per_node * self.nodes


def group_shape(cluster: Cluster, group: str) -> GroupShape:
    """The shape of ``group`` ("world", "intra_node", "inter_node") on ``cluster``."""
    if group == "world":
        return GroupShape(cluster.gpus_per_node, cluster.num_nodes)
    if group == "intra_node":
        return GroupShape(cluster.gpus_per_node, 1)
    if group == "inter_node":
        return GroupShape(1, cluster.num_nodes, rails_busy=cluster.gpus_per_node > 1)
    raise ZsimInputError(f"unknown group {group!r} (choose from {', '.join(GROUPS)})")


@dataclass(frozen=True)
class Stream:
    """Bytes one rank moves over one link type at an effective bandwidth, within a phase."""

    link_type: str
    bytes: float
    bandwidth_GBps: float


@dataclass(frozen=True)
class Phase:
    """One stage of an algorithm (one kernel): its latency plus pipelined streams."""

    latency_s: float
    streams: tuple[Stream, ...]

    def busy_s(self) -> dict[str, float]:
        """Seconds each link type is busy (streams of one type add up: they share links)."""
        busy: dict[str, float] = {}
        for s in self.streams:
            if s.bytes > 0:
                busy[s.link_type] = busy.get(s.link_type, 0.0) + s.bytes / (s.bandwidth_GBps * 1e9)
        return busy

    def time_s(self) -> float:
        """Latency plus the busiest link type's transfer time."""
        return self.latency_s + max(self.busy_s().values(), default=0.0)


@dataclass(frozen=True)
class CollectiveCost:
    """Predicted cost of one collective, with nccl-tests' algbw/busbw conventions.

    ``link_bytes``: bytes one rank puts on each link type (a GPU-to-NIC transfer counts on
    both ``pcie`` and ``ib``); ``link_busy_s``: seconds that link type is busy for it;
    ``bottleneck``: the busiest link type. A group of one rank (or 0 bytes) costs nothing and
    reports ``algbw_GBps = busbw_GBps = 0``.
    """

    time_s: float
    algbw_GBps: float
    busbw_GBps: float
    algorithm: str
    link_bytes: Mapping[str, float] = field(default_factory=dict)
    link_busy_s: Mapping[str, float] = field(default_factory=dict)
    bottleneck: str = ""
    op: str = ""
    buffer_bytes: float = 0.0
    group_size: int = 1

    def utilisation(self) -> dict[str, float]:
        """Fraction of the collective's time each link type is busy (0..1)."""
        if self.time_s <= 0:
            return {k: 0.0 for k in self.link_busy_s}
        return {k: min(1.0, v / self.time_s) for k, v in self.link_busy_s.items()}

    def to_dict(self) -> dict:
        """Plain data for JSON output."""
        return {"op": self.op, "buffer_bytes": self.buffer_bytes, "group_size": self.group_size,
                "algorithm": self.algorithm, "time_s": self.time_s, "algbw_GBps": self.algbw_GBps,
                "busbw_GBps": self.busbw_GBps, "bottleneck": self.bottleneck,
                "link_bytes": dict(self.link_bytes), "link_busy_s": dict(self.link_busy_s),
                "link_utilisation": self.utilisation()}


def bus_factor(op: str, n: int) -> float:
    """nccl-tests' busbw/algbw: 2(n-1)/n all_reduce; (n-1)/n all_gather/reduce_scatter/alltoall."""
    if op == "all_reduce":
        return 2.0 * (n - 1) / n
    if op in ("all_gather", "reduce_scatter", "all_to_all"):
        return (n - 1) / n
    return 1.0


def combine(phases: list[Phase], algorithm: str, op: str, buffer_bytes: float,
            n: int) -> CollectiveCost:
    """Add the phases up into a :class:`CollectiveCost`."""
    time_s = sum(p.time_s() for p in phases)
    link_bytes: dict[str, float] = {}
    busy: dict[str, float] = {}
    for p in phases:
        for s in p.streams:
            link_bytes[s.link_type] = link_bytes.get(s.link_type, 0.0) + s.bytes
        for k, v in p.busy_s().items():
            busy[k] = busy.get(k, 0.0) + v
    algbw = buffer_bytes / time_s / 1e9 if time_s > 0 else 0.0
    bottleneck = max(busy, key=busy.get) if busy else ""
    return CollectiveCost(time_s=time_s, algbw_GBps=algbw, busbw_GBps=algbw * bus_factor(op, n),
                          algorithm=algorithm, link_bytes=link_bytes, link_busy_s=busy,
                          bottleneck=bottleneck, op=op, buffer_bytes=buffer_bytes, group_size=n)


def zero_cost(algorithm: str, op: str, buffer_bytes: float, n: int) -> CollectiveCost:
    """The cost of a collective that moves nothing (one rank, or an empty buffer)."""
    return CollectiveCost(0.0, 0.0, 0.0, algorithm, {}, {}, "", op, buffer_bytes, n)


# --- bandwidth helpers shared by the algorithms -------------------------------------------

def intra_stream(cluster: Cluster, links: LinkParams, nbytes: float) -> Stream:
    """A rank's NVLink (or PCIe, without NVLink) traffic inside its node."""
    kind = cluster.net.intra_link_type or "nvlink"
    return Stream(kind, nbytes, cluster.net.intra_GBps * links.efficiency(kind))


def node_crossing_streams(cluster: Cluster, links: LinkParams, node_bytes: float,
                          shape: GroupShape) -> tuple[Stream, ...]:
    """Per-rank IB and GPU-to-NIC PCIe streams for ``node_bytes`` leaving each node.

    Rings that cross a node once per rail spread a node's traffic over all its NICs
    (``ring_*``); groups that run on every GPU at once (``rails_busy``) give each GPU its own
    NIC share (``rail_*``). Expressed per rank of the group in the node.
    """
    net = cluster.net
    if net.nics_used == 0:
        raise ZsimInputError(f"topology {cluster.topology!r} has no NICs for inter-node traffic")
    share = net.fabric_share
    per = shape.ranks_per_node
    if shape.rails_busy:
        ib_bw, pcie_bw = net.rail_ib_GBps, net.rail_pcie_GBps
        nbytes = node_bytes
    else:
        ib_bw, pcie_bw = net.ring_ib_GBps / per, net.ring_pcie_GBps / per
        nbytes = node_bytes / per
    return (Stream("ib", nbytes, ib_bw * share * links.efficiency("ib")),
            Stream("pcie", nbytes, pcie_bw * links.efficiency("pcie")))


def hop_latency(cluster: Cluster, links: LinkParams, intra_steps: int, inter_steps: int) -> float:
    """Base latency plus ``intra_steps`` NVLink/PCIe hops and ``inter_steps`` network hops."""
    lat = links.base_latency_s
    if intra_steps:
        lat += intra_steps * links.latency_s(cluster.net.intra_link_type or "nvlink")
    if inter_steps:
        lat += inter_steps * links.latency_s("ib")
    return lat


def log2_ceil(n: int) -> int:
    """ceil(log2(n)) for n >= 1: the depth of a binary tree of n leaves."""
    return max(0, math.ceil(math.log2(n))) if n > 1 else 0
