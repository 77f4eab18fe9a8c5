"""`zsim calibrate`: fit a hardware profile from microbenchmarks and real training runs.

Two sources, two kinds of parameters:

* Measured directly by the microbenchmarks (``validation/microbench``): the GEMM efficiency
  curve, attention and memory-bound efficiency, the fused-Adam traffic per parameter, pinned
  host copy bandwidths, the CPU Adam rate and, from an NCCL sweep, each link type's
  efficiency and latency.
* Residual overheads the kernels do not explain (per-kernel launch cost, per-step framework
  cost, ZeRO-3 hook cost, allocator overhead) are fitted to the measured step time and peak
  memory of a *fit subset* of runs, chosen by model size, so that `zsim validate` can report
  the error on runs the fit never saw.

Runs are folders written by ``validation/train.py`` (``summary.json``, ``config.json``,
``ds_config.json``). Predictions go through a :data:`Predictor` so that tests can replace the
simulator with a fake one.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import yaml

from .collectives import collective_cost
from .defaults import DEFAULT_PROFILE, DEFAULT_RUN_TOPO
from .errors import ZsimInputError
from .inputs import check_microbench, check_nccl, existing_paths, read_json_file, summary_number
from .hardware import CPU_PASS_NAMES, HardwareProfile, load_profile, profile_from_dict
from .hostcost import IN_RUN_PER_SNAPSHOT, CpuPassSpeed, HostSpeed, in_run_host_speed
from .tokenscan import fit_scan_curves
from .job import RunSettings
from .network import load_topology
from .predict import predict_settings

#: Parameters fitted to step times (dotted paths into the profile YAML).
#: Fitted on step and phase times: the host's costs per code path in units of the machine's
#: measured host speed (module code per kernel, DeepSpeed's flat loops per op, ZeRO-3 hooks
#: per module), one host sync, the engine's per-step bookkeeping, and how far the costs
#: follow a run's own host-speed probe (``host.speed_exponent``, zsim.hostcost.at_host_speed).
TIME_PARAMS = ("host.module_launch_per_linear_call", "host.loop_op_per_empty_launch",
               "host.zero3_hook_per_linear_call", "host.sync_s", "overheads.step_fixed_s",
               "host.speed_exponent")
#: Lower bounds of fittable parameters that the profile loader requires to be positive.
POSITIVE_FLOOR = {"overheads.optimizer_bytes_per_param": 1.0, "host.cpu_adam_params_per_s": 1e7}
#: Parameter fitted to peak memory.
MEMORY_PARAM = "memory.allocator_overhead_fraction"
#: The measurement protocol's least timed steps per run, and settling steps before them under
#: ZeRO-3 (:attr:`RunResult.meets_protocol`). Runs timed on fewer steps neither fit a profile
#: nor count in its evaluation: their medians over 3-4 steps spread too widely to score.
MIN_TIMED_STEPS = 20
MIN_ZERO3_SETTLING_STEPS = 10


@dataclass(frozen=True)
class RunResult:
    """One measured run, as `validation/train.py` recorded it."""

    run_id: str
    path: Path
    status: str
    error: str | None
    model_name: str
    params: int
    world_size: int
    seq: int
    micro_batch: int
    grad_accum: int
    activation_checkpointing: bool
    step_time_s: float | None
    peak_memory_bytes: int | None
    comms: Mapping[str, Any] = field(default_factory=dict, repr=False)
    versions: Mapping[str, Any] = field(default_factory=dict, repr=False)
    host_speed: HostSpeed | None = None       # the run's own host-speed snapshot (shown, not used)
    host_speed_in_run: HostSpeed | None = None  # measured between its timed steps (used)
    cpu_pass_speed: CpuPassSpeed | None = None  # its offload CPU passes (read; not used by the prediction)
    cpu_threads: float | None = None          # threads of its CPU-side passes
    phase_s: Mapping[str, float] = field(default_factory=dict)  # median forward/backward/step
    #: the DeepSpeed-MoE layer kwargs the run's MoE blocks were built with (None: no MoE layers)
    moe_config: Mapping[str, Any] | None = None
    zero_stage: int | None = None
    steps_warmup: int | None = None   # untimed steps before the timed ones (None: not recorded)
    steps_timed: int | None = None

    @property
    def ok(self) -> bool:
        """True when the run finished and has both measurements."""
        return self.status == "ok" and bool(self.step_time_s) and bool(self.peak_memory_bytes)

    @property
    def meets_protocol(self) -> bool:
        """True when the run was timed as the measurement protocol asks (validation/README.md,
        "Measurement protocol"): at least :data:`MIN_TIMED_STEPS` timed steps, and under
        ZeRO-3 at least :data:`MIN_ZERO3_SETTLING_STEPS` untimed steps first (its coordinator
        traces the module order, and steps keep getting faster, for about ten steps). A run
        that does not record its step counts is taken as timed by the protocol."""
        if self.steps_timed is not None and self.steps_timed < MIN_TIMED_STEPS:
            return False
        return not (self.zero_stage == 3 and self.steps_warmup is not None
                    and self.steps_warmup < MIN_ZERO3_SETTLING_STEPS)

    @property
    def config_path(self) -> Path:
        """The HF-style model config.json the run trained."""
        return self.path / "config.json"

    @property
    def ds_config_path(self) -> Path:
        """The exact DeepSpeed config the run used."""
        return self.path / "ds_config.json"


@dataclass(frozen=True)
class Predicted:
    """What calibration and validation need from one prediction."""

    step_time_s: float
    peak_memory_bytes: float
    phase_s: Mapping[str, float] = field(default_factory=dict)  # forward/backward/step


#: (run, profile) -> prediction; the default calls :func:`zsim.predict.predict`.
Predictor = Callable[[RunResult, HardwareProfile], Predicted]


# ---------------------------------------------------------------------------------------------
# Loading results
# ---------------------------------------------------------------------------------------------

def _read_json(path: Path) -> Any:
    return read_json_file(path, "JSON file")


def load_run(folder: Path) -> RunResult:
    """Read a run folder; a missing or broken summary gives a run with status "unreadable"."""
    folder = Path(folder)
    try:
        s = _read_json(folder / "summary.json")
        if not isinstance(s, dict):
            raise ZsimInputError("summary.json is not a JSON object")
        return _run_from_summary(folder, s)
    except ZsimInputError as exc:
        return RunResult(run_id=folder.name, path=folder, status="unreadable", error=str(exc),
                         model_name="?", params=0, world_size=1, seq=0, micro_batch=0, grad_accum=0,
                         activation_checkpointing=False, step_time_s=None, peak_memory_bytes=None)


def _run_from_summary(folder: Path, s: Mapping[str, Any]) -> RunResult:
    """A :class:`RunResult` from a parsed summary; a non-finite or absurd number is an error."""
    def num(key, cast=float, default=None):
        return summary_number(s, key, default, integer=cast is int)
    return RunResult(
        run_id=str(s.get("run_id") or folder.name), path=folder, status=str(s.get("status", "unknown")),
        error=s.get("error"), model_name=str(s.get("model_name", "?")), params=num("params", int, 0),
        world_size=num("world_size", int, 1), seq=num("seq", int, 0), micro_batch=num("micro_batch", int, 0),
        grad_accum=num("grad_accum", int, 1),
        activation_checkpointing=bool(s.get("activation_checkpointing", False)),
        step_time_s=num("step_time_s_median"), peak_memory_bytes=num("peak_memory_allocated_bytes", int),
        comms=s.get("comms") or {}, versions=s.get("versions") or {},
        host_speed=HostSpeed.from_summary(s), host_speed_in_run=in_run_host_speed(s),
        cpu_pass_speed=CpuPassSpeed.from_summary(s),
        cpu_threads=_cpu_threads(s), phase_s=_phases(s), moe_config=_moe_config(s),
        zero_stage=num("zero_stage", int), steps_warmup=num("steps_warmup", int),
        steps_timed=num("steps_timed", int),
    )


def _moe_config(s: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The run's DeepSpeed-MoE kwargs (validation/train.py ``--moe-config``), or None."""
    moe = s.get("moe_config")
    if moe is None:
        return None
    if not isinstance(moe, Mapping):
        raise ZsimInputError("summary.json: moe_config must be an object of deepspeed.moe.layer.MoE arguments")
    return dict(moe)


