"""Reading input files without trusting them: size caps, regular files only, checked shapes.

Every config, profile, topology and result file goes through :func:`read_input_bytes`: a
character device (``/dev/zero``), a FIFO or a directory is refused, and so is anything
larger than :data:`zsim.limits.MAX_INPUT_FILE_BYTES`, instead of reading without end.
The shape checks for measured results (``microbench.json``, ``nccl*.json``,
``summary.json``) live here too, so that the fitting code only ever sees numbers.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any, Mapping

from .errors import ZsimInputError
from .limits import MAX_INPUT_FILE_BYTES, show_number

#: microbench.json sections that are lists of rows -> the numeric fields each row needs.
MICROBENCH_ROWS = {
    "gemm": ("flops", "time_s"),
    "gemm_fp32": ("flops", "time_s"),
    "attention": ("fwd_bwd_flops", "fwd_bwd_s"),
    "membound": ("GBps",),
    "membound_sizes": ("tokens", "width", "time_s"),
    "step_passes": ("GBps",),
    "hostcopy": ("bytes", "h2d_GBps", "d2h_GBps"),
    "checkpoint": ("checkpoint_forward_s", "checkpoint_recompute_s"),
    "moe_scan": ("tokens", "experts", "time_s"),
    "cpu_passes": ("threads", "numel", "params_per_s"),
}
#: microbench.json sections that are one object -> the numeric fields it needs.
MICROBENCH_OBJECTS = {"fused_adam": ("s_per_param",), "cpu_adam": ("params_per_s",)}
#: Numeric fields every NCCL sweep row needs.
NCCL_ROW_FIELDS = ("bytes", "world_size", "time_s")


def read_input_bytes(path: str | Path, what: str = "input file") -> bytes:
    """The bytes of a regular file of at most 16 MiB; anything else is a one-line error."""
    name = str(path)[:200]
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it.
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ZsimInputError(f"{what} {name} is not a regular file")
            data = f.read(MAX_INPUT_FILE_BYTES + 1)
    except ZsimInputError:
        raise
    except FileNotFoundError:
        raise ZsimInputError(f"{what} not found: {name}") from None
    except IsADirectoryError:
        raise ZsimInputError(f"{what} {name} is a directory") from None
    except OSError as exc:  # permission, a name over the length limit, ...
        raise ZsimInputError(f"cannot read {what} {name}: {exc.strerror or exc}") from None
    except ValueError:  # a NUL byte in the path
        raise ZsimInputError(f"{what} path {name!r} is not a valid file name") from None
    if len(data) > MAX_INPUT_FILE_BYTES:
        raise ZsimInputError(f"{what} {name} is larger than {MAX_INPUT_FILE_BYTES >> 20} MiB")
    return data


def read_json_file(path: str | Path, what: str = "JSON file") -> Any:
    """Strict JSON from a bounded file: no NaN/Infinity, errors as one line naming the file."""
    data = read_input_bytes(path, what)
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise ZsimInputError(f"{what} {path} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ZsimInputError(f"malformed JSON in {what} {path}: {exc.msg} at line {exc.lineno}") from None
    except ZsimInputError as exc:  # NaN, Infinity
        raise ZsimInputError(f"{what} {path}: {exc}") from None
    except (RecursionError, ValueError):  # deep nesting; an integer of over 4300 digits
        raise ZsimInputError(f"{what} {path} is nested too deeply or holds too large a number") from None


def _no_constant(name: str) -> Any:
    raise ZsimInputError(f"{name} is not a valid number")


def finite_number(value: Any, key: str, where: str, *, low: float = 0.0,
                  high: float = 1e30) -> float:
    """``value`` as a float in ``[low, high]``; anything else names ``where: key``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    try:
        number = float(value) if ok else math.nan
    except OverflowError:
        number = math.inf
    if not (math.isfinite(number) and low <= number <= high):
        raise ZsimInputError(f"{where}: {key} must be a number in {low:g}-{high:g}, got {show_number(value)}")
    return number


def check_rows(rows: Any, fields: tuple[str, ...], where: str) -> list[Mapping[str, Any]]:
    """A list of objects whose ``fields`` are finite non-negative numbers."""
    if not isinstance(rows, list):
        raise ZsimInputError(f"{where} must be a list of objects, got {type(rows).__name__}")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ZsimInputError(f"{where}[{i}] must be an object, got {type(row).__name__}")
        for key in fields:
            finite_number(row.get(key), key, f"{where}[{i}]")
    return rows


def check_microbench(data: Any, where: str) -> dict[str, Any]:
    """A ``microbench.json`` document whose sections the calibration can use."""
    if not isinstance(data, dict):
        raise ZsimInputError(f"{where}: top level must be a JSON object")
    for key, fields in MICROBENCH_ROWS.items():
        if key in data:
            check_rows(data[key], fields, f"{where}: {key}")
    for key, fields in MICROBENCH_OBJECTS.items():
        if key in data:
            if not isinstance(data[key], Mapping):
                raise ZsimInputError(f"{where}: {key} must be an object, got {type(data[key]).__name__}")
            for f in fields:
                finite_number(data[key].get(f), f, f"{where}: {key}")
    if "moe_host" in data:   # validation/microbench/moe_host.py: one object per process
        sec = data["moe_host"]
        if not isinstance(sec, Mapping):
            raise ZsimInputError(f"{where}: moe_host must be an object with 'rows'")
        check_rows(sec.get("rows", []), ("k", "ratio"), f"{where}: moe_host.rows")
    if not isinstance(data.get("meta", {}), Mapping):
        raise ZsimInputError(f"{where}: meta must be an object")
    return data


def check_nccl(data: Any, where: str) -> list[Mapping[str, Any]]:
    """The rows of an ``nccl*.json`` sweep ({"rows": [{op, bytes, world_size, time_s}, ...]})."""
    if not isinstance(data, dict):
        raise ZsimInputError(f"{where}: top level must be a JSON object with 'rows'")
    rows = check_rows(data.get("rows", []), NCCL_ROW_FIELDS, f"{where}: rows")
    for i, row in enumerate(rows):
        if not isinstance(row.get("op"), str):
            raise ZsimInputError(f"{where}: rows[{i}].op must be a collective name")
    return rows


def summary_number(summary: Mapping[str, Any], key: str, default: Any, *, integer: bool = False,
                   high: float = 1e30) -> Any:
    """A number of a run's ``summary.json`` (absent/null: ``default``); NaN, inf, a string
    or a value beyond ``high`` is a :class:`ZsimInputError` naming the key."""
    value = summary.get(key)
    if value is None:
        return default
    number = finite_number(value, key, "summary.json", high=high)
    if integer:
        if not number.is_integer():
            raise ZsimInputError(f"summary.json: {key} must be a whole number, got {show_number(value)}")
        return int(number)
    return number


def existing_paths(paths: Any, what: str = "results path") -> list[Path]:
    """``paths`` as Paths that exist; a missing, unreadable or over-long name is an error."""
    out = []
    for p in map(Path, paths):
        try:
            found = p.exists()
        except (OSError, ValueError) as exc:  # a name over the length limit, a NUL byte
            raise ZsimInputError(f"{what} {str(p)[:200]!r}: {getattr(exc, 'strerror', None) or exc}") from None
        if not found:
            raise ZsimInputError(f"{what} not found: {str(p)[:200]}")
        out.append(p)
    return out
