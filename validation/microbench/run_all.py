"""Run the single-GPU microbenchmarks and write one JSON file (rewritten after each section).

    python validation/microbench/run_all.py --output microbench.json [--skip cpu_adam,...]

Sections: gemm, gemm_fp32, attention, membound, membound_sizes, step_passes, layer, checkpoint,
hostcopy, fused_adam, cpu_adam. A section that fails is
recorded with its error and the others still run. The NCCL sweep needs several GPUs and is
launched separately (nccl.py).
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from microbench import adam, attention, checkpoint, gemm, hostcopy, layer, membound  # noqa: E402
from microbench.common import write_json  # noqa: E402

SECTIONS = {"gemm": gemm.run, "gemm_fp32": lambda: gemm.run(dtype="fp32"),
            "attention": attention.run, "membound": membound.run, "membound_sizes": membound.run_sizes,
            "step_passes": membound.run_step_passes, "layer": layer.run, "checkpoint": lambda: [checkpoint.run()],
            "hostcopy": hostcopy.run, "fused_adam": adam.fused_adam, "cpu_adam": adam.cpu_adam}


def meta() -> dict:
    """Versions, GPU and date of this measurement."""
    import torch
    out = {"date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
           "gpu_name": torch.cuda.get_device_name(0),
           "gpu_total_memory_bytes": torch.cuda.get_device_properties(0).total_memory}
    try:
        import deepspeed
        out["deepspeed"] = deepspeed.__version__
    except Exception as exc:
        out["deepspeed"] = f"unavailable: {exc!r}"
    try:
        out["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                       capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:
        out["driver"] = None
    return out


def main(argv=None) -> int:
    """Run each section in turn, rewriting the JSON after each."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output", default="microbench.json")
    p.add_argument("--skip", default="", help="comma-separated sections to skip")
    args = p.parse_args(argv)
    skip = {s for s in args.skip.split(",") if s}
    data = {"meta": meta(), "errors": {}, "seconds": {}}
    for name, fn in SECTIONS.items():
        if name in skip:
            continue
        t0 = time.perf_counter()
        try:
            data[name] = fn()
        except Exception as exc:  # one failing section must not lose the others
            data["errors"][name] = f"{exc!r}\n{traceback.format_exc()[-1500:]}"
        data["seconds"][name] = time.perf_counter() - t0
        write_json(Path(args.output), data)
        print(f"[microbench] {name}: {data['seconds'][name]:.1f}s {'ERROR' if name in data['errors'] else 'ok'}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
