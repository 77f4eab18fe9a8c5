"""`zsim report`: an HTML page and a Markdown twin to decide a ZeRO configuration."""

from __future__ import annotations

import argparse

from .. import limits
from ..decide.progress import ProgressBar
from ..report.build import DEFAULT_REPORT_DIR, write_report
from .common import MODEL_HELP, add_cluster_args, add_seq_arg, int_up_to, settings_from_args

HELP = "write an HTML + Markdown report: memory/time per stage, timeline, scaling, recommendation"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `zsim report`."""
    p.add_argument("--model", default=None, help=MODEL_HELP)
    add_cluster_args(p)
    add_seq_arg(p)
    p.add_argument("--global-batch", type=int_up_to(limits.MAX_TRAIN_BATCH), help="global batch in sequences")
    p.add_argument("--output", default=DEFAULT_REPORT_DIR, help="output folder (default %(default)s)")
    p.add_argument("--progress", action="store_true", help="show the search's progress bar")


def run(args: argparse.Namespace) -> int:
    """Build the report and say where it is."""
    bar = ProgressBar(enabled=True if args.progress else None)
    try:
        files = write_report(settings_from_args(args), args.output, global_batch=args.global_batch, progress=bar)
    finally:
        bar.close()
    best = files.data.plan.best
    print(f"recommended: {best.candidate.label()} ({best.prediction.tokens_per_s:,.0f} tokens/s)")
    print(f"wrote {files.html}, {files.markdown}, {len(files.figures)} figures, {files.ds_config}")
    return 0
