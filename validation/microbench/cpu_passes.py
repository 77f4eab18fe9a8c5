"""The three CPU passes of DeepSpeed's optimizer offload, per thread count and size.

With ``offload_optimizer`` the stage-1/2 step runs, on the host, over the rank's fp32
partition (deepspeed 0.19.8 runtime/zero/stage_1_and_2.py:3078-3095):

- ``unscale``: ``unscale_and_clip_grads`` multiplies the fp32 gradient by ``1 / scale``
  (``grad.data.mul_``, :3193-3220);
- ``adam``: ``DeepSpeedCPUAdam.step`` over the fp32 master, gradient and both moments;
- ``cast``: ``bit16_partition_buffer.data.copy_(fp32_partition.data)``, fp32 -> 16-bit.

All three are OpenMP loops; their speed depends on the threads the launcher gives the rank
(torchrun sets ``OMP_NUM_THREADS=1`` when it starts several processes per node). Each
thread count runs in its own process with ``OMP_NUM_THREADS`` set before torch starts, so
torch's and DeepSpeedCPUAdam's OpenMP runtimes both see it.

    python validation/microbench/cpu_passes.py --output microbench_cpu_passes.json [--threads 1,4,16] \
        [--numels 134217728,1100048384]

Rows: ``{"pass", "threads", "numel", "time_s", "params_per_s"}`` (median of ``--reps``
after one warm-up); ``zsim calibrate`` reads them into the profile's ``host.cpu_*`` rates.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # run as a script, as run_all.py is
from microbench.common import time_host, write_json  # noqa: E402

#: Default sizes: a 134M-parameter partition (llama-0.13b) and tinyllama-1.1b's 1.1B.
DEFAULT_NUMELS = (1 << 27, 1_100_048_384)


def measure(numel: int, reps: int) -> list[dict]:
    """The three passes over ``numel`` fp32 parameters in this process's thread setting."""
    import torch
    from deepspeed.ops.adam import DeepSpeedCPUAdam
    threads = int(os.environ.get("OMP_NUM_THREADS", "0")) or torch.get_num_threads()
    torch.set_num_threads(threads)
    # fill_, not randn: filling 1.1e9 values with one thread takes seconds; the loops' speed
    # does not depend on the values (no branches on them, no denormals at these magnitudes)
    master = torch.empty(numel, dtype=torch.float32).fill_(0.5)
    grad = torch.empty(numel, dtype=torch.float32).fill_(1e-3)
    half = torch.empty(numel, dtype=torch.bfloat16)
    p = torch.nn.Parameter(master)
    p.grad = grad
    opt = DeepSpeedCPUAdam([p], lr=1e-4)
    passes = {"unscale": lambda: grad.mul_(1.0 / 1024.0),
              "adam": opt.step,
              "cast": lambda: half.copy_(master)}
    rows = []
    for name, fn in passes.items():
        # one warm-up: first-touch page faults, DeepSpeedCPUAdam's state allocation
        t = time_host(fn, warmup=1, reps=reps)
        rows.append({"pass": name, "threads": threads, "numel": numel, "time_s": t, "params_per_s": numel / t})
    return rows


def _child(args: argparse.Namespace) -> None:
    print(json.dumps(measure(args.numel, args.reps)))


def run(threads: list[int], numels: list[int], reps: int) -> tuple[list[dict], list[dict]]:
    """Every (threads, numel) in a fresh process: (rows, errors); a failed one is recorded
    among the errors, not fatal."""
    rows: list[dict] = []
    errors: list[dict] = []
    for t in threads:
        env = dict(os.environ, OMP_NUM_THREADS=str(t), MKL_NUM_THREADS=str(t))
        for n in numels:
            cmd = [sys.executable, __file__, "--child", "--numel", str(n), "--reps", str(reps)]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("[")]
            if proc.returncode or not lines:
                errors.append({"threads": t, "numel": n, "error": (proc.stderr or proc.stdout)[-500:]})
                continue
            rows.extend(json.loads(lines[-1]))
            print(json.dumps(rows[-3:]), flush=True)
    return rows, errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", type=Path)
    ap.add_argument("--threads", default="1,4,16")
    ap.add_argument("--numels", default=",".join(map(str, DEFAULT_NUMELS)))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--numel", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args)
        return
    import platform
    rows, errors = run([int(x) for x in args.threads.split(",")], [int(x) for x in args.numels.split(",")],
                       args.reps)
    out = {"meta": {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": platform.node(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version()},
           "cpu_passes": rows, "errors": errors}
    if args.output:
        write_json(args.output, out)
    else:
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
