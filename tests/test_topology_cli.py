"""`zsim topo list|show|draw` on the command line."""

from __future__ import annotations

import json

from zsim.cli import main


def test_list(capsys):
    assert main(["topo", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("dgx-a100", "dgx-a100-40gb", "dgx-h100", "hgx-h200", "pcie-8gpu"):
        assert name in out
    assert main(["topo", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} >= {"dgx-h100", "pcie-8gpu"}


def test_show_json(capsys):
    assert main(["topo", "show", "dgx-h100", "--nodes", "4", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["gpus_per_node"] == 8 and data["hardware"] == "h100-sxm"
    assert data["fabric"]["kind"] == "rail_optimized"
    assert data["cluster"]["world_size"] == 32


def test_show_text(capsys):
    assert main(["topo", "show", "pcie-8gpu"]) == 0
    out = capsys.readouterr().out
    assert "no NVLink" in out or "none" in out
    assert "fat_tree" in out


def test_draw_writes_png(tmp_path, capsys):
    out = tmp_path / "t.png"
    assert main(["topo", "draw", "dgx-a100", "--nodes", "2", "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["t.png"]  # no temporary left behind


def test_errors_exit_2(tmp_path, capsys):
    assert main(["topo", "show", "nope"]) == 2
    assert "unknown topology" in capsys.readouterr().err
    assert main(["topo", "show", "dgx-h100", "--nodes", "0"]) == 2
    assert main(["topo", "draw", "dgx-h100", "-o", str(tmp_path / "x.txt")]) == 2
    assert main(["topo", "draw", "dgx-h100", "--nodes", "64", "-o", str(tmp_path / "x.png")]) == 2
    assert not list(tmp_path.iterdir())
