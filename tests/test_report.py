"""`zsim report`: a self-contained HTML page and a Markdown twin whose figures exist, whose
recommendation names the planned winner, and which shows Memory_ZeRO3 vs Memory_baseline / N."""

import base64
import functools
import json
import tempfile
import re
from pathlib import Path

import pytest

from zsim.cli import main

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


@functools.lru_cache(maxsize=1)
def built_report():
    """One small report for this file and test_report_browser.py (built once per session)."""
    from zsim.report import build_report
    return build_report("tinyllama-1.1b", "dgx-a100", Path(tempfile.mkdtemp(prefix="zsim-report-")),
                        global_batch=64, seq=1024, scaling_nodes=(1, 2, 4))


@pytest.fixture(scope="module")
def report():
    return built_report()


def test_html_is_self_contained_with_decodable_figures(report):
    text = report.html.read_text(encoding="utf-8")
    assert "<script" not in text
    assert not re.search(r'(src|href)="(?!data:)', text)          # nothing fetched from anywhere
    srcs = re.findall(r'<img src="data:image/png;base64,([^"]+)"', text)
    assert len(srcs) == 7
    for src in srcs:
        png = base64.b64decode(src, validate=True)
        assert png.startswith(PNG) and len(png) > 2000


def test_markdown_twin_links_figures_beside_it(report):
    md = report.markdown.read_text(encoding="utf-8")
    links = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", md)
    assert len(links) == 7
    for link in links:
        assert (report.markdown.parent / link).read_bytes().startswith(PNG)
    for heading in ("Recommendation", "Memory per stage", "Step time per stage", "Timeline of one step",
                    "GPU memory over one step", "Scaling with node count", "Throughput vs micro-batch", "Memory_ZeRO3 vs Memory_baseline / N"):
        assert f"## {heading}" in md


def test_recommendation_names_the_plan_winner(report):
    best = report.data.plan.best
    c = best.candidate
    md = report.markdown.read_text(encoding="utf-8")
    assert f"Use ZeRO-{c.stage}" in md and f"micro-batch {c.micro_batch} x grad-accum {c.grad_accum}" in md
    assert "Why: it has the highest predicted throughput" in md
    written = json.loads(report.ds_config.read_text())
    assert written == report.data.plan.ds_config_auto and "auto" not in json.dumps(written)


def test_memory_zero3_vs_baseline_over_n(report):
    # Model states shard as the guides say (ZeRO-3 ~ baseline / N); the peak does not,
    # because activations are per GPU whatever N is.
    for m in report.data.memory_vs_n:
        assert m.zero3_states_bytes == pytest.approx(m.baseline_states_over_n, rel=0.15)
        assert m.zero3_peak_bytes > 1.5 * m.baseline_peak_over_n
    peaks = [m.zero3_states_bytes for m in report.data.memory_vs_n]
    assert peaks == sorted(peaks, reverse=True)


def test_checked_in_example_is_small_and_complete():
    folders = [p.parent for p in (ROOT / "reports").glob("*/report.html")]
    assert folders
    for folder in folders:
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        assert size < 2 * 2**20, (folder, size)
        assert (folder / "report.md").exists() and (folder / "deepspeed_config_auto.json").exists()


def test_cli_report_bad_model_exits_2(tmp_path, capsys):
    assert main(["report", "--model", "no-such-model", "--output", str(tmp_path)]) == 2
    assert "unknown model" in capsys.readouterr().err


# ---- a report for one tensor/pipeline layout: every number is `zsim predict`'s ----------------

PLACE = ["--model", "tinyllama-1.1b", "--topo", "dgx-h100", "--seq", "1024"]
LAYOUTS = {"tp2": ("--tp", "2"), "pp2": ("--pp", "2")}


