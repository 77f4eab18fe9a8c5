"""DeepSpeed-MoE layers' work on one rank: kernels and activation memory (deepspeed 0.19.8;
SM = moe/sharded_moe.py, L = moe/layer.py)."""

from __future__ import annotations

from typing import Any

from .expert import expert_plan


# ---- kernels ---------------------------------------------------------------------------------------

#: Node kinds priced by :func:`ds_moe_kernels`.
DS_MOE_KINDS = frozenset({"ds_moe_gate", "ds_moe_layer", "expert_linear", "expert_mlp_activation"})


def ds_moe_kernels(w: Any, node: Any, bwd: bool) -> tuple:
    """Kernels of a DeepSpeed-MoE layer's ops on one rank (``w``: a zsim.workload.Workload).

    - gate (SM:568-590): the input and wg cast to fp32, F.linear (S × h)·(h × E) in fp32,
      softmax, top-k, masks and cumsum over S × E (about a dozen fp32 passes);
    - MOELayer's own op: the sparse encode gathers the [E, C, M] buffer (SM:188-201) and the
      decode gathers S·k rows and sums them weighted in fp32 (SM:204-213);
    - each expert Linear: one GEMM over its ep·C dispatched rows (backward two);
    - the expert activation: SiLU(gate)·up over ep·C rows of width I.
    """
    from ..workload import Kernel, _gemm, _mem
    m, p = w.model, w.param_bytes
    plan = expert_plan(m, w.micro_batch, w.seq_len, p)
    s, e, h = plan.tokens, plan.num_experts, plan.hidden_size
    twice = 2 if bwd else 1
    if node.kind == "ds_moe_gate":
        gemm = (_gemm(s, e, h), _gemm(s, h, e)) if bwd else (_gemm(s, e, h),)
        mem = s * h * (p + 4) + s * e * 4 * 12
        return gemm + (_mem(mem * twice, launches=20 * twice),)
    if node.kind == "ds_moe_layer":
        encode = plan.buffer_numel * 2 * p
        decode = s * plan.k * h * (p + 4 + 4) + s * h * (4 + p)
        return (_mem((encode + decode) * twice, launches=12 * twice),)
    rows = plan.expert_rows
    if node.kind == "expert_linear":
        out, in_ = node.params[0].shape
        return (_gemm(rows, out, in_), _gemm(rows, in_, out)) if bwd else (_gemm(rows, out, in_),)
    if node.kind == "expert_mlp_activation":
        return (_mem(3 * rows * node.width * p * twice, launches=2 * twice),)
    return (Kernel("memory"),)


# ---- memory -----------------------------------------------------------------------------------------

def saved_activation_bytes(w: Any) -> int:
    """Bytes one DeepSpeed-MoE layer's MLP keeps for backward, as measured on CPU by
    validation/cpu_truth/expert_activation_memory.py (every saved tensor listed by a dispatch
    mode; tests/test_expert_parallel.py compares whole layers):

    - gate (SM:568-572): the fp32 copies of the input (S·h·4) and of wg (E·h·4), the fp32
      softmax (S·E·4), the expert mean and counts (E·(4 + 8));
    - the gating function's saved intermediates: top-1 (SM:216-305) the int64 mask product
      S·E·8, the route gates S·4 and indices S·8; top-2 (SM:322-400) two fp32 masks
      2·S·E·4, four fp32 S-vectors and the stacked gates and indices k·S·(4 + 8); top-k
      (SM:415-497) the normalised and masked gates 2·S·E·4, the bool mask S·E, two fp32
      S-vectors, the top-k indices and stacked routes k·S·(8 + 4 + 8);
    - the encode's slot map (E·C + 1)·8 and the dispatched [E, C, M] buffer E·C·h·p that the
      experts' Linears read (chunks are views of it, experts.py:29);
    - per dispatched row (E·C over the local experts: E/ep experts × ep·C rows) the gate and
      up outputs, the SiLU and the product: 4·I·p (LlamaMLP);
    - the decode's gathered rows k·S·h·p (SM:208);
    - use_residual (L:124-131): the dense expert over S tokens (4·I·p per token and its
      output h·p), the routed output cast back (h·p) and the coefficients' softmax 2·p.

    The all-to-all saves nothing (SM:97-109), so the bytes do not depend on ep. The MLP's
    input (post_attention_layernorm's p-byte output, which zsim's norm term counts because
    Llama's gate_proj saves it) is saved by nobody here: the gate keeps its fp32 copy and
    the encode's index_select keeps only its indices; so it is subtracted unless the
    residual expert reads it."""
    m, p = w.model, w.param_bytes
    plan = expert_plan(m, w.micro_batch, w.seq_len, p)
    s, e, h, k, c = plan.tokens, plan.num_experts, plan.hidden_size, plan.k, plan.capacity
    inter = m.expert_intermediate_size
    gate = s * h * 4 + e * h * 4 + s * e * 4 + e * 12
    if k == 1:
        gating = s * e * 8 + s * 4 + s * 8
    elif k == 2:
        gating = 2 * s * e * 4 + 4 * s * 4 + k * s * (4 + 8)
    else:
        gating = 2 * s * e * 4 + s * e + 2 * s * 4 + k * s * (8 + 4 + 8)
    encode = (e * c + 1) * 8 + plan.buffer_numel * p
    experts = 4 * plan.local_experts * plan.expert_rows * inter * p
    decode = k * s * h * p
    residual = s * (4 * inter * p + 2 * h * p + 2 * p) if plan.moe.use_residual else -s * h * p
    return gate + gating + encode + experts + decode + residual


def backward_working_bytes(w: Any) -> int:
    """Transient bytes during a DeepSpeed-MoE layer's backward (estimate): the gradients of
    the residual stream (2·S·h·p), of one expert's intermediates (3·ep·C·I·p) and the
    all-to-all's input and output buffers of the [E, C, M] gradient (_AllToAll allocates its
    output with empty_like, SM:102-104)."""
    m, p = w.model, w.param_bytes
    plan = expert_plan(m, w.micro_batch, w.seq_len, p)
    return (2 * plan.tokens * plan.hidden_size * p + 3 * plan.expert_rows * m.expert_intermediate_size * p
            + 2 * plan.buffer_numel * p)
