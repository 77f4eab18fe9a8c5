"""Model specs: the shapes of a decoder-only transformer, from a preset or a HF config.json.

A :class:`ModelSpec` holds shapes only. :meth:`ModelSpec.parameters` lists every parameter
in ``model.named_parameters()`` order of the Hugging Face implementation (LlamaForCausalLM,
MistralForCausalLM, Qwen2ForCausalLM), which is the order DeepSpeed flattens and partitions
them in; the schedule layer derives gradient-hook order and stage-3 module fetches from it.
Parameters and counts are read from the spec's module tree (:attr:`ModelSpec.tree`,
:mod:`zsim.modeltree`), which also gives the workload its kernels and the schedule its orders.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .errors import ZsimInputError
from .inputs import read_input_bytes
from .limits import MODEL_FIELD_MAX, show_number
from .modeltree import ACTIVATIONS, FAMILY_BUILDERS, ModelTree, Param, model_tree  # Param: re-exported
from .modeltree.dsmoe import DeepSpeedMoE, check_deepspeed_moe


@dataclass(frozen=True)
class ModelSpec:
    """Shapes of a Llama-family (or GPT-style) decoder-only model.

    ``mlp`` is "swiglu" (gate/up/down, Llama) or "gelu" (fc1/fc2 with biases, GPT-3).
    ``norm`` is "rmsnorm" (weight only) or "layernorm" (weight and bias).
    ``num_experts`` > 0 (families :data:`MOE_FAMILIES`) replaces every layer's MLP by a sparse
    MoE block of that many experts, ``experts_per_token`` routed per token.
    """

    name: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 4096
    head_dim: int = 0                 # 0: hidden_size // num_heads
    qkv_bias: bool = False            # Qwen2 has q/k/v biases
    mlp: str = "swiglu"
    norm: str = "rmsnorm"
    learned_positions: bool = False   # GPT-3: a learned position embedding table
    family: str = "llama"             # module tree builder (zsim.modeltree.FAMILY_BUILDERS)
    o_bias: bool = False              # Llama attention_bias: o_proj is biased too
    mlp_bias: bool = False            # Llama mlp_bias: gate/up/down biased
    qk_norm: bool = False             # Qwen3: per-head RMSNorm of q and k
    activation: str = "silu"          # hidden_act (zsim.modeltree.ACTIVATIONS)
    rotary_dim: int = 0               # rotated values per head (partial rotary); 0: head_dim
    parallel_residual: bool = False   # attention and MLP read the same input (NeoX, Falcon, Phi)
    parallel_norms: int = 2           # Falcon, parallel: 1 shared LayerNorm or 2 (ln_attn, ln_mlp)
    dropout: float = 0.0              # residual/embedding dropout probability (masks when > 0)
    attention_dropout: float = 0.0    # inside SDPA (flash: no mask kept)
    lm_head_bias: bool = False        # Phi
    embed_dim: int = 0                # OPT word_embed_proj_dim; 0: hidden_size
    post_norm: bool = False           # OPT do_layer_norm_before false: LayerNorm after the residual
    sliding_window: int = 0           # attention window (0: none); longer sequences are refused
    attention_impl: str = "sdpa"      # "sdpa" (flash kernels), "eager_alibi" (BLOOM) or "eager" (Gemma-2)
    attn_softcap: float = 0.0         # Gemma-2 attn_logit_softcapping (0: none): tanh over the s x s scores
    final_softcap: float = 0.0        # Gemma-2 final_logit_softcapping (0: none): tanh over the t x V logits
    num_experts: int = 0              # routed experts per MoE layer (0: a dense MLP)
    experts_per_token: int = 0        # top-k experts each token is routed to
    expert_intermediate_size: int = 0  # each expert's I (0: intermediate_size); Qwen-MoE moe_intermediate_size
    shared_expert_size: int = 0       # Qwen2-MoE shared expert's intermediate size (0: none)
    norm_topk: bool = False           # the k routing weights renormalised to sum 1 (Mixtral always)
    # DeepSeek-V2/V3 (families deepseek_v2/deepseek_v3): multi-head latent attention (MLA) and
    # DeepSeek-MoE. With kv_lora_rank > 0, head_dim is the q/k head dim (qk_nope + qk_rope),
    # rotary_dim is qk_rope_head_dim and v_head_dim the value head dim.
    kv_lora_rank: int = 0             # MLA: width of the compressed key/value latent (0: no MLA)
    q_lora_rank: int = 0              # MLA: width of the compressed query (0: a plain q_proj)
    v_head_dim: int = 0               # value head dim (0: head_dim)
    dense_layers: int = 0             # first_k_dense_replace: leading layers with a dense MLP
    router_groups: int = 0            # n_group of group-limited routing (0: plain top-k)
    router_topk_groups: int = 0       # topk_group: groups a token may route into
    # DeepSpeed-MoE layers (deepspeed.moe.layer.MoE) replace the MoE blocks; the tree is then
    # one rank's (its num_experts / ep_size local experts): zsim.modeltree.dsmoe, docs/moe.md
    deepspeed_moe: DeepSpeedMoE | None = None
    # Rows of the token embedding table when they differ from lm_head's (0: vocab_size): one
    # DeepSpeed AutoTP rank keeps the embedding whole and holds 1/tp of lm_head (zsim.parallel.autotp)
    embed_vocab_size: int = 0

    def __post_init__(self) -> None:
        for key in ("hidden_size", "num_layers", "num_heads", "num_kv_heads",
                    "intermediate_size", "vocab_size", "max_position_embeddings"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ZsimInputError(f"model {self.name!r}: {key} must be a positive integer, got {value!r}")
        if self.head_dim == 0:
            if self.hidden_size % self.num_heads:
                raise ZsimInputError(
                    f"model {self.name!r}: hidden_size {self.hidden_size} is not divisible by "
                    f"num_attention_heads {self.num_heads} (give head_dim)")
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
        if self.num_heads % self.num_kv_heads:
            raise ZsimInputError(
                f"model {self.name!r}: num_attention_heads {self.num_heads} is not a multiple of "
                f"num_key_value_heads {self.num_kv_heads}")
        if self.mlp not in ("swiglu", "gelu"):
            raise ZsimInputError(f"model {self.name!r}: mlp must be swiglu or gelu, got {self.mlp!r}")
        if self.norm not in ("rmsnorm", "layernorm"):
            raise ZsimInputError(f"model {self.name!r}: norm must be rmsnorm or layernorm, got {self.norm!r}")
        if self.family not in FAMILY_BUILDERS:
            raise ZsimInputError(f"model {self.name!r}: family must be one of {', '.join(FAMILY_BUILDERS)}, "
                                 f"got {self.family!r}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ZsimInputError(f"model {self.name!r}: attention_impl must be one of {', '.join(ATTENTION_IMPLS)}, "
                                 f"got {self.attention_impl!r}")
        if self.activation not in ACTIVATIONS:
            raise ZsimInputError(f"model {self.name!r}: activation must be one of {', '.join(ACTIVATIONS)}, "
                                 f"got {self.activation!r}")
        if self.rotary_dim == 0:
            object.__setattr__(self, "rotary_dim", self.head_dim)
        if not 0 < self.rotary_dim <= self.head_dim:
            raise ZsimInputError(f"model {self.name!r}: rotary_dim {self.rotary_dim} must be in 1..head_dim")
        for key in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ZsimInputError(f"model {self.name!r}: {key} must be in [0, 1), got {getattr(self, key)!r}")
        self._check_experts()
        self._check_mla()
        if self.deepspeed_moe is not None:
            check_deepspeed_moe(self, self.deepspeed_moe)

    def _check_mla(self) -> None:
        """MLA fields only on a DeepSeek family, with a value head dim and a rotary part
        smaller than the q/k head dim (the rest is qk_nope_head_dim)."""
        if self.v_head_dim == 0:
            object.__setattr__(self, "v_head_dim", self.head_dim)
        if self.family not in DEEPSEEK_FAMILIES:
            if self.kv_lora_rank or self.q_lora_rank or self.dense_layers or self.router_groups \
                    or self.v_head_dim != self.head_dim:
                raise ZsimInputError(f"model {self.name!r}: MLA and DeepSeek-MoE fields need a DeepSeek family "
                                     f"({', '.join(DEEPSEEK_FAMILIES)}), got {self.family!r}")
            return
        for key in ("kv_lora_rank", "v_head_dim"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ZsimInputError(f"model {self.name!r}: {key} must be a positive integer, got {value!r}")
        if not 0 < self.rotary_dim < self.head_dim:
            raise ZsimInputError(f"model {self.name!r}: qk_rope_head_dim {self.rotary_dim} must be below the q/k "
                                 f"head dim {self.head_dim} (qk_nope_head_dim must be positive)")
        if self.num_kv_heads != self.num_heads:
            raise ZsimInputError(f"model {self.name!r}: MLA expands keys and values to every head: "
                                 f"num_key_value_heads {self.num_kv_heads} must equal num_attention_heads "
                                 f"{self.num_heads}")
        if not 0 <= self.dense_layers <= self.num_layers or self.q_lora_rank < 0:
            raise ZsimInputError(f"model {self.name!r}: first_k_dense_replace {self.dense_layers} must be in "
                                 f"0..num_hidden_layers")
        if self.router_groups and (self.num_experts % self.router_groups
                                   or not 0 < self.router_topk_groups <= self.router_groups):
            raise ZsimInputError(f"model {self.name!r}: n_group {self.router_groups} must divide the "
                                 f"{self.num_experts} experts, with 1 <= topk_group <= n_group")

    def _check_experts(self) -> None:
        """A MoE spec: a MoE family, 1 <= top-k <= experts; a dense one has no expert fields."""
        moe = self.family in MOE_FAMILIES
        if not moe:
            if self.num_experts or self.experts_per_token or self.shared_expert_size:
                raise ZsimInputError(f"model {self.name!r}: experts need a mixture-of-experts family "
                                     f"({', '.join(MOE_FAMILIES)}), got {self.family!r}")
            return
        for key in ("num_experts", "experts_per_token"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ZsimInputError(f"model {self.name!r}: {key} must be a positive integer, got {value!r}")
        if self.experts_per_token > self.num_experts:
            raise ZsimInputError(f"model {self.name!r}: num_experts_per_tok {self.experts_per_token} exceeds "
                                 f"the {self.num_experts} experts")
        if self.expert_intermediate_size == 0:
            object.__setattr__(self, "expert_intermediate_size", self.intermediate_size)
        if self.expert_intermediate_size < 0 or self.shared_expert_size < 0:
            raise ZsimInputError(f"model {self.name!r}: expert sizes must be positive")
        if self.mlp != "swiglu":
            raise ZsimInputError(f"model {self.name!r}: MoE experts are gated (swiglu) in zsim")

    # ---- shapes ---------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        """Whether the decoder layers hold a sparse mixture-of-experts block."""
        return self.num_experts > 0

    @property
    def is_mla(self) -> bool:
        """Whether attention is DeepSeek's multi-head latent attention."""
        return self.kv_lora_rank > 0

    def is_moe_layer(self, i: int) -> bool:
        """Whether decoder layer ``i`` holds the MoE block (DeepSeek's first layers are dense)."""
        return self.is_moe and i >= self.dense_layers

    @property
    def v_dim(self) -> int:
        """Width of the attention output before o_proj (heads × v_head_dim)."""
        return self.num_heads * self.v_head_dim

    @property
    def q_dim(self) -> int:
        """Width of the query projection output (heads × head_dim)."""
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of each of the key and value projections (kv_heads × head_dim)."""
        return self.num_kv_heads * self.head_dim

    # ---- parameters: read from the module tree (zsim.modeltree) ----------------------------
    @property
    def tree(self) -> ModelTree:
        """The module tree HF builds for this spec: modules, parameters, call order."""
        return model_tree(self)

    def layer_parameters(self, i: int) -> list[Param]:
        """Parameters of decoder layer ``i`` in HF registration order."""
        layer = self.tree.layer(i)
        if layer is None:
            raise IndexError(f"model {self.name!r} has no decoder layer {i}")
        return [p for n in layer.walk() for p in n.params]

    def parameters(self) -> list[Param]:
        """Every parameter in ``named_parameters()`` order (tied lm_head listed once)."""
        return list(self.tree.parameters())

    def layer_param_count(self) -> int:
        """Parameters in one decoder layer."""
        return sum(p.numel for p in self.layer_parameters(0))

    @property
    def num_parameters(self) -> int:
        """Total parameter count Ψ (tied embeddings counted once)."""
        return sum(p.numel for p in self.tree.parameters())

    def largest_parameter_numel(self) -> int:
        """Elements of the largest single parameter (embeddings, lm_head or a projection)."""
        return max(p.numel for p in self.tree.parameters())


#: Attention cores zsim prices (zsim.workload): SDPA's flash kernels, BLOOM's eager ALiBi path
#: (baddbmm, fp32 softmax, bmm with the s x s probabilities materialised), or transformers'
#: eager_attention_forward (matmul, optional tanh softcap, fp32 softmax, matmul: Gemma-2).
ATTENTION_IMPLS = ("sdpa", "eager_alibi", "eager")

#: Families whose decoder layers hold a sparse MoE block (zsim.modeltree.moe_layer): HF
#: model_type names. Expert parallelism (DeepSpeed-MoE's ep_size, expert groups) is not
#: modelled: every rank holds every expert, which ZeRO partitions like any parameter.
MOE_FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3")
#: DeepSeek-V2/V3: MLA attention and DeepSeek-MoE (zsim.modeltree.deepseek).
DEEPSEEK_FAMILIES = ("deepseek_v2", "deepseek_v3")


# ---- presets ----------------------------------------------------------------------------
# Shapes from each model's published config.json.
PRESETS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("tinyllama-1.1b", 2048, 22, 32, 4, 5632, 32000, max_position_embeddings=2048),
        ModelSpec("llama-2-7b", 4096, 32, 32, 32, 11008, 32000),
        ModelSpec("llama-2-13b", 5120, 40, 40, 40, 13824, 32000),
        ModelSpec("llama-2-70b", 8192, 80, 64, 8, 28672, 32000),
        ModelSpec("llama-3-8b", 4096, 32, 32, 8, 14336, 128256, max_position_embeddings=8192),
        ModelSpec("llama-3-70b", 8192, 80, 64, 8, 28672, 128256, max_position_embeddings=8192),
        ModelSpec("mistral-7b", 4096, 32, 32, 8, 14336, 32000, max_position_embeddings=32768),
        ModelSpec("qwen2.5-7b", 3584, 28, 28, 4, 18944, 152064, max_position_embeddings=32768,
                  qkv_bias=True),
        ModelSpec("qwen2.5-72b", 8192, 80, 64, 8, 29568, 152064, max_position_embeddings=32768,
                  qkv_bias=True),
        ModelSpec("gpt3-175b", 12288, 96, 96, 96, 49152, 50257, tie_word_embeddings=True,
                  max_position_embeddings=2048, mlp="gelu", norm="layernorm", learned_positions=True),
    )
}

#: The model `zsim predict` uses when none is given.
DEFAULT_MODEL = "llama-2-7b"

#: Most decoder layers a config.json may ask for (the largest published models have ~130): the
#: simulator replays every layer, so a typo like 1e9 would run for hours instead of answering.
MAX_HF_LAYERS = MODEL_FIELD_MAX["num_hidden_layers"]


def _int_field(cfg: Mapping[str, Any], key: str, where: str) -> int:
    value = cfg[key]
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)  # 4096.0: JSON writers that emit floats
    if isinstance(value, bool) or not isinstance(value, int):
        raise ZsimInputError(f"{where}: {key} must be an integer, got {value!r}")
    if value <= 0:
        raise ZsimInputError(f"{where}: {key} must be positive, got {value!r}")
    bound = MODEL_FIELD_MAX.get(key)
    if bound is not None and value > bound:
        raise ZsimInputError(f"{where}: {key} must be at most {bound} (see zsim.limits), "
                             f"got {show_number(value)}")
    return value


#: HF ``model_type`` values whose decoder zsim models exactly (absent: llama).
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "phi", "gpt2",
                         "gpt_neox", "falcon", "opt", "bloom") + MOE_FAMILIES

#: Architectures seen on the Hub that zsim refuses, with why (one line each).
_REFUSED_MODEL_TYPES: dict[str, str] = {}

#: config.json fields of the modelled MoE families read by zsim (exempt from the refusal table).
_MOE_FIELDS = frozenset({"num_local_experts", "num_experts", "moe_intermediate_size", "num_experts_per_tok"})
#: ... and of the DeepSeek families (zsim.model._deepseek_fields).
_DEEPSEEK_FIELDS = _MOE_FIELDS | {"n_routed_experts", "kv_lora_rank"}

#: ... and of Gemma-2, whose softcapping zsim prices (eager attention, zsim.workload).
_GEMMA2_FIELDS = frozenset({"attn_logit_softcapping", "final_logit_softcapping"})

#: config.json fields that mean an architecture zsim does not model -> what it is. A config
#: holding one is refused, never silently priced as a dense Llama.
_UNMODELLED_FIELDS = {
    "num_local_experts": "mixture of experts", "num_experts": "mixture of experts",
    "n_routed_experts": "mixture of experts", "moe_intermediate_size": "mixture of experts",
    "num_experts_per_tok": "mixture of experts",
    "vision_config": "a multimodal (vision) tower", "audio_config": "a multimodal (audio) tower",
    "text_config": "a multimodal wrapper config (give its text_config as the model)",
    "kv_lora_rank": "multi-head latent attention (MLA)",
    # softcapping outside Gemma-2 (which zsim prices: _GEMMA2_FIELDS) is not modelled
    "attn_logit_softcapping": "attention-logit softcapping (eager attention with s x s scores)",
    "final_logit_softcapping": "final-logit softcapping (extra t x V logits tensors)",
    "use_sliding_window": "sliding-window attention on some layers (Qwen)",
    "qk_layernorm": "LayerNorm of q and k (Phi qk_layernorm)",
    "alibi": "ALiBi attention (eager, s x s scores kept)",
    "reorder_and_upcast_attn": "GPT-2's upcast eager attention",
    "scale_attn_by_inverse_layer_idx": "GPT-2's per-layer attention scaling (eager attention)",
    "add_cross_attention": "cross-attention",
    "layerdrop": "LayerDrop (layers skipped at random)",
}

#: tie_word_embeddings when config.json leaves it out: each config class's default.
_TIED_BY_DEFAULT = {"gemma", "gemma2", "gpt2", "falcon", "opt", "bloom"}


def _refuse_unmodelled(cfg: Mapping[str, Any], name: str) -> None:
    """One clear error for an architecture or field zsim does not model."""
    model_type = cfg.get("model_type", "llama")
    if model_type in _REFUSED_MODEL_TYPES:
        raise ZsimInputError(f"{name}: model_type {model_type!r} is not modelled by zsim: "
                             f"{_REFUSED_MODEL_TYPES[model_type]}")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ZsimInputError(f"{name}: model_type {str(model_type)[:40]!r} is not modelled by zsim "
                             f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)} decoders)")
    if cfg.get("is_encoder_decoder") is True:
        raise ZsimInputError(f"{name}: encoder-decoder models are not modelled by zsim")
    for key, what in _UNMODELLED_FIELDS.items():
        if model_type == "gemma2" and key in _GEMMA2_FIELDS:
            continue
        if model_type in MOE_FAMILIES and key in _MOE_FIELDS:
            continue
        if model_type in DEEPSEEK_FAMILIES and key in _DEEPSEEK_FIELDS:
            continue
        if cfg.get(key) not in (None, 0, False, 0.0):
            raise ZsimInputError(f"{name}: {key} means {what}, which zsim does not model")
    if model_type == "bloom":
        _refuse_unmodelled_bloom(cfg, name)
    if model_type == "opt" and cfg.get("layer_norm_elementwise_affine") is False:
        raise ZsimInputError(f"{name}: layer_norm_elementwise_affine false (LayerNorms without "
                             "parameters) is not modelled by zsim")
    if model_type == "falcon" and cfg.get("new_decoder_architecture") is not True \
            and cfg.get("parallel_attn", True) is not True and cfg.get("num_ln_in_parallel_attn") == 2:
        raise ZsimInputError(f"{name}: num_ln_in_parallel_attn 2 without parallel_attn is not modelled by zsim")
    act = _activation(cfg, model_type)
    if act not in ACTIVATIONS:
        raise ZsimInputError(f"{name}: hidden_act {str(act)[:40]!r} is not modelled by zsim "
                             f"(modelled: {', '.join(ACTIVATIONS)})")
    gated = model_type in _GATED
    if gated and act not in ("silu", "gelu_pytorch_tanh", "gelu"):
        raise ZsimInputError(f"{name}: hidden_act {act!r} in a gated (SwiGLU-style) MLP is not modelled by zsim")


def _refuse_unmodelled_bloom(cfg: Mapping[str, Any], name: str) -> None:
    """BLOOM variants zsim does not price (modeling_bloom.py): the residual taken after the
    LayerNorm, Megatron's sliced "slow but exact" projections, residual dropout (functional
    dropout_add, no module to hook)."""
    if cfg.get("apply_residual_connection_post_layernorm") is True:
        raise ZsimInputError(f"{name}: apply_residual_connection_post_layernorm true is not modelled by zsim")
    if cfg.get("slow_but_exact") is True and cfg.get("pretraining_tp", 1) not in (None, 1):
        raise ZsimInputError(f"{name}: slow_but_exact with pretraining_tp > 1 (sliced projections) "
                             "is not modelled by zsim")
    if cfg.get("hidden_dropout") not in (None, 0, 0.0):
        raise ZsimInputError(f"{name}: hidden_dropout > 0 (BLOOM's functional residual dropout) "
                             "is not modelled by zsim")


#: Families whose MLP is gated: down(act(gate(x)) * up(x)).
_GATED = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", *MOE_FAMILIES}


def _activation(cfg: Mapping[str, Any], model_type: str) -> Any:
    """The activation HF builds: each family reads its own key (Gemma-2 hidden_activation,
    GPT-2/OPT activation_function, Falcon activation); Gemma's legacy "gelu" means the tanh
    approximation (configuration_gemma.py)."""
    if model_type in ("gpt2", "opt"):
        return cfg.get("activation_function", "gelu_new" if model_type == "gpt2" else "relu")
    if model_type == "falcon":
        return cfg.get("activation", "gelu")
    if model_type == "gemma2":
        return cfg.get("hidden_activation") or "gelu_pytorch_tanh"
    if model_type == "bloom":
        return "bloom_gelu"   # BloomMLP always builds BloomGelu; BloomConfig has no activation key
    if model_type == "gemma":
        act = cfg.get("hidden_activation") or cfg.get("hidden_act", "gelu_pytorch_tanh")
        return "gelu_pytorch_tanh" if act == "gelu" else act
    default = {"phi": "gelu_new", "gpt_neox": "gelu"}.get(model_type, "silu")
    return cfg.get("hidden_act", default)


#: HF key per ModelSpec field, for families that do not use Llama's names.
_KEYS = {
    "gpt2": {"hidden_size": "n_embd", "num_layers": "n_layer", "num_heads": "n_head",
             "max_position_embeddings": "n_positions"},
    "opt": {"intermediate_size": "ffn_dim"},
    "falcon": {"intermediate_size": "ffn_hidden_size"},
    "bloom": {"num_layers": "n_layer", "num_heads": "n_head"},
}
_LLAMA_KEYS = {"hidden_size": "hidden_size", "num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
               "intermediate_size": "intermediate_size", "vocab_size": "vocab_size",
               "max_position_embeddings": "max_position_embeddings"}
#: Defaults of the config classes for keys a published config.json may leave out.
_DEFAULTS = {"gpt2": {"vocab_size": 50257, "max_position_embeddings": 1024},
             "opt": {"max_position_embeddings": 2048}, "falcon": {"max_position_embeddings": 2048},
             "phi": {"max_position_embeddings": 2048}, "gpt_neox": {"max_position_embeddings": 2048},
             # BloomConfig: vocab_size 250880; ALiBi has no position table, so the longest
             # sequence is the training one: seq_length where the config gives it (bloom-7b1), else
             # BLOOM's 2048 (Le Scao et al. 2022, "BLOOM", Table 3: sequence length 2048)
             "bloom": {"vocab_size": 250880, "max_position_embeddings": 2048}}


def _bool(cfg: Mapping[str, Any], key: str, default: bool, name: str) -> bool:
    value = cfg.get(key, default)
    if not isinstance(value, bool):
        raise ZsimInputError(f"{name}: {key} must be true or false, got {value!r}")
    return value


def _float(cfg: Mapping[str, Any], key: str, default: float, name: str) -> float:
    value = cfg.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ZsimInputError(f"{name}: {key} must be a number in [0, 1), got {value!r}")
    return float(value)


def _softcap(cfg: Mapping[str, Any], key: str, name: str) -> float:
    """A softcapping value (null: none)."""
    value = cfg.get(key)
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e6:
        raise ZsimInputError(f"{name}: {key} must be a positive number or null, got {value!r}")
    return float(value)


def _rotary_fraction(cfg: Mapping[str, Any], name: str, default: float) -> float:
    """partial_rotary_factor (Phi), rotary_pct (GPT-NeoX) or rope_parameters' factor."""
    rope = cfg.get("rope_parameters") if isinstance(cfg.get("rope_parameters"), Mapping) else {}
    for key, value in (("partial_rotary_factor", cfg.get("partial_rotary_factor")),
                       ("rotary_pct", cfg.get("rotary_pct")),
                       ("rope_parameters.partial_rotary_factor", rope.get("partial_rotary_factor"))):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise ZsimInputError(f"{name}: {key} must be a number in (0, 1], got {value!r}")
            return float(value)
    return default


