"""Benchmark `zsim plan --search-3d` end to end (a fresh process each run, imports included).

    python bench/bench_plan3d.py [--repeat 3] [--limit-s 10] [-- extra plan args]

Default case: issue #16's, `zsim plan --model llama-2-70b --topo dgx-h100 --nodes 16
--search-3d` (tensor x pipeline x Ulysses degrees searched jointly with ZeRO stage, offload,
micro-batch and checkpointing; target <= 10 s on a 2-core machine). Prints wall-clock and
CPU seconds per run, the machine's core count and load (1-minute average before and after),
the search's effort counters and its ranking (step time and tokens/s of each finalist);
exits 1 when the median wall time exceeds --limit-s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

from bench_plan import timed_plan  # bench/ is on sys.path when run as a script

DEFAULT_CASE = ["--model", "llama-2-70b", "--topo", "dgx-h100", "--nodes", "16", "--search-3d"]


def run_once(case: list[str]) -> tuple[float, float, dict]:
    """One `zsim plan --search-3d` run in a new process: (wall s, CPU s, plan.json counters)."""
    wall, cpu, data = timed_plan(case)
    counters = {k: data[k] for k in ("layouts", "candidates", "fitting", "pruned", "simulated", "global_batch",
                                     "seq_len")}
    ranked = [{"label": r["label"], "step_time_s": r["step_time_s"], "tokens_per_s": r["tokens_per_s"]}
              for r in data["ranked"]]
    return wall, cpu, {**counters, "ranked": ranked}


def main() -> int:
    """Run the benchmark and print one JSON object."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--limit-s", type=float, default=10.0)
    p.add_argument("case", nargs="*", help="plan arguments (default: the 70B / 16 x DGX-H100 joint search)")
    args = p.parse_args()
    case = args.case or DEFAULT_CASE
    load_before = os.getloadavg()[0]
    runs = [run_once(case) for _ in range(args.repeat)]
    walls = [w for w, _, _ in runs]
    cpus = [c for _, c, _ in runs]
    report = {"case": "zsim plan " + " ".join(case), "cpu_count": os.cpu_count(),
              "loadavg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
              "wall_s": [round(w, 2) for w in walls], "median_wall_s": round(statistics.median(walls), 2),
              "cpu_s": [round(c, 2) for c in cpus], "median_cpu_s": round(statistics.median(cpus), 2),
              "limit_s": args.limit_s, "search": runs[-1][2],
              "same_answer_every_run": all(r[2] == runs[0][2] for r in runs)}
    print(json.dumps(report, indent=2))
    return 0 if report["median_wall_s"] <= args.limit_s else 1


if __name__ == "__main__":
    raise SystemExit(main())
