"""Module execution order and gradient-hook order of a Hugging Face decoder-only model.

Derived from shapes only (no torch). Forward runs the modules in the order listed by
:func:`forward_modules`; backward runs them in reverse. A parameter's gradient hook
(``register_post_accumulate_grad_hook``, deepspeed/utils/torch.py:40-46) fires when its
gradient is complete, i.e. after the backward of the FIRST module (in forward order) that uses
it: a tied embedding fires last, after the embedding's backward, not at the lm_head. Within a
module autograd finishes the bias before the weight. Checked against torch 2.13 autograd
for Llama and Qwen2 (tied/untied, with and without non-reentrant checkpointing): the hook
order is lm_head, model.norm, then per layer from the last: down, up, gate,
post_attention_layernorm, o, v(bias, weight), k, q, input_layernorm, and the embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model import ModelSpec


@dataclass(frozen=True)
class Module:
    """One module the forward pass runs: its HF name, decoder layer and parameter indices.

    ``params`` index into ``ModelSpec.parameters()``; a tied lm_head lists the embedding.
    """

    name: str
    layer: int
    params: tuple[int, ...]


def forward_modules(model: ModelSpec) -> list[Module]:
    """Modules in forward execution order, including parameter-less ones (attention core,
    MLP activation) that the workload model times."""
    params = model.parameters()
    by_module: dict[str, list[int]] = {}
    for i, p in enumerate(params):
        by_module.setdefault(p.module, []).append(i)

    def mod(name: str, layer: int) -> Module:
        return Module(name, layer, tuple(by_module.get(name, ())))

    out = [mod("model.embed_tokens", -1)]
    if model.learned_positions:
        out.append(mod("model.embed_positions", -1))
    # LlamaMLP: down_proj(act_fn(gate_proj(x)) * up_proj(x)) — the activation runs between
    # gate and up ("" = the parameter-less activation, timed as "model.layers.{i}.mlp")
    mlp = (("gate_proj", "", "up_proj", "down_proj") if model.mlp == "swiglu"
           else ("fc1", "", "fc2"))
    for i in range(model.num_layers):
        p = f"model.layers.{i}"
        out.append(mod(f"{p}.input_layernorm", i))
        out += [mod(f"{p}.self_attn.{x}", i) for x in ("q_proj", "k_proj", "v_proj")]
        out.append(Module(f"{p}.self_attn", i, ()))
        out.append(mod(f"{p}.self_attn.o_proj", i))
        out.append(mod(f"{p}.post_attention_layernorm", i))
        out += [mod(f"{p}.mlp.{x}", i) if x else Module(f"{p}.mlp", i, ()) for x in mlp]
    out.append(mod("model.norm", model.num_layers))
    head = (0,) if model.tie_word_embeddings else tuple(by_module["lm_head"])
    out.append(Module("lm_head", model.num_layers, head))
    return out


def hook_order(modules: list[Module]) -> list[tuple[int, int]]:
    """``[(param index, backward module position), ...]`` in gradient-hook order.

    The position is the index into ``reversed(modules)`` whose backward completes the
    gradient, so callers can place each hook right after that module's backward op.
    """
    first_use: dict[int, int] = {}
    for pos, m in enumerate(modules):
        for p in m.params:
            first_use.setdefault(p, pos)
    out = []
    n = len(modules)
    for bpos, m in enumerate(reversed(modules)):
        fpos = n - 1 - bpos
        for p in reversed(m.params):  # bias before weight (autograd order)
            if first_use[p] == fpos:
                out.append((p, bpos))
    return out
