"""Activation-memory truth: the bytes Hugging Face's own decoder keeps for backward, on CPU.

A ``TorchDispatchMode`` sees every tensor the model's ops create; it counts each new
storage once and frees it when torch frees it. Parameters' storages (and views of them,
like ``weight.t()``) are excluded, so what is left after the forward is what autograd saved
plus the logits/loss tensors: the terms of zsim's activation model. The graph is the one
CUDA runs (same HF Python code, same autograd saves; SDPA picks its flash kernel on CPU and
on CUDA alike, saving the output and the fp32 logsumexp), so a layer's saved bytes measured
here are a layer's saved bytes on a GPU.

    python validation/cpu_truth/activation_memory.py      # the table of a few shapes

Per-layer bytes come from two depths (2 and 4 layers): (kept(4) - kept(2)) / 2.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class LiveBytes(TorchDispatchMode):
    """Bytes of live storages created inside the mode, minus those of ``skip``."""

    def __init__(self, skip: set[int]):
        super().__init__()
        self.skip = skip
        self.live: dict[int, int] = {}
        self.current_bytes = 0
        self.peak_bytes = 0

    def _track(self, t: object) -> None:
        if not isinstance(t, torch.Tensor):
            return
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key in self.skip or key in self.live or storage.nbytes() == 0:
            return   # a parameter, a view of a counted storage, or empty
        self.live[key] = storage.nbytes()
        self.current_bytes += storage.nbytes()
        self.peak_bytes = max(self.peak_bytes, self.current_bytes)
        weakref.finalize(storage, self._free, key)   # torch keeps one Python object per storage

    def _free(self, key: int) -> None:
        self.current_bytes -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            self._track(t)
        return out

    def reset_peak(self) -> None:
        """Start a new phase: the peak restarts from what is live now."""
        self.peak_bytes = self.current_bytes


@dataclass(frozen=True)
class Shape:
    """One Llama-family decoder shape and batch (HF LlamaConfig names)."""

    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int = 1000
    micro_batch: int = 1
    seq_len: int = 1024

    def hf_config(self, layers: int) -> dict:
        """The config.json of this shape with ``layers`` decoder layers."""
        return {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                "hidden_size": self.hidden_size, "intermediate_size": self.intermediate_size,
                "num_hidden_layers": layers, "num_attention_heads": self.num_attention_heads,
                "num_key_value_heads": self.num_key_value_heads, "vocab_size": self.vocab_size,
                "max_position_embeddings": self.seq_len, "rms_norm_eps": 1e-5,
                "tie_word_embeddings": False}


@dataclass(frozen=True)
class Measured:
    """Bytes kept after the forward (the loss alive, the model output dropped) and the
    peak during backward, both above the parameters."""

    kept_after_forward_bytes: int
    backward_peak_bytes: int


def measure(shape: Shape, layers: int, checkpointing: bool = False) -> Measured:
    """Run one bf16 forward + loss + backward of HF's LlamaForCausalLM (sdpa attention,
    no KV cache, as validation/train.py runs it) and measure its live bytes."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**shape.hf_config(layers), attn_implementation="sdpa", use_cache=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.train()
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    skip = {p.untyped_storage().data_ptr() for p in model.parameters()}
    ids = torch.randint(0, shape.vocab_size, (shape.micro_batch, shape.seq_len))
    mode = LiveBytes(skip)
    with mode:
        loss = model(input_ids=ids, labels=ids).loss   # the output (and its logits) dropped
        kept = mode.current_bytes
        mode.reset_peak()
        loss.backward()
    return Measured(kept, mode.peak_bytes)


def per_layer_bytes(shape: Shape, checkpointing: bool = False) -> float:
    """Bytes one decoder layer keeps for backward: the difference of 4 and 2 layers, halved."""
    two = measure(shape, 2, checkpointing).kept_after_forward_bytes
    four = measure(shape, 4, checkpointing).kept_after_forward_bytes
    return (four - two) / 2


#: Shapes the truth test measures: multi-head and grouped-query attention, head_dim 64 and
#: 128, SwiGLU widths of real models (scaled down in depth and tokens to run in seconds).
SHAPES = {
    "mha-hd128": Shape(1024, 2816, 8, 8, seq_len=2048),
    "gqa-4to1-hd64": Shape(512, 1408, 8, 2, micro_batch=2, seq_len=1024),
    "mha-hd64": Shape(768, 2048, 12, 12, micro_batch=4, seq_len=1024),
    "gqa-8to1-tinyllama": Shape(2048, 5632, 32, 4, seq_len=512),
}


def main() -> int:
    """Print measured vs zsim per-layer bytes for :data:`SHAPES`."""
    import json
    import tempfile
    from pathlib import Path

    from zsim.model import load_model
    from zsim.workload import Workload

    for name, shape in SHAPES.items():
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "config.json"
            path.write_text(json.dumps(shape.hf_config(2)))
            w = Workload(load_model(path), shape.micro_batch, shape.seq_len, 2)
        real = per_layer_bytes(shape)
        zsim = w.layer_activation_bytes()
        print(f"{name:20s} per layer: measured {real / 2**20:8.2f} MiB  zsim {zsim / 2**20:8.2f} MiB "
              f"({100 * (zsim / real - 1):+.1f} %)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
