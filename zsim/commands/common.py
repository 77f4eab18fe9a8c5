"""Argument helpers shared by subcommands (model/topology/config options, number parsing)."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Callable

from .. import limits
from ..decide.fanout import CLUSTER_EXTRA_HINT, Backend, backend_for
from ..decide.progress import ProgressBar
from ..defaults import DEFAULT_MODEL, DEFAULT_SEQ_LEN, DEFAULT_TOPO
from ..dsconfig import OffloadDevice
from ..errors import ZsimInputError
from ..io import atomic_write_text
from ..job import SETTING_FIELDS, RunSettings


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (accepts 2e3), at most 2**63-1."""
    return _parse_int(text, limits.MAX_DS_INT)


def int_up_to(high: int) -> Callable[[str], int]:
    """argparse type: an integer in 1..``high`` (bounds from :mod:`zsim.limits`)."""
    def parse(text: str) -> int:
        return _parse_int(text, high)
    parse.__name__ = f"int_up_to_{high}"  # argparse names the type in some messages
    return parse


def _parse_int(text: str, high: int) -> int:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text[:40]!r}") from None
    if not math.isfinite(value) or not value.is_integer() or not 1 <= value <= high:
        raise argparse.ArgumentTypeError(f"expected a positive integer of at most {high}, got {text[:40]!r}")
    return int(value)


def percent(text: str) -> float:
    """argparse type: a percentage in [0, 100) (``6.1``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a percentage, got {text[:40]!r}") from None
    if not math.isfinite(value) or not 0.0 <= value < 100.0:
        raise argparse.ArgumentTypeError(f"expected a percentage in [0, 100), got {text[:40]!r}")
    return value


def add_cluster_args(p: argparse.ArgumentParser, default_topo: str | None = DEFAULT_TOPO) -> None:
    """--topo, --gpus/--nodes, --hardware."""
    p.add_argument("--topo", default=default_topo, required=default_topo is None,
                   help="topology name from zsim/data/topologies/ or a YAML path (default: %(default)s)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--gpus", type=int_up_to(limits.MAX_GPUS_PER_NODE), help="first N GPUs of one node")
    g.add_argument("--nodes", type=int_up_to(limits.MAX_NODES), help="M whole nodes")
    p.add_argument("--hardware", help="hardware profile name or YAML path (default: the topology's)")


#: --model's help (the default is the model layer's).
MODEL_HELP = f"preset name or path to a HF config.json (default: {DEFAULT_MODEL})"

#: Values of --offload-optimizer / --offload-param: DeepSpeed's offload devices.
OFFLOAD_CHOICES = [d.value for d in OffloadDevice]


def add_seq_arg(p: argparse.ArgumentParser) -> None:
    """--seq without a default (the model's, capped at :data:`zsim.defaults.DEFAULT_SEQ_LEN`)."""
    p.add_argument("--seq", type=int_up_to(limits.MAX_SEQ_LEN), help=f"sequence length (default {DEFAULT_SEQ_LEN})")


def settings_from_args(args: argparse.Namespace, **given: object) -> RunSettings:
    """The :class:`~zsim.job.RunSettings` of a command's flags: every setting the command
    defines (an absent flag stays None, the setting's default), ``given`` on top."""
    values = {name: getattr(args, name) for name in SETTING_FIELDS if hasattr(args, name)}
    values.update(given)
    return RunSettings(**values)


def add_run_args(p: argparse.ArgumentParser) -> None:
    """Model and DeepSpeed-config options shared by predict/plan/report."""
    p.add_argument("--model", default=None,
                   help=MODEL_HELP)
    p.add_argument("--stage", type=int, choices=[0, 1, 2, 3], help="ZeRO stage")
    p.add_argument("--micro-batch", type=int_up_to(limits.MAX_MICRO_BATCH), help="micro-batch per GPU")
    p.add_argument("--grad-accum", type=int_up_to(limits.MAX_GRAD_ACCUM), help="gradient accumulation steps")
    add_seq_arg(p)
    p.add_argument("--offload-optimizer", choices=OFFLOAD_CHOICES)
    p.add_argument("--offload-param", choices=OFFLOAD_CHOICES)
    p.add_argument("--activation-checkpointing", action="store_true", default=None,
                   help="recompute each decoder layer in backward")
    p.add_argument("--ds-config", help="DeepSpeed JSON config (\"auto\" values allowed)")


def require(condition: bool, message: str) -> None:
    """Raise a ZsimInputError with ``message`` unless ``condition``."""
    if not condition:
        raise ZsimInputError(message)


def add_quiet_arg(p: argparse.ArgumentParser) -> None:
    """-q/--quiet and --progress for commands that report progress on stderr."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    g.add_argument("--progress", action="store_true",
                   help="redraw a progress bar even when stderr is not a terminal "
                        "(default: a bar on a terminal, a line every few seconds elsewhere)")


def progress_for(args: argparse.Namespace, what: str):
    """The progress reporter ``--quiet`` / ``--progress`` ask for."""
    return ProgressBar(enabled=not args.quiet, redraw=True if args.progress else None, what=what)


def add_result_output_arg(p: argparse.ArgumentParser) -> None:
    """-o/--output FILE: write the result (the table, or the JSON with --json) to a file."""
    p.add_argument("-o", "--output", default=None, metavar="FILE",
                   help="write the result to FILE (atomically) instead of stdout")


def emit(args: argparse.Namespace, text: str) -> None:
    """Print ``text``, or write it atomically to ``--output``."""
    if not text.endswith("\n"):
        text += "\n"
    if getattr(args, "output", None):
        atomic_write_text(args.output, text)
    else:
        sys.stdout.write(text)


def add_fanout_args(p: argparse.ArgumentParser) -> None:
    """--jobs N and --dask ADDRESS: where predictions run (`zsim sweep` and `zsim plan`)."""
    # default None, not 1: --jobs given at all together with --dask is refused.
    p.add_argument("--jobs", type=int_up_to(64), default=None,
                   help="worker processes predicting configurations at once (default 1)")
    p.add_argument("--dask", metavar="ADDRESS",
                   help="predict on the workers of a running Dask scheduler: its address (tcp://host:8786) "
                        f"or scheduler file; needs {CLUSTER_EXTRA_HINT}, not with --jobs")


def backend_from_args(args: argparse.Namespace) -> Backend:
    """The backend of :func:`add_fanout_args`' flags (both at once: one-line input error)."""
    return backend_for(jobs=args.jobs, dask=args.dask)
