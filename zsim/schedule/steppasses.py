"""The GPU passes of DeepSpeed's optimizer step besides the Adam kernel, per ZeRO stage.

Each pass reads and writes every parameter's value once; its cost is HBM traffic, so a pass
is described by the bytes it moves per parameter. ``g`` is the gradient's element size
(2 in bf16/fp16, 4 in fp32), ``m`` the fp32 master's (4). Read from DeepSpeed 0.19.8 (U =
runtime/utils.py, ZU = runtime/zero/utils.py, S12 = runtime/zero/stage_1_and_2.py, S3 =
runtime/zero/stage3.py, FO = runtime/fp16/fused_optimizer.py) and checked against the step
kernels of traced runs (validation/results/h200/2026-12-01-m5, llama-3b, 3.43e9 params):

| stage (bf16) | passes here | bytes/param | trace: non-Adam step kernels |
|---|---|---|---|
| 0 (FP16_Optimizer) | overflow 4, cast 6, flatten 8, norm 4, unscale 8, copy back 6 | 36 | 42.2 ms (llama-3b-z0-...-ac-r1, 2026-12-01) |
| 1 and 2 | overflow 4, norm 18, flatten 4, cast 6, unscale 8, copy back 6 | 46 | 66.2 ms (llama-3b-z1-mb4-ga1-s1024-m5) |
| 3 | norm 18, flatten 4, cast 6, unscale 8, copy back 6 | 42 | 51.5 ms (llama-3b-z3-...-ac-r1, 2026-12-01) |

In the stage-1 trace the casts and copies (22 B/param, 248 kernels) took 24.3 ms, i.e.
3.1 TB/s, the profile's memory-bound rate; the unscale runs slower (1.8 TB/s: its scale is
a 0-dim GPU tensor, so torch takes the non-vectorised path), and a few hundred scalar kernels
per step add GPU time that the table leaves out. The flat 28 B/param zsim used before for
every stage was 40-60 % short of these traces.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..dsconfig import OffloadDevice, RunConfig
from . import hostwork as hw
from .hostwork import LoopCounts

MASTER_BYTES = 4  # the fp32 master copy and fp32 gradient partitions


@dataclass(frozen=True)
class StepPass:
    """One pass over every parameter: ``bytes_per_param`` read + written, and its source."""

    name: str
    bytes_per_param: int
    source: str


def _overflow(g: int) -> StepPass:
    # has_inf_or_nan: amax and amin of each gradient (U:205-228); nothing written
    return StepPass("overflow_check", 2 * g, "U:228 amax + amin per gradient")


def _norm64(g: int) -> StepPass:
    # each gradient cast to float64, then its vector_norm (get_norm_dtype, ZU:59-63; stage 3 S3:2457)
    return StepPass("grad_norm_fp64", g + 8 + 8, "S12:2684 / S3:2457: g.to(float64).norm()")


def _unscale() -> StepPass:
    return StepPass("unscale_clip", 2 * MASTER_BYTES, "S12:3193-3220 / S3:2979-2991: fp32 grad.mul_")


def _copy_back(g: int) -> StepPass:
    return StepPass("copy_to_params", MASTER_BYTES + g, "S12:3145 / S3:2858 / FO:364: fp32 -> 16-bit copy_")


def stage0_passes(run: RunConfig) -> tuple[StepPass, ...]:
    """Stage 0. bf16/fp16 run FP16_Optimizer (FO:256-364): the per-tensor overflow test,
    each gradient cast to fp32 and flattened, the norm of the flat fp32 gradient, unscale,
    then the update copied back tensor by tensor. fp32 runs the torch optimizer after the
    engine's clip_grad_norm_ (U:356-428): a norm of each fp32 gradient and the scale."""
    g = run.param_bytes
    if run.precision == "fp32":
        return (StepPass("grad_norm", g, "U:395-399 p.grad.float().norm()"),
                StepPass("clip_scale", 2 * g, "U:426-427 p.grad.mul_(clip_coef)"))
    return (_overflow(g),
            StepPass("cast_fp32", g + MASTER_BYTES, "FO:287 p.grad.to(fp32)"),
            StepPass("flatten", 2 * MASTER_BYTES, "FO:286 _flatten_dense_tensors"),
            StepPass("grad_norm", MASTER_BYTES, "FO:319 get_flattened_grad_norm"),
            _unscale(), _copy_back(g))


