"""What the collective algorithms need to know about a cluster, in a few numbers.

Computed once per (topology, GPUs per node, nodes) from the graph of ONE node (flow
contention on its NVLink/PCIe links) and closed-form fabric arithmetic, so the cost does not
grow with the node count. All bandwidths are physical (before the hardware profile's
efficiency), in GB/s (1e9 bytes) per direction.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from ..errors import ZsimInputError

from .graph import _weight, add_node_graph, flow_bandwidths
from .spec import FabricSpec, TopologySpec


@dataclass(frozen=True)
class NetSummary:
    """Per-cluster bandwidth figures used by :mod:`zsim.collectives`.

    Attributes:
        intra_link_type: link type that bounds a ring over the node's GPUs ("" for one GPU).
        intra_GBps: bandwidth each GPU gets in that ring (all ring hops active at once).
        nics_used: NICs of a node that the used GPUs reach first (NCCL's nearest-NIC choice).
        nic_GBps: line rate of one NIC.
        ring_ib_GBps: a node's NIC bandwidth for rings that cross it once per rail
            (one channel per NIC): ``nics_used * nic_GBps``.
        ring_pcie_GBps: the same rings' GPU-to-NIC PCIe bandwidth, summed over the node.
        rail_ib_GBps: NIC bandwidth per GPU when every GPU of the node sends at once (a NIC
            shared by k GPUs gives each 1/k).
        rail_pcie_GBps: PCIe bandwidth per GPU to its NIC when every GPU sends at once.
        fabric_share: fraction of NIC bandwidth left to node-crossing rings after
            leaf/spine uplink contention (1 = non-blocking for this job).
        a2a_fabric_share: the same for all-to-all traffic (every node to every node).
    """

    intra_link_type: str
    intra_GBps: float
    nics_used: int
    nic_GBps: float
    ring_ib_GBps: float
    ring_pcie_GBps: float
    rail_ib_GBps: float
    rail_pcie_GBps: float
    fabric_share: float
    a2a_fabric_share: float = 1.0


def nearest_nics(g: nx.Graph, gpus: int, nics: int) -> list[int]:
    """NIC index each GPU uses: the closest by PCIe path, spreading ties over NICs.

    ``g`` is the node graph without NVLink: GPUDirect RDMA goes GPU -> PCIe switch -> NIC.
    """
    if nics == 0:
        return []
    load = [0] * nics
    chosen = []
    for i in range(gpus):
        # One Dijkstra per GPU prices every NIC at once (a path per pair was cubic in size).
        dist = nx.single_source_dijkstra_path_length(g, f"n0/gpu{i}", weight=_weight)
        costs = [(round(dist[f"n0/nic{r}"], 12), load[r], r) for r in range(nics) if f"n0/nic{r}" in dist]
        if not costs:
            raise ZsimInputError(f"GPU {i} reaches no NIC over PCIe (GPUDirect RDMA needs a PCIe "
                                 f"path): check node.pcie.switches")
        r = min(costs)[2]
        load[r] += 1
        chosen.append(r)
    return chosen


def _pcie_only(g: nx.Graph) -> nx.Graph:
    """The node graph without NVLink edges (GPU-to-NIC traffic does not use NVLink)."""
    h = nx.Graph()
    h.add_nodes_from(g.nodes(data=True))
    h.add_edges_from((u, v, d) for u, v, d in g.edges(data=True) if d["link_type"] != "nvlink")
    return h


def _intra(g: nx.Graph, gpus: int) -> tuple[str, float]:
    if gpus < 2:
        return "", 0.0
    flows = [(f"n0/gpu{i}", f"n0/gpu{(i + 1) % gpus}") for i in range(gpus)]
    bw, kind = min(flow_bandwidths(g, flows))
    return kind, bw


def _rails(g: nx.Graph, gpus: int, nics: int, nic_GBps: float) -> tuple[int, float, float, float, float]:
    if nics == 0:
        return 0, 0.0, 0.0, 0.0, 0.0
    h = _pcie_only(g)
    chosen = nearest_nics(h, gpus, nics)
    all_flows = [(f"n0/gpu{i}", f"n0/nic{r}") for i, r in enumerate(chosen)]
    rail_pcie = min(bw for bw, _ in flow_bandwidths(h, all_flows))
    rail_ib = min(nic_GBps / chosen.count(r) for r in chosen)
    used = sorted(set(chosen))
    owners = [(f"n0/gpu{chosen.index(r)}", f"n0/nic{r}") for r in used]
    ring_pcie = sum(bw for bw, _ in flow_bandwidths(h, owners))
    return len(used), len(used) * nic_GBps, ring_pcie, rail_ib, rail_pcie


def _share(uplinks: float, flows: float) -> float:
    return 1.0 if flows <= 0 else min(1.0, uplinks / flows)


def _levels(fabric: FabricSpec) -> list[tuple[int, int, int]]:
    """(nodes under one switch group, ports each node has into it, uplinks out of it) per level.

    Level 1 is a leaf; at three levels, level 2 is a pod (the leaves under one set of spines).
    A rail-optimized leaf serves one rail, so each node has one port into it.
    """
    rail = fabric.kind == "rail_optimized"
    per, nics, down, up = (fabric.nodes_per_leaf, fabric.nics_per_node, fabric.leaf_down_ports,
                           fabric.leaf_up_ports)
    levels = [(per, 1 if rail else nics, up)]
    if fabric.levels == 3:
        pod_nodes = per * (max(1, down // nics) if rail else down)
        levels.append((pod_nodes, nics, up * up))
    return levels


def fabric_share(fabric: FabricSpec | None, num_nodes: int, pattern: str = "ring") -> float:
    """Fraction of NIC bandwidth left after leaf/spine uplink contention, closed-form.

    ``pattern="ring"``: rings (and trees) between neighbouring ranks. A ``packed`` job fills
    leaves in order, so a ring leaves a switch group once per port a node has into it; a
    ``scattered`` job's ring neighbours are mostly under other leaves, so nearly all of a
    leaf's flows go up and the oversubscription ratio bites. ``pattern="all_to_all"``: every
    node talks to every other, so the share of traffic leaving a group is 1 - group/nodes
    whatever the placement.
    """
    if fabric is None or num_nodes <= 1 or fabric.levels == 1:
        return 1.0
    share = 1.0
    for group, ports, uplinks in _levels(fabric):
        if num_nodes <= group:
            continue
        if pattern == "all_to_all":
            flows = group * ports * (1.0 - group / num_nodes)
        elif fabric.placement == "packed":
            flows = ports
        else:
            flows = group * ports * (1.0 - (group - 1) / (num_nodes - 1))
        share = min(share, _share(uplinks, flows))
    return share


def summarize(spec: TopologySpec, gpus: int, num_nodes: int) -> NetSummary:
    """The :class:`NetSummary` of ``num_nodes`` nodes using GPUs 0..gpus-1 of each."""
    fabric = spec.fabric
    g = nx.Graph()  # one node with its NICs: contention inside a node is the same in every node
    add_node_graph(g, spec.node, 0, fabric.nics_per_node if fabric else 0)
    kind, intra = _intra(g, gpus)
    nic_GBps = fabric.nic_bandwidth_GBps if fabric else 0.0
    used, ring_ib, ring_pcie, rail_ib, rail_pcie = _rails(
        g, gpus, fabric.nics_per_node if fabric else 0, nic_GBps)
    return NetSummary(intra_link_type=kind, intra_GBps=intra, nics_used=used, nic_GBps=nic_GBps,
                      ring_ib_GBps=ring_ib, ring_pcie_GBps=ring_pcie, rail_ib_GBps=rail_ib,
                      rail_pcie_GBps=rail_pcie, fabric_share=fabric_share(fabric, num_nodes),
                      a2a_fabric_share=fabric_share(fabric, num_nodes, "all_to_all"))
