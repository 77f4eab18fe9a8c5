"""Topologies: load a YAML file into a :class:`Topology`; carve a :class:`Cluster` from it."""

from __future__ import annotations

import functools
from importlib import resources
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import networkx as nx

from ..errors import ZsimInputError
from ..hardware import PROFILE_DIR, list_profiles
from ..yamlio import load_yaml_file
from .graph import add_node_graph, build_graph
from .spec import FabricSpec, NodeSpec, TopologySpec, parse_topology
from .summary import NetSummary, summarize

#: Folder of the topologies that ship with zsim.
TOPOLOGY_DIR = Path(str(resources.files("zsim").joinpath("data", "topologies")))


@dataclass(frozen=True)
class Cluster:
    """The GPUs a job runs on: ``num_nodes`` nodes × ``gpus_per_node`` GPUs of one topology.

    Hashable (for caches). ``net`` holds the few bandwidth figures the collective cost model
    needs; :meth:`graph` builds the full networkx graph on demand (slow for thousands of nodes).
    """

    topology: str
    hardware: str            # hardware profile name (or absolute path), for zsim.hardware.load_profile
    world_size: int
    gpus_per_node: int       # GPUs used per node (the first ones of each node)
    num_nodes: int
    net: NetSummary
    spec: TopologySpec = field(compare=False, repr=False)

    def graph(self) -> nx.Graph:
        """The networkx graph of this cluster's nodes and the fabric that joins them."""
        return _graph(self.spec, self.num_nodes)

    def describe(self) -> dict[str, Any]:
        """Plain-data description (for JSON output)."""
        fab = self.spec.fabric
        return {
            "topology": self.topology, "hardware": self.hardware, "world_size": self.world_size,
            "gpus_per_node": self.gpus_per_node, "num_nodes": self.num_nodes,
            "fabric": None if fab is None or self.num_nodes == 1 else {
                "kind": fab.kind, "levels": fab.levels, "oversubscription": fab.oversubscription,
                "placement": fab.placement, "nics_per_node": fab.nics_per_node,
                "nic_bandwidth_Gbps": fab.nic_bandwidth_Gbps},
            "bandwidth_GBps": {k: v for k, v in vars(self.net).items() if k.endswith("GBps")},
            "intra_link_type": self.net.intra_link_type,
            "fabric_share": self.net.fabric_share,
        }


@dataclass(frozen=True)
class Topology:
    """A loaded, validated topology file (see zsim/data/topologies/README.md for the schema)."""

    spec: TopologySpec

    @property
    def name(self) -> str:
        """The topology's name."""
        return self.spec.name

    @property
    def node(self) -> NodeSpec:
        """The server every node is made of."""
        return self.spec.node

    @property
    def fabric(self) -> FabricSpec | None:
        """The InfiniBand fabric, or None for a single-node topology."""
        return self.spec.fabric

    @property
    def hardware(self) -> str:
        """Hardware profile name (or absolute path) of the node's GPUs."""
        return self.spec.node.hardware

    @property
    def gpus_per_node(self) -> int:
        """GPUs in one node."""
        return self.spec.node.gpus_per_node

    @property
    def max_nodes(self) -> int:
        """Most nodes ``cluster(nodes=...)`` accepts."""
        return self.spec.fabric.max_nodes if self.spec.fabric else 1

    def graph(self, nodes: int = 1) -> nx.Graph:
        """The networkx graph of ``nodes`` nodes (and the fabric when there is one)."""
        return _graph(self.spec, _check_nodes(self, nodes))

    def cluster(self, gpus: int | None = None, nodes: int | None = None) -> Cluster:
        """``gpus``: the first N GPUs of one node; ``nodes``: M whole nodes; neither: one node."""
        if gpus is not None and nodes is not None:
            raise ZsimInputError("give either a GPU count (--gpus) or a node count (--nodes), not both")
        if gpus is not None:
            n = _positive_int(gpus, "--gpus")
            if n > self.gpus_per_node:
                raise ZsimInputError(
                    f"--gpus {n} exceeds the {self.gpus_per_node} GPUs of one {self.name} node; "
                    f"use --nodes for more than one node")
            return _cluster(self.spec, n, 1)
        m = _check_nodes(self, 1 if nodes is None else nodes)
        return _cluster(self.spec, self.gpus_per_node, m)

    def describe(self, nodes: int = 1) -> dict[str, Any]:
        """Plain-data description of the topology (for `zsim topo show --json`)."""
        node, fab = self.spec.node, self.spec.fabric
        out: dict[str, Any] = {
            "name": self.name, "description": self.spec.description, "source": self.spec.source,
            "path": self.spec.path, "hardware": node.hardware, "gpus_per_node": node.gpus_per_node,
            "nvlink": {"bandwidth_GBps": node.nvlink_bandwidth_GBps, "nvswitches": node.nvswitches}
            if node.has_nvlink else None,
            "pcie": {"gpu_bandwidth_GBps": node.pcie_gpu_bandwidth_GBps,
                     "nic_bandwidth_GBps": node.pcie_nic_bandwidth_GBps,
                     "uplink_bandwidth_GBps": node.pcie_uplink_bandwidth_GBps,
                     "socket_bandwidth_GBps": node.socket_bandwidth_GBps, "cpus": node.cpus,
                     "switches": [{"cpu": s.cpu, "gpus": list(s.gpus), "nics": list(s.nics)}
                                  for s in node.switches]},
            "host": {"cpu_cores": node.host.cpu_cores, "host_memory_bytes": node.host.host_memory_bytes,
                     "source": node.host.source},
            "fabric": None if fab is None else {
                **{k: getattr(fab, k) for k in ("kind", "nics_per_node", "nic_bandwidth_Gbps",
                                                  "levels", "switch_radix", "oversubscription",
                                                  "placement")},
                "nodes_per_leaf": fab.nodes_per_leaf, "max_nodes": fab.max_nodes},
            "max_nodes": self.max_nodes,
        }
        out["cluster"] = self.cluster(nodes=nodes).describe()
        return out


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ZsimInputError(f"{what} must be a positive integer, got {value!r}")
    return value


