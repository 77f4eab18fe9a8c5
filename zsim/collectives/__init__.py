"""Collective cost model: how long one NCCL-style collective takes on a cluster.

API (what the simulator calls)::

    from zsim.network import load_topology
    from zsim.hardware import load_profile
    from zsim.groups import WORLD
    from zsim.collectives import collective_cost, CollectiveCost, ALGORITHMS, OPS, GROUPS

    cluster = load_topology("dgx-h100").cluster(nodes=4)      # or .cluster(gpus=8)
    hw = load_profile(cluster.hardware)                       # or any HardwareProfile
    c = collective_cost(cluster, hw, "all_gather", 2**28, algorithm="auto", group=WORLD)
    c.time_s, c.algbw_GBps, c.busbw_GBps, c.algorithm         # algorithm actually used
    c.link_bytes    # {"nvlink": bytes, "ib": bytes, "pcie": bytes} one rank puts on each type
    c.link_busy_s   # {"nvlink": s, ...} seconds each link type is busy; c.utilisation() = busy/time
    c.bottleneck    # the busiest link type ("" when nothing moves)

- ``op``: all_gather, reduce_scatter, all_reduce, reduce, broadcast, all_to_all (ZeRO++ qgZ).
- ``buffer_bytes``: the FULL buffer as nccl-tests counts it: all_gather's gathered output,
  reduce_scatter's input, all_reduce/reduce/broadcast's buffer, all_to_all's send buffer of
  one rank. DeepSpeed's comms logger reports the same sizes for all_gather_into_tensor /
  reduce_scatter_tensor.
- ``algorithm``: "auto" (NCCL-like choice: the fastest of ring and tree for all_reduce, of
  ring and PAT for all_gather/reduce_scatter where PAT may run, ring for reduce/broadcast,
  direct for all_to_all; each under its fastest protocol), "ring", "tree"
  (all_reduce/reduce/broadcast), "hierarchical" (not all_to_all), "direct" (all_to_all
  only), "pat" (all_gather/reduce_scatter with one rank per node, as NCCL requires).
- ``group``: a :class:`zsim.groups.Group` (which ranks: its placement on the topology) or
  the label of a named one: "world" (all ranks), "intra_node" (the ranks of one node; ZeRO++
  hpZ), "inter_node" (one rank per node, with every local rank running its own group at the
  same time, as ZeRO++ and hierarchical schemes do).
- ``hardware``: a loaded :class:`zsim.hardware.HardwareProfile` (or its :class:`LinkTable`);
  this layer reads no files. Per link type it gives efficiency and, per NCCL protocol
  (``links.<type>.protocols``), step latency, base latency, bandwidth fraction and caps.
  Deprecated: a profile name/path or None (the cluster's own profile) still works, loaded
  once per name through :func:`zsim.hardware.shared_profile`.
- A group of one rank, or 0 bytes, costs 0 s (algbw = busbw = 0). Bad names or negative
  sizes raise :class:`zsim.errors.ZsimInputError`.
- Results are cached (lru_cache); the cost does not depend on the node count beyond O(1).
- :func:`collective_choice` also says which protocol won; :func:`protocol_costs` lists the
  cost of every (algorithm, protocol) pair considered.

Time model (see :mod:`.base`), NCCL's tuner (src/graph/tuning.cc) in per-rank form: each
phase (one NCCL kernel) under protocol P costs ``compute.kernel_launch_s`` + P's
``base_latency_s`` + (intra-node steps × P's NVLink/PCIe step latency) + (network steps ×
P's ib step latency) + the busiest link type's bytes / (physical bandwidth from the topology
× ``links.<type>.efficiency`` × P's ``bandwidth_fraction`` × fabric share), and at least
bus bytes / P's ``max_busbw_GBps``. LL (8-byte flag+data stores: tiny latency, a quarter of
the bandwidth), LL128 (128-byte lines, 120 of them payload) and Simple (bulk copies with a
fence per chunk: full bandwidth, the largest step latency) are all priced and the fastest
is used, as NCCL does per call. A profile without ``protocols:`` has one protocol (Simple)
with ``links.<type>.latency_s`` per step. NVLS (NVLink SHARP) and CollNet/SHARP in-network
reductions are not modelled.

Group size and op (:mod:`.channels`): where the GPU-to-GPU link has ``links.<type>.ring``,
its efficiency is NCCL's ring channels × GB/s per channel (its topology search) over the
datasheet bandwidth, times the share calls of this op on this many ranks reach
(``achieved_fraction``), and no call takes less than ``call_floor_s``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Union

from ..errors import ZsimInputError
from ..groups import WORLD, Group, as_group
from ..hardware import HardwareProfile, shared_profile
from ..network.topology import Cluster
from . import channels, direct, hierarchical, pat, ring, tree
from .base import (GROUPS, OPS, CollectiveCost, GroupShape, LinkParams, LinkTable, bus_factor,
                   combine, group_shape, hop_link_types, protocol_views, with_call_floor,
                   zero_cost)

#: Algorithm name -> module with NAME, SUPPORTED_OPS and phases(cluster, links, shape, op, bytes).
ALGORITHMS = {m.NAME: m for m in (ring, tree, hierarchical, direct, pat)}
#: Algorithms "auto" chooses among per op, as NCCL does: its tuner weighs ring against tree
#: for all_reduce, ring against PAT for all_gather/reduce_scatter (PAT only where NCCL allows
#: it: one rank per node, and a profile that prices it), and runs the rest as rings
#: (src/graph/tuning.cc); stock NCCL has no hierarchical scheme.
AUTO_CANDIDATES = {"all_reduce": ("ring", "tree"), "all_gather": ("ring", "pat"),
                   "reduce_scatter": ("ring", "pat"), "all_to_all": ("direct",)}

__all__ = ["collective_cost", "collective_choice", "protocol_costs", "CollectiveCost", "Choice",
           "Hardware", "LinkParams", "LinkTable", "link_table", "ALGORITHMS", "OPS", "GROUPS",
           "bus_factor", "supported_algorithms", "call_floor_s"]


@dataclass(frozen=True)
class Choice:
    """What NCCL would run for one call: the algorithm, the protocol, and its cost."""

    algorithm: str
    protocol: str
    cost: CollectiveCost


@functools.lru_cache(maxsize=64)  # profiles hash by identity and are frozen
def link_table(hardware: HardwareProfile) -> LinkTable:
    """The hashable link table (efficiencies, latencies, protocols) of a hardware profile."""
    return LinkTable(hardware.name, tuple(sorted(
        (k, v.efficiency, v.latency_s, tuple(sorted(v.protocols.items())))
        for k, v in hardware.links.items())), launch_s=hardware.compute.kernel_launch_s,
        rings=tuple(sorted((k, v.ring) for k, v in hardware.links.items() if v.ring)))


def supported_algorithms(op: str) -> list[str]:
    """Algorithms that implement ``op``."""
    return [name for name, mod in ALGORITHMS.items() if op in mod.SUPPORTED_OPS]


def _check(op: str, algorithm: str, group: Group | str, buffer_bytes: float) -> Group:
    """Refuse bad input with :class:`ZsimInputError`; return the group as a descriptor."""
    if op not in OPS:
        raise ZsimInputError(f"unknown collective op {op!r} (choose from {', '.join(OPS)})")
    group = as_group(group)
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
    return group


def _group_view(cluster: Cluster, table: LinkTable, links: LinkParams, shape: GroupShape,
                op: str) -> LinkParams:
    """``links`` with the GPU-to-GPU efficiency of this op and group size, where the profile
    has NCCL's ring channel model for that link type (see :mod:`.channels`)."""
    kind = cluster.net.intra_link_type or "nvlink"
    model = table.ring(kind)
    if model is None or shape.ranks_per_node < 2:
        return links
    scale = channels.intra_efficiency(model, cluster.net.intra_GBps, op, shape.size) \
        / table.efficiency(kind)
    params = tuple((k, e * scale if k == kind else e, lat) for k, e, lat in links.params)
    return replace(links, params=params)


