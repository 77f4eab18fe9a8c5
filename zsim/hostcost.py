"""Host-side costs: the Python thread's speed, per code path, and the CPU optimizer passes.

Eager DeepSpeed spends host time in two kinds of code, measured apart in the traces of
validation/results/h200/2026-12-01 (e.g. ``llama-0.13b-z1-mb4-ga1-s1024-r1/trace.json.gz``):

- module code (HF model forward/backward): a module call, autograd and one or more kernel
  launches, tens of microseconds per kernel;
- DeepSpeed's flat per-tensor loops (casts, norms, unscale, bucket copies in the step and in
  backward): one aten op and one launch each, a few microseconds.

Both scale with the speed of the machine's host thread, which differs between machines and
between processes (the validation job records it with every run: ``host_speed`` in
summary.json). The profile keeps a reference speed and dimensionless costs per code path;
:func:`at_host_speed` turns them into seconds for a given machine.

CPU passes under offload are OpenMP loops whose speed depends on the threads the launcher
gives each rank (torchrun sets ``OMP_NUM_THREADS=1`` when it starts several processes per
node): :func:`cpu_pass_rate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Mapping

from .errors import ZsimInputError
from .hardware import HardwareProfile, with_derived_host_costs


@dataclass(frozen=True)
class HostSpeed:
    """How fast one process's host thread issues work (validation/train.py ``host_speed``)."""

    small_linear_call_s: float
    empty_kernel_launch_s: float

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any]) -> "HostSpeed | None":
        """The speed a run recorded, or None for runs made before it was recorded.

        The job's first version (call 1 of validation/results/h200/2026-12-01) measured after
        ``deepspeed.initialize``; under ZeRO-3 DeepSpeed's module hooks then slow every module
        call of the benchmark itself (51-79 us for one small Linear against 14-25 us in the
        other runs of that machine), so such records are not a host speed and are ignored.
        Later records say ``"measured": "before_deepspeed"``.
        """
        hs = summary.get("host_speed")
        if not isinstance(hs, Mapping):
            return None
        if summary.get("zero_stage") == 3 and hs.get("measured") != "before_deepspeed":
            return None
        lin, empty = hs.get("small_linear_call_s"), hs.get("empty_kernel_launch_s")
        ok = all(isinstance(v, (int, float)) and math.isfinite(v) and 0 < v < 1 for v in (lin, empty))
        return cls(float(lin), float(empty)) if ok else None


#: The in-run probe (validation/train.py ``HostProbe``, between timed steps) reads slower than
#: the snapshot before DeepSpeed starts on the same process: median ratios over the 33
#: processes of validation/results/h200/2026-12-01-m8 (three machines), 1.176 for the small
#: Linear call and 1.027 for the empty launch (`python validation/host_probe.py`). The probe
#: runs after a training step has filled the caches; dividing by these ratios puts its reading
#: on the snapshot's scale, the scale of the profiles' reference speed. A ratio of two host
#: measurements, not fitted on any step time.
IN_RUN_PER_SNAPSHOT = {"small_linear_call_s": 1.176, "empty_kernel_launch_s": 1.027}


def in_run_host_speed(summary: Mapping[str, Any]) -> HostSpeed | None:
    """The host speed a run measured between its timed steps (``host_speed_in_run``, the
    median over the steps), on the snapshot's scale; None for runs made before the probe.

    The snapshot of :meth:`HostSpeed.from_summary` is about a second before DeepSpeed starts
    and did not follow the run (using it made the step-time error worse); the host thread's
    speed drifts during a run, and the in-run medians follow the step time between machines
    and processes (validation/README.md, "Host speed during a run").
    """
    hs = summary.get("host_speed_in_run")
    if not isinstance(hs, Mapping):
        return None
    vals = {k: hs.get(k) for k in IN_RUN_PER_SNAPSHOT}
    if not all(isinstance(v, (int, float)) and math.isfinite(v) and 0 < v < 1 for v in vals.values()):
        return None
    return HostSpeed(*(float(vals[k]) / IN_RUN_PER_SNAPSHOT[k]
                       for k in ("small_linear_call_s", "empty_kernel_launch_s")))


def at_host_speed(hw: HardwareProfile, speed: HostSpeed | None) -> HardwareProfile:
    """``hw`` with its host costs in seconds for a host of ``speed`` (the profile's own
    reference speed when None): the per-kernel dispatch of module code and the ZeRO-3 hook
    cost follow the machine's measured speed."""
    h = hw.host
    if not h.prices_code_paths or speed is None:
        return hw
    alpha = h.speed_exponent
    h = replace(h, small_linear_call_s=_toward(h.small_linear_call_s, speed.small_linear_call_s, alpha),
                empty_kernel_launch_s=_toward(h.empty_kernel_launch_s, speed.empty_kernel_launch_s, alpha))
    return with_derived_host_costs(replace(hw, host=h))


def _toward(reference_s: float, measured_s: float, exponent: float) -> float:
    """``reference_s * (measured_s / reference_s) ** exponent`` (the measured value at 1)."""
    if exponent == 1.0 or reference_s <= 0:
        return measured_s
    return reference_s * (measured_s / reference_s) ** exponent


def loop_op_s(hw: HardwareProfile) -> float:
    """Host seconds of one op of DeepSpeed's flat per-tensor loops (0 when not modelled)."""
    h = hw.host
    return h.loop_op_per_empty_launch * h.empty_kernel_launch_s


