"""Atomic file output: a reader sees the old file or the new one, never half of one.

Each writer writes a temporary file in the target's folder, flushes and fsyncs it, then
renames it over the target (``os.replace`` is atomic on POSIX). An interrupted run leaves
at most a stray ``.tmp`` file, which is removed on the way out when Python can.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import ZsimInputError
from .limits import check_finite_tree


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    return _atomic(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def dumps_json(obj: Any) -> str:
    """Deterministic JSON: sorted keys, two-space indent, trailing newline.

    A result holding NaN or an infinity is refused (exit code 2), never written or printed.
    """
    check_finite_tree(obj, "result")
    return json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as deterministic JSON atomically."""
    return atomic_write_text(path, dumps_json(obj))


def atomic_write_with(path: str | Path, writer: Callable[[Any], Any]) -> Path:
    """Call ``writer(binary_file)`` on a temporary file, then move it into place."""
    return _atomic(path, writer)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic(path: str | Path, writer: Callable[[Any], Any]) -> Path:
    target = Path(path)
    if "\x00" in str(target):
        raise ZsimInputError(f"cannot write {str(target)!r}: not a valid file name")
    try:
        return _replace(target, writer)
    except OSError as exc:  # a bad output path is bad input: one line, exit code 2
        raise ZsimInputError(f"cannot write {str(target)!r}: {exc.strerror or exc}") from None


def _check_target(target: Path) -> None:
    """Refuse to replace anything but a regular file: a device, FIFO or socket (``/dev/null``,
    a named pipe) would be swapped for a plain file by the rename."""
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory")
    if not stat.S_ISREG(mode):
        raise ZsimInputError(f"cannot write {str(target)[:200]!r}: not a regular file "
                             "(a device, FIFO or socket is left alone)")


def _replace(target: Path, writer: Callable[[Any], Any]) -> Path:
    _check_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        held = _hold_signals()
        try:   # the name is bound before a held signal can be raised (in the finally)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        finally:
            _release_signals(held)
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600 files; give the result the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        raise
    return target


#: Signals the CLI turns into KeyboardInterrupt (zsim/cli.py): held back while the temporary
#: file is created, so that one cannot arrive after the file exists but before its name is
#: known to the cleanup above (a stray .tmp file was seen after SIGINT).
_HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _hold_signals():
    """Block SIGINT/SIGTERM at the OS level (where possible); returns the previous mask."""
    if not hasattr(signal, "pthread_sigmask"):
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)


def _release_signals(previous) -> None:
    """Restore the mask of :func:`_hold_signals`; a held signal is raised from here."""
    if previous is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def atomic_write_set(folder: str | Path, files: Mapping[str, bytes | str]) -> list[Path]:
    """Write several files into ``folder`` as one set: each atomically, all under an exclusive
    lock on the folder, so concurrent runs into one folder cannot interleave their files (the
    folder ends up holding one run's set). Render everything before calling this."""
    out = Path(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    except (OSError, ValueError) as exc:
        raise ZsimInputError(f"cannot write into {str(out)[:200]!r}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return [atomic_write_bytes(out / name, data.encode("utf-8") if isinstance(data, str) else data)
                for name, data in files.items()]
    finally:
        os.close(fd)  # closing releases the lock
