"""Measured vs predicted, row by row: phase wall times and per-phase, per-stream times."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..defaults import DEFAULT_PROFILE, DEFAULT_RUN_TOPO
from ..errors import ZsimInputError
from .cells import PHASES, STREAMS, Cell, OpTime, Side, Window
from .measured import measure_summary, measure_trace
from .predicted import predict_run, predicted_side
from .trace import KinetoTrace, load_trace

#: The trace file validation/train.py --profile writes, when summary.json does not name one.
DEFAULT_TRACE = "trace.json.gz"
NO_TRACE_NOTE = ("no trace in this run folder: comparing per-phase times from summary.json / "
                 "raw_metrics.json only (record one with validation/train.py --profile)")


@dataclass(frozen=True)
class GapRow:
    """One measured/predicted pair; ``stream`` "wall" is a phase's elapsed time.

    ``micro_step`` None means summed over micro-steps (or the whole step for phase "total").
    ``reference_s`` is the median over the run's timed steps (summary.json) where the
    measured value comes from the one traced step.
    """

    phase: str
    micro_step: int | None
    stream: str
    measured_s: float | None
    predicted_s: float | None
    measured_ops: tuple[OpTime, ...] = ()
    predicted_ops: tuple[OpTime, ...] = ()
    reference_s: float | None = None

    @property
    def gap_s(self) -> float | None:
        """Predicted minus measured seconds (None when either side is missing)."""
        if self.measured_s is None or self.predicted_s is None:
            return None
        return self.predicted_s - self.measured_s

    @property
    def gap_pct(self) -> float | None:
        """The gap relative to the measured value, in percent."""
        gap = self.gap_s
        return None if gap is None or not self.measured_s else 100 * gap / self.measured_s

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready row."""
        ops = lambda xs: [{"name": o.name, "time_s": o.time_s, "count": o.count} for o in xs]  # noqa: E731
        return {"phase": self.phase, "micro_step": self.micro_step, "stream": self.stream,
                "measured_s": self.measured_s, "predicted_s": self.predicted_s, "gap_s": self.gap_s,
                "gap_pct": self.gap_pct, "reference_s": self.reference_s,
                "measured_ops": ops(self.measured_ops), "predicted_ops": ops(self.predicted_ops)}


@dataclass(frozen=True)
class Diagnosis:
    """A run's measurement beside zsim's prediction of its configuration."""

    run_id: str
    path: Path
    config: Mapping[str, Any]
    trace_path: Path | None
    measured: Side
    predicted: Side
    phases: tuple[GapRow, ...]          # wall time per phase (and the whole step), step order
    micro_steps: tuple[GapRow, ...]     # wall time per phase and micro-step, step order
    streams: tuple[GapRow, ...]         # per phase and stream (summed over micro-steps), largest gap first
    micro_streams: tuple[GapRow, ...]   # per phase, micro-step and stream, largest gap first
    notes: tuple[str, ...] = field(default_factory=tuple)
    trace: KinetoTrace | None = field(default=None, repr=False, compare=False)
    timeline: Any = field(default=None, repr=False, compare=False)

    @property
    def has_trace(self) -> bool:
        """True when the measured side comes from a profiler trace."""
        return self.trace_path is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (what ``zsim diagnose --json`` prints)."""
        rows = lambda xs: [r.to_dict() for r in xs]  # noqa: E731
        return {"run_id": self.run_id, "path": str(self.path), "config": dict(self.config),
                "has_trace": self.has_trace, "trace": str(self.trace_path) if self.trace_path else None,
                "measured_source": self.measured.source,
                "measured_step_time_s": self.measured.step_time_s,
                "predicted_step_time_s": self.predicted.step_time_s,
                "phases": rows(self.phases), "micro_steps": rows(self.micro_steps),
                "streams": rows(self.streams), "micro_streams": rows(self.micro_streams),
                "notes": list(self.notes)}


def merge_ops(groups: Iterable[Sequence[OpTime]], limit: int = 5) -> tuple[OpTime, ...]:
    """Op totals of several cells added up by name, the ``limit`` largest first."""
    time: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for ops in groups:
        for o in ops:
            time[o.name] += o.time_s
            count[o.name] += o.count
    return tuple(OpTime(n, time[n], count[n]) for n in sorted(time, key=lambda n: (-time[n], n))[:limit])


def _by_gap(rows: Iterable[GapRow]) -> tuple[GapRow, ...]:
    return tuple(sorted(rows, key=lambda r: (-abs(r.gap_s or 0.0), _order(r))))


def _order(r: GapRow) -> tuple:
    return (PHASES.index(r.phase) if r.phase in PHASES else -1, -1 if r.micro_step is None else r.micro_step,
            STREAMS.index(r.stream) if r.stream in STREAMS else -1)


def _phase_total(side: Side, phase: str) -> float | None:
    explicit = [w.wall_s for w in side.windows if w.phase == phase and w.micro_step is None]
    if explicit:
        return explicit[0]
    parts = [w.wall_s for w in side.windows if w.phase == phase]
    return sum(parts) if parts else None


def _micro(side: Side) -> dict[tuple[str, int], float]:
    return {(w.phase, w.micro_step): w.wall_s for w in side.windows if w.micro_step is not None}


def phase_rows(meas: Side, pred: Side, ref: Side | None) -> tuple[GapRow, ...]:
    """The whole step, then each phase's wall time summed over micro-steps."""
    ref_total = lambda p: _phase_total(ref, p) if ref else None  # noqa: E731
    rows = [GapRow("total", None, "wall", meas.step_time_s, pred.step_time_s,
                   reference_s=ref.step_time_s if ref else None)]
    for p in PHASES[:3]:
        rows.append(GapRow(p, None, "wall", _phase_total(meas, p), _phase_total(pred, p),
                           reference_s=ref_total(p)))
    return tuple(rows)


