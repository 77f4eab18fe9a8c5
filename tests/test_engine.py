"""The SimPy engine: invariants over random op graphs (hypothesis) and small exact cases."""

from hypothesis import given, settings, strategies as st

from zsim.ops import OpList
from zsim.system import OpCost, simulate

STREAMS = ["compute", "comm", "h2d", "cpu"]


@st.composite
def op_graphs(draw):
    n = draw(st.integers(1, 40))
    ops = OpList()
    durations = []
    for i in range(n):
        stream = draw(st.sampled_from(STREAMS))
        deps = tuple(sorted(set(draw(st.lists(st.integers(0, i - 1), max_size=3))))) if i else ()
        kind = "compute" if stream == "compute" else "collective" if stream == "comm" else "copy"
        ops.add(stream=stream, kind=kind, name=f"op{i}", deps=deps, modules=("m",), pass_="fwd",
                collective="all_reduce" if kind == "collective" else "")
        durations.append(draw(st.floats(0.0, 5.0)))
    return ops.ops, durations


def _cost(durations):
    def cost(op):
        cat = {"compute": "compute", "comm": "comm:nvlink"}.get(op.stream, "copy:h2d")
        return OpCost(durations[op.id], cat)
    return cost


@settings(max_examples=200, deadline=None)
@given(op_graphs())
def test_invariants(graph):
    ops, durations = graph
    t = simulate(ops, _cost(durations))
    compute_total = sum(d for op, d in zip(ops, durations) if op.stream == "compute")
    comm_total = sum(d for op, d in zip(ops, durations) if op.stream == "comm")
    # The step is at least the compute critical path and at least any stream's busy time.
    assert t.step_time_s >= compute_total - 1e-9
    for s in STREAMS:
        assert t.step_time_s >= sum(d for op, d in zip(ops, durations) if op.stream == s) - 1e-9
    # Exposed communication never exceeds the communication that ran.
    assert t.exposed_s.get("comm:nvlink", 0.0) <= comm_total + 1e-9
    # Compute-stream accounting covers the whole step exactly.
    assert abs(sum(t.exposed_s.values()) - t.step_time_s) < 1e-6
    # Dependencies are honoured and streams run one op at a time.
    start = {s.op_id: s.start_s for s in t.spans}
    end = {s.op_id: s.end_s for s in t.spans}
    for op in ops:
        for d in op.deps:
            assert start[op.id] >= end[d] - 1e-12
    for s in STREAMS:
        spans = sorted((x for x in t.spans if x.stream == s), key=lambda x: x.start_s)
        for a, b in zip(spans, spans[1:]):
            assert b.start_s >= a.end_s - 1e-12


def test_overlap_hides_communication():
    ops = OpList()
    a = ops.add(stream="compute", kind="compute", name="f1", modules=("m",), pass_="fwd")
    b = ops.add(stream="comm", kind="collective", name="ar", deps=(a,), collective="all_reduce")
    ops.add(stream="compute", kind="compute", name="f2", modules=("m",), pass_="fwd")
    ops.add(stream="compute", kind="compute", name="f3", deps=(b,), modules=("m",), pass_="fwd")
    t = simulate(ops.ops, lambda op: OpCost(1.0, "compute") if op.kind == "compute"
                 else OpCost(3.0, "comm:nvlink"))
    # ar runs 1..4 beside f2 (1..2); f3 waits 2..4: two of the three comm seconds are exposed.
    assert t.step_time_s == 5.0
    assert t.exposed_s == {"comm:nvlink": 2.0, "compute": 3.0}
