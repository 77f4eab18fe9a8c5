"""The interface between the schedule layer and the system layer: a per-rank op list.

The schedule layer (pure data, no time) turns a model, a DeepSpeed config and a world size
into the ops that ONE representative rank issues during one optimizer step, in program
order per stream. The system layer (a SimPy simulation) runs them: each stream executes its
ops in list order; an op also waits for every op in ``deps``. Nothing here knows about time,
links or hardware; nothing in the system layer knows about ZeRO stages.

Streams (one SimPy process each):
  - ``compute``: the default CUDA stream (forward/backward kernels, and collectives that
    DeepSpeed issues on the default stream, which therefore block compute);
  - ``comm``: DeepSpeed's reduction stream (overlap_comm) and stage-3 all-gather stream;
  - ``h2d`` / ``d2h``: pinned host<->device copies (offload);
  - ``cpu``: the host optimizer (DeepSpeedCPUAdam) and other host work;
  - ``host``: the Python thread that issues everything (added by the system layer, see
    :mod:`zsim.system.host`; the schedule layer never emits it).

Kinds:
  - ``compute``: ``modules`` run their ``pass_`` ("fwd", "bwd" or "recompute");
  - ``collective``: ``collective`` is the name DeepSpeed's comms logger uses
    (all_reduce, all_gather_into_tensor, reduce_scatter_tensor, reduce, broadcast);
    ``message_bytes`` is the size the comms logger records, ``buffer_bytes`` the full buffer
    as nccl-tests counts it; ``group`` is a :class:`zsim.groups.Group`: which ranks, hence
    which links (``WORLD``, the data-parallel group; ``INTRA_NODE`` / ``INTER_NODE`` for
    ZeRO++ hpZ and qgZ); a group's label ("world", ...) is accepted and converted;
  - ``copy``: ``nbytes`` over PCIe in the stream's direction;
  - ``optimizer``: a fused Adam update of ``params`` fp32 parameters on the GPU;
  - ``step_passes``: the GPU kernels of the step's per-tensor loops over ``params`` values,
    ``nbytes`` of HBM traffic (they run while the host issues the loop, before the update);
  - ``cpu_adam``: a DeepSpeedCPUAdam update of ``params`` parameters on the host;
  - ``overhead``: fixed host-side time, ``count`` × the named overhead of the hardware profile
    (e.g. "zero3_module_hook_s");
  - ``host_loop``: one of DeepSpeed's flat per-tensor loops on the host: ``count`` aten ops
    (one launch each) and ``syncs`` host synchronisations (``.item()``, event or stream
    syncs); with ``syncs`` the host first waits for the GPU work issued before it;
  - ``cpu_pass``: a CPU-side pass over ``params`` values, ``cpu_pass`` naming which
    ("unscale", "cast"; see :mod:`zsim.hostcost`);
  - ``dispatch``: the host issuing a compute op's kernels (system layer only).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import MISSING, dataclass, field, fields
from typing import Iterable

from .groups import WORLD, Group, as_group

STREAMS = ("compute", "comm", "h2d", "d2h", "cpu", "host")
KINDS = ("compute", "collective", "copy", "optimizer", "step_passes", "cpu_adam", "cpu_pass", "overhead",
         "host_loop", "dispatch")
PASSES = ("fwd", "bwd", "recompute")
_STREAM_SET, _KIND_SET = frozenset(STREAMS), frozenset(KINDS)   # what Op's checks look in

#: comms-logger op name -> collective algorithm op (zsim.collectives).
LOGGER_TO_COLLECTIVE = {
    "all_reduce": "all_reduce",
    "all_gather_into_tensor": "all_gather",
    "all_gather": "all_gather",
    "reduce_scatter_tensor": "reduce_scatter",
    "reduce_scatter": "reduce_scatter",
    "reduce": "reduce",
    "broadcast": "broadcast",
    "all_to_all_single": "all_to_all",  # ZeRO++ qgZ
}


@dataclass(frozen=True)
class Op:
    """One operation a rank issues. See the module docstring for field meanings."""

    id: int
    stream: str
    kind: str
    name: str
    deps: tuple[int, ...] = ()
    micro_step: int = 0
    phase: str = ""                     # "forward", "backward" or "step": for the breakdown
    # compute
    modules: tuple[str, ...] = ()
    pass_: str = ""
    # collective
    collective: str = ""
    message_bytes: int = 0
    buffer_bytes: int = 0
    group: Group = WORLD
    # copy / optimizer / cpu_adam / overhead
    nbytes: int = 0
    params: int = 0
    overhead: str = ""
    count: int = 1
    syncs: int = 0                      # host_loop: host synchronisations
    pageable: bool = False              # copy: to/from pageable (not pinned) host memory
    cpu_pass: str = ""                  # cpu_pass: which pass

    def __post_init__(self) -> None:
        # Internal invariants of the schedule layer, not user input: fail loudly.
        if self.stream not in _STREAM_SET:
            raise ValueError(f"op {self.name}: unknown stream {self.stream!r}")
        if self.kind not in _KIND_SET:
            raise ValueError(f"op {self.name}: unknown kind {self.kind!r}")
        if self.deps and max(self.deps) >= self.id:
            raise ValueError(f"op {self.name}: deps must precede the op")
        if not isinstance(self.group, Group):
            # A group label from before groups were descriptors ("world", "intra_node", ...).
            object.__setattr__(self, "group", as_group(self.group))


_REQUIRED = object()   # a field :func:`_built` was not given and that has no default
#: Every field of :class:`Op` in declaration order, with its default (``_REQUIRED``: none).
_OP_TEMPLATE = {f.name: _REQUIRED if f.default is MISSING else f.default for f in fields(Op)}
_new_op = object.__new__


def _built(op_id: int, given: dict) -> Op:
    """``Op(id=op_id, **given)`` with the same checks, without the frozen dataclass's
    ``__init__``, which sets each of the 20 fields through ``object.__setattr__``: a ZeRO-3
    step of a 70B model is 10,000-40,000 ops and a search builds dozens (measured: 2.9 against
    1.5 µs per op). Every default is immutable, so the template's values are shared safely."""
    op = _new_op(Op)
    values = op.__dict__
    values.update(_OP_TEMPLATE)   # first, so the fields keep their declared order
    values.update(given)
    values["id"] = op_id
    if len(values) != len(_OP_TEMPLATE):
        unknown = sorted(set(given) - set(_OP_TEMPLATE))
        raise TypeError(f"op {given.get('name')!r}: unknown field(s) {unknown}")
    if _REQUIRED in (values["stream"], values["kind"], values["name"]):
        raise TypeError(f"op {given.get('name')!r}: stream, kind and name are required")
    op.__post_init__()
    return op


@dataclass
class OpList:
    """An append-only op list that hands out ids; the schedule layer builds one per step."""

    ops: list[Op] = field(default_factory=list)

    def add(self, **fields) -> int:
        """Append an op built from ``fields`` and return its id."""
        return self.add_fields(fields)

    def add_fields(self, fields: dict) -> int:
        """:meth:`add` of a dict of fields the caller built (and does not use again): an
        emitter fills one per op instead of passing them on as keywords, a second dict."""
        ops = self.ops
        op = _built(len(ops), fields)
        ops.append(op)
        return op.id

    def last_on(self, stream: str) -> int | None:
        """Id of the last op on ``stream`` (None when the stream is empty)."""
        for op in reversed(self.ops):
            if op.stream == stream:
                return op.id
        return None


def collectives_summary(ops: Iterable[Op]) -> dict[str, dict[str, int]]:
    """``{logger_op: {str(message_bytes): count}}`` as DeepSpeed's comms logger counts them."""
    counts: Counter[tuple[str, int]] = Counter(
        (op.collective, op.message_bytes) for op in ops if op.kind == "collective")
    out: dict[str, dict[str, int]] = {}
    for (name, size), n in sorted(counts.items()):
        out.setdefault(name, {})[str(size)] = n
    return out
