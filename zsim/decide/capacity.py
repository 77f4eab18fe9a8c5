"""`zsim capacity`: the largest Llama-shaped model that fits, per ZeRO stage and offload choice.

The model family ("llama-2 family curve"): hidden size h in steps of 256 (1024 from 8192 on,
so that GQA's 8 KV heads divide the heads), heads = h / 128,
layers and MLP width interpolated piecewise-linearly in h through the Llama-2 7B, 13B and
70B shapes (h, layers, intermediate) = (4096, 32, 11008), (5120, 40, 13824), (8192, 80, 28672);
below 7B layers = h / 128, above 70B the 13B→70B slope continues; grouped-query attention
with 8 KV heads from h = 8192 on (as in 70B), full multi-head attention below; vocabulary
32000. Points whose size is not below every larger point (the switch to GQA makes a few MHA
shapes just under 70B larger than 70B) are dropped, so size grows strictly along the ladder.

A model fits when zsim's per-GPU memory peak (the same model `zsim predict` uses) is at most
the GPU's memory. CPU memory is not a limit here (topologies do not state it): with offload, the
host bytes each node needs are printed beside the figure. The guides' rule of thumb for 8×A100-80G is printed beside zsim's figures
with the assumptions under which each figure holds or fails.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from ..defaults import CAPACITY_MICRO_BATCH, DEFAULT_SEQ_LEN, DEFAULT_TOPO
from ..dsconfig import OffloadDevice, default_overlap_comm
from ..errors import ZsimInputError
from ..hardware import HardwareProfile
from ..job import RunSettings
from ..model import ModelSpec
from ..output import MEMORY_LABELS, format_bytes
from ..predict import predict_settings
from .autoconfig import read_user_config
from .evaluate import Evaluator, MemoryVerdict, Setting, setting_of
from .space import Candidate

#: Llama-2 anchors: (hidden, layers, intermediate) of 7B, 13B and 70B (published config.json).
ANCHORS = ((4096, 32, 11008), (5120, 40, 13824), (8192, 80, 28672))
HIDDEN_STEP = 256
HIDDEN_RANGE = (1024, 32768)

#: The guides' stage-selection rule of thumb for 8×A100-80G: stage -> (params, communication).
RULE_OF_THUMB = {1: (30e9, "low"), 2: (60e9, "medium"), 3: (100e9, "high")}

#: Communication is compared on one reference run per stage: this model, micro-batch 1 and
#: this many micro-steps (stages 2 and 3 communicate on every micro-step, stage 1 only at
#: the optimizer step, which is what makes the guides' low / medium / high).
COMM_REFERENCE_MODEL = "llama-2-7b"
COMM_REFERENCE_GRAD_ACCUM = 4

#: Rows of the table: (stage, offload_optimizer, offload_param).
_NONE, _CPU = OffloadDevice.NONE.value, OffloadDevice.CPU.value
ROWS = ((0, _NONE, _NONE), (1, _NONE, _NONE), (1, _CPU, _NONE), (2, _NONE, _NONE),
        (2, _CPU, _NONE), (3, _NONE, _NONE), (3, _CPU, _NONE), (3, _CPU, _CPU))


def _interp(h: int, col: int) -> float:
    pts = [(a[0], a[col]) for a in ANCHORS]
    if h <= pts[0][0]:
        # Below 7B: fixed aspect (layers = h/128) and the 7B MLP ratio.
        return h / 128 if col == 1 else h * pts[0][1] / pts[0][0]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if h <= x1:
            return y0 + (y1 - y0) * (h - x0) / (x1 - x0)
    (x0, y0), (x1, y1) = pts[-2], pts[-1]
    if col == 1:
        return y1 + (y1 - y0) * (h - x1) / (x1 - x0)
    return h * y1 / x1           # MLP ratio of 70B beyond it


def family_shape(hidden: int) -> ModelSpec:
    """The family member of hidden size ``hidden`` (a multiple of 128)."""
    layers = max(1, round(_interp(hidden, 1)))
    inter = max(256, round(_interp(hidden, 2) / 256) * 256)
    heads = hidden // 128
    kv = 8 if hidden >= 8192 else heads
    return ModelSpec(name=f"llama-family-h{hidden}-l{layers}", hidden_size=hidden, num_layers=layers,
                     num_heads=heads, num_kv_heads=kv, intermediate_size=inter, vocab_size=32000)


@lru_cache(maxsize=1)
def family() -> tuple[ModelSpec, ...]:
    """The ladder, strictly increasing in parameter count."""
    # GQA with 8 KV heads needs heads (h / 128) divisible by 8: steps of 1024 from h = 8192.
    hiddens = [h for h in range(HIDDEN_RANGE[0], HIDDEN_RANGE[1] + 1, HIDDEN_STEP) if h < 8192 or h % 1024 == 0]
    ladder = [family_shape(h) for h in hiddens]
    kept: list[ModelSpec] = []
    smallest_after = float("inf")
    for spec in reversed(ladder):
        if spec.num_parameters < smallest_after:
            kept.append(spec)
            smallest_after = spec.num_parameters
    return tuple(reversed(kept))


@dataclass(frozen=True)
class CapacityRow:
    """The largest fitting family member for one stage/offload/checkpointing choice."""

    stage: int
    offload_optimizer: str
    offload_param: str
    activation_checkpointing: bool
    largest: ModelSpec | None          # None: not even the smallest member fits
    largest_peak_bytes: int
    next_larger: ModelSpec | None      # the first member that does not fit (None: ladder top fits)
    limit: str                         # why the next member does not fit
    host_bytes_per_node: int = 0       # CPU memory the offloaded states of `largest` need per node
    limit_short: str = ""              # the overflow and its largest term, e.g. "+4.15 GiB (params)"

    @property
    def at_ladder_end(self) -> bool:
        """The largest model tried fits: the real capacity is larger than the ladder shows."""
        return self.largest is not None and self.next_larger is None

    def capacity_text(self, short: bool = False) -> str:
        """``13.0B``, ``>= 5397.7B (largest tried)`` at the ladder's end (``short``: without the
        parenthesis), or ``none``."""
        text = _fmt_params(self.largest_params)
        if not self.at_ladder_end:
            return text
        return f"\u2265 {text}" + ("" if short else " (largest tried)")

    @property
    def largest_params(self) -> int:
        """Parameters of the largest fitting model (0 when none fits)."""
        return self.largest.num_parameters if self.largest else 0

    @property
    def label(self) -> str:
        """e.g. ``ZeRO-3 + optimizer cpu + param cpu``."""
        out = f"ZeRO-{self.stage}"
        if self.offload_optimizer != OffloadDevice.NONE:
            out += f" + opt {self.offload_optimizer}"
        if self.offload_param != OffloadDevice.NONE:
            out += f" + param {self.offload_param}"
        return out


@dataclass(frozen=True)
class CapacityResult:
    """The capacity table and the rule-of-thumb comparison."""

    topology: str
    world_size: int
    seq_len: int
    micro_batch: int
    gpu_memory_bytes: int
    rows: tuple[CapacityRow, ...]
    family_note: str
    rule_of_thumb: tuple[str, ...]
    comm_busy_s: tuple[tuple[int, float], ...] = ()   # (stage, busy comm seconds per step), reference run
    host_memory_bytes_per_node: int = 0   # the node's host memory (topology node.host; 0: not given)

    def largest(self, stage: int, offload_optimizer: str = _NONE, offload_param: str = _NONE,
                activation_checkpointing: bool = False) -> int:
        """Parameters of the largest fitting model for one row and column (0: none fits)."""
        for r in self.rows:
            if (r.stage, r.offload_optimizer, r.offload_param, r.activation_checkpointing) == (
                    stage, offload_optimizer, offload_param, activation_checkpointing):
                return r.largest_params
        raise KeyError((stage, offload_optimizer, offload_param, activation_checkpointing))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready table."""
        return {"topology": self.topology, "world_size": self.world_size, "seq_len": self.seq_len,
                "micro_batch": self.micro_batch, "gpu_memory_bytes": self.gpu_memory_bytes,
                "host_memory_bytes_per_node": self.host_memory_bytes_per_node,
                "family": self.family_note, "rule_of_thumb": list(self.rule_of_thumb),
                "comm_reference": {"model": COMM_REFERENCE_MODEL, "grad_accum": COMM_REFERENCE_GRAD_ACCUM,
                                   "busy_s_by_stage": {str(k): v for k, v in self.comm_busy_s}},
                "rows": [{"stage": r.stage, "offload_optimizer": r.offload_optimizer,
                          "offload_param": r.offload_param,
                          "activation_checkpointing": r.activation_checkpointing,
                          "largest_model": r.largest.name if r.largest else None,
                          "largest_params": r.largest_params, "largest_peak_bytes": r.largest_peak_bytes,
                          "next_larger_params": r.next_larger.num_parameters if r.next_larger else None,
                          "limit": r.limit, "host_bytes_per_node": r.host_bytes_per_node} for r in self.rows]}



