"""The network layer: topology YAML -> validated specs -> networkx graph -> :class:`Cluster`.

API::

    from zsim.network import load_topology, list_topologies
    topo = load_topology("dgx-h100")          # or a path to a YAML file
    cluster = topo.cluster(nodes=4)           # or gpus=N (first N GPUs of one node)
    cluster.world_size, cluster.gpus_per_node, cluster.num_nodes, cluster.hardware
    cluster.net                               # NetSummary: the bandwidths collectives use
    cluster.graph()                           # networkx.Graph (built on demand)
"""

from .spec import FabricSpec, NodeSpec, PcieSwitchSpec, TopologySpec
from .summary import NetSummary
from .topology import TOPOLOGY_DIR, Cluster, Topology, list_topologies, load_topology

__all__ = ["load_topology", "list_topologies", "Topology", "Cluster", "NetSummary",
           "TopologySpec", "NodeSpec", "FabricSpec", "PcieSwitchSpec", "TOPOLOGY_DIR"]
