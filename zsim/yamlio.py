"""Reading YAML input files: one loader for profiles, topologies, sweep grids and the rest.

Every YAML file zsim reads goes through :func:`load_yaml_file`: the bytes through
:func:`zsim.inputs.read_input_bytes` (regular files of bounded size), then ``yaml.safe_load``
(no object construction). Whatever goes wrong becomes one :class:`ZsimInputError` line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import ZsimInputError
from .inputs import read_input_bytes


def load_yaml_file(path: Path, what: str) -> Any:
    """Parse a YAML file; unreadable or malformed files raise :class:`ZsimInputError`."""
    data = read_input_bytes(path, f"{what} file")  # regular files of at most 16 MiB
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ZsimInputError(f"cannot read {what} file {path}: {exc.__class__.__name__}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ZsimInputError(f"malformed YAML in {what} file {path}{at}") from None
    except RecursionError:
        raise ZsimInputError(f"{what} file {path} is nested too deeply") from None
    except ValueError:  # an integer beyond Python's 4300-digit limit
        raise ZsimInputError(f"{what} file {path} holds a number with too many digits") from None


__all__ = ["load_yaml_file"]
