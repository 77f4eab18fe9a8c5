"""DeepSpeed configs as users write them -> one typed, fully resolved :class:`RunConfig`.

Accepts the JSON people pass to DeepSpeed (numbers like ``2e8``, ``"auto"`` values as the
Hugging Face Trainer writes them, deprecated aliases), applies DeepSpeed 0.19.8's defaults
(runtime/zero/config.py), resolves every ``"auto"`` the way the HF Trainer integration does
(transformers integrations/deepspeed.py), lets explicit command-line values override, and
refuses what DeepSpeed itself would refuse (a broken batch identity, offload_param below
stage 3, unknown zero_optimization keys: DeepSpeed's pydantic models forbid extras).
"""

from __future__ import annotations

import copy
import enum
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .defaults import DEFAULT_MICRO_BATCH, DEFAULT_SEQ_LEN
from .errors import ZsimInputError
from .inputs import read_input_bytes
# Bounds on batch, sequence and world size live in zsim.limits (MAX_GRAD_ACCUM re-exported here).
from .limits import (MAX_DS_INT, MAX_GRAD_ACCUM, MAX_MICRO_BATCH, MAX_SEQ_LEN, MAX_TRAIN_BATCH,
                     MAX_WORLD_SIZE, show_number)
from .model import ModelSpec

AUTO = "auto"

#: Deepest nesting accepted in a config (real ones nest 3-4 levels); deeper ones would exhaust
#: Python's recursion limit when copied, so they are refused with a clear message instead.
MAX_NESTING = 64

#: DeepSpeed 0.19.8 defaults of the ZeRO keys zsim models (runtime/zero/config.py:95-377).
ZERO_DEFAULTS: dict[str, Any] = {
    "stage": 0,
    "contiguous_gradients": True,
    "reduce_scatter": True,
    "reduce_bucket_size": 500_000_000,
    "use_multi_rank_bucket_allreduce": True,
    "allgather_partitions": True,
    "allgather_bucket_size": 500_000_000,
    "overlap_comm": None,  # None: True for stage 3, False otherwise (ZC:384-387)
    "sub_group_size": 1_000_000_000,
    "stage3_prefetch_bucket_size": 50_000_000,
    "stage3_param_persistence_threshold": 100_000,
    "stage3_model_persistence_threshold": sys.maxsize,
    "stage3_max_live_parameters": 1_000_000_000,
    "stage3_max_reuse_distance": 1_000_000_000,
    "round_robin_gradients": False,
    "zero_hpz_partition_size": 1,
    "zero_quantized_weights": False,
    "zero_quantized_gradients": False,
    "compute_grad_norm": True,
}

#: Keys DeepSpeed accepts in zero_optimization that do not change what zsim simulates.
_ZERO_OTHER_KEYS = {
    "load_from_fp32_weights", "elastic_checkpoint", "offload_param", "offload_optimizer", "zenflow",
    "cpu_offload_param", "cpu_offload_use_pin_memory", "cpu_offload",
    "stage3_gather_16bit_weights_on_model_save", "gather_16bit_weights_on_model_save",
    "stage3_module_granularity_threshold", "module_granularity_threshold",   # 0 only: see below
    "stage3_use_all_reduce_for_fetch_params", "use_all_reduce_for_fetch_params",
    "stage3_allgather_sequential", "allgather_sequential", "stage3_gather_fp16_weights_on_model_save",
    "ignore_unused_parameters", "legacy_stage1", "parameter_alignment",
    "zero_quantized_nontrainable_weights", "memory_efficient_linear", "pipeline_loading_checkpoint",
    "override_module_apply", "log_trace_cache_warnings", "enable_sanity_checks",
    "save_muon_momentum_buffer_in_memory", "leaf_module", "mics_shard_size",   # leaf_module: default only
    "mics_hierarchical_params_gather",
}

