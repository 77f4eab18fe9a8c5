"""Label DeepSpeed's own code paths in profiler traces.

torch.profiler records every aten op and kernel, but DeepSpeed's hooks and optimizer loops
show up only as anonymous runs of small ops. :func:`install` wraps the methods listed in
:data:`LABELLED` with ``torch.profiler.record_function("ds.<Class>.<method>")`` so that a trace
says which DeepSpeed function issued each op. It is installed only for the profiled steps
(after the timed ones), so timing never pays for the wrappers.

Phase labels of the job itself (``zsim.forward.<m>``, ``zsim.backward.<m>``,
``zsim.engine_step.<m>`` per micro-step m, ``zsim.step`` around one optimizer step) are set
by train.py.
"""

from __future__ import annotations

import functools
import importlib

#: (module, class, methods): DeepSpeed 0.19.8 functions whose time a trace must attribute.
#: Line numbers refer to deepspeed/runtime/zero/stage_1_and_2.py (S12), stage3.py (S3),
#: partitioned_param_coordinator.py (PC), fp16/fused_optimizer.py (FO), ops/adam/cpu_adam.py.
LABELLED: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("deepspeed.runtime.zero.stage_1_and_2", "DeepSpeedZeroOptimizer", (
        "step",                                        # S12:3013
        "reduce_independent_p_g_buckets_and_remove_grads",  # S12:1414, per gradient hook
        "reduce_ipg_grads",                            # S12:2205, per bucket flush
        "average_tensor",                              # S12:1590
        "copy_grads_in_partition",                     # S12:2142
        "independent_gradient_partition_epilogue",     # S12:1016
        "get_grad_norm_direct",                        # S12:2648, fp64 copies per gradient
        "scaled_global_norm",                          # S12:2943
        "has_overflow",                                # S12:3237
        "unscale_and_clip_grads",                      # S12:3193
        "_optimizer_step",                             # S12:2967
        "complete_grad_norm_calculation_for_cpu_offload",  # S12:1914
    )),
    ("deepspeed.runtime.zero.stage3", "DeepSpeedZeroOptimizer_Stage3", (
        "step",                                        # S3:2873
        "reduce_independent_p_g_buckets_and_remove_grads",  # S3:1569
        "_DeepSpeedZeroOptimizer_Stage3__reduce_and_partition_ipg_grads",  # S3:1648
        "partition_grads",                             # S3:2006
        "independent_gradient_partition_epilogue",     # S3:1407
        "get_grad_norm_direct",                        # S3:2419
        "has_overflow",                                # S3:3009
        "unscale_and_clip_grads",                      # S3:2979
        "_optimizer_step",                             # S3:1235
        "_prepare_fp32_grad_for_sub_group",            # S3:2683
        "_reassign_or_swap_out_partitioned_parameters",  # S3:2854
        "_post_step",                                  # S3:2835
        "_pre_step",                                   # S3:2539
        "complete_grad_norm_calculation_for_cpu_offload",  # S3:1975
    )),
    ("deepspeed.runtime.zero.partitioned_param_coordinator", "PartitionedParameterCoordinator", (
        "fetch_sub_module",                            # PC:310
        "release_sub_module",                          # PC:494
    )),
    ("deepspeed.runtime.fp16.fused_optimizer", "FP16_Optimizer", (
        "step",                                        # FO:256
        "unscale_and_clip_grads",                      # FO:374
        "backward",                                    # FO:389
    )),
    ("deepspeed.runtime.bf16_optimizer", "BF16_Optimizer", ("step",)),
    ("deepspeed.ops.adam.cpu_adam", "DeepSpeedCPUAdam", ("step",)),
    ("deepspeed.ops.adam.fused_adam", "FusedAdam", ("step",)),
)


def _wrap(fn, label: str):
    from torch.profiler import record_function

    @functools.wraps(fn)
    def labelled(*args, **kwargs):
        with record_function(label):
            return fn(*args, **kwargs)

    labelled.__zsim_label__ = label
    return labelled


def install() -> dict:
    """Wrap every method of :data:`LABELLED` that exists; return what was and was not found."""
    found, missing = [], []
    for mod_name, cls_name, methods in LABELLED:
        try:
            cls = getattr(importlib.import_module(mod_name), cls_name)
        except Exception as exc:  # an op that cannot build here (e.g. no CUDA): recorded, not fatal
            missing.append(f"{mod_name}.{cls_name}: {exc.__class__.__name__}")
            continue
        for m in methods:
            fn = cls.__dict__.get(m)
            if fn is None or getattr(fn, "__zsim_label__", None):
                missing.append(f"{cls_name}.{m}") if fn is None else None
                continue
            short = m.replace(f"_{cls_name}__", "__")
            setattr(cls, m, _wrap(fn, f"ds.{cls_name}.{short}"))
            found.append(f"{cls_name}.{short}")
    return {"labelled": found, "missing": missing}
