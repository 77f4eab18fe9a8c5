"""Workload layer: the kernels each module runs, their FLOPs and bytes, and activation memory.

Module names follow Hugging Face (``model.layers.3.self_attn.q_proj``); the schedule layer
emits compute ops naming them. Shapes in comments use b = micro-batch, s = sequence length,
t = b·s tokens, h = hidden, q = heads·head_dim, kv = kv_heads·head_dim, I = intermediate,
V = vocab, p = bytes per 16-bit/32-bit model value.

Nothing here knows about time: :mod:`zsim.compute` turns kernels into seconds with a
hardware profile.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from .errors import ZsimInputError
from .model import ModelSpec
from .modeltree import Node, model_tree


@dataclass(frozen=True)
class Kernel:
    """One GPU kernel: a GEMM (m×k by k×n), an attention call, or a memory-bound pass."""

    kind: str              # "gemm" | "attention" | "memory"
    flops: float = 0.0     # floating-point operations
    nbytes: float = 0.0    # HBM bytes read + written (memory-bound kernels)
    launches: int = 1      # eager-mode kernel launches the host issues for it
    head_dim: int = 0      # attention: the kernel's speed depends on head_dim and seq
    seq: int = 0
    backward: bool = False


def _gemm(m: int, n: int, k: int) -> Kernel:
    # t×k input times k×n weight: 2·m·n·k FLOPs.
    return Kernel("gemm", flops=2.0 * m * n * k)


def _mem(nbytes: float, launches: int = 1) -> Kernel:
    return Kernel("memory", nbytes=float(nbytes), launches=launches)


@dataclass(frozen=True)
class Workload:
    """A model at a given micro-batch, sequence length and precision."""

    model: ModelSpec
    micro_batch: int
    seq_len: int
    param_bytes: int = 2

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
    def layer_activation_bytes(self) -> int:
        """Bytes one decoder layer keeps for backward, for one micro-batch (no checkpointing).

        Per token, what autograd saves in HF's Llama layer (see _layer_saved_per_token).
        """
        return self.tokens * _layer_saved_per_token(self.model, self.param_bytes)

    def checkpoint_bytes(self) -> int:
        """Bytes a checkpointed layer keeps: its input hidden states, t·h·p."""
        return self.tokens * self.model.hidden_size * self.param_bytes

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
        return kept, transient

    def backward_working_bytes(self) -> int:
        """Transient activation-gradient buffers during one layer's backward.

        Gradients of the residual stream (t·h·p, two alive) and of the MLP intermediates
        (t·I·p, two alive) at the widest point.
        """
        m = self.model
        return self.tokens * self.param_bytes * (2 * m.hidden_size + 2 * m.intermediate_size)


def layer_modules(model: ModelSpec, i: int) -> list[str]:
    """Compute ops of decoder layer ``i`` in forward order (zsim.modeltree)."""
    tree = model_tree(model)
    layer = tree.node(f"model.layers.{i}")
    if layer is None or layer.kind != "decoder_layer":
        raise ZsimInputError(f"workload: unknown module {f'model.layers.{i}'!r}")
    return [n.op for n in tree.forward(layer)]


def _layer_saved_per_token(m: ModelSpec, p: int) -> int:
    """Bytes per token that autograd keeps for one decoder layer.

    Measured on HF's own graph (validation/cpu_truth/activation_memory.py, checked by
    tests/test_activation_truth.py within 1 %):

    - each RMSNorm (HF's eager LlamaRMSNorm): the fp32 upcast of its input (4h, saved by the
      scale), the p-byte downcast (p·h, saved by the weight multiply) and its output (p·h,
      saved by the next linear); a LayerNorm (aten's native kernel): its input and output
      (2·p·h) and fp32 mean and rstd (8);
    - attention: roped q (p·q) and k (p·kv), v (p·kv), the SDPA output (p·q) and its fp32
      logsumexp (4·heads). transformers passes k and v unexpanded (``enable_gqa``) when
      there is no mask and head_dim <= 256 (integrations/sdpa_attention.py,
      use_gqa_in_sdpa), as in unpadded causal training; otherwise repeat_kv's expanded
      copies (p·q each) are what SDPA saves. o_proj's input is the SDPA output itself: the
      flash kernels write it token-major, so HF's ``transpose(1, 2).contiguous()`` copies
      nothing;
    - SwiGLU MLP: gate, silu(gate), up, and their product (4·p·I); GELU MLP: fc1 output and
      GELU output (2·p·I).
    """
    h = m.hidden_size
    norm = (4 + 2 * p) * h if m.norm == "rmsnorm" else 2 * p * h + 8
    kv = m.kv_dim if m.head_dim <= _SDPA_GQA_MAX_HEAD_DIM else m.q_dim
    attn = p * (2 * m.q_dim + 2 * kv) + 4 * m.num_heads
    mlp = (4 if m.mlp == "swiglu" else 2) * p * m.intermediate_size
    return 2 * norm + attn + mlp


#: Largest head_dim for which transformers lets SDPA handle grouped-query heads itself
#: (integrations/sdpa_attention.py, use_gqa_in_sdpa: ``key.shape[-1] == value.shape[-1] <= 256``).
_SDPA_GQA_MAX_HEAD_DIM = 256


@lru_cache(maxsize=65536)
def _kernels(w: Workload, module: str, pass_: str) -> tuple[Kernel, ...]:
    tree = model_tree(w.model)
    node = tree.op_node(module)
    if node is None:
        layer = tree.node(module)
        if layer is not None and layer.kind == "decoder_layer":
            # A whole layer: its ops' kernels in forward order.
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
        # Gather t rows of h; backward scatters t·h gradient values into the V×h table.
        return (_mem(t * h * p * (3 if bwd else 1), launches=3 if bwd else 1),)
    if kind == "position_embedding":
        # GPT's learned positions: gather t rows of the P×h table and add them to the token
        # embeddings (read 2·p, write p); backward scatters into the table and passes the
        # gradient through the add.
        return (_mem(t * h * p * (6 if bwd else 4), launches=4 if bwd else 2),)
    if kind == "norm":
        # Residual add (read 2·p, write p) and HF's eager RMSNorm, op by op per element:
        # upcast (read p, write 4), pow (4+4), mean (4), scale (4+4), downcast (4+p),
        # weight (p+p) = 30 + 4p bytes; backward about twice that. 9 kernels, ~14 backward.
        per_elem = 3 * p + 30 + 4 * p
        return (_mem(t * h * per_elem * (2 if bwd else 1), launches=14 if bwd else 9),)
    if kind == "lm_head":
        logits = _gemm(t, vocab, h)
        # Loss: upcast logits (t·V·(p+4)), log_softmax (2·4·t·V), nll; backward mirrors it.
        loss = _mem(t * vocab * (p + 4 + 8 + (12 if bwd else 0)), launches=8 if bwd else 6)
        return (logits, logits, loss) if bwd else (logits, loss)
    if kind == "linear":
        n, k = node.params[0].shape   # weight (out, in)
        # Forward: one GEMM; backward: data gradient and weight gradient, each 2·t·n·k.
        return (_gemm(t, n, k), _gemm(t, k, n)) if bwd else (_gemm(t, n, k),)
    if kind == "attention":
        # Causal flash attention: QKᵀ and PV over half the s×s square, per head:
        # fwd 2 GEMMs × 2·s·s·hd / 2 per head per sequence; bwd 5 GEMMs (2.5× fwd).
        s, b = w.seq_len, w.micro_batch
        fwd_flops = 2.0 * 2 * b * s * s * q / 2
        # RoPE on q and k (mul, slice, neg, cat, mul, add each) and the transposed copy.
        rope = _mem(t * (q + kvd) * p * 3, launches=20 if bwd else 13)
        attn = Kernel("attention", flops=fwd_flops * (2.5 if bwd else 1.0), head_dim=m.head_dim, seq=s,
                      backward=bwd)
        return (attn, rope)
    if kind == "activation":
        # SwiGLU: silu(gate)·up reads 2·t·I, writes t·I (bwd ~2×); GELU reads/writes t·I.
        per = (3 if m.mlp == "swiglu" else 2) * t * inter * p
        return (_mem(per * (2 if bwd else 1), launches=4 if bwd else 2),)
    raise ZsimInputError(f"workload: unknown module {node.op!r}")