def call_floor_s(cluster: Cluster, table: LinkTable) -> float:
    """Least time of one call issued back to back, from the GPU-to-GPU link's ring model."""
    model = table.ring(cluster.net.intra_link_type or "nvlink")
    return model.call_floor_s if model else 0.0


def _priced(cluster: Cluster, table: LinkTable, links: LinkParams, shape: GroupShape, op: str,
            nbytes: float, algorithm: str) -> CollectiveCost:
    """One algorithm under one protocol view, at this op's and group size's efficiency."""
    links = _group_view(cluster, table, links, shape, op)
    phases = ALGORITHMS[algorithm].phases(cluster, links, shape, op, nbytes)
    cost = combine(phases, algorithm, op, nbytes, shape.size, links.max_busbw_GBps)
    return with_call_floor(cost, call_floor_s(cluster, table))


def _views(cluster: Cluster, table: LinkTable, shape: GroupShape,
           algorithm: str) -> tuple[LinkParams, ...]:
    """The protocol views ``algorithm`` may run under (a module may list its PROTOCOLS)."""
    module = ALGORITHMS[algorithm]
    views = protocol_views(table, hop_link_types(cluster, shape), algorithm,
                           getattr(module, "LISTED_ONLY", False))
    allowed = getattr(module, "PROTOCOLS", None)
    return views if allowed is None else tuple(v for v in views if v.protocol in allowed)


