"""The user's DeepSpeed config in a search: what is fixed, what the search may choose, and
what changed between the file the user wrote and the ``deepspeed_config_auto.json`` written.

A value is *fixed* when the user wrote it and it is not ``"auto"``; the search chooses the
``"auto"`` or absent values of its axes (:data:`AXIS_KEYS`). Every other value is copied
through as the user wrote it (``2e8`` stays the number 2e8, ``"auto"`` stays ``"auto"``).

The written config has a *target*: ``hf-trainer`` (the default when the user's config holds
any ``"auto"``) keeps every ``"auto"`` the search does not decide, for the Hugging Face
Trainer to fill in from its arguments (learning rate, betas, warmup, ...); ``deepspeed``
replaces them by the values zsim simulated where zsim resolves them, and keeps (and names)
the ones only the Trainer can fill in, such as the optimizer's learning rate.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..dsconfig import AUTO, OffloadDevice, _as_int, load_ds_config
from ..errors import ZsimInputError
from .space import Candidate

#: Config used when the user gives none (the same as zsim.predict's default).
BASE_CONFIG: Mapping[str, Any] = {"bf16": {"enabled": True}, "gradient_clipping": 1.0}

#: Search axis -> where it lives in the DeepSpeed JSON (dotted path).
AXIS_KEYS: Mapping[str, str] = {
    "stage": "zero_optimization.stage",
    "offload_optimizer": "zero_optimization.offload_optimizer.device",
    "offload_param": "zero_optimization.offload_param.device",
    "micro_batch": "train_micro_batch_size_per_gpu",
    "grad_accum": "gradient_accumulation_steps",
    "train_batch": "train_batch_size",
    "reduce_bucket_size": "zero_optimization.reduce_bucket_size",
    "prefetch_bucket_size": "zero_optimization.stage3_prefetch_bucket_size",
    "overlap_comm": "zero_optimization.overlap_comm",
}

#: Who launches the written config: plain DeepSpeed, or the Hugging Face Trainer.
TARGETS = ("deepspeed", "hf-trainer")

#: Why the values of :data:`BASE_CONFIG` are written when the user gave no config.
BASE_REASONS: Mapping[str, str] = {
    "bf16.enabled": "zsim's default precision when no config is given: bf16 mixed precision "
                    "(DeepSpeed itself leaves bf16 off)",
    "gradient_clipping": "zsim's default when no config is given (DeepSpeed's default is 0: no clipping)",
}

_MISSING = object()


@dataclass(frozen=True)
class UserConfig:
    """A user's DeepSpeed config (empty when none was given) and the axes it fixes."""

    raw: Mapping[str, Any]
    given: bool
    source: str = ""
    fixed: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Change:
    """One value of the written config that differs from what the user wrote."""

    key: str
    before: Any        # the user's value; None when the key was absent
    after: Any         # the written value; None when the key was removed
    reason: str

    def describe(self) -> str:
        """One line: ``key: before -> after (reason)``."""
        before = "absent" if self.before is None else repr(self.before)
        after = "removed" if self.after is None else repr(self.after)
        return f"{self.key}: {before} -> {after}  [{self.reason}]"


