"""Atomic outputs: a run killed while writing leaves the previous file or the new one, never half.

1. A child process rewrites one 8 MB file through zsim.io in a loop (64 KiB chunks, so a
   signal lands inside the writer); it is killed at random moments with SIGINT, SIGTERM or
   SIGKILL. The target must then be byte-identical to the last completed generation or to
   the one being written, and SIGINT must leave no temporary file behind.
2. `zsim predict --output DIR --json` is killed at random moments while it replaces the four
   files of a previous run: each file must be the old run's or the new run's, byte for byte.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SIZE = 8 * 2**20
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}

CHILD = textwrap.dedent("""
    import sys
    from zsim.io import atomic_write_with

    target, size = sys.argv[1], int(sys.argv[2])
    chunk = 64 * 1024

    def payload(i):
        return b"%012d\\n" % i + bytes([i % 251]) * size

    def writer(i):
        data = payload(i)
        def write(f):
            for at in range(0, len(data), chunk):
                f.write(data[at:at + chunk])
        return write

    print("ready", flush=True)
    i = 0
    try:
        while True:
            i += 1
            print("start", i, flush=True)
            atomic_write_with(target, writer(i))
            print("done", i, flush=True)
    except KeyboardInterrupt:
        print("interrupted", i, flush=True)
        sys.exit(130)
""")


@pytest.fixture
def private_tmp():
    """A temporary folder outside pytest's numbered basetemp: another pytest session on the
    same machine may clean up basetemp folders while these long-running kill tests use them
    (seen when several sessions ran at once), which would break the test, not the code."""
    import tempfile
    with tempfile.TemporaryDirectory(prefix="zsim-atomic-") as d:
        yield Path(d)


def payload(i: int) -> bytes:
    return b"%012d\n" % i + bytes([i % 251]) * SIZE


def _generation(path: Path) -> int:
    data = path.read_bytes()
    i = int(data[:12])
    assert data == payload(i), f"{path} is a partial or corrupt file (generation {i}, {len(data)} bytes)"
    return i


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_killed_writer_leaves_old_or_new(private_tmp, sig):
    tmp_path = private_tmp
    from zsim.io import atomic_write_bytes

    seed = random.randrange(2**32)
    rng = random.Random(seed)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    target = tmp_path / "out" / "big.bin"
    atomic_write_bytes(target, payload(0))
    mid_write = 0
    for trial in range(6):
        before = _generation(target)
        # Unbuffered binary pipes: a buffered readline() reads ahead, and communicate() reads
        # the raw pipe, so "start"/"done" lines the read-ahead took would be lost (the test
        # then blamed the writer for a generation it never saw being written).
        child = subprocess.Popen([sys.executable, str(script), str(target), str(SIZE)], env=ENV,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        assert child.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.0, 0.4))
        child.send_signal(sig)
        out, err = (b.decode() for b in child.communicate(timeout=60))
        words = out.split()
        done = [int(b) for a, b in zip(words, words[1:]) if a == "done"]
        started = [int(b) for a, b in zip(words, words[1:]) if a == "start"]
        in_flight = started[-1] if started and started[-1] not in done else None
        allowed = {done[-1] if done else before} | ({in_flight} if in_flight is not None else set())
        generation = _generation(target)  # also checks every byte
        assert generation in allowed, (seed, trial, generation, allowed)
        mid_write += in_flight is not None
        strays = [p.name for p in target.parent.iterdir() if p.name != target.name]
        if sig == signal.SIGINT:
            assert child.returncode == 130 and "Traceback" not in err, (seed, err)
            assert strays == [], f"SIGINT must remove the temporary file: {strays}"
        for name in strays:  # SIGTERM/SIGKILL give Python no chance to clean up
            assert name.startswith(".big.bin.") and name.endswith(".tmp"), name
            (target.parent / name).unlink()
    assert mid_write >= 1, f"no kill landed inside a write (seed {seed}); the test proved nothing"


# ---- the real command ------------------------------------------------------------------------------

FILES = ["training_metrics.csv", "training_curves.png", "summary.json", "deepspeed_config_auto.json"]
ARGS = ["predict", "--model", "tinyllama-1.1b", "--topo", "dgx-a100", "--gpus", "2", "--stage", "2", "--json"]


def _zsim(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "zsim.cli", *args], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_killed_predict_leaves_old_or_new_outputs(private_tmp):
    tmp_path = private_tmp
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    old, new = tmp_path / "old", tmp_path / "new"
    durations = []
    for out, micro in ((old, "1"), (new, "2")):
        t0 = time.monotonic()
        run = _zsim(ARGS + ["--micro-batch", micro, "--output", str(out)], tmp_path)
        _, err = run.communicate(timeout=120)
        durations.append(time.monotonic() - t0)
        assert run.returncode == 0, err
    reference = {name: ((old / name).read_bytes(), (new / name).read_bytes()) for name in FILES}
    assert all(a != b for a, b in reference.values())
    outcomes = []
    for trial in range(4):
        target = tmp_path / f"trial{trial}"
        shutil.copytree(old, target)
        run = _zsim(ARGS + ["--micro-batch", "2", "--output", str(target)], tmp_path)
        # Late in the run, where the four files are written (imports take the first half).
        time.sleep(rng.uniform(0.6, 1.05) * min(durations))
        sig = rng.choice([signal.SIGINT, signal.SIGTERM])
        run.send_signal(sig)
        _, err = run.communicate(timeout=120)
        state = []
        for name in FILES:
            data = (target / name).read_bytes()
            assert data in reference[name], f"{name} is neither the old nor the new file (seed {seed})"
            state.append("new" if data == reference[name][1] else "old")
        strays = sorted(p.name for p in target.iterdir() if p.name not in FILES)
        outcomes.append((sig.name, run.returncode, state, strays))
        if run.returncode == 130:  # interrupted inside the command: one line, no traceback
            assert err.strip().splitlines() == [b"zsim: interrupted"], err
            assert strays == [], strays
        for name in strays:
            assert name.endswith(".tmp"), name
    print(f"\nseed {seed}, kills (signal, exit code, files old/new, temporaries left): {outcomes}")


# ---- in-process failures ----------------------------------------------------------------------------

def test_failing_writer_keeps_the_old_file(tmp_path):
    from zsim.io import atomic_write_text, atomic_write_with

    target = atomic_write_text(tmp_path / "x.json", "old\n")

    def broken(f):
        f.write(b"half of a new fi")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        atomic_write_with(target, broken)
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


@pytest.mark.parametrize("where", ["dir", "under_file", "nul"])
def test_unwritable_paths_are_input_errors(tmp_path, where):
    from zsim.errors import ZsimInputError
    from zsim.io import atomic_write_text

    (tmp_path / "file").write_text("x")
    path = {"dir": tmp_path, "under_file": tmp_path / "file" / "out.json", "nul": f"{tmp_path}/a\x00b"}[where]
    with pytest.raises(ZsimInputError, match="cannot write") as info:
        atomic_write_text(path, "new")
    assert "\n" not in str(info.value)
    assert (tmp_path / "file").read_text() == "x"