def _cpu_threads(s: Mapping[str, Any]) -> float | None:
    """Threads the run's CPU passes had: torch's thread count as the job recorded it."""
    hs = s.get("host_speed")
    n = hs.get("torch_num_threads") if isinstance(hs, Mapping) else None
    return float(n) if isinstance(n, int) and 0 < n <= 4096 else None


def _phases(s: Mapping[str, Any]) -> dict[str, float]:
    """Median forward/backward/step seconds per optimizer step (CUDA-event timed)."""
    keys = {"forward": "fwd_time_s_median", "backward": "bwd_time_s_median", "step": "opt_time_s_median"}
    out = {}
    for phase, key in keys.items():
        v = s.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v) and 0 < v < 1e5:
            out[phase] = float(v)
    return out


def find_runs(paths: Iterable[str | Path]) -> list[RunResult]:
    """Every run folder (one holding summary.json) at or below ``paths``, sorted by run id."""
    found: dict[Path, RunResult] = {}
    for p in existing_paths(paths):
        if p.is_file():
            p = p.parent
        for summary in [p / "summary.json"] if (p / "summary.json").exists() else sorted(p.rglob("summary.json")):
            found[summary.parent.resolve()] = load_run(summary.parent)
    return sorted(found.values(), key=lambda r: r.run_id)


