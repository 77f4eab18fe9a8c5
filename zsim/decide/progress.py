"""Progress of long commands on stderr: a redrawn bar on a terminal, else plain lines.

On a terminal one line is redrawn in place. When stderr is a file or a pipe (CI logs, a
script), a line is written once the work has run ``line_every_s``, then at most every
``line_every_s``, at the start of each phase (a label ``"phase: detail"`` names its phase),
and when it ends if any line was written: a log shows that a long search is alive and
which phase it is in, a short command writes nothing, and never one line per candidate.
``--quiet`` turns both off."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """Callable ``(done, total, label)``; :meth:`close` ends its line.

    ``enabled`` False writes nothing; ``redraw`` None redraws on a terminal and writes
    plain lines elsewhere (True forces the redrawn bar)."""

    def __init__(self, stream: TextIO | None = None, enabled: bool = True, width: int = 30,
                 redraw: bool | None = None, what: str = "zsim", line_every_s: float = 2.0):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.redraw = _isatty(self.stream) if redraw is None else redraw
        self.width = width
        self.what = what
        self.line_every_s = line_every_s
        self._start = time.monotonic()
        self._last_line = -1.0
        self._drawn = False
        self._phase: str | None = None

    def __call__(self, done: int, total: int, label: str = "") -> None:
        if not self.enabled or total <= 0:
            return
        if not self.redraw:
            self._line(done, total, label)
            return
        filled = int(self.width * min(done, total) / total)
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = time.monotonic() - self._start
        self.stream.write(f"\r[{bar}] {done}/{total} {elapsed:5.1f}s {label[:40]:<40}")
        self.stream.flush()
        self._drawn = True

    def _line(self, done: int, total: int, label: str) -> None:
        now = time.monotonic() - self._start
        phase = label.split(":", 1)[0] if ":" in label else None
        new_phase = phase is not None and phase != self._phase
        self._phase = phase if phase is not None else self._phase
        if done >= total and self._last_line < 0:
            return                    # finished before the first line was due: stay silent
        started = self._last_line >= 0 or now >= self.line_every_s
        if done < total and not (new_phase and started) and now - max(self._last_line, 0.0) < self.line_every_s:
            return
        self._last_line = now
        self.stream.write(f"{self.what}: {min(done, total)}/{total} after {now:.1f} s {label[:60]}\n")
        self.stream.flush()

    def close(self) -> None:
        """Finish the line so that later output starts on a fresh one."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):   # a closed or exotic stream
        return False
