"""Topology YAML -> typed, validated specs (no graph here; see :mod:`zsim.network.graph`).

The schema is documented in ``zsim/data/topologies/README.md``. Every check raises
:class:`~zsim.errors.ZsimInputError` with a message naming the file and the key.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import ZsimInputError
from ..limits import (MAX_GPUS_PER_NODE, MAX_NODE_PARTS, MAX_OVERSUBSCRIPTION, MAX_SWITCH_RADIX,
                      max_for_key, show_number)

#: Fabric kinds a topology may name.
FABRIC_KINDS = ("rail_optimized", "fat_tree")
#: How a job's nodes sit on leaf switches (see zsim/data/topologies/README.md, "placement").
PLACEMENTS = ("packed", "scattered")

_TOP_KEYS = {"name", "description", "source", "node", "fabric"}
_NODE_KEYS = {"hardware", "gpus_per_node", "nvlink", "pcie", "host"}
_HOST_KEYS = {"cpu_cores", "host_memory_bytes", "source"}
_NVLINK_KEYS = {"bandwidth_GBps", "nvswitches"}
_PCIE_KEYS = {"gpu_bandwidth_GBps", "nic_bandwidth_GBps", "uplink_bandwidth_GBps",
              "socket_bandwidth_GBps", "cpus", "switches"}
_SWITCH_KEYS = {"cpu", "gpus", "nics"}
_FABRIC_KEYS = {"kind", "nics_per_node", "nic_bandwidth_Gbps", "levels", "switch_radix",
                "oversubscription", "placement"}


@dataclass(frozen=True)
class PcieSwitchSpec:
    """One PCIe switch: the CPU socket it hangs off and the GPUs/NICs behind it."""

    cpu: int | None  # None: not attached to a CPU (e.g. a GPU board behind its own switch)
    gpus: tuple[int, ...]
    nics: tuple[int, ...]


@dataclass(frozen=True)
class HostSpec:
    """The node's CPUs and host memory (``node.host`` in the YAML; 0 = not given)."""

    cpu_cores: int = 0              # physical cores of all sockets together
    host_memory_bytes: int = 0      # installed system memory (DRAM) of the node
    source: str = ""                # where the figures come from

    @property
    def known(self) -> bool:
        """Whether the topology states the node's host memory."""
        return self.host_memory_bytes > 0


@dataclass(frozen=True)
class NodeSpec:
    """One server: GPUs, their NVLink plane (if any) and the PCIe tree to CPUs and NICs."""

    hardware: str
    gpus_per_node: int
    nvlink_bandwidth_GBps: float  # per GPU, per direction, into the NVSwitch plane; 0 = no NVLink
    nvswitches: int
    pcie_gpu_bandwidth_GBps: float
    pcie_nic_bandwidth_GBps: float
    pcie_uplink_bandwidth_GBps: float
    socket_bandwidth_GBps: float
    cpus: int
    switches: tuple[PcieSwitchSpec, ...]
    host: HostSpec = HostSpec()   # CPUs and host memory (all 0 when the file gives none)

    @property
    def has_nvlink(self) -> bool:
        """Whether the GPUs share an NVLink/NVSwitch plane."""
        return self.nvlink_bandwidth_GBps > 0