#: Microbenchmark sections whose rows are pooled over every file found, not taken from the
#: first: a property that differs between machines of one type (the CPU passes' speed) is
#: fitted on all the machines measured.
POOLED_SECTIONS = ("cpu_passes", "moe_host")


def find_microbench(paths: Iterable[str | Path]) -> tuple[dict, list[dict], list[Path]]:
    """Merge microbench.json and nccl*.json files found at or below ``paths``.

    A section found in several files comes from the first, except :data:`POOLED_SECTIONS`.
    Returns (single-GPU sections, NCCL rows, files used).
    """
    bench: dict = {}
    nccl: list[dict] = []
    used: list[Path] = []
    for p in existing_paths(paths):
        files = [p] if p.is_file() else sorted(p.rglob("*.json"))
        for f in files:
            if f.name.startswith("microbench") and f.suffix == ".json":
                data = check_microbench(_read_json(f), str(f))
                for k, v in data.items():
                    if k in POOLED_SECTIONS:   # a list of rows, or one object per process
                        bench[k] = bench.get(k, []) + (list(v) if isinstance(v, list) else [v])
                    else:
                        bench.setdefault(k, v)
                used.append(f)
            elif f.name.startswith("nccl") and f.suffix == ".json":
                nccl.extend(check_nccl(_read_json(f), str(f)))
                used.append(f)
    return bench, nccl, used


# ---------------------------------------------------------------------------------------------
# Microbenchmark fits
# ---------------------------------------------------------------------------------------------

def fit_gemm_curve(rows: Sequence[Mapping], peak_flops: float, step: float = 0.5) -> list[list[float]]:
    """Piecewise-linear efficiency vs log10(flops), knots every ``step`` decades.

    Least squares on relative error (each point weighted by 1/efficiency) over hat functions
    at the knots: the loader interpolates linearly between knots and holds the ends flat, so
    the outer knots sit on the smallest and largest measured GEMM.
    """
    pts = [(math.log10(r["flops"]), r["flops"] / r["time_s"] / peak_flops) for r in rows
           if r.get("time_s") and r.get("flops")]
    if len(pts) < 2:
        raise ZsimInputError("GEMM microbenchmark has fewer than two timed shapes")
    x = np.array([p[0] for p in pts])
    y = np.array([p[1] for p in pts])
    # knots every `step` decades, the outer ones moved onto the data so nothing is extrapolated
    inner = np.arange(math.floor(x.min() / step + 1) * step, x.max() - step / 4, step)
    knots = np.unique(np.concatenate([[x.min()], inner[inner > x.min() + step / 4], [x.max()]]))
    basis = np.column_stack([np.interp(x, knots, np.eye(len(knots))[j]) for j in range(len(knots))])
    used = basis.sum(axis=0) > 0
    knots, basis = knots[used], basis[:, used]
    w = 1 / np.maximum(y, 1e-4)
    coef, *_ = np.linalg.lstsq(basis * w[:, None], y * w, rcond=None)
    coef = np.clip(coef, 1e-3, 1.0)
    return [[round(float(k), 3), round(float(c), 4)] for k, c in zip(knots, coef)]


def _equal_dims(r: Mapping) -> bool:
    """An attention row timed with equal q/k and v head dims (SDPA's flash kernel)."""
    return int(r.get("v_head_dim") or r.get("head_dim") or 0) == int(r.get("head_dim") or 0)


def attention_efficiency(rows: Sequence[Mapping], peak_flops: float) -> float:
    """Aggregate fwd+bwd efficiency: total FLOPs over total time (time-weighted), of the
    equal-head-dim rows (the memory-efficient kernel of unequal dims has its own curves)."""
    rows = [r for r in rows if _equal_dims(r)] or list(rows)
    flops = sum(r["fwd_bwd_flops"] for r in rows)
    time_s = sum(r["fwd_bwd_s"] for r in rows)
    if not rows or time_s <= 0:
        raise ZsimInputError("attention microbenchmark has no timed rows")
    return min(1.0, flops / time_s / peak_flops)


def attention_curves(rows: Sequence[Mapping], peak_flops: float) -> dict[int | str, list[list[float]]]:
    """Per head_dim: [log2(seq), forward efficiency, backward efficiency] from the attention
    microbenchmark (median over the model shapes that share a head_dim and seq; backward =
    (fwd+bwd - fwd) FLOPs over (fwd+bwd - fwd) time). Rows of unequal q/k and v head dims
    (MLA) make curves keyed "QKxV" ("192x128")."""
    cells: dict[tuple[int | str, int], list[tuple[float, float]]] = {}
    for r in rows:
        fwd = r["fwd_flops"] / r["fwd_s"] / peak_flops
        bwd_s = r["fwd_bwd_s"] - r["fwd_s"]
        if bwd_s <= 0:
            continue
        bwd = (r["fwd_bwd_flops"] - r["fwd_flops"]) / bwd_s / peak_flops
        key: int | str = int(r["head_dim"]) if _equal_dims(r) else f"{int(r['head_dim'])}x{int(r['v_head_dim'])}"
        cells.setdefault((key, int(r["seq"])), []).append((fwd, bwd))
    out: dict[int | str, list[list[float]]] = {}
    # equal-dim curves first, by head_dim (as before), then the "QKxV" ones
    for (hd, seq), vals in sorted(cells.items(), key=lambda kv: (isinstance(kv[0][0], str), str(kv[0][0]).zfill(12),
                                                                 kv[0][1])):
        f = statistics.median(v[0] for v in vals)
        b = statistics.median(v[1] for v in vals)
        out.setdefault(hd, []).append([round(math.log2(seq), 4), round(min(f, 1.0), 4), round(min(b, 1.0), 4)])
    return out


