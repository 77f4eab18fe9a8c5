"""Compute model: kernels -> seconds on one GPU, from a hardware profile.

GEMMs run at ``peak × gemm_eff(flops)`` (an efficiency curve fitted on real shapes),
attention at ``peak × attention_efficiency``, memory-bound kernels at
``HBM bandwidth × memory_bound_efficiency``; a model's own elementwise kernels at the forward
and backward module efficiencies measured on whole decoder layers, the ones over strided views
(RoPE) at ``strided_memory_efficiency``; DeepSpeed-MoE's token scans per token
(``compute.token_scan_curves``). The host issues kernels asynchronously, one
dispatch (``host_dispatch_s``) each; the system layer runs host dispatch and GPU execution
as separate streams, which is what makes small models host-bound in eager PyTorch.
"""

from __future__ import annotations

from functools import lru_cache

from .hardware import HardwareProfile
from .workload import Kernel, Workload


def peak_flops(hw: HardwareProfile, precision: str) -> float:
    """Dense peak FLOP/s for the model's precision (fp32 runs without TF32)."""
    return hw.gpu.peak_fp32_flops if precision == "fp32" else hw.gpu.peak_bf16_flops


def kernel_busy_s(kernel: Kernel, hw: HardwareProfile, precision: str, layer_pass: str = "") -> float:
    """Seconds one kernel keeps the GPU busy (launch not included).

    ``layer_pass`` is the pass ("fwd", "recompute", "bwd") of a kernel that belongs to a
    decoder layer's module: its contiguous memory-bound kernels move bytes at the profile's
    per-pass module efficiency, which is measured on whole decoder layers; other kernels
    (embeddings, the loss) at ``memory_bound_efficiency``."""
    c = hw.compute
    if kernel.kind == "gemm":
        prec = kernel.precision or precision   # DeepSeek's router GEMM runs in fp32
        busy = kernel.flops / (peak_flops(hw, prec) * c.gemm_eff(kernel.flops, prec))
    elif kernel.kind == "attention":
        eff = c.attention_eff(kernel.head_dim, kernel.seq, kernel.backward, kernel.v_head_dim)
        busy = kernel.flops / (peak_flops(hw, precision) * eff)
    elif kernel.kind == "scan":   # its time is per token, not per byte (zsim.tokenscan)
        busy = c.token_scan_s(kernel.rows, kernel.cols)
    else:
        if kernel.strided:
            eff = c.strided_eff
        elif layer_pass:
            eff = c.module_memory_eff(backward=layer_pass == "bwd")
        else:
            eff = c.memory_bound_efficiency
        busy = kernel.nbytes / (hw.gpu.hbm_bandwidth_GBps * 1e9 * eff)
    return busy


@lru_cache(maxsize=262144)
def module_time_s(workload: Workload, module: str, pass_: str, hw: HardwareProfile,
                  precision: str) -> tuple[float, float]:
    """(GPU seconds, host dispatch seconds) of ``module`` in ``pass_``.

    Cached: the same layer repeats L times, so layers share one entry by shape.
    """
    return _module_time_by_shape(workload, _shape_key(module, workload.model.dense_layers), pass_, hw, precision)


def _shape_key(module: str, dense_layers: int = 0) -> str:
    # Layers share shapes: "model.layers.17.mlp.up_proj" costs what "model.layers.0..." costs
    # (and "transformer.h.17.attn" what "transformer.h.0.attn" does): the first numeric part
    # of a module name is its decoder layer's index in every zsim.modeltree family. DeepSeek's
    # layers from first_k_dense_replace (``dense_layers``) on are MoE: they share the first one's.
    parts = module.split(".")
    for k, part in enumerate(parts):
        if part.isdigit():
            parts[k] = str(dense_layers) if dense_layers and int(part) >= dense_layers else "0"
            break
    return ".".join(parts)


def in_decoder_layer(module: str) -> bool:
    """True for a module inside a decoder layer: a numeric part of its name is the layer's
    index (see :func:`_shape_key`)."""
    return any(part.isdigit() for part in module.split("."))


@lru_cache(maxsize=65536)
def _module_time_by_shape(workload: Workload, key: str, pass_: str, hw: HardwareProfile,
                          precision: str) -> tuple[float, float]:
    kernels = workload.kernels(key, pass_)
    layer_pass = pass_ if in_decoder_layer(key) else ""
    gpu_s = sum(kernel_busy_s(k, hw, precision, layer_pass) for k in kernels)
    host_s = sum(k.launches * launch_host_s(k, hw) for k in kernels)
    return gpu_s, host_s


def launch_host_s(kernel: Kernel, hw: HardwareProfile) -> float:
    """Host seconds to launch one of ``kernel``'s launches: module code's dispatch, or for
    DeepSpeed-MoE's gate (plain torch calls, ``host_path`` "moe_gate") that times the
    profile's measured ratio of the two (1 when the profile has none)."""
    ratio = hw.host.moe_gate_launch_per_module_launch if kernel.host_path == "moe_gate" else 0.0
    return hw.compute.dispatch_s * (ratio or 1.0)


def _hbm_s(nbytes: float, hw: HardwareProfile) -> float:
    return nbytes / (hw.gpu.hbm_bandwidth_GBps * 1e9 * hw.compute.memory_bound_efficiency)


def optimizer_time_s(params: int, hw: HardwareProfile) -> float:
    """The fused Adam kernel on ``params`` fp32 values: its memory-bound HBM traffic
    (``optimizer_bytes_per_param``, calibrated from the FusedAdam microbenchmark)."""
    return _hbm_s(params * hw.overheads.optimizer_bytes_per_param, hw) + hw.compute.kernel_launch_s


def step_passes_time_s(nbytes: int, hw: HardwareProfile) -> float:
    """The GPU side of the step's per-tensor loops (casts, norm, unscale, copy back): their
    ``nbytes`` of HBM traffic (zsim.schedule.steppasses counts them per stage). These kernels
    run while the host is still issuing the loop (in the trace of
    llama-0.13b-z1-mb4-ga1-s1024-r1 1,713 small kernels run inside the 39 ms host loop
    before Adam's 7 kernels start), so they are a separate op that overlaps the loop, not
    part of Adam's."""
    return _hbm_s(nbytes, hw)