#: Pydantic field names that DeepSpeed also accepts for the stage3_ aliases.
_ZERO_ALIASES = {
    "prefetch_bucket_size": "stage3_prefetch_bucket_size",
    "param_persistence_threshold": "stage3_param_persistence_threshold",
    "model_persistence_threshold": "stage3_model_persistence_threshold",
    "max_live_parameters": "stage3_max_live_parameters",
    "max_reuse_distance": "stage3_max_reuse_distance",
}

class OffloadDevice(enum.StrEnum):
    """Where ZeRO keeps offloaded states (``offload_optimizer.device`` / ``offload_param.device``).

    A :class:`enum.StrEnum`: members compare equal to, print and serialise as DeepSpeed's
    own strings."""

    NONE = "none"
    CPU = "cpu"
    NVME = "nvme"

    @property
    def offloaded(self) -> bool:
        """Whether the states leave the GPU (cpu or nvme)."""
        return self is not OffloadDevice.NONE


_OFFLOAD_DEVICES = tuple(d.value for d in OffloadDevice)
_PRECISIONS = ("bf16", "fp16", "fp32")


@dataclass(frozen=True)
class ZeroConfig:
    """The ZeRO settings that change what goes on the wire or into memory (all concrete).

    No field has a default: DeepSpeed's defaults live once, in :data:`ZERO_DEFAULTS`, and
    :func:`build_run_config` is the one place a ZeroConfig is made (a new ZeRO option gets a
    field here and an entry there)."""

    stage: int
    contiguous_gradients: bool
    reduce_scatter: bool
    reduce_bucket_size: int
    use_multi_rank_bucket_allreduce: bool
    allgather_partitions: bool
    allgather_bucket_size: int
    overlap_comm: bool
    sub_group_size: int
    stage3_prefetch_bucket_size: int
    stage3_param_persistence_threshold: int
    stage3_model_persistence_threshold: int
    stage3_max_live_parameters: int
    stage3_max_reuse_distance: int
    round_robin_gradients: bool
    zero_hpz_partition_size: int
    zero_quantized_weights: bool
    zero_quantized_gradients: bool
    compute_grad_norm: bool
    offload_optimizer: OffloadDevice
    offload_param: OffloadDevice
    pin_memory: bool


# ---- DeepSpeed's offload and overlap rules (zsim.decide's search space reads them too) -------

def offload_error(stage: int, offload_optimizer: str, offload_param: str) -> str | None:
    """Why DeepSpeed refuses this stage/offload combination, or None when it accepts it:
    parameter offload needs stage 3, optimizer offload stage >= 1."""
    if offload_param != OffloadDevice.NONE and stage != 3:
        return f"offload_param requires ZeRO stage 3 (got stage {stage}); DeepSpeed rejects it"
    if offload_optimizer != OffloadDevice.NONE and stage == 0:
        return "offload_optimizer requires ZeRO stage 1, 2 or 3 (got stage 0)"
    return None


def default_overlap_comm(stage: int) -> bool:
    """DeepSpeed's overlap_comm when the config does not set it: on for stage 3 only (ZC:384-387)."""
    return stage == 3


def overlap_comm_applies(stage: int) -> bool:
    """Whether overlap_comm changes anything: stage 0 all-reduces through the engine."""
    return stage != 0


@dataclass(frozen=True)
class RunConfig:
    """Everything about one training run except the model and the hardware.

    ``resolved`` is the DeepSpeed JSON with every "auto" replaced (deepspeed_config_auto.json);
    ``notes`` says what was resolved or overridden and why.
    """

    world_size: int
    micro_batch: int
    grad_accum: int
    train_batch: int
    seq_len: int
    precision: str
    comm_dtype_bytes: int
    zero: ZeroConfig
    activation_checkpointing: bool
    gradient_clipping: float
    resolved: Mapping[str, Any] = field(repr=False)
    notes: tuple[str, ...] = ()

    @property
    def param_bytes(self) -> int:
        """Bytes of one model-precision parameter (2 for bf16/fp16, 4 for fp32)."""
        return 4 if self.precision == "fp32" else 2

    @property
    def tokens_per_step(self) -> int:
        """Tokens in one optimizer step over all ranks: train_batch × seq_len."""
        return self.train_batch * self.seq_len