def micro_rows(meas: Side, pred: Side, ref: Side | None) -> tuple[GapRow, ...]:
    """Each phase of each micro-step, in step order."""
    m, p, r = _micro(meas), _micro(pred), _micro(ref) if ref else {}
    keys = sorted(set(m) | set(p), key=lambda k: (k[1], PHASES.index(k[0])))
    return tuple(GapRow(k[0], k[1], "wall", m.get(k), p.get(k), reference_s=r.get(k)) for k in keys)


def _cells(side: Side) -> dict[tuple[str, int | None, str], Cell]:
    return {(c.phase, c.micro_step, c.stream): c for c in side.cells}


def stream_rows(meas: Side, pred: Side, per_micro: bool) -> tuple[GapRow, ...]:
    """Per phase and stream (per micro-step too when ``per_micro``), largest gap first."""
    groups: dict[tuple, list[list[Cell]]] = defaultdict(lambda: [[], []])
    for i, side in enumerate((meas, pred)):
        for c in side.cells:
            groups[(c.phase, c.micro_step if per_micro else None, c.stream)][i].append(c)
    rows = []
    for (phase, micro, stream), (mc, pc) in groups.items():
        rows.append(GapRow(phase, micro, stream, sum(c.time_s for c in mc), sum(c.time_s for c in pc),
                           merge_ops(c.ops for c in mc), merge_ops(c.ops for c in pc)))
    return _by_gap(rows)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ZsimInputError(f"file not found: {path}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ZsimInputError(f"cannot read JSON file {path}: {exc.__class__.__name__}") from None


def _raw_rows(folder: Path) -> list[Mapping[str, Any]]:
    path = folder / "raw_metrics.json"
    if not path.exists():
        return []
    data = _read_json(path)
    rows = data.get("rows") if isinstance(data, Mapping) else None
    return [r for r in rows if isinstance(r, Mapping)] if isinstance(rows, list) else []


def trace_file(folder: Path, summary: Mapping[str, Any]) -> Path | None:
    """The run's trace: the one summary.json's ``profile.file`` names, else trace.json.gz."""
    prof = summary.get("profile") if isinstance(summary.get("profile"), Mapping) else {}
    name = prof.get("file") if isinstance(prof.get("file"), str) else DEFAULT_TRACE
    path = folder / name
    return path if path.is_file() else None


def _config(summary: Mapping[str, Any], run) -> dict[str, Any]:
    keys = ("zero_stage", "precision", "offload_optimizer", "offload_param")
    out = {"model": run.model_name, "world_size": run.world_size, "seq": run.seq,
           "micro_batch": run.micro_batch, "grad_accum": run.grad_accum,
           "activation_checkpointing": run.activation_checkpointing}
    out.update({k: summary.get(k) for k in keys if k in summary})
    return out


def load_folder(run_dir: str | Path):
    """(RunResult, summary dict) of a run folder; bad folders raise ZsimInputError."""
    from ..calibrate import load_run

    folder = Path(run_dir)
    if not folder.is_dir():
        raise ZsimInputError(f"run folder not found: {folder}")
    summary = _read_json(folder / "summary.json")
    if not isinstance(summary, Mapping):
        raise ZsimInputError(f"{folder / 'summary.json'} is not a JSON object")
    run = load_run(folder)
    if run.status != "ok" or not run.step_time_s:
        raise ZsimInputError(f"run {run.run_id} has status {run.status!r} and no step time: nothing to diagnose")
    for p in (run.config_path, run.ds_config_path):
        if not p.is_file():
            raise ZsimInputError(f"run folder {folder} lacks {p.name}")
    return run, summary


def diagnose(run_dir: str | Path, *, hardware: str | Path | None = DEFAULT_PROFILE, topo: str = DEFAULT_RUN_TOPO,
             use_trace: bool = True) -> Diagnosis:
    """Measured vs predicted for the run folder ``run_dir`` (see the package docstring)."""
    run, summary = load_folder(run_dir)
    folder = Path(run_dir)
    ref = measure_summary(summary, _raw_rows(folder))
    tpath = trace_file(folder, summary) if use_trace else None
    trace = load_trace(tpath) if tpath else None
    meas = measure_trace(trace) if trace else ref
    pred = predict_run(run, hardware, topo)
    predicted = predicted_side(pred)
    notes = list(meas.notes) + list(predicted.notes) + ([] if trace else [NO_TRACE_NOTE])
    cells = trace is not None
    return Diagnosis(
        run_id=run.run_id, path=folder, config=_config(summary, run), trace_path=tpath,
        measured=meas, predicted=predicted,
        phases=phase_rows(meas, predicted, ref if trace else None),
        micro_steps=micro_rows(meas, predicted, ref if trace else None),
        streams=stream_rows(meas, predicted, per_micro=False) if cells else (),
        micro_streams=stream_rows(meas, predicted, per_micro=True) if cells else (),
        notes=tuple(notes), trace=trace, timeline=pred.timeline)