def _check_nodes(topo: Topology, nodes: Any) -> int:
    m = _positive_int(nodes, "--nodes")
    if m > 1 and topo.fabric is None:
        raise ZsimInputError(
            f"topology {topo.name!r} has no fabric: section, so it is single-node; --nodes {m} "
            f"needs one")
    if m > topo.max_nodes:
        fab = topo.fabric
        raise ZsimInputError(
            f"--nodes {m} exceeds the {topo.max_nodes} nodes a {fab.levels}-level {fab.kind} "
            f"fabric of radix-{fab.switch_radix} switches holds in topology {topo.name!r}")
    return m


@functools.lru_cache(maxsize=256)
def _cluster(spec: TopologySpec, gpus: int, nodes: int) -> Cluster:
    return Cluster(topology=spec.name, hardware=spec.node.hardware, world_size=gpus * nodes,
                   gpus_per_node=gpus, num_nodes=nodes, net=summarize(spec, gpus, nodes),
                   spec=spec)


@functools.lru_cache(maxsize=16)
def _graph(spec: TopologySpec, nodes: int) -> nx.Graph:
    return build_graph(spec.node, spec.fabric, nodes)


def list_topologies() -> list[str]:
    """Names of the topologies that ship with zsim."""
    return sorted(p.stem for p in TOPOLOGY_DIR.glob("*.yaml"))


def _resolve_path(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    if len(text) > 4096 or "\0" in text:
        raise ZsimInputError(f"unknown topology {text[:60]!r}...: not a name or a usable path")
    path = Path(text)
    try:
        is_file = path.is_file()
    except OSError:  # e.g. a component longer than the file system allows
        is_file = False
    if text.endswith((".yaml", ".yml")) or is_file:
        return path
    path = TOPOLOGY_DIR / f"{text}.yaml"
    try:
        known = path.exists()
    except OSError:
        known = False
    if not known:
        raise ZsimInputError(
            f"unknown topology {text[:80]!r} (known: {', '.join(list_topologies())}; or give a YAML path)")
    return path


def _resolve_hardware(spec: TopologySpec, file: Path) -> TopologySpec:
    hw = spec.node.hardware
    if hw.endswith((".yaml", ".yml")):
        p = Path(hw) if Path(hw).is_absolute() else file.parent / hw
        if not p.is_file():
            raise ZsimInputError(f"{file.name}: node.hardware file not found: {p}")
        hw = str(p.resolve())
    elif not (PROFILE_DIR / f"{hw}.yaml").is_file():
        raise ZsimInputError(
            f"{file.name}: node.hardware names unknown profile {hw!r} "
            f"(known: {', '.join(list_profiles())})")
    return replace(spec, node=replace(spec.node, hardware=hw))


def _check_connected(spec: TopologySpec, file: Path) -> None:
    """One node must be connected by itself (not only through the network), and so must two."""
    graphs = [("one node", build_graph(spec.node, None, 1))]
    if spec.fabric is not None:
        nics_only = nx.Graph()
        add_node_graph(nics_only, spec.node, 0, spec.fabric.nics_per_node)
        graphs = [("one node", nics_only)]
        if spec.fabric.max_nodes >= 2:
            graphs.append(("two nodes", build_graph(spec.node, spec.fabric, 2)))
    for what, g in graphs:
        if nx.is_connected(g):
            continue
        parts = sorted(nx.connected_components(g), key=len, reverse=True)
        lost = sorted(parts[1])[0]
        raise ZsimInputError(
            f"{file.name}: the topology graph of {what} is disconnected: {lost} cannot reach "
            f"{sorted(parts[0])[0]} (check node.pcie.switches[].cpu and node.nvlink)")


def _load(path_text: str) -> Topology:
    path = Path(path_text)
    data = load_yaml_file(path, "topology")
    spec = parse_topology(data, path.name, str(path))
    spec = _resolve_hardware(spec, path)
    _check_connected(spec, path)
    if spec.fabric is not None:
        summarize(spec, spec.node.gpus_per_node, 1)  # every GPU must reach a NIC over PCIe
    return Topology(spec)


def load_topology(name_or_path: str | Path) -> Topology:
    """Load a shipped topology by name (``dgx-h100``) or any topology YAML by path.

    Raises :class:`~zsim.errors.ZsimInputError` naming the file and key for unknown names,
    malformed YAML, unknown keys, non-positive bandwidths, unplaced GPUs/NICs and
    disconnected graphs.
    """
    path = _resolve_path(name_or_path)
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        raise ZsimInputError(f"topology file not found: {path}") from None
    return _load_cached(str(path.resolve()), stamp)


@functools.lru_cache(maxsize=64)
def _load_cached(path_text: str, stamp: int) -> Topology:
    # The modification time is part of the key so that an edited file is re-read.
    return _load(path_text)
