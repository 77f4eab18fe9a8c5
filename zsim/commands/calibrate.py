"""`zsim calibrate`: fit a hardware profile from microbenchmarks and validation runs."""

from __future__ import annotations

import argparse
import sys

from ..defaults import DEFAULT_PROFILE, DEFAULT_RUN_TOPO
from ..hardware import load_profile
from ..io import atomic_write_text
from .common import add_quiet_arg, progress_for

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
    add_quiet_arg(p)


#: Gauss-Newton's iterations and line-search halvings, the golden-section search's passes
#: (zsim.calibrate.gauss_newton, fit_allocator_overhead): the most passes over the fit runs.
_GN_ITERATIONS, _GN_HALVINGS, _MEMORY_PASSES = 6, 6, 35


def counting_predictor(predict, runs_per_pass: int, passes: int, bar):
    """``predict`` that reports progress each time it has predicted every fit run once."""
    calls = [0]

    def counted(run, hw):
        calls[0] += 1
        if calls[0] % max(1, runs_per_pass) == 0:
            done = calls[0] // max(1, runs_per_pass)
            bar(min(done, passes - 1), passes, f"pass {done}: predicted the {runs_per_pass} fit runs")
        return predict(run, hw)
    return counted


def run(args: argparse.Namespace) -> int:
    """Fit, write the YAML atomically, print what was fitted."""
    # Not at the top: zsim.calibrate imports numpy, which every other command's start would pay for
    # (cli.build_parser imports every command module).
    from ..calibrate import TIME_PARAMS, calibrate, default_predictor, find_runs, profile_yaml, select_fit_runs

    fit_models = [m for m in (args.fit_models or "").split(",") if m] or None
    params = tuple(x for x in (args.fit_params or "").split(",") if x) or TIME_PARAMS
    # Progress: the fits predict every fit run once per pass, at most this many passes.
    n_fit = len(select_fit_runs(find_runs(args.results), fit_models))
    passes = 2 + _GN_ITERATIONS * (len(params) + _GN_HALVINGS) + _MEMORY_PASSES
    bar = progress_for(args, "zsim calibrate")
    predictor = counting_predictor(default_predictor(args.topo, phases=True), n_fit, passes, bar)
    try:
        cal = calibrate(args.results, base=args.base, fit_models=fit_models, name=args.name,
                        topo=args.topo, link=args.link, time_params=params, predictor=predictor)
        bar(passes, passes, "done")
    finally:
        bar.close()
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
    out.write(f"  fit runs: {len(d.get('fit_runs', []))}; skipped (not ok): {len(d.get('skipped_runs', {}))}; "
              f"timed on too few steps (not fitted): {len(d.get('before_protocol_runs', []))}\n")
    return 0