def stage12_passes(run: RunConfig) -> tuple[StepPass, ...]:
    """Stages 1/2 without optimizer offload (S12:3013-3170): overflow test (bf16/fp16),
    the fp64 norm per gradient, the partition's gradients flattened and cast to fp32
    (``.to`` is a no-op in fp32), unscale, the update copied into the 16-bit partition."""
    g = run.param_bytes
    passes = [_overflow(g)] if run.precision in ("bf16", "fp16") else []
    passes += [_norm64(g), StepPass("flatten", 2 * g, "S12:3117 flatten(averaged_gradients)")]
    if g != MASTER_BYTES:
        passes.append(StepPass("cast_fp32", g + MASTER_BYTES, "S12:3118 .to(fp32)"))
    return tuple(passes) + (_unscale(), _copy_back(g))


def stage3_passes(run: RunConfig) -> tuple[StepPass, ...]:
    """Stage 3 without optimizer offload (S3:2873-2931): overflow test in fp16 only, the
    fp64 norm per gradient partition, each sub-group's gradients flattened and cast to fp32
    (S3:2683-2687), unscale, the update copied into the 16-bit partition (S3:2858)."""
    g = run.param_bytes
    passes = [_overflow(g)] if run.precision == "fp16" else []
    passes += [_norm64(g), StepPass("flatten", 2 * g, "S3:2686 flatten(averaged_gradients)")]
    if g != MASTER_BYTES:
        passes.append(StepPass("cast_fp32", g + MASTER_BYTES, "S3:2686 .to(fp32)"))
    return tuple(passes) + (_unscale(), _copy_back(g))


@dataclass(frozen=True)
class StepSegment:
    """One stretch of the step between two host synchronisations: the host loop that issues
    it and the GPU passes it issues. With ``update`` the stretch ends in the optimizer update
    of each sub-group: ``passes`` run before it, ``after_update`` after it."""

    name: str
    loop: LoopCounts
    passes: tuple[StepPass, ...] = ()
    update: bool = False
    after_update: tuple[StepPass, ...] = ()
    #: one stretch (and its syncs) per optimizer sub-group; adjacent such segments repeat
    #: together, group by group (cast, then update, of one group before the next)
    per_sub_group: bool = False


def stage0_segments(run: RunConfig) -> tuple[StepSegment, ...]:
    """Stage 0 in bf16/fp16 (FP16_Optimizer): the overflow test with a sync per tensor,
    the casts and the norm, then the update (see :func:`stage0_passes`). fp32: one stretch."""
    p = {x.name: x for x in stage0_passes(run)}
    if run.precision == "fp32":
        return (StepSegment("update", hw.STAGE0_FP32_STEP, (p["grad_norm"], p["clip_scale"]), update=True),)
    return (StepSegment("overflow", hw.STAGE0_STEP_OVERFLOW, (p["overflow_check"],)),
            StepSegment("norm", hw.STAGE0_STEP_NORM, (p["cast_fp32"], p["flatten"], p["grad_norm"])),
            StepSegment("update", hw.STAGE0_STEP_UPDATE, (p["unscale_clip"],), update=True,
                        after_update=(p["copy_to_params"],)))


