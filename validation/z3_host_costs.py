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
import gzip
import json
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from zsim.hardware import load_profile            # noqa: E402
from zsim.hostcost import in_run_host_speed       # noqa: E402

FETCH = "ds.PartitionedParameterCoordinator.fetch_sub_module"
RELEASE = "ds.PartitionedParameterCoordinator.release_sub_module"
HOST_CATS = ("cpu_op", "user_annotation", "cuda_runtime", "python_function")


def _events(trace: Path) -> list[dict]:
    with gzip.open(trace) as f:
        data = json.load(f)
    return [e for e in data["traceEvents"] if e.get("ph") == "X" and e.get("cat") in HOST_CATS]


def _count_children(events: list[dict], parents: tuple[str, ...]) -> None:
    """Annotate each ``parents`` event with a Counter of the event names nested in it."""
    by_tid = collections.defaultdict(list)
    for e in events:
        by_tid[e["tid"]].append(e)
    for evs in by_tid.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack: list[dict] = []
        for e in evs:
            while stack and stack[-1]["ts"] + stack[-1]["dur"] <= e["ts"]:
                stack.pop()
            for s in stack:
                if s["name"] in parents:
                    s.setdefault("_kids", collections.Counter())[e["name"]] += 1
            stack.append(e)


def prelude(events: list[dict]) -> dict:
    """The step's prelude in microseconds: total, per partition, per other parameter, tail."""
    step = next(e for e in events if e["name"].startswith("zsim.engine_step"))
    t0 = step["ts"]
    norm = min(e["ts"] for e in events
               if e["name"] == "ds.DeepSpeedZeroOptimizer_Stage3.get_grad_norm_direct" and e["ts"] > t0)
    empties = sorted(e["ts"] for e in events
                     if e["name"] == "aten::empty" and t0 <= e["ts"] < norm and e["tid"] == step["tid"])
    gaps = [b - a for a, b in zip(empties, empties[1:])]
    mid = statistics.median(gaps) if gaps else 0.0
    return {"total_us": norm - t0, "partitions": len(empties),
            "adjacent_us": statistics.median([g for g in gaps if g < mid] or [0.0]),
            "apart_us": statistics.median([g for g in gaps if g >= mid] or [0.0]),
            "tail_us": norm - empties[-1] if empties else norm - t0,
            "head_us": empties[0] - t0 if empties else 0.0}


def hooks(events: list[dict]) -> dict:
    """Least-squares hook costs in microseconds (see the module docstring)."""
    _count_children(events, (FETCH, RELEASE))
    windows = {ph: [(e["ts"], e["ts"] + e["dur"]) for e in events if e["name"].startswith(f"zsim.{ph}")]
               for ph in ("forward", "backward")}

    def phase(e):
        return next((ph for ph, ws in windows.items() if any(a <= e["ts"] < b for a, b in ws)), None)

    rows = _hook_rows(events, phase)
    out = {}
    for name, keys in ((FETCH, ("fwd", "bwd", "wait", "gather")), (RELEASE, ("fwd", "bwd", "partition"))):
        x = np.array([r[0] for r in rows[name]], float)
        y = np.array([r[1] for r in rows[name]], float)
        coef = np.linalg.lstsq(x, y, rcond=None)[0]
        out[name.rsplit(".", 1)[1]] = dict(zip(keys, coef)) | {"calls": len(y), "counts": x[:, 2:].sum(0).tolist(),
                                                              "rows": rows[name]}
    return out


def _hook_rows(events: list[dict], phase) -> dict:
    """Per hook call: its regressors and its duration in microseconds."""
    rows = {FETCH: [], RELEASE: []}
    for e in events:
        if e["name"] in rows and (ph := phase(e)):
            k = e.get("_kids", {})
            x = ([ph == "forward", ph == "backward", k.get("cudaStreamSynchronize", 0), k.get("aten::to", 0)]
                 if e["name"] == FETCH else [ph == "forward", ph == "backward", k.get("aten::empty", 0)])
            rows[e["name"]].append((x, e["dur"]))
    return rows


def _pooled(samples: list[tuple[list, float]]) -> np.ndarray:
    """Least squares over calls of several runs, each already in loop ops."""
    x = np.array([r[0] for r in samples], float)
    y = np.array([r[1] for r in samples], float)
    return np.linalg.lstsq(x, y, rcond=None)[0]


def main(argv=None) -> int:
    """Print the prelude and hook costs of every traced ZeRO-3 run folder given."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--hardware", default="h200-sxm")
    args = p.parse_args(argv)
    hw = load_profile(args.hardware)
    pooled = {"fetch_sub_module": [], "release_sub_module": []}
    prel = []
    for run in args.runs:
        trace, summary = run / "trace.json.gz", run / "summary.json"
        if not trace.exists() or not summary.exists():
            continue
        s = json.loads(summary.read_text())
        if s.get("zero_stage") != 3 or s.get("status") != "ok":
            continue
        speed = in_run_host_speed(s)
        launch = speed.empty_kernel_launch_s if speed else hw.host.empty_kernel_launch_s
        op_us = hw.host.loop_op_per_empty_launch * launch * 1e6
        events = _events(trace)
        pre, hk = prelude(events), hooks(events)
        print(f"{run.name}  (loop op {op_us:.2f} us{'' if speed else ', reference speed'})")
        print(f"  prelude {pre['total_us'] / 1e3:.2f} ms, {pre['partitions']} partitions: per partition"
              f" {pre['adjacent_us'] / op_us:.2f} ops, apart {pre['apart_us'] / op_us:.2f} ops,"
              f" head {pre['head_us'] / op_us:.1f} ops, tail {pre['tail_us'] / op_us:.1f} ops")
        f, r = hk["fetch_sub_module"], hk["release_sub_module"]
        print(f"  fetch: fwd {f['fwd'] / op_us:.1f} bwd {f['bwd'] / op_us:.1f} per wait {f['wait'] / op_us:.2f}"
              f" per gathered {f['gather'] / op_us:.2f} ops  (calls {f['calls']}, waits/gathered {f['counts']})")
        print(f"  release: fwd {r['fwd'] / op_us:.1f} bwd {r['bwd'] / op_us:.1f} per partition"
              f" {r['partition'] / op_us:.2f} ops  (calls {r['calls']}, partitions {r['counts']})")
        for name in pooled:
            pooled[name] += [(x, y / op_us) for x, y in hk[name]["rows"]]
        prel.append((pre["adjacent_us"] / op_us, pre["apart_us"] / op_us, pre["head_us"] / op_us,
                     pre["tail_us"] / op_us, s))
    if len(prel) > 1:
        f, r = _pooled(pooled["fetch_sub_module"]), _pooled(pooled["release_sub_module"])
        print(f"pooled over {len(prel)} runs, loop ops: fetch fwd {f[0]:.1f} bwd {f[1]:.1f} per wait {f[2]:.2f}"
              f" per gathered {f[3]:.2f}; release fwd {r[0]:.1f} bwd {r[1]:.1f} per partition {r[2]:.2f}")
        print("  prelude medians: per partition %.2f, apart %.2f, head %.1f, tail %.1f ops" % tuple(
            statistics.median(p[i] for p in prel) for i in range(4)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