def memory_bound_efficiency(rows: Sequence[Mapping], hbm_GBps: float) -> float:
    """Median over the memory-bound kernels of achieved / datasheet HBM bandwidth."""
    if not rows:
        raise ZsimInputError("memory-bound microbenchmark has no rows")
    return min(1.0, statistics.median(r["GBps"] for r in rows) / hbm_GBps)


def strided_memory_efficiency(rows: Sequence[Mapping], hbm_GBps: float) -> float | None:
    """Median over the RoPE rows of ``membound_sizes`` (HF's apply_rotary_pos_emb on a
    transposed bf16 q view) of the traffic zsim counts for RoPE
    (:data:`zsim.workload.ROPE_TRAFFIC_PER_VALUE` per value) over the measured GPU time, as a
    fraction of the datasheet HBM bandwidth; None without such rows."""
    from .workload import ROPE_TRAFFIC_PER_VALUE
    bf16_bytes = 2
    effs = [ROPE_TRAFFIC_PER_VALUE * bf16_bytes * r["tokens"] * r["width"] / r["time_s"] / (hbm_GBps * 1e9)
            for r in rows if str(r.get("op", "")).startswith("rope") and r.get("time_s", 0) > 0]
    return min(1.0, statistics.median(effs)) if effs else None


def checkpoint_host_costs(rows: Sequence[Mapping]) -> dict[str, float]:
    """Activation checkpointing's host cost per layer, forward and recompute, in units of
    the small ``nn.Linear`` call (the median over the processes of the ``checkpoint`` section,
    validation/microbench/checkpoint.py).

    Each process's seconds are divided by its own host speed: the median of its probes
    between rounds, put on the snapshot's scale as a run's in-run probe is
    (:data:`zsim.hostcost.IN_RUN_PER_SNAPSHOT`); rows without probes use their snapshot. A
    negative median (no cost above the noise) counts as 0."""
    out = {}
    for field in ("forward", "recompute"):
        units = [r[f"checkpoint_{field}_s"] / _linear_call_unit(r) for r in rows]
        out[f"host.checkpoint_{field}_per_linear_call"] = round(max(0.0, float(np.median(units))), 3)
    return out


def moe_gate_host_ratio(processes: Sequence[Mapping]) -> float:
    """Host seconds per launch of DeepSpeed-MoE's gate over those of decoder-layer module
    code, measured in one process (validation/microbench/moe_host.py): the median over every
    process and top-k of the ``moe_host`` rows."""
    ratios = [float(r["ratio"]) for proc in processes for r in proc.get("rows", [])]
    if not ratios:
        raise ZsimInputError("moe_host microbenchmark has no rows (it needs a GPU to count launches)")
    return round(float(np.median(ratios)), 3)


def cpu_pass_curves(rows: Sequence[Mapping]) -> dict[str, list[list[float]]]:
    """``host.cpu_pass_curves`` from the ``cpu_passes`` rows (validation/microbench/cpu_passes.py):
    per pass and thread count, the median rate over the sizes and machines measured. On two
    lent H200 hosts (validation/results/h200/2026-12-03-m13) one thread of DeepSpeedCPUAdam
    ran 0.57-0.65e9 params/s on one and 0.81-0.86e9 on the other; a 134M and a 1.1B
    partition differed by up to 47 % (unscale, 16 threads), in no direction common to the
    passes. A user's own machine is best described by its own rows."""
    by: dict[str, dict[float, list[float]]] = {}
    for r in rows:
        name = r.get("pass")
        if name not in CPU_PASS_NAMES:
            raise ZsimInputError(f"microbench cpu_passes row: unknown pass {name!r} "
                                 f"(known: {', '.join(CPU_PASS_NAMES)})")
        by.setdefault(name, {}).setdefault(float(r["threads"]), []).append(float(r["params_per_s"]))
    return {name: [[t, float(f"{np.median(v):.4g}")] for t, v in sorted(ts.items())] for name, ts in sorted(by.items())}


