"""`zsim diagnose`: a measured run beside zsim's prediction of it, per phase and stream."""

from __future__ import annotations

import argparse

from ..defaults import DEFAULT_PROFILE, DEFAULT_RUN_TOPO
from ..io import dumps_json
from .common import add_result_output_arg, emit

HELP = "compare one measured run folder with zsim's prediction, per phase and stream (largest gaps first)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `zsim diagnose`."""
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by validation/train.py")
    p.add_argument("--trace", metavar="FILE",
                   help="write a Perfetto/Chrome trace with the measured and the simulated step side by side")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    add_result_output_arg(p)
    p.add_argument("--hardware", default=DEFAULT_PROFILE, help="hardware profile (name or YAML path)")
    p.add_argument("--topo", default=DEFAULT_RUN_TOPO, help="topology the run ran on")


def run(args: argparse.Namespace) -> int:
    """Diagnose, print, and write the combined trace when asked."""
    # Not at the top: zsim.diagnose (through zsim.calibrate) imports numpy, which every other command's start would pay for
    # (cli.build_parser imports every command module).
    from ..diagnose import diagnose
    from ..diagnose.perfetto import write_combined_trace
    from ..diagnose.text import format_diagnosis

    d = diagnose(args.run_dir, hardware=args.hardware, topo=args.topo)
    if args.trace:
        write_combined_trace(args.trace, d)
    emit(args, dumps_json(d.to_dict()) if args.json else format_diagnosis(d))
    return 0
