"""`zsim validate`: measured vs predicted for validation runs; non-zero exit above a tolerance."""

from __future__ import annotations

import argparse
import sys

from ..defaults import DEFAULT_PROFILE, DEFAULT_RUN_TOPO
from ..errors import ZsimInputError
from ..io import dumps_json
from ..limits import MAX_TOLERANCE_PCT, check_finite_tree
from .common import add_result_output_arg, emit

HELP = "compare measured runs (validation/results) with predictions; exit 1 when MAPE > tolerance"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `zsim validate`."""
    p.add_argument("results", nargs="*", metavar="RESULTS", help="result folders (searched for summary.json)")
    p.add_argument("--published", nargs="?", const="", default=None, metavar="FILE",
                   help="score the published DeepSpeed ZeRO training runs shipped with zsim "
                        "(or those of FILE, same YAML schema) on each source's own metric")
    p.add_argument("--tolerance", type=float, default=10.0, metavar="PCT",
                   help="largest acceptable step-time and peak-memory MAPE in percent (default 10)")
    p.add_argument("--hardware", default=DEFAULT_PROFILE, help="hardware profile (name or YAML path)")
    p.add_argument("--topo", default=DEFAULT_RUN_TOPO, help="topology the runs ran on")
    p.add_argument("--models", default=None, help="comma-separated model names to compare (default: all)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--phases", action="store_true",
                   help="also score each run's forward / backward / step phase times (slower)")
    add_result_output_arg(p)


def run(args: argparse.Namespace) -> int:
    """Print the comparison; 0 when both MAPEs are within tolerance, 1 when not."""
    # Not at the top: zsim.validate imports numpy, which every other command's start would pay for
    # (cli.build_parser imports every command module).
    from ..validate import format_report, validate

    if not 0 <= args.tolerance <= MAX_TOLERANCE_PCT:
        raise ZsimInputError(f"--tolerance must be a percentage in 0-{MAX_TOLERANCE_PCT:g}, got {args.tolerance}")
    if args.published is not None:
        if args.results:
            raise ZsimInputError("--published scores the published runs; give result folders or --published, not both")
        return _published(args)
    if not args.results:
        raise ZsimInputError("give at least one result folder (or --published)")
    models = [m for m in (args.models or "").split(",") if m] or None
    rep = validate(args.results, hardware=args.hardware, topo=args.topo, models=models, phases=args.phases)
    t, m = rep.mape("time"), rep.mape("memory")
    check_finite_tree(rep.to_dict(), "validation report")
    emit(args, dumps_json({**rep.to_dict(), "tolerance_pct": args.tolerance}) if args.json
         else format_report(rep))
    if t is None or m is None:
        compared = sum(1 for c in rep.runs if c.predicted is not None)
        if compared and rep.split_known:
            # The exit code is decided on runs the profile's fit never saw; here there are none.
            sys.stderr.write(f"zsim validate: {compared} run(s) compared, none of them an eval run (a model "
                             "size and machine session the profile's fit never saw), so nothing is scored; "
                             "the MAPE per split is in the table\n")
        else:
            sys.stderr.write("zsim validate: no run could be compared\n")
        return 1
    if t > args.tolerance or m > args.tolerance:
        sys.stderr.write(f"zsim validate: MAPE above tolerance {args.tolerance:g}%: "
                         f"step time {t:.1f}%, peak memory {m:.1f}%\n")
        return 1
    return 0


def _published(args: argparse.Namespace) -> int:
    """`zsim validate --published [FILE]`: the published runs' table; 1 when the MAPE over
    the rows nothing was fitted on exceeds the tolerance."""
    from ..published import format_report, published_report

    report = published_report(args.published or None)
    data = report.to_json()
    check_finite_tree(data, "published report")
    emit(args, dumps_json({**data, "tolerance_pct": args.tolerance}) if args.json else format_report(report))
    mape = report.mape_pct.get("all")
    if mape is None:
        sys.stderr.write("zsim validate: no published row could be scored\n")
        return 1
    if mape > args.tolerance:
        sys.stderr.write(f"zsim validate: published-run MAPE {mape:.1f}% above tolerance {args.tolerance:g}%\n")
        return 1
    return 0
