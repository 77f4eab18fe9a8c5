"""`zsim validate`: measured vs predicted step time, peak memory and collective times.

For every run folder written by ``validation/train.py`` it predicts the same configuration
and reports the relative error; runs whose status is not "ok" are listed as skipped, never
compared. When the hardware profile records its calibration split (``calibration.fit_runs``),
each run is marked by what the fit saw of it, and the MAPE that decides the exit code is the
"eval" runs' one: runs of a model size the fit never saw, made in a machine session the fit
never saw. A session is the machine a run ran on: the ``machine_session`` of the results
folder's ``_batch/manifest.json`` when it names one, else the results folder itself.

- ``fit``: a run the profile was fitted on;
- ``eval``: neither its model nor its session was in the fit;
- ``size``: a model the fit never saw, in a session it did (machine speed was seen);
- ``session``: a model the fit saw, in a session it never saw;
- ``seen``: model and session both seen (a repeat of fitted work);
- ``protocol``: timed on fewer steps than the measurement protocol asks
  (:attr:`zsim.calibrate.RunResult.meets_protocol`); shown, never scored.

Per-collective times come from the comms-logger pass of multi-GPU runs. DeepSpeed 0.19.8's
logger stores *cumulative* latencies per op name, so one call's latency is the difference
between consecutive cumulative values of that op (sorted, since calls of one rank are serial).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .calibrate import (CollectiveTimer, Predicted, Predictor, RunResult, default_collective_timer,
                        default_predictor, find_runs)
from .defaults import DEFAULT_PROFILE, DEFAULT_RUN_TOPO
from .errors import ZsimInputError
from .inputs import read_json_file
from .hardware import PROFILE_DIR, HardwareProfile, load_profile
from .yamlio import load_yaml_file

#: The phases of an optimizer step that runs record and ``--phases`` scores.
PHASES = ("forward", "backward", "step")

#: comms-logger op name -> (zsim collective op, factor from logged message bytes to full buffer)
LOGGED_OPS = {"all_reduce": ("all_reduce", "one"), "reduce_scatter_tensor": ("reduce_scatter", "one"),
              "all_gather_into_tensor": ("all_gather", "world")}


@dataclass(frozen=True)
class RunComparison:
    """Measured vs predicted for one run."""

    run: RunResult
    split: str                    # fit | eval | size | session | seen | - (profile has no split)
    predicted: Predicted | None
    error: str | None = None      # why no prediction could be made

    @property
    def time_err(self) -> float | None:
        """Relative step-time error (predicted / measured - 1)."""
        if self.predicted is None:
            return None
        return self.predicted.step_time_s / self.run.step_time_s - 1.0

    @property
    def mem_err(self) -> float | None:
        """Relative peak-memory error."""
        if self.predicted is None:
            return None
        return self.predicted.peak_memory_bytes / self.run.peak_memory_bytes - 1.0

    def phase_err(self, phase: str) -> float | None:
        """Relative error of one phase ("forward", "backward", "step"; per optimizer step),
        when both the run and the prediction have it (``zsim validate --phases``)."""
        if self.predicted is None:
            return None
        measured, predicted = self.run.phase_s.get(phase), self.predicted.phase_s.get(phase)
        if not measured or predicted is None:
            return None
        return predicted / measured - 1.0


@dataclass(frozen=True)
class CollectiveComparison:
    """One (op, message size) of a run's comms-logger pass against the collective model."""

    run_id: str
    op: str
    buffer_bytes: int
    calls: int
    measured_s: float
    predicted_s: float

    @property
    def err(self) -> float:
        """Relative error (predicted / measured - 1)."""
        return self.predicted_s / self.measured_s - 1.0


