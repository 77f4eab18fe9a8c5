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


#: The kinds and streams of the op the host's step sync goes before (see the module docstring).
_SYNC_KINDS = frozenset({"compute", "overhead", "host_loop", "step_passes", "optimizer"})
_SYNC_STREAMS = frozenset({"compute", HOST})


def split_host(ops: Sequence[Op]) -> list[Op]:
    """The ops with host dispatch separated from GPU execution (see the module docstring)."""
    out: list[Op] = []
    gpu_of: dict[int, int] = {}     # old id -> new id of the op that carries its result
    host_of: dict[int, int] = {}    # old id -> new id of its host-side op (if any)
    last_gpu: int | None = None
    step_synced = False
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
        if (not step_synced and last_gpu is not None and op.phase == "step" and stream in _SYNC_STREAMS
                and kind in _SYNC_KINDS):
            # DeepSpeed's step reads the norm/overflow back: the host waits for the GPU.
            host_deps = tuple(sorted(set(host_deps) | {last_gpu}))
            step_synced = True
        new_id = len(out)
        if stream == "compute" and (kind == "overhead" or kind == "host_loop"):
            if kind == "host_loop":
                # The host waits for the op's own dependencies (an event it synchronises on);
                # a sync also drains the GPU queue issued before it.
                waits = {gpu_of[d] for d in deps}
                if op.syncs and last_gpu is not None:
                    waits.add(last_gpu)
                host_deps = tuple(sorted(set(host_deps) | waits))
            out.append(_moved(op, new_id, host_deps, HOST))
            gpu_of[op.id] = host_of[op.id] = new_id
            continue
        if kind == "compute":
            out.append(_dispatch(op, new_id, host_deps))
            # the dispatch is newer than every op gpu_deps names: appended, the deps stay sorted
            out.append(_moved(op, new_id + 1, gpu_deps + (new_id,)))
            host_of[op.id], gpu_of[op.id] = new_id, new_id + 1
            last_gpu = new_id + 1
            continue
        out.append(_moved(op, new_id, gpu_deps))
        gpu_of[op.id] = new_id
        if stream == "compute":
            last_gpu = new_id
    return out


def _moved(op: Op, op_id: int, deps: tuple[int, ...], stream: str | None = None) -> Op:
    """``op`` renumbered to ``op_id`` with ``deps`` (and moved to ``stream``): deps of ops
    already moved, all valid and preceding ``op_id``, and a valid stream, so the checks the
    op passed when it was built still hold. A shallow copy, its fields copied as
    ``copy.copy`` copies them, without ``dataclasses.replace``, which would rerun the checks
    for every op of the step, or copy's ``__reduce_ex__`` detour."""
    new = _new_op(type(op))
    fields = new.__dict__
    fields.update(op.__dict__)
    fields["id"], fields["deps"] = op_id, deps
    if stream is not None:
        fields["stream"] = stream
    return new


def _dispatch(op: Op, op_id: int, deps: tuple[int, ...]) -> Op:
    """The host's issue of compute op ``op``'s kernels: ``op`` moved to the host stream as a
    ``dispatch`` op named after it (see :func:`_moved`)."""
    new = _moved(op, op_id, deps, HOST)
    fields = new.__dict__
    fields["kind"], fields["name"] = "dispatch", f"issue {op.name}"
    return new


_new_op = object.__new__