def from_hf_config(cfg: Mapping[str, Any], name: str = "hf-config") -> ModelSpec:
    """A :class:`ModelSpec` from a decoder's ``config.json`` as published on the Hub (model
    types :data:`SUPPORTED_MODEL_TYPES`); an architecture or field zsim does not model is
    refused (:func:`_refuse_unmodelled`)."""
    if not isinstance(cfg, Mapping):
        raise ZsimInputError(f"{name}: model config must be a JSON object")
    _refuse_unmodelled(cfg, name)
    mt = cfg.get("model_type", "llama")
    if mt == "bloom":
        cfg = _bloom_aliases(cfg, name)
    keys = {**_LLAMA_KEYS, **_KEYS.get(mt, {})}
    defaults = _DEFAULTS.get(mt, {})
    kw: dict[str, Any] = {}
    if mt in ("gpt2", "opt", "falcon", "bloom") and keys["intermediate_size"] not in cfg:
        keys.pop("intermediate_size")   # n_inner / ffn_hidden_size null: 4 x hidden
    missing = [k for f, k in keys.items()
               if k not in cfg and f not in defaults and f != "max_position_embeddings"]
    if missing:
        raise ZsimInputError(f"{name}: model config is missing {', '.join(missing)}")
    for f, k in keys.items():
        optional = f in defaults or f == "max_position_embeddings"
        if k in cfg and not (cfg[k] is None and optional):
            kw[f] = _int_field(cfg, k, name)   # a required key given as null is refused here
        elif f in defaults:
            kw[f] = defaults[f]
    if mt == "gpt2":
        kw["intermediate_size"] = (_int_field(cfg, "n_inner", name) if cfg.get("n_inner") is not None
                                   else 4 * kw["hidden_size"])
    kw.setdefault("intermediate_size", 4 * kw["hidden_size"])
    kw["num_kv_heads"] = (_int_field(cfg, "num_key_value_heads", name)
                          if cfg.get("num_key_value_heads") is not None else kw["num_heads"])
    if mt == "falcon":
        kw["num_kv_heads"] = _falcon_kv_heads(cfg, kw["num_heads"], name)
    # DeepSeek's config classes overwrite head_dim with qk_rope_head_dim (configuration_deepseek_v2.py
    # __post_init__): the q/k head dim comes from its MLA fields (_deepseek_fields)
    if cfg.get("head_dim") is not None and mt not in ("gpt2", "opt", "falcon", "gpt_neox", "phi", "bloom",
                                                      *DEEPSEEK_FAMILIES):
        kw["head_dim"] = _int_field(cfg, "head_dim", name)
    kw["tie_word_embeddings"] = _bool(cfg, "tie_word_embeddings", mt in _TIED_BY_DEFAULT, name)
    kw["activation"] = _activation(cfg, mt)
    kw.update(_family_fields(cfg, mt, name))
    if "rotary_fraction" in kw:
        head_dim = kw.get("head_dim") or kw["hidden_size"] // kw["num_heads"]
        kw["rotary_dim"] = max(1, int(head_dim * kw.pop("rotary_fraction")))
    window = cfg.get("sliding_window") if mt in ("mistral", "phi3", "gemma2", "mixtral") else None
    if window is not None:
        kw["sliding_window"] = _int_field(cfg, "sliding_window", name)
    return ModelSpec(name=name, **kw)


