"""Hardware profiles: what a GPU, its links and its host can do, as data.

A profile is a YAML file (``zsim/data/topologies/hardware/<name>.yaml`` or any path). It holds
datasheet figures and the efficiencies that calibration fits from real runs; it records
where its numbers came from (``source``). Code never holds hardware constants: everything
that differs between machines is read from here.

Schema (units in key names)::

    name: h200-sxm
    version: 1
    calibrated: false            # true once fitted by `zsim calibrate`
    source: "..."                # datasheet, notes, or the runs a fit used
    gpu:
      name: H200-SXM
      memory_bytes: 150754820096 # what torch reports as total memory
      peak_bf16_flops: 989.0e12  # dense tensor-core peak
      peak_fp32_flops: 67.0e12   # non-tensor-core fp32 (fp32 training without TF32)
      hbm_bandwidth_GBps: 4800
    compute:
      # GEMM efficiency (achieved / peak) against log10(2*m*n*k), piecewise linear.
      gemm_efficiency: [[6.0, 0.02], [9.0, 0.35], [10.5, 0.70], [12.0, 0.78]]
      # Optional: the same for fp32 GEMMs (no TF32) against peak_fp32_flops (default: the above).
      gemm_efficiency_fp32: [[9.0, 0.30], [10.5, 0.68], [12.0, 0.75]]
      attention_efficiency: 0.45  # flash attention fwd+bwd, fraction of peak
      # Optional: per head_dim [[log2_seq, fwd_eff, bwd_eff], ...] (calibrate's attention
      # microbenchmark); a key "192x128" is unequal q/k and v head dims (MLA), SDPA's
      # memory-efficient kernel, the only curve that prices such attention.
      attention_curves: {64: [[10.0, 0.22, 0.14], [12.0, 0.34, 0.31]], "192x128": [[12.0, 0.3, 0.2]]}
      memory_bound_efficiency: 0.80  # fraction of HBM bandwidth for elementwise kernels
      kernel_launch_s: 4.0e-6     # GPU-side launch of one kernel (also each NCCL call's)
      host_dispatch_s: 2.0e-5     # host time per eager kernel (optional; default kernel_launch_s)
      backward_to_forward_ratio: 2.0
    links:                        # per link type: achieved fraction of link bandwidth, latency
      nvlink:
        efficiency: 0.80
        latency_s: 8.0e-6         # per algorithm step when no `protocols:` are given
        protocols:                # optional: NCCL's protocols (src/graph/tuning.cc) on this link
          ll:     {latency_s: 0.47e-6, base_latency_s: 3.6e-6, bandwidth_fraction: 0.25,
                   max_busbw_GBps: 87.7,
                   algorithms: {tree: {latency_s: 0.52e-6, base_latency_s: 4.4e-6}}}
          ll128:  {latency_s: 1.9e-6, base_latency_s: 10.0e-6, bandwidth_fraction: 0.92}
          simple: {latency_s: 3.4e-6, base_latency_s: 8.4e-6}
      pcie:   {efficiency: 0.80, latency_s: 10.0e-6}
      ib:
        efficiency: 0.90
        latency_s: 12.0e-6
        protocols:
          ll: {latency_s: 2.7e-6, base_latency_s: 3.6e-6, bandwidth_fraction: 0.25,
               max_busbw_GBps: 20.4, ring_step_floor_s: 0.85e-6}
          simple: {latency_s: 9.6e-6, base_latency_s: 8.4e-6,
                   algorithms: {pat: {latency_s: 4.0e-6, base_latency_s: 8.0e-6,
                                      rank_latency_s: 2.8e-6, bandwidth_fraction: 0.75}}}
          ...

    host:
      h2d_bandwidth_GBps: 54      # pinned host-to-device copy, one GPU
      d2h_bandwidth_GBps: 55
      cpu_adam_params_per_s: 1.0e9   # DeepSpeedCPUAdam on one node's cores
      speed_from: h200-sxm           # optional: host speed and code-path costs borrowed from
                                     # another profile's measurements (predict notes it)
    overheads:
      zero3_module_hook_s: 2.0e-5    # per module per pass: fetch/release bookkeeping
      step_fixed_s: 2.0e-3           # engine.step() bookkeeping outside the optimizer
      micro_step_fixed_s: 0.0        # engine forward/backward bookkeeping per micro-step (optional)
      optimizer_bytes_per_param: 32  # HBM traffic of a fused Adam update per fp32 param
    memory:
      allocator_overhead_fraction: 0.02   # caching-allocator rounding seen by max_memory_allocated

Protocol entries (protocols: ll, ll128, simple; all fields optional but ``latency_s``):
``latency_s`` per algorithm step over the link; ``base_latency_s`` once per call (the
largest among the link types the call's steps cross is paid, on top of
``compute.kernel_launch_s``); ``bandwidth_fraction`` of the link's achieved bandwidth
(default 1); ``max_busbw_GBps`` caps the nccl-tests bus bandwidth of a call whose steps
cross this link type (default 0 = no cap); ``ring_step_floor_s`` (network links) is the
least an intra-node step of a ring that crosses nodes costs (NCCL's network proxy
overhead, default 0); ``rank_latency_s`` is paid per rank of the group (PAT's linear
term, default 0); ``algorithms: {<algorithm>: {...}}`` gives one algorithm its own values
(NCCL's tuner has a column per algorithm; unlisted fields are the protocol's). A protocol
runs only where the GPU-to-GPU link type (and ib across nodes) lists it; PAT only where
they list an entry for it. ``zsim.collectives`` prices each option and takes the fastest.
A link without ``protocols:`` runs Simple alone with its ``latency_s``.
"""

from __future__ import annotations

