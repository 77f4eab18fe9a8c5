"""The module tree of a decoder-only model: the one place a model family's structure is written.

A :class:`ModelTree` is the model as Hugging Face builds it, from shapes only (no torch):
every module of ``model.named_modules()`` (same names, the root is ""), the parameters each
one registers itself (``named_parameters()`` order, shapes as torch shows them: a Linear's
weight is ``(out, in)``), and the order its ``forward()`` calls its children in. Everything
else reads this tree:

- :meth:`zsim.model.ModelSpec.parameters` and the parameter counts: :meth:`ModelTree.parameters`;
- :mod:`zsim.workload`: the kernels of each compute op, by the node's ``kind`` and shapes;
- :mod:`zsim.schedule.order`: the forward order of compute ops, :meth:`ModelTree.forward`;
- :mod:`zsim.schedule.z3modules`: the modules DeepSpeed's stage-3 hooks see, in call order.

Shapes in comments: h = hidden, q = heads·head_dim, kv = kv_heads·head_dim, I = intermediate,
V = vocab, P = max positions, L = decoder layers.

To add a model family, write its tree as a builder in a module of this package and register it
in :data:`FAMILY_BUILDERS` (a Llama-shaped family only needs a decoder layer in
:data:`LAYER_BUILDERS`); kernels exist per ``kind``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Callable

from .bloom import bloom_tree
from .deepseek import deepseek_layer, mla_attention
from .gpt import falcon_tree, gpt2_tree, gpt_neox_tree, opt_tree
from .llama import LAYER_BUILDERS, gemma2_layer, gpt_layer, llama_layer, llama_tree
from .moe import moe_layer
from .nodes import ACTIVATIONS, KINDS, SELF, ModelTree, Node, Param
from .phi import phi3_tree, phi_tree

if TYPE_CHECKING:  # the spec is read by attribute only; zsim.model imports this package
    from ..model import ModelSpec


#: Tree builder per ``ModelSpec.family``: where a new family goes.
FAMILY_BUILDERS: dict[str, Callable[["ModelSpec"], ModelTree]] = {
    "llama": llama_tree,
    "gemma": llama_tree,
    "gemma2": llama_tree,
    "phi3": phi3_tree,
    "phi": phi_tree,
    "gpt2": gpt2_tree,
    "gpt_neox": gpt_neox_tree,
    "falcon": falcon_tree,
    "opt": opt_tree,
    "bloom": bloom_tree,
    "mixtral": llama_tree,
    "qwen2_moe": llama_tree,
    "qwen3_moe": llama_tree,
    "deepseek_v2": llama_tree,
    "deepseek_v3": llama_tree,
}


def build_model_tree(spec: "ModelSpec") -> ModelTree:
    """The tree of ``spec``, from its family's builder (:data:`FAMILY_BUILDERS`)."""
    return FAMILY_BUILDERS[spec.family](spec)

@lru_cache(maxsize=64)
def model_tree(spec: "ModelSpec") -> ModelTree:
    """The (cached) :class:`ModelTree` of ``spec``."""
    return build_model_tree(spec)


__all__ = ["ACTIVATIONS", "FAMILY_BUILDERS", "KINDS", "LAYER_BUILDERS", "SELF", "ModelTree", "Node", "Param",
           "build_model_tree", "model_tree", "llama_tree", "llama_layer", "gemma2_layer", "gpt_layer", "moe_layer",
           "deepseek_layer", "mla_attention",
           "phi3_tree", "phi_tree", "gpt2_tree", "gpt_neox_tree", "falcon_tree", "opt_tree", "bloom_tree"]
