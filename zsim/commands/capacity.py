"""`zsim capacity`: the largest Llama-shaped model that fits per ZeRO stage and offload choice."""

from __future__ import annotations

import argparse

from .. import limits
from ..decide.capacity import ROWS, capacity_settings
from ..decide.sweep import parse_list
from ..decide.text import format_capacity
from ..defaults import CAPACITY_MICRO_BATCH, DEFAULT_SEQ_LEN
from ..errors import ZsimInputError
from ..io import dumps_json
from ..limits import check_finite_tree
from .common import (add_cluster_args, add_quiet_arg, add_result_output_arg, emit, int_up_to, progress_for,
                     settings_from_args)

HELP = "largest Llama-family model that fits per ZeRO stage and offload choice, beside the rule of thumb"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `zsim capacity`."""
    add_cluster_args(p)
    p.add_argument("--seq", type=int_up_to(limits.MAX_SEQ_LEN), default=DEFAULT_SEQ_LEN, help="sequence length (default %(default)s)")
    p.add_argument("--micro-batch", type=int_up_to(limits.MAX_MICRO_BATCH), default=CAPACITY_MICRO_BATCH, help="micro-batch per GPU (default %(default)s)")
    p.add_argument("--stage", help="only these stages, comma-separated (default: 0,1,2,3)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_result_output_arg(p)
    add_quiet_arg(p)


def run(args: argparse.Namespace) -> int:
    """Compute and print the table."""
    rows = ROWS
    if args.stage:
        stages = parse_list("stage", args.stage)
        if any(s > 3 for s in stages):
            raise ZsimInputError(f"--stage must list stages 0-3, got {args.stage!r}")
        rows = tuple(r for r in ROWS if r[0] in stages)
    # --stage lists the rows' stages here, not one run setting.
    bar = progress_for(args, "zsim capacity")
    try:
        res = capacity_settings(settings_from_args(args, stage=None), rows=rows, progress=bar)
    finally:
        bar.close()
    check_finite_tree(res.to_dict(), "capacity")
    emit(args, dumps_json(res.to_dict()) if args.json else format_capacity(res))
    return 0