import bisect
import functools
import math
from importlib import resources
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from .errors import ZsimInputError
from .limits import max_for_key, show_number
from .tokenscan import ScanCurves, parse_scan_curves
from .yamlio import load_yaml_file  # noqa: F401  (re-exported: its old home)

#: Folder of the profiles that ship with zsim.
PROFILE_DIR = Path(str(resources.files("zsim").joinpath("data", "topologies", "hardware")))


@dataclass(frozen=True)
class GpuSpec:
    """Datasheet figures of one GPU."""

    name: str
    memory_bytes: int
    peak_bf16_flops: float
    peak_fp32_flops: float
    hbm_bandwidth_GBps: float


@dataclass(frozen=True)
class AttentionCurve:
    """Flash-attention efficiency for one head_dim against the sequence length.

    ``points``: (log2(seq), forward efficiency, backward efficiency), sorted by seq. The
    kernels differ by head_dim (a head_dim of 100 runs a padded 128-wide kernel at about a
    third of the speed of 128: validation microbenchmarks), so one number cannot serve.
    """

    head_dim: int
    points: tuple[tuple[float, float, float], ...]
    #: the value head dim when it differs from head_dim (MLA: q/k 192, v 128; YAML key
    #: "192x128"): SDPA's memory-efficient kernel, measured separately; 0 = equal dims
    v_head_dim: int = 0

    @property
    def key(self) -> str:
        """The curve's key in the profile YAML: "128", or "192x128" for unequal head dims."""
        return f"{self.head_dim}x{self.v_head_dim}" if self.v_head_dim else str(self.head_dim)

    def eff(self, seq: int, backward: bool) -> float:
        """Efficiency at ``seq``, linear in log2(seq) between points, flat beyond them."""
        x = math.log2(max(seq, 1))
        col = 2 if backward else 1
        pts = self.points
        if x <= pts[0][0]:
            return pts[0][col]
        for a, b in zip(pts, pts[1:]):
            if x <= b[0]:
                return a[col] + (b[col] - a[col]) * (x - a[0]) / (b[0] - a[0])
        return pts[-1][col]


#: ComputeProfile's memory-bound efficiencies a profile may leave out (0: not measured, the
#: profile's memory_bound_efficiency applies); written to YAML only when set.
OPTIONAL_MEMORY_EFFICIENCIES = ("strided_memory_efficiency", "forward_memory_efficiency",
                                "backward_memory_efficiency")


@dataclass(frozen=True)
class ComputeProfile:
    """How efficiently the GPU runs each kind of kernel."""

    gemm_efficiency: tuple[tuple[float, float], ...]
    attention_efficiency: float
    memory_bound_efficiency: float
    kernel_launch_s: float
    backward_to_forward_ratio: float = 2.0
    host_dispatch_s: float = -1.0   # < 0: same as kernel_launch_s
    attention_curves: tuple[AttentionCurve, ...] = ()   # per head_dim; () = one number
    #: fp32 GEMMs (no TF32, torch's default) against ``peak_fp32_flops``; () = the bf16 curve.
    gemm_efficiency_fp32: tuple[tuple[float, float], ...] = ()
    #: Fraction of HBM bandwidth for elementwise kernels over strided views (RoPE on the
    #: transposed q/k projections: torch's non-vectorised TensorIterator path); 0 = not
    #: measured, ``memory_bound_efficiency`` applies.
    strided_memory_efficiency: float = 0.0
    #: Fractions of HBM bandwidth at which a model's own memory-bound kernels (norms, the MLP
    #: gate, residual adds, loss) move the bytes zsim counts for them, in forward and in
    #: backward, measured on whole decoder layers (validation/microbench/layer.py): the real
    #: backward also runs layout copies, fills and gradient sums that the per-op count leaves
    #: out. 0 = not measured, ``memory_bound_efficiency`` applies.
    forward_memory_efficiency: float = 0.0
    backward_memory_efficiency: float = 0.0
    #: DeepSpeed-MoE's gate scans over the token axis (zsim.tokenscan); None = not measured
    token_scan_curves: ScanCurves | None = None

    def token_scan_s(self, tokens: int, experts: int) -> float:
        """GPU seconds of one token scan (zsim.tokenscan); refused when the profile has none."""
        if self.token_scan_curves is None:
            raise ZsimInputError(
                "this hardware profile has no compute.token_scan_curves: DeepSpeed-MoE's gate scans "
                "(torch.cumsum over tokens) are not priced on it (measure them with "
                "validation/microbench/moe_gate.py and zsim calibrate)")
        return self.token_scan_curves.seconds(tokens, experts)

    @property
    def strided_eff(self) -> float:
        """Efficiency of strided elementwise kernels (``memory_bound_efficiency`` if unmeasured)."""
        return self.strided_memory_efficiency or self.memory_bound_efficiency

    def module_memory_eff(self, backward: bool) -> float:
        """Efficiency of a module's contiguous memory-bound kernels in forward or backward."""
        measured = self.backward_memory_efficiency if backward else self.forward_memory_efficiency
        return measured or self.memory_bound_efficiency

    def attention_eff(self, head_dim: int, seq: int, backward: bool, v_head_dim: int = 0) -> float:
        """Attention efficiency for a head_dim and sequence: the curve of the nearest
        measured head_dim (the larger on a tie), else ``attention_efficiency``.

        A value head dim other than the q/k one (DeepSeek's MLA: 192 and 128) needs a curve
        measured at exactly those dims (key "192x128", from validation/microbench/attention.py):
        the equal-dim curves are timed where torch SDPA runs its flash kernel, and with unequal
        dims it cannot (check_head_dim_size_flash asks for equal last dimensions) and runs the
        memory-efficient kernel. Without such a curve it is refused. A profile of one figure
        (no curves) applies that figure to every kernel."""
        if not self.attention_curves or head_dim <= 0 or seq <= 0:
            return self.attention_efficiency
        if v_head_dim and v_head_dim != head_dim:
            for c in self.attention_curves:
                if (c.head_dim, c.v_head_dim) == (head_dim, v_head_dim):
                    return c.eff(seq, backward)
            raise ZsimInputError(
                f"attention with q/k head dim {head_dim} and v head dim {v_head_dim} (MLA) runs SDPA's "
                f"memory-efficient kernel, which this hardware profile does not measure (no attention curve "
                f"'{head_dim}x{v_head_dim}'; its curves are flash, equal head dims): zsim does not price it "
                "(run zsim calibrate with the attention microbenchmark, or use a profile without "
                "attention_curves, such as h200-sxm-datasheet, which applies its one attention_efficiency)")
        equal = [c for c in self.attention_curves if not c.v_head_dim] or list(self.attention_curves)
        curve = min(equal, key=lambda c: (abs(c.head_dim - head_dim), -c.head_dim))
        return curve.eff(seq, backward)

    @property
    def dispatch_s(self) -> float:
        """Host time to issue one eager-mode kernel (Python, dispatcher, hooks, launch).

        Separate from ``kernel_launch_s``, which prices a collective's own launch: eager
        PyTorch spends tens of microseconds per op on the host, NCCL a few on the GPU.
        """
        return self.kernel_launch_s if self.host_dispatch_s < 0 else self.host_dispatch_s

    def gemm_eff(self, flops: float, precision: str = "bf16") -> float:
        """Achieved fraction of the precision's peak for one GEMM of ``flops`` (= 2·m·n·k)
        operations: the fp32 curve for fp32 when the profile measured one."""
        curve = self.gemm_efficiency_fp32 if precision == "fp32" and self.gemm_efficiency_fp32 \
            else self.gemm_efficiency
        x = math.log10(max(flops, 1.0))
        xs = [p[0] for p in curve]
        i = bisect.bisect_left(xs, x)
        if i == 0:
            return curve[0][1]
        if i == len(xs):
            return curve[-1][1]
        (x0, y0), (x1, y1) = curve[i - 1], curve[i]
        return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


