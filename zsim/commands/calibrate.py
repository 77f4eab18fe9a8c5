"""`zsim calibrate`: fit a hardware profile from microbenchmarks and validation runs."""

from __future__ import annotations

import argparse
import sys

from ..defaults import DEFAULT_PROFILE, DEFAULT_RUN_TOPO
from ..hardware import load_profile
from ..io import atomic_write_text

HELP = "fit a hardware profile (YAML) from validation/ microbenchmarks and training runs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `zsim calibrate`."""
    p.add_argument("results", nargs="+", metavar="RESULTS",
                   help="result folders: run folders (summary.json) and microbench.json / nccl*.json files")
    p.add_argument("-o", "--output", required=True, help="profile YAML to write")
    p.add_argument("--base", default=DEFAULT_PROFILE,
                   help="profile whose datasheet figures and unfitted values are kept (name or path)")
    p.add_argument("--fit-models", default=None,
                   help="comma-separated model names whose runs fit the overheads (default: all runs); "
                        "runs of other models are left for `zsim validate`")
    p.add_argument("--name", default=None, help="name of the fitted profile (default: the base's)")
    p.add_argument("--topo", default=DEFAULT_RUN_TOPO, help="topology the runs ran on (one node)")
    p.add_argument("--link", default="nvlink", help="link type the NCCL sweep measures")
    p.add_argument("--fit-params", default=None,
                   help="comma-separated dotted profile keys fitted to step times "
                        "(default: the host code-path costs, host.sync_s and overheads.step_fixed_s)")


def run(args: argparse.Namespace) -> int:
    """Fit, write the YAML atomically, print what was fitted."""
    # Not at the top: zsim.calibrate imports numpy, which every other command's start would pay for
    # (cli.build_parser imports every command module).
    from ..calibrate import TIME_PARAMS, calibrate, profile_yaml

    fit_models = [m for m in (args.fit_models or "").split(",") if m] or None
    params = tuple(x for x in (args.fit_params or "").split(",") if x) or TIME_PARAMS
    cal = calibrate(args.results, base=args.base, fit_models=fit_models, name=args.name,
                    topo=args.topo, link=args.link, time_params=params)
    atomic_write_text(args.output, profile_yaml(cal))
    load_profile(args.output)  # what was written must load
    d = cal.details
    out = sys.stdout
    out.write(f"wrote {args.output} ({cal.profile.name}, calibrated)\n")
    for k, v in d.get("from_microbench", {}).items():
        out.write(f"  microbench  {k} = {v}\n")
    for section in ("links", "time_fit", "memory_fit"):
        if section in d:
            for k, v in d[section]["params"].items():
                out.write(f"  {section:11s} {k} = {v:.6g}\n")
            out.write(f"  {section:11s} fit MAPE {d[section]['fit_mape_pct']:.1f}%\n")
    out.write(f"  fit runs: {len(d.get('fit_runs', []))}; skipped (not ok): {len(d.get('skipped_runs', {}))}\n")
    return 0
