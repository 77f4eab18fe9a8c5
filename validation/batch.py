"""Run many validation configs in sequence on one node, each under its own timeout.

    python validation/batch.py --out RESULTS_DIR [--only ID,ID] [--start I --stop J]
           [--deadline-s S] [--torchrun-first N] [--microbench-after N]

Every run gets its own folder RESULTS_DIR/<run_id>/ (train.py's output plus log_tail.txt); a
run past its timeout gets SIGTERM (train.py then writes a "failed" summary), then SIGKILL.
Runs that would not finish before the deadline are skipped and listed as such. Progress is
appended to RESULTS_DIR/batch.jsonl as it happens.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from plan import PLANS, ds_config  # noqa: E402


def log(path: Path, rec: dict) -> None:
    """Append one JSON line to the batch log (fsynced) and echo it."""
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")
        f.flush()
        os.fsync(f.fileno())
    print(json.dumps(rec), flush=True)


def run_one(cmd: list[str], env: dict, timeout: float, log_path: Path) -> tuple[int, float, bool]:
    """Run ``cmd`` in its own process group; SIGTERM at the timeout, SIGKILL 20 s later."""
    t0 = time.perf_counter()
    with open(log_path, "w") as lf:
        proc = subprocess.Popen(cmd, env=env, stdout=lf, stderr=subprocess.STDOUT, start_new_session=True)
        killed = False
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            killed = True
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                rc = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                rc = proc.wait()
    return rc, time.perf_counter() - t0, killed


def tail(path: Path, n: int = 150) -> str:
    """The last ``n`` lines of a log file ("" when unreadable)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) + "\n"
    except OSError:
        return ""


def main(argv=None) -> int:
    """Run the selected slice of the plan; see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--only", default="")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--stop", type=int, default=10**6)
    p.add_argument("--plan", default="h200-1gpu", help="|".join(PLANS) + " or both joined by +")
    p.add_argument("--nccl-gpus", type=int, default=0, help="run the NCCL sweep on N GPUs first")
    p.add_argument("--deadline-s", type=float, default=1e9, help="seconds from now; no run starts past it")
    p.add_argument("--torchrun-first", type=int, default=0, help="launch the first N runs via torchrun")
    p.add_argument("--microbench-after", type=int, default=-1,
                   help="run the microbenchmarks after this many runs (-1: never)")
    p.add_argument("--microbench-timeout", type=float, default=240)
    p.add_argument("--abort-after-failures", type=int, default=2,
                   help="stop if the first N runs all fail (a broken setup wastes no more time)")
    p.add_argument("--warmup", type=int, default=None, help="default: train.py's (12 for ZeRO-3, else 3)")
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    deadline = t_start + args.deadline_s
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    blog = out / "batch.jsonl"
    only = [s for s in args.only.split(",") if s]
    plan = [r for name in args.plan.split("+") for r in PLANS[name]]
    by_id = {r.run_id: r for r in plan}
    missing = [i for i in only if i not in by_id]
    if missing:
        raise SystemExit(f"unknown run ids: {missing}")
    runs = [by_id[i] for i in only] if only else list(plan[args.start:args.stop])  # --only keeps its order
    env = dict(os.environ)
    if args.nccl_gpus > 1:
        rc, wall, killed = run_one([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                    "--nproc_per_node", str(args.nccl_gpus), str(HERE / "microbench" / "nccl.py"),
                                    "--output", str(out / f"nccl_{args.nccl_gpus}gpu.json")], env, 150,
                                   out / "nccl.log")
        log(blog, {"event": "nccl", "rc": rc, "wall_s": round(wall, 1), "killed": killed})
    failures = done = 0
    for i, r in enumerate(runs):
        if i == args.microbench_after:
            left = deadline - time.perf_counter()
            mb_timeout = min(args.microbench_timeout, max(30.0, left - 30))
            rc, wall, killed = run_one([sys.executable, str(HERE / "microbench" / "run_all.py"),
                                        "--output", str(out / "microbench.json")], env, mb_timeout,
                                       out / "microbench.log")
            log(blog, {"event": "microbench", "rc": rc, "wall_s": round(wall, 1), "killed": killed})
        left = deadline - time.perf_counter()
        timeout = min(r.timeout_s(), left)
        if timeout < 45:
            log(blog, {"event": "skipped", "run_id": r.run_id, "reason": "deadline"})
            continue
        d = out / r.run_id
        d.mkdir(parents=True, exist_ok=True)
        (d / "ds_config.json").write_text(json.dumps(ds_config(r), indent=2) + "\n")
        train = [str(HERE / "train.py"), "--model", r.model, "--ds-config", str(d / "ds_config.json"),
                 "--seq", str(r.seq), "--micro-batch", str(r.mb), "--grad-accum", str(r.ga),
                 "--steps", str(args.steps), "--comms-steps", "1" if r.gpus > 1 else "0",
                 "--output", str(d), "--run-id", r.run_id]
        if args.warmup is not None:
            train += ["--warmup", str(args.warmup)]
        if r.ac:
            train.append("--activation-checkpointing")
        if r.moe:
            (d / "moe_config.json").write_text(json.dumps(dict(r.moe), indent=2) + "\n")
            train += ["--moe-config", str(d / "moe_config.json")]
        if r.profile:
            train.append("--profile")
        if r.pyprofile:
            train += ["--pyprofile", str(r.pyprofile)]
        run_env = dict(env)
        if r.omp_threads:
            run_env["OMP_NUM_THREADS"] = str(r.omp_threads)
        if i < args.torchrun_first or r.gpus > 1:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc_per_node", str(r.gpus)] + train
        else:  # one process, the environment torchrun would give it (saves the agent's start-up)
            cmd = [sys.executable] + train
            run_env.setdefault("CUDA_VISIBLE_DEVICES", "0")
            run_env.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1",
                           MASTER_ADDR="127.0.0.1", MASTER_PORT=str(29600 + i))
        (d / "launch.txt").write_text(" ".join(cmd) + "\n")
        rc, wall, killed = run_one(cmd, run_env, timeout, d / "log_full.txt")
        (d / "log_tail.txt").write_text(tail(d / "log_full.txt"))
        (d / "log_full.txt").unlink(missing_ok=True)
        try:
            status = json.loads((d / "summary.json").read_text()).get("status")
        except (OSError, ValueError):
            status = "missing"
        done += 1
        failures += status != "ok"
        log(blog, {"event": "run", "run_id": r.run_id, "rc": rc, "status": status, "killed": killed,
                   "wall_s": round(wall, 1), "elapsed_s": round(time.perf_counter() - t_start, 1)})
        if done == failures == args.abort_after_failures:
            log(blog, {"event": "abort", "reason": f"first {done} runs failed"})
            break
    if args.microbench_after >= len(runs):
        rc, wall, killed = run_one([sys.executable, str(HERE / "microbench" / "run_all.py"),
                                    "--output", str(out / "microbench.json")], env,
                                   min(args.microbench_timeout, max(30.0, deadline - time.perf_counter())),
                                   out / "microbench.log")
        log(blog, {"event": "microbench", "rc": rc, "wall_s": round(wall, 1), "killed": killed})
    return 0


if __name__ == "__main__":
    sys.exit(main())