def _run(argv: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of one `zsim` command line in this process."""
    import contextlib
    import io
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@functools.lru_cache(maxsize=None)
def layout_report(name: str) -> tuple[dict, str]:
    """(report --json, report.md) of one layout (built once per session)."""
    folder = Path(tempfile.mkdtemp(prefix=f"zsim-report-{name}-"))
    code, out, err = _run(["report", *PLACE, *LAYOUTS[name], "--global-batch", "64", "-q", "--json",
                           "--output", str(folder)])
    assert code == 0, err
    return json.loads(out), (folder / "report.md").read_text(encoding="utf-8")


def _predict(argv: list[str]) -> dict:
    code, out, err = _run(["predict", *argv, "--json", "--no-output"])
    assert code == 0, err
    return json.loads(out)


def _predict_line(md: str) -> list[str]:
    """The arguments of the `zsim predict` command the report names for its winner."""
    return re.search(r"^zsim predict (.*)$", md, re.M).group(1).split()


def _stage_rows(md: str) -> dict[int, list[str]]:
    section = md.split("## Memory per stage")[1].split("## Step time per stage")[0]
    rows = re.findall(r"^\| ZeRO-(\d) \| (.*) \|$", section, re.M)
    return {int(s): [c.strip() for c in cells.split("|")] for s, cells in rows}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_layout_report_winner_is_predicts_prediction(name):
    summary, md = layout_report(name)
    argv = _predict_line(md)
    flag, value = LAYOUTS[name]
    assert argv[argv.index(flag) + 1] == value
    pred = _predict(argv)
    for key in ("step_time_s", "tokens_per_s", "peak_memory_bytes"):
        assert summary[key] == pred[key], key
    par = pred["parallel"]
    assert summary["parallel"] == {k: par[k] for k in ("tp", "pp", "sp", "dp", "sequence_parallel")}
    # the layout in the header, as predict counts it
    assert f"tp {par['tp']} x sp {par['sp']} x dp {par['dp']} x pp {par['pp']}" in md.splitlines()[0]
    assert "ZeRO partitions over " + str(par["zero_group_size"]) in md


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_layout_report_stage_rows_are_predicts(name):
    """Each ZeRO stage's row is `zsim predict` with the layout, the winner's batch and --stage;
    a stage predict refuses is refused in the report with predict's line."""
    from zsim.output import format_bytes
    _, md = layout_report(name)
    argv = _predict_line(md)
    argv = argv[:argv.index("--stage")] + argv[argv.index("--stage") + 2:]
    argv = [a for i, a in enumerate(argv) if a != "--offload-optimizer" and argv[i - 1] != "--offload-optimizer"]
    rows = _stage_rows(md)
    assert sorted(rows) == [0, 1, 2, 3]
    for stage, cells in rows.items():
        if cells[0] == "not run":
            code, _, err = _run(["predict", *argv, "--stage", str(stage), "--no-output"])
            assert code == 2
            assert f"ZeRO-{stage} is not predicted: {err.strip().removeprefix('zsim: error: ')}" in md
            continue
        p = _predict(argv + ["--stage", str(stage)])
        assert cells == ["yes" if p["fits"] else "no", format_bytes(p["peak_memory_bytes"]),
                         f"{p['step_time_s']:.3f} s", f"{p['tokens_per_s']:,.0f}", f"{p['exposed_comm_s']:.3f} s"]
    if name == "pp2":
        assert [rows[2][0], rows[3][0]] == ["not run", "not run"]     # DeepSpeed's PipelineEngine


def test_pipeline_report_shows_predicts_stage_table_and_says_what_it_lacks():
    _, md = layout_report("pp2")
    code, out, _ = _run(["predict", *_predict_line(md), "--no-output"])
    assert code == 0
    block = md.split("## Pipeline stages and the split's communication")[1].split("```")[1].strip("\n")
    assert "stage  layers" in block
    for line in block.splitlines():
        assert line in out.splitlines()
    timeline = md.split("## Timeline of one step")[1].split("## ")[0]
    assert "Not produced for this layout" in timeline and "![" not in timeline
    assert len(re.findall(r"!\[", md)) == 2          # memory and time per stage only


def test_layout_report_compares_with_the_joint_search():
    """The comparison is `zsim plan --search-3d` at the report's global batch and sequence."""
    summary, md = layout_report("tp2")
    code, out, err = _run(["plan", *PLACE, "--search-3d", "--global-batch", "64", "--json", "--no-output", "-q"])
    assert code == 0, err
    ranked = json.loads(out)["ranked"]
    assert summary["joint_search_recommended"] == ranked[0]["label"]
    section = md.split("## ZeRO data parallelism against 3D layouts")[1].split("\n## ")[0]
    rows = re.findall(r"^\| (\d+) \| [^|]+ \| ([^|]+) \| ([^|]+) \|", section, re.M)
    assert [(int(k), label.strip(), step.strip()) for k, label, step in rows] == [
        (k, r["label"], f"{r['step_time_s']:.3f} s") for k, r in enumerate(ranked, 1)]
    assert "recommended" in section.split("\n| 1 |")[1].splitlines()[0]


def test_plain_report_has_the_comparison(report):
    md = report.markdown.read_text(encoding="utf-8")
    comp = report.data.comparison
    assert comp is not None and comp.plan is not None
    section = md.split("## ZeRO data parallelism against 3D layouts")[1].split("\n## ")[0]
    assert f"global batch {report.data.best.train_batch} sequences of {report.data.plan.seq_len} tokens" in section
    assert "The joint search recommends " + comp.rows[0].candidate.label() in section
    # a data-parallel configuration is always shown beside the 3D ones
    assert any(f.candidate.ask.data_only for f in comp.rows)


def test_report_ep_predicts_every_stage_as_predict_ep(tmp_path):
    """--ep reaches every prediction of the report (as `zsim predict --ep`); ZeRO-3, which
    predict refuses with DeepSpeed-MoE layers, is named with predict's line."""
    from validation.cpu_truth.expert_cases import MIXTRAL_4E
    from zsim.output import format_bytes
    cfg = tmp_path / "mixtral-4e.json"
    cfg.write_text(json.dumps(MIXTRAL_4E))
    where = ["--model", str(cfg), "--gpus", "4", "--seq", "256"]
    code, _, err = _run(["report", *where, "--ep", "2", "--global-batch", "16", "-q", "--output", str(tmp_path / "r")])
    assert code == 0, err
    md = (tmp_path / "r" / "report.md").read_text(encoding="utf-8")
    micro, accum = re.search(r"micro-batch (\d+) x grad-accum (\d+)", md).groups()
    rows = _stage_rows(md)
    for stage in (0, 1, 2):
        argv = [*where, "--ep", "2", "--stage", str(stage), "--micro-batch", micro, "--grad-accum", accum]
        p = _predict(argv)
        assert rows[stage][:4] == ["yes" if p["fits"] else "no", format_bytes(p["peak_memory_bytes"]),
                                   f"{p['step_time_s']:.3f} s", f"{p['tokens_per_s']:,.0f}"]
    plain = _predict([*where, "--stage", "2", "--micro-batch", micro, "--grad-accum", accum])
    assert rows[2][1:3] != [format_bytes(plain["peak_memory_bytes"]), f"{plain['step_time_s']:.3f} s"]
    code, _, err = _run(["predict", *where, "--ep", "2", "--stage", "3", "--no-output"])
    assert code == 2 and f"ZeRO-3 is not predicted: {err.strip().removeprefix('zsim: error: ')}" in md
