"""CLI conventions every reporting command keeps: -o/--output FILE writes the result
atomically instead of stdout, --json prints one object, progress goes to stderr (a line
every few seconds when stderr is not a terminal) and --quiet silences it."""

from __future__ import annotations

import io
import json

from zsim.cli import main
from zsim.decide.progress import ProgressBar


def test_output_file_instead_of_stdout(tmp_path, capsys):
    out = tmp_path / "capacity.json"
    assert main(["capacity", "--topo", "hgx-h200", "--gpus", "1", "--stage", "3", "--json", "-o", str(out)]) == 0
    assert capsys.readouterr().out == ""
    assert json.loads(out.read_text())["rows"]


def test_sweep_and_report_print_json(tmp_path, capsys):
    assert main(["sweep", "--model", "tinyllama-1.1b", "--stage", "1,3", "--output", str(tmp_path / "s"),
                 "--json", "-q"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["rows"]) == 2 and all(f.endswith((".csv", ".json")) for f in data["files"])


def test_progress_lines_when_not_a_terminal():
    stream = io.StringIO()           # not a TTY: plain lines, not redraws
    bar = ProgressBar(stream=stream, what="zsim plan", line_every_s=0.0)
    for i in range(3):
        bar(i, 3, f"candidate {i}")
    bar(3, 3, "done")
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("zsim plan: 0/3") and lines[-1].startswith("zsim plan: 3/3")
    assert "\r" not in stream.getvalue()


def test_short_work_writes_no_progress_lines():
    stream = io.StringIO()
    bar = ProgressBar(stream=stream, what="zsim plan", line_every_s=3600)
    for i in range(100):
        bar(i, 100, f"candidate {i}")
    bar(100, 100, "done")
    bar.close()
    assert stream.getvalue() == ""


def test_quiet_writes_nothing():
    stream = io.StringIO()
    bar = ProgressBar(stream=stream, enabled=False)
    bar(1, 2, "x")
    bar.close()
    assert stream.getvalue() == ""


def test_plan_reports_progress_on_stderr_unless_quiet(tmp_path, capsys):
    argv = ["plan", "--model", "tinyllama-1.1b", "--topo", "hgx-h200", "--gpus", "1", "--stage", "0",
            "--micro-batch", "4", "--global-batch", "16", "--no-output"]
    assert main(argv + ["--progress"]) == 0      # the bar, even though stderr is captured
    assert "/" in capsys.readouterr().err
    assert main(argv + ["--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_plan_without_a_valid_batch_shape_says_why(capsys):
    """A pinned micro-batch whose grad-accum would exceed DeepSpeed's bound is no candidate;
    when nothing is left, one line says which batch identity cannot be met."""
    code = main(["plan", "--model", "tinyllama-1.1b", "--topo", "hgx-h200", "--gpus", "1", "--stage", "0",
                 "--micro-batch", "1", "--global-batch", "512", "--no-output", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "grad-accum at most" in err[0]


def test_progress_writes_one_line_when_a_phase_starts():
    """Not a TTY: besides the periodic line, each new phase ("phase: detail") gets a line once
    the work has run past the first interval; candidates within a phase get none."""
    stream = io.StringIO()
    bar = ProgressBar(stream=stream, what="zsim plan", line_every_s=0.0)
    bar._last_line = 0.0                  # one periodic line already written
    bar.line_every_s = 3600               # no further periodic lines
    for i in range(5):
        bar(i, 10, f"structures: candidate {i}")
    bar(5, 10, "buckets: refining")
    bar(6, 10, "buckets: refining")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "structures: candidate 0" in lines[0] and "buckets:" in lines[1], lines
