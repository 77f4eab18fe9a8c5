"""The topology as a networkx graph, and flow contention on it.

Vertices are named ``n<j>/gpu<i>``, ``n<j>/nvswitch``, ``n<j>/pcie<s>``, ``n<j>/cpu<c>``,
``n<j>/nic<r>`` inside node ``j``; ``leaf<l>``, ``spine<s>``, ``core<c>`` in the fabric.
Each vertex has ``kind`` (gpu, nvswitch, pcie_switch, cpu, nic, leaf, spine, core); each edge
has ``bandwidth_GBps`` (per direction) and ``link_type`` (nvlink, pcie, ib).

The NVSwitch chips of a node are one vertex (the "NVSwitch plane", ``count`` chips): NCCL
spreads traffic over all of them, so a GPU's NVLink bandwidth is one edge of the summed
bandwidth. Parallel links between two switches are one edge with the summed bandwidth.
CPU-socket links (UPI/xGMI) and root ports count as ``pcie``: host interconnect.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

import networkx as nx

from .spec import FabricSpec, NodeSpec


def _add_edge(g: nx.Graph, u: str, v: str, bandwidth_GBps: float, link_type: str) -> None:
    if g.has_edge(u, v):  # parallel links: sum them
        g[u][v]["bandwidth_GBps"] += bandwidth_GBps
        g[u][v]["links"] += 1
    else:
        g.add_edge(u, v, bandwidth_GBps=bandwidth_GBps, link_type=link_type, links=1)


def add_node_graph(g: nx.Graph, node: NodeSpec, j: int, nics: int) -> None:
    """Add server ``j``: GPUs, NVSwitch plane, PCIe switches, CPUs and ``nics`` NICs."""
    p = f"n{j}/"
    for i in range(node.gpus_per_node):
        g.add_node(f"{p}gpu{i}", kind="gpu", node=j, index=i)
    if node.has_nvlink:
        g.add_node(f"{p}nvswitch", kind="nvswitch", node=j, count=node.nvswitches)
        for i in range(node.gpus_per_node):
            _add_edge(g, f"{p}gpu{i}", f"{p}nvswitch", node.nvlink_bandwidth_GBps, "nvlink")
    for c in range(node.cpus):
        g.add_node(f"{p}cpu{c}", kind="cpu", node=j, index=c)
    for c in range(1, node.cpus):  # sockets in a chain (two-socket servers: one link)
        _add_edge(g, f"{p}cpu{c - 1}", f"{p}cpu{c}", node.socket_bandwidth_GBps, "pcie")
    for s, sw in enumerate(node.switches):
        name = f"{p}pcie{s}"
        g.add_node(name, kind="pcie_switch", node=j, index=s)
        if sw.cpu is not None:
            _add_edge(g, name, f"{p}cpu{sw.cpu}", node.pcie_uplink_bandwidth_GBps, "pcie")
        for i in sw.gpus:
            _add_edge(g, f"{p}gpu{i}", name, node.pcie_gpu_bandwidth_GBps, "pcie")
        for r in sw.nics:
            if r < nics:
                g.add_node(f"{p}nic{r}", kind="nic", node=j, index=r)
                _add_edge(g, f"{p}nic{r}", name, node.pcie_nic_bandwidth_GBps, "pcie")


def _leaf_of(fabric: FabricSpec, j: int, r: int) -> int:
    """Global leaf index of NIC ``r`` of node ``j``."""
    per = fabric.nodes_per_leaf
    if fabric.kind == "fat_tree":
        return j // per
    if fabric.levels == 1:
        return r  # one switch per rail
    return (j // per) * fabric.nics_per_node + r


def add_fabric_graph(g: nx.Graph, fabric: FabricSpec, num_nodes: int) -> None:
    """Add leaves (and spines/cores for 2/3 levels) and the NIC-leaf cables of ``num_nodes``."""
    bw = fabric.nic_bandwidth_GBps
    leaves = set()
    for j in range(num_nodes):
        for r in range(fabric.nics_per_node):
            leaf = _leaf_of(fabric, j, r)
            leaves.add(leaf)
            g.add_node(f"leaf{leaf}", kind="leaf", index=leaf)
            _add_edge(g, f"n{j}/nic{r}", f"leaf{leaf}", bw, "ib")
    if fabric.levels == 1 or len(leaves) == 1 and fabric.kind == "fat_tree":
        return
    up = fabric.leaf_up_ports
    pod_leaves = fabric.leaf_down_ports if fabric.levels == 3 else max(len(leaves), 1)
    for leaf in sorted(leaves):
        pod = leaf // pod_leaves
        spines = up  # each leaf uplink goes to a different spine of its pod
        for k in range(up):
            s = pod * spines + k
            g.add_node(f"spine{s}", kind="spine", index=s, pod=pod)
            _add_edge(g, f"leaf{leaf}", f"spine{s}", bw, "ib")
    if fabric.levels == 3:
        pods = (max(leaves) // pod_leaves) + 1
        if pods > 1:
            spine_up = fabric.leaf_up_ports
            for pod in range(pods):
                for k in range(up):
                    s = pod * up + k
                    for c in range(spine_up):
                        core = k * spine_up + c
                        g.add_node(f"core{core}", kind="core", index=core)
                        _add_edge(g, f"spine{s}", f"core{core}", bw, "ib")


def build_graph(node: NodeSpec, fabric: FabricSpec | None, num_nodes: int) -> nx.Graph:
    """The whole graph of ``num_nodes`` servers and (if more than one or a fabric) the fabric."""
    g = nx.Graph()
    nics = fabric.nics_per_node if fabric else 0
    for j in range(num_nodes):
        add_node_graph(g, node, j, nics)
    if fabric is not None:
        add_fabric_graph(g, fabric, num_nodes)
    return g


def _weight(u: str, v: str, data: dict) -> float:
    # Prefer fast links: NCCL routes GPU-GPU traffic over NVLink when it exists.
    return 1.0 / data["bandwidth_GBps"]


def route(g: nx.Graph, src: str, dst: str) -> list[str]:
    """The path NCCL-like routing takes from ``src`` to ``dst`` (highest-bandwidth path)."""
    return nx.shortest_path(g, src, dst, weight=_weight)


def flow_bandwidths(g: nx.Graph, flows: Iterable[tuple[str, str]],
                    skip_types: tuple[str, ...] = ()) -> list[tuple[float, str]]:
    """Per-direction bandwidth each flow gets when all flows run at once, and its bottleneck type.

    Each directed hop is shared equally by the flows that cross it in that direction; a
    flow's bandwidth is its worst share along its path. Edges of ``skip_types`` are ignored
    (to ask e.g. what the PCIe part of a GPU-to-NIC path alone allows).
    """
    paths = [route(g, s, d) for s, d in flows]
    load = Counter((u, v) for path in paths for u, v in zip(path, path[1:]))
    result = []
    for path in paths:
        best = (float("inf"), "")
        for u, v in zip(path, path[1:]):
            e = g[u][v]
            if e["link_type"] in skip_types:
                continue
            share = e["bandwidth_GBps"] / load[(u, v)]
            if share < best[0]:
                best = (share, e["link_type"])
        result.append(best)
    return result