def _bloom_aliases(cfg: Mapping[str, Any], name: str) -> dict[str, Any]:
    """BloomConfig's other spellings, resolved as it does (configuration_bloom.py): n_embed for
    hidden_size (__post_init__), num_hidden_layers / num_attention_heads for n_layer / n_head
    (attribute_map); seq_length, where given, as the longest sequence (see _DEFAULTS)."""
    out = dict(cfg)
    for alias, key in (("n_embed", "hidden_size"), ("num_hidden_layers", "n_layer"),
                       ("num_attention_heads", "n_head")):
        if out.get(alias) is not None:
            out[key] = out[alias]
    out.setdefault("n_layer", 2)   # BloomConfig's defaults
    out.setdefault("n_head", 8)
    out.setdefault("hidden_size", 64)
    out.pop("intermediate_size", None)   # BloomMLP is always 4 x hidden
    if out.get("seq_length") is not None:
        out["max_position_embeddings"] = out["seq_length"]
    return out


def _falcon_kv_heads(cfg: Mapping[str, Any], heads: int, name: str) -> int:
    """Falcon's KV heads (modeling_falcon.py FalconAttention): num_kv_heads with
    new_decoder_architecture, else 1 when multi_query (the default), else all heads."""
    if cfg.get("new_decoder_architecture") is True:
        return _int_field(cfg, "num_kv_heads", name) if cfg.get("num_kv_heads") is not None else heads
    return 1 if cfg.get("multi_query", True) is not False else heads


