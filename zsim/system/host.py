"""The host thread as its own stream: Python issues kernels ahead of the GPU.

Eager PyTorch runs the model's Python, DeepSpeed's hooks and the kernel launches on one host
thread, asynchronously to the GPU: the GPU can only run a kernel once the host has issued it,
and the host only waits for the GPU at synchronisation points (DeepSpeed's optimizer step
reads the gradient norm / overflow flag back). :func:`split_host` rewrites a schedule's op
list so that the engine sees this:

- every compute op becomes a ``dispatch`` op on the ``host`` stream (its kernels' launch
  cost) followed by the GPU op, which also waits for its dispatch;
- ``overhead`` and ``host_loop`` ops (hooks, bookkeeping, DeepSpeed's per-tensor loops) move
  to the ``host`` stream; a ``host_loop`` with syncs first waits for the GPU's last op
  (a synchronisation drains the queue: the host cannot run ahead past it);
- the host's first op of the optimizer step waits for the GPU's last op before it.

Dependencies are remapped so that host ops only ever wait for host ops (plus that one sync),
while GPU ops keep their data dependencies.
"""

from __future__ import annotations

from typing import Sequence

from ..ops import Op

HOST = "host"


def split_host(ops: Sequence[Op]) -> list[Op]:
    """The ops with host dispatch separated from GPU execution (see the module docstring)."""
    out: list[Op] = []
    gpu_of: dict[int, int] = {}     # old id -> new id of the op that carries its result
    host_of: dict[int, int] = {}    # old id -> new id of its host-side op (if any)
    last_gpu: int | None = None
    step_synced = False

    def add(op: Op, **changes) -> int:
        new = _moved(op, len(out), **changes)
        out.append(new)
        return new.id

    for op in ops:
        deps, kind, stream = op.deps, op.kind, op.stream
        if not deps:
            gpu_deps = host_deps = ()
        elif len(deps) == 1:   # most ops: no set and sort
            gpu_deps = (gpu_of[deps[0]],)
            h = host_of.get(deps[0])
            host_deps = () if h is None else (h,)
        else:
            gpu_deps = tuple(sorted({gpu_of[d] for d in deps}))
            host_deps = tuple(sorted({host_of[d] for d in deps if d in host_of}))
        if not step_synced and op.phase == "step" and last_gpu is not None and stream in (
                "compute", HOST) and kind in ("compute", "overhead", "host_loop", "step_passes", "optimizer"):
            # DeepSpeed's step reads the norm/overflow back: the host waits for the GPU.
            host_deps = tuple(sorted(set(host_deps) | {last_gpu}))
            step_synced = True
        if stream == "compute" and kind in ("overhead", "host_loop"):
            if kind == "host_loop":
                # The host waits for the op's own dependencies (an event it synchronises on);
                # a sync also drains the GPU queue issued before it.
                waits = {gpu_of[d] for d in deps}
                if op.syncs and last_gpu is not None:
                    waits.add(last_gpu)
                host_deps = tuple(sorted(set(host_deps) | waits))
            gpu_of[op.id] = host_of[op.id] = add(op, stream=HOST, deps=host_deps)
            continue
        if kind == "compute":
            d = add(op, stream=HOST, kind="dispatch", name=f"issue {op.name}", deps=host_deps)
            # the dispatch is newer than every op gpu_deps names: appended, the deps stay sorted
            g = add(op, deps=gpu_deps + (d,))
            host_of[op.id], gpu_of[op.id] = d, g
            last_gpu = g
            continue
        gpu_of[op.id] = add(op, deps=gpu_deps)
        if stream == "compute":
            last_gpu = gpu_of[op.id]
    return out


def _moved(op: Op, op_id: int, **changes) -> Op:
    """``op`` renumbered to ``op_id`` with ``changes`` (the host stream, a dispatch kind, deps
    of ops already moved: all valid and preceding ``op_id``, so the checks the op passed when
    it was built still hold). A shallow copy, its fields copied as ``copy.copy`` copies them,
    without ``dataclasses.replace``, which would rerun the checks for every op of the step,
    or copy's ``__reduce_ex__`` detour."""
    new = _new_op(type(op))
    fields = new.__dict__
    fields.update(op.__dict__)
    fields["id"] = op_id
    fields.update(changes)
    return new


_new_op = object.__new__
