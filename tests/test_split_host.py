"""split_host against a plain re-statement of its rules built with dataclasses.replace: the
same ops, field for field and in the same field order, over schedules of every stage."""

from dataclasses import replace

import pytest

from zsim.dsconfig import OffloadDevice, Overrides, build_run_config
from zsim.model import load_model
from zsim.schedule import build_schedule
from zsim.system.host import split_host


def _reference(ops):
    out, gpu_of, host_of, last_gpu, synced = [], {}, {}, None, False
    for op in ops:
        gpu_deps = tuple(sorted({gpu_of[d] for d in op.deps}))
        host_deps = {host_of[d] for d in op.deps if d in host_of}
        if (not synced and op.phase == "step" and last_gpu is not None and op.stream in ("compute", "host")
                and op.kind in ("compute", "overhead", "host_loop", "step_passes", "optimizer")):
            host_deps.add(last_gpu)
            synced = True
        if op.stream == "compute" and op.kind in ("overhead", "host_loop"):
            if op.kind == "host_loop":
                host_deps |= {gpu_of[d] for d in op.deps}
                if op.syncs and last_gpu is not None:
                    host_deps.add(last_gpu)
            out.append(replace(op, id=len(out), stream="host", deps=tuple(sorted(host_deps))))
            gpu_of[op.id] = host_of[op.id] = len(out) - 1
        elif op.kind == "compute":
            out.append(replace(op, id=len(out), stream="host", kind="dispatch", name=f"issue {op.name}",
                               deps=tuple(sorted(host_deps))))
            out.append(replace(op, id=len(out), deps=gpu_deps + (len(out) - 1,)))
            host_of[op.id], gpu_of[op.id] = len(out) - 2, len(out) - 1
            last_gpu = len(out) - 1
        else:
            out.append(replace(op, id=len(out), deps=gpu_deps))
            gpu_of[op.id] = len(out) - 1
            if op.stream == "compute":
                last_gpu = len(out) - 1
    return out


@pytest.mark.parametrize("stage,zero,extra", [
    (0, {}, {}), (1, {"offload_optimizer": OffloadDevice.CPU}, {}), (2, {"overlap_comm": False}, {"grad_accum": 2}),
    (3, {}, {"grad_accum": 2}), (3, {"offload_param": OffloadDevice.CPU, "offload_optimizer": OffloadDevice.CPU}, {}),
    (3, {"zero_quantized_gradients": True, "zero_hpz_partition_size": 8}, {"grad_accum": 3})])
def test_split_host_equals_the_reference(stage, zero, extra):
    spec = load_model("llama-2-7b")
    run = build_run_config(None, spec, 16, Overrides(stage=stage, micro_batch=1, **extra))
    run = replace(run, zero=replace(run.zero, **zero))
    ops = build_schedule(spec, run, 8).ops
    got, want = split_host(ops), _reference(ops)
    assert got == want
    assert all(list(vars(a)) == list(vars(b)) for a, b in zip(got, want))
    assert {op.kind for op in got} >= {"dispatch", "host_loop", "compute", "collective"}
