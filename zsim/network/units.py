"""Parse byte sizes as users write them: 1e9, 4096, 256MiB, 1GiB, 2GB, 1.5e8B."""

from __future__ import annotations

import math
import re

from ..errors import ZsimInputError
from ..limits import MAX_COLLECTIVE_BYTES

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "k": 2**10, "m": 2**20,
          "g": 2**30, "t": 2**40}
_PATTERN = re.compile(r"^\s*([+-]?[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_bytes(text: str | int | float, what: str = "--bytes") -> int:
    """Bytes from ``text``; decimal (kB/MB/GB) and binary (KiB/MiB/GiB; K/M/G) suffixes.

    Raises :class:`ZsimInputError` naming ``what`` for malformed or non-positive sizes.
    """
    if isinstance(text, bool):
        raise ZsimInputError(f"{what}: expected a size in bytes, got {text!r}")
    if isinstance(text, (int, float)):
        number, unit = float(text), ""
    else:
        match = _PATTERN.match(str(text))
        if not match or match.group(2).lower() not in _UNITS:
            raise ZsimInputError(
                f"{what}: cannot read size {text!r} (examples: 1e9, 4096, 256MiB, 1GiB, 2GB)")
        number, unit = float(match.group(1)), match.group(2).lower()
    value = number * _UNITS[unit]
    if not math.isfinite(value) or value <= 0:
        raise ZsimInputError(f"{what} must be a positive size, got {text!r}")
    if value > MAX_COLLECTIVE_BYTES:
        raise ZsimInputError(f"{what} must be at most 2**50 bytes (1 PiB), got {str(text)[:40]!r}")
    return int(round(value))