def _linear_call_unit(row: Mapping) -> float:
    probe = row.get("probe_small_linear_call_s")
    snapshot = row.get("host_speed")
    unit = (probe / IN_RUN_PER_SNAPSHOT["small_linear_call_s"]
            if isinstance(probe, (int, float)) and not isinstance(probe, bool) and probe > 0
            else snapshot.get("small_linear_call_s") if isinstance(snapshot, Mapping) else None)
    if isinstance(unit, bool) or not isinstance(unit, (int, float)) or not 0 < unit < 1:
        raise ZsimInputError("microbench checkpoint row: needs probe_small_linear_call_s or "
                             "host_speed.small_linear_call_s, a positive number of seconds")
    return float(unit)


def host_bandwidths(rows: Sequence[Mapping], min_bytes: int = 1 << 26) -> tuple[float, float]:
    """Median pinned H2D and D2H GB/s over copies of at least ``min_bytes``."""
    big = [r for r in rows if r["bytes"] >= min_bytes] or list(rows)
    if not big:
        raise ZsimInputError("host-copy microbenchmark has no rows")
    return statistics.median(r["h2d_GBps"] for r in big), statistics.median(r["d2h_GBps"] for r in big)


def optimizer_bytes_per_param(fused: Mapping, hbm_GBps: float, mem_eff: float) -> float:
    """HBM bytes per parameter that make the fused Adam step take its measured time."""
    return fused["s_per_param"] * hbm_GBps * 1e9 * mem_eff


# ---------------------------------------------------------------------------------------------
# Profile editing
# ---------------------------------------------------------------------------------------------

def with_values(hw: HardwareProfile, values: Mapping[str, Any], **top: Any) -> HardwareProfile:
    """A copy of ``hw`` with dotted-path ``values`` replaced (validated by the loader)."""
    data = hw.to_dict()
    data.update(top)
    for dotted, v in values.items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = v
    return profile_from_dict(data, where=f"calibrated {hw.name}")


def get_value(hw: HardwareProfile, dotted: str) -> Any:
    """Read a dotted-path value of ``hw``."""
    node: Any = hw.to_dict()
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            raise ZsimInputError(f"hardware profile {hw.name!r} has no key {dotted!r}")
        node = node[key]
    return node


# ---------------------------------------------------------------------------------------------
# Residual fits
# ---------------------------------------------------------------------------------------------

