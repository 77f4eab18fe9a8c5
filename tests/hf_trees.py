"""Shared by the family tests: a transformers model built from a config dict, the order its
modules' forward() is entered, and the same order read off a zsim module tree."""

from __future__ import annotations

from truth_packages import require_truth_packages


def hf_model(cfg: dict, device: str = "meta", what: str = "trees against transformers"):
    """transformers' causal LM of ``cfg`` (sdpa attention) on ``device``."""
    require_truth_packages(what, "torch", "transformers")
    import torch
    import transformers
    hf_cfg = transformers.AutoConfig.for_model(**cfg)
    hf_cfg._attn_implementation = "sdpa"
    with torch.device(device):
        return transformers.AutoModelForCausalLM.from_config(hf_cfg)


def calls_in_order(tree) -> list[str]:
    """Module names in the order their forward() is entered (pre-order of ``calls``)."""
    out: list[str] = []

    def visit(node):
        if node.kind != "module_list":
            out.append(node.name)
        for c in node.called():
            if c is not None:
                visit(c)
    visit(tree.root)
    return out


def hf_forward_order(hf) -> list[str]:
    """Names of ``hf``'s modules in the order forward pre-hooks fire on a 16-token input."""
    import torch
    entered: list[str] = []
    for mod_name, mod in hf.named_modules():
        mod.register_forward_pre_hook(lambda m, a, n=mod_name: entered.append(n))
    with torch.no_grad():
        hf(input_ids=torch.randint(0, 128, (1, 16)))
    return entered
