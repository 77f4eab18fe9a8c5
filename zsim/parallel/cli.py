"""The command line of the 3D layout: ``--tp/--pp/--sp`` flags, predict's refusal of what is
not modelled yet, and the rank mapping ``zsim topo show`` prints."""

from __future__ import annotations

import argparse
from typing import Any

from .. import limits
from ..errors import ZsimInputError
from .layout import LABELS, RANK_ORDER, LayoutPlacement, derive_layout, place_layout
from .predict3d import ParallelAsk, ParallelPrediction

#: Rank rows `zsim topo show` prints before it says how many more there are (--json has all).
MAX_RANK_ROWS = 64

_FLAGS = (("tp", "tensor-parallel degree (Megatron-style)"),
          ("pp", "pipeline-parallel stages (DeepSpeed's pipeline engine)"),
          ("sp", "DeepSpeed-Ulysses sequence-parallel degree"))


def _degree(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if not 1 <= value <= limits.MAX_WORLD_SIZE:
        raise argparse.ArgumentTypeError(f"must be in 1..{limits.MAX_WORLD_SIZE}, got {value}")
    return value


def add_parallel_args(p: argparse.ArgumentParser, what: str = "", megatron_sp: bool = False) -> None:
    """``--tp``, ``--pp``, ``--sp`` (absent: None, i.e. 1) and, where the command models it,
    ``--sequence-parallel`` (Megatron's, inside the TP group)."""
    for name, text in _FLAGS:
        p.add_argument(f"--{name}", type=_degree, default=None, help=text + what)
    if megatron_sp:
        p.add_argument("--sequence-parallel", action="store_true",
                       help="Megatron sequence parallelism inside the tensor-parallel group (needs --tp > 1): "
                            "reduce-scatter/all-gather instead of all-reduce, norms and dropouts on 1/tp "
                            "of the tokens")


def parallel_ask(args: argparse.Namespace):
    """The :class:`zsim.parallel.predict3d.ParallelAsk` of the flags."""
    return ParallelAsk(tp=getattr(args, "tp", None) or 1, pp=getattr(args, "pp", None) or 1,
                       sp=getattr(args, "sp", None) or 1,
                       sequence_parallel=bool(getattr(args, "sequence_parallel", False)))


def add_expert_args(p: argparse.ArgumentParser) -> None:
    """``--ep`` and ``--moe-config``: DeepSpeed-MoE expert parallelism (zsim.parallel.expert)."""
    p.add_argument("--ep", type=_degree, default=None,
                   help="expert-parallel degree: the model's MoE blocks are DeepSpeed-MoE layers "
                        "(deepspeed.moe.layer.MoE) with this ep_size (docs/moe.md)")
    p.add_argument("--moe-config", default=None,
                   help="JSON object of deepspeed.moe.layer.MoE arguments (ep_size, k, capacity_factor, "
                        "min_capacity, drop_tokens, use_residual, ...); implies DeepSpeed-MoE layers")


def refuse_expert_with_3d(args: argparse.Namespace, search_3d: bool = False) -> None:
    """Raise one line when expert parallelism is asked together with tensor, pipeline or
    sequence parallelism (or the joint 3D search): the two models are not combined."""
    if getattr(args, "ep", None) is None and getattr(args, "moe_config", None) is None:
        return
    asked = [f"--{name} {getattr(args, name)}" for name, _ in _FLAGS if (getattr(args, name, None) or 1) > 1]
    if search_3d:
        asked.append("--search-3d")
    if asked:
        raise ZsimInputError(f"--ep/--moe-config with {' '.join(asked)}: expert parallelism combined with "
                             "tensor/pipeline/sequence parallelism is not modelled")


def asked_placement(args: argparse.Namespace, gpus_per_node: int, num_nodes: int) -> LayoutPlacement | None:
    """The layout the flags ask for on that cluster, or None when no flag was given."""
    if all(getattr(args, name, None) is None for name, _ in _FLAGS):
        return None
    layout = derive_layout(gpus_per_node * num_nodes, tp=args.tp or 1, pp=args.pp or 1, sp=args.sp or 1)
    return place_layout(layout, gpus_per_node, num_nodes)


def parallel_lines(result: ParallelPrediction) -> list[str]:
    """What `zsim predict --tp/--pp/--sp` prints after the prediction: layout, ZeRO group,
    the split's communication, and one row per pipeline stage."""
    lay, gib = result.layout, 2 ** 30
    megatron = " + Megatron sequence parallelism" if result.sequence_parallel else ""
    out = ["", f"parallel     tp {lay.tp}{megatron} x sp {lay.sp} x dp {lay.dp} x pp {lay.pp} = "
               f"{lay.world_size} ranks; ZeRO partitions over {result.zero_group_size} rank(s) "
               f"({'sequence x data' if lay.sp > 1 else 'data'}-parallel group); "
               f"global batch = micro-batch x grad-accum x dp {lay.dp}"]
    if lay.tp > 1 or lay.sp > 1:
        out.append(f"  TP/Ulysses collectives on the compute stream, worst stage, per step: "
                   f"{result.tp_comm_s * 1e3:,.1f} ms")
    if lay.pp > 1:
        out.append(f"  pipeline: DeepSpeed TrainSchedule, bubble {result.bubble_fraction * 100:.1f}% of the "
                   f"forward/backward span, send/recv of one micro-batch {result.p2p_s * 1e3:,.2f} ms")
        out.append("  stage  layers   params/GPU  in-flight  fwd/mb ms  bwd/mb ms  reduce+step ms  peak GiB  fits")
        for st in result.stages:
            mark = "  <- worst" if st.stage == result.worst_stage else ""
            out.append(f"  {st.stage:>5}  {st.first_layer:>3}+{st.layers:<3} {st.parameters / 1e9:>9.2f}B "
                       f"{st.in_flight:>10} {st.forward_s * 1e3:>10.1f} {st.backward_s * 1e3:>10.1f} "
                       f"{st.reduce_and_step_s * 1e3:>15.1f} {st.peak_memory_bytes / gib:>9.1f}  "
                       f"{'yes' if st.fits else 'no'}{mark}")
    return out


def placement_dict(placed: LayoutPlacement) -> dict[str, Any]:
    """Plain data of a placement: degrees, each group's shape, every rank's coordinates."""
    lay = placed.layout
    return {
        "degrees": {"tp": lay.tp, "sp": lay.sp, "dp": lay.dp, "pp": lay.pp},
        "rank_order": [LABELS[d] for d in RANK_ORDER],
        "groups": [{"label": g.label, "ranks_per_node": g.ranks_per_node, "nodes": g.nodes,
                    "copies": lay.world_size // lay.degree(g.dim),
                    "first": list(lay.group_ranks(g.dim)[0])} for g in placed.groups],
        "ranks": [{"rank": r, "node": placed.node_of(r), "local_rank": r % placed.gpus_per_node,
                   **vars(lay.coords(r))} for r in range(lay.world_size)],
    }


def group_lines(placed: LayoutPlacement) -> list[str]:
    """One line per group of the placement: its size, its ranks per node and nodes, the first
    group's ranks (`zsim topo show` and `zsim report` print them)."""
    lay, out = placed.layout, []
    for g in placed.groups:
        first = lay.group_ranks(g.dim)[0]
        shown = ", ".join(map(str, first[:8])) + (", ..." if len(first) > 8 else "")
        out.append(f"{g.label:<10} {lay.degree(g.dim)} ranks, {g.ranks_per_node} per node on "
                   f"{g.nodes} node(s); {lay.world_size // lay.degree(g.dim)} groups, the first [{shown}]")
    return out


def placement_lines(placed: LayoutPlacement) -> list[str]:
    """What `zsim topo show --tp/--pp/--sp` prints under the cluster."""
    lay = placed.layout
    out = [f"  parallel    tp {lay.tp} x sp {lay.sp} x dp {lay.dp} x pp {lay.pp} = {lay.world_size} ranks; "
           "rank order tensor fastest, then sequence, data, pipeline (Megatron's)"]
    out += ["    " + line for line in group_lines(placed)]
    out.append("    rank  node  gpu    tp  sp  dp  pp")
    for r in range(min(lay.world_size, MAX_RANK_ROWS)):
        c = lay.coords(r)
        out.append(f"    {r:>4}  {placed.node_of(r):>4}  {r % placed.gpus_per_node:>3}  "
                   f"{c.tp:>4}{c.sp:>4}{c.dp:>4}{c.pp:>4}")
    if lay.world_size > MAX_RANK_ROWS:
        out.append(f"    ... {lay.world_size - MAX_RANK_ROWS} more ranks (--json lists all)")
    return out


__all__ = ["add_expert_args", "add_parallel_args", "parallel_ask", "parallel_lines",
           "refuse_expert_with_3d", "asked_placement", "placement_dict",
           "group_lines", "placement_lines", "MAX_RANK_ROWS"]