def _family_fields(cfg: Mapping[str, Any], mt: str, name: str) -> dict[str, Any]:
    """The ModelSpec fields that differ by family: tree, biases, norms, positions, dropout."""
    b = lambda key, default: _bool(cfg, key, default, name)  # noqa: E731
    f = lambda key, default=0.0: _float(cfg, key, default, name)  # noqa: E731
    if mt in ("llama",):
        bias = b("attention_bias", False)
        return dict(qkv_bias=bias, o_bias=bias, mlp_bias=b("mlp_bias", False),
                    attention_dropout=f("attention_dropout"))
    if mt in ("mistral", "qwen2"):
        # attention_bias is read by neither (modeling_mistral.py: no biases; modeling_qwen2.py:
        # q/k/v always biased, o_proj never), only checked to be a boolean
        b("attention_bias", False)
        return dict(qkv_bias=mt == "qwen2", attention_dropout=f("attention_dropout"))
    if mt == "qwen3":
        bias = b("attention_bias", False)
        return dict(qkv_bias=bias, o_bias=bias, qk_norm=True, attention_dropout=f("attention_dropout"))
    if mt == "gemma":
        bias = b("attention_bias", False)
        return dict(family="gemma", qkv_bias=bias, o_bias=bias, attention_dropout=f("attention_dropout"))
    if mt == "gemma2":
        # transformers runs Gemma-2 eagerly whatever its softcapping (modeling_gemma2.py
        # Gemma2PreTrainedModel: _supports_sdpa = False)
        bias = b("attention_bias", False)
        return dict(family="gemma2", qkv_bias=bias, o_bias=bias, attention_dropout=f("attention_dropout"),
                    attention_impl="eager", attn_softcap=_softcap(cfg, "attn_logit_softcapping", name),
                    final_softcap=_softcap(cfg, "final_logit_softcapping", name))
    if mt == "phi3":
        return dict(family="phi3", dropout=max(f("resid_pdrop"), f("embd_pdrop")),
                    attention_dropout=f("attention_dropout"), rotary_fraction=_rotary_fraction(cfg, name, 1.0))
    if mt == "phi":
        return dict(family="phi", mlp="gelu", norm="layernorm", qkv_bias=True, o_bias=True, mlp_bias=True,
                    lm_head_bias=True, parallel_residual=True, dropout=max(f("resid_pdrop"), f("embd_pdrop")),
                    attention_dropout=f("attention_dropout"), rotary_fraction=_rotary_fraction(cfg, name, 0.5))
    if mt == "gpt2":
        return dict(family="gpt2", mlp="gelu", norm="layernorm", qkv_bias=True, o_bias=True, mlp_bias=True,
                    learned_positions=True, dropout=max(f("resid_pdrop", 0.1), f("embd_pdrop", 0.1)),
                    attention_dropout=f("attn_pdrop", 0.1))
    if mt == "gpt_neox":
        bias = b("attention_bias", True)
        return dict(family="gpt_neox", mlp="gelu", norm="layernorm", qkv_bias=bias, o_bias=bias, mlp_bias=True,
                    parallel_residual=b("use_parallel_residual", True), dropout=f("hidden_dropout"),
                    attention_dropout=f("attention_dropout"), rotary_fraction=_rotary_fraction(cfg, name, 0.25))
    if mt == "falcon":
        bias = b("bias", False)
        new = b("new_decoder_architecture", False)
        parallel = new or b("parallel_attn", True)
        norms = cfg.get("num_ln_in_parallel_attn") or (2 if new else 1)
        if norms not in (1, 2):
            raise ZsimInputError(f"{name}: num_ln_in_parallel_attn must be 1 or 2, got {norms!r}")
        return dict(family="falcon", mlp="gelu", norm="layernorm", qkv_bias=bias, o_bias=bias, mlp_bias=bias,
                    parallel_residual=parallel, parallel_norms=norms, dropout=f("hidden_dropout"),
                    attention_dropout=f("attention_dropout"))
    if mt in DEEPSEEK_FAMILIES:
        return _deepseek_fields(cfg, mt, name)
    if mt in MOE_FAMILIES:
        return _moe_fields(cfg, mt, name)
    if mt == "bloom":
        return dict(family="bloom", mlp="gelu", norm="layernorm", qkv_bias=True, o_bias=True, mlp_bias=True,
                    attention_impl="eager_alibi", attention_dropout=f("attention_dropout"))
    if mt == "opt":
        bias = b("enable_bias", True)
        embed = cfg.get("word_embed_proj_dim")
        return dict(family="opt", mlp="gelu", norm="layernorm", qkv_bias=bias, o_bias=bias, mlp_bias=bias,
                    learned_positions=True, post_norm=not b("do_layer_norm_before", True),
                    embed_dim=_int_field(cfg, "word_embed_proj_dim", name) if embed is not None else 0,
                    dropout=f("dropout", 0.1), attention_dropout=f("attention_dropout"))
    raise ZsimInputError(f"{name}: model_type {mt!r} is not modelled by zsim")  # unreachable: refused above