#: NCCL's protocols, in the order its tuner lists them.
PROTOCOL_NAMES = ("ll", "ll128", "simple")


@dataclass(frozen=True)
class ProtocolLink:
    """How one NCCL protocol (LL, LL128, Simple) behaves on one link type.

    ``latency_s``: per algorithm step; ``base_latency_s``: once per call;
    ``bandwidth_fraction``: of the link's achieved bandwidth; ``max_busbw_GBps``: cap on the
    call's bus bandwidth (0 = none); ``ring_step_floor_s``: least cost of an intra-node step
    of a ring that crosses nodes (set on network links; 0 = none); ``rank_latency_s``: per
    rank of the group (PAT's linear term); ``algorithms``: (algorithm, entry) pairs that
    replace this entry for one algorithm (NCCL's tuner has a column per algorithm).
    """

    latency_s: float
    base_latency_s: float = 0.0
    bandwidth_fraction: float = 1.0
    max_busbw_GBps: float = 0.0
    ring_step_floor_s: float = 0.0
    rank_latency_s: float = 0.0
    algorithms: tuple[tuple[str, "ProtocolLink"], ...] = ()

    def for_algorithm(self, algorithm: str) -> "ProtocolLink":
        """The entry ``algorithm`` uses: its override when there is one, else this one."""
        return dict(self.algorithms).get(algorithm, self)

    def to_dict(self) -> dict[str, Any]:
        """Plain data in the YAML schema (overrides written in full)."""
        out: dict[str, Any] = {k: v for k, v in vars(self).items() if k != "algorithms"}
        if self.algorithms:
            out["algorithms"] = {a: e.to_dict() for a, e in self.algorithms}
        return out


