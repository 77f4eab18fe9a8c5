"""The optimizer step of each stage: norm/overflow all_reduces, the update, the re-gather.

Stage 1/2 (stage_1_and_2.py:3013-3170 = S12):
- overflow check: ``all_reduce(MAX)`` of a 1-byte flag (S12:3237-3246) when
  check_grad_overflow is on: fp16 always, bf16 by default (bf16.check_grad_overflow, True,
  runtime/precision_config.py:56), never fp32 (engine.py:2638-2643);
- the gradient norm: one 4-byte fp32 ``all_reduce(SUM)`` per param group (S12:2689-2693,
  or S12:1944-1945 with offload), whether or not clipping is on (compute_grad_norm);
- the local update of the fp32 partition, or with offload_optimizer the fp32 gradient
  partition to the host, DeepSpeedCPUAdam, the 16-bit partition back to the device;
- ``all_gather_dp_groups``: with all_gather_into_tensor available, ONE call per param group
  whatever allgather_bucket_size says (runtime/utils.py:1019-1022); the logger records one
  rank's partition.
Stage 3 (stage3.py = S3): see :func:`stage3_step`.
"""

from __future__ import annotations

from ..dsconfig import RunConfig
from .emit import Emitter


def _check_overflow(run: RunConfig) -> bool:
    return run.precision in ("fp16", "bf16")


def _update(em: Emitter, run: RunConfig, partition_numel: int, param_bytes_back: int) -> None:
    """The optimizer update of ``partition_numel`` fp32 elements (on the GPU, or offloaded:
    the fp32 gradients reached the host bucket by bucket during the backward, see
    dense._offload_copies; DeepSpeedCPUAdam; the 16-bit partition back to the device)."""
    if run.zero.offload_optimizer == "none":
        em.add("compute", "optimizer", "optimizer_step", params=partition_numel)
        return
    d2h = em.ops.last_on("d2h")
    adam = em.add("cpu", "cpu_adam", "cpu_adam", deps=(d2h, em.last_compute), params=partition_numel)
    h2d = em.add("h2d", "copy", "params_to_device", deps=(adam,), nbytes=param_bytes_back * partition_numel)
    em.wait_for.append(h2d)


def stage12_step(em: Emitter, run: RunConfig, partition_numel: int, padded_numel: int) -> None:
    """Ops of the stage-1/2 optimizer step (one param group)."""
    em.phase = "step"
    pb = run.param_bytes
    if _check_overflow(run):
        em.collective("overflow_check", "all_reduce", 1)
    if run.zero.compute_grad_norm:
        em.collective("grad_norm", "all_reduce", 4)
    _update(em, run, partition_numel, pb)
    em.collective("allgather_params", "all_gather_into_tensor", partition_numel * pb,
                  buffer_bytes=padded_numel * pb)


def stage0_step(em: Emitter, run: RunConfig, numel: int) -> None:
    """Stage 0: gradients were all-reduced by the engine; the update is local.

    In fp32 (no fp16/bf16 wrapper) with gradient_clipping > 0 — DeepSpeed's DEFAULT is 1.0
    (runtime/constants.py:203) — the engine clips through ``clip_grad_norm_``, which
    all-reduces a 4-byte norm over the data-parallel group (engine.py:3506-3511,
    runtime/utils.py:414-418). The bf16 wrapper (DDP_BFLOAT16 -> FP16_Optimizer) issues no
    collective [E].
    """
    em.phase = "step"
    if run.precision == "fp32" and run.gradient_clipping > 0:
        em.collective("clip_grad_norm", "all_reduce", 4)
    em.add("compute", "optimizer", "optimizer_step", params=numel)


def stage3_step(em: Emitter, run: RunConfig, sub_group_numels: list[int], persistent_shards: list[int]) -> None:
    """Ops of the stage-3 step (stage3.py:2873-2931 = S3).

    - overflow ``all_reduce`` only in fp16 (S3:2815-2816) — bf16 has none, unlike stage 1/2;
    - the norm: one ``all_reduce`` per optimizer sub-group of an fp64 scalar (8 bytes:
      get_norm_dtype() is float64 wherever the device supports it, zero/utils.py:59-63;
      S3:2469, 2573-2584) — but with offload_optimizer a 4-byte FloatTensor
      (complete_grad_norm_calculation_for_cpu_offload, S3:1969-1990) [E];
    - the update of each sub-group (or, offloaded, DeepSpeedCPUAdam + the 16-bit copy back);
    - ``_post_step``: the persistent parameters are all-gathered again, ONE
      all_gather_into_tensor per parameter (S3:2840-2841 -> partition_parameters.py:2068-2080).
    """
    em.phase = "step"
    pb = run.param_bytes
    if run.precision == "fp16":
        em.collective("overflow_check", "all_reduce", 1)
    norm_bytes = 4 if run.zero.offload_optimizer != "none" else 8
    for _ in sub_group_numels:
        em.collective("grad_norm", "all_reduce", norm_bytes)
    for numel in sub_group_numels:
        if run.zero.offload_optimizer == "none":
            em.add("compute", "optimizer", "optimizer_step", params=numel)
        else:
            adam = em.add("cpu", "cpu_adam", "cpu_adam", deps=(em.last_compute,), params=numel)
            h2d = em.add("h2d", "copy", "params_to_device", deps=(adam,), nbytes=pb * numel)
            em.wait_for.append(h2d)
    for shard in persistent_shards:
        em.collective("allgather_persistent", "all_gather_into_tensor", shard * pb)