#: Defaults of MixtralConfig / Qwen2MoeConfig / Qwen3MoeConfig (transformers 5) for the MoE keys
#: a config.json may leave out: (experts, top-k, expert I, shared expert I; None: intermediate_size).
_MOE_DEFAULTS = {"mixtral": (8, 2, None, 0), "qwen2_moe": (60, 4, 1408, 5632), "qwen3_moe": (128, 8, 768, 0)}


def _moe_fields(cfg: Mapping[str, Any], mt: str, name: str) -> dict[str, Any]:
    """The MoE fields of a Mixtral / Qwen2-MoE / Qwen3-MoE config.json; a layout or option zsim
    does not model (dense layers between sparse ones, the load-balancing loss, router jitter)
    is refused in one line."""
    experts, top_k, inter, shared = _MOE_DEFAULTS[mt]

    def get_int(key: str, default: int | None) -> int | None:
        return _int_field(cfg, key, name) if cfg.get(key) is not None else default

    if mt == "qwen2_moe":   # Qwen2MoeConfig has no num_local_experts alias
        experts = get_int("num_experts", experts)
    else:                   # attribute_map: num_experts -> num_local_experts
        given = {k: _int_field(cfg, k, name) for k in ("num_local_experts", "num_experts") if cfg.get(k) is not None}
        if len(set(given.values())) > 1:
            raise ZsimInputError(f"{name}: num_local_experts and num_experts disagree ({given})")
        experts = next(iter(given.values()), experts)
    norm = True if mt == "mixtral" else _bool(cfg, "norm_topk_prob", False, name)
    fields: dict[str, Any] = dict(family=mt, num_experts=experts, norm_topk=norm,
                                  experts_per_token=get_int("num_experts_per_tok", top_k),
                                  attention_dropout=_float(cfg, "attention_dropout", 0.0, name))
    if mt != "mixtral":
        fields["expert_intermediate_size"] = get_int("moe_intermediate_size", inter)
    if mt == "qwen2_moe":
        fields["shared_expert_size"] = get_int("shared_expert_intermediate_size", shared)
        fields["qkv_bias"] = _bool(cfg, "qkv_bias", True, name)   # q/k/v biased, o_proj never
    if mt == "qwen3_moe":
        bias = _bool(cfg, "attention_bias", False, name)
        fields.update(qkv_bias=bias, o_bias=bias, qk_norm=True)
    if mt != "mixtral":
        step = cfg.get("decoder_sparse_step", 1)
        if step != 1:
            raise ZsimInputError(f"{name}: decoder_sparse_step {step!r} (dense MLP layers between MoE layers) "
                                 "is not modelled by zsim")
        if cfg.get("mlp_only_layers") not in (None, []):
            raise ZsimInputError(f"{name}: mlp_only_layers (dense MLP layers among MoE layers) is not modelled by zsim")
    if cfg.get("output_router_logits") not in (None, False):
        raise ZsimInputError(f"{name}: output_router_logits true (the router load-balancing loss) is not "
                             "modelled by zsim")
    if cfg.get("router_jitter_noise") not in (None, 0, 0.0):
        raise ZsimInputError(f"{name}: router_jitter_noise (router input jitter in training) is not modelled by zsim")
    return fields


