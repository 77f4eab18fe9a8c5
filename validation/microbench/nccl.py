"""all_gather / reduce_scatter / all_reduce sweep, 1 MiB to 1 GiB, nccl-tests conventions.

Launch one process per GPU::

    torchrun --standalone --nproc_per_node 8 validation/microbench/nccl.py --output nccl.json
    srun --ntasks-per-node 8 ... python validation/microbench/nccl.py   (multi-node, see README)

``bytes`` is the full buffer as nccl-tests counts it: the all_reduce buffer, the all_gather
output and the reduce_scatter input. algbw = bytes / time; busbw = algbw × 2(n-1)/n for
all_reduce and × (n-1)/n for all_gather and reduce_scatter. Time is the mean over ``--iters``
back-to-back calls, the slowest rank's. ``--backend gloo`` runs on CPU (for testing).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from microbench.common import write_json  # noqa: E402

OPS = ("all_gather", "reduce_scatter", "all_reduce")


def bus_factor(op: str, n: int) -> float:
    """nccl-tests' busbw / algbw factor."""
    if n <= 1:
        return 0.0
    return 2.0 * (n - 1) / n if op == "all_reduce" else (n - 1) / n


def sizes(min_bytes: int, max_bytes: int) -> list[int]:
    """Powers of two from min_bytes to max_bytes inclusive."""
    out, b = [], min_bytes
    while b <= max_bytes:
        out.append(b)
        b *= 2
    return out


def _call(op, dist, full, shard):
    if op == "all_reduce":
        dist.all_reduce(full)
    elif op == "all_gather":
        dist.all_gather_into_tensor(full, shard)
    else:
        dist.reduce_scatter_tensor(shard, full)


def sweep(dist, device, world: int, size_list, warmup: int, iters: int, dtype) -> list[dict]:
    """Time each op and size; every rank takes part, the returned rows are the slowest rank's."""
    import torch
    esize = torch.tensor([], dtype=dtype).element_size()
    rows = []
    for op in OPS:
        for nbytes in size_list:
            numel = max(world, nbytes // esize) // world * world
            full = torch.ones(numel, dtype=dtype, device=device)
            shard = torch.ones(numel // world, dtype=dtype, device=device)
            for _ in range(warmup):
                _call(op, dist, full, shard)
            sync(device)
            dist.barrier()
            t0 = time.perf_counter()
            for _ in range(iters):
                _call(op, dist, full, shard)
            sync(device)
            elapsed = torch.tensor([(time.perf_counter() - t0) / iters], dtype=torch.float64, device=device)
            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
            t = float(elapsed)
            real_bytes = numel * esize
            algbw = real_bytes / t / 1e9
            rows.append({"op": op, "bytes": real_bytes, "world_size": world, "time_s": t,
                         "algbw_GBps": algbw, "busbw_GBps": algbw * bus_factor(op, world)})
            del full, shard
    return rows


def sync(device) -> None:
    """Wait for the device (no-op on CPU)."""
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize()


def check_values(dist, device, world: int, dtype) -> None:
    """One small call of each op with rank-dependent data; raises if a result is wrong."""
    import torch
    r = dist.get_rank()
    full = torch.full((world * 4,), float(r + 1), dtype=dtype, device=device)
    dist.all_reduce(full)
    want = world * (world + 1) / 2
    if not torch.all(full == want):
        raise RuntimeError("all_reduce gave a wrong sum")
    shard = torch.full((4,), float(r), dtype=dtype, device=device)
    out = torch.empty(world * 4, dtype=dtype, device=device)
    dist.all_gather_into_tensor(out, shard)
    if not torch.equal(out.view(world, 4)[:, 0].cpu(), torch.arange(world, dtype=dtype)):
        raise RuntimeError("all_gather put shards in the wrong order")
    src = torch.full((world * 4,), 1.0, dtype=dtype, device=device)
    dst = torch.empty(4, dtype=dtype, device=device)
    dist.reduce_scatter_tensor(dst, src)
    if not torch.all(dst == world):
        raise RuntimeError("reduce_scatter gave a wrong sum")


def main(argv=None) -> int:
    """Check, sweep, and write the JSON (rank 0)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backend", default="nccl", choices=["nccl", "gloo"])
    p.add_argument("--min-bytes", type=int, default=1 << 20)
    p.add_argument("--max-bytes", type=int, default=1 << 30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--output", default="nccl.json")
    args = p.parse_args(argv)
    import torch
    import torch.distributed as dist
    dist.init_process_group(args.backend)
    world, rank = dist.get_world_size(), dist.get_rank()
    if args.backend == "nccl":
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    dtype = getattr(torch, args.dtype)
    check_values(dist, device, world, dtype)
    rows = sweep(dist, device, world, sizes(args.min_bytes, args.max_bytes), args.warmup, args.iters, dtype)
    if rank == 0:
        meta = {"backend": args.backend, "world_size": world, "dtype": args.dtype,
                "nodes": int(os.environ.get("SLURM_NNODES", 1)), "torch": torch.__version__,
                "nccl": ".".join(map(str, torch.cuda.nccl.version())) if args.backend == "nccl" else None}
        write_json(Path(args.output), {"meta": meta, "rows": rows})
        for r in rows:
            print(f"{r['op']:15s} {r['bytes']:>12d} B {r['time_s']*1e6:10.1f} us "
                  f"algbw {r['algbw_GBps']:8.2f} busbw {r['busbw_GBps']:8.2f} GB/s")
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
