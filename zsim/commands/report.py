"""`zsim report`: an HTML page and a Markdown twin to decide a ZeRO configuration."""

from __future__ import annotations

import argparse
import sys

from .. import limits
from ..io import dumps_json
from ..report.build import DEFAULT_REPORT_DIR, write_report
from ..parallel.cli import add_parallel_args, refuse_model_parallel
from .common import MODEL_HELP, add_cluster_args, add_quiet_arg, add_seq_arg, int_up_to, progress_for, settings_from_args

HELP = "write an HTML + Markdown report: memory/time per stage, timeline, scaling, recommendation"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `zsim report`."""
    p.add_argument("--model", default=None, help=MODEL_HELP)
    add_cluster_args(p)
    add_seq_arg(p)
    p.add_argument("--global-batch", type=int_up_to(limits.MAX_TRAIN_BATCH), help="global batch in sequences")
    p.add_argument("-o", "--output", default=DEFAULT_REPORT_DIR, help="output folder (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print the written files and the winner as one JSON object")
    add_quiet_arg(p)
    add_parallel_args(p, " (above 1: refused, not modelled yet)")


def run(args: argparse.Namespace) -> int:
    """Build the report and say where it is."""
    refuse_model_parallel(args)
    bar = progress_for(args, "zsim report")
    try:
        files = write_report(settings_from_args(args), args.output, global_batch=args.global_batch, progress=bar)
    finally:
        bar.close()
    best = files.data.plan.best
    if args.json:
        sys.stdout.write(dumps_json({
            "recommended": best.candidate.label(), "tokens_per_s": best.prediction.tokens_per_s,
            "step_time_s": best.prediction.step_time_s, "peak_memory_bytes": best.prediction.peak_memory_bytes,
            "files": {"html": str(files.html), "markdown": str(files.markdown), "ds_config": str(files.ds_config),
                      "figures": [str(f) for f in files.figures]}}))
        return 0
    print(f"recommended: {best.candidate.label()} ({best.prediction.tokens_per_s:,.0f} tokens/s)")
    print(f"wrote {files.html}, {files.markdown}, {len(files.figures)} figures, {files.ds_config}")
    return 0