#: Defaults of DeepseekV2Config / DeepseekV3Config (transformers 5.24) for the keys a config.json
#: may leave out: (routed experts, shared experts, expert I, top-k, kv_lora_rank, q_lora_rank,
#: qk_nope_head_dim, qk_rope_head_dim, v_head_dim, first_k_dense_replace); V2's top-k has no
#: default (None: its router cannot run).
_DEEPSEEK_DEFAULTS = {"deepseek_v2": (64, 2, 1407, None, 512, 1536, 128, 64, 128, 0),
                      "deepseek_v3": (256, 1, 2048, 8, 512, 1536, 128, 64, 128, 3)}
#: The scoring function each family's router runs whatever config.json says: softmax in
#: DeepseekV2TopkRouter, sigmoid plus e_score_correction_bias in DeepseekV3TopkRouter.
_DEEPSEEK_SCORING = {"deepseek_v2": "softmax", "deepseek_v3": "sigmoid"}


def _deepseek_fields(cfg: Mapping[str, Any], mt: str, name: str) -> dict[str, Any]:
    """The MLA and DeepSeek-MoE fields of a DeepSeek-V2/V3 config.json, as transformers 5 builds
    them (modeling_deepseek_v2.py / modeling_deepseek_v3.py).

    Read and modelled: the MLA ranks and head dims, routed/shared experts, first_k_dense_replace,
    group-limited routing (n_group, topk_group), attention_bias, V2's mlp_bias. Ignored because
    transformers 5 ignores them: moe_layer_freq 1, topk_method (V3), aux_loss_alpha and seq_aux
    (no auxiliary loss is computed), num_nextn_predict_layers (no multi-token-prediction module
    is built), norm_topk_prob in V2. quantization_config (V3's FP8 checkpoint blocks) describes
    how the published weights are stored, not the training run: zsim prices the run in its own
    precision (bf16 by default) with every weight in that precision. Refused: what transformers
    would build differently from the checkpoint (another moe_layer_freq, ep_size, a scoring_func
    the family does not run) and V2 top-k methods it does not implement.
    """
    experts, shared, inter, top_k, kv_rank, q_rank, nope, rope, v_dim, dense = _DEEPSEEK_DEFAULTS[mt]

    def get_int(key: str, default: int | None) -> int | None:
        return _int_field(cfg, key, name) if cfg.get(key) is not None else default

    for key, allowed in (("moe_layer_freq", (None, 1)), ("ep_size", (None, 1))):
        if cfg.get(key) not in allowed:
            raise ZsimInputError(f"{name}: {key} {cfg.get(key)!r} is not modelled by zsim (transformers 5 builds "
                                 "every layer from first_k_dense_replace on as MoE, on every rank)")
    scoring = cfg.get("scoring_func", _DEEPSEEK_SCORING[mt])
    if scoring != _DEEPSEEK_SCORING[mt]:
        raise ZsimInputError(f"{name}: scoring_func {str(scoring)[:20]!r}: transformers 5 {mt} always scores "
                             f"experts with {_DEEPSEEK_SCORING[mt]}, so zsim does not model it")
    if cfg.get("output_router_logits") not in (None, False):
        raise ZsimInputError(f"{name}: output_router_logits true (router logits kept per layer) is not modelled by zsim")
    top_k = get_int("num_experts_per_tok", top_k)
    if top_k is None:
        raise ZsimInputError(f"{name}: model config is missing num_experts_per_tok")
    experts = get_int("n_routed_experts", experts)
    groups, topk_groups = 0, 0
    if mt == "deepseek_v2":
        method = cfg.get("topk_method", "greedy")
        if method == "group_limited_greedy":
            groups, topk_groups = get_int("n_group", None), get_int("topk_group", None)
            if groups is None or topk_groups is None:
                raise ZsimInputError(f"{name}: topk_method group_limited_greedy needs n_group and topk_group")
        elif method != "greedy":
            raise ZsimInputError(f"{name}: topk_method {str(method)[:30]!r} is not one transformers 5 DeepSeek-V2 "
                                 "runs (greedy, group_limited_greedy)")
    else:
        groups, topk_groups = get_int("n_group", 8), get_int("topk_group", 4)
    # q_lora_rank null: a plain q_proj (DeepSeek-V2-Lite)
    q_rank = (_int_field(cfg, "q_lora_rank", name) if cfg.get("q_lora_rank") is not None else 0) \
        if "q_lora_rank" in cfg else q_rank
    nope, rope = get_int("qk_nope_head_dim", nope), get_int("qk_rope_head_dim", rope)
    bias = _bool(cfg, "attention_bias", False, name)
    return dict(family=mt, num_experts=experts, experts_per_token=top_k,
                expert_intermediate_size=get_int("moe_intermediate_size", inter),
                shared_expert_size=get_int("n_shared_experts", shared) * get_int("moe_intermediate_size", inter),
                norm_topk=mt == "deepseek_v3" and _bool(cfg, "norm_topk_prob", True, name),
                kv_lora_rank=get_int("kv_lora_rank", kv_rank), q_lora_rank=q_rank, head_dim=nope + rope,
                rotary_dim=rope, v_head_dim=get_int("v_head_dim", v_dim),
                dense_layers=min(_first_dense(cfg, dense, name), _int_field(cfg, "num_hidden_layers", name)),
                router_groups=groups, router_topk_groups=topk_groups, qkv_bias=bias, o_bias=bias,
                mlp_bias=mt == "deepseek_v2" and _bool(cfg, "mlp_bias", False, name),
                attention_dropout=_float(cfg, "attention_dropout", 0.0, name))


