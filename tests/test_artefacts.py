"""Written artefacts: special files are never replaced, two runs write identical bytes, and a
folder written by concurrent runs holds one run's set of files."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

import zsim.io as zio
from zsim.cli import main
from zsim.errors import ZsimInputError

REPO = Path(__file__).resolve().parent.parent
MICROBENCH = next((REPO / "validation" / "results").rglob("microbench.json"), None)
SMALL = ["--model", "tinyllama-1.1b", "--topo", "dgx-a100", "--gpus", "2"]


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _calibrate_inputs(tmp_path: Path) -> list[str]:
    if MICROBENCH is None:
        pytest.skip("no microbench.json under validation/results")
    (tmp_path / "mb").mkdir(exist_ok=True)
    (tmp_path / "mb" / "microbench.json").write_bytes(MICROBENCH.read_bytes())
    return [str(tmp_path / "mb")]


def test_atomic_writer_leaves_special_files_alone(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for target in (fifo, Path("/dev/null")):
        with pytest.raises(ZsimInputError, match="not a regular file"):
            zio.atomic_write_text(target, "x")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo"]  # no stray temporary file


@pytest.mark.parametrize("command", ["trace", "output", "plan", "sweep", "draw", "calibrate"])
def test_every_command_refuses_a_fifo_target(command, tmp_path, capsys):
    fifo = tmp_path / ("f.svg" if command == "draw" else "f")
    folder = tmp_path / "out"
    folder.mkdir()
    name = {"output": "summary.json", "plan": "plan.json", "sweep": "sweep.json"}.get(command)
    if name:
        fifo = folder / name
    os.mkfifo(fifo)
    argv = {"trace": ["predict", *SMALL, "--no-output", "--trace", str(fifo)],
            "output": ["predict", *SMALL, "--output", str(folder)],
            "plan": ["plan", *SMALL, "-q", "--output", str(folder)],
            "sweep": ["sweep", "-q", "--model", "tinyllama-1.1b", "--gpus", "2", "--stage", "1", "--output", str(folder)],
            "draw": ["topo", "draw", "dgx-a100", "-o", str(fifo)],
            "calibrate": ["calibrate", *(_calibrate_inputs(tmp_path) if command == "calibrate" else []),
                          "-o", str(fifo)]}[command]
    code, out, err = run(argv, capsys)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "not a regular file" in err
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (the folder's own name, which a report quotes, masked)."""
    return {str(p.relative_to(folder)): p.read_bytes().replace(str(folder).encode(), b"OUT")
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("command", ["predict", "plan", "sweep", "draw", "calibrate", "report"])
def test_two_runs_write_identical_bytes(command, tmp_path, capsys):
    outputs = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        argv = {"predict": ["predict", *SMALL, "--output", str(out), "--trace", str(out / "trace.json")],
                "plan": ["plan", *SMALL, "-q", "--output", str(out)],
                "sweep": ["sweep", "-q", "--model", "tinyllama-1.1b", "--gpus", "1,2", "--stage", "1,3",
                          "--output", str(out)],
                "draw": ["topo", "draw", "dgx-h100", "--nodes", "2", "-o", str(out / "t.svg")],
                "calibrate": ["calibrate", *(_calibrate_inputs(tmp_path) if command == "calibrate" else []),
                              "-o", str(out / "p.yaml")],
                "report": ["report", *SMALL, "--output", str(out)]}[command]
        if command == "draw":
            for suffix in (".png", ".pdf"):
                assert run(["topo", "draw", "dgx-h100", "-o", str(out / f"t{suffix}")], capsys)[0] == 0
        code, stdout, err = run(argv, capsys)
        assert code == 0, err
        outputs.append((_files(out), stdout.replace(str(out), "OUT")))
    assert outputs[0][0] and outputs[0][0] == outputs[1][0]
    assert outputs[0][1] == outputs[1][1]  # the printed output too (no timings, no dates)


def test_concurrent_sets_into_one_folder_do_not_mix(tmp_path, monkeypatch):
    real = zio.atomic_write_bytes

    def slow(path, data):  # widen the window between the files of one set
        time.sleep(0.002)
        return real(path, data)
    monkeypatch.setattr(zio, "atomic_write_bytes", slow)
    names = [f"f{i}.txt" for i in range(8)]
    for round_ in range(5):  # writers start together, so without the lock their files interleave
        folder = tmp_path / f"round{round_}"
        barrier = threading.Barrier(4)

        def writer(tag: int) -> None:
            barrier.wait()
            zio.atomic_write_set(folder, {n: f"{tag}\n" for n in names})
        threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        contents = {(folder / n).read_text() for n in names}
        assert len(contents) == 1, (round_, contents)
