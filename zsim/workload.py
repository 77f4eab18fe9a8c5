"""Workload layer: the kernels each module runs, their FLOPs and bytes, and activation memory.

Module names follow Hugging Face (``model.layers.3.self_attn.q_proj``); the schedule layer
emits compute ops naming them. Shapes in comments use b = micro-batch, s = sequence length,
t = b·s tokens, h = hidden, q = heads·head_dim, kv = kv_heads·head_dim, I = intermediate,
V = vocab, p = bytes per 16-bit/32-bit model value; in MoE blocks E = experts, k = experts per
token, S = t·k routed (token, expert) rows.

Nothing here knows about time: :mod:`zsim.compute` turns kernels into seconds with a
hardware profile.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from .errors import ZsimInputError
from .model import ModelSpec
from .modeltree import Node, model_tree
from .parallel.expert_work import DS_MOE_KINDS, ds_moe_kernels


@dataclass(frozen=True)
class Kernel:
    """One GPU kernel: a GEMM (m×k by k×n), an attention call, or a memory-bound pass."""

    kind: str              # "gemm" | "attention" | "memory" | "scan"
    flops: float = 0.0     # floating-point operations
    nbytes: float = 0.0    # HBM bytes read + written (memory-bound kernels)
    launches: int = 1      # eager-mode kernel launches the host issues for it
    head_dim: int = 0      # attention: the kernel's speed depends on head_dim and seq
    seq: int = 0
    backward: bool = False
    v_head_dim: int = 0    # attention: the value head dim when it differs from head_dim (MLA)
    precision: str = ""    # a GEMM run in another precision than the model's ("fp32"); "" = the run's
    strided: bool = False  # memory-bound over strided views (priced at the strided efficiency)
    rows: int = 0          # scan: a cumsum along ``rows`` tokens of ``cols`` columns (zsim.tokenscan)
    cols: int = 0
    #: the host code that launches it: "" module code; "moe_gate" DeepSpeed-MoE's gate, plain
    #: torch calls priced at the profile's host.moe_gate_launch_per_module_launch (zsim.compute)
    host_path: str = ""


def _gemm(m: int, n: int, k: int) -> Kernel:
    # t×k input times k×n weight: 2·m·n·k FLOPs.
    return Kernel("gemm", flops=2.0 * m * n * k)


def _mem(nbytes: float, launches: int = 1) -> Kernel:
    return Kernel("memory", nbytes=float(nbytes), launches=launches)


def _scan(rows: int, cols: int) -> Kernel:
    # torch.cumsum(mask, dim=0) over a [rows, cols] int64 mask: priced per row (zsim.tokenscan)
    return Kernel("scan", nbytes=16.0 * rows * cols, rows=rows, cols=cols)


@dataclass(frozen=True)
class Workload:
    """A model at a given micro-batch, sequence length and precision."""

    model: ModelSpec
    micro_batch: int
    seq_len: int
    param_bytes: int = 2
    #: Megatron sequence parallelism inside a TP group of this degree: norms, dropouts and
    #: residual adds run on 1/shards of the tokens (Korthikanti et al. 2022, Section 4.2.2);
    #: ``model`` is then already the TP rank's shard (zsim.parallel.tensor.shard_model).
    sequence_shards: int = 1
    #: DeepSpeed-Ulysses degree: ``seq_len`` is the rank's shard of the sequence; attention
    #: runs over ``seq_len * ulysses`` tokens with 1/ulysses of the heads
    #: (deepspeed/sequence/layer.py DistributedAttention).
    ulysses: int = 1

    @property
    def tokens(self) -> int:
        """Tokens in one micro-batch on one rank: t = b·s."""
        return self.micro_batch * self.seq_len

    # ---- kernels ---------------------------------------------------------------------------
    def kernels(self, module: str, pass_: str) -> tuple[Kernel, ...]:
        """Kernels that ``module`` runs in ``pass_`` ("fwd", "bwd" or "recompute")."""
        if pass_ not in ("fwd", "bwd", "recompute"):
            raise ValueError(f"unknown pass {pass_!r}")
        return _kernels(self, module, "fwd" if pass_ == "recompute" else pass_)

    def flops(self, module: str, pass_: str) -> float:
        """FLOPs of ``module`` in ``pass_``."""
        return sum(k.flops for k in self.kernels(module, pass_))

    def model_flops_per_token(self) -> float:
        """Forward+backward FLOPs per token of the whole model (no recomputation): for MFU."""
        total = 0.0
        for module in self.all_modules():
            total += self.flops(module, "fwd") + self.flops(module, "bwd")
        return total / self.tokens

    def all_modules(self) -> list[str]:
        """Every compute op of the model in forward order (zsim.modeltree)."""
        return [n.op for n in model_tree(self.model).forward()]

    # ---- activation memory -------------------------------------------------------------------
    def layer_activation_bytes(self, layer: int = -1) -> int:
        """Bytes one decoder layer keeps for backward, for one micro-batch (no checkpointing).

        Per token, what autograd saves in HF's Llama layer (see _layer_saved_per_token).
        Every layer keeps the same except DeepSeek's first first_k_dense_replace (dense MLP)
        layers: ``layer`` picks one (default: the last layer, a MoE one when any is).
        """
        m = self.model
        i = m.num_layers - 1 if layer < 0 else layer
        if m.deepspeed_moe is not None and m.is_moe_layer(i):   # DeepSpeed-MoE layers: zsim.parallel.expert_work
            from .parallel.expert_work import saved_activation_bytes
            # the routed part is DeepSpeed's layer; the shared expert(s) stay the model's own
            rest = _layer_saved_per_token(m, self.param_bytes, i) - _routed_saved_per_token(m, self.param_bytes)
            return self.tokens * rest + saved_activation_bytes(self)
        # DeepSeek's router multiplies by an fp32 copy of its weight (E·h·4 per layer, saved
        # by the fp32 F.linear whatever the batch)
        router_weight = 4 * m.num_experts * m.hidden_size if m.is_mla and m.is_moe_layer(i) else 0
        saved = _layer_saved_per_token(m, self.param_bytes, i)
        if m.attention_impl != "sdpa":
            router_weight += eager_scores_saved_bytes(self)   # the s x s tensors: not per token
        if m.family == "gemma2":
            # each Gemma2RMSNorm's fp32 (1 + weight), saved by the multiply (measured, see
            # _norms_and_masks_per_token): per layer, not per token
            router_weight += _norm_count(m) * 4 * m.hidden_size
        if self.sequence_shards == 1:
            return self.tokens * saved + router_weight
        # Megatron sequence parallelism: what the norms and dropout masks keep is the
        # sequence-parallel region's shard (Korthikanti et al. 2022, Table 2: 34/t).
        split = _norms_and_masks_per_token(m, self.param_bytes)
        return self.tokens * (saved - split) + self.tokens * split // self.sequence_shards + router_weight

    def activation_bytes_per_layer(self) -> tuple[int, ...]:
        """:meth:`layer_activation_bytes` of every decoder layer, in order."""
        dense = self.layer_activation_bytes(0)
        moe = self.layer_activation_bytes()
        return tuple(moe if self.model.is_moe_layer(i) else dense for i in range(self.model.num_layers))

    def checkpoint_bytes(self) -> int:
        """Bytes a checkpointed layer keeps: its input hidden states, t·h·p (under Megatron
        sequence parallelism the rank's 1/shards of them: Table 2's 2sbh/t)."""
        return self.tokens * self.model.hidden_size * self.param_bytes // self.sequence_shards

    def logits_bytes(self) -> tuple[int, int]:
        """(kept until backward, extra transient peak) bytes of logits and loss, t·V based.

        The loss upcasts the p-byte logits to fp32 and log_softmax saves its fp32 output
        (4V, kept until backward); the p-byte logits die with the model output, which
        training loops drop (``loss = engine(...).loss``). Backward adds the fp32 gradient of
        log_softmax's output and of its input (2 × 4V, transient).
        """
        tv = self.tokens * self.model.vocab_size
        kept = tv * 4
        transient = tv * 8
        if self.model.final_softcap:
            # Gemma-2's final softcap (modeling_gemma2.py:520-523): tanh saves its p-byte output
            # until backward (measured: validation/cpu_truth/family_activation_memory.py); its
            # backward adds the p-byte gradients into and out of tanh (from the source)
            kept += tv * self.param_bytes
            transient += 2 * tv * self.param_bytes
        return kept, transient

    def backward_working_bytes(self) -> int:
        """Transient activation-gradient buffers during one layer's backward.

        Gradients of the residual stream (t·h·p, two alive) and of the MLP intermediates
        (t·I·p, two alive) at the widest point.
        """
        m = self.model
        if m.deepspeed_moe is not None:
            from .parallel.expert_work import backward_working_bytes
            return backward_working_bytes(self)
        dense = 2 * m.intermediate_size
        if m.is_moe:
            # Unmeasured estimate: the routed rows' gradients of gate_up's output (2·I) and of
            # the activation product (I) per (token, expert) row, or the shared expert's two;
            # DeepSeek's leading dense layers as a dense MLP's.
            widest = max(3 * m.experts_per_token * m.expert_intermediate_size, 2 * m.shared_expert_size,
                         dense if m.dense_layers else 0)
            return self.tokens * self.param_bytes * (2 * m.hidden_size + widest)
        residual = 2 * m.hidden_size // self.sequence_shards
        widest = self.tokens * self.param_bytes * (residual + dense)
        if m.attention_impl != "sdpa":
            # Eager attention's backward at its widest, softmax backward (modeling_bloom.py:284,
            # modeling_gemma2.py:203):
            # the fp32 gradient of the probabilities and the fp32 gradient it writes (2 x 4 per
            # score), beside the residual gradients. Read from the source, not measured.
            scores = self.micro_batch * m.num_heads * self.seq_len * self.seq_len
            widest = max(widest, self.tokens * self.param_bytes * residual + 8 * scores)
        return widest


def layer_modules(model: ModelSpec, i: int) -> list[str]:
    """Compute ops of decoder layer ``i`` in forward order (zsim.modeltree)."""
    tree = model_tree(model)
    layer = tree.layer(i)
    if layer is None:
        raise ZsimInputError(f"workload: model {model.name!r} has no decoder layer {i}")
    return [n.op for n in tree.forward(layer)]


def _layer_saved_per_token(m: ModelSpec, p: int, layer: int = 0) -> int:
    """Bytes per token that autograd keeps for one decoder layer.

    Measured on HF's own graph (validation/cpu_truth/activation_memory.py, checked by
    tests/test_activation_truth.py within 1 %):

    - each RMSNorm (HF's eager LlamaRMSNorm): the fp32 upcast of its input (4h, saved by the
      scale), the p-byte downcast (p·h, saved by the weight multiply) and its output (p·h,
      saved by the next linear); Gemma's (x·rsqrt in fp32, times 1 + weight, then cast):
      the fp32 input and normalised values (8h) and the output (p·h); a LayerNorm (aten's
      native kernel): its input and output (2·p·h) and fp32 mean and rstd (8) — two
      LayerNorms reading the same input (parallel residual) keep that input once;
    - attention: roped q (p·q) and k (p·kv), v (p·kv), the SDPA output (p·q) and its fp32
      logsumexp (4·heads). transformers passes k and v unexpanded (``enable_gqa``) when
      there is no mask and head_dim <= 256 (integrations/sdpa_attention.py,
      use_gqa_in_sdpa), as in unpadded causal training; otherwise repeat_kv's expanded
      copies (p·q each) are what SDPA saves. o_proj's input is the SDPA output itself: the
      flash kernels write it token-major, so HF's ``transpose(1, 2).contiguous()`` copies
      nothing. A fused q/k/v projection's output (p·(q + 2kv)) stays alive through the
      views SDPA keeps of it (v; GPT-2's unroped q and k too);
    - Qwen3's q/k RMSNorms: their fp32 upcasts and p-byte downcasts, (4 + p)·(q + kv), and
      fp32 rsqrt per head (4 per head);
    - gated MLP (SwiGLU, GeGLU, Phi-3's fused gate_up): gate, act(gate), up, and their
      product (4·p·I); plain MLP: fc1 output and activation output (2·p·I) for GELU, the
      ReLU output only (1·p·I: ReLU saves its result, which fc2 saves too), and for
      NewGELUActivation (a Python formula) its input, tanh output, 0.5·x, 1 + tanh and
      output (5·p·I);
    - dropout with p > 0 (residual dropouts): a 1-byte mask per value, per dropout site.
      Not counted: embedding dropout's mask (once per model, t·h bytes) and attention
      dropout inside SDPA (the CUDA flash kernel keeps a seed, not a mask).
    """
    h = m.hidden_size
    if m.is_mla:
        return _deepseek_saved_per_token(m, p, layer)
    if m.attention_impl == "eager":
        # transformers' eager_attention_forward (modeling_gemma2.py:176-207): the matmuls save
        # the roped q (p·q) and k and v, which repeat_kv copies to all heads (p·q each) when
        # heads are grouped; o_proj the transposed contiguous copy of the output (p·q); the
        # s x s tensors are eager_scores_saved_bytes
        kv = m.q_dim if m.num_heads != m.num_kv_heads else m.kv_dim
        attn = p * (2 * m.q_dim + 2 * kv)
        return _norms_and_masks_per_token(m, p) + attn + 4 * p * m.intermediate_size
    if m.attention_impl == "eager_alibi":
        # BLOOM (modeling_bloom.py BloomAttention.forward): reshape copies q, k and v out of the
        # fused projection (lines 266-268; baddbmm saves q and k, bmm saves v) and _merge_heads
        # copies the context (line 296, saved by dense): 4·p·h; the s x s tensors are
        # eager_scores_saved_bytes. fused_qkv itself dies: nothing keeps a view of it.
        attn = 4 * p * h
        mlp = _PLAIN_MLP_SAVED[m.activation] * p * m.intermediate_size
        return _norms_and_masks_per_token(m, p) + attn + mlp
    kv = m.kv_dim if m.head_dim <= _SDPA_GQA_MAX_HEAD_DIM else m.q_dim
    if m.family in _FUSED_QKV:
        roped = 0 if m.family == "gpt2" else p * (m.q_dim + kv)
        attn = p * (m.q_dim + 2 * m.kv_dim) + roped + p * m.q_dim + 4 * m.num_heads
    else:
        attn = p * (2 * m.q_dim + 2 * kv) + 4 * m.num_heads
    if m.qk_norm:
        attn += (4 + p) * (m.q_dim + m.kv_dim) + 4 * (m.num_heads + m.num_kv_heads)
    if m.is_moe:
        mlp = _moe_saved_per_token(m, p)
    elif m.mlp == "swiglu":
        mlp = 4 * p * m.intermediate_size
    else:
        mlp = _PLAIN_MLP_SAVED[m.activation] * p * m.intermediate_size
    return _norms_and_masks_per_token(m, p) + attn + mlp


def _norms_and_masks_per_token(m: ModelSpec, p: int) -> int:
    """The hidden-width part of :func:`_layer_saved_per_token`: the norms' saved tensors and
    the residual dropout masks (what Megatron's tensor parallelism does not split and its
    sequence parallelism does)."""
    h = m.hidden_size
    if m.family == "gemma2":
        # Gemma2RMSNorm (x·rsqrt(mean(x²)) in fp32, times 1 + weight, then cast): the fp32
        # input and normalised values (8h), the fp32 rsqrt per row (4); input_layernorm's and
        # pre_feedforward_layernorm's outputs are saved by the next linears (p·h), the two
        # post-norms' outputs only enter the residual add (measured on CPU to the byte:
        # tests/test_family_activation_truth.py)
        norms = _norm_count(m) * (8 * h + 4) + 2 * p * h
    elif m.norm == "rmsnorm":
        one_norm = (8 + p) * h if m.family == "gemma" else (4 + 2 * p) * h
        norms = _norm_count(m) * one_norm
    else:
        norms = _norm_count(m) * (2 * p * h + 8) - _shared_norm_inputs(m) * p * h
    masks = _DROPOUT_SITES.get(m.family, 0) * h if m.dropout > 0 else 0
    return norms + masks


def _deepseek_saved_per_token(m: ModelSpec, p: int, layer: int) -> int:
    """Bytes per token a DeepSeek-V2/V3 decoder layer keeps (modeling_deepseek_v2.py), measured
    with validation/cpu_truth/family_activation_memory.py (tests/test_family_activation_truth.py):

    - the two RMSNorms of the residual stream and the latent ones (kv_a_layernorm over
      kv_lora_rank, q_a_layernorm over q_lora_rank): (4 + 2p) per value, as Llama's, and the
      fp32 rsqrt of each row (4 per norm);
    - MLA: the concatenated query and the assembled key (p·H·d_qk each), kv_b_proj's output
      (p·H·(nope + d_v), alive through the value view SDPA keeps), the SDPA output (p·H·d_v)
      and its fp32 logsumexp (4·H). q_proj's / q_b_proj's output and the rotary copies die:
      cat, the casts and the products with the shared cos/sin (or complex frequencies) keep
      none of them;
    - a dense layer's MLP: 4·p·I, as Llama's;
    - a MoE layer: the router's fp32 copy of its input (4h, saved by the fp32 F.linear) and
      scores (4·E), its top-k indices (8·k); V3's renormalised fp32 weights and their row sum
      (4·k + 4; its group mask dies with the scores it selected), V2's group-limited bool mask
      (E, kept by masked_fill on the path to the weights); plus, per layer, the fp32 copy of
      the router weight (:meth:`Workload.layer_activation_bytes`);
      the routed rows as Mixtral's (fp32 routing weights); the shared experts' gated MLP
      (4·p·I_shared: their output is added, nothing kept).
    """
    h, heads, d_qk, d_v = m.hidden_size, m.num_heads, m.head_dim, m.v_head_dim
    nope = d_qk - m.rotary_dim
    latent = m.kv_lora_rank + m.q_lora_rank
    norms = (4 + 2 * p) * (2 * h + latent) + 4 * (3 + (1 if m.q_lora_rank else 0))
    attn = p * heads * (2 * d_qk + nope + 2 * d_v) + 4 * heads
    if not m.is_moe_layer(layer):
        return norms + attn + 4 * p * m.intermediate_size
    return norms + attn + _deepseek_routed_saved_per_token(m, p) + 4 * p * m.shared_expert_size


def _deepseek_routed_saved_per_token(m: ModelSpec, p: int) -> int:
    """The router's and the routed rows' part of :func:`_deepseek_saved_per_token`, per token."""
    h, k, e = m.hidden_size, m.experts_per_token, m.num_experts
    router = 4 * h + 4 * e + 8 * k
    if m.family == "deepseek_v3":
        router += 4 * k + 4
    elif m.router_groups:
        router += e
    rows = k * (24 + 2 * p * h + 4 * p * m.expert_intermediate_size + 4)
    return router + rows


def _moe_saved_per_token(m: ModelSpec, p: int) -> int:
    """Bytes per token the sparse MoE block keeps for backward (transformers 5, grouped_mm
    experts), measured with validation/cpu_truth/moe_activation_memory.py (tests/test_moe.py):

    - router: the fp32 softmax output (4·E), top-k's int64 indices (8·k); Mixtral, which
      renormalises the k weights in place and keeps them fp32, also 8·k + 4 (the fp32 top-k
      values, the in-place division's saved copy and its row sum); Qwen casts the weights to
      p bytes (p·k) and with norm_topk_prob keeps 4·k + 4 more (measured);
    - per routed row (k per token): the int64 gather indices perm // k, perm and the inverse
      permutation (24), the gathered input rows (p·h, saved by the gate_up grouped GEMM),
      gate_up's output (2·p·I, saved by act_fn and the product), act_fn's output and the
      product (2·p·I), down's output and the gathered routing weight (p·h + w: 4 bytes in
      Mixtral, whose weights stay fp32, p in Qwen), saved by the weighting multiply;
    - Qwen2-MoE's shared expert: a gated MLP (4·p·I_shared), its output (p·h) and the
      sigmoid of its gate (p), both saved by their product.

    Not counted: the grouped GEMMs' int32 offsets (4·E bytes per layer, not per token).
    """
    k, h, e = m.experts_per_token, m.hidden_size, m.num_experts
    weight_bytes = 4 if m.family == "mixtral" else p
    if m.family == "mixtral":   # always renormalised, the weights kept fp32
        router = 4 * e + 16 * k + 4
    else:
        router = 4 * e + 8 * k + p * k + (4 * k + 4 if m.norm_topk else 0)
    rows = k * (24 + 2 * p * h + 4 * p * m.expert_intermediate_size + weight_bytes)
    return router + rows + _shared_expert_saved_per_token(m, p)


def _routed_saved_per_token(m: ModelSpec, p: int) -> int:
    """The part of a MoE layer's per-token saved bytes that a DeepSpeed-MoE layer replaces:
    the router's and the routed rows' (the shared experts' stay), for the sparse MoE block
    (:func:`_moe_saved_per_token`) and DeepSeek-MoE (:func:`_deepseek_saved_per_token`)."""
    if m.is_mla:
        return _deepseek_routed_saved_per_token(m, p)
    return _moe_saved_per_token(m, p) - _shared_expert_saved_per_token(m, p)


def _shared_expert_saved_per_token(m: ModelSpec, p: int) -> int:
    """Bytes per token Qwen2-MoE's shared expert keeps (0 without one): its gated MLP
    (4·p·I_shared), its output (p·h) and the sigmoid of its gate (p), both saved by their
    product (measured with the sparse block, :func:`_moe_saved_per_token`)."""
    return 4 * p * m.shared_expert_size + p * m.hidden_size + p if m.shared_expert_size else 0


def eager_scores_saved_bytes(w: "Workload") -> int:
    """Bytes of the s x s tensors one eager-attention layer keeps for backward (BLOOM,
    modeling_bloom.py BloomAttention.forward; Gemma-2, modeling_gemma2.py eager_attention_forward,
    lines 193-205, whose line numbers follow in brackets), b·heads·s² values of each:

    - the fp32 softmax output (line 284 [203], ``softmax(..., dtype=torch.float32)``: saved by
      softmax's backward), 4 bytes;
    - Gemma-2's softcapped scores: tanh's output (line [197]), p bytes;
    - the p-byte probabilities the bmm with v saves (line 293): the ``.to(query.dtype)`` cast, or
      with attention_dropout > 0 the dropout's output, p bytes;
    - with attention_dropout > 0, CUDA's native_dropout bool mask (line 287), 1 byte. (On CPU
      dropout multiplies by a p-byte noise tensor instead: validation/cpu_truth measures p = 0.)

    The raw and masked scores die: the scalar multiplies and divisions, add, the fp32 upcast and
    baddbmm keep none. Measured to the byte with validation/cpu_truth/family_activation_memory.py.
    """
    m = w.model
    if w.ulysses > 1:
        raise ZsimInputError(f"model {m.name!r}: DeepSpeed-Ulysses with eager (ALiBi) attention "
                             "is not modelled by zsim")
    scores = w.micro_batch * m.num_heads * w.seq_len * w.seq_len
    # Gemma-2's softcap (modeling_gemma2.py:195-198): tanh saves its p-byte output
    softcap = w.param_bytes if m.attn_softcap else 0
    return scores * (4 + w.param_bytes + softcap + (1 if m.attention_dropout > 0 else 0))


#: Families whose q, k and v come from one projection's output.
_FUSED_QKV = frozenset({"phi3", "gpt2", "gpt_neox", "falcon"})
#: Values per intermediate element a plain (ungated) MLP keeps, by activation (see above).
_PLAIN_MLP_SAVED = {"gelu": 2, "gelu_pytorch_tanh": 2, "gelu_new": 5, "relu": 1, "silu": 2,
                    # BLOOM's GeLUFunction saves its input (ctx.save_for_backward), dense_4h_to_h
                    # the output: 2 (modeling_bloom.py GeLUFunction.forward)
                    "bloom_gelu": 2}
#: Residual dropout sites per layer (modeltree: the dropouts each layer calls; OPT's and
#: Falcon's functional dropouts after attention and the MLP).
_DROPOUT_SITES = {"phi3": 2, "phi": 2, "gpt2": 2, "gpt_neox": 2, "falcon": 2, "opt": 2}


def _norm_count(m: ModelSpec) -> int:
    """Norms per decoder layer (zsim.modeltree's layer builders)."""
    if m.family == "gemma2":
        return 4
    if m.family == "phi" or (m.family == "falcon" and m.parallel_residual and m.parallel_norms == 1):
        return 1
    return 2


def _shared_norm_inputs(m: ModelSpec) -> int:
    """LayerNorms whose input another LayerNorm of the layer already keeps (parallel
    residual with two norms: both read the layer input)."""
    two_on_input = (m.family == "gpt_neox" and m.parallel_residual) or (
        m.family == "falcon" and m.parallel_residual and m.parallel_norms == 2)
    return 1 if two_on_input else 0


#: Largest head_dim for which transformers lets SDPA handle grouped-query heads itself
#: (integrations/sdpa_attention.py, use_gqa_in_sdpa: ``key.shape[-1] == value.shape[-1] <= 256``).
_SDPA_GQA_MAX_HEAD_DIM = 256


@lru_cache(maxsize=65536)
def _kernels(w: Workload, module: str, pass_: str) -> tuple[Kernel, ...]:
    tree = model_tree(w.model)
    node = tree.op_node(module)
    if node is None:
        layer = tree.node(module)
        if layer is not None and layer.kind in ("decoder_layer", "moe_block"):
            # A whole layer (or a MoE block, one ZeRO-3 leaf): its ops' kernels in forward order.
            return tuple(k for sub in tree.forward(layer) for k in _kernels(w, sub.op, pass_))
        raise ZsimInputError(f"workload: unknown module {module!r}")
    return _node_kernels(w, node, pass_ == "bwd")


def _node_kernels(w: Workload, node: Node, bwd: bool) -> tuple[Kernel, ...]:
    """Kernels of the op of ``node``, by its kind; shapes from its parameters or the spec."""
    m, t, p = w.model, w.tokens, w.param_bytes
    h, q, kvd, inter, vocab = m.hidden_size, m.q_dim, m.kv_dim, m.intermediate_size, m.vocab_size
    kind = node.kind
    # Launch counts are those of HF's eager Llama code (one per torch op that runs a kernel).
    if kind == "embedding":
        # Gather t rows of the table; backward scatters t·width gradient values into it.
        width = node.params[0].shape[1]
        gather = _mem(t * width * p * (3 if bwd else 1), launches=3 if bwd else 1)
        if m.family in ("gemma", "gemma2"):
            # GemmaTextScaledWordEmbedding: times sqrt(hidden) (read p, write p; bwd the same)
            return (gather, _mem(t * width * p * 2, launches=1))
        return (gather,)
    if kind == "position_embedding":
        # GPT's learned positions: gather t rows of the P×h table and add them to the token
        # embeddings (read 2·p, write p); backward scatters into the table and passes the
        # gradient through the add.
        return (_mem(t * h * p * (6 if bwd else 4), launches=4 if bwd else 2),)
    if kind == "norm":
        # Megatron sequence parallelism: the norm (and its residual add) runs on t/shards tokens.
        width = t * (_norm_values(m, node) if node.width else h) // w.sequence_shards
        if m.norm == "layernorm":
            # Residual add (read 2·p, write p) and aten's native LayerNorm (read p, write p,
            # fp32 mean/rstd per row); backward reads x, dy and writes dx (3·p) plus the
            # weight/bias reductions.
            return (_mem(width * 5 * p * (2 if bwd else 1), launches=4 if bwd else 2),)
        # Residual add (read 2·p, write p) and HF's eager RMSNorm, op by op per element:
        # upcast (read p, write 4), pow (4+4), mean (4), scale (4+4), downcast (4+p),
        # weight (p+p) = 30 + 4p bytes; backward about twice that. 9 kernels, ~14 backward.
        per_elem = 3 * p + 30 + 4 * p
        return (_mem(width * per_elem * (2 if bwd else 1), launches=14 if bwd else 9),)
    if kind == "lm_head":
        width = _head_width(w)
        logits = _gemm(t, vocab, width)
        # Loss: upcast logits (t·V·(p+4)), log_softmax (2·4·t·V), nll; backward mirrors it.
        loss = _mem(t * vocab * (p + 4 + 8 + (12 if bwd else 0)), launches=8 if bwd else 6)
        if m.final_softcap:
            # Gemma-2's final softcap (modeling_gemma2.py:520-523): divide, tanh, multiply over
            # t·V (read+write p each); backward multiply (2p), tanh's (3p), divide (2p)
            cap = _mem(t * vocab * p * (7 if bwd else 6), launches=3)
            return (logits, logits, cap, loss) if bwd else (logits, cap, loss)
        return (logits, logits, loss) if bwd else (logits, loss)
    if kind in ("linear", "mm_linear", "conv1d"):
        n, k = node.params[0].shape   # Linear weight (out, in); Conv1D weight (in, out)
        if kind == "conv1d":
            n, k = k, n
        # Forward: one GEMM; backward: data gradient and weight gradient, each 2·t·n·k.
        return (_gemm(t, n, k), _gemm(t, k, n)) if bwd else (_gemm(t, n, k),)
    if kind == "attention":
        # Causal flash attention: QKᵀ and PV over half the s×s square, per head:
        # fwd 2 GEMMs × 2·s·s·hd / 2 per head per sequence; bwd 5 GEMMs (2.5× fwd).
        s, b = w.seq_len, w.micro_batch
        if m.attention_impl == "eager":
            # eager attention computes the whole s x s square on every layer: a sliding window
            # only changes the mask's values, not the kernels or what is kept
            return _eager_kernels(w, bwd) + (_rope_kernel(w, bwd),)
        if m.sliding_window and s > m.sliding_window:
            raise ZsimInputError(
                f"model {m.name!r}: sequence length {s} exceeds its sliding_window {m.sliding_window}: "
                "windowed attention (an explicit mask, no flash kernel) is not modelled by zsim")
        if m.is_mla:
            return _mla_attention_kernels(w, bwd)
        if m.attention_impl == "eager_alibi":
            return _eager_alibi_kernels(w, bwd)
        fwd_flops = 2.0 * 2 * b * s * s * q / 2
        if w.ulysses > 1:
            # Ulysses: the full sequence S = s·u with q/u of the query width: u times the FLOPs.
            s = s * w.ulysses
            fwd_flops = 2.0 * 2 * b * s * s * (q / w.ulysses) / 2
        attn = Kernel("attention", flops=fwd_flops * (2.5 if bwd else 1.0), head_dim=m.head_dim, seq=s,
                      backward=bwd)
        if m.learned_positions:
            return (attn,)
        return (attn, _rope_kernel(w, bwd))
    if kind in _MOE_KINDS:
        return _moe_kernels(w, node, bwd)
    if kind in DS_MOE_KINDS:   # DeepSpeed-MoE layers (expert parallelism)
        return ds_moe_kernels(w, node, bwd)
    if kind == "activation":
        # Gated: act(gate)·up reads 2·t·I, writes t·I (bwd ~2×); plain GELU/ReLU read and
        # write t·I; NewGELUActivation runs eight elementwise ops (read+write each).
        if m.mlp == "swiglu":
            per, launches = 3 * t * (node.width or inter) * p, 2
        elif m.activation == "gelu_new":
            per, launches = 16 * t * inter * p, 8
        elif m.activation == "bloom_gelu":
            # BLOOM's GeLUFunction (modeling_bloom.py bloom_gelu_forward, line 121): 9 elementwise
            # ops reading 12 and writing 9 values per element; backward (bloom_gelu_back, lines
            # 136-139) 18 ops reading 26 and writing 18: not the generic 2x.
            if bwd:
                return (_mem(44 * t * inter * p, launches=18),)
            return (_mem(21 * t * inter * p, launches=9),)
        else:
            per, launches = 2 * t * inter * p, 2
        return (_mem(per * (2 if bwd else 1), launches=launches * (2 if bwd else 1)),)
    if kind == "dropout":
        # native_dropout: read p, write p and a 1-byte mask; backward reads dy and the mask.
        width = t * (node.width or h) // w.sequence_shards
        return (_mem(width * ((p + 1 + p) if bwd else (p + p + 1)), launches=1),)
    raise ZsimInputError(f"workload: unknown module {node.op!r}")


#: HBM bytes per rotated value, in units of the value's size, that HF's apply_rotary_pos_emb
#: moves: q·cos (read 1, write 1), neg of one half (read ½, write ½), cat of the halves (read 1,
#: write 1), ·sin (read 1, write 1), add (read 2, write 1); cos/sin broadcast over the heads.
#: Backward runs the mirror image (the muls' gradients, neg, the halves' slice_backward, the sum
#: of the two paths), taken as the same traffic.
ROPE_TRAFFIC_PER_VALUE = 10


def _rope_kernel(w: Workload, bwd: bool) -> Kernel:
    """RoPE on q and k (mul, slice, neg, cat, mul, add each) and the transposed copy; partial
    rotary rotates rotary_dim of each head_dim values.

    Its inputs are the transposed views of the q/k projections, so its kernels take torch's
    strided (non-vectorised) elementwise path: priced at the profile's strided efficiency,
    which validation/microbench/membound.py measures on this very code (5 kernels; about
    15 ps per rotated value on an H200, against 2 ps that the contiguous byte model gives).
    """
    m, t, p = w.model, w.tokens, w.param_bytes
    rotated = (m.q_dim + m.kv_dim) * m.rotary_dim // m.head_dim
    return Kernel("memory", nbytes=float(t * rotated * p * ROPE_TRAFFIC_PER_VALUE),
                  launches=20 if bwd else 13, strided=True)


def _eager_kernels(w: Workload, bwd: bool) -> tuple[Kernel, ...]:
    """transformers' eager_attention_forward (modeling_gemma2.py:176-207), op by op, with
    B = b·heads batches, N = B·s² scores, q = heads·head_dim:

    Forward: three copies of p·t·q (read+write each): matmul(q, kᵀ) (193) folds its 4-D
    operands into a bmm, which copies the roped q (its (b, s, heads, d) layout does not fold);
    k and v are copied by repeat_kv to every head when heads are grouped (190-191, then they
    fold as views), else by the folds themselves; the batched GEMM [s, d] x [d, s] (2·B·s²·d FLOPs); the scaling multiply
    (read+write p·N); the softcap's division, tanh and multiply (195-198, 3 x 2·p·N); the mask
    add (200: 3·p·N, the mask broadcast over heads); the fp32 softmax and cast (203, as BLOOM's:
    p·N + 4N, 8N, 4N + p·N); dropout with p > 0 (204); the GEMM [s, s] x [s, d] (205); the
    transposed contiguous copy (206, p·t·q twice).

    Backward: the output copy's gradient folded back into a bmm (p·t·q twice); two GEMMs per
    matmul; dropout's, the casts' and softmax's as BLOOM's; the softcap's multiply (2·p·N),
    tanh (3·p·N) and division (2·p·N); the scaling (2·p·N); repeat_kv's sums over the group
    (read p·t·q, write p·t·kv, for k and v); the q, k and v gradients copied to the
    projections' token-major layout (``view`` after ``transpose``: p·t·(q + 2kv) twice). The
    mask add's gradient passes through. The aten ops of both passes, listed with a dispatch mode
    on CPU (Gemma-2, grouped and not, attention_dropout 0), are these and the RoPE's.
    """
    m, t, p = w.model, w.tokens, w.param_bytes
    b, s, heads, d, q = w.micro_batch, w.seq_len, m.num_heads, m.head_dim, m.q_dim
    if w.ulysses > 1:
        raise ZsimInputError(f"model {m.name!r}: DeepSpeed-Ulysses with eager attention is not modelled by zsim")
    n = b * heads * s * s
    gemm = Kernel("gemm", flops=2.0 * n * d)
    grouped = heads != m.num_kv_heads
    softcap, dropout = bool(m.attn_softcap), m.attention_dropout > 0
    if not bwd:
        copies = 2   # k and v: repeat_kv's copies when grouped, else the bmm folds of their transposed layout
        mem = (1 + copies) * 2 * p * t * q + 2 * p * n + (6 * p * n if softcap else 0) + 3 * p * n
        mem += (p * n + 4 * n) + 8 * n + (4 * n + p * n) + 2 * p * t * q
        launches = 1 + copies + 1 + (3 if softcap else 0) + 1 + 3 + 1
        if dropout:
            mem, launches = mem + (2 * p + 1) * n, launches + 1
        return (gemm, gemm, _mem(mem, launches=launches))
    mem = 2 * p * t * q + (p * n + 4 * n) + 12 * n + (4 * n + p * n) + (7 * p * n if softcap else 0) + 2 * p * n
    # the q, k, v gradients copied back to the projections' token-major layout (view after transpose)
    mem += 2 * p * t * (q + 2 * m.kv_dim)
    launches = 1 + 3 + (3 if softcap else 0) + 1 + 3
    if grouped:
        mem, launches = mem + 2 * p * t * (q + m.kv_dim), launches + 2
    if dropout:
        mem, launches = mem + (2 * p + 1) * n, launches + 1
    return (gemm, gemm, gemm, gemm, _mem(mem, launches=launches))


def _eager_alibi_kernels(w: Workload, bwd: bool) -> tuple[Kernel, ...]:
    """BLOOM's eager ALiBi attention core, op by op (modeling_bloom.py BloomAttention.forward),
    with B = b·heads batches and N = B·s² scores; the full s x s square is computed (no causal
    skipping: the mask is added afterwards).

    Forward: reshape copies q, k, v (lines 266-268: read+write p·t·h each); baddbmm (271-276)
    copies the broadcast alibi into its output (write p·N), then the batched GEMM
    [s, d] x [d, s] (2·B·s²·d); the causal mask add (281, read 2·p·N, write p·N: the eager mask
    is a (b, 1, s, s) tensor broadcast over heads); softmax in fp32 (284): the bf16 input's fp32
    copy (p·N + 4N: aten's softmax converts first unless the input is fp16 on CUDA), softmax
    (4N + 4N) and the cast back (4N + p·N); dropout with p > 0 (287: read p·N, write p·N and a
    1-byte mask); the batched GEMM [s, s] x [s, d] (293); _merge_heads' copy (296).

    Backward: the merge copy's gradient reshape (p·t·h twice); bmm's two GEMMs
    (grad·vᵀ, probsᵀ·grad); dropout's (p·N + N read, p·N write); the casts' and softmax's
    (p·N + 4N, 12N, 4N + p·N); baddbmm's two GEMMs and their alpha scalings (derivatives.yaml
    maybe_multiply: 2·p·t·h each); the q/k/v select gradients into the fused projection's
    (3 zero fills of 3·p·t·h, 3 slice copies of 2·p·t·h, 2 accumulations of 9·p·t·h). The
    mask add's gradient passes through; the eager mask itself is built once per forward. The
    aten ops of both passes, listed with a dispatch mode on CPU (attention_dropout 0), are these.
    """
    m, t, p = w.model, w.tokens, w.param_bytes
    b, s, heads, d, h = w.micro_batch, w.seq_len, m.num_heads, m.head_dim, m.hidden_size
    if w.ulysses > 1:
        raise ZsimInputError(f"model {m.name!r}: DeepSpeed-Ulysses with eager (ALiBi) attention "
                             "is not modelled by zsim")
    n = b * heads * s * s
    bmm = Kernel("gemm", flops=2.0 * b * heads * s * s * d)
    dropout = m.attention_dropout > 0
    if not bwd:
        mem = 6 * p * t * h + p * n + 3 * p * n + (p * n + 4 * n) + 8 * n + (4 * n + p * n) + 2 * p * t * h
        launches = 3 + 1 + 1 + 3 + 1
        if dropout:
            mem, launches = mem + (2 * p + 1) * n, launches + 1
        return (bmm, bmm, _mem(mem, launches=launches))
    mem = 2 * p * t * h + (p * n + 4 * n) + 12 * n + (4 * n + p * n) + 4 * p * t * h + 33 * p * t * h
    launches = 1 + 1 + 1 + 1 + 2 + 8
    if dropout:
        mem, launches = mem + (2 * p + 1) * n, launches + 1
    return (bmm, bmm, bmm, bmm, _mem(mem, launches=launches))


def _mla_attention_kernels(w: Workload, bwd: bool) -> tuple[Kernel, ...]:
    """DeepSeek's MLA core (modeling_deepseek_v2.py DeepseekV2Attention.forward): RoPE on the
    qk_rope part of q (heads·r) and on the single shared k_pe (r), the query concatenation
    (torch.cat of q_nope and q_pe, read and write p·H·(nope + r)), the key assembly (new_empty,
    copy_ of k_nope and of k_pe expanded to every head: the same), then SDPA with q/k head dim
    d_qk = nope + r and v head dim d_v. Causal FLOPs: QKᵀ 2·s·s·d_qk and PV 2·s·s·d_v per head
    per sequence, halved; backward 2.5× forward as for every attention kernel.

    SDPA on CUDA cannot run its flash kernel when d_v differs from d_qk (torch's
    check_head_dim_size_flash asks for equal last dimensions), so this kernel is the
    memory-efficient one; :meth:`zsim.hardware.ComputeProfile.attention_eff` refuses to price it
    from curves measured with equal head dims. RoPE byte counts are op-by-op estimates
    (unmeasured): V2's complex form (float copy, complex multiply, cast back: 2p + 16 bytes per
    rotated value), V3's interleaved form (two strided slices, four multiplies, two adds, a
    cat: about 16p).
    """
    m, t, p = w.model, w.tokens, w.param_bytes
    s, b, heads, d_qk, d_v = w.seq_len, w.micro_batch, m.num_heads, m.head_dim, m.v_head_dim
    fwd_flops = 2.0 * b * s * s * heads * (d_qk + d_v) / 2
    attn = Kernel("attention", flops=fwd_flops * (2.5 if bwd else 1.0), head_dim=d_qk, seq=s, backward=bwd,
                  v_head_dim=d_v)
    rotated = (heads + 1) * m.rotary_dim
    per_rotated = 2 * p + 16 if m.family == "deepseek_v2" else 16 * p
    rope = _mem(t * rotated * per_rotated, launches=(14 if m.family == "deepseek_v2" else 16) * (2 if bwd else 1))
    assemble = _mem(t * 4 * p * heads * d_qk * (2 if bwd else 1), launches=4 if bwd else 3)
    return (attn, rope, assemble)


#: Node kinds of the sparse MoE block (zsim.modeltree.moe._moe_block), priced by _moe_kernels.
_MOE_KINDS = frozenset({"router", "experts", "expert_activation", "expert_gate"})


def expert_groups(m: ModelSpec, tokens: int) -> tuple[int, float]:
    """(experts that run, expected rows each) for ``tokens`` routed tokens: S = tokens·top-k
    (token, expert) rows spread evenly over the E experts, so min(E, S) experts run, with
    S / min(E, S) rows each (the expected load under balanced routing; real routing is
    uneven, which zsim does not model)."""
    rows = tokens * m.experts_per_token
    groups = min(m.num_experts, rows)
    return groups, rows / groups


def _grouped_gemm(groups: int, rows: float, n: int, k: int) -> tuple[Kernel, ...]:
    """One grouped GEMM (torch grouped_mm): ``groups`` per-expert (rows × k)·(k × n) products
    in one launch, each priced at its own size (small groups run at small-GEMM efficiency)."""
    one = 2.0 * rows * n * k
    return tuple(Kernel("gemm", flops=one, launches=1 if g == 0 else 0) for g in range(groups))


def _moe_kernels(w: Workload, node: Node, bwd: bool) -> tuple[Kernel, ...]:
    """Kernels of the sparse MoE block's ops (transformers 5 Mixtral/Qwen2-MoE/Qwen3-MoE).

    Assumed implementation: transformers' default experts implementation, "grouped_mm"
    (modeling_utils.py get_correct_experts_implementation: None -> "grouped_mm" for every
    @use_experts_implementation class; integrations/moe.py _can_use_grouped_mm: CUDA SM80+
    with torch >= 2.9). grouped_mm_experts_forward does NOT loop over experts in Python: it
    sorts the S = t·k (token, expert) rows by expert, gathers them (hidden_states[perm // k]),
    runs ONE grouped GEMM for gate_up_proj and one for down_proj over all experts (offsets
    from histc/cumsum), scales by the routing weights, un-permutes and sums the k rows of
    each token (no index_add_). The host issues one launch set per MoE layer, not per expert.
    The eager fallback (experts_implementation="eager": a Python loop over the experts hit,
    one index + 2 linears + index_add_ each) is not modelled.

    GEMMs are priced per expert on the expected rows (:func:`expert_groups`), so FLOPs are
    2·t·k·3·I·h forward: 2 × the active expert parameters per token.
    """
    m, t, p = w.model, w.tokens, w.param_bytes
    h, e, k = m.hidden_size, m.num_experts, m.experts_per_token
    s = t * k
    twice = 2 if bwd else 1
    kind = node.kind
    if kind == "router" and m.family in _DEEPSEEK:
        return _deepseek_router_kernels(w, bwd)
    if kind == "router":
        # F.linear (t × h)·(h × E); fp32 softmax (cast t·E·(p + 4), softmax 2·4·t·E), top-k
        # (reads 4·t·E, writes t·k·(4 + 8)), normalisation / cast of the k weights.
        gemms = (_gemm(t, e, h), _gemm(t, h, e)) if bwd else (_gemm(t, e, h),)
        mem = t * e * (p + 12) + t * k * 12 * 2
        return gemms + (_mem(mem * twice, launches=8 if bwd else 6),)
    if kind == "experts":
        groups, rows = expert_groups(m, t)
        inter = m.expert_intermediate_size
        # the routing weights are fp32 in Mixtral and DeepSeek (no cast back after the fp32
        # scores), p-byte in Qwen-MoE (``.to(router_logits.dtype)``): the weighted rows follow them
        wb = 4 if m.family in _FP32_ROUTING_WEIGHTS else p
        up = _grouped_gemm(groups, rows, 2 * inter, h)
        down = _grouped_gemm(groups, rows, h, inter)
        if bwd:   # data and weight gradients of each grouped GEMM
            up, down = up + _grouped_gemm(groups, rows, h, 2 * inter), down + _grouped_gemm(groups, rows, inter, h)
        # sort of the S expert ids, perm // k, histc + cumsum; gather S rows (read + write
        # S·h·p) and the S weights
        route = _mem(s * (8 * 4 + 2 * h * p + 2 * wb), launches=7)
        # proj_out · weights (read S·h·p + S·wb, write S·h·wb), index back (S·h·wb twice),
        # sum of each token's k rows (read S·h·wb, write t·h·wb), cast to p bytes
        combine = _mem(s * h * (p + 4 * wb) + t * h * (wb + (wb + p if wb != p else 0)), launches=6)
        if m.family in _DEEPSEEK:   # DeepseekV2Moe adds shared_experts(x) to it: read 2·t·h·p, write t·h·p
            combine = _mem(combine.nbytes + 3 * t * h * p, launches=7)
        return up + down + (_mem(route.nbytes * twice, route.launches * twice),
                            _mem(combine.nbytes * twice, combine.launches * twice))
    if kind == "expert_activation":
        # act_fn(gate) · up over the S routed rows (as the dense gated activation, per row)
        return (_mem(3 * s * node.width * p * twice, launches=2 * twice),)
    # expert_gate (Qwen2-MoE shared_expert_gate, (1, h)): F.linear to one logit per token,
    # sigmoid, times the shared expert's output (read t·h·p, write t·h·p) and the add to
    # the routed output (read 2·t·h·p, write t·h·p)
    gemms = (_gemm(t, 1, h), _gemm(t, h, 1)) if bwd else (_gemm(t, 1, h),)
    return gemms + (_mem(5 * t * h * p * twice, launches=3 * twice),)


#: DeepSeek families; and the families whose routing weights stay fp32 into the experts.
_DEEPSEEK = frozenset({"deepseek_v2", "deepseek_v3"})
_FP32_ROUTING_WEIGHTS = frozenset({"mixtral"}) | _DEEPSEEK


def _deepseek_router_kernels(w: Workload, bwd: bool) -> tuple[Kernel, ...]:
    """DeepseekV2TopkRouter / DeepseekV3TopkRouter: ``F.linear(x.float(), weight.float())``,
    an fp32 GEMM (t × h)·(h × E) on fp32 copies of the input and the weight (torch runs fp32
    matmuls without TF32 by default), then the scoring in fp32.

    Memory passes (estimates, op by op): the casts (t·h·(p + 4), E·h·(p + 4)); V2 softmax
    (2·4·t·E), top-k (reads 4·t·E, writes 12·t·k), the routed_scaling_factor multiply; with
    group-limited routing (V2 group_limited_greedy, every V3) the group max or top-2 sum,
    the group top-k, the mask and the masked_fill (about 13·t·E) and V3's sigmoid and bias
    add (4·4·t·E), gather and renormalisation of the k weights (about 32·t·k).

    The weight itself is a p-byte parameter like any other: transformers lists ``gate.weight``
    in ``_keep_in_fp32_modules_strict``, but DeepSpeed 0.19.8 keeps only buffers in fp32
    (runtime/keep_in_fp32.py: "parameters named by the lists still follow the training dtype");
    V3's fp32 e_score_correction_bias buffer (E values per layer) is not counted.
    """
    m, t, p = w.model, w.tokens, w.param_bytes
    h, e, k = m.hidden_size, m.num_experts, m.experts_per_token
    gemms = (_gemm(t, e, h), _gemm(t, h, e)) if bwd else (_gemm(t, e, h),)
    gemms = tuple(Kernel("gemm", flops=g.flops, precision="fp32") for g in gemms)
    mem = (t + e) * h * (p + 4) + t * e * 12 + t * k * 12 + t * k * 8
    launches = 7
    if m.router_groups:
        mem += t * e * 13
        launches += 8
    if m.family == "deepseek_v3":
        mem += t * e * 16 + t * k * 32
        launches += 6
    twice = 2 if bwd else 1
    return gemms + (_mem(mem * twice, launches=launches * twice),)


def _norm_values(m: ModelSpec, node: Node) -> int:
    """Values per token a norm of ``node.width`` normalises: Qwen3's per-head q/k norms
    run over every head (q or kv values per token); DeepSeek's latent norms (q_a_layernorm,
    kv_a_layernorm) over their width."""
    if node.name.endswith("q_norm"):
        return m.q_dim
    if node.name.endswith("k_norm"):
        return m.kv_dim
    return node.width


def _head_width(w: Workload) -> int:
    """Input width of lm_head: its weight's (OPT's word_embed_proj_dim may differ from h)."""
    tree = model_tree(w.model)
    node = tree.op_node("lm_head")
    shape = node.params[0].shape if node.params else tree.parameters()[tree.uses(node)[0]].shape
    return shape[1]
