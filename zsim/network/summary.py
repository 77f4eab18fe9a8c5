"""What the collective algorithms need to know about a cluster, in a few numbers.

Computed once per (topology, GPUs per node, nodes) from the graph of ONE node (flow
contention on its NVLink/PCIe links) and closed-form fabric arithmetic, so the cost does not
grow with the node count. All bandwidths are physical (before the hardware profile's
efficiency), in GB/s (1e9 bytes) per direction.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from .graph import build_graph, flow_bandwidths, route, _weight
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


def nearest_nics(g: nx.Graph, gpus: int, nics: int) -> list[int]:
    """NIC index each GPU uses: the closest by PCIe path, spreading ties over NICs."""
    if nics == 0:
        return []
    load = [0] * nics
    chosen = []
    for i in range(gpus):
        costs = []
        for r in range(nics):
            path = route(g, f"n0/gpu{i}", f"n0/nic{r}")
            # Skip the NVLink plane: GPUDirect RDMA goes GPU -> PCIe switch -> NIC.
            hops = [g[u][v] for u, v in zip(path, path[1:])]
            cost = sum(_weight(None, None, e) for e in hops)
            costs.append((round(cost, 12), load[r], r))
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


def fabric_share(fabric: FabricSpec | None, num_nodes: int) -> float:
    """Uplink contention for rings over ``num_nodes`` nodes, closed-form.

    ``packed``: the job's nodes fill leaves in order, so a ring leaves a leaf once per rail
    (rail-optimized) or once per NIC of the boundary node (fat-tree). ``scattered``: nodes
    sit anywhere, so nearly every node's ring neighbour is under another leaf and the
    leaf's uplinks carry all its nodes' flows: the oversubscription ratio bites.
    """
    if fabric is None or num_nodes <= 1 or fabric.levels == 1:
        return 1.0
    per = fabric.nodes_per_leaf
    rails_per_leaf = 1 if fabric.kind == "rail_optimized" else fabric.nics_per_node
    share = 1.0
    levels = [(per, fabric.leaf_up_ports)]
    if fabric.levels == 3:
        leaves_per_pod = fabric.leaf_down_ports
        if fabric.kind == "rail_optimized":
            pod_nodes = per * max(1, leaves_per_pod // fabric.nics_per_node)
            rails_pod = fabric.nics_per_node
        else:
            pod_nodes = per * leaves_per_pod
            rails_pod = fabric.nics_per_node
        levels.append((pod_nodes, fabric.leaf_up_ports * fabric.leaf_up_ports))
    for i, (group, uplinks) in enumerate(levels):
        if num_nodes <= group:
            continue
        rails = rails_per_leaf if i == 0 else rails_pod
        if fabric.placement == "packed":
            flows = rails
        else:
            crossing = 1.0 - (group - 1) / (num_nodes - 1)
            flows = group * rails * crossing * (1 if i == 0 else 1)
            if i == 0 and fabric.kind == "rail_optimized":
                flows = group * crossing
        share = min(share, _share(uplinks, flows))
    return share


def summarize(spec: TopologySpec, gpus: int, num_nodes: int) -> NetSummary:
    """The :class:`NetSummary` of ``num_nodes`` nodes using GPUs 0..gpus-1 of each."""
    fabric = spec.fabric
    g = build_graph(spec.node, None, 1)
    if fabric is not None:  # NICs are part of the node graph
        from .graph import add_node_graph
        g = nx.Graph()
        add_node_graph(g, spec.node, 0, fabric.nics_per_node)
    kind, intra = _intra(g, gpus)
    nic_GBps = fabric.nic_bandwidth_GBps if fabric else 0.0
    used, ring_ib, ring_pcie, rail_ib, rail_pcie = _rails(
        g, gpus, fabric.nics_per_node if fabric else 0, nic_GBps)
    return NetSummary(intra_link_type=kind, intra_GBps=intra, nics_used=used, nic_GBps=nic_GBps,
                      ring_ib_GBps=ring_ib, ring_pcie_GBps=ring_pcie, rail_ib_GBps=rail_ib,
                      rail_pcie_GBps=rail_pcie, fabric_share=fabric_share(fabric, num_nodes))
