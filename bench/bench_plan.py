"""Benchmark `zsim plan` end to end (a fresh process each run, imports included).

    python bench/bench_plan.py [--repeat 3] [--limit-s 30] [-- extra plan args]

Default case: the issue's target, `zsim plan --model llama-2-70b --topo dgx-h100 --nodes 16`
(in <= 30 s on a 2-core machine). Prints wall-clock seconds per run, the machine's core count
and the search's effort counters; exits 1 when the median run exceeds --limit-s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_CASE = ["--model", "llama-2-70b", "--topo", "dgx-h100", "--nodes", "16"]


def run_once(case: list[str]) -> tuple[float, dict]:
    """One `zsim plan` run in a new process: (wall seconds, plan.json search counters)."""
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "zsim.cli", "plan", *case, "--output", out],
                              capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"zsim plan failed (rc {proc.returncode}): {proc.stderr.strip()}")
        data = json.loads((Path(out) / "plan.json").read_text())
    best = data["ranked"][0]
    return wall, {**data["search"], "best": {k: best[k] for k in (
        "stage", "offload_optimizer", "offload_param", "micro_batch", "grad_accum",
        "activation_checkpointing", "reduce_bucket_size", "prefetch_bucket_size")},
        "best_tokens_per_s": best["prediction"]["tokens_per_s"]}


def main() -> int:
    """Run the benchmark and print one JSON object."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--limit-s", type=float, default=30.0)
    p.add_argument("case", nargs="*", help="plan arguments (default: the 70B / 16 x DGX-H100 case)")
    args = p.parse_args()
    case = args.case or DEFAULT_CASE
    runs = [run_once(case) for _ in range(args.repeat)]
    walls = [w for w, _ in runs]
    report = {"case": "zsim plan " + " ".join(case), "cpu_count": os.cpu_count(),
              "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
              "runs_s": [round(w, 2) for w in walls], "median_s": round(statistics.median(walls), 2),
              "limit_s": args.limit_s, "search": runs[-1][1]}
    print(json.dumps(report, indent=2))
    return 0 if report["median_s"] <= args.limit_s else 1


if __name__ == "__main__":
    raise SystemExit(main())
