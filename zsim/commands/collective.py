"""`zsim collective`: predict one collective's time and nccl-tests algbw/busbw."""

from __future__ import annotations

import argparse
import json

from ..collectives import ALGORITHMS, GROUPS, OPS, collective_cost
from ..groups import WORLD, as_group
from ..hardware import load_profile
from ..network import load_topology
from ..network.units import parse_bytes
from ..output import format_bytes, format_seconds
from ..limits import check_finite_tree
from .common import add_result_output_arg, emit

HELP = "predict one collective (time_s, algbw_GBps, busbw_GBps, as nccl-tests reports them)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `zsim collective`."""
    parser.add_argument("--op", required=True,
                        choices=list(OPS))
    parser.add_argument("--bytes", required=True, dest="nbytes",
                        help="full buffer as nccl-tests counts it (1e9, 4096, 256MiB, 1GiB)")
    parser.add_argument("--topo", required=True, help="topology name or YAML path")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--gpus", type=int, help="the first N GPUs of one node")
    size.add_argument("--nodes", type=int, help="M whole nodes")
    parser.add_argument("--algorithm", default="auto", choices=["auto", *ALGORITHMS])
    parser.add_argument("--group", default=WORLD.label, choices=list(GROUPS))
    parser.add_argument("--hardware", help="hardware profile name or YAML path (default: the topology's)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_result_output_arg(parser)


def run(args: argparse.Namespace) -> int:
    """Run `zsim collective`."""
    nbytes = parse_bytes(args.nbytes)
    cluster = load_topology(args.topo).cluster(gpus=args.gpus, nodes=args.nodes)
    hardware = load_profile(args.hardware or cluster.hardware)
    cost = collective_cost(cluster, hardware, args.op, nbytes, args.algorithm, as_group(args.group))
    out = {**cost.to_dict(), "topology": cluster.topology, "hardware": hardware.name,
           "world_size": cluster.world_size, "gpus_per_node": cluster.gpus_per_node,
           "num_nodes": cluster.num_nodes, "group": args.group}
    check_finite_tree(out, "collective")
    if args.json:
        emit(args, json.dumps(out, indent=2, sort_keys=True))
        return 0
    lines = [f"{args.op} of {format_bytes(nbytes)} ({nbytes:,} bytes) on {cluster.topology}: {cluster.num_nodes} "
             f"node(s) x {cluster.gpus_per_node} GPU(s), group {args.group} ({cost.group_size} ranks), "
             f"hardware {hardware.name}",
             f"  algorithm            {cost.algorithm}",
             f"  time                 {format_seconds(cost.time_s)}",
             f"  algbw_GBps           {cost.algbw_GBps:.2f} GB/s (buffer / time)",
             f"  busbw_GBps           {cost.busbw_GBps:.2f} GB/s (nccl-tests convention)",
             f"  on the wire per GPU  {format_bytes(sum(cost.link_bytes.values()))} "
             "(bytes one rank sends, summed over link types)"]
    for kind, busy in sorted(cost.link_busy_s.items()):
        util = cost.utilisation()[kind]
        lines.append(f"    {kind:<7} {format_bytes(cost.link_bytes[kind]):>12} per GPU, "
                     f"busy {format_seconds(busy)} ({util:.0%} of the collective)")
    emit(args, "\n".join(lines))
    return 0
