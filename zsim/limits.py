"""Every bound zsim puts on its inputs, in one place.

Each limit is far above what real hardware, models and training runs use, and low enough
that a typo (``1e300``, ``10000``) gets a one-line error instead of hours of simulation, a
memory blow-up or an infinite/NaN result. Counts that the simulator replays one by one
(micro-steps, layers, GPUs of a node) have the tightest bounds.

=============================  =============  ==============================================
input                          allowed        why
=============================  =============  ==============================================
grad-accum (micro-steps)       1-256          predict replays every micro-step
micro-batch per GPU            1-4096         far above any GPU's memory
sequence length                1-2**21        2M tokens; longest published contexts fit
train_batch_size               1-2**30
world size (all GPUs)          1-2**20
nodes                          1-2**16
GPUs per node                  1-1024         NVL72/NVL576-class domains fit
NICs / PCIe switches per node  0-1024
fabric switch radix            2-4096
oversubscription               (0, 1024]
model hidden_size              1-2**17        largest published models use 2**14-2**15
model intermediate_size        1-2**20
model vocab_size               1-2**23
model heads, kv heads          1-2**12
model head_dim                 1-2**13
model max_position_embeddings  1-2**30
model num_hidden_layers        1-1024         the schedule replays every layer
DeepSpeed integer keys         0-2**63-1      DeepSpeed's own sys.maxsize default
validate --tolerance           0-1000 %
plan --top                     1-100
sweep grid                     4096 configs
collective --bytes             1-2**50        1 PiB
config/profile/result files    16 MiB         real ones are a few KiB
=============================  =============  ==============================================

Numbers in hardware profiles and topologies are bounded by the unit their key names
(:data:`UNIT_MAX`): a time in seconds (``*_s``) at most an hour, a bandwidth at most
1 PB/s, and so on; a unit-less number at most :data:`UNITLESS_MAX`.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from .errors import ZsimInputError

MAX_GRAD_ACCUM = 256
MAX_MICRO_BATCH = 4096
MAX_SEQ_LEN = 2**21
MAX_TRAIN_BATCH = 2**30
MAX_WORLD_SIZE = 2**20
MAX_NODES = 2**16
MAX_GPUS_PER_NODE = 1024
MAX_NODE_PARTS = 1024
MAX_SWITCH_RADIX = 4096
MAX_OVERSUBSCRIPTION = 1024.0
MAX_DS_INT = sys.maxsize
MAX_TOLERANCE_PCT = 1000.0
MAX_TOP = 100
MAX_SWEEP_CONFIGS = 4096
MAX_COLLECTIVE_BYTES = 2**50
MAX_INPUT_FILE_BYTES = 16 * 2**20

#: Largest value of each model config.json integer field (HF key -> bound).
MODEL_FIELD_MAX = {
    "hidden_size": 2**17,
    "intermediate_size": 2**20,
    "vocab_size": 2**23,
    "num_attention_heads": 2**12,
    "num_key_value_heads": 2**12,
    "head_dim": 2**13,
    "max_position_embeddings": 2**30,
    "num_hidden_layers": 1024,
}

#: Largest plausible value by the unit suffix of a key name, first match wins.
UNIT_MAX: tuple[tuple[str, float], ...] = (
    ("_per_s", 1e15),        # a rate: parameters or operations per second
    ("_s", 3600.0),          # a time in seconds
    ("_GBps", 1e6),          # bandwidth, GB/s (1 PB/s)
    ("_Gbps", 8e6),          # bandwidth, Gb/s
    ("_flops", 1e18),        # peak FLOP/s of one GPU
    ("_bytes", 2.0**50),     # a size in bytes (1 PiB)
    ("_efficiency", 10.0),   # achieved fraction of a peak (a fit may land a little above 1)
    ("_fraction", 10.0),
)

#: Largest unit-less number (counts, ratios, version numbers) in profiles and topologies.
UNITLESS_MAX = 1e6


def max_for_key(key: str) -> float:
    """The largest plausible value of a profile or topology key, judged by its unit suffix."""
    for suffix, bound in UNIT_MAX:
        if key.endswith(suffix):
            return bound
    return UNITLESS_MAX


def check_at_most(value: float, bound: float, name: str) -> None:
    """Raise a :class:`ZsimInputError` naming ``name`` when ``value`` exceeds ``bound``."""
    if not value <= bound:
        raise ZsimInputError(f"{name} must be at most {bound:g}, got {show_number(value)}")


def check_int_range(value: Any, name: str, low: int, high: int) -> int:
    """``value`` as an int within ``[low, high]``, else a one-line error naming ``name``."""
    ok = not isinstance(value, bool) and isinstance(value, int)
    if not ok or not low <= value <= high:
        raise ZsimInputError(f"{name} must be an integer in {low}-{high}, got {show_number(value)}")
    return value


def check_finite_tree(obj: Any, what: str) -> None:
    """Refuse a result that holds NaN or an infinity anywhere (nested dicts and lists)."""
    stack: list[tuple[Any, str]] = [(obj, "")]
    while stack:
        node, key = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            raise ZsimInputError(f"{what}: {key or 'value'} is {node!r}; the inputs are out of range")
        if isinstance(node, dict):
            stack.extend((v, f"{key}.{k}" if key else str(k)) for k, v in node.items())
        elif isinstance(node, (list, tuple)):
            stack.extend((v, f"{key}[{i}]") for i, v in enumerate(node))


def show_number(value: Any, limit: int = 40) -> str:
    """A number as an error message shows it: short, never a 300-digit integer."""
    try:
        text = f"{value:g}" if isinstance(value, float) else repr(value)
    except ValueError:  # an integer beyond Python's 4300-digit str() limit
        return "a number of more than 4300 digits"
    if isinstance(value, int) and not isinstance(value, bool) and len(text) > 20:
        text = f"{float(value):g}" if value < 1e308 else text
    return text if len(text) <= limit else text[: limit - 3] + "..."