@dataclass(frozen=True)
class Report:
    """All comparisons plus the summary statistics the exit code is decided on."""

    runs: Sequence[RunComparison]
    skipped: Sequence[RunResult]
    collectives: Sequence[CollectiveComparison] = field(default_factory=tuple)
    split_known: bool = False

    def scored(self) -> list[RunComparison]:
        """Comparisons the MAPE is taken over: eval runs when the split is known, else all."""
        done = [c for c in self.runs if c.predicted is not None]
        return [c for c in done if c.split == "eval"] if self.split_known else done

    def mape(self, which: str, rows: Sequence[RunComparison] | None = None) -> float | None:
        """Mean absolute percentage error of "time" or "memory" over ``rows`` (default scored())."""
        rows = self.scored() if rows is None else rows
        errs = [abs(c.time_err if which == "time" else c.mem_err) for c in rows]
        return 100 * statistics.fmean(errs) if errs else None

    def phase_mape(self, phase: str, rows: Sequence[RunComparison] | None = None) -> float | None:
        """MAPE of one phase over the ``rows`` (default scored()) that have it."""
        rows = self.scored() if rows is None else rows
        errs = [abs(e) for e in (c.phase_err(phase) for c in rows) if e is not None]
        return 100 * statistics.fmean(errs) if errs else None

    def collective_mape(self, min_bytes: int = 16 << 20) -> float | None:
        """MAPE of per-collective times for messages of at least ``min_bytes``."""
        errs = [abs(c.err) for c in self.collectives if c.buffer_bytes >= min_bytes]
        return 100 * statistics.fmean(errs) if errs else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        def row(c: RunComparison) -> dict[str, Any]:
            return {"run_id": c.run.run_id, "model": c.run.model_name, "split": c.split,
                    "measured_step_time_s": c.run.step_time_s,
                    "predicted_step_time_s": c.predicted.step_time_s if c.predicted else None,
                    "step_time_err_pct": None if c.time_err is None else 100 * c.time_err,
                    "measured_peak_memory_bytes": c.run.peak_memory_bytes,
                    "predicted_peak_memory_bytes": c.predicted.peak_memory_bytes if c.predicted else None,
                    "peak_memory_err_pct": None if c.mem_err is None else 100 * c.mem_err,
                    **{f"{ph}_err_pct": 100 * e for ph in PHASES if (e := c.phase_err(ph)) is not None},
                    "error": c.error}
        return {"runs": [row(c) for c in self.runs],
                "skipped": [{"run_id": r.run_id, "status": r.status, "error": r.error} for r in self.skipped],
                "collectives": [{"run_id": c.run_id, "op": c.op, "buffer_bytes": c.buffer_bytes,
                                 "calls": c.calls, "measured_s": c.measured_s, "predicted_s": c.predicted_s,
                                 "err_pct": 100 * c.err} for c in self.collectives],
                "scored_on": "eval" if self.split_known else "all",
                "step_time_mape_pct": self.mape("time"), "peak_memory_mape_pct": self.mape("memory"),
                "collective_mape_pct_ge_16MiB": self.collective_mape(),
                **({"phase_mape_pct": {ph: self.phase_mape(ph) for ph in PHASES}}
                   if any(self.phase_mape(ph) is not None for ph in PHASES) else {})}


def profile_split(hardware: str | Path | HardwareProfile | None) -> set[str] | None:
    """Run ids the profile was fitted on (its ``calibration.fit_runs``), or None."""
    if hardware is None or isinstance(hardware, HardwareProfile):
        return None
    path = Path(str(hardware))
    if not path.exists():
        path = PROFILE_DIR / f"{hardware}.yaml"
        if not path.exists():
            return None
    data = load_yaml_file(path, "hardware profile")
    cal = data.get("calibration") if isinstance(data, Mapping) else None
    if not isinstance(cal, Mapping) or not isinstance(cal.get("fit_runs"), list):
        return None
    return {str(x) for x in cal["fit_runs"]}


def per_call_latencies(entries: Mapping[str, Any]) -> dict[int, list[float]]:
    """Message bytes -> per-call seconds from one op's cumulative logger latencies."""
    flat = sorted((float(lat), int(size)) for size, rec in entries.items()
                  for lat in rec.get("latency_ms", []))
    out: dict[int, list[float]] = {}
    prev = 0.0
    for cum, size in flat:
        out.setdefault(size, []).append(max(cum - prev, 0.0) / 1e3)
        prev = cum
    return out


def compare_collectives(run: RunResult, hw: HardwareProfile, timer: CollectiveTimer,
                        min_bytes: int = 1 << 20) -> list[CollectiveComparison]:
    """Median logged latency of each (op, size) of a multi-GPU run vs the collective model."""
    if run.world_size < 2 or not run.comms:
        return []
    out = []
    for logged, entries in sorted(run.comms.items()):
        if logged not in LOGGED_OPS or not isinstance(entries, Mapping):
            continue
        op, scale = LOGGED_OPS[logged]
        for size, lats in sorted(per_call_latencies(entries).items()):
            buffer_bytes = size * (run.world_size if scale == "world" else 1)
            if buffer_bytes < min_bytes or not lats:
                continue
            out.append(CollectiveComparison(run.run_id, op, buffer_bytes, len(lats), statistics.median(lats),
                                            timer(op, buffer_bytes, run.world_size, hw)))
    return out


def run_session(run: RunResult) -> str:
    """The machine session a run belongs to (see the module docstring)."""
    folder = run.path.resolve().parent
    manifest = folder / "_batch" / "manifest.json"
    if manifest.is_file():
        try:
            entry = read_json_file(manifest, "batch manifest").get("runs", {}).get(run.run_id, {})
        except (ZsimInputError, AttributeError):
            entry = {}
        if isinstance(entry, dict) and isinstance(entry.get("machine_session"), str):
            return f"{folder}#{entry['machine_session']}"
    return str(folder)


def split_of(run: RunResult, fit_ids: set[str], fit_models: set[str], fit_sessions: set[str]) -> str:
    """What the fit saw of ``run``: fit, eval, size, session or seen (or protocol: a run
    timed on too few steps to score)."""
    if run.run_id in fit_ids:
        return "fit"
    if not run.meets_protocol:
        return "protocol"
    new_size = run.model_name not in fit_models
    new_session = run_session(run) not in fit_sessions
    return {(True, True): "eval", (True, False): "size", (False, True): "session"}.get(
        (new_size, new_session), "seen")


