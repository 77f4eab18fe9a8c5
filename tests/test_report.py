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
