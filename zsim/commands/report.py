"""`zsim report`: an HTML page and a Markdown twin to decide a ZeRO configuration, for ZeRO data
parallelism or for one tensor/pipeline/sequence layout (``--tp/--pp/--sp``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .. import limits
from ..io import dumps_json
from ..parallel.cli import add_expert_args, add_parallel_args, parallel_ask, refuse_expert_with_3d
from ..report.build import DEFAULT_REPORT_DIR, ReportFiles, write_report
from ..report.layout import LayoutReportData
from .common import MODEL_HELP, add_cluster_args, add_quiet_arg, add_seq_arg, int_up_to, progress_for, settings_from_args

HELP = ("write an HTML + Markdown report: memory/time per stage, timeline, scaling, ZeRO against 3D layouts, "
        "recommendation")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `zsim report`."""
    p.add_argument("--model", default=None, help=MODEL_HELP)
    add_cluster_args(p)
    add_seq_arg(p)
    p.add_argument("--global-batch", type=int_up_to(limits.MAX_TRAIN_BATCH), help="global batch in sequences")
    p.add_argument("-o", "--output", default=DEFAULT_REPORT_DIR, help="output folder (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print the written files and the winner as one JSON object")
    add_quiet_arg(p)
    add_parallel_args(p, ": the report is built for that layout, every number as `zsim predict` with the "
                         "same flags (docs/parallelism.md)", megatron_sp=True)
    add_expert_args(p)


def _winner(files: ReportFiles) -> tuple[str, Any]:
    """(label, Prediction) of the report's recommended configuration."""
    if isinstance(files.data, LayoutReportData):
        return files.data.winner.candidate.label(), files.data.best.prediction
    best = files.data.plan.best
    return best.candidate.label(), best.prediction


def _summary(files: ReportFiles) -> dict[str, Any]:
    """What --json prints: the winner's headline figures, the layout, the files."""
    label, p = _winner(files)
    out: dict[str, Any] = {"recommended": label, "tokens_per_s": p.tokens_per_s, "step_time_s": p.step_time_s,
                           "peak_memory_bytes": p.peak_memory_bytes}
    if isinstance(files.data, LayoutReportData):
        lay = files.data.best.layout
        out["parallel"] = {"tp": lay.tp, "pp": lay.pp, "sp": lay.sp, "dp": lay.dp,
                           "sequence_parallel": files.data.ask.sequence_parallel}
    comparison = files.data.comparison
    if comparison is not None and comparison.rows:
        out["joint_search_recommended"] = comparison.rows[0].candidate.label()
    out["files"] = {"html": str(files.html), "markdown": str(files.markdown), "ds_config": str(files.ds_config),
                    "figures": [str(f) for f in files.figures]}
    return out


def run(args: argparse.Namespace) -> int:
    """Build the report and say where it is."""
    refuse_expert_with_3d(args)          # as `zsim predict` refuses it
    ask = parallel_ask(args)
    bar = progress_for(args, "zsim report")
    try:
        files = write_report(settings_from_args(args), args.output, global_batch=args.global_batch, progress=bar,
                             ask=ask)
    finally:
        bar.close()
    if args.json:
        sys.stdout.write(dumps_json(_summary(files)))
        return 0
    label, p = _winner(files)
    print(f"recommended: {label} ({p.tokens_per_s:,.0f} tokens/s)")
    print(f"wrote {files.html}, {files.markdown}, {len(files.figures)} figures, {files.ds_config}")
    return 0