def _first_dense(cfg: Mapping[str, Any], default: int, name: str) -> int:
    """first_k_dense_replace: 0 (every layer MoE) is valid; a count above the layers means
    every layer is dense (DeepseekV2DecoderLayer: MoE iff layer_idx >= first_k_dense_replace)."""
    value = cfg.get("first_k_dense_replace")
    if value is None:
        return default
    if value == 0 and not isinstance(value, bool):
        return 0
    return _int_field(cfg, "first_k_dense_replace", name)


def load_model(model: str | Path | ModelSpec | None) -> ModelSpec:
    """Resolve a preset name, a path to ``config.json`` or a ready spec."""
    if model is None:
        model = DEFAULT_MODEL
    if isinstance(model, ModelSpec):
        return model
    text = str(model)
    key = text.lower()
    if key in PRESETS:
        return PRESETS[key]
    path = Path(text)
    try:
        if path.is_dir():
            path = path / "config.json"
        found = path.exists()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        found = False
    if not found:
        bundled = bundled_model_path(text)
        if bundled is None:
            raise ZsimInputError(
                f"unknown model {text[:200]!r}: not a preset ({', '.join(sorted(PRESETS))}), not one of the "
                f"{len(bundled_model_names())} Hub names zsim knows offline (zsim.model.bundled_model_names) and "
                "no such file: download the model's config.json and pass --model path/to/config.json")
        return _read_config(bundled, name=text)
    return _read_config(path)