def _is_auto(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() == AUTO


def _positive_int(value: Any, key: str, minimum: int = 1) -> int:
    """An integer as DeepSpeed's JSON allows it (``2e8``, ``"2"``), as `zsim predict` reads it."""
    return _as_int(value, key, minimum=minimum)


def _device(section: Any, key: str) -> str | None:
    if section is None:
        return None
    if not isinstance(section, Mapping):
        raise ZsimInputError(f"ds_config: zero_optimization.{key} must be an object, got {section!r}")
    device = section.get("device")
    if device is None or _is_auto(device):
        return None
    if not isinstance(device, str) or device.lower() not in ("none", "cpu", "nvme"):
        raise ZsimInputError(f"ds_config: zero_optimization.{key}.device must be none, cpu or nvme, "
                             f"got {device!r}")
    return device.lower()


def read_user_config(source: str | Path | Mapping[str, Any] | None) -> UserConfig:
    """Load ``source`` (path, dict or None) and find the axes it fixes."""
    if source is None:
        return UserConfig(raw=copy.deepcopy(dict(BASE_CONFIG)), given=False)
    raw = load_ds_config(source)
    zero = raw.get("zero_optimization") or {}
    if not isinstance(zero, Mapping):
        raise ZsimInputError(f"ds_config: zero_optimization must be an object, got {zero!r}")
    fixed: dict[str, Any] = {}
    stage = zero.get("stage")
    if stage is not None and not _is_auto(stage):
        stage = _positive_int(stage, "zero_optimization.stage", minimum=0)
        if stage > 3:
            raise ZsimInputError(f"ds_config: zero_optimization.stage must be 0-3, got {stage}")
        fixed["stage"] = stage
    for axis in ("offload_optimizer", "offload_param"):
        device = _device(zero.get(axis), axis)
        if device is not None:
            fixed[axis] = device
    if zero.get("cpu_offload") is True and "offload_optimizer" not in fixed:
        fixed["offload_optimizer"] = "cpu"       # deprecated alias DeepSpeed still reads
    overlap = zero.get("overlap_comm")
    if overlap is not None and not _is_auto(overlap):
        if not isinstance(overlap, bool):
            raise ZsimInputError(f"ds_config: zero_optimization.overlap_comm must be true or false, got {overlap!r}")
        fixed["overlap_comm"] = overlap
    for axis, key in (("micro_batch", "train_micro_batch_size_per_gpu"),
                      ("grad_accum", "gradient_accumulation_steps"), ("train_batch", "train_batch_size")):
        value = raw.get(key)
        if value is not None and not _is_auto(value):
            fixed[axis] = _positive_int(value, key)
    for axis, keys in (("reduce_bucket_size", ("reduce_bucket_size",)),
                       ("prefetch_bucket_size", ("stage3_prefetch_bucket_size", "prefetch_bucket_size"))):
        for key in keys:
            value = zero.get(key)
            if value is not None and not _is_auto(value):
                fixed[axis] = _positive_int(value, f"zero_optimization.{key}")
    return UserConfig(raw=raw, given=True, source=str(source) if not isinstance(source, Mapping) else "",
                      fixed=fixed)


def candidate_config(user: UserConfig, cand: Candidate, data_parallel: int) -> dict[str, Any]:
    """The user's config with the candidate's choices written into every axis not fixed."""
    cfg = copy.deepcopy(dict(user.raw))
    zero = dict(cfg.get("zero_optimization") or {})
    if "stage" not in user.fixed:
        zero["stage"] = cand.stage
    for axis in ("offload_optimizer", "offload_param"):
        if axis in user.fixed:
            continue
        device = getattr(cand, axis)
        if device == OffloadDevice.NONE:
            zero.pop(axis, None)
        else:
            section = dict(zero.get(axis) or {})
            section["device"] = device
            section.setdefault("pin_memory", True)
            zero[axis] = section
    if "reduce_bucket_size" not in user.fixed and cand.stage > 0:
        zero["reduce_bucket_size"] = cand.reduce_bucket_size
    if "prefetch_bucket_size" not in user.fixed and cand.stage == 3:
        zero.pop("prefetch_bucket_size", None)
        zero["stage3_prefetch_bucket_size"] = cand.prefetch_bucket_size
    if "overlap_comm" not in user.fixed and cand.stage > 0:
        zero["overlap_comm"] = cand.overlap_comm
    cfg["zero_optimization"] = zero
    for axis, key, value in (("micro_batch", "train_micro_batch_size_per_gpu", cand.micro_batch),
                             ("grad_accum", "gradient_accumulation_steps", cand.grad_accum),
                             ("train_batch", "train_batch_size",
                              cand.micro_batch * cand.grad_accum * data_parallel)):
        if axis not in user.fixed:
            cfg[key] = value
    return cfg


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value of every non-mapping value (empty sections have no leaves)."""
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_leaves(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return float(a) == float(b)
    return a == b


def describe_changes(user: UserConfig, resolved: Mapping[str, Any], search_reasons: Mapping[str, str],
                     notes: tuple[str, ...] = ()) -> tuple[Change, ...]:
    """Every value of ``resolved`` that the user did not write as is, with the reason.

    ``search_reasons`` maps dotted keys the search chose to why; ``notes`` are the
    predictor's resolution notes (they name keys, e.g. ``train_batch_size: auto -> 64``).
    """
    before = _leaves(user.raw) if user.given else {}
    after = _leaves(resolved)
    changes: list[Change] = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key, _MISSING), after.get(key, _MISSING)
        if old is not _MISSING and new is not _MISSING and _same(old, new):
            continue
        changes.append(Change(key, None if old is _MISSING else old, None if new is _MISSING else new,
                              _reason(key, old, new, search_reasons, notes)))
    return tuple(changes)


def _reason(key: str, old: Any, new: Any, search_reasons: Mapping[str, str],
            notes: tuple[str, ...]) -> str:
    if key in search_reasons:
        return search_reasons[key]
    for prefix, why in search_reasons.items():
        if key.startswith(prefix + "."):
            return why
    short = key.rsplit(".", 1)[-1]
    for note in notes:
        if note.startswith(key + ":") or note.startswith(f"zero_optimization.{short}:"):
            return note.split("(", 1)[1].rstrip(")") if "(" in note else "resolved by zsim"
    if new is _MISSING:
        return ("\"auto\" in a section zsim does not model: dropped, DeepSpeed's default applies"
                if _is_auto(old) else "not used with the chosen configuration")
    if old is _MISSING and key in BASE_REASONS:
        return BASE_REASONS[key]
    if old is _MISSING:
        return "added with the value zsim simulated"
    if _is_auto(old):
        return "\"auto\" resolved as the HF Trainer / DeepSpeed would"
    return "normalised by zsim"


def has_auto(node: Any) -> bool:
    """Whether any value of ``node`` (nested mappings and lists) is ``"auto"``."""
    if isinstance(node, Mapping):
        return any(has_auto(v) for v in node.values())
    if isinstance(node, list):
        return any(has_auto(v) for v in node)
    return _is_auto(node)


def config_target(user: UserConfig, requested: str | None = None) -> str:
    """The target of the written config: ``requested``, else ``hf-trainer`` when the user's
    config holds any "auto" (only the HF Trainer fills those in), else ``deepspeed``."""
    if requested is not None:
        if requested not in TARGETS:
            raise ZsimInputError(f"--for must be one of {', '.join(TARGETS)}, got {str(requested)[:40]!r}")
        return requested
    return "hf-trainer" if user.given and has_auto(user.raw) else "deepspeed"


def written_config(candidate: Mapping[str, Any], resolved: Mapping[str, Any],
                   target: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The config to write and the dotted keys still "auto" in it.

    ``candidate`` is :func:`candidate_config` (the user's values plus the search's choices),
    ``resolved`` the config zsim simulated. For ``hf-trainer`` every "auto" stays; for
    ``deepspeed`` each "auto" takes its resolved value, and those zsim does not resolve
    (optimizer, scheduler, ...) stay "auto" as the user wrote them, never dropped.
    """
    out = copy.deepcopy(dict(candidate))
    if target == "hf-trainer":
        return out, tuple(k for k, v in _leaves(out).items() if _is_auto(v))
    values = _leaves(resolved)
    kept: list[str] = []

    def fill(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict):
                fill(value, dotted + ".")
            elif _is_auto(value) and dotted in values:
                node[key] = values[dotted]
            elif _is_auto(value):
                kept.append(dotted)
    fill(out, "")
    return out, tuple(kept)


def target_notes(target: str, still_auto: tuple[str, ...], cand: Candidate) -> tuple[str, ...]:
    """What the user must know to launch the written config with ``target``."""
    if target == "hf-trainer":
        return ("written for the Hugging Face Trainer (--for hf-trainer; the default when the config "
                "holds \"auto\"): every \"auto\" the search does not decide is kept for the Trainer to "
                f"fill in ({_some(still_auto)}); pass per_device_train_batch_size={cand.micro_batch} "
                f"and gradient_accumulation_steps={cand.grad_accum} to the Trainer, which checks them "
                "against the config",)
    if still_auto:
        return (f"written for plain DeepSpeed (--for deepspeed), which cannot read \"auto\": "
                f"{_some(still_auto, 6)} kept as you wrote them (zsim does not know their values); "
                "set them before launching, or use --for hf-trainer",)
    return ()


def _some(keys: tuple[str, ...], shown: int = 4) -> str:
    """``a, b, c and 3 more`` (``none left`` when empty)."""
    if not keys:
        return "none left"
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


def fixed_values_kept(user: UserConfig, resolved: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose fixed (non-"auto") user value differs in ``resolved`` (should be none)."""
    before, after = _leaves(user.raw), _leaves(resolved)
    return [k for k, v in before.items() if not _is_auto(v) and k in after and not _same(v, after[k])]
