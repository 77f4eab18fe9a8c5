"""Benchmark `zsim sweep` over ~1,000 configurations: one process, `--jobs N`, and `--dask`
on a local Dask cluster of N worker processes (one thread each) started here.

    python bench/bench_sweep.py [--workers 2] [--modes serial,jobs,dask]

Each sweep runs as `python -m zsim.cli sweep` in a fresh process (imports included); the
Dask cluster is started before its sweep and not timed (a user's cluster is already up), but
its workers start cold (they import zsim on their first task). Prints one JSON object: wall
and CPU seconds per mode, configurations per second, the machine's core count, its load
before each mode, and whether every mode wrote the same sweep.csv (exits 1 if not). Needs
the cluster extra for `dask`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: 3 x 4 x 2 x 4 x 2 x 3 x 2 = 1,152 configurations of a small model (every kind of row:
#: fits, does not fit, and offload combinations DeepSpeed accepts).
GRID = ["--model", "tinyllama-1.1b", "--topo", "dgx-a100", "--nodes", "1,2,4", "--stage", "0,1,2,3",
        "--offload-optimizer", "none,cpu", "--micro-batch", "1,2,4,8", "--grad-accum", "1,2",
        "--seq", "512,1024,2048", "--activation-checkpointing", "off,on"]


def timed_sweep(extra: list[str], out: Path) -> float:
    """One `zsim sweep` of GRID in a new process writing into ``out``: its wall seconds."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "zsim.cli", "sweep", *GRID, *extra, "-q", "-o", str(out)],
                          capture_output=True, text=True, cwd=REPO)
    wall_s = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"zsim sweep {' '.join(extra)} failed (rc {proc.returncode}): {proc.stderr.strip()}")
    return wall_s


def cpu_s_of_children() -> float:
    """User + system CPU seconds of this process's finished children: the sweep process with
    its pool workers, and the Dask workers once their cluster is closed. Beside wall seconds
    because a shared machine stretches wall time, not the work done."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_mode(mode: str, workers: int, out: Path) -> float:
    """Wall seconds of the sweep in ``mode`` (serial, jobs or dask)."""
    if mode == "serial":
        return timed_sweep([], out)
    if mode == "jobs":
        return timed_sweep(["--jobs", str(workers)], out)
    from distributed import LocalCluster
    # Workers must import this tree's zsim, as the sweep process does.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        return timed_sweep(["--dask", cluster.scheduler_address], out)


def main() -> int:
    """Run the modes one after the other and print one JSON object."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2, help="--jobs N and the Dask cluster's worker count")
    p.add_argument("--modes", default="serial,jobs,dask")
    args = p.parse_args()
    modes = args.modes.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        walls, cpus, loads = {}, {}, {}
        for m in modes:   # the 1-minute load average before each mode: the machine may be shared
            loads[m] = round(os.getloadavg()[0], 1)
            before = cpu_s_of_children()
            walls[m] = run_mode(m, args.workers, Path(tmp) / m)
            cpus[m] = cpu_s_of_children() - before
        csvs = {m: (Path(tmp) / m / "sweep.csv").read_text() for m in modes}
    rows = csvs[modes[0]].count("\n") - 1
    same = len(set(csvs.values())) == 1
    print(json.dumps({"configurations": rows, "workers": args.workers, "cpu_count": os.cpu_count(),
                      "load_average_before": loads, "same_csv": same,
                      "wall_s": {m: round(w, 1) for m, w in walls.items()},
                      "cpu_s": {m: round(c, 1) for m, c in cpus.items()},
                      "configurations_per_s": {m: round(rows / w, 2) for m, w in walls.items()}}, indent=2))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