#: Hub config.json files bundled with zsim: ``<org>--<name>.json`` (sources in SOURCES.md there).
MODELS_DIR = Path(__file__).resolve().parent / "data" / "models"


def bundled_model_names() -> list[str]:
    """The ``ORG/NAME`` Hub names whose config.json zsim bundles (offline ``--model``)."""
    return sorted(p.stem.replace("--", "/", 1) for p in MODELS_DIR.glob("*--*.json"))


def bundled_model_path(name: str) -> Path | None:
    """The bundled config.json of Hub name ``ORG/NAME`` (case-insensitive), or None."""
    if name.count("/") != 1:
        return None
    wanted = name.replace("/", "--", 1).lower()
    for p in MODELS_DIR.glob("*--*.json"):
        if p.stem.lower() == wanted:
            return p
    return None


def _read_config(path: Path, name: str = "") -> ModelSpec:
    """The spec of the config.json at ``path``, named ``name`` (default: from the path)."""
    data = read_input_bytes(path, "model config")
    try:
        cfg = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ZsimInputError(f"malformed JSON in model config {path}: {exc.__class__.__name__}") from None
    except OSError as exc:
        raise ZsimInputError(f"cannot read model config {path}: {exc.strerror}") from None
    except (RecursionError, ValueError):  # nested too deeply; an integer of over 4300 digits
        raise ZsimInputError(f"model config {path} is nested too deeply or holds too large a number") from None
    # HF layout: <model name>/config.json; any other file is named by itself.
    name = name or (path.parent.name if path.name == "config.json" else "") or path.stem
    return from_hf_config(cfg, name=name if name.isprintable() else repr(name))
