"""BLOOM (BloomForCausalLM, transformers models/bloom/modeling_bloom.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .nodes import SELF, ModelTree, Node
from .parts import _embedding, _head, _layers, _linear, _norm, _root

if TYPE_CHECKING:  # the spec is read by attribute only; zsim.model imports this package
    from ..model import ModelSpec


def bloom_tree(spec: "ModelSpec") -> ModelTree:
    """BloomForCausalLM: transformer (word_embeddings, word_embeddings_layernorm, h, ln_f) and an
    lm_head tied to word_embeddings (``_tied_weights_keys``). Each BloomBlock registers
    input_layernorm, self_attention (query_key_value (3h, biased), dense, the nn.Dropout
    attention_dropout applied to the probabilities inside the eager ALiBi core),
    post_attention_layernorm and mlp (dense_h_to_4h, gelu_impl, dense_4h_to_h, all biased), in
    that order (modeling_bloom.py BloomBlock.__init__, BloomAttention.__init__, BloomMLP.__init__).
    The residual dropouts are functional (dropout_add); zsim refuses hidden_dropout > 0."""
    h, inter, n = spec.hidden_size, spec.intermediate_size, spec.num_layers

    def layer(spec: "ModelSpec", i: int) -> Node:
        p = f"transformer.h.{i}"
        a = f"{p}.self_attention"
        attn = Node(a, "attention", i, children=(
            _linear(f"{a}.query_key_value", 3 * h, h, i, True), _linear(f"{a}.dense", h, h, i, True),
            # priced inside the attention core (zsim.workload eager attention): no op of its own
            Node(f"{a}.attention_dropout", "dropout", i),
        ), calls=("query_key_value", SELF, "attention_dropout", "dense"), op=a)
        mlp = Node(f"{p}.mlp", "mlp", i, children=(
            _linear(f"{p}.mlp.dense_h_to_4h", inter, h, i, True),
            Node(f"{p}.mlp.gelu_impl", "activation", i, op=f"{p}.mlp.gelu_impl"),
            _linear(f"{p}.mlp.dense_4h_to_h", h, inter, i, True),
        ), calls=("dense_h_to_4h", "gelu_impl", "dense_4h_to_h"))
        return Node(p, "decoder_layer", i, children=(
            _norm(spec, f"{p}.input_layernorm", i), attn, _norm(spec, f"{p}.post_attention_layernorm", i), mlp,
        ), calls=("input_layernorm", "self_attention", "post_attention_layernorm", "mlp"))

    model = Node("transformer", "model", -1, children=(
        _embedding("transformer.word_embeddings", spec.vocab_size, h),
        _norm(spec, "transformer.word_embeddings_layernorm", -1),
        _layers(spec, "transformer.h", layer), _norm(spec, "transformer.ln_f", n),
    ), calls=("word_embeddings", "word_embeddings_layernorm", "h", "ln_f"))
    return _root(model, _head(spec, "transformer.word_embeddings"))
