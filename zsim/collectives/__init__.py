"""Collective cost model: how long one NCCL-style collective takes on a cluster.

API (what the simulator calls)::

    from zsim.network import load_topology
    from zsim.hardware import load_profile
    from zsim.collectives import collective_cost, CollectiveCost, ALGORITHMS, OPS, GROUPS

    cluster = load_topology("dgx-h100").cluster(nodes=4)      # or .cluster(gpus=8)
    hw = load_profile(cluster.hardware)                       # or any HardwareProfile
    c = collective_cost(cluster, hw, "all_gather", 2**28, algorithm="auto", group="world")
    c.time_s, c.algbw_GBps, c.busbw_GBps, c.algorithm         # algorithm actually used
    c.link_bytes    # {"nvlink": bytes, "ib": bytes, "pcie": bytes} one rank puts on each type
    c.link_busy_s   # {"nvlink": s, ...} seconds each link type is busy; c.utilisation() = busy/time
    c.bottleneck    # the busiest link type ("" when nothing moves)

- ``op``: all_gather, reduce_scatter, all_reduce, reduce, broadcast, all_to_all (ZeRO++ qgZ).
- ``buffer_bytes``: the FULL buffer as nccl-tests counts it: all_gather's gathered output,
  reduce_scatter's input, all_reduce/reduce/broadcast's buffer, all_to_all's send buffer of
  one rank. DeepSpeed's comms logger reports the same sizes for all_gather_into_tensor /
  reduce_scatter_tensor.
- ``algorithm``: "auto" (NCCL-like choice: the fastest of ring and tree for all_reduce, ring
  for the other ops, direct for all_to_all), "ring", "tree" (all_reduce/reduce/broadcast),
  "hierarchical" (not all_to_all), "direct" (all_to_all only).
- ``group``: "world" (all ranks), "intra_node" (the ranks of one node; ZeRO++ hpZ),
  "inter_node" (one rank per node, with every local rank running its own group at the same
  time, as ZeRO++ and hierarchical schemes do).
- ``hardware``: a :class:`zsim.hardware.HardwareProfile`, a profile name/path, or None
  (the cluster's own profile). Per link type it gives efficiency and per-step latency_s.
- A group of one rank, or 0 bytes, costs 0 s (algbw = busbw = 0). Bad names or negative
  sizes raise :class:`zsim.errors.ZsimInputError`.
- Results are cached (lru_cache); the cost does not depend on the node count beyond O(1).

Time model (see :mod:`.base`): each phase (one NCCL kernel) costs the profile's
``compute.kernel_launch_s`` + (intra-node steps × ``links.<nvlink|pcie>.latency_s``) +
(network steps × ``links.ib.latency_s``) + the busiest link type's bytes / (physical
bandwidth from the topology × ``links.<type>.efficiency`` × fabric share). NVLS (NVLink
SHARP) and CollNet/SHARP in-network reductions are not modelled.
"""

from __future__ import annotations

import functools
from typing import Union

from ..errors import ZsimInputError
from ..hardware import HardwareProfile, load_profile
from ..network.topology import Cluster
from . import direct, hierarchical, ring, tree
from .base import (GROUPS, OPS, CollectiveCost, LinkParams, bus_factor, combine, group_shape,
                   zero_cost)

#: Algorithm name -> module with NAME, SUPPORTED_OPS and phases(cluster, links, shape, op, bytes).
ALGORITHMS = {m.NAME: m for m in (ring, tree, hierarchical, direct)}
#: Algorithms "auto" chooses among per op, as NCCL does: its tuner weighs ring against tree
#: for all_reduce only and runs every other collective as a ring (src/graph/tuning.cc);
#: stock NCCL has no hierarchical scheme.
AUTO_CANDIDATES = {"all_reduce": ("ring", "tree"), "all_to_all": ("direct",)}

__all__ = ["collective_cost", "CollectiveCost", "LinkParams", "link_params", "ALGORITHMS",
           "OPS", "GROUPS", "bus_factor", "supported_algorithms"]


@functools.lru_cache(maxsize=64)
def _profile_params(name: str) -> LinkParams:
    return link_params(load_profile(name))


def link_params(hardware: HardwareProfile) -> LinkParams:
    """The hashable link efficiency/latency table of a hardware profile."""
    return LinkParams(hardware.name, tuple(sorted(
        (k, v.efficiency, v.latency_s) for k, v in hardware.links.items())),
        base_latency_s=hardware.compute.kernel_launch_s)


def supported_algorithms(op: str) -> list[str]:
    """Algorithms that implement ``op``."""
    return [name for name, mod in ALGORITHMS.items() if op in mod.SUPPORTED_OPS]


def _check(op: str, algorithm: str, group: str, buffer_bytes: float) -> None:
    if op not in OPS:
        raise ZsimInputError(f"unknown collective op {op!r} (choose from {', '.join(OPS)})")
    if group not in GROUPS:
        raise ZsimInputError(f"unknown group {group!r} (choose from {', '.join(GROUPS)})")
    if algorithm != "auto" and algorithm not in ALGORITHMS:
        raise ZsimInputError(
            f"unknown algorithm {algorithm!r} (choose from auto, {', '.join(ALGORITHMS)})")
    if algorithm != "auto" and op not in ALGORITHMS[algorithm].SUPPORTED_OPS:
        raise ZsimInputError(
            f"algorithm {algorithm!r} does not implement {op} "
            f"(use one of: {', '.join(supported_algorithms(op))})")
    if isinstance(buffer_bytes, bool) or not isinstance(buffer_bytes, (int, float)) \
            or not buffer_bytes >= 0 or buffer_bytes == float("inf"):
        raise ZsimInputError(f"buffer size must be a finite non-negative number of bytes, "
                             f"got {buffer_bytes!r}")


@functools.lru_cache(maxsize=65536)
def _cost(cluster: Cluster, links: LinkParams, op: str, buffer_bytes: float, algorithm: str,
          group: str) -> CollectiveCost:
    shape = group_shape(cluster, group)
    if shape.size == 1 or buffer_bytes == 0:
        name = "ring" if algorithm == "auto" else algorithm
        return zero_cost(name, op, buffer_bytes, shape.size)
    if algorithm == "auto":
        options = [_cost(cluster, links, op, buffer_bytes, a, group)
                   for a in AUTO_CANDIDATES.get(op, ("ring",))]
        return min(options, key=lambda c: c.time_s)
    phases = ALGORITHMS[algorithm].phases(cluster, links, shape, op, float(buffer_bytes))
    return combine(phases, algorithm, op, buffer_bytes, shape.size)


def collective_cost(cluster: Cluster, hardware: Union[HardwareProfile, str, None], op: str,
                    buffer_bytes: float, algorithm: str = "auto",
                    group: str = "world") -> CollectiveCost:
    """Predicted time and bandwidth of one collective; see the module docstring."""
    _check(op, algorithm, group, buffer_bytes)
    if hardware is None:
        links = _profile_params(cluster.hardware)
    elif isinstance(hardware, str):
        links = _profile_params(hardware)
    else:
        links = link_params(hardware)
    return _cost(cluster, links, op, buffer_bytes, algorithm, group)