@dataclass(frozen=True)
class FabricSpec:
    """The InfiniBand fabric between nodes."""

    kind: str
    nics_per_node: int
    nic_bandwidth_Gbps: float
    levels: int
    switch_radix: int
    oversubscription: float
    placement: str

    @property
    def nic_bandwidth_GBps(self) -> float:
        """NIC line rate in GB/s (1e9 bytes) per direction."""
        return self.nic_bandwidth_Gbps / 8.0

    @property
    def leaf_down_ports(self) -> int:
        """Ports of a leaf (and, at 3 levels, of a spine) that face down: radix·o/(1+o)."""
        o = self.oversubscription
        return max(1, int(math.floor(self.switch_radix * o / (1.0 + o) + 1e-9)))

    @property
    def leaf_up_ports(self) -> int:
        """Ports of a leaf that face up (the rest of the radix)."""
        return max(1, self.switch_radix - self.leaf_down_ports)

    @property
    def nodes_per_leaf(self) -> int:
        """Nodes under one leaf: per rail for rail-optimized, whole nodes for a fat-tree."""
        ports = self.switch_radix if self.levels == 1 else self.leaf_down_ports
        return ports if self.kind == "rail_optimized" else max(1, ports // self.nics_per_node)

    @property
    def max_nodes(self) -> int:
        """Largest node count the fabric can connect.

        Leaves in all: 1 per rail (rail-optimized) or 1 (fat-tree) at one level; ``radix``
        (one per spine port) at two; ``down_ports * radix`` (pods of spines) at three. Rails
        share the spines, so a rail gets ``leaves / nics_per_node`` of them.
        """
        if self.levels == 1:
            return self.nodes_per_leaf
        leaves = self.switch_radix * (self.leaf_down_ports if self.levels == 3 else 1)
        if self.kind == "rail_optimized":
            return self.nodes_per_leaf * max(1, leaves // self.nics_per_node)
        return self.nodes_per_leaf * leaves


@dataclass(frozen=True)
class TopologySpec:
    """A parsed topology file."""

    name: str
    description: str
    source: str
    path: str
    node: NodeSpec
    fabric: FabricSpec | None


def _where(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _check_keys(data: Mapping[str, Any], allowed: set[str], where: str, file: str) -> None:
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise ZsimInputError(
            f"{file}: unknown key {unknown[0]!r} in {where or 'top level'} "
            f"(allowed: {', '.join(sorted(allowed))})")


def _mapping(data: Any, key: str, where: str, file: str, required: bool = True) -> Mapping | None:
    value = data.get(key) if isinstance(data, Mapping) else None
    if value is None and not required:
        return None
    if not isinstance(value, Mapping):
        raise ZsimInputError(f"{file}: missing or malformed section {_where(where, key)!r}")
    return value


def _number(data: Mapping, key: str, where: str, file: str, *, default: float | None = None,
            allow_zero: bool = False) -> float:
    if key not in data:
        if default is not None:
            return default
        raise ZsimInputError(f"{file}: missing key {_where(where, key)!r}")
    value = data[key]
    ok = not isinstance(value, bool) and isinstance(value, (int, float, str))
    try:
        number = float(value) if ok else math.nan
    except (ValueError, OverflowError):  # "abc", or an integer beyond float range
        number = math.nan
    if not math.isfinite(number):
        raise ZsimInputError(f"{file}: {_where(where, key)} must be a finite number, got {value!r}")
    if number < 0 or (number == 0 and not allow_zero):
        what = "non-negative" if allow_zero else "positive"
        raise ZsimInputError(f"{file}: {_where(where, key)} must be {what}, got {value!r}")
    bound = _COUNT_MAX.get(key, MAX_OVERSUBSCRIPTION if key == "oversubscription" else max_for_key(key))
    if number > bound:
        raise ZsimInputError(f"{file}: {_where(where, key)} must be at most {bound:g} (see zsim.limits), "
                             f"got {show_number(value)}")
    return number


#: Largest count each topology field may hold: far above real hardware, low enough that
#: building a node's graph stays cheap (bounds in zsim.limits).
_COUNT_MAX = {"gpus_per_node": MAX_GPUS_PER_NODE, "nics_per_node": MAX_NODE_PARTS,
              "nvswitches": MAX_NODE_PARTS, "cpus": MAX_NODE_PARTS, "cpu": MAX_NODE_PARTS,
              "switch_radix": MAX_SWITCH_RADIX}
#: Largest count of any other integer field.
MAX_COUNT = MAX_SWITCH_RADIX


def _integer(data: Mapping, key: str, where: str, file: str, *, default: int | None = None,
             allow_zero: bool = False) -> int:
    number = _number(data, key, where, file, default=None if default is None else float(default),
                     allow_zero=allow_zero)
    if number != int(number):
        raise ZsimInputError(f"{file}: {_where(where, key)} must be an integer, got {data[key]!r}")
    if number > MAX_COUNT:
        raise ZsimInputError(f"{file}: {_where(where, key)} must be at most {MAX_COUNT}, "
                             f"got {show_number(data[key])}")
    return int(number)


def _index_list(data: Mapping, key: str, where: str, file: str) -> tuple[int, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) or v < 0
                                          for v in value):
        raise ZsimInputError(f"{file}: {_where(where, key)} must be a list of indices, got {value!r}")
    return tuple(value)


def _parse_switches(pcie: Mapping, cpus: int, file: str) -> tuple[PcieSwitchSpec, ...]:
    raw = pcie.get("switches")
    if not isinstance(raw, list) or not raw:
        raise ZsimInputError(f"{file}: node.pcie.switches must be a non-empty list of PCIe switches")
    if len(raw) > MAX_NODE_PARTS:
        raise ZsimInputError(f"{file}: node.pcie.switches lists {len(raw)} switches, "
                             f"at most {MAX_NODE_PARTS} allowed")
    switches = []
    for i, sw in enumerate(raw):
        where = f"node.pcie.switches[{i}]"
        if not isinstance(sw, Mapping):
            raise ZsimInputError(f"{file}: {where} must be a mapping with cpu, gpus, nics")
        _check_keys(sw, _SWITCH_KEYS, where, file)
        cpu = _integer(sw, "cpu", where, file, allow_zero=True) if sw.get("cpu") is not None else None
        if cpu is not None and cpu >= cpus:
            raise ZsimInputError(f"{file}: {where}.cpu = {cpu} but node.pcie.cpus = {cpus}")
        switches.append(PcieSwitchSpec(cpu, _index_list(sw, "gpus", where, file),
                                       _index_list(sw, "nics", where, file)))
    return tuple(switches)


def _check_placement(switches: tuple[PcieSwitchSpec, ...], count: int, what: str, file: str,
                     hint: str) -> None:
    """Every index 0..count-1 sits on exactly one PCIe switch, and nothing else does."""
    placed = [i for sw in switches for i in (sw.gpus if what == "GPU" else sw.nics)]
    for i in placed:
        if i >= count:
            raise ZsimInputError(f"{file}: node.pcie.switches places {what} {i} but {hint} = {count}")
    counts = Counter(placed)
    dup = sorted(i for i, n in counts.items() if n > 1)
    if dup:
        raise ZsimInputError(f"{file}: {what} {dup[0]} is placed on more than one PCIe switch")
    missing = sorted(set(range(count)) - set(placed))
    if missing:
        raise ZsimInputError(
            f"{file}: {what} {missing[0]} (of {hint} = {count}) is not placed on any PCIe switch "
            f"in node.pcie.switches")


def parse_node(data: Mapping, file: str, nics: int) -> NodeSpec:
    """Parse and check the ``node:`` section; ``nics`` is fabric.nics_per_node (0 if no fabric)."""
    _check_keys(data, _NODE_KEYS, "node", file)
    hw = data.get("hardware")
    if not isinstance(hw, str) or not hw:
        raise ZsimInputError(f"{file}: node.hardware must name a hardware profile (e.g. h100-sxm)")
    gpus = _integer(data, "gpus_per_node", "node", file)
    nvlink = _mapping(data, "nvlink", "node", file, required=False) or {}
    _check_keys(nvlink, _NVLINK_KEYS, "node.nvlink", file)
    nv_bw = _number(nvlink, "bandwidth_GBps", "node.nvlink", file) if nvlink else 0.0
    nvsw = _integer(nvlink, "nvswitches", "node.nvlink", file, default=1) if nvlink else 0
    pcie = _mapping(data, "pcie", "node", file)
    _check_keys(pcie, _PCIE_KEYS, "node.pcie", file)
    cpus = _integer(pcie, "cpus", "node.pcie", file, default=1)
    switches = _parse_switches(pcie, cpus, file)
    _check_placement(switches, gpus, "GPU", file, "node.gpus_per_node")
    _check_placement(switches, nics, "NIC", file, "fabric.nics_per_node")
    return NodeSpec(
        hardware=hw, gpus_per_node=gpus, nvlink_bandwidth_GBps=nv_bw, nvswitches=nvsw,
        pcie_gpu_bandwidth_GBps=_number(pcie, "gpu_bandwidth_GBps", "node.pcie", file),
        # NIC and socket links are only required where they exist (0 = not present).
        pcie_nic_bandwidth_GBps=_number(pcie, "nic_bandwidth_GBps", "node.pcie", file,
                                        default=None if nics else 0.0),
        pcie_uplink_bandwidth_GBps=_number(pcie, "uplink_bandwidth_GBps", "node.pcie", file),
        socket_bandwidth_GBps=_number(pcie, "socket_bandwidth_GBps", "node.pcie", file,
                                      default=None if cpus > 1 else 0.0),
        cpus=cpus, switches=switches, host=parse_host(data.get("host"), file))


def parse_host(data: Any, file: str) -> HostSpec:
    """Parse and check the optional ``node.host:`` section (CPU cores, host memory, source).

    Both figures are optional (0: unknown, then no host-memory check is made); when given
    they must be positive integers."""
    if data is None:
        return HostSpec()
    if not isinstance(data, Mapping):
        raise ZsimInputError(f"{file}: node.host must be a mapping with cpu_cores, host_memory_bytes, source")
    _check_keys(data, _HOST_KEYS, "node.host", file)
    cores = _integer(data, "cpu_cores", "node.host", file, default=0, allow_zero=True) \
        if "cpu_cores" in data else 0
    mem = _number(data, "host_memory_bytes", "node.host", file) if "host_memory_bytes" in data else 0.0
    if mem != int(mem):
        raise ZsimInputError(f"{file}: node.host.host_memory_bytes must be an integer, "
                             f"got {data['host_memory_bytes']!r}")
    if "cpu_cores" in data and cores == 0:
        raise ZsimInputError(f"{file}: node.host.cpu_cores must be positive, got {data['cpu_cores']!r}")
    source = data.get("source", "")
    if not isinstance(source, str):
        raise ZsimInputError(f"{file}: node.host.source must be text, got {source!r}")
    return HostSpec(cpu_cores=cores, host_memory_bytes=int(mem), source=source)


def parse_fabric(data: Mapping, file: str) -> FabricSpec:
    """Parse and check the ``fabric:`` section."""
    _check_keys(data, _FABRIC_KEYS, "fabric", file)
    kind = data.get("kind", "rail_optimized")
    if kind not in FABRIC_KINDS:
        raise ZsimInputError(f"{file}: fabric.kind must be one of {', '.join(FABRIC_KINDS)}, got {kind!r}")
    placement = data.get("placement", "packed")
    if placement not in PLACEMENTS:
        raise ZsimInputError(
            f"{file}: fabric.placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
    nics = _integer(data, "nics_per_node", "fabric", file, allow_zero=True)
    if nics == 0:
        raise ZsimInputError(f"{file}: fabric.nics_per_node is 0: a multi-node fabric needs NICs")
    levels = _integer(data, "levels", "fabric", file, default=2)
    if levels not in (1, 2, 3):
        raise ZsimInputError(f"{file}: fabric.levels must be 1, 2 or 3, got {levels}")
    radix = _integer(data, "switch_radix", "fabric", file, default=64)
    if radix < 2:
        raise ZsimInputError(f"{file}: fabric.switch_radix must be at least 2, got {radix}")
    fabric = FabricSpec(
        kind=kind, nics_per_node=nics,
        nic_bandwidth_Gbps=_number(data, "nic_bandwidth_Gbps", "fabric", file),
        levels=levels, switch_radix=radix,
        oversubscription=_number(data, "oversubscription", "fabric", file, default=1.0),
        placement=placement)
    if kind == "fat_tree" and levels > 1 and fabric.leaf_down_ports < nics:
        raise ZsimInputError(
            f"{file}: a leaf has {fabric.leaf_down_ports} down ports, fewer than "
            f"fabric.nics_per_node = {nics}")
    return fabric


def parse_topology(data: Any, file: str, path: str) -> TopologySpec:
    """Parse a whole topology document (already loaded from YAML)."""
    if not isinstance(data, Mapping):
        raise ZsimInputError(f"{file}: expected a mapping at the top level")
    _check_keys(data, _TOP_KEYS, "", file)
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ZsimInputError(f"{file}: missing key 'name'")
    fabric_raw = _mapping(data, "fabric", "", file, required=False)
    fabric = parse_fabric(fabric_raw, file) if fabric_raw is not None else None
    node = parse_node(_mapping(data, "node", "", file), file, fabric.nics_per_node if fabric else 0)
    return TopologySpec(name=name, description=str(data.get("description", "")),
                        source=str(data.get("source", "")), path=path, node=node, fabric=fabric)
