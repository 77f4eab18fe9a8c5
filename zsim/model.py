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
from .modeltree import ModelTree, Param, model_tree  # Param: re-exported, zsim.model.Param


@dataclass(frozen=True)
class ModelSpec:
    """Shapes of a Llama-family (or GPT-style) decoder-only model.

    ``mlp`` is "swiglu" (gate/up/down, Llama) or "gelu" (fc1/fc2 with biases, GPT-3).
    ``norm`` is "rmsnorm" (weight only) or "layernorm" (weight and bias).
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

    # ---- shapes ---------------------------------------------------------------------
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
        layer = self.tree.node(f"model.layers.{i}")
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

_HF_KEYS = {
    "hidden_size": "hidden_size",
    "num_hidden_layers": "num_layers",
    "num_attention_heads": "num_heads",
    "intermediate_size": "intermediate_size",
    "vocab_size": "vocab_size",
}


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
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")

#: config.json fields that mean an architecture zsim does not model -> what it is. A config
#: holding one is refused, never silently priced as a dense Llama.
_UNMODELLED_FIELDS = {
    "num_local_experts": "mixture of experts", "num_experts": "mixture of experts",
    "n_routed_experts": "mixture of experts", "moe_intermediate_size": "mixture of experts",
    "num_experts_per_tok": "mixture of experts",
    "vision_config": "a multimodal (vision) tower", "audio_config": "a multimodal (audio) tower",
    "text_config": "a multimodal wrapper config (give its text_config as the model)",
    "kv_lora_rank": "multi-head latent attention (MLA)",
}


def _refuse_unmodelled(cfg: Mapping[str, Any], name: str) -> None:
    """One clear error for an architecture or field zsim does not model."""
    model_type = cfg.get("model_type", "llama")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ZsimInputError(f"{name}: model_type {str(model_type)[:40]!r} is not modelled by zsim "
                             f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)} decoders)")
    if cfg.get("is_encoder_decoder") is True:
        raise ZsimInputError(f"{name}: encoder-decoder models are not modelled by zsim")
    for key, what in _UNMODELLED_FIELDS.items():
        if cfg.get(key) not in (None, 0, False):
            raise ZsimInputError(f"{name}: {key} means {what}, which zsim does not model")
    if cfg.get("mlp_bias") is True:
        raise ZsimInputError(f"{name}: mlp_bias true (biased MLP projections) is not modelled by zsim")
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise ZsimInputError(f"{name}: hidden_act {str(act)[:40]!r} is not modelled by zsim "
                             "(its Llama-family decoders use SwiGLU with silu)")
    if model_type == "qwen2" and cfg.get("use_sliding_window") is True:
        raise ZsimInputError(f"{name}: use_sliding_window true (sliding-window attention) is not modelled by zsim")


def from_hf_config(cfg: Mapping[str, Any], name: str = "hf-config") -> ModelSpec:
    """A :class:`ModelSpec` from the fields of a Llama/Mistral/Qwen2 ``config.json``; an
    architecture or field zsim does not model is refused (:func:`_refuse_unmodelled`)."""
    if not isinstance(cfg, Mapping):
        raise ZsimInputError(f"{name}: model config must be a JSON object")
    _refuse_unmodelled(cfg, name)
    missing = [k for k in _HF_KEYS if k not in cfg]
    if missing:
        raise ZsimInputError(f"{name}: model config is missing {', '.join(missing)}")
    kwargs: dict[str, Any] = {field: _int_field(cfg, key, name) for key, field in _HF_KEYS.items()}
    kwargs["num_kv_heads"] = (_int_field(cfg, "num_key_value_heads", name)
                              if cfg.get("num_key_value_heads") is not None else kwargs["num_heads"])
    if cfg.get("head_dim") is not None:
        kwargs["head_dim"] = _int_field(cfg, "head_dim", name)
    if cfg.get("max_position_embeddings") is not None:
        kwargs["max_position_embeddings"] = _int_field(cfg, "max_position_embeddings", name)
    tie = cfg.get("tie_word_embeddings", False)
    if not isinstance(tie, bool):
        raise ZsimInputError(f"{name}: tie_word_embeddings must be true or false, got {tie!r}")
    model_type = cfg.get("model_type", "llama")
    bias = cfg.get("attention_bias", model_type == "qwen2")
    if not isinstance(bias, bool):
        raise ZsimInputError(f"{name}: attention_bias must be true or false, got {bias!r}")
    return ModelSpec(name=name, tie_word_embeddings=tie, qkv_bias=bias, **kwargs)


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
        raise ZsimInputError(
            f"unknown model {text[:200]!r}: not a preset ({', '.join(sorted(PRESETS))}) and no such file")
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
    name = (path.parent.name if path.name == "config.json" else "") or path.stem
    return from_hf_config(cfg, name=name if name.isprintable() else repr(name))