@dataclass(frozen=True)
class CpuPassSpeed:
    """How fast one process ran the CPU passes of optimizer offload on its own threads
    (validation/train.py ``cpu_pass_speed``): ((pass, params_per_s), ...) at ``threads``.

    One thread's speed differs between machines of one type by tens of percent (1.3-1.5x
    for DeepSpeedCPUAdam between two lent H200 hosts, validation/results/h200/2026-12-03-m13),
    so a run records its own machine's, as it records its host speed. Recorded, not used
    by the prediction: on the four runs of session m14 (validation/results/h200/2026-12-03-m14)
    the record made the step-time error worse (7.4 % against 6.4 % MAPE with the profile's
    rates); its 33.5M-element probe varied 19 % between two processes whose steps differed 3 %."""

    threads: float
    rates: tuple[tuple[str, float], ...]

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any]) -> "CpuPassSpeed | None":
        """The record of a run, or None for runs without it (or with a malformed one)."""
        rec = summary.get("cpu_pass_speed")
        if not isinstance(rec, Mapping):
            return None
        threads = rec.get("threads")
        rates = {name: rec.get(f"{name}_params_per_s") for name in CPU_PASSES}
        values = [threads, *rates.values()]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
                   for v in values):
            return None
        return cls(float(threads), tuple((k, float(v)) for k, v in sorted(rates.items())))


#: CPU pass -> (rate with the node's cores, rate with one thread) field names of HostProfile.
CPU_PASSES = {
    "adam": ("cpu_adam_params_per_s", "cpu_adam_1thread_params_per_s"),
    "unscale": ("cpu_unscale_params_per_s", "cpu_unscale_1thread_params_per_s"),
    "cast": ("cpu_cast_params_per_s", "cpu_cast_1thread_params_per_s"),
}


def cpu_pass_rate(hw: HardwareProfile, name: str, threads: float) -> float:
    """Parameters per second of CPU pass ``name`` on ``threads`` threads (0: the profile has
    no per-thread rates for it).

    Between two measured thread counts the rate follows a power law through both points
    (a straight line in log rate over log threads): the speed-ups are below linear
    (memory-bound loops) and flatten as threads are added — on the lent H200 hosts
    DeepSpeedCPUAdam ran 3.3x faster on 4 threads than on 1 but only 2.1x faster again on 16
    (validation/results/h200/2026-12-03-m13/_microbench/microbench_cpu_passes_m13a.json), so the
    profile's measured points (``cpu_pass_curves``) are used where it has them, else its
    1-thread and ``cpu_threads`` rates. Outside the measured range the nearest point's rate.
    """
    points = dict(hw.host.cpu_pass_curves).get(name)
    if points:
        return _log_interp(points, threads)
    full_key, one_key = CPU_PASSES[name]
    full, one = getattr(hw.host, full_key), getattr(hw.host, one_key)
    n = hw.host.cpu_threads
    if full <= 0 or one <= 0 or n <= 1:
        return 0.0   # no per-thread data: the caller keeps the node-shared rate
    t = min(max(threads, 1.0), float(n))
    a = math.log(full / one) / math.log(n)
    return one * t ** a


def _log_interp(points: tuple[tuple[float, float], ...], threads: float) -> float:
    """The rate at ``threads`` on the piecewise power law through ``points`` (threads ascending)."""
    t = min(max(threads, points[0][0]), points[-1][0])
    for (t0, r0), (t1, r1) in zip(points, points[1:]):
        if t <= t1:
            a = math.log(r1 / r0) / math.log(t1 / t0)
            return r0 * (t / t0) ** a
    return points[-1][1]


#: Launchers whose thread settings `zsim predict --launcher` knows.
LAUNCHERS = ("deepspeed", "torchrun")


def launcher_cpu_threads(launcher: str, ranks_per_node: int, cpu_cores: int,
                         cpu_threads: float | None = None) -> float | None:
    """Threads each rank's CPU passes run on when ``launcher`` starts ``ranks_per_node``
    processes on a node of ``cpu_cores`` cores (None: let :func:`zsim.predict.predict` share
    the profile's threads among the ranks).

    - ``cpu_threads`` given (the user's OMP_NUM_THREADS): that.
    - torchrun with more than one process per node sets OMP_NUM_THREADS=1 unless it is set
      (torch 2.13 torch/distributed/run.py:872-884): 1 thread.
    - torchrun with one process, or the deepspeed launcher, leaves torch's default, one thread
      per core, so the node's ranks share its cores (DeepSpeed's ``--bind_cores_to_rank``
      makes that explicit: cores // ranks each and OMP_NUM_THREADS to match,
      deepspeed/utils/numa.py:119, launcher/launch.py:219-221): cores / ranks.
    """
    if launcher not in LAUNCHERS:
        raise ZsimInputError(f"--launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    if cpu_threads is not None:
        if isinstance(cpu_threads, bool) or not (isinstance(cpu_threads, (int, float))
                                                 and math.isfinite(cpu_threads) and 1 <= cpu_threads <= 4096):
            raise ZsimInputError(f"--cpu-threads must be a number of threads in 1-4096, got {cpu_threads!r}")
        return float(cpu_threads)
    ranks = max(1, int(ranks_per_node))
    if launcher == "torchrun" and ranks > 1:
        return 1.0
    if cpu_cores <= 0:
        return None
    return max(1.0, cpu_cores / ranks)


__all__ = ["HostSpeed", "CpuPassSpeed", "in_run_host_speed", "IN_RUN_PER_SNAPSHOT", "at_host_speed", "loop_op_s",
           "cpu_pass_rate", "CPU_PASSES", "LAUNCHERS", "launcher_cpu_threads"]
