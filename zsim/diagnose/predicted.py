"""The predicted side: zsim's simulated timeline of the run's own configuration, per phase.

Each span of the timeline is one op of the schedule (after :func:`zsim.system.split_host`);
the op carries its ``phase`` and ``micro_step``. Phase windows are timed the way train.py's
CUDA events time them: a boundary passes once the host has issued it (the first host op of
the next phase) and the GPU has finished all work of earlier phases. host_wait is the part of
a window the simulated host thread sits idle.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from ..calibrate import RunResult, predict_run as predict_for_run
from ..errors import ZsimInputError
from ..ops import Op
from ..predict import Prediction
from ..system import Span, Timeline
from .cells import Side, Window, build_cells, interval_union_s

_STREAM_OF = {"host": "host_busy", "cpu": "cpu_optimizer", "h2d": "copy_h2d", "d2h": "copy_d2h"}


def predict_run(run: RunResult, hardware, topo: str) -> Prediction:
    """The prediction `zsim validate` makes for ``run``, with its timeline kept."""
    return predict_for_run(run, hardware, topo, keep_timeline=True)


def stream_of(span: Span) -> str:
    """The diagnosis stream of a simulated span."""
    if span.stream in _STREAM_OF:
        return _STREAM_OF[span.stream]
    return "comm" if span.category.startswith("comm:") else "compute"


def _phase_of(spans: Sequence[Span], ops: Sequence[Op]) -> dict[int, tuple[str, int]]:
    out = {}
    for s in spans:
        op = ops[s.op_id] if 0 <= s.op_id < len(ops) else None
        if op is None or op.name != s.name or op.stream != s.stream:
            raise ZsimInputError("the simulated timeline does not match the schedule's ops "
                                 "(zsim's schedule and simulation disagree); cannot split it per phase")
        out[s.op_id] = (op.phase if op.phase in ("forward", "backward", "step") else "other", op.micro_step)
    return out


def _windows(tl: Timeline, phase: dict[int, tuple[str, int]]) -> list[tuple[float, float, str, int]]:
    first: dict[tuple[str, int], float] = {}
    first_host: dict[tuple[str, int], float] = {}
    for s in tl.spans:
        key = phase[s.op_id]
        if key[0] == "other":
            continue
        first[key] = min(first.get(key, s.start_s), s.start_s)
        if s.stream == "host":
            first_host[key] = min(first_host.get(key, s.start_s), s.start_s)
    starts = sorted((first_host.get(k, t), k) for k, t in first.items())
    order = {k: i for i, (_, k) in enumerate(starts)}
    gpu_end = [0.0] * len(starts)
    for s in tl.spans:
        if s.stream != "host" and phase[s.op_id] in order:
            i = order[phase[s.op_id]]
            gpu_end[i] = max(gpu_end[i], s.end_s)
    # A boundary passes when the host has issued it and the GPU has drained all earlier work.
    bounds, drained = [], 0.0
    for i in range(len(starts)):
        drained = max(drained, gpu_end[i])
        host = starts[i + 1][0] if i + 1 < len(starts) else tl.step_time_s
        bounds.append(max(host, drained, bounds[-1] if bounds else 0.0))
    lows = [starts[0][0] if starts else 0.0] + bounds[:-1]
    return [(lo, hi, k[0], k[1]) for lo, hi, (_, k) in zip(lows, bounds, starts)]


def predicted_side(pred: Prediction, ops: Sequence[Op] | None = None) -> Side:
    """Per-phase windows and per-stream cells of the simulated step (``ops``: the simulated
    ops, default the ones the prediction kept with its timeline)."""
    tl = pred.timeline
    ops = pred.ops if ops is None else ops
    if tl is None or ops is None:
        raise ZsimInputError("prediction has no timeline (predict(..., keep_timeline=True))")
    phase = _phase_of(tl.spans, ops)
    items = [(*phase[s.op_id], stream_of(s), s.name, s.end_s - s.start_s) for s in tl.spans]
    host = defaultdict(list)
    for s in tl.spans:
        if s.stream == "host":
            host[phase[s.op_id]].append(s)
    windows = []
    for lo, hi, p, m in _windows(tl, phase):
        windows.append(Window(p, m, hi - lo, lo))
        busy = interval_union_s((max(s.start_s, lo), min(s.end_s, hi)) for s in host[(p, m)])
        if hi - lo - busy > 0:
            items.append((p, m, "host_wait", "(host idle: waiting for the GPU or a dependency)", hi - lo - busy))
    framework = pred.step_time_s - tl.step_time_s
    notes = [f"zsim's step includes {framework * 1e3:.3f} ms of per-step/per-micro-step framework "
             "overhead outside the simulated ops"] if framework > 0 else []
    return Side(source="zsim", step_time_s=pred.step_time_s, windows=tuple(windows),
                cells=build_cells(items), notes=tuple(notes))


def predicted_phases(run: RunResult, hardware, topo: str) -> tuple[Prediction, dict[str, float]]:
    """The prediction for ``run`` and its forward/backward/step wall times per optimizer
    step (summed over micro-steps, windows timed as train.py's CUDA events time them)."""
    pred = predict_run(run, hardware, topo)
    side = predicted_side(pred)
    out: dict[str, float] = {}
    for w in side.windows:
        if w.phase in ("forward", "backward", "step"):
            out[w.phase] = out.get(w.phase, 0.0) + w.wall_s
    return pred, out