# ---- reading values -------------------------------------------------------------------------

def _show(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, so an error stays one readable line."""
    try:
        text = repr(value)
    except ValueError:  # an integer beyond Python's 4300-digit str() limit
        return "an integer of more than 4300 digits"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_auto(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() == AUTO


def _as_int(value: Any, key: str, *, minimum: int = 0) -> int:
    """An integer from JSON (1, 2e8, 2.0e8, "2e8"); errors name ``key``."""
    number: Any = value
    if isinstance(value, bool):
        raise ZsimInputError(f"ds_config: {key} must be a number, got {_show(value)}")
    if isinstance(value, str):
        try:  # int() first: "1000...0" beyond float range is as whole as the JSON integer
            number = int(value)
        except ValueError:
            number = None
        try:
            number = float(value) if number is None else number
        except ValueError:
            raise ZsimInputError(f"ds_config: {key} must be a number, got {_show(value)}") from None
    if not isinstance(number, (int, float)):
        raise ZsimInputError(f"ds_config: {key} must be a number, got {_show(value)}")
    if isinstance(number, float):
        if not math.isfinite(number) or not number.is_integer():
            raise ZsimInputError(f"ds_config: {key} must be a whole number, got {_show(value)}")
        number = int(number)
    if number < minimum:
        raise ZsimInputError(f"ds_config: {key} must be at least {minimum}, got {_show(value)}")
    if number > MAX_DS_INT:
        raise ZsimInputError(f"ds_config: {key} must be at most {MAX_DS_INT} (2**63-1), got {_show(value)}")
    return number


def _as_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ZsimInputError(f"ds_config: {key} must be true or false, got {_show(value)}")


def _as_float(value: Any, key: str) -> float:
    try:  # float() of a huge JSON integer overflows
        finite = not isinstance(value, bool) and math.isfinite(float(value))
    except (TypeError, ValueError, OverflowError):
        finite = False
    if not finite or isinstance(value, str):
        raise ZsimInputError(f"ds_config: {key} must be a finite number, got {_show(value)}")
    if value < 0:
        raise ZsimInputError(f"ds_config: {key} must not be negative, got {_show(value)}")
    return float(value)


def _section(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ZsimInputError(f"ds_config: {key} must be an object, got {_show(value)}")
    return value


def load_ds_config(source: str | Path | Mapping[str, Any] | None) -> dict[str, Any]:
    """Read a DeepSpeed config from a path or a dict (a deep copy; never modified in place)."""
    if source is None:
        return {}
    if isinstance(source, Mapping):
        _check_nesting(source, "ds_config")
        return copy.deepcopy(dict(source))
    if not isinstance(source, (str, Path)):
        raise ZsimInputError(f"ds_config must be a path or a dict, got {_show(source)}")
    path = Path(source)
    try:  # a regular file of at most 16 MiB (zsim.inputs)
        text = read_input_bytes(path, "ds_config file").decode("utf-8")
    except UnicodeDecodeError:
        raise ZsimInputError(f"ds_config file {path} is not UTF-8 text") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_reject_duplicates)
    except json.JSONDecodeError as exc:
        raise ZsimInputError(f"malformed JSON in ds_config {path}: {exc.msg} at line {exc.lineno}") from None
    except ZsimInputError:  # from the hooks: a duplicate key, NaN
        raise
    except ValueError:  # an integer beyond Python's 4300-digit limit
        raise ZsimInputError(f"ds_config {path}: a number has too many digits") from None
    except RecursionError:
        raise ZsimInputError(f"ds_config {path} is nested too deeply") from None
    if not isinstance(data, dict):
        raise ZsimInputError(f"ds_config {path}: top level must be a JSON object")
    _check_nesting(data, f"ds_config {path}")
    return data


def _check_nesting(data: Any, where: str) -> None:
    """Refuse nesting deeper than :data:`MAX_NESTING` and NaN/infinite numbers anywhere
    (1e400 parses as inf; the resolved config could not be written back as JSON).
    Iterative, so that deep input cannot exhaust the recursion limit here."""
    stack: list[tuple[Any, str, int]] = [(data, "", 1)]
    while stack:
        node, key, depth = stack.pop()
        items = (node.items() if isinstance(node, Mapping)
                 else enumerate(node) if isinstance(node, list) else ())
        for k, child in items:
            name = f"{key}[{k}]" if isinstance(node, list) else f"{key}.{k}" if key else str(k)
            if isinstance(child, float) and not math.isfinite(child):
                raise ZsimInputError(f"{where}: {name!r} must be a finite number, got {child!r}")
            if isinstance(child, (Mapping, list)):
                if depth >= MAX_NESTING:
                    raise ZsimInputError(f"{where} is nested too deeply (more than {MAX_NESTING} levels)")
                stack.append((child, name, depth + 1))


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """DeepSpeed loads configs with dict_raise_error_on_duplicate_keys (runtime/config.py:430)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ZsimInputError(f"ds_config: duplicate key {key!r} (DeepSpeed rejects it)")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise ZsimInputError(f"ds_config: {name} is not a valid number")


# ---- parsing ZeRO ---------------------------------------------------------------------------

def _offload_device(section: Any, key: str) -> tuple[OffloadDevice, bool]:
    if section is None:
        return OffloadDevice.NONE, False
    if not isinstance(section, Mapping):
        raise ZsimInputError(f"ds_config: zero_optimization.{key} must be an object, got {_show(section)}")
    device = section.get("device", OffloadDevice.NONE.value)
    device = OffloadDevice.NONE.value if device is None else device
    if not isinstance(device, str) or device.lower() not in _OFFLOAD_DEVICES:
        raise ZsimInputError(
            f"ds_config: zero_optimization.{key}.device must be one of none, cpu, nvme; got {_show(device)}")
    pin = section.get("pin_memory", False)
    return OffloadDevice(device.lower()), _as_bool(pin, f"zero_optimization.{key}.pin_memory")


def _refuse_hook_tree_changes(section: Mapping[str, Any]) -> None:
    """Keys that change which modules get ZeRO-3 hooks, which zsim does not model beyond
    DeepSpeed's defaults: ``leaf_module`` (default: the three HF MoE blocks,
    runtime/zero/leaf_module_config.py:11-15) and the module-granularity threshold (default
    0, off: runtime/zero/config.py:26, :265)."""
    for key in ("stage3_module_granularity_threshold", "module_granularity_threshold"):
        if section.get(key, 0) not in (0, None):
            raise ZsimInputError(f"ds_config: zero_optimization.{key} = {section[key]!r}: automatic leaf "
                                 "modules by granularity are not modelled (only the default 0)")
    leaf = section.get("leaf_module")
    if leaf not in (None, {}):
        raise ZsimInputError("ds_config: zero_optimization.leaf_module: custom ZeRO-3 leaf modules are not "
                             "modelled (only DeepSpeed's default: the HF MoE blocks)")


def _parse_zero(raw: Mapping[str, Any], model: ModelSpec, notes: list[str]) -> tuple[dict[str, Any], dict]:
    """Concrete ZeRO values and the resolved zero_optimization section."""
    section = dict(_section(raw, "zero_optimization"))
    for alias, canonical in _ZERO_ALIASES.items():
        if alias in section:
            section.setdefault(canonical, section.pop(alias))
    unknown = sorted(str(k) for k in section if k not in ZERO_DEFAULTS and k not in _ZERO_OTHER_KEYS)
    if unknown:
        raise ZsimInputError(f"ds_config: unknown key zero_optimization.{unknown[0]!r} "
                             "(DeepSpeed 0.19.8 rejects it)")
    _refuse_hook_tree_changes(section)
    h = model.hidden_size
    # HF Trainer's "auto" rules (transformers integrations/deepspeed.py).
    hf_auto = {
        "reduce_bucket_size": h * h,
        "stage3_prefetch_bucket_size": int(0.9 * h * h),
        "stage3_param_persistence_threshold": 10 * h,
    }
    values: dict[str, Any] = {}
    for key, default in ZERO_DEFAULTS.items():
        value = section.get(key, default)
        if _is_auto(value):
            value = hf_auto.get(key, default)
            section[key] = value
            notes.append(f"zero_optimization.{key}: auto -> {value} "
                         + ("(HF Trainer rule)" if key in hf_auto else "(DeepSpeed default)"))
        if key == "stage":
            value = _as_int(value, "zero_optimization.stage")
            if value > 3:
                raise ZsimInputError(f"ds_config: zero_optimization.stage must be 0-3, got {_show(value)}")
        elif key == "overlap_comm":
            value = None if value is None else _as_bool(value, "zero_optimization.overlap_comm")
        elif isinstance(default, bool):
            value = _as_bool(value, f"zero_optimization.{key}")
        else:
            minimum = 1 if key in ("reduce_bucket_size", "zero_hpz_partition_size") else 0
            value = _as_int(value, f"zero_optimization.{key}", minimum=minimum)
        values[key] = value
    if values["overlap_comm"] is None:
        values["overlap_comm"] = default_overlap_comm(values["stage"])
    opt_dev, opt_pin = _offload_device(section.get("offload_optimizer"), "offload_optimizer")
    par_dev, par_pin = _offload_device(section.get("offload_param"), "offload_param")
    if section.get("cpu_offload") is True and opt_dev is OffloadDevice.NONE:
        opt_dev = OffloadDevice.CPU  # deprecated alias (ZC:209)
    values.update(offload_optimizer=opt_dev, offload_param=par_dev, pin_memory=opt_pin or par_pin)
    return values, section


def _pinned(zero_section: Mapping[str, Any], values: Mapping[str, Any]) -> bool:
    """Whether an active offload pins host memory (a section only a flag created is pinned)."""
    pins = []
    for key in ("offload_optimizer", "offload_param"):
        sec = zero_section.get(key)
        if values[key] != OffloadDevice.NONE:
            pins.append(bool(sec.get("pin_memory", False)) if isinstance(sec, Mapping) and sec else True)
    return any(pins)


def _offload_section(device: str) -> dict[str, Any]:
    return {"device": device, "pin_memory": True}


# ---- batch identity -------------------------------------------------------------------------

def resolve_batch(train_batch: int | None, micro: int | None, gas: int | None,
                  world: int) -> tuple[int, int, int]:
    """DeepSpeed's batch rules (runtime/config.py:602-652): derive the missing one, check."""
    if train_batch is not None and micro is not None and gas is not None:
        pass
    elif train_batch is not None and micro is not None:
        gas = max(train_batch // (micro * world), 1)
    elif train_batch is not None and gas is not None:
        micro = max(train_batch // (world * gas), 1)
    elif micro is not None and gas is not None:
        train_batch = micro * gas * world
    elif train_batch is not None:
        gas, micro = 1, max(train_batch // world, 1)
    elif micro is not None:
        gas, train_batch = 1, micro * world
    else:
        raise ZsimInputError("ds_config: give train_batch_size or train_micro_batch_size_per_gpu")
    if train_batch != micro * gas * world:
        raise ZsimInputError(
            f"batch identity broken: train_batch_size {_show(train_batch)} != micro_batch {_show(micro)} x "
            f"grad_accum {_show(gas)} x data_parallel {world} = {_show(micro * gas * world)} "
            "(DeepSpeed rejects this)")
    return train_batch, micro, gas


def _precision(raw: Mapping[str, Any], override: str | None, notes: list[str]) -> str:
    if override is not None:
        if override not in _PRECISIONS:
            raise ZsimInputError(f"precision must be one of {', '.join(_PRECISIONS)}, got {_show(override)}")
        return override
    enabled = {}
    for key in ("fp16", "bf16"):
        sec = _section(raw, key)
        value = sec.get("enabled", False) if sec else False
        if _is_auto(value):
            # The HF Trainer fills bf16 from --bf16, which it never sets together with --fp16.
            value = key == "bf16" and enabled["fp16"] is not True
            notes.append(f"{key}.enabled: auto -> {str(value).lower()} (bf16 on GPUs that support it)")
        enabled[key] = _as_bool(value, f"{key}.enabled")
    if enabled["bf16"] and enabled["fp16"]:
        raise ZsimInputError("ds_config: bf16 and fp16 are both enabled (DeepSpeed rejects this)")
    return "bf16" if enabled["bf16"] else "fp16" if enabled["fp16"] else "fp32"


def _comm_dtype_bytes(raw: Mapping[str, Any], precision: str) -> int:
    value = raw.get("communication_data_type")
    if value is None or _is_auto(value):
        return 4 if precision == "fp32" else 2
    table = {"fp32": 4, "float32": 4, "fp16": 2, "float16": 2, "bf16": 2, "bfloat16": 2}
    if not isinstance(value, str) or value.lower() not in table:
        raise ZsimInputError(f"ds_config: communication_data_type must be fp32, fp16 or bf16, got {_show(value)}")
    return table[value.lower()]


def _optional_int(raw: Mapping[str, Any], key: str, override: int | None) -> int | None:
    if override is not None:
        if isinstance(override, bool) or not isinstance(override, int) or override < 1:
            raise ZsimInputError(f"{key} must be a positive integer, got {_show(override)}")
        return override
    value = raw.get(key)
    if value is None or _is_auto(value):
        return None
    return _as_int(value, key, minimum=1)


# ---- DeepSpeed AutoTP (tensor_parallel) ------------------------------------------------------

#: tensor_parallel keys that change nothing zsim simulates: the weights' dtype at load
#: (the run's precision decides), where unsharded weights wait (runtime/tensor_parallel/config.py).
_AUTOTP_INERT_KEYS = frozenset({"dtype", "keep_module_on_host"})


def autotp_size(raw: Mapping[str, Any] | None) -> int:
    """``tensor_parallel.autotp_size`` of a DeepSpeed config (1 when absent, 0 or 1: DeepSpeed
    0.19.8 shards with AutoTP only above 1, runtime/engine.py:595). Every other key of the
    section that changes the split is refused in one line (zsim.parallel.autotp models the
    HF tp_plan split of a Llama model only): tp_overlap_comm (AsyncColumnParallel,
    module_inject/layers.py:258-284), vocab_parallel_lm_head / vocab_parallel_ce_backend, a
    custom partition_config or preset_model, tp_grain_size, and a tp.tp_size other than
    autotp_size (DeepSpeed raises, engine.py:1020-1022)."""
    section = _section(raw or {}, "tensor_parallel")
    if not section:
        return 1
    size = section.get("autotp_size", 0)
    size = 0 if size is None else _as_int(size, "tensor_parallel.autotp_size")
    size = max(size, 1)
    for key, value in section.items():
        if key in ("autotp_size",) or key in _AUTOTP_INERT_KEYS or value is None:
            continue
        if key == "tp" and isinstance(value, Mapping):
            inner = {k: v for k, v in value.items() if v is not None}
            tp = _as_int(inner.pop("tp_size", size), "tensor_parallel.tp.tp_size", minimum=1)
            if tp not in (1, size):
                raise ZsimInputError(f"ds_config: tensor_parallel.tp.tp_size ({tp}) does not match "
                                     f"tensor_parallel.autotp_size ({size}); DeepSpeed raises (engine.py:1020)")
            if inner:
                raise ZsimInputError(f"ds_config: tensor_parallel.tp.{sorted(inner)[0]} is not modelled by zsim")
            continue
        if key == "tp_overlap_comm" and value is False:
            continue
        if key == "vocab_parallel_ce_backend" and value == "torch":
            continue
        raise ZsimInputError(f"ds_config: tensor_parallel.{key} = {_show(value)} is not modelled by zsim "
                             "(AutoTP is modelled with autotp_size alone: docs/parallelism.md)")
    return size


# ---- the one entry point --------------------------------------------------------------------

@dataclass(frozen=True)
class Overrides:
    """Values given on the command line; each one wins over the config file."""

    stage: int | None = None
    micro_batch: int | None = None
    grad_accum: int | None = None
    seq_len: int | None = None
    offload_optimizer: str | None = None
    offload_param: str | None = None
    activation_checkpointing: bool | None = None
    precision: str | None = None


def build_run_config(raw: Mapping[str, Any] | None, model: ModelSpec, world_size: int,
                     overrides: Overrides = Overrides(), *, autotp: int = 1) -> RunConfig:
    """Parse, resolve and check a DeepSpeed config for ``model`` on ``world_size`` ranks.

    ``autotp``: the AutoTP degree the caller models (zsim.parallel.stages); a config whose
    ``tensor_parallel.autotp_size`` differs is refused rather than silently simulated
    without the split (only ``zsim predict`` models AutoTP)."""
    if isinstance(world_size, bool) or not isinstance(world_size, int) or not 1 <= world_size <= MAX_WORLD_SIZE:
        raise ZsimInputError(f"world size must be an integer in 1-{MAX_WORLD_SIZE}, got {show_number(world_size)}")
    raw = load_ds_config(raw)
    asked_tp = autotp_size(raw)
    if asked_tp != autotp:
        raise ZsimInputError(f"ds_config: tensor_parallel.autotp_size {asked_tp} (DeepSpeed AutoTP) is modelled by "
                             "`zsim predict` only; this command would simulate the run without the split")
    notes: list[str] = []
    zero_values, zero_section = _parse_zero(raw, model, notes)
    ov = overrides
    if ov.stage is not None:
        if isinstance(ov.stage, bool) or not isinstance(ov.stage, int) or not 0 <= ov.stage <= 3:
            raise ZsimInputError(f"stage must be 0, 1, 2 or 3, got {ov.stage!r}")
        if ov.stage != zero_values["stage"] and "stage" in zero_section:
            notes.append(f"zero_optimization.stage: {zero_values['stage']} -> {ov.stage} (command line)")
        zero_values["stage"] = ov.stage
        if "overlap_comm" not in zero_section or _is_auto(zero_section.get("overlap_comm")):
            zero_values["overlap_comm"] = default_overlap_comm(ov.stage)
    for key in ("offload_optimizer", "offload_param"):
        value = getattr(ov, key)
        if value is not None:
            if value not in _OFFLOAD_DEVICES:
                raise ZsimInputError(f"--{key.replace('_', '-')} must be none, cpu or nvme, got {_show(value)}")
            zero_values[key] = OffloadDevice(value)
    refused = offload_error(zero_values["stage"], zero_values["offload_optimizer"], zero_values["offload_param"])
    if refused:
        raise ZsimInputError(refused)
    if not overlap_comm_applies(zero_values["stage"]):
        zero_values["overlap_comm"] = False
    zero_values["pin_memory"] = _pinned(zero_section, zero_values)
    zero = ZeroConfig(**zero_values)

    precision = _precision(raw, ov.precision, notes)
    micro = _optional_int(raw, "train_micro_batch_size_per_gpu", ov.micro_batch)
    gas = _optional_int(raw, "gradient_accumulation_steps", ov.grad_accum)
    train = _optional_int(raw, "train_batch_size", None)
    if train is not None and (ov.micro_batch is not None or ov.grad_accum is not None):
        # A flag wins over the file: the file's train_batch_size is derived anew from it.
        notes.append(f"train_batch_size: {train} from the file ignored; derived from the command line")
        train = None
    if micro is None and train is None:
        micro = DEFAULT_MICRO_BATCH
        if _is_auto(raw.get("train_micro_batch_size_per_gpu")):
            notes.append(f"train_micro_batch_size_per_gpu: auto -> {micro}")
    if gas is None and train is None:
        gas = 1
    train, micro, gas = resolve_batch(train, micro, gas, world_size)
    _check_batch_bounds(train, micro, gas)
    if _is_auto(raw.get("train_batch_size")):
        notes.append(f"train_batch_size: auto -> {train} (= {micro} x {gas} x {world_size})")

    seq = ov.seq_len if ov.seq_len is not None else min(DEFAULT_SEQ_LEN, model.max_position_embeddings)
    if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= MAX_SEQ_LEN:
        raise ZsimInputError(f"sequence length (--seq) must be an integer in 1-{MAX_SEQ_LEN}, got {show_number(seq)}")
    clip_raw = raw.get("gradient_clipping", 1.0)  # DeepSpeed default (runtime/constants.py:203)
    clip = 1.0 if _is_auto(clip_raw) else _as_float(clip_raw, "gradient_clipping")
    ckpt = ov.activation_checkpointing if ov.activation_checkpointing is not None else False

    resolved = _resolved_json(raw, zero_section, zero, precision, train, micro, gas, clip)
    return RunConfig(world_size=world_size, micro_batch=micro, grad_accum=gas, train_batch=train,
                     seq_len=seq, precision=precision,
                     comm_dtype_bytes=_comm_dtype_bytes(raw, precision), zero=zero,
                     activation_checkpointing=bool(ckpt), gradient_clipping=clip,
                     resolved=resolved, notes=tuple(notes))


def _check_batch_bounds(train: int, micro: int, gas: int) -> None:
    """Refuse batch values beyond :mod:`zsim.limits` (the simulator replays every micro-step)."""
    for value, bound, name in (
            (micro, MAX_MICRO_BATCH, "micro-batch (train_micro_batch_size_per_gpu)"),
            (gas, MAX_GRAD_ACCUM, "grad-accum (gradient_accumulation_steps)"),
            (train, MAX_TRAIN_BATCH, "train_batch_size")):
        if value > bound:
            raise ZsimInputError(f"{name} must be at most {bound}, got {show_number(value)}")


def _resolved_json(raw: Mapping[str, Any], zero_section: Mapping[str, Any], zero: ZeroConfig,
                   precision: str, train: int, micro: int, gas: int, clip: float) -> dict[str, Any]:
    """The user's config with every "auto" resolved and every zsim decision written in."""
    out = copy.deepcopy(dict(raw))
    section = {k: v for k, v in zero_section.items() if not _is_auto(v)}
    section["stage"] = zero.stage
    for key in ("reduce_bucket_size", "overlap_comm", "stage3_prefetch_bucket_size",
                "stage3_param_persistence_threshold"):
        if key in zero_section or key == "overlap_comm":
            section[key] = getattr(zero, key)
    for key in ("offload_optimizer", "offload_param"):
        device = getattr(zero, key)
        if device != OffloadDevice.NONE:
            # Keep the user's section (DeepSpeed's pin_memory default is false); a section that
            # only a flag asked for is written pinned, as RunConfig.pin_memory says.
            kept = dict(section.get(key) or {})
            section[key] = {**kept, "device": device} if kept else _offload_section(device)
        else:
            section.pop(key, None)
    out["zero_optimization"] = section
    out["train_batch_size"] = train
    out["train_micro_batch_size_per_gpu"] = micro
    out["gradient_accumulation_steps"] = gas
    out["gradient_clipping"] = clip
    for key in ("bf16", "fp16"):
        sec = dict(out.get(key) or {})
        if sec or precision == key:
            sec["enabled"] = precision == key
            out[key] = sec
    return _drop_autos(out)


def _drop_autos(node: Any) -> Any:
    """Replace any "auto" left in sections zsim does not model by DeepSpeed's behaviour: drop it."""
    if isinstance(node, dict):
        return {k: _drop_autos(v) for k, v in node.items() if not _is_auto(v)}
    if isinstance(node, list):
        return [_drop_autos(v) for v in node]
    return node
