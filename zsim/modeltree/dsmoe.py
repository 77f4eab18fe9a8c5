"""DeepSpeed-MoE layers (``deepspeed.moe.layer.MoE``) in place of a family's sparse MoE block.

What zsim models when a user trains with DeepSpeed's expert parallelism (docs/moe.md): every
decoder layer's ``mlp`` is a small wrapper module whose child ``moe`` is
``MoE(hidden_size, expert=<the family's expert MLP>, num_experts=E, ep_size, k, ...)`` and whose
forward returns ``moe(x)[0]`` (MoE returns (output, l_aux, exp_counts), deepspeed/moe/layer.py
= L:132). The expert is Llama's gated MLP (gate_proj, up_proj, down_proj, SiLU) of the
family's expert width: the per-expert module the fused HF experts (gate_up_proj (E, 2I, h),
down_proj (E, h, I)) hold, one matrix per expert.

The tree is ONE RANK's module, as DeepSpeed builds it: ``Experts`` holds only the
``num_experts / ep_size`` local experts (L:63, L:72; experts.py:18), so parameter lists and
counts are per rank. Module names and registration order (named_parameters) follow
deepspeed 0.19.8: MoE registers ``deepspeed_moe`` (MOELayer: ``gate`` = TopKGate with ``wg``
Linear(h, E, bias=False), sharded_moe.py = SM:541; ``experts`` = Experts with
``deepspeed_experts`` ModuleList, experts.py:18), then, with use_residual, ``mlp`` (the
expert module itself) and ``coefficient`` Linear(h, 2) (L:81-84).

Qwen2-MoE: only the routed experts become the DeepSpeed-MoE layer. The wrapper keeps the
block's dense shared expert (a Qwen2MoeMLP of shared_expert_intermediate_size) and its
``shared_expert_gate`` Linear(h, 1), registered after ``moe`` in the order
Qwen2MoeSparseMoeBlock registers them, and runs them as its forward does
(transformers models/qwen2_moe/modeling_qwen2_moe.py, Qwen2MoeSparseMoeBlock.forward):
shared_expert(x), then moe(x)[0], then sigmoid(shared_expert_gate(x)) · shared + routed.
They are ordinary parameters (no ``allreduce = False``, experts.py:24-26), so they stay
data parallel in the non-expert ZeRO param group (moe/utils.py:72-149).

DeepSeek-V2/V3 likewise: each DeepSeek-MoE block (layers from first_k_dense_replace on; the
first ones keep their dense MLP) becomes the wrapper, with ``moe`` and then the block's
dense ``shared_experts`` (a DeepseekV2MLP of n_shared_experts · moe_intermediate_size),
returning moe(x)[0] + shared_experts(x) as DeepseekV2Moe.forward / DeepseekV3MoE.forward
add them (transformers models/deepseek_v2/modeling_deepseek_v2.py,
models/deepseek_v3/modeling_deepseek_v3.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ZsimInputError
from .nodes import SELF, Node, Param
from .parts import _gated_mlp, _linear

if TYPE_CHECKING:  # the spec is read by attribute only; zsim.model imports this package
    from ..model import ModelSpec


#: noisy_gate_policy values DeepSpeed accepts (L:69-70); zsim prices only None.
NOISY_GATE_POLICIES = (None, "None", "Jitter", "RSample")


@dataclass(frozen=True)
class DeepSpeedMoE:
    """The keyword arguments of ``deepspeed.moe.layer.MoE`` (defaults as L:38-53) that zsim
    reads. ``k`` None means the model's own top-k (``num_experts_per_tok``)."""

    ep_size: int = 1
    k: int | None = None
    capacity_factor: float = 1.0
    eval_capacity_factor: float = 1.0
    min_capacity: int = 4
    use_residual: bool = False
    noisy_gate_policy: str | None = None
    drop_tokens: bool = True
    use_rts: bool = True
    use_tutel: bool = False
    enable_expert_tensor_parallelism: bool = False
    top2_2nd_expert_sampling: bool = True

    def __post_init__(self) -> None:
        for key in ("ep_size", "min_capacity"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if key == "ep_size" else 0):
                raise ZsimInputError(f"DeepSpeed-MoE {key} must be an integer >= "
                                     f"{1 if key == 'ep_size' else 0}, got {value!r}")
        if self.k is not None and (isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1):
            raise ZsimInputError(f"DeepSpeed-MoE k must be an integer >= 1, got {self.k!r}")
        for key in ("capacity_factor", "eval_capacity_factor"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
                    or not math.isfinite(value):
                raise ZsimInputError(f"DeepSpeed-MoE {key} must be a number > 0, got {value!r}")
        for key in ("use_residual", "drop_tokens", "use_rts", "use_tutel", "enable_expert_tensor_parallelism",
                    "top2_2nd_expert_sampling"):
            if not isinstance(getattr(self, key), bool):
                raise ZsimInputError(f"DeepSpeed-MoE {key} must be true or false, got {getattr(self, key)!r}")
        if self.noisy_gate_policy not in NOISY_GATE_POLICIES:
            # L:69-70 asserts the same list
            raise ZsimInputError(f"DeepSpeed-MoE noisy_gate_policy {self.noisy_gate_policy!r} is not one of "
                                 "None, 'Jitter', 'RSample' (deepspeed/moe/layer.py:69)")
        self._refuse_unmodelled()

    def _refuse_unmodelled(self) -> None:
        """Settings whose work zsim does not model, refused in one line."""
        if not self.drop_tokens:
            raise ZsimInputError("DeepSpeed-MoE drop_tokens=false is not modelled: the capacity becomes the "
                                 "busiest expert's token count, known only at run time "
                                 "(deepspeed/moe/sharded_moe.py:466-476)")
        if self.use_tutel:
            raise ZsimInputError("DeepSpeed-MoE use_tutel=true is not modelled (Tutel's dispatcher, "
                                 "sharded_moe.py:669-678)")
        if self.enable_expert_tensor_parallelism:
            raise ZsimInputError("DeepSpeed-MoE enable_expert_tensor_parallelism is not modelled (it needs "
                                 "tensor parallelism)")
        if self.noisy_gate_policy not in (None, "None"):
            raise ZsimInputError(f"DeepSpeed-MoE noisy_gate_policy {self.noisy_gate_policy!r} is not modelled "
                                 "(only None)")

    def top_k(self, spec: "ModelSpec") -> int:
        """k as the layer runs it: the given one, else the model's experts per token."""
        return self.k if self.k is not None else spec.experts_per_token

    def local_experts(self, spec: "ModelSpec") -> int:
        """Experts each rank holds: num_experts / ep_size (L:63)."""
        return spec.num_experts // self.ep_size


def check_deepspeed_moe(spec: "ModelSpec", moe: DeepSpeedMoE) -> None:
    """Refuse what DeepSpeed refuses or zsim does not model for ``spec``'s MoE layers."""
    if not spec.num_experts:
        raise ZsimInputError(f"model {spec.name!r}: DeepSpeed-MoE layers need a mixture-of-experts model "
                             "(Mixtral, Qwen2-MoE, Qwen3-MoE, DeepSeek-V2/V3)")
    if spec.num_experts % moe.ep_size:
        # L:59: assert num_experts % ep_size == 0
        raise ZsimInputError(f"model {spec.name!r}: {spec.num_experts} experts are not divisible by ep_size "
                             f"{moe.ep_size} (deepspeed/moe/layer.py:59)")
    k = moe.top_k(spec)
    if k > spec.num_experts:
        raise ZsimInputError(f"DeepSpeed-MoE k {k} exceeds the {spec.num_experts} experts")


def _expert_mlp(spec: "ModelSpec", name: str, i: int) -> Node:
    """One local expert: LlamaMLP's modules (gate_proj, up_proj, down_proj, act_fn) whose ops
    run on the rows DeepSpeed dispatches to it (kinds ``expert_linear`` and
    ``expert_mlp_activation``: priced per dispatched row, zsim.parallel.expert_work)."""
    h, inter = spec.hidden_size, spec.expert_intermediate_size

    def lin(local: str, out: int, in_: int) -> Node:
        n = f"{name}.{local}"
        return Node(n, "expert_linear", i, (Param(f"{n}.weight", (out, in_), n, i),), op=n)
    return Node(name, "mlp", i, children=(
        lin("gate_proj", inter, h), lin("up_proj", inter, h), lin("down_proj", h, inter),
        Node(f"{name}.act_fn", "expert_mlp_activation", i, op=name, width=inter),
    ), calls=("gate_proj", "act_fn", "up_proj", "down_proj"))


def deepspeed_moe_block(spec: "ModelSpec", p: str, i: int) -> Node:
    """``{p}.mlp``: the wrapper, its ``moe`` (deepspeed.moe.layer.MoE) and one rank's experts.

    Forward (L:105-132, SM:649-755): the gate's own op (fp32 F.linear with wg's weight,
    SM:568-572, and top-k gating; wg is registered but not called as a module), MOELayer's
    own op (the sparse encode into [E, C, M] and, timed with it, the decode), then each
    local expert in turn on its chunk (experts.py:28-38); with use_residual the dense expert
    and the coefficient after the routed output.
    """
    moe = spec.deepspeed_moe
    if moe is None:
        raise ZsimInputError(f"model {spec.name!r} has no DeepSpeed-MoE layers")
    m = f"{p}.mlp.moe"
    d = f"{m}.deepspeed_moe"
    wg = Node(f"{d}.gate.wg", "unused", i, (Param(f"{d}.gate.wg.weight", (spec.num_experts, spec.hidden_size),
                                                   f"{d}.gate.wg", i),))
    gate = Node(f"{d}.gate", "ds_moe_gate", i, children=(wg,), op=f"{d}.gate", shares=(f"{d}.gate.wg.weight",))
    n = moe.local_experts(spec)
    x = f"{d}.experts.deepspeed_experts"
    local = Node(x, "module_list", i, children=tuple(_expert_mlp(spec, f"{x}.{j}", i) for j in range(n)),
                 calls=tuple(str(j) for j in range(n)))
    experts = Node(f"{d}.experts", "ds_moe", i, children=(local,), calls=("deepspeed_experts",))
    layer = Node(d, "ds_moe_layer", i, children=(gate, experts), calls=("gate", SELF, "experts"), op=d)
    children: tuple[Node, ...] = (layer,)
    calls: tuple[str, ...] = ("deepspeed_moe",)
    if moe.use_residual:
        children += (_gated_mlp(spec, m, i, "mlp", spec.expert_intermediate_size),
                     _linear(f"{m}.coefficient", 2, spec.hidden_size, i, True))
        calls += ("mlp", "coefficient")
    block = Node(m, "ds_moe", i, children=children, calls=calls)
    return _wrapper(spec, p, i, block)


def _wrapper(spec: "ModelSpec", p: str, i: int, block: Node) -> Node:
    """``{p}.mlp``, the user's module around ``moe``; for Qwen2-MoE also the dense shared
    expert and its gate (see the module docstring), called shared_expert, moe,
    shared_expert_gate. The gate's op (kind ``expert_gate``) prices the sigmoid, the product
    and the add to the routed output, as in the model's own block. DeepSeek's wrapper calls
    moe, then shared_experts, then its own op: the add (kind ``ds_moe_add``)."""
    if not spec.shared_expert_size:
        return Node(f"{p}.mlp", "ds_moe", i, children=(block,), calls=("moe",))
    m = f"{p}.mlp"
    if spec.is_mla:
        shared = _gated_mlp(spec, m, i, "shared_experts", spec.shared_expert_size)     # (I_s, h) ×2, (h, I_s)
        return Node(m, "ds_moe_add", i, children=(block, shared), calls=("moe", "shared_experts", SELF), op=m)
    shared = _gated_mlp(spec, m, i, "shared_expert", spec.shared_expert_size)          # (I_s, h) ×2, (h, I_s)
    shared_gate = _linear(f"{m}.shared_expert_gate", 1, spec.hidden_size, i, False, "expert_gate")   # (1, h)
    return Node(m, "ds_moe", i, children=(block, shared, shared_gate),
                calls=("shared_expert", "moe", "shared_expert_gate"))


def dispatch_op(spec: "ModelSpec", i: int) -> str:
    """The op after which layer ``i``'s dispatch all-to-all runs (MOELayer's own op)."""
    return f"model.layers.{i}.mlp.moe.deepspeed_moe"


def expert_op(spec: "ModelSpec", i: int, j: int, local: str) -> str:
    """The op of local expert ``j``'s ``local`` linear in layer ``i``."""
    return f"model.layers.{i}.mlp.moe.deepspeed_moe.experts.deepspeed_experts.{j}.{local}"