def _fits(spec: ModelSpec, base: Setting, cand: Candidate) -> MemoryVerdict:
    """Memory verdict of ``cand`` for ``spec`` on the base setting's cluster and profile."""
    return Evaluator(setting_of(replace(base.settings, model=spec), base.user)).memory(cand)


def _largest(ladder: tuple[ModelSpec, ...], base: Setting, cand: Candidate, hint: int = -1
             ) -> tuple[int, MemoryVerdict | None, MemoryVerdict | None]:
    """Index of the largest fitting member (-1: none), with the verdicts at it and one above.

    Gallops up from ``hint`` (a member that fits under a related choice; checked, not
    assumed), then bisects: small models are cheap to check, so the search stays low when
    the answer is low. Fit is monotone along the ladder (every term grows with the shape).
    """
    verdicts: dict[int, MemoryVerdict] = {}

    def fits(i: int) -> bool:
        if i not in verdicts:
            verdicts[i] = _fits(ladder[i], base, cand)
        return verdicts[i].fits

    lo, hi = (hint if hint >= 0 and fits(hint) else -1), len(ladder)
    step = 1
    while True:                       # invariant: ladder[lo] fits (or lo = -1), ladder[hi] does not
        probe = min(lo + step, hi - 1)
        if probe <= lo:
            break
        if fits(probe):
            lo, step = probe, step * 2
        else:
            hi = probe
            break
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo, verdicts.get(lo), verdicts.get(hi)


