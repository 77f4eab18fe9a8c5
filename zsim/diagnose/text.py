"""The table `zsim diagnose` prints."""

from __future__ import annotations

from typing import Sequence

from .cells import STREAM_HELP, OpTime
from .compare import Diagnosis, GapRow

#: Stream rows the text shows (all of them are in --json).
TEXT_ROWS = 12


def ms(sec: float | None) -> str:
    """Seconds as milliseconds with three decimals, "-" for None."""
    return "-" if sec is None else f"{sec * 1e3:.3f}"


def _gap(r: GapRow) -> str:
    if r.gap_s is None:
        return f"{'-':>10s} {'':>7s}"
    pct = "" if r.gap_pct is None else f"{r.gap_pct:+.0f}%"
    return f"{r.gap_s * 1e3:+10.3f} {pct:>7s}"


def _label(r: GapRow) -> str:
    return r.phase if r.micro_step is None else f"{r.phase} {r.micro_step}"


def _ops(ops: Sequence[OpTime], limit: int = 3) -> str:
    if not ops:
        return "(none)"
    return ", ".join(f"{o.name} {o.time_s * 1e3:.3f} ms x{o.count}" for o in ops[:limit])


def _wall_table(rows: Sequence[GapRow], with_ref: bool) -> list[str]:
    head = f"{'phase':14s} {'measured':>10s} {'zsim':>10s} {'gap':>10s} {'':>7s}"
    lines = [head + (f" {'median of timed steps':>22s}" if with_ref else "")]
    for r in rows:
        line = f"{_label(r):14s} {ms(r.measured_s):>10s} {ms(r.predicted_s):>10s} {_gap(r)}"
        lines.append(line + (f" {ms(r.reference_s):>22s}" if with_ref else ""))
    return lines


def _stream_table(rows: Sequence[GapRow]) -> list[str]:
    lines = [f"{'phase':10s} {'stream':14s} {'measured':>10s} {'zsim':>10s} {'gap':>10s}"]
    for r in rows[:TEXT_ROWS]:
        lines.append(f"{_label(r):10s} {r.stream:14s} {ms(r.measured_s):>10s} {ms(r.predicted_s):>10s} {_gap(r)}")
        lines.append(f"    measured: {_ops(r.measured_ops)}")
        lines.append(f"    zsim:     {_ops(r.predicted_ops)}")
    if len(rows) > TEXT_ROWS:
        lines.append(f"... {len(rows) - TEXT_ROWS} smaller gaps (and per micro-step rows) in --json")
    return lines


def format_diagnosis(d: Diagnosis) -> str:
    """Header, phase wall times, per-micro-step times and (with a trace) the stream gaps."""
    c = d.config
    lines = [f"zsim diagnose {d.run_id}: {c.get('model')}, ZeRO-{c.get('zero_stage', '?')}, "
             f"{c.get('world_size')} GPU(s), micro-batch {c.get('micro_batch')}, grad-accum "
             f"{c.get('grad_accum')}, seq {c.get('seq')}",
             f"measured: {'trace ' + d.trace_path.name + ' (one optimizer step)' if d.has_trace else 'summary.json medians (no trace)'}"
             "; times in ms; gap = zsim - measured"]
    lines += [f"note: {n}" for n in d.notes]
    lines += ["", "per phase (wall time, summed over micro-steps)"] + _wall_table(d.phases, d.has_trace)
    if any(r.measured_s is not None for r in d.micro_steps):
        lines += ["", "per micro-step"] + _wall_table(d.micro_steps, d.has_trace)
    if d.streams:
        lines += ["", "per phase and stream, largest gap first"] + _stream_table(d.streams)
        lines += ["", "streams: " + "; ".join(f"{k} = {v}" for k, v in STREAM_HELP.items())]
    return "\n".join(lines)
