"""`zsim report`: an HTML page and a Markdown twin to decide a ZeRO configuration."""

from __future__ import annotations

import argparse

from .. import limits
from .common import add_cluster_args, int_up_to

HELP = "write an HTML + Markdown report: memory/time per stage, timeline, scaling, recommendation"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `zsim report`."""
    p.add_argument("--model", default=None, help="preset name or path to a HF config.json (default: llama-2-7b)")
    add_cluster_args(p)
    p.add_argument("--seq", type=int_up_to(limits.MAX_SEQ_LEN), help="sequence length (default 2048)")
    p.add_argument("--global-batch", type=int_up_to(limits.MAX_TRAIN_BATCH), help="global batch in sequences")
    p.add_argument("--output", default="reports/report", help="output folder (default %(default)s)")
    p.add_argument("--progress", action="store_true", help="show the search's progress bar")


def run(args: argparse.Namespace) -> int:
    """Build the report and say where it is."""
    from ..decide.progress import ProgressBar
    from ..report import build_report

    bar = ProgressBar(enabled=True if args.progress else None)
    try:
        files = build_report(args.model, args.topo, args.output, gpus=args.gpus, nodes=args.nodes, seq=args.seq,
                             global_batch=args.global_batch, hardware=args.hardware, progress=bar)
    finally:
        bar.close()
    best = files.data.plan.best
    print(f"recommended: {best.candidate.label()} ({best.prediction.tokens_per_s:,.0f} tokens/s)")
    print(f"wrote {files.html}, {files.markdown}, {len(files.figures)} figures, {files.ds_config}")
    return 0