@dataclass(frozen=True)
class RingChannels:
    """NCCL's ring channel model of a GPU-to-GPU link type (``links.<type>.ring``).

    ``link_GBps``: the bandwidth NCCL's topology gives one link (NVLink per generation);
    ``datasheet_link_GBps``: one link's datasheet bandwidth (the topology's per-GPU figure
    divided by it gives the link count); ``speeds_GBps``: the per-channel bandwidths NCCL's
    ring search tries, fastest first; ``max_channels``: its channel limit;
    ``achieved_fraction``: (op, ((ranks, fraction), ...)) of NCCL's modelled ring busbw that
    calls reach, by ranks in the group (op ``default`` for the others); ``call_floor_s``:
    least time of one call issued back to back (host issue rate; 0 = none).
    """

    link_GBps: float
    datasheet_link_GBps: float
    speeds_GBps: tuple[float, ...]
    max_channels: int
    achieved_fraction: tuple[tuple[str, tuple[tuple[int, float], ...]], ...]
    call_floor_s: float = 0.0
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain data in the YAML schema."""
        return {"source": self.source, "link_GBps": self.link_GBps,
                "datasheet_link_GBps": self.datasheet_link_GBps,
                "speeds_GBps": list(self.speeds_GBps), "max_channels": self.max_channels,
                "achieved_fraction": {op: [list(p) for p in pts]
                                      for op, pts in self.achieved_fraction},
                "call_floor_s": self.call_floor_s}


@dataclass(frozen=True)
class LinkProfile:
    """Achieved fraction of a link type's bandwidth, its per-hop latency and, optionally,
    per-protocol latencies/bandwidth fractions (``protocols``, keyed by PROTOCOL_NAMES) and
    NCCL's ring channel model (``ring``, GPU-to-GPU links)."""

    efficiency: float
    latency_s: float
    protocols: Mapping[str, ProtocolLink] = field(default_factory=dict)
    ring: RingChannels | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data in the YAML schema (``protocols``/``ring`` only when present)."""
        out: dict[str, Any] = {"efficiency": self.efficiency, "latency_s": self.latency_s}
        if self.protocols:
            out["protocols"] = {k: v.to_dict() for k, v in sorted(self.protocols.items())}
        if self.ring:
            out["ring"] = self.ring.to_dict()
        return out


@dataclass(frozen=True)
class HostProfile:
    """Host side: copies, the CPU-side optimizer passes and the Python thread's speed.

    Host speed is a property of the machine (and even of the process): the profile records
    the reference speed measured on its machine (``small_linear_call_s``: one small
    ``nn.Linear`` call; ``empty_kernel_launch_s``: one tiny aten op in a tight loop, both
    from validation/train.py's host-speed microbenchmark) and dimensionless costs per code
    path in those units (``*_per_linear_call``, ``*_per_empty_launch``, fitted on traced runs);
    a run's own recorded speed replaces the reference (:func:`zsim.hostcost.at_host_speed`).
    Zero means "not in this profile": the older single-constant costs apply.

    CPU passes (DeepSpeedCPUAdam, the unscale and the fp32->16-bit cast that offload runs on
    the host) are OpenMP loops: each has a rate with all ``cpu_threads`` of a node and with
    one thread, or, when measured, a rate at each of several thread counts
    (``cpu_pass_curves``, validation/microbench/cpu_passes.py); :func:`zsim.hostcost.cpu_pass_rate`
    interpolates between them.
    """

    h2d_bandwidth_GBps: float
    d2h_bandwidth_GBps: float
    cpu_adam_params_per_s: float
    pageable_d2h_bandwidth_GBps: float = 0.0
    small_linear_call_s: float = 0.0
    empty_kernel_launch_s: float = 0.0
    module_launch_per_linear_call: float = 0.0
    loop_op_per_empty_launch: float = 0.0
    zero3_hook_per_linear_call: float = 0.0
    #: Activation checkpointing's own Python per checkpointed layer (torch.utils.checkpoint,
    #: non-reentrant: the frame, the RNG stash, a pack hook per saved tensor; on recompute the
    #: RNG restore and the recomputation and unpack hooks), measured by
    #: validation/microbench/checkpoint.py.
    checkpoint_forward_per_linear_call: float = 0.0
    checkpoint_recompute_per_linear_call: float = 0.0
    #: Host time per launch of DeepSpeed-MoE's gate (plain torch calls, no module around each)
    #: over that of module code, measured in one process by validation/microbench/moe_host.py
    #: (0 = not measured: the gate's launches cost what module code's do).
    moe_gate_launch_per_module_launch: float = 0.0
    sync_s: float = 0.0
    cpu_threads: int = 0
    cpu_adam_1thread_params_per_s: float = 0.0
    cpu_unscale_params_per_s: float = 0.0
    cpu_unscale_1thread_params_per_s: float = 0.0
    cpu_cast_params_per_s: float = 0.0
    cpu_cast_1thread_params_per_s: float = 0.0
    #: Measured rates per pass ("adam", "unscale", "cast") at several thread counts:
    #: ((pass, ((threads, params_per_s), ...)), ...), threads ascending. When a pass has one,
    #: it replaces that pass's two-point rates above.
    cpu_pass_curves: tuple[tuple[str, tuple[tuple[float, float], ...]], ...] = ()
    #: Profile whose measured host speed and code-path costs this one borrows ("" = measured
    #: on this profile's own machine); `zsim predict` says so in its notes.
    speed_from: str = ""
    #: How a run's own measured host speed moves the host costs: each cost scales as
    #: (measured / reference speed) ** speed_exponent. 1 is proportional; below 1 the costs
    #: follow a short probe less than in proportion (see :func:`zsim.hostcost.at_host_speed`).
    speed_exponent: float = 1.0

    @property
    def prices_code_paths(self) -> bool:
        """True when host time is priced per code path in units of a host speed."""
        return self.small_linear_call_s > 0 and self.module_launch_per_linear_call > 0


@dataclass(frozen=True)
class OverheadProfile:
    """Framework costs that are neither kernels nor collectives."""

    zero3_module_hook_s: float
    step_fixed_s: float
    optimizer_bytes_per_param: float = 32.0
    micro_step_fixed_s: float = 0.0   # engine forward/backward bookkeeping per micro-step
    #: Host seconds of activation checkpointing per checkpointed layer, in forward and when
    #: its backward recomputes it (derived from the host section's per-linear-call costs).
    checkpoint_forward_s: float = 0.0
    checkpoint_recompute_s: float = 0.0


#: OverheadProfile fields that only with_derived_host_costs sets (never read from YAML).
DERIVED_OVERHEADS = ("checkpoint_forward_s", "checkpoint_recompute_s")


@dataclass(frozen=True)
class MemoryProfile:
    """Allocator behaviour that max_memory_allocated reflects."""

    allocator_overhead_fraction: float = 0.0


@dataclass(frozen=True, eq=False)
class HardwareProfile:
    """A complete hardware profile; see the module docstring for the YAML schema.

    Compared and hashed by identity (it holds a mapping), so it can key caches.
    """

    name: str
    version: int
    calibrated: bool
    source: str
    gpu: GpuSpec
    compute: ComputeProfile
    links: Mapping[str, LinkProfile]
    host: HostProfile
    overheads: OverheadProfile
    memory: MemoryProfile = field(default_factory=MemoryProfile)

    def link(self, link_type: str) -> LinkProfile:
        """The profile of ``link_type`` (nvlink, pcie, ib, ...); an error names missing ones."""
        try:
            return self.links[link_type]
        except KeyError:
            raise ZsimInputError(
                f"hardware profile {self.name!r} has no link type {link_type!r} "
                f"(has: {', '.join(sorted(self.links))})"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """The profile as plain data, in the YAML schema (for writing a calibrated profile)."""
        return {
            "name": self.name,
            "version": self.version,
            "calibrated": self.calibrated,
            "source": self.source,
            "gpu": vars(self.gpu).copy(),
            "compute": {
                "gemm_efficiency": [list(p) for p in self.compute.gemm_efficiency],
                "attention_efficiency": self.compute.attention_efficiency,
                "memory_bound_efficiency": self.compute.memory_bound_efficiency,
                "kernel_launch_s": self.compute.kernel_launch_s,
                "host_dispatch_s": self.compute.dispatch_s,
                "backward_to_forward_ratio": self.compute.backward_to_forward_ratio,
                **({"attention_curves": {(c.key if c.v_head_dim else c.head_dim): [list(p) for p in c.points]
                                         for c in self.compute.attention_curves}}
                   if self.compute.attention_curves else {}),
                **({"token_scan_curves": self.compute.token_scan_curves.to_dict()}
                   if self.compute.token_scan_curves else {}),
                **({"gemm_efficiency_fp32": [list(p) for p in self.compute.gemm_efficiency_fp32]}
                   if self.compute.gemm_efficiency_fp32 else {}),
                **{k: getattr(self.compute, k) for k in OPTIONAL_MEMORY_EFFICIENCIES
                   if getattr(self.compute, k)},
            },
            "links": {k: v.to_dict() for k, v in sorted(self.links.items())},
            "host": _host_dict(self.host),
            # checkpoint_*_s are always derived from the host section (with_derived_host_costs)
            "overheads": {k: v for k, v in vars(self.overheads).items() if k not in DERIVED_OVERHEADS},
            "memory": vars(self.memory).copy(),
        }


def _num(data: Mapping[str, Any], key: str, where: str, *, positive: bool = True,
         allow_zero: bool = False) -> float:
    """Read a finite number, with an error naming ``where.key`` when it is missing or bad."""
    if not isinstance(data, Mapping) or key not in data:
        raise ZsimInputError(f"{where}: missing key {key!r}")
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ZsimInputError(f"{where}.{key}: expected a number, got {value!r}")
    try:
        number = float(value)
    except (ValueError, OverflowError):  # OverflowError: an integer too large for a float
        raise ZsimInputError(f"{where}.{key}: expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ZsimInputError(f"{where}.{key}: must be finite, got {value!r}")
    if positive and (number < 0 or (number == 0 and not allow_zero)):
        raise ZsimInputError(f"{where}.{key}: must be positive, got {value!r}")
    bound = max_for_key(key)  # by the unit the key names (zsim.limits.UNIT_MAX)
    if abs(number) > bound:
        raise ZsimInputError(f"{where}.{key}: must be at most {bound:g}, got {show_number(value)}")
    return number


def _flag(data: Mapping[str, Any], key: str, where: str) -> bool:
    """A true/false key (absent: false); the string "false" must not read as true."""
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise ZsimInputError(f"{where}.{key}: expected true or false, got {value!r}")
    return value


def _section(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = data.get(key) if isinstance(data, Mapping) else None
    if not isinstance(value, Mapping):
        raise ZsimInputError(f"{where}: missing or malformed section {key!r}")
    return value


def _protocols(link: Mapping[str, Any], where: str) -> dict[str, ProtocolLink]:
    """The optional ``protocols:`` of one link entry, every field checked."""
    raw = link.get("protocols") if isinstance(link, Mapping) else None
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ZsimInputError(f"{where}.protocols: expected a mapping of protocol -> fields")
    out = {}
    for proto, entry in raw.items():
        pw = f"{where}.protocols.{proto}"
        if proto not in PROTOCOL_NAMES:
            raise ZsimInputError(f"{pw}: unknown protocol (choose from {', '.join(PROTOCOL_NAMES)})")
        base = _protocol_entry(entry, pw)
        overrides = entry.get("algorithms") or {}
        if not isinstance(overrides, Mapping):
            raise ZsimInputError(f"{pw}.algorithms: expected a mapping of algorithm -> fields")
        # An override lists only what differs for that algorithm; the rest is the protocol's.
        algos = tuple(sorted(
            (str(a), _protocol_entry(o, f"{pw}.algorithms.{a}", inherit=entry))
            for a, o in overrides.items()))
        out[str(proto)] = replace(base, algorithms=algos)
    return out


def _protocol_entry(entry: Any, where: str, inherit: Mapping[str, Any] | None = None) -> ProtocolLink:
    """One protocol entry (``inherit``: the protocol's own entry, for algorithm overrides)."""
    if not isinstance(entry, Mapping):
        raise ZsimInputError(f"{where}: expected a mapping with latency_s")
    allowed = set(ProtocolLink.__dataclass_fields__) - ({"algorithms"} if inherit else set())
    unknown = set(entry) - allowed
    if unknown:
        raise ZsimInputError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    merged = {**{k: v for k, v in (inherit or {}).items() if k != "algorithms"}, **entry}

    def opt(key: str, default: float, **kw: Any) -> float:
        return _num(merged, key, where, **kw) if key in merged else default
    fraction = opt("bandwidth_fraction", 1.0)
    if fraction > 1.0:
        raise ZsimInputError(f"{where}.bandwidth_fraction: must be at most 1, got {fraction}")
    return ProtocolLink(
        latency_s=_num(merged, "latency_s", where, allow_zero=True),
        base_latency_s=opt("base_latency_s", 0.0, allow_zero=True),
        bandwidth_fraction=fraction,
        max_busbw_GBps=opt("max_busbw_GBps", 0.0, allow_zero=True),
        ring_step_floor_s=opt("ring_step_floor_s", 0.0, allow_zero=True),
        rank_latency_s=opt("rank_latency_s", 0.0, allow_zero=True))


def _ring(link: Mapping[str, Any], where: str) -> RingChannels | None:
    """The optional ``ring:`` (NCCL ring channel model) of one link entry, checked."""
    raw = link.get("ring") if isinstance(link, Mapping) else None
    if raw is None:
        return None
    rw = f"{where}.ring"
    if not isinstance(raw, Mapping):
        raise ZsimInputError(f"{rw}: expected a mapping")
    unknown = set(raw) - set(RingChannels.__dataclass_fields__)
    if unknown:
        raise ZsimInputError(f"{rw}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    speeds = raw.get("speeds_GBps")
    if not isinstance(speeds, list) or not speeds:
        raise ZsimInputError(f"{rw}.speeds_GBps: expected a list of per-channel GB/s")
    speeds_GBps = tuple(_num({f"[{i}]": v}, f"[{i}]", f"{rw}.speeds_GBps")
                        for i, v in enumerate(speeds))
    if list(speeds_GBps) != sorted(speeds_GBps, reverse=True):
        raise ZsimInputError(f"{rw}.speeds_GBps: must be sorted fastest first")
    fractions = raw.get("achieved_fraction")
    if not isinstance(fractions, Mapping) or "default" not in fractions:
        raise ZsimInputError(f"{rw}.achieved_fraction: expected a mapping op -> [[ranks, "
                             f"fraction], ...] with a 'default' entry")
    table = []
    for op, pts in sorted(fractions.items()):
        if not isinstance(pts, list) or not pts or not all(
                isinstance(p, (list, tuple)) and len(p) == 2 for p in pts):
            raise ZsimInputError(f"{rw}.achieved_fraction.{op}: expected [[ranks, fraction], ...]")
        row = tuple((int(_num({"ranks": p[0]}, "ranks", f"{rw}.achieved_fraction.{op}[{i}]")),
                     _num({"fraction": p[1]}, "fraction", f"{rw}.achieved_fraction.{op}[{i}]"))
                    for i, p in enumerate(pts))
        if any(b[0] <= a[0] for a, b in zip(row, row[1:])):
            raise ZsimInputError(f"{rw}.achieved_fraction.{op}: ranks must increase")
        table.append((str(op), row))
    return RingChannels(
        link_GBps=_num(raw, "link_GBps", rw),
        datasheet_link_GBps=_num(raw, "datasheet_link_GBps", rw),
        speeds_GBps=speeds_GBps,
        max_channels=int(_num(raw, "max_channels", rw)),
        achieved_fraction=tuple(table),
        call_floor_s=_num(raw, "call_floor_s", rw, allow_zero=True) if "call_floor_s" in raw else 0.0,
        source=str(raw.get("source", "")))


#: Optional host fields (0 = absent), see :class:`HostProfile`.
_HOST_OPTIONAL = ("pageable_d2h_bandwidth_GBps", "small_linear_call_s", "empty_kernel_launch_s",
                  "module_launch_per_linear_call", "loop_op_per_empty_launch",
                  "zero3_hook_per_linear_call", "checkpoint_forward_per_linear_call",
                  "checkpoint_recompute_per_linear_call", "moe_gate_launch_per_module_launch", "sync_s",
                  "cpu_adam_1thread_params_per_s",
                  "cpu_unscale_params_per_s", "cpu_unscale_1thread_params_per_s",
                  "cpu_cast_params_per_s", "cpu_cast_1thread_params_per_s")


#: The CPU passes of optimizer offload that a profile may give per-thread rates for.
CPU_PASS_NAMES = ("adam", "unscale", "cast")


def _host_dict(h: HostProfile) -> dict[str, Any]:
    """The host section as plain data (``cpu_pass_curves`` as a mapping, only when present)."""
    out = vars(h).copy()
    curves = out.pop("cpu_pass_curves")
    if curves:
        out["cpu_pass_curves"] = {name: [list(p) for p in pts] for name, pts in curves}
    return out


def _cpu_pass_curves(raw: Any, where: str) -> tuple[tuple[str, tuple[tuple[float, float], ...]], ...]:
    """``host.cpu_pass_curves``: {pass: [[threads, params_per_s], ...]}, threads ascending."""
    where = f"{where}.cpu_pass_curves"
    if not isinstance(raw, Mapping):
        raise ZsimInputError(f"{where}: expected a mapping of pass name to [[threads, params_per_s], ...]")
    out = []
    for name in sorted(raw):
        if name not in CPU_PASS_NAMES:
            raise ZsimInputError(f"{where}: unknown CPU pass {name!r} (known: {', '.join(CPU_PASS_NAMES)})")
        pts = raw[name]
        if not isinstance(pts, list) or not pts:
            raise ZsimInputError(f"{where}.{name}: expected a non-empty list of [threads, params_per_s]")
        rows = []
        for i, pt in enumerate(pts):
            if not (isinstance(pt, (list, tuple)) and len(pt) == 2):
                raise ZsimInputError(f"{where}.{name}[{i}]: expected [threads, params_per_s]")
            t = _num({"threads": pt[0]}, "threads", f"{where}.{name}[{i}]")
            rate = _num({"params_per_s": pt[1]}, "params_per_s", f"{where}.{name}[{i}]")
            if t < 1:
                raise ZsimInputError(f"{where}.{name}[{i}]: threads must be at least 1, got {t}")
            rows.append((t, rate))
        if any(b[0] <= a[0] for a, b in zip(rows, rows[1:])):
            raise ZsimInputError(f"{where}.{name}: points must be sorted by threads, each count once")
        out.append((name, tuple(rows)))
    return tuple(out)


def _host(h: Mapping[str, Any], where: str) -> HostProfile:
    """The host section: three required fields, the rest optional (0 when absent)."""
    opt: dict[str, Any] = {k: _num(h, k, where, allow_zero=True) for k in _HOST_OPTIONAL if k in h}
    if h.get("cpu_pass_curves"):
        opt["cpu_pass_curves"] = _cpu_pass_curves(h["cpu_pass_curves"], where)
    if "cpu_threads" in h:
        opt["cpu_threads"] = int(_num(h, "cpu_threads", where, allow_zero=True))
    if "speed_exponent" in h:   # 0 is meaningful here (costs ignore the run's probe)
        opt["speed_exponent"] = _num(h, "speed_exponent", where, allow_zero=True)
    if "speed_from" in h:   # "" (as to_dict writes it for a profile's own speed) = absent
        if not isinstance(h["speed_from"], str):
            raise ZsimInputError(f"{where}: speed_from must name the profile the host speed comes from")
        opt["speed_from"] = h["speed_from"].strip()
    return HostProfile(h2d_bandwidth_GBps=_num(h, "h2d_bandwidth_GBps", where),
                       d2h_bandwidth_GBps=_num(h, "d2h_bandwidth_GBps", where),
                       cpu_adam_params_per_s=_num(h, "cpu_adam_params_per_s", where), **opt)


def _attention_curves(raw: Any, where: str) -> tuple[AttentionCurve, ...]:
    """``{head_dim: [[log2_seq, fwd_eff, bwd_eff], ...]}`` -> curves (absent: none); a key
    "QKxV" ("192x128") is a curve of unequal q/k and v head dims."""
    if raw is None:
        return ()
    if not isinstance(raw, Mapping) or not raw:
        raise ZsimInputError(f"{where}: expected a mapping head_dim -> [[log2_seq, fwd_eff, bwd_eff], ...]")
    curves = []
    for key, pts in sorted(raw.items(), key=lambda kv: str(kv[0])):
        vd = 0
        if isinstance(key, str) and key.count("x") == 1 and all(k.isdigit() for k in key.split("x")):
            hd, vd = (int(k) for k in key.split("x"))
        else:
            hd = int(key) if isinstance(key, str) and key.isdigit() else key
        if not isinstance(hd, int) or not 0 < hd <= 4096 or not 0 <= vd <= 4096:
            raise ZsimInputError(f"{where}: head_dim key {key!r} must be an integer in 1..4096 or QKxV")
        if not isinstance(pts, list) or not pts:
            raise ZsimInputError(f"{where}.{hd}: expected a list of [log2_seq, fwd_eff, bwd_eff]")
        rows = []
        for i, pt in enumerate(pts):
            if not (isinstance(pt, (list, tuple)) and len(pt) == 3):
                raise ZsimInputError(f"{where}.{hd}[{i}]: expected [log2_seq, fwd_eff, bwd_eff]")
            x = _num({"log2_seq": pt[0]}, "log2_seq", f"{where}.{hd}[{i}]")
            effs = [_num({"efficiency": v}, "efficiency", f"{where}.{hd}[{i}]") for v in pt[1:]]
            if any(e > 1.0 for e in effs):
                raise ZsimInputError(f"{where}.{hd}[{i}]: efficiency above 1")
            rows.append((x, effs[0], effs[1]))
        if any(b[0] <= a[0] for a, b in zip(rows, rows[1:])):
            raise ZsimInputError(f"{where}.{hd}: points must be sorted by log2_seq")
        curves.append(AttentionCurve(hd, tuple(rows), 0 if vd == hd else vd))
    return tuple(curves)


def with_derived_host_costs(hw: HardwareProfile) -> HardwareProfile:
    """``hw`` with the per-kernel dispatch of module code and the ZeRO-3 hook cost derived
    from its host speed and code-path costs (see :class:`HostProfile`); unchanged when the
    profile has none. Every loaded profile goes through this, so every command prices the
    host the same way."""
    h = hw.host
    if not h.prices_code_paths:
        return hw
    compute = replace(hw.compute, host_dispatch_s=h.module_launch_per_linear_call * h.small_linear_call_s)
    overheads = hw.overheads
    if h.zero3_hook_per_linear_call > 0:
        overheads = replace(overheads, zero3_module_hook_s=h.zero3_hook_per_linear_call * h.small_linear_call_s)
    if h.checkpoint_forward_per_linear_call > 0 or h.checkpoint_recompute_per_linear_call > 0:
        overheads = replace(overheads,
                            checkpoint_forward_s=h.checkpoint_forward_per_linear_call * h.small_linear_call_s,
                            checkpoint_recompute_s=h.checkpoint_recompute_per_linear_call * h.small_linear_call_s)
    return replace(hw, compute=compute, overheads=overheads)


def _gemm_curve(curve: Any, key: str, where: str) -> tuple[tuple[float, float], ...]:
    """A GEMM efficiency curve: at least two [log10_flops, efficiency] points, sorted, <= 1."""
    if not isinstance(curve, list) or len(curve) < 2:
        raise ZsimInputError(f"{where}: compute.{key} needs at least two [log10_flops, eff] points")
    points = []
    for i, p in enumerate(curve):
        if not (isinstance(p, (list, tuple)) and len(p) == 2):
            raise ZsimInputError(f"{where}: compute.{key}[{i}] must be [log10_flops, efficiency]")
        x = _num({"x": p[0]}, "x", f"{where}.compute.{key}[{i}]")
        y = _num({"y": p[1]}, "y", f"{where}.compute.{key}[{i}]")
        if y > 1.0:
            raise ZsimInputError(f"{where}: compute.{key}[{i}] efficiency {y} exceeds 1")
        points.append((x, y))
    if any(b[0] <= a[0] for a, b in zip(points, points[1:])):
        raise ZsimInputError(f"{where}: compute.{key} points must be sorted by log10_flops")
    return tuple(points)


def profile_from_dict(data: Mapping[str, Any], where: str = "hardware profile") -> HardwareProfile:
    """Build a :class:`HardwareProfile` from parsed YAML, checking every field."""
    if not isinstance(data, Mapping):
        raise ZsimInputError(f"{where}: expected a mapping at the top level")
    g = _section(data, "gpu", where)
    c = _section(data, "compute", where)
    h = _section(data, "host", where)
    o = _section(data, "overheads", where)
    m = data.get("memory", {}) or {}
    points = _gemm_curve(c.get("gemm_efficiency"), "gemm_efficiency", where)
    points_fp32 = _gemm_curve(c["gemm_efficiency_fp32"], "gemm_efficiency_fp32", where) \
        if "gemm_efficiency_fp32" in c else ()
    links_raw = _section(data, "links", where)
    links = {}
    for name, lk in sorted(links_raw.items()):
        lw = f"{where}.links.{name}"
        links[str(name)] = LinkProfile(
            efficiency=_num(lk, "efficiency", lw), latency_s=_num(lk, "latency_s", lw, allow_zero=True),
            protocols=_protocols(lk, lw), ring=_ring(lk, lw))
    return with_derived_host_costs(HardwareProfile(
        name=str(data.get("name", "unnamed")),
        version=int(_num(data, "version", where)) if "version" in data else 1,
        calibrated=_flag(data, "calibrated", where),
        source=str(data.get("source", "")),
        gpu=GpuSpec(
            name=str(g.get("name", "gpu")),
            memory_bytes=int(_num(g, "memory_bytes", f"{where}.gpu")),
            peak_bf16_flops=_num(g, "peak_bf16_flops", f"{where}.gpu"),
            peak_fp32_flops=_num(g, "peak_fp32_flops", f"{where}.gpu"),
            hbm_bandwidth_GBps=_num(g, "hbm_bandwidth_GBps", f"{where}.gpu"),
        ),
        compute=ComputeProfile(
            gemm_efficiency=points,
            attention_efficiency=_num(c, "attention_efficiency", f"{where}.compute"),
            memory_bound_efficiency=_num(c, "memory_bound_efficiency", f"{where}.compute"),
            kernel_launch_s=_num(c, "kernel_launch_s", f"{where}.compute", allow_zero=True),
            backward_to_forward_ratio=_num(c, "backward_to_forward_ratio", f"{where}.compute")
            if "backward_to_forward_ratio" in c else 2.0,
            host_dispatch_s=_num(c, "host_dispatch_s", f"{where}.compute", allow_zero=True)
            if "host_dispatch_s" in c else -1.0,
            attention_curves=_attention_curves(c.get("attention_curves"), f"{where}.compute.attention_curves"),
            token_scan_curves=parse_scan_curves(c.get("token_scan_curves"), f"{where}.compute.token_scan_curves"),
            gemm_efficiency_fp32=points_fp32,
            **{k: _num(c, k, f"{where}.compute", allow_zero=True) for k in OPTIONAL_MEMORY_EFFICIENCIES
               if k in c},
        ),
        links=links,
        host=_host(h, f"{where}.host"),
        overheads=OverheadProfile(
            zero3_module_hook_s=_num(o, "zero3_module_hook_s", f"{where}.overheads", allow_zero=True),
            step_fixed_s=_num(o, "step_fixed_s", f"{where}.overheads", allow_zero=True),
            optimizer_bytes_per_param=_num(o, "optimizer_bytes_per_param", f"{where}.overheads")
            if "optimizer_bytes_per_param" in o else 32.0,
            micro_step_fixed_s=_num(o, "micro_step_fixed_s", f"{where}.overheads", allow_zero=True)
            if "micro_step_fixed_s" in o else 0.0,
        ),
        memory=MemoryProfile(
            allocator_overhead_fraction=_num(m, "allocator_overhead_fraction", f"{where}.memory",
                                             allow_zero=True)
            if isinstance(m, Mapping) and "allocator_overhead_fraction" in m else 0.0,
        ),
    ))


def list_profiles() -> list[str]:
    """Names of the profiles that ship with zsim."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def _exists(path: Path) -> bool:
    """``path.exists()``, False for names the file system cannot hold (too long, NUL bytes)."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def load_profile(name_or_path: str | Path) -> HardwareProfile:
    """Load a shipped profile by name or any profile YAML by path."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith((".yaml", ".yml")) or _exists(path)):
        path = PROFILE_DIR / f"{text}.yaml"
        if not _exists(path):
            raise ZsimInputError(
                f"unknown hardware profile {text[:200]!r} (known: {', '.join(list_profiles())})")
    return profile_from_dict(load_yaml_file(path, "hardware profile"), where=str(path.name))


@functools.lru_cache(maxsize=64)
def shared_profile(name_or_path: str) -> HardwareProfile:
    """:func:`load_profile`, read once per name: for callers that pass profile names through
    hot paths (the deprecated name form of :mod:`zsim.collectives`). Profiles are frozen,
    so sharing one is safe."""
    return load_profile(name_or_path)
