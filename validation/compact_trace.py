"""Compact a torch.profiler (Kineto) Chrome trace for committing with a run.

Kept: every complete event (``ph: X``) with its name, category, process, thread, start and
duration, and the arguments readers use (``correlation``, ``stream``, ``device``, ``bytes``,
``External id``). Dropped: flow events (``ac2g`` launch arrows and ``fwdbwd`` autograd
links, recoverable from ``correlation``) and per-event bookkeeping (record-function and
sequence ids, kernel launch configuration and occupancy). The trace-level metadata
(device properties, versions) is kept.

    python validation/compact_trace.py RUN_DIR/trace.json.gz [...]   # rewrites in place
"""

from __future__ import annotations

import gzip
import json
import os
import sys
from pathlib import Path

DROPPED_CATEGORIES = {"ac2g", "fwdbwd"}
KEPT_ARGS = ("correlation", "stream", "device", "bytes", "External id")


def compact_events(events: list[dict]) -> list[dict]:
    """The events a committed trace keeps (see the module docstring)."""
    out = []
    for e in events:
        if e.get("cat") in DROPPED_CATEGORIES:
            continue
        args = e.get("args")
        if isinstance(args, dict):
            e = dict(e, args={k: args[k] for k in KEPT_ARGS if k in args})
        out.append(e)
    return out


def compact_file(src: Path, dst: Path) -> None:
    """Read a Chrome trace (plain or .gz) from ``src``; write it compacted, gzipped, to ``dst``
    through a temporary file in the same folder."""
    opener = gzip.open if src.suffix == ".gz" else open
    with opener(src, "rt") as f:
        trace = json.load(f)
    trace["traceEvents"] = compact_events(trace.get("traceEvents", []))
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    with gzip.open(tmp, "wt", compresslevel=9) as f:
        json.dump(trace, f, separators=(",", ":"))
    os.replace(tmp, dst)


def main(argv: list[str]) -> int:
    """Compact each trace.json.gz named on the command line in place."""
    for name in argv:
        path = Path(name)
        before = path.stat().st_size
        compact_file(path, path)
        print(f"{path}: {before:,} -> {path.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
