"""DeepSpeed-MoE layers' work on one rank: kernels and activation memory (deepspeed 0.19.8;
SM = moe/sharded_moe.py, L = moe/layer.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .expert import expert_plan


# ---- kernels ---------------------------------------------------------------------------------------

#: Node kinds priced by :func:`ds_moe_kernels`.
DS_MOE_KINDS = frozenset({"ds_moe_gate", "ds_moe_layer", "ds_moe_add", "expert_linear", "expert_mlp_activation"})


#: Torch ops (kernel launches) one DeepSpeed-MoE layer dispatches outside its experts,
#: measured by validation/cpu_truth/expert_op_counts.py (deepspeed 0.19.8, torch 2.13, the
#: second step, bf16): the gate's forward by k (top-1 41, top-2 73 with its Gumbel sampling,
#: top-k 44), the encode (13 for top-1, else 14) and decode (6), and the backward of the
#: gate, encode and decode together (17, 47, 29: the layer's backward less 10 per expert,
#: which the expert kernels below launch: 3 × 2 GEMMs, SiLU's and the product's backward).
GATE_FORWARD_OPS = {1: 41, 2: 73}
GATE_FORWARD_OPS_TOPK = 44
#: Of those, the cumulative sums over the token axis of the [S, E] int64 mask (SM:299 for
#: top-1, :349-350 for top-2, one of :457-476 for top-k), priced per token (zsim.tokenscan):
#: the first DeepSpeed-MoE training trace (validation/results/h200/2026-12-02-m12, top-2,
#: 12 layers) shows 24 such scan kernels per forward.
GATE_SCANS = {1: 1, 2: 2}
GATE_SCANS_TOPK = 1
ENCODE_DECODE_OPS = {1: 13 + 6}
ENCODE_DECODE_OPS_TOPK = 14 + 6
BACKWARD_OPS = {1: 17, 2: 47}
BACKWARD_OPS_TOPK = 29


def ds_moe_kernels(w: Any, node: Any, bwd: bool) -> tuple:
    """Kernels of a DeepSpeed-MoE layer's ops on one rank (``w``: a zsim.workload.Workload).

    - gate (SM:568-590): the input and wg cast to fp32, F.linear (S × h)·(h × E) in fp32
      (priced as a GEMM of the model's dtype: the fp32 rate is not modelled), softmax,
      top-k and masks over S × E (an estimate of a dozen fp32 passes), and the cumsums over
      the token axis (:data:`GATE_SCANS`, each priced per token); its backward
      carries every measured non-expert backward launch of the layer (:data:`BACKWARD_OPS`);
    - MOELayer's own op: the sparse encode gathers the [E, C, M] buffer (SM:188-201) and the
      decode gathers S·k rows and sums them weighted in fp32 (SM:204-213), timed together;
    - each expert Linear: one GEMM over its ep·C dispatched rows (backward two);
    - the expert activation: SiLU(gate)·up over ep·C rows of width I;
    - DeepSeek's wrapper op: the add of the shared experts' output (kind ``ds_moe_add``).
    """
    from ..errors import ZsimInputError
    from ..workload import _gemm, _mem, _scan
    m, p = w.model, w.param_bytes
    plan = expert_plan(m, w.micro_batch, w.seq_len, p)
    s, e, h, k = plan.tokens, plan.num_experts, plan.hidden_size, plan.k
    twice = 2 if bwd else 1
    if node.kind == "ds_moe_gate":
        mem = (s * h * (p + 4) + s * e * 4 * 12) * twice
        if bwd:
            return (_gemm(s, e, h), _gemm(s, h, e), _mem(mem, launches=BACKWARD_OPS.get(k, BACKWARD_OPS_TOPK) - 2))
        scans = GATE_SCANS.get(k, GATE_SCANS_TOPK)
        rest = GATE_FORWARD_OPS.get(k, GATE_FORWARD_OPS_TOPK) - 1 - scans
        # launched by the gate's plain torch calls: host priced as such (zsim.compute.launch_host_s)
        return tuple(replace(kn, host_path="moe_gate")
                     for kn in (_gemm(s, e, h), *(_scan(s, e) for _ in range(scans)), _mem(mem, launches=rest)))
    if node.kind == "ds_moe_layer":
        encode = plan.buffer_numel * 2 * p
        decode = s * k * h * (p + 4 + 4) + s * h * (4 + p)
        launches = 0 if bwd else ENCODE_DECODE_OPS.get(k, ENCODE_DECODE_OPS_TOPK)   # backward: on the gate's
        return (_mem((encode + decode) * twice, launches=launches),)
    if node.kind == "ds_moe_add":
        # DeepSeek's wrapper: routed + shared_experts(x), read 2·S·h·p, write S·h·p, one
        # launch; in backward autograd sums the two branches' gradients of x, an add of the
        # same size (estimate: AddBackward itself only passes the gradient on)
        return (_mem(3 * s * h * p, launches=1),)
    rows = plan.expert_rows
    if node.kind == "expert_linear":
        out, in_ = node.params[0].shape
        return (_gemm(rows, out, in_), _gemm(rows, in_, out)) if bwd else (_gemm(rows, out, in_),)
    if node.kind == "expert_mlp_activation":
        return (_mem(3 * rows * node.width * p * twice, launches=2 * twice),)
    raise ZsimInputError(f"workload: no DeepSpeed-MoE kernels for {node.kind!r}")


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
    residual expert or a shared expert reads it (Qwen2-MoE's shared_expert and its gate,
    DeepSeek's shared_experts: their gate_proj saves it; their own bytes are zsim.workload's)."""
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
    if plan.moe.use_residual:
        residual = s * (4 * inter * p + 2 * h * p + 2 * p)
    else:
        residual = 0 if m.shared_expert_size else -s * h * p
    return gate + gating + encode + experts + decode + residual


def backward_working_bytes(w: Any) -> int:
    """Transient bytes during a DeepSpeed-MoE layer's backward (estimate): the gradients of
    the residual stream (2·S·h·p), of one expert's intermediates (3·ep·C·I·p) and the
    all-to-all's input and output buffers of the [E, C, M] gradient (_AllToAll allocates its
    output with empty_like, SM:102-104); the shared experts' two intermediates' gradients
    (2·S·I_shared·p, Qwen2-MoE and DeepSeek) where wider than one expert's."""
    m, p = w.model, w.param_bytes
    plan = expert_plan(m, w.micro_batch, w.seq_len, p)
    widest = max(3 * plan.expert_rows * m.expert_intermediate_size, 2 * plan.tokens * m.shared_expert_size)
    return 2 * plan.tokens * plan.hidden_size * p + widest * p + 2 * plan.buffer_numel * p
