"""Does the host speed measured during a run explain its step time? (results folders with
``host_speed_in_run``, e.g. validation/results/h200/2026-12-01-m8).

Prints, over every ok run that has the in-run probe:

- the instrument ratio in-run / snapshot per probe kind (medians over the runs): the number
  ``zsim.hostcost.IN_RUN_PER_SNAPSHOT`` holds;
- per run, the correlation over its timed steps between step time and the probe after it;
- the step-time error of zsim's prediction with three host speeds: the profile's reference
  (what predictions used before the probe), the run's snapshot, and the in-run medians on
  the snapshot's scale (what :func:`zsim.calibrate.predict_run` uses now);
- how the in-run error trends with the probe (:func:`residual_trend`).

With ``--microbench`` it prints instead how the tiny layers' host time follows the same probe
across the processes of validation/microbench/backward_host.py (:func:`layer_probe_slopes`).

Usage: python validation/host_probe.py validation/results/h200/2026-12-01-m8 [--hardware h200-sxm]
       python validation/host_probe.py --microbench validation/results/h200/
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys

import numpy as np

from zsim.calibrate import find_runs, predict_settings, run_settings
from zsim.hostcost import HostSpeed, in_run_host_speed

KINDS = ("small_linear_call_s", "empty_kernel_launch_s")


def _summary(run) -> dict:
    return json.loads((run.path / "summary.json").read_text())


def _rows(run) -> list[dict]:
    raw = json.loads((run.path / "raw_metrics.json").read_text())
    rows = raw.get("rows", raw) if isinstance(raw, dict) else raw
    return [r for r in rows if r.get("phase") == "timed" and "probe_small_linear_call_s" in r]


def instrument_ratios(summaries: list[dict]) -> dict[str, float]:
    """Median of in-run probe / snapshot per probe kind."""
    return {k: statistics.median(s["host_speed_in_run"][k] / s["host_speed"][k] for s in summaries)
            for k in KINDS}


def step_correlation(rows: list[dict]) -> float:
    """Pearson correlation of step time with the Linear-call probe after each step."""
    y = np.array([r["step_time_s"] for r in rows])
    x = np.array([r["probe_small_linear_call_s"] for r in rows])
    return float(np.corrcoef(x, y)[0, 1]) if len(rows) > 2 and x.std() > 0 and y.std() > 0 else float("nan")


def residual_trend(runs, errors_pct: list[float], reference_s: float) -> tuple[float, float]:
    """(correlation, slope) of log(measured / predicted step) on log(in-run Linear probe /
    the profile's reference): 0 and 0 when the costs follow the probe as far as the steps do;
    a positive slope says the prediction moves less than the step with the probe."""
    x = np.array([np.log(r.host_speed_in_run.small_linear_call_s / reference_s) for r in runs])
    y = np.array([-np.log1p(e / 100) for e in errors_pct])
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return float("nan"), float("nan")
    return float(np.corrcoef(x, y)[0, 1]), float(np.polyfit(x, y, 1)[0])


def layer_probe_slopes(records: list[dict]) -> dict[str, tuple[float, float, int]]:
    """How the tiny layers' host seconds follow the probe across processes
    (validation/microbench/backward_host.py records): per row kind and pass, (slope of
    log seconds on log Linear-call probe, correlation, processes). 1 is in proportion."""
    x = np.log([r["host_probe"]["probe_small_linear_call_s"] for r in records])
    out = {}
    for kind in ("dense", "moe"):
        for field in ("forward_s", "backward_s"):
            y = np.log([next(row for row in r["layers"] if row["kind"] == kind)[field] for r in records])
            if len(y) >= 3 and x.std() > 0:
                out[f"{kind} {field}"] = (float(np.polyfit(x, y, 1)[0]), float(np.corrcoef(x, y)[0, 1]), len(y))
    return out


def _print_layer_slopes(paths: list[str]) -> int:
    from pathlib import Path
    files = sorted(f for p in paths for f in Path(p).rglob("microbench_backward_host_p*.json"))
    records = [json.loads(f.read_text())["backward_host"] for f in files]
    if len(records) < 3:
        print("need at least 3 backward_host records", file=sys.stderr)
        return 1
    for name, (slope, corr, n) in layer_probe_slopes(records).items():
        print(f"{name:18s} slope {slope:+.2f} on the probe, correlation {corr:+.2f} ({n} processes)")
    return 0


def main(argv=None) -> int:
    """Print the three tables; 0 when at least one run has the probe."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("paths", nargs="+")
    p.add_argument("--hardware", default="h200-sxm")
    p.add_argument("--microbench", action="store_true",
                   help="instead: how the backward_host benchmark's layer times follow the probe")
    args = p.parse_args(argv)
    if args.microbench:
        return _print_layer_slopes(args.paths)
    runs = [r for r in find_runs(args.paths) if r.ok and r.host_speed_in_run is not None]
    if not runs:
        print("no ok run with host_speed_in_run", file=sys.stderr)
        return 1
    summaries = [_summary(r) for r in runs]
    ratios = instrument_ratios(summaries)
    print("in-run / snapshot (median over %d runs): " % len(runs)
          + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    errs: dict[str, list[float]] = {"reference": [], "snapshot": [], "in-run": []}
    print(f"{'run':46s} {'step ms':>8s} {'corr':>5s} {'reference':>9s} {'snapshot':>9s} {'in-run':>8s}")
    for run, s in zip(runs, summaries):
        snap = HostSpeed(s["host_speed"]["small_linear_call_s"], s["host_speed"]["empty_kernel_launch_s"])
        base = run_settings(run, args.hardware)
        line = []
        for name, speed in (("reference", None), ("snapshot", snap), ("in-run", in_run_host_speed(s))):
            pred = predict_settings(dataclasses.replace(base, host_speed=speed)).step_time_s
            e = 100 * (pred - run.step_time_s) / run.step_time_s
            errs[name].append(e)
            line.append(f"{e:+8.1f}%")
        print(f"{run.run_id[:46]:46s} {run.step_time_s * 1e3:8.1f} {step_correlation(_rows(run)):5.2f} "
              + " ".join(line))
    for name, e in errs.items():
        print(f"{name:10s} MAPE {statistics.fmean(abs(v) for v in e):5.1f} %  max {max(abs(v) for v in e):5.1f} %"
              f"  mean {statistics.fmean(e):+5.1f} %  ({len(e)} runs)")
    from zsim.hardware import load_profile
    corr, slope = residual_trend(runs, errs["in-run"], load_profile(args.hardware).host.small_linear_call_s)
    print(f"in-run residual against the probe: correlation {corr:+.2f}, slope {slope:+.2f} "
          "(log measured/predicted on log probe/reference)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