def _candidates(shape: GroupShape, op: str, algorithm: str) -> tuple[str, ...]:
    if algorithm != "auto":
        return (algorithm,)
    names = AUTO_CANDIDATES.get(op, ("ring",))
    return tuple(a for a in names if getattr(ALGORITHMS[a], "eligible", lambda s: True)(shape))


@functools.lru_cache(maxsize=65536)
def _options(cluster: Cluster, table: LinkTable, op: str, buffer_bytes: float, algorithm: str,
             group: Group) -> tuple[Choice, ...]:
    """Every (algorithm, protocol) considered for one call, in NCCL's order."""
    shape = group_shape(cluster, group)
    names = _candidates(shape, op, algorithm)
    if algorithm != "auto" and hasattr(ALGORITHMS[algorithm], "check"):
        ALGORITHMS[algorithm].check(shape)  # e.g. PAT needs one rank per node
    if shape.size == 1 or buffer_bytes == 0:
        return (Choice(names[0], "", zero_cost(names[0], op, buffer_bytes, shape.size)),)
    options = tuple(Choice(a, v.protocol,
                           _priced(cluster, table, v, shape, op, float(buffer_bytes), a))
                    for a in names for v in _views(cluster, table, shape, a))
    if not options:
        raise ZsimInputError(
            f"hardware profile {table.name!r} prices no protocol of algorithm "
            f"{'/'.join(names)} on {', '.join(hop_link_types(cluster, shape))} "
            f"(a protocol must be listed by every link type the steps cross)")
    return options


@functools.lru_cache(maxsize=65536)
def _cost(cluster: Cluster, table: LinkTable, op: str, buffer_bytes: float, algorithm: str,
          group: Group) -> Choice:
    # The fastest option; ties go to the earlier algorithm and protocol, as in NCCL's loop.
    return min(_options(cluster, table, op, buffer_bytes, algorithm, group),
               key=lambda c: c.cost.time_s)


#: What the pricing functions take as ``hardware``: a loaded profile or its link table (a
#: name/path or None is the deprecated form, see the module docstring).
Hardware = Union[HardwareProfile, LinkTable, str, None]


def _table(cluster: Cluster, hardware: Hardware) -> LinkTable:
    if isinstance(hardware, LinkTable):
        return hardware
    if isinstance(hardware, HardwareProfile):
        return link_table(hardware)
    # Deprecated: a name/path (None: the cluster's own profile), loaded once per name.
    return link_table(shared_profile(cluster.hardware if hardware is None else hardware))


def collective_choice(cluster: Cluster, hardware: Hardware, op: str, buffer_bytes: float,
                      algorithm: str = "auto", group: Group | str = WORLD) -> Choice:
    """The algorithm and protocol NCCL's model picks for one call, with its cost."""
    group = _check(op, algorithm, group, buffer_bytes)
    return _cost(cluster, _table(cluster, hardware), op, buffer_bytes, algorithm, group)


def protocol_costs(cluster: Cluster, hardware: Hardware, op: str, buffer_bytes: float,
                   algorithm: str = "auto",
                   group: Group | str = WORLD) -> dict[tuple[str, str], CollectiveCost]:
    """The cost of every (algorithm, protocol) pair considered for one call."""
    group = _check(op, algorithm, group, buffer_bytes)
    options = _options(cluster, _table(cluster, hardware), op, buffer_bytes, algorithm, group)
    return {(c.algorithm, c.protocol): c.cost for c in options}


def collective_cost(cluster: Cluster, hardware: Hardware, op: str, buffer_bytes: float,
                    algorithm: str = "auto", group: Group | str = WORLD) -> CollectiveCost:
    """Predicted time and bandwidth of one collective; see the module docstring."""
    return collective_choice(cluster, hardware, op, buffer_bytes, algorithm, group).cost