def capacity(topo: str | Path = DEFAULT_TOPO, *, gpus: int | None = None, nodes: int | None = None,
             seq: int = DEFAULT_SEQ_LEN, micro_batch: int = CAPACITY_MICRO_BATCH,
             hardware: str | Path | HardwareProfile | None = None,
             checkpointing: tuple[bool, ...] = (False, True),
             rows: tuple[tuple[int, str, str], ...] = ROWS) -> CapacityResult:
    """Largest family member that fits, per row of ``rows`` (default :data:`ROWS`) and
    checkpointing choice."""
    return capacity_settings(RunSettings(topo=topo, gpus=gpus, nodes=nodes, seq=seq, micro_batch=micro_batch,
                                         hardware=hardware), checkpointing=checkpointing, rows=rows)


def capacity_settings(settings: RunSettings, *, checkpointing: tuple[bool, ...] = (False, True),
                      rows: tuple[tuple[int, str, str], ...] = ROWS,
                      progress: Callable[[int, int, str], None] | None = None) -> CapacityResult:
    """:func:`capacity` of run settings: their cluster fields, ``seq`` and ``micro_batch``
    (the model is the ladder's; the other run fields are the rows'). ``progress(done, total,
    what)`` is called after each table cell and the communication reference."""
    seq, micro_batch = settings.seq, settings.micro_batch
    for name, value in (("--seq", seq), ("--micro-batch", micro_batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ZsimInputError(f"{name} must be a positive integer, got {value!r}")
    topo, gpus, nodes = settings.topo, settings.gpus, settings.nodes
    ladder = family()
    first = setting_of(RunSettings(model=ladder[0], topo=topo, gpus=gpus, nodes=nodes,
                                   hardware=settings.hardware, seq=seq), read_user_config(None))
    # Every member is checked with the profile loaded once (hardware=<profile>).
    base = setting_of(replace(first.settings, hardware=first.hardware), read_user_config(None))
    unknown = [r for r in rows if r not in ROWS]
    if unknown or not rows:
        raise ZsimInputError(f"capacity: unknown row {unknown[0] if unknown else '(none given)'}")
    out: list[CapacityRow] = []
    hint = -1
    total = len(rows) * len(checkpointing) + 1     # + the communication reference
    tell = progress or (lambda done, of, what: None)
    for stage, oo, op in rows:
        for ckpt in checkpointing:
            tell(len(out), total, f"ZeRO-{stage} offload {oo}/{op}, checkpointing {'on' if ckpt else 'off'}")
            cand = Candidate(stage, oo, op, micro_batch, 1, ckpt, 200_000_000, 50_000_000,
                             overlap_comm=default_overlap_comm(stage))
            i, fit, nofit = _largest(ladder, base, cand, hint)
            hint = i      # the next row or column usually fits at least as much: start there
            largest = ladder[i] if i >= 0 else None
            out.append(CapacityRow(
                stage, oo, op, ckpt, largest, fit.peak_bytes if fit else 0,
                ladder[i + 1] if i + 1 < len(ladder) else None,
                nofit.reason() if nofit else "the largest family member fits (the ladder ends here)",
                fit.host_bytes_per_node if fit else 0,
                _short_limit(nofit)))
    tell(len(out), total, "communication reference")
    comm = _comm_reference(base.settings, sorted({r[0] for r in rows}))
    tell(total, total, "done")
    result = CapacityResult(
        topology=str(topo), world_size=first.world_size, seq_len=seq,
        micro_batch=micro_batch, gpu_memory_bytes=first.gpu_memory_bytes, rows=tuple(out),
        family_note=__doc__.split("\n\n")[1].replace("\n", " "), rule_of_thumb=(),
        comm_busy_s=comm,
        host_memory_bytes_per_node=first.site.cluster.spec.node.host.host_memory_bytes)
    return _with_rule_of_thumb(result)


def _comm_reference(base: RunSettings, stages: list[int]) -> tuple[tuple[int, float], ...]:
    """Busy communication seconds per optimizer step of the reference run, per stage."""
    out = []
    for stage in stages:
        p = predict_settings(replace(base, model=COMM_REFERENCE_MODEL, stage=stage, micro_batch=1,
                                     grad_accum=COMM_REFERENCE_GRAD_ACCUM))
        out.append((stage, float(sum(p.comm_busy_s.values()))))
    return tuple(out)


def _short_limit(nofit: MemoryVerdict | None) -> str:
    """``+4.15 GiB (optimizer states)``: by how much the next size up overflows, and its largest term."""
    if nofit is None:
        return "largest tried fits"
    term = nofit.largest_term[0]
    return f"+{format_bytes(nofit.overflow_bytes)} ({MEMORY_LABELS.get(term, term)})"


def _fmt_params(n: int) -> str:
    return f"{n / 1e9:.1f}B" if n else "none"


def _with_rule_of_thumb(res: CapacityResult) -> CapacityResult:
    """Beside each rule-of-thumb figure, the assumptions under which zsim agrees or not."""
    lines = []
    busy = dict(res.comm_busy_s)
    for stage, (figure, comm) in RULE_OF_THUMB.items():
        if not any(r.stage == stage for r in res.rows):
            continue
        holds, fails = [], []
        for r in res.rows:
            if r.stage != stage:
                continue
            what = (f"offload opt={r.offload_optimizer} param={r.offload_param}, "
                    f"checkpointing {'on' if r.activation_checkpointing else 'off'}: {r.capacity_text()}")
            if r.host_bytes_per_node:
                what += f" (needs {r.host_bytes_per_node / 2**40:.1f} TiB CPU memory per node)"
            (holds if r.largest_params >= 0.9 * figure else fails).append(what)
        sign = ">=" if stage == 3 else "~"
        zsim_comm = ""
        if stage in busy:
            zsim_comm = f"; zsim: {busy[stage]:.3f} s busy per step"
            if busy.get(1):
                zsim_comm += f" = {busy[stage] / busy[1]:.1f}x ZeRO-1"
            zsim_comm += f" ({COMM_REFERENCE_MODEL}, grad-accum {COMM_REFERENCE_GRAD_ACCUM})"
        lines.append(f"ZeRO-{stage} {sign} {figure / 1e9:.0f}B (communication {comm}{zsim_comm}) at seq "
                     f"{res.seq_len}, micro-batch {res.micro_batch}: holds with " + ("; ".join(holds) or "no choice here")
                     + " | fails with " + ("; ".join(fails) or "no choice here"))
    return replace(res, rule_of_thumb=tuple(lines))
