"""`zsim topo {list,show,draw}`: list, describe and draw topologies."""

from __future__ import annotations

import argparse
import textwrap
import json

from .. import limits
from ..network import list_topologies, load_topology
from ..parallel.cli import add_parallel_args, asked_placement, placement_dict, placement_lines

HELP = "list, describe (show) and draw topologies"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `zsim topo`."""
    sub = parser.add_subparsers(dest="topo_command", metavar="{list,show,draw}",
                                parser_class=type(parser))
    sub.required = True
    p = sub.add_parser("list", help="names of the shipped topologies")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("show", help="describe a topology")
    p.add_argument("name", help="topology name or YAML path")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--json", action="store_true")
    add_parallel_args(p, "; with any of these, print the rank mapping")
    p = sub.add_parser("draw", help="draw a topology graph to an image (matplotlib)")
    p.add_argument("name", help="topology name or YAML path")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("-o", "--output", required=True, help="image file (.png, .svg, .pdf)")


def _list(args: argparse.Namespace) -> int:
    rows = [load_topology(n) for n in list_topologies()]
    if args.json:
        print(json.dumps([{"name": t.name, "hardware": t.hardware, "gpus_per_node": t.gpus_per_node,
                           "max_nodes": t.max_nodes, "description": t.spec.description}
                          for t in rows], indent=2))
        return 0
    for t in rows:
        fab = t.fabric
        net = f"{fab.nics_per_node}x{fab.nic_bandwidth_Gbps:g}Gb/s {fab.kind}" if fab else "single node"
        print(f"{t.name:<16} {t.gpus_per_node} x {t.hardware:<14} {net:<32} up to {t.max_nodes} nodes")
    return 0


def _show(args: argparse.Namespace) -> int:
    topo = load_topology(args.name)
    info = topo.describe(nodes=args.nodes)
    limits.check_finite_tree(info, "topology")
    placed = asked_placement(args, info["cluster"]["gpus_per_node"], info["cluster"]["num_nodes"])
    if placed is not None:
        info["parallel"] = placement_dict(placed)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    node = topo.node
    print("\n".join(textwrap.wrap(f"{topo.name}: {topo.spec.description}", 100, subsequent_indent="    ")))
    print(f"  file        {topo.spec.path}")
    print(f"  hardware    {node.hardware}, {node.gpus_per_node} GPUs per node")
    if node.has_nvlink:
        print(f"  nvlink      {node.nvlink_bandwidth_GBps:g} GB/s per GPU per direction, "
              f"{node.nvswitches} NVSwitches")
    else:
        print("  nvlink      none (GPUs talk over PCIe)")
    print(f"  pcie        {len(node.switches)} switches, GPU link {node.pcie_gpu_bandwidth_GBps:g} GB/s, "
          f"{node.cpus} CPU socket(s)")
    for i, sw in enumerate(node.switches):
        print(f"    switch {i}: cpu {sw.cpu}, GPUs {list(sw.gpus)}, NICs {list(sw.nics)}")
    print(f"  host        {_host_line(node.host)}")
    fab = topo.fabric
    if fab:
        print(f"  fabric      {fab.kind}, {fab.levels} level(s), radix {fab.switch_radix}, "
              f"oversubscription {fab.oversubscription:g}:1, placement {fab.placement}")
        print(f"              {fab.nics_per_node} NICs x {fab.nic_bandwidth_Gbps:g} Gb/s per node, "
              f"{fab.nodes_per_leaf} nodes per leaf, up to {fab.max_nodes} nodes")
    c = info["cluster"]
    print(f"  cluster     {c['num_nodes']} node(s), world size {c['world_size']}")
    for k, v in c["bandwidth_GBps"].items():
        print(f"    {k:<16} {v:g}")
    print(f"    fabric_share     {c['fabric_share']:g}")
    for line in placement_lines(placed) if placed is not None else ():
        print(line)
    return 0


def _host_line(host) -> str:
    """CPU cores and host memory of a node, e.g. ``128 CPU cores, 2.00 TiB host memory``."""
    if not host.cpu_cores and not host.host_memory_bytes:
        return "not given (node.host): no host-memory check"
    cores = f"{host.cpu_cores} CPU cores" if host.cpu_cores else "CPU cores not given"
    mem = (f"{host.host_memory_bytes / 2**40:.2f} TiB host memory" if host.host_memory_bytes
           else "host memory not given")
    source = textwrap.wrap(f"source: {host.source}", 100 - 14, break_on_hyphens=False) if host.source else []
    return "\n".join([f"{cores}, {mem}"] + [" " * 14 + line for line in source])


def _draw(args: argparse.Namespace) -> int:
    # Not a cycle: zsim.network.draw imports matplotlib, which only `zsim topo draw` needs
    # (every other command starts without it).
    from ..network.draw import draw_topology
    topo = load_topology(args.name)
    path = draw_topology(topo, args.output, nodes=args.nodes)
    print(f"wrote {path}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run `zsim topo ...`."""
    return {"list": _list, "show": _show, "draw": _draw}[args.topo_command](args)