def stage12_segments(run: RunConfig) -> tuple[StepSegment, ...]:
    """Stages 1/2 without offload: overflow test (bf16/fp16 only, engine.py:2638-2643), norm,
    scalar checks, flatten and cast, then unscale, update and copy back.

    The norm and the cast/update run once per optimizer param group (one group for a dense
    model; DeepSpeed-MoE puts the experts in groups of their own): ``scaled_global_norm``
    calls ``get_grad_norm_direct`` per group, which reads its result back (S12:2943-2955,
    2648-2700), and the update loop flattens, casts, unscales, steps and copies back one
    group at a time, each unscale testing the norm with a host read (S12:3075-3145,
    ``is_invalid_grad_norm`` S12:3203 -> runtime/utils.py:231-233). The trace of
    mixtral-0.7b-8e-z2-mb4-ga1-s1024-moe-m12 (5 groups) has 17 host syncs in the step:
    2 in each group's norm, 1 in each group's unscale, 2 more."""
    p = {x.name: x for x in stage12_passes(run)}
    segs = []
    if "overflow_check" in p:
        segs.append(StepSegment("overflow", hw.STAGE12_STEP_OVERFLOW, (p["overflow_check"],)))
    cast = tuple(p[n] for n in ("flatten", "cast_fp32") if n in p)
    return tuple(segs) + (
        StepSegment("norm", hw.STAGE12_STEP_NORM, (p["grad_norm_fp64"],), per_sub_group=True),
        StepSegment("checks", hw.STAGE12_STEP_CHECKS),
        StepSegment("cast", hw.STAGE12_STEP_CAST, cast, per_sub_group=True),
        StepSegment("update", hw.STAGE12_STEP_UPDATE, (p["unscale_clip"],), update=True,
                    after_update=(p["copy_to_params"],), per_sub_group=True))


def stage3_segments(run: RunConfig) -> tuple[StepSegment, ...]:
    """Stage 3 without offload: a norm stretch per sub-group, then every sub-group's
    flatten, cast, unscale, update and copy back in one stretch."""
    p = {x.name: x for x in stage3_passes(run)}
    # fp16: the overflow test reads its flag back first (S3:3042); not traced, so no loop
    segs = (StepSegment("overflow", LoopCounts(0.0), (p["overflow_check"],)),) if "overflow_check" in p else ()
    before = tuple(p[n] for n in ("flatten", "cast_fp32", "unscale_clip") if n in p)
    return segs + (StepSegment("norm", hw.STAGE3_STEP_NORM, (p["grad_norm_fp64"],), per_sub_group=True),
                   StepSegment("update", hw.STAGE3_STEP_UPDATE, before, update=True,
                               after_update=(p["copy_to_params"],)))


def step_segments(run: RunConfig) -> tuple[StepSegment, ...]:
    """The stretches of the run's step on the GPU path (optimizer offload has its own)."""
    return {0: stage0_segments, 1: stage12_segments, 2: stage12_segments, 3: stage3_segments}[run.zero.stage](run)


def pass_bytes(passes: tuple[StepPass, ...], numel: int) -> int:
    """HBM bytes ``passes`` move over ``numel`` parameters."""
    return numel * sum(x.bytes_per_param for x in passes)


def step_passes(run: RunConfig) -> tuple[StepPass, ...]:
    """The GPU passes of the run's step (none with optimizer offload: those run on the CPU)."""
    if run.zero.offload_optimizer != OffloadDevice.NONE:
        return ()
    return {0: stage0_passes, 1: stage12_passes, 2: stage12_passes, 3: stage3_passes}[run.zero.stage](run)


def step_pass_bytes(run: RunConfig, numel: int) -> int:
    """HBM bytes the step's passes move over ``numel`` parameters."""
    return numel * sum(p.bytes_per_param for p in step_passes(run))


__all__ = ["StepPass", "StepSegment", "step_passes", "step_pass_bytes", "step_segments", "pass_bytes",
           "stage0_passes", "stage12_passes", "stage3_passes", "stage0_segments", "stage12_segments",
           "stage3_segments"]
