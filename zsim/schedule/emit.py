"""A thin op builder over :class:`zsim.ops.OpList` shared by the stage modules.

Keeps the bookkeeping the stages have in common: the current micro-step and phase, and
``wait_for``: ops the compute stream must wait for before its next op (DeepSpeed's
``current_stream().wait_stream(reduction_stream)``), attached as deps to the next compute-
stream op. :class:`NullEmitter` takes the same calls and records nothing: the stage-3 replay
runs its history steps through it. :class:`CountingEmitter` hands out the ids an
:class:`Emitter` would but builds no op: the stage-3 size facts without the schedule.
"""

from __future__ import annotations

from ..groups import WORLD, Group
from ..ops import OpList


class Emitter:
    """Appends ops for one representative rank; see the module docstring."""

    def __init__(self, world_size: int):
        self.ops = OpList()
        self.world_size = world_size
        self.micro = 0
        self.phase = "forward"
        self.wait_for: list[int] = []
        self.last_compute: int | None = None

    def _deps(self, stream: str, deps) -> tuple[int, ...]:
        if stream == "compute" and self.wait_for:
            out = {d for d in deps if d is not None}
            out.update(self.wait_for)
            self.wait_for = []
            return tuple(sorted(out))
        if not deps:
            return ()       # most ops (a module's compute in program order)
        return tuple(sorted({d for d in deps if d is not None}))

    def add(self, stream: str, kind: str, name: str, deps=(), **fields) -> int:
        """Append one op on ``stream`` in the current micro-step and phase.

        A ``host_loop`` (host-only work, moved to the host stream by the system layer)
        neither takes the compute stream's pending waits nor becomes its last op: GPU work
        after it must still wait for, and depend on, the GPU ops."""
        host_only = kind == "host_loop"
        fields["stream"], fields["kind"], fields["name"] = stream, kind, name
        fields["deps"] = (tuple(sorted(d for d in set(deps) if d is not None)) if host_only
                          else self._deps(stream, deps))
        fields["micro_step"], fields["phase"] = self.micro, self.phase
        op_id = self.ops.add_fields(fields)   # ``fields`` is this call's own dict
        if stream == "compute" and not host_only:
            self.last_compute = op_id
        return op_id

    def compute(self, module: str, pass_: str) -> int:
        """One module's forward, backward or recomputation on the compute stream."""
        return self.add("compute", "compute", f"{pass_}:{module}", modules=(module,), pass_=pass_)

    def collective(self, name: str, collective: str, message_bytes: int, *, stream: str = "compute",
                   deps=(), group: Group = WORLD, buffer_bytes: int | None = None) -> int:
        """A collective as the comms logger records it; ``buffer_bytes`` defaults to the
        full buffer implied by the op (all_gather_into_tensor: message × group size)."""
        if buffer_bytes is None:
            buffer_bytes = message_bytes * (self.world_size if collective == "all_gather_into_tensor"
                                            else 1)
        return self.add(stream, "collective", name, deps, collective=collective,
                        message_bytes=int(message_bytes), buffer_bytes=int(buffer_bytes), group=group)


class NullEmitter(Emitter):
    """An emitter that records nothing: every op it is asked for has no id (None), which
    every emitting call accepts as "no dependency". The stage-3 replay runs the steps
    before the emitted one through it, so that its bookkeeping follows the same code path."""

    def add(self, stream: str, kind: str, name: str, deps=(), **fields) -> None:
        """Record nothing; pending compute waits are dropped as the next compute op would."""
        self.wait_for.clear()
        return None

    # The two calls the stage-3 history makes most, short-circuited: nothing to build.
    def compute(self, module: str, pass_: str) -> None:
        """Record nothing (see :meth:`add`)."""
        self.wait_for.clear()
        return None

    def collective(self, name: str, collective: str, message_bytes: int, *, stream: str = "compute",
                   deps=(), group: Group = WORLD, buffer_bytes: int | None = None) -> None:
        """Record nothing (see :meth:`add`)."""
        self.wait_for.clear()
        return None


class CountingEmitter(Emitter):
    """An emitter that numbers ops as :class:`Emitter` does but keeps none of them.

    The stage-3 replay's size facts depend on which gathers share a handle (an op id), never
    on an op's fields, so replaying the emitted step through this emitter gives the facts of
    the built schedule without building its ops (a search asks the memory of many ZeRO-3
    settings). ``ops`` stays empty: nothing may read the ops back."""

    def __init__(self, world_size: int):
        super().__init__(world_size)
        self.count = 0

    def add(self, stream: str, kind: str, name: str, deps=(), **fields) -> int:
        """The id :meth:`Emitter.add` would return; the compute stream's pending waits and
        last op are kept as it keeps them."""
        op_id = self.count
        self.count += 1
        if stream == "compute" and kind != "host_loop":
            self.wait_for = []
            self.last_compute = op_id
        return op_id
