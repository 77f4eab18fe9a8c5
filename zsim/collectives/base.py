"""Shared pieces of the collective cost model: ops, group shapes, link parameters, phases.

A collective runs as one or more *phases* one after another (each one NCCL kernel). Within a
phase every link type carries its bytes at once (NCCL pipelines chunks through all hops), so
a phase lasts ``base latency + hop latencies + max over link types of (bytes / bandwidth)``;
phases add up. As in NCCL's own model (src/graph/tuning.cc), the hop latencies are
``intra-node steps × intra latency + inter-node steps × network latency``.

Every phase is priced under one NCCL *protocol* (LL, LL128, Simple): :class:`LinkParams` is
the hardware profile seen through that protocol (:func:`protocol_views`), so the latencies,
bandwidth fractions and bus-bandwidth cap the algorithms read are the protocol's. The base
latency is ``compute.kernel_launch_s`` plus the protocol's ``base_latency_s``.
Bandwidths are per rank and effective: physical bandwidth (topology) × efficiency
(hardware profile, per link type) × the protocol's bandwidth fraction × fabric share.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from typing import Mapping

from ..errors import ZsimInputError
from ..groups import NAMED_GROUPS, Group, as_group
from ..hardware import PROTOCOL_NAMES, ProtocolLink, RingChannels
from ..network.topology import Cluster

#: Collective operations, named as in torch.distributed / nccl-tests.
OPS = ("all_gather", "reduce_scatter", "all_reduce", "reduce", "broadcast", "all_to_all")
#: Labels of the named process groups a collective may run on (``zsim collective --group``);
#: any :class:`zsim.groups.Group` may be passed.
GROUPS = tuple(NAMED_GROUPS)


@dataclass(frozen=True)
class LinkParams:
    """One protocol's view of a hardware profile's links (hashable, so costs can be cached).

    ``params``: (link_type, efficiency × protocol bandwidth fraction, per-step latency_s);
    ``base_latency_s``: per phase (kernel launch + the protocol's base latency);
    ``step_floor_s``: least cost of an intra-node step of a ring that crosses nodes;
    ``max_busbw_GBps``: cap on a phase's bus bandwidth (0 = none);
    ``rank_latency_s``: latency per rank of the group (PAT's linear term).
    """

    name: str
    params: tuple[tuple[str, float, float], ...]  # (link_type, efficiency, latency_s)
    base_latency_s: float = 0.0                  # per phase (kernel launch + protocol base)
    protocol: str = "simple"
    step_floor_s: float = 0.0
    max_busbw_GBps: float = 0.0
    rank_latency_s: float = 0.0                  # per rank of the group (PAT)

    def efficiency(self, link_type: str) -> float:
        """Achieved fraction of the physical bandwidth of ``link_type`` under this protocol."""
        return self._get(link_type)[1]

    def latency_s(self, link_type: str) -> float:
        """Latency of one algorithm step over ``link_type`` under this protocol."""
        return self._get(link_type)[2]

    def _get(self, link_type: str) -> tuple[str, float, float]:
        for p in self.params:
            if p[0] == link_type:
                return p
        raise ZsimInputError(
            f"hardware profile {self.name!r} has no link type {link_type!r} "
            f"(has: {', '.join(p[0] for p in self.params)})")


@dataclass(frozen=True)
class LinkTable:
    """A hardware profile's link data, hashable: per link type its efficiency, legacy
    per-step latency and protocol entries; plus the kernel launch latency."""

    name: str
    links: tuple[tuple[str, float, float, tuple[tuple[str, ProtocolLink], ...]], ...]
    launch_s: float = 0.0
    rings: tuple[tuple[str, RingChannels], ...] = ()  # NCCL ring channel model per link type

    def ring(self, link_type: str) -> RingChannels | None:
        """The ring channel model of ``link_type`` (None when the profile has none)."""
        return dict(self.rings).get(link_type)

    def efficiency(self, link_type: str) -> float:
        """The profile's plain efficiency of ``link_type``."""
        for kind, eff, _, _ in self.links:
            if kind == link_type:
                return eff
        raise ZsimInputError(f"hardware profile {self.name!r} has no link type {link_type!r}")

    def protocols(self, link_type: str) -> dict[str, ProtocolLink]:
        """The protocols ``link_type`` supports; a link without ``protocols:`` runs Simple
        with its plain ``latency_s``."""
        for kind, _, latency, protos in self.links:
            if kind == link_type:
                return dict(protos) if protos else {"simple": ProtocolLink(latency_s=latency)}
        raise ZsimInputError(
            f"hardware profile {self.name!r} has no link type {link_type!r} "
            f"(has: {', '.join(k[0] for k in self.links)})")


def hop_link_types(cluster: Cluster, shape: "GroupShape") -> tuple[str, ...]:
    """The link types a group's algorithm steps cross: GPU-to-GPU inside a node, ib across."""
    kinds = []
    if shape.ranks_per_node > 1:
        kinds.append(cluster.net.intra_link_type or "nvlink")
    if shape.nodes > 1:
        kinds.append("ib")
    return tuple(kinds)


@functools.lru_cache(maxsize=256)
def protocol_views(table: LinkTable, hops: tuple[str, ...], algorithm: str,
                   listed_only: bool = False) -> tuple[LinkParams, ...]:
    """One :class:`LinkParams` per protocol every hop link type supports (NCCL's order), with
    ``algorithm``'s own entries where the profile has them (``listed_only``: only protocols
    that every hop link lists an entry of ``algorithm`` for, as PAT needs).

    A link type that carries bytes but is not a hop (the GPU-to-NIC PCIe path) uses its own
    entry for the protocol when it has one, else its plain efficiency: the protocol's payload
    overhead is already paid on the network link it feeds.
    """
    views = []
    for proto in PROTOCOL_NAMES:
        raw = [table.protocols(k).get(proto) for k in hops]
        if not hops or any(e is None for e in raw):
            continue
        if listed_only and any(algorithm not in dict(e.algorithms) for e in raw):
            continue
        entries = [e.for_algorithm(algorithm) for e in raw]
        params = []
        for kind, eff, latency, _ in table.links:
            e = table.protocols(kind).get(proto)
            e = e.for_algorithm(algorithm) if e else None
            params.append((kind, eff * (e.bandwidth_fraction if e else 1.0),
                           e.latency_s if e else latency))
        caps = [e.max_busbw_GBps for e in entries if e.max_busbw_GBps > 0]
        views.append(LinkParams(
            table.name, tuple(params),
            base_latency_s=table.launch_s + max(e.base_latency_s for e in entries),
            protocol=proto, step_floor_s=max(e.ring_step_floor_s for e in entries),
            max_busbw_GBps=min(caps, default=0.0),
            rank_latency_s=max(e.rank_latency_s for e in entries)))
    return tuple(views)


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


def group_shape(cluster: Cluster, group: Group | str) -> GroupShape:
    """The shape of ``group`` (a :class:`~zsim.groups.Group` or its label) on ``cluster``."""
    group = as_group(group)
    per, nodes, rails_busy = group.placement(cluster.gpus_per_node, cluster.num_nodes)
    if per > cluster.gpus_per_node or nodes > cluster.num_nodes:
        raise ZsimInputError(
            f"group {group.label!r} spans {nodes} node(s) x {per} rank(s); the cluster has "
            f"{cluster.num_nodes} x {cluster.gpus_per_node}")
    return GroupShape(per, nodes, rails_busy=rails_busy)


@dataclass(frozen=True)
class Stream:
    """Bytes one rank moves over one link type at an effective bandwidth, within a phase."""

    link_type: str
    bytes: float
    bandwidth_GBps: float


@dataclass(frozen=True)
class Phase:
    """One stage of an algorithm (one kernel): its latency plus pipelined streams.

    ``bus_bytes``: bytes one rank sends in the phase (nccl-tests' busbw convention); with a
    protocol's bus-bandwidth cap the transfer lasts at least ``bus_bytes / cap``.
    """

    latency_s: float
    streams: tuple[Stream, ...]
    bus_bytes: float = 0.0

    def busy_s(self) -> dict[str, float]:
        """Seconds each link type is busy (streams of one type add up: they share links)."""
        busy: dict[str, float] = {}
        for s in self.streams:
            if s.bytes > 0:
                busy[s.link_type] = busy.get(s.link_type, 0.0) + s.bytes / (s.bandwidth_GBps * 1e9)
        return busy

    def time_s(self, max_busbw_GBps: float = 0.0) -> float:
        """Latency plus the busiest link type's transfer time, or the transfer time at the
        protocol's bus-bandwidth cap (``max_busbw_GBps``, 0 = none) when that is longer."""
        floor = self.bus_bytes / (max_busbw_GBps * 1e9) if max_busbw_GBps > 0 else 0.0
        return self.latency_s + max(max(self.busy_s().values(), default=0.0), floor)


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
            n: int, max_busbw_GBps: float = 0.0) -> CollectiveCost:
    """Add the phases up into a :class:`CollectiveCost` (``max_busbw_GBps``: protocol cap)."""
    time_s = sum(p.time_s(max_busbw_GBps) for p in phases)
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


def with_call_floor(cost: CollectiveCost, floor_s: float) -> CollectiveCost:
    """``cost`` lasting at least ``floor_s`` (the least time of one call issued back to
    back); algbw/busbw follow the longer time, link busy times stay."""
    if cost.time_s >= floor_s or cost.time_s <= 0:
        return cost
    algbw = cost.buffer_bytes / floor_s / 1e9
    return replace(cost, time_s=floor_s, algbw_GBps=algbw,
                   busbw_GBps=algbw * bus_factor(cost.op, cost.group_size))


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


def hop_latency(cluster: Cluster, links: LinkParams, intra_steps: int, inter_steps: int,
                ring: bool = False) -> float:
    """Base latency plus ``intra_steps`` NVLink/PCIe hops and ``inter_steps`` network hops.

    In a ``ring`` that crosses nodes every step waits on the network proxy, so an intra-node
    step costs at least ``links.step_floor_s`` (NCCL's netOverhead).
    """
    lat = links.base_latency_s
    if intra_steps:
        intra = links.latency_s(cluster.net.intra_link_type or "nvlink")
        if ring and inter_steps:
            intra = max(intra, links.step_floor_s)
        lat += intra_steps * intra
    if inter_steps:
        lat += inter_steps * links.latency_s("ib")
    return lat


def log2_ceil(n: int) -> int:
    """ceil(log2(n)) for n >= 1: the depth of a binary tree of n leaves."""
    return max(0, math.ceil(math.log2(n))) if n > 1 else 0
