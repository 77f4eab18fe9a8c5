"""The `zsim` command line: parses arguments, calls the API, prints. No logic lives here.

Each subcommand is a module in :mod:`zsim.commands` with ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Bad input raises
:class:`~zsim.errors.ZsimInputError` anywhere below; it becomes one line on stderr and
exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

from . import __version__
from .errors import ZsimInputError

#: Subcommand name -> module under zsim.commands.
COMMANDS = {
    "predict": "predict",
    "schedule": "schedule",
    "collective": "collective",
    "topo": "topo",
    "plan": "plan",
    "sweep": "sweep",
    "capacity": "capacity",
    "report": "report",
    "calibrate": "calibrate",
    "validate": "validate",
    "diagnose": "diagnose",
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2 (no usage dump)."""

    def error(self, message: str) -> None:  # noqa: D401 - argparse API
        one_line = message.replace("\r", "\\r").replace("\n", "\\n")
        sys.stderr.write(f"zsim: error: {one_line}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every subcommand that is installed."""
    parser = _Parser(prog="zsim", description="A digital twin of DeepSpeed ZeRO training.")
    parser.add_argument("--version", action="version", version=f"zsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(f"zsim.commands.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"zsim.commands.{module_name}":
                continue  # not built yet
            raise
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _terminate(signum, frame) -> None:
    # SIGTERM unwinds like Ctrl-C, so atomic writers remove their temporary files.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `zsim` script."""
    if sys.stdout is None:  # started with stdout closed (`zsim ... >&-`)
        sys.stdout = open(os.devnull, "w")
    try:
        signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread (e.g. called from a test runner's thread)
        pass
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return int(args._run(args) or 0)
    except ZsimInputError as exc:
        sys.stderr.write(f"zsim: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("zsim: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