def validate(paths: Sequence[str | Path], hardware: str | Path | HardwareProfile | None = DEFAULT_PROFILE, *,
             topo: str = DEFAULT_RUN_TOPO, predictor: Predictor | None = None,
             collective_timer: CollectiveTimer | None = None, models: Sequence[str] | None = None,
             phases: bool = False) -> Report:
    """Compare every run under ``paths`` with its prediction; with ``phases`` also each
    run's forward/backward/step phase times (slower: every prediction keeps its timeline)."""
    runs = find_runs(paths)
    if not runs:
        raise ZsimInputError(f"no run folders (with summary.json) under {', '.join(map(str, paths))}")
    if models:
        runs = [r for r in runs if r.model_name in models]
    hw = hardware if isinstance(hardware, HardwareProfile) else load_profile(hardware or DEFAULT_PROFILE)
    fit_ids = profile_split(hardware)
    fitted = [r for r in runs if fit_ids is not None and r.run_id in fit_ids]
    fit_models = {r.model_name for r in fitted}
    fit_sessions = {run_session(r) for r in fitted}
    predictor = predictor or default_predictor(topo, phases=phases)
    comparisons, skipped, colls = [], [], []
    timer = collective_timer
    for r in runs:
        if not r.ok:
            skipped.append(r)
            continue
        split = "-" if fit_ids is None else split_of(r, fit_ids, fit_models, fit_sessions)
        try:
            pred = predictor(r, hw)
        except ZsimInputError as exc:  # one bad run folder must not hide the others
            comparisons.append(RunComparison(r, split, None, str(exc)))
            continue
        comparisons.append(RunComparison(r, split, pred))
        if r.world_size > 1 and r.comms:
            timer = timer or default_collective_timer(topo)
            colls.extend(compare_collectives(r, hw, timer))
    return Report(runs=comparisons, skipped=skipped, collectives=colls, split_known=fit_ids is not None)


def _pct(v: float | None) -> str:
    return "   -  " if v is None else f"{v * 100:+6.1f}%"


def format_report(rep: Report, show_collectives: bool = True) -> str:
    """The human-readable table `zsim validate` prints."""
    lines = [f"{'run':48s} {'split':7s} {'step s':>9s} {'pred s':>8s} {'err':>7s}  "
             f"{'peak GiB':>8s} {'pred':>7s} {'err':>7s}"]
    for c in rep.runs:
        if c.predicted is None:
            lines.append(f"{c.run.run_id:48s} {c.split:7s} no prediction: {c.error}")
            continue
        lines.append(f"{c.run.run_id:48s} {c.split:7s} {c.run.step_time_s:9.4f} {c.predicted.step_time_s:8.4f} "
                     f"{_pct(c.time_err)}  {c.run.peak_memory_bytes / 2**30:8.2f} "
                     f"{c.predicted.peak_memory_bytes / 2**30:7.2f} {_pct(c.mem_err)}")
    for r in rep.skipped:
        lines.append(f"{r.run_id:48s} SKIPPED status={r.status}: {(r.error or '')[:80]}")
    if show_collectives and rep.collectives:
        lines.append("")
        lines.append(f"{'collective (comms-logger pass)':48s} {'op':15s} {'MiB':>8s} {'calls':>5s} "
                     f"{'meas ms':>8s} {'pred ms':>8s} {'err':>7s}")
        for c in rep.collectives:
            lines.append(f"{c.run_id:48s} {c.op:15s} {c.buffer_bytes / 2**20:8.1f} {c.calls:5d} "
                         f"{c.measured_s * 1e3:8.3f} {c.predicted_s * 1e3:8.3f} {_pct(c.err)}")
    lines.append("")
    labels = (("fit", "fit"), ("eval", "eval: new size and new session"),
              ("size", "new size, seen session"), ("session", "seen size, new session"),
              ("seen", "seen size and session"), ("protocol", "timed on too few steps"))
    for split, label in labels + (("all", "all"),):
        rows = [c for c in rep.runs if c.predicted and (split == "all" or c.split == split)]
        if rows:
            phase = [rep.phase_mape(ph, rows) for ph in PHASES]
            lines.append(f"MAPE {label:30s} ({len(rows):3d} runs): step time {rep.mape('time', rows):5.1f}%  "
                         f"peak memory {rep.mape('memory', rows):5.1f}%"
                         + ("" if all(p is None for p in phase) else "  phases fwd/bwd/step "
                            + "/".join("-" if p is None else f"{p:.1f}" for p in phase) + "%"))
    cm = rep.collective_mape()
    if cm is not None:
        lines.append(f"MAPE collectives >= 16 MiB: {cm:5.1f}%")
    lines.append(f"scored on: {'eval runs (new size and new session)' if rep.split_known else 'all runs'}"
                 f"; skipped {len(rep.skipped)} failed/unreadable run(s)")
    return "\n".join(lines)
