"""`zsim plan`: search DeepSpeed configs, rank them, write the winner's deepspeed_config_auto.json."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import limits
from ..decide.api import plan_settings
from ..decide.text import format_plan
from ..errors import ZsimInputError
from ..io import atomic_write_set, dumps_json
from ..limits import check_finite_tree
from ..output import DEFAULT_OUTPUT_DIR
from ..parallel.cli import add_expert_args, add_parallel_args, refuse_expert_with_3d
from ..parallel.plan3d import Pins, plan_lines, plan_parallel
from .common import (add_cluster_args, add_fanout_args, add_quiet_arg, add_run_args, backend_from_args, int_up_to,
                     percent, progress_for, settings_from_args)

HELP = "search ZeRO stage/offload/batch/checkpointing/buckets, rank by tokens/s (or --metric), write the best config"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `zsim plan`; --stage, --micro-batch, ... pin one axis of the search."""
    add_run_args(p)
    p.add_argument("--no-activation-checkpointing", dest="activation_checkpointing", action="store_false",
                   help="pin activation checkpointing off (default: searched)")
    add_cluster_args(p)
    p.add_argument("--global-batch", type=int_up_to(limits.MAX_TRAIN_BATCH),
                   help="global batch in sequences (= micro x grad-accum x data-parallel)")
    p.add_argument("--for", dest="target", choices=["deepspeed", "hf-trainer"], default=None,
                   help="who launches the written config: hf-trainer keeps every \"auto\" the search does "
                        "not decide (optimizer, scheduler, ...) for the Trainer to fill in; deepspeed "
                        "resolves them where zsim can (default: hf-trainer when the config holds \"auto\")")
    p.add_argument("--metric", choices=["tokens-per-s", "memory", "cost-per-token"], default="tokens-per-s",
                   help="rank by highest tokens/s, lowest peak memory per GPU, or fewest GPU-seconds "
                        "per token (default %(default)s)")
    p.add_argument("--memory-headroom", type=percent, default=None, metavar="PCT",
                   help="share of GPU memory a winner must leave free for the memory model's error "
                        "(default: the hardware profile's measured peak-memory error, 5 %% if not measured)")
    p.add_argument("--top", type=int_up_to(limits.MAX_TOP), default=5, help="configurations shown (default %(default)s)")
    p.add_argument("-o", "--output", default=None,
                   help="folder for deepspeed_config_auto.json and plan.json (default: output/deepspeed_metrics)")
    p.add_argument("--no-output", action="store_true", help="write no files")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_quiet_arg(p)
    p.add_argument("--timing", action="store_true",
                   help="print the search's wall time on stderr (never in the output or the files)")
    add_fanout_args(p)   # the candidates' simulations run there; the plan is the same
    add_parallel_args(p, " (pins it in the joint search; any of them implies --search-3d)")
    p.add_argument("--search-3d", action="store_true",
                   help="search tensor x pipeline (x Ulysses sequence) parallel degrees jointly with ZeRO stage, "
                        "offload, micro-batch and checkpointing at a fixed global batch (docs/parallelism.md)")
    add_expert_args(p)


def _run_3d(args: argparse.Namespace) -> int:
    """The joint tensor/pipeline/sequence search: print, write plan.json."""
    if args.grad_accum is not None:
        raise ZsimInputError("--grad-accum with --search-3d: the global batch and each layout's data-parallel "
                             "size fix it (give --global-batch)")
    settings = settings_from_args(args)
    pins = Pins(tp=args.tp, pp=args.pp, sp=args.sp, stage=args.stage, micro_batch=args.micro_batch,
                checkpointing=args.activation_checkpointing, offload_optimizer=args.offload_optimizer)
    result = plan_parallel(settings, pins, global_batch=args.global_batch, top_n=args.top,
                           memory_headroom_pct=args.memory_headroom)
    check_finite_tree(result.to_dict(), "plan")
    out = Path(args.output or DEFAULT_OUTPUT_DIR)
    if result.ranked and not args.no_output:
        atomic_write_set(out, {"plan.json": dumps_json(result.to_dict())})
    if args.json:
        sys.stdout.write(dumps_json(result.to_dict()))
    else:
        print("\n".join(plan_lines(result)))
        if result.ranked and not args.no_output:
            print(f"\nwrote {out / 'plan.json'}")
    if args.timing:
        sys.stderr.write(f"zsim plan: searched in {result.elapsed_s:.1f} s\n")
    if not result.ranked:
        raise ZsimInputError("no configuration of the joint space fits in GPU memory")
    return 0


def run(args: argparse.Namespace) -> int:
    """Search, print, write."""
    backend = backend_from_args(args)   # before any work: a bad --jobs/--dask is one line, exit 2
    if args.search_3d or any((getattr(args, k) or 1) > 1 for k in ("tp", "pp", "sp")):
        refuse_expert_with_3d(args, search_3d=True)
        if args.jobs not in (None, 1) or args.dask is not None:
            # Refused rather than ignored: the joint search (zsim/parallel/plan3d.py) runs in
            # one process, and a flag that silently does nothing would mislead.
            raise ZsimInputError("--jobs/--dask with --search-3d (or --tp/--pp/--sp): the joint search "
                                 "runs in one process")
        return _run_3d(args)
    bar = progress_for(args, "zsim plan")
    try:
        # The run flags (--stage, --micro-batch, ...) pin their axes of the search.
        result = plan_settings(settings_from_args(args), global_batch=args.global_batch, top_n=args.top,
                               progress=bar, target=args.target, metric=args.metric,
                               memory_headroom_pct=args.memory_headroom, backend=backend)
    finally:
        bar.close()
    check_finite_tree(result.to_dict(), "plan")
    out = Path(args.output or DEFAULT_OUTPUT_DIR)
    if result.best and not args.no_output:
        atomic_write_set(out, {"deepspeed_config_auto.json": dumps_json(result.ds_config_auto),
                               "plan.json": dumps_json(result.to_dict())})
    if args.json:
        sys.stdout.write(dumps_json(result.to_dict()))
    else:
        print(format_plan(result))
        if result.best and not args.no_output:
            print(f"\nwrote {out / 'deepspeed_config_auto.json'} (winner #1) and {out / 'plan.json'}")
    if args.timing:
        sys.stderr.write(f"zsim plan: searched in {result.elapsed_s:.1f} s\n")
    if not result.best:
        closest = min(result.rejected, key=lambda r: r.memory.overflow_bytes)
        raise ZsimInputError(f"no configuration fits; closest {closest.candidate.label()}: {closest.reason()}")
    return 0
