"""ZeRO-3's host costs per parameter moved, read from `train.py --profile` traces.

    python validation/z3_host_costs.py validation/results/h200/2026-12-01-m9/*-m9a/

For each traced ZeRO-3 run it prints, in loop ops (zsim's ``loop_op_s`` at the run's own
in-run host speed: ``loop_op_per_empty_launch`` x the probe's empty launch on the reference
scale):

- the step's prelude (``_partition_all_parameters``, stage3.py:2877-2878): from the step's start
  to the first ``get_grad_norm_direct``; the spacing of its ``aten::empty`` calls (one per
  partitioned parameter) splits it into a cost per partition and per other parameter, the rest
  after the last partition into a cost per parameter of the later passes;
- the module hooks: least squares of each ``fetch_sub_module`` call's duration on
  (forward, backward, handles waited = its cudaStreamSynchronize children, parameters gathered
  = its aten::to children) and of each ``release_sub_module`` call's on (forward, backward,
  parameters partitioned = its aten::empty children).

These are the numbers behind zsim.schedule.hostwork's STAGE3_STEP_PRELUDE* and STAGE3_HOOK_*.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from zsim.diagnose.measured import phase_clock   # noqa: E402
from zsim.diagnose.trace import TraceEvent, load_trace   # noqa: E402
from zsim.hardware import load_profile            # noqa: E402
from zsim.hostcost import in_run_host_speed       # noqa: E402

FETCH = "ds.PartitionedParameterCoordinator.fetch_sub_module"
RELEASE = "ds.PartitionedParameterCoordinator.release_sub_module"
NORM = "ds.DeepSpeedZeroOptimizer_Stage3.get_grad_norm_direct"
#: Regressors of each hook's least squares (besides the forward/backward indicator columns):
#: the child events counted in each call.
REGRESSORS = {FETCH: ("cudaStreamSynchronize", "aten::to"), RELEASE: ("aten::empty",)}


def _children(trace, parents: tuple[str, ...]) -> dict[TraceEvent, collections.Counter]:
    """For each ``parents`` event of ``trace``, a Counter of the event names nested in it."""
    kids: dict[TraceEvent, collections.Counter] = {}
    stacks: dict[tuple[str, str], list[TraceEvent]] = collections.defaultdict(list)
    for e in trace.events:          # sorted by start, longest first (load_trace)
        stack = stacks[e.thread]
        while stack and stack[-1].end_us <= e.start_us:
            stack.pop()
        for s in stack:
            if s.name in parents:
                kids.setdefault(s, collections.Counter())[e.name] += 1
        stack.append(e)
    return kids


def prelude(trace) -> dict:
    """The step's prelude in microseconds: total, per partition, per other parameter, tail."""
    clock = phase_clock(trace)
    step = next(r for r in clock.ranges if r.phase == "step")
    t0 = step.start_us
    norm = min(e.start_us for e in trace.events if e.name == NORM and e.start_us > t0)
    empties = sorted(e.start_us for e in trace.events
                     if e.name == "aten::empty" and t0 <= e.start_us < norm and e.thread == clock.step.thread)
    gaps = [b - a for a, b in zip(empties, empties[1:])]
    mid = statistics.median(gaps) if gaps else 0.0
    return {"total_us": norm - t0, "partitions": len(empties),
            "adjacent_us": statistics.median([g for g in gaps if g < mid] or [0.0]),
            "apart_us": statistics.median([g for g in gaps if g >= mid] or [0.0]),
            "tail_us": norm - empties[-1] if empties else norm - t0,
            "head_us": empties[0] - t0 if empties else 0.0}


def hook_rows(trace) -> dict[str, list[tuple[list, float]]]:
    """Per fetch/release call of the forward and backward: (regressors, duration in us)."""
    clock = phase_clock(trace)
    kids = _children(trace, tuple(REGRESSORS))
    rows: dict[str, list] = {name: [] for name in REGRESSORS}
    for e in trace.events:
        phase = clock.locate(e.start_us)[0] if e.name in REGRESSORS else None
        if phase in ("forward", "backward"):
            k = kids.get(e, {})
            rows[e.name].append(([phase == "forward", phase == "backward",
                                  *(k.get(n, 0) for n in REGRESSORS[e.name])], e.dur_us))
    return rows


def fit(samples: list[tuple[list, float]]) -> np.ndarray:
    """Least-squares coefficients of the durations on the regressors."""
    x = np.array([r[0] for r in samples], float)
    y = np.array([r[1] for r in samples], float)
    return np.linalg.lstsq(x, y, rcond=None)[0]


def counts(samples: list[tuple[list, float]]) -> list[float]:
    """Totals of the counted regressors (the columns after forward/backward)."""
    return np.array([r[0] for r in samples], float)[:, 2:].sum(0).tolist()


def main(argv=None) -> int:
    """Print the prelude and hook costs of every traced ZeRO-3 run folder given."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--hardware", default="h200-sxm")
    args = p.parse_args(argv)
    hw = load_profile(args.hardware)
    pooled: dict[str, list] = {name: [] for name in REGRESSORS}
    prel = []
    for run in args.runs:
        trace_path, summary = run / "trace.json.gz", run / "summary.json"
        if not trace_path.exists() or not summary.exists():
            continue
        s = json.loads(summary.read_text())
        if s.get("zero_stage") != 3 or s.get("status") != "ok":
            continue
        speed = in_run_host_speed(s)
        launch = speed.empty_kernel_launch_s if speed else hw.host.empty_kernel_launch_s
        op_us = hw.host.loop_op_per_empty_launch * launch * 1e6
        trace = load_trace(trace_path)
        pre, rows = prelude(trace), hook_rows(trace)
        f, r = fit(rows[FETCH]) / op_us, fit(rows[RELEASE]) / op_us
        print(f"{run.name}  (loop op {op_us:.2f} us{'' if speed else ', reference speed'})")
        print(f"  prelude {pre['total_us'] / 1e3:.2f} ms, {pre['partitions']} partitions: per partition"
              f" {pre['adjacent_us'] / op_us:.2f} ops, apart {pre['apart_us'] / op_us:.2f} ops,"
              f" head {pre['head_us'] / op_us:.1f} ops, tail {pre['tail_us'] / op_us:.1f} ops")
        print(f"  fetch: fwd {f[0]:.1f} bwd {f[1]:.1f} per wait {f[2]:.2f} per gathered {f[3]:.2f} ops"
              f"  (calls {len(rows[FETCH])}, waits/gathered {counts(rows[FETCH])})")
        print(f"  release: fwd {r[0]:.1f} bwd {r[1]:.1f} per partition {r[2]:.2f} ops"
              f"  (calls {len(rows[RELEASE])}, partitions {counts(rows[RELEASE])})")
        for name in pooled:
            pooled[name] += [(x, y / op_us) for x, y in rows[name]]
        prel.append(tuple(pre[k] / op_us for k in ("adjacent_us", "apart_us", "head_us", "tail_us")))
    if len(prel) > 1:
        f, r = fit(pooled[FETCH]), fit(pooled[RELEASE])
        print(f"pooled over {len(prel)} runs, loop ops: fetch fwd {f[0]:.1f} bwd {f[1]:.1f} per wait {f[2]:.2f}"
              f" per gathered {f[3]:.2f}; release fwd {r[0]:.1f} bwd {r[1]:.1f} per partition {r[2]:.2f}")
        print("  prelude medians: per partition %.2f, apart %.2f, head %.1f, tail %.1f ops" % tuple(
            statistics.median(p[i] for p in prel) for i in range(4)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
