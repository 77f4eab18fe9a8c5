"""zsim diagnose: measured vs predicted per phase/stream, the combined trace, bad input."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from zsim.cli import main
from zsim.diagnose.cells import interval_union_s

DATA = Path(__file__).parent / "data" / "runs" / "cpu-z2-ga2-traced"
RESULTS = Path(__file__).resolve().parents[1] / "validation" / "results"


def raw_events() -> list[dict]:
    return json.loads(gzip.decompress((DATA / "trace.json.gz").read_bytes()))["traceEvents"]


def label_durations_s(prefix: str) -> dict[int, float]:
    """Micro-step -> duration of the zsim.<prefix>.<m> ranges, straight from the raw trace."""
    return {int(e["name"].rsplit(".", 1)[1]): e["dur"] * 1e-6 for e in raw_events()
            if e.get("cat") == "user_annotation" and e["name"].startswith(f"zsim.{prefix}.")}


def run_json(capsys, *args) -> dict:
    assert main(["diagnose", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def row(rows: list[dict], phase: str, micro=None, stream="wall") -> dict:
    return next(r for r in rows if (r["phase"], r["micro_step"], r["stream"]) == (phase, micro, stream))


@pytest.fixture(scope="module")
def traced(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("diag") / "combined.json"
    import io, contextlib
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["diagnose", str(DATA), "--json", "--trace", str(out)]) == 0
    return {"report": json.loads(buf.getvalue()), "trace": json.loads(out.read_text())}


def test_phase_walls_match_the_trace_labels(traced):
    rep = traced["report"]
    assert rep["has_trace"] and rep["measured_source"] == "trace"
    for label, phase in (("forward", "forward"), ("backward", "backward"), ("engine_step", "step")):
        durs = label_durations_s(label)
        assert row(rep["phases"], phase)["measured_s"] == pytest.approx(sum(durs.values()), rel=1e-9)
        for m, d in durs.items():
            assert row(rep["micro_steps"], phase, m)["measured_s"] == pytest.approx(d, rel=1e-9)
    step = next(e for e in raw_events() if e.get("name") == "zsim.step")
    total = row(rep["phases"], "total")
    assert total["measured_s"] == pytest.approx(step["dur"] * 1e-6)
    assert total["predicted_s"] > 0 and total["reference_s"] == pytest.approx(0.10256233900003053)


def test_streams_host_comm_and_ops(traced):
    rep, ev = traced["report"], raw_events()
    fwd = label_durations_s("forward")
    # host_wait in forward: aten::item calls on the main thread inside the forward ranges.
    spans = [(e["ts"], e["ts"] + e["dur"]) for e in ev if e.get("cat") == "user_annotation"
             and e["name"].startswith("zsim.forward.")]
    items = [(max(e["ts"], lo), min(e["ts"] + e["dur"], hi)) for e in ev if e.get("name") == "aten::item"
             for lo, hi in spans]
    wait = interval_union_s(items) * 1e-6
    assert row(rep["streams"], "forward", stream="host_wait")["measured_s"] == pytest.approx(wait, abs=1e-8)
    busy = row(rep["streams"], "forward", stream="host_busy")["measured_s"]
    assert busy + wait == pytest.approx(sum(fwd.values()), rel=1e-6)
    # gloo all-reduces run on gloo's threads; each lands in the phase it started in.
    gloo = sum(e["dur"] for e in ev if e.get("name") == "gloo:all_reduce") * 1e-6
    comm = sum(r["measured_s"] for r in rep["streams"] if r["stream"] == "comm")
    assert comm == pytest.approx(gloo, rel=1e-9)
    step_host = row(rep["streams"], "step", stream="host_busy")
    assert step_host["measured_ops"][0]["name"] == "ds.DeepSpeedZeroOptimizer.step"
    gaps = [abs(r["gap_s"]) for r in rep["streams"]]
    assert gaps == sorted(gaps, reverse=True)
    assert any(r["predicted_ops"] for r in rep["streams"])
    assert any("CPU-only trace" in n for n in rep["notes"])


def test_combined_trace_has_both_groups(traced):
    events = traced["trace"]["traceEvents"]
    names = {e["pid"]: e["args"]["name"] for e in events if e.get("name") == "process_name"}
    assert sorted(names.values()) == ["measured", "zsim"]
    tracks = {(e["pid"], e["args"]["name"]) for e in events if e.get("name") == "thread_name"}
    for pid, label in names.items():
        assert (pid, "phases") in tracks and (pid, "host") in tracks
    by_pid = {pid: [e for e in events if e.get("ph") == "X" and e["pid"] == pid] for pid in names}
    for spans in by_pid.values():
        assert spans and min(e["ts"] for e in spans) == 0.0   # aligned at the step start
        assert all(e["dur"] >= 0 for e in spans)


def test_text_output(capsys):
    assert main(["diagnose", str(DATA)]) == 0
    out = capsys.readouterr().out
    assert "per phase and stream, largest gap first" in out and "measured:" in out and "zsim:" in out
    assert "forward" in out and "host_busy" in out


def test_folder_without_trace(tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(DATA, folder)
    (folder / "trace.json.gz").unlink()
    rep = run_json(capsys, folder)
    assert not rep["has_trace"] and rep["streams"] == []
    assert row(rep["phases"], "forward")["measured_s"] == pytest.approx(0.03261222500003669)
    assert row(rep["micro_steps"], "backward", 1)["measured_s"] is not None
    assert any("no trace" in n for n in rep["notes"])
    assert main(["diagnose", str(folder)]) == 0
    assert "no trace" in capsys.readouterr().out


@pytest.mark.skipif(not any(RESULTS.rglob("summary.json")), reason="no committed results")
def test_committed_result_folder(capsys):
    folder = sorted(RESULTS.rglob("summary.json"))[0].parent
    rep = run_json(capsys, folder)
    assert row(rep["phases"], "total")["measured_s"] > 0 and row(rep["phases"], "total")["predicted_s"] > 0


def _expect_error(capsys, *args) -> str:
    assert main(["diagnose", *map(str, args)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zsim: error:") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_bad_inputs(tmp_path, capsys):
    _expect_error(capsys, tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    _expect_error(capsys, empty)
    broken = tmp_path / "broken"
    shutil.copytree(DATA, broken)
    (broken / "trace.json.gz").write_bytes(b"\x1f\x8bnot gzip")
    assert "trace" in _expect_error(capsys, broken)
    unlabelled = tmp_path / "unlabelled"
    shutil.copytree(DATA, unlabelled)
    (unlabelled / "trace.json.gz").write_bytes(gzip.compress(b'{"traceEvents": []}'))
    assert "zsim.step" in _expect_error(capsys, unlabelled)
    bad_summary = tmp_path / "bad_summary"
    shutil.copytree(DATA, bad_summary)
    (bad_summary / "summary.json").write_text("[1, 2")
    _expect_error(capsys, bad_summary)
    _expect_error(capsys, DATA, "--trace", tmp_path)   # a folder is not a trace file


def _x(name, cat, ts, dur, tid=1, pid=1, **args):
    return {"ph": "X", "name": name, "cat": cat, "ts": ts, "dur": dur, "pid": pid, "tid": tid, "args": args}


def test_gpu_trace_attributes_kernels_by_launch(tmp_path):
    """Kernels belong to the phase that launched them, even when they run in the next one."""
    from zsim.diagnose.measured import measure_trace
    from zsim.diagnose.trace import load_trace

    ev = [_x("zsim.step", "user_annotation", 1000, 100), _x("zsim.forward.0", "user_annotation", 1000, 30),
          _x("zsim.backward.0", "user_annotation", 1030, 40), _x("zsim.engine_step.0", "user_annotation", 1070, 30),
          _x("cudaLaunchKernel", "cuda_runtime", 1010, 2, correlation=1),
          _x("gemm", "kernel", 1025, 20, pid=0, tid=7, correlation=1, stream=7),     # runs into backward
          _x("cudaLaunchKernel", "cuda_runtime", 1040, 2, tid=2, correlation=2),     # autograd thread
          _x("ncclDevKernel_AllReduce", "kernel", 1045, 10, pid=0, tid=9, correlation=2, stream=9),
          _x("cudaMemcpyAsync", "cuda_runtime", 1075, 1, correlation=3),
          _x("Memcpy DtoH (Device -> Pinned)", "gpu_memcpy", 1080, 4, pid=0, tid=7, correlation=3, stream=7),
          _x("aten::item", "cpu_op", 1076, 10), _x("cudaStreamSynchronize", "cuda_runtime", 1078, 7)]
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"traceEvents": ev}))
    side = measure_trace(load_trace(path))
    cells = {(c.phase, c.stream): c.time_s for c in side.cells}
    assert cells[("forward", "compute")] == pytest.approx(20e-6)
    assert cells[("backward", "comm")] == pytest.approx(10e-6)
    assert cells[("step", "copy_d2h")] == pytest.approx(4e-6)
    assert cells[("step", "host_wait")] == pytest.approx(10e-6)
    assert cells[("step", "host_busy")] == pytest.approx(20e-6)
    walls = {(w.phase, w.micro_step): w.wall_s for w in side.windows}
    # forward's CUDA-event boundary waits for its gemm (ends at 1045): 45 us; backward from there.
    assert walls[("forward", 0)] == pytest.approx(45e-6) and walls[("backward", 0)] == pytest.approx(25e-6)
    assert sum(walls.values()) == pytest.approx(100e-6)