def _nonneg_lstsq(J: np.ndarray, r: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Step d minimising |J d + r| subject to theta + d >= 0 (active sets; few parameters)."""
    n = len(theta)
    best, best_cost = np.zeros(n), float(np.sum(r ** 2))
    for k in range(n + 1):
        for clamped in combinations(range(n), k):
            d = np.zeros(n)
            d[list(clamped)] = -theta[list(clamped)]
            free = [i for i in range(n) if i not in clamped]
            rhs = -(r + J @ d)
            if free:
                sol, *_ = np.linalg.lstsq(J[:, free], rhs, rcond=None)
                d[free] = sol
            if np.any(theta + d < -1e-15):
                continue
            cost = float(np.sum((J @ d + r) ** 2))
            if cost < best_cost - 1e-15:
                best, best_cost = d, cost
    return best


def gauss_newton(residuals: Callable[[np.ndarray], np.ndarray], theta0: Sequence[float],
                 iterations: int = 6, rel_step: float = 0.3, abs_step: Sequence[float] | None = None,
                 lower: Sequence[float] | None = None) -> tuple[np.ndarray, float]:
    """Minimise sum(residuals(theta)**2) over theta >= lower (default 0); finite-difference
    Jacobian, bounded Gauss-Newton steps, backtracking line search."""
    lo = np.zeros(len(theta0)) if lower is None else np.array(lower, dtype=float)
    theta = np.maximum(np.array(theta0, dtype=float), lo)
    r = residuals(theta)
    cost = float(np.sum(r ** 2))
    floor = np.array(abs_step if abs_step is not None else [1e-7] * len(theta), dtype=float)
    for _ in range(iterations):
        J = np.empty((len(r), len(theta)))
        for j in range(len(theta)):
            h = max(abs(theta[j]) * rel_step, floor[j])
            t = theta.copy()
            t[j] += h
            J[:, j] = (residuals(t) - r) / h
        d = _nonneg_lstsq(J, r, theta - lo)
        step, improved = 1.0, False
        while step > 1 / 64:
            cand = np.maximum(theta + step * d, lo)
            rc = residuals(cand)
            cc = float(np.sum(rc ** 2))
            if cc < cost:
                theta, r, cost, improved = cand, rc, cc, True
                break
            step /= 2
        if not improved:
            break
    return theta, cost


def _relative(values: Sequence[float], measured: Sequence[float]) -> np.ndarray:
    return np.array([v / m - 1.0 for v, m in zip(values, measured)])


def fit_time_overheads(runs: Sequence[RunResult], hw: HardwareProfile, predictor: Predictor,
                       params: Sequence[str] = TIME_PARAMS) -> tuple[HardwareProfile, dict]:
    """Fit ``params`` so predicted step times match the runs (least squares, relative error)."""
    if not runs:
        raise ZsimInputError("no usable fit runs for the step-time overheads")
    theta0 = [float(get_value(hw, p)) for p in params]

    def residuals(theta: np.ndarray) -> np.ndarray:
        prof = with_values(hw, dict(zip(params, map(float, theta))))
        pred, meas = [], []
        for r in runs:  # the step time, and each phase the run and the prediction both have
            p = predictor(r, prof)
            pred.append(p.step_time_s)
            meas.append(r.step_time_s)
            for phase in sorted(set(p.phase_s) & set(r.phase_s)):
                pred.append(p.phase_s[phase])
                meas.append(r.phase_s[phase])
        return _relative(pred, meas)
    # floors of the finite-difference steps: microseconds for per-op costs, a millisecond per step
    floors = [1e-3 if p.endswith("fixed_s") else 2e-6 if p.endswith("_s") else 0.02 for p in params]
    lower = [POSITIVE_FLOOR.get(p, 0.0) for p in params]
    theta, cost = gauss_newton(residuals, theta0, abs_step=floors, lower=lower)
    fitted = with_values(hw, dict(zip(params, map(float, theta))))
    err = residuals(theta)
    at_bound = [p for p, t, lo in zip(params, theta, lower) if t <= lo + 1e-12]
    return fitted, {"params": {p: float(t) for p, t in zip(params, theta)},
                    "at_lower_bound": at_bound,
                    "fit_mape_pct": float(np.mean(np.abs(err)) * 100),
                    "residuals": "step time and forward/backward/step phase times, relative",
                    "runs": [r.run_id for r in runs]}


def fit_allocator_overhead(runs: Sequence[RunResult], hw: HardwareProfile, predictor: Predictor,
                           upper: float = 0.5) -> tuple[HardwareProfile, dict]:
    """Golden-section search of the allocator overhead fraction minimising memory MAPE."""
    if not runs:
        raise ZsimInputError("no usable fit runs for the allocator overhead")

    def mape(f: float) -> float:
        prof = with_values(hw, {MEMORY_PARAM: f})
        err = _relative([predictor(r, prof).peak_memory_bytes for r in runs],
                        [r.peak_memory_bytes for r in runs])
        return float(np.mean(np.abs(err)))
    a, b = 0.0, upper
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = mape(c), mape(d)
    for _ in range(30):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = mape(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = mape(d)
    best = min((0.0, (c + d) / 2), key=mape)
    return with_values(hw, {MEMORY_PARAM: best}), {"params": {MEMORY_PARAM: best},
                                                   "fit_mape_pct": mape(best) * 100}


# ---------------------------------------------------------------------------------------------
# Links from an NCCL sweep
# ---------------------------------------------------------------------------------------------

#: (op, bytes, world) -> predicted seconds under a profile; the default uses zsim.collectives
CollectiveTimer = Callable[[str, int, int, HardwareProfile], float]


def default_collective_timer(topo: str) -> CollectiveTimer:
    """Predicted collective time on the first ``world`` GPUs of one node of ``topo``."""
    topology = load_topology(topo)

    def timer(op: str, nbytes: int, world: int, hw: HardwareProfile) -> float:
        return collective_cost(topology.cluster(gpus=world), hw, op, nbytes).time_s
    return timer


def fit_links(rows: Sequence[Mapping], hw: HardwareProfile, timer: CollectiveTimer,
              link: str = "nvlink", min_bytes: int = 128 << 20) -> tuple[HardwareProfile, dict]:
    """Fit one link type's efficiency and latency to an NCCL sweep (relative error).

    Messages below ``min_bytes`` are left out: bandwidth is fitted where it dominates; the
    time of smaller messages is mostly launch and protocol latency, which the profile holds
    elsewhere (compute.kernel_launch_s, per-protocol latencies).
    """
    rows = [r for r in rows if r["bytes"] >= min_bytes and r.get("world_size", 1) > 1]
    if not rows:
        raise ZsimInputError("NCCL sweep has no multi-GPU rows")
    keys = (f"links.{link}.efficiency", f"links.{link}.latency_s")

    def prof(theta):
        return with_values(hw, {keys[0]: float(min(max(theta[0], 1e-3), 1.0)), keys[1]: float(theta[1])})

    def residuals(theta):
        p = prof(theta)
        return _relative([timer(r["op"], int(r["bytes"]), int(r["world_size"]), p) for r in rows],
                         [r["time_s"] for r in rows])
    theta0 = [float(get_value(hw, k)) for k in keys]
    theta, _ = gauss_newton(residuals, theta0, abs_step=[0.01, 1e-6])
    err = residuals(theta)
    return prof(theta), {"params": {keys[0]: float(min(theta[0], 1.0)), keys[1]: float(theta[1])},
                         "fit_mape_pct": float(np.mean(np.abs(err)) * 100), "rows": len(rows)}


# ---------------------------------------------------------------------------------------------
# The whole calibration
# ---------------------------------------------------------------------------------------------

def predict_run(run: RunResult, hw: HardwareProfile | str | Path | None, topo: str = DEFAULT_RUN_TOPO,
                keep_timeline: bool = False):
    """The prediction of a run's own configuration with its CPU thread count: the one place
    calibrate, validate and diagnose turn a run folder into a prediction.

    The host speed is the one the run measured between its timed steps when it has that
    record (:func:`zsim.hostcost.in_run_host_speed`), else the profile's reference speed of
    the machine type. The snapshot before DeepSpeed starts is not used: it varied from 14 to
    25 us per Linear call between processes on one machine whose runs did not differ that
    much, and using it made the step-time error worse (12.3 % against 9.9 % MAPE over the 33
    runs of validation/results/h200/2026-12-01; 15.8 % against 12.0 % over the 33 of -m8).
    The CPU passes of optimizer offload run at the profile's rates: the run's own record of
    them (``cpu_pass_speed``) made the error worse (:class:`zsim.hostcost.CpuPassSpeed`).
    """
    return predict_settings(run_settings(run, hw, topo), keep_timeline)


def run_settings(run: RunResult, hw: HardwareProfile | str | Path | None,
                 topo: str = DEFAULT_RUN_TOPO) -> RunSettings:
    """The :class:`~zsim.job.RunSettings` of a run folder's own configuration."""
    return RunSettings(model=str(run.config_path), topo=topo, gpus=run.world_size,
                       ds_config=str(run.ds_config_path), hardware=hw, seq=run.seq,
                       micro_batch=run.micro_batch, grad_accum=run.grad_accum,
                       activation_checkpointing=run.activation_checkpointing, cpu_threads=run.cpu_threads,
                       host_speed=run.host_speed_in_run, moe_config=run.moe_config)


def default_predictor(topo: str = DEFAULT_RUN_TOPO, phases: bool = False) -> Predictor:
    """Predictions through :func:`predict_run` for a run folder; with ``phases`` also the
    forward/backward/step times (for the per-phase fit)."""
    def run_predict(run: RunResult, hw: HardwareProfile) -> Predicted:
        if phases and run.phase_s:
            # zsim.diagnose imports this module: import it here, not at the top.
            from .diagnose.predicted import predicted_phases
            r, ph = predicted_phases(run, hw, topo)
            return Predicted(step_time_s=r.step_time_s, peak_memory_bytes=r.peak_memory_bytes, phase_s=ph)
        r = predict_run(run, hw, topo)
        return Predicted(step_time_s=r.step_time_s, peak_memory_bytes=r.peak_memory_bytes)
    return run_predict


def select_fit_runs(runs: Sequence[RunResult], fit_models: Sequence[str] | None) -> list[RunResult]:
    """Usable runs whose model is in ``fit_models`` (all usable runs when None); a run timed
    on fewer steps than the measurement protocol asks is not usable."""
    usable = [r for r in runs if r.ok and r.meets_protocol]
    if fit_models:
        unknown = set(fit_models) - {r.model_name for r in runs}
        if unknown:
            raise ZsimInputError(f"--fit-models names models with no runs: {', '.join(sorted(unknown))}")
        usable = [r for r in usable if r.model_name in fit_models]
    return usable


@dataclass(frozen=True)
class Calibration:
    """A fitted profile and what it was fitted on."""

    profile: HardwareProfile
    details: Mapping[str, Any]

    def to_yaml_dict(self) -> dict[str, Any]:
        """The profile in the loader's schema plus a ``calibration`` section (ignored by it)."""
        data = self.profile.to_dict()
        data["calibration"] = dict(self.details)
        return data


def calibrate(paths: Sequence[str | Path], base: str | Path | HardwareProfile = DEFAULT_PROFILE, *,
              fit_models: Sequence[str] | None = None, name: str | None = None, topo: str = DEFAULT_RUN_TOPO,
              predictor: Predictor | None = None, collective_timer: CollectiveTimer | None = None,
              link: str = "nvlink", time_params: Sequence[str] = TIME_PARAMS) -> Calibration:
    """Fit a profile: microbenchmark values first, then residual overheads on the fit runs."""
    hw = base if isinstance(base, HardwareProfile) else load_profile(base)
    for key in time_params:  # unknown keys are bad input, found before any work
        get_value(hw, key)
    bench, nccl, bench_files = find_microbench(paths)
    runs = find_runs(paths)
    # No wall-clock date: the same inputs give a byte-identical profile (the measurement
    # date, when the microbenchmarks record one, is in microbench_meta).
    details: dict[str, Any] = {"base_profile": hw.name, "topology": topo,
                               "microbench_files": [str(p) for p in bench_files]}
    values: dict[str, Any] = {}
    peak, hbm = hw.gpu.peak_bf16_flops, hw.gpu.hbm_bandwidth_GBps
    if "gemm" in bench:
        values["compute.gemm_efficiency"] = fit_gemm_curve(bench["gemm"], peak)
    if "gemm_fp32" in bench:   # fp32 training's GEMMs (no TF32) against the fp32 peak
        values["compute.gemm_efficiency_fp32"] = fit_gemm_curve(bench["gemm_fp32"], hw.gpu.peak_fp32_flops)
    if "attention" in bench:
        values["compute.attention_efficiency"] = round(attention_efficiency(bench["attention"], peak), 4)
        if all("head_dim" in r and "seq" in r for r in bench["attention"]):
            values["compute.attention_curves"] = attention_curves(bench["attention"], peak)
    # DeepSpeed's flat passes over parameters (the optimizer step's casts, norm, unscale and
    # copy back) are what memory_bound_efficiency prices once a model's own kernels have their
    # per-pass figures: the step-pass rows measure exactly those; older files only "membound".
    flat = bench.get("step_passes") or bench.get("membound")
    if flat:
        values["compute.memory_bound_efficiency"] = round(memory_bound_efficiency(flat, hbm), 4)
    strided = strided_memory_efficiency(bench.get("membound_sizes", []), hbm)
    if strided is not None:
        values["compute.strided_memory_efficiency"] = round(strided, 4)
    mem_eff = values.get("compute.memory_bound_efficiency", hw.compute.memory_bound_efficiency)
    if "fused_adam" in bench:
        values["overheads.optimizer_bytes_per_param"] = round(
            optimizer_bytes_per_param(bench["fused_adam"], hbm, mem_eff), 2)
    if "hostcopy" in bench:
        h2d, d2h = host_bandwidths(bench["hostcopy"])
        values["host.h2d_bandwidth_GBps"], values["host.d2h_bandwidth_GBps"] = round(h2d, 2), round(d2h, 2)
    if bench.get("moe_scan"):
        values["compute.token_scan_curves"] = fit_scan_curves(bench["moe_scan"])
    if bench.get("checkpoint"):
        values.update(checkpoint_host_costs(bench["checkpoint"]))
    if "cpu_adam" in bench:
        values["host.cpu_adam_params_per_s"] = float(f"{bench['cpu_adam']['params_per_s']:.4g}")
    if bench.get("cpu_passes"):
        values["host.cpu_pass_curves"] = cpu_pass_curves(bench["cpu_passes"])
    if bench.get("moe_host"):
        values["host.moe_gate_launch_per_module_launch"] = moe_gate_host_ratio(bench["moe_host"])
    details["from_microbench"] = values.copy()
    details["microbench_meta"] = bench.get("meta", {})
    hw = with_values(hw, values)
    if nccl:
        hw, details["links"] = fit_links(nccl, hw, collective_timer or default_collective_timer(topo), link)
    fit = select_fit_runs(runs, fit_models)
    details["fit_models"] = sorted(set(fit_models)) if fit_models else "all"
    details["fit_runs"] = [r.run_id for r in fit]
    details["skipped_runs"] = {r.run_id: r.status for r in runs if not r.ok}
    details["before_protocol_runs"] = sorted(r.run_id for r in runs if r.ok and not r.meets_protocol)
    if fit:
        predictor = predictor or default_predictor(topo, phases=True)
        hw, details["time_fit"] = fit_time_overheads(fit, hw, predictor, params=time_params)
        hw, details["memory_fit"] = fit_allocator_overhead(fit, hw, predictor)
        details["time_fit"].pop("runs", None)
    versions = sorted({json.dumps({k: r.versions.get(k) for k in ("torch", "deepspeed", "transformers",
                                                                    "driver", "gpu_name", "cuda")},
                                  sort_keys=True) for r in fit})
    details["run_versions"] = [json.loads(v) for v in versions]
    source = (f"zsim calibrate: microbenchmarks "
              f"{', '.join(Path(p).name for p in bench_files) or 'none'}; residual overheads fitted on "
              f"{len(fit)} runs of {', '.join(details['fit_models']) if fit_models else 'all models'}; "
              f"torch/deepspeed/driver: "
              + "; ".join(f"{v['torch']}/{v['deepspeed']}/{v['driver']}" for v in details["run_versions"]))
    hw = with_values(hw, {}, name=name or hw.name, calibrated=True, source=source)
    return Calibration(profile=hw, details=details)


def profile_yaml(cal: Calibration) -> str:
    """The calibrated profile as YAML text that :func:`zsim.hardware.load_profile` reads."""
    header = ("# Calibrated by `zsim calibrate`; the `calibration` section records the sources\n"
              "# (microbenchmarks, fit runs, versions) and the fit errors.\n")
    return header + yaml.safe_dump(_plain(cal.to_yaml_dict()), sort_keys=False, default_flow_style=None,
                                   width=100)


def _plain(obj: Any) -> Any:
    """Tuples and numpy scalars to plain YAML types."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
