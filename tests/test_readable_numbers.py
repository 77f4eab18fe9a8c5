"""Text outputs read like a person wrote them: capacity fits in 100 columns and never reports
the end of its ladder as a capacity; collective tables give bytes on the wire per GPU."""

from zsim.cli import main
from zsim.decide.capacity import capacity
from zsim.decide.text import TEXT_COLUMNS, format_capacity
from zsim.output import format_count, format_seconds, time_label


def test_human_units():
    assert format_seconds(5.428978e-03) == "5.43 ms" and format_seconds(1.296) == "1.30 s"
    assert format_seconds(4.3e-05) == "43.00 µs" and format_seconds(0.176) == "176 ms"
    assert format_count(200_000_000) == "200M" and format_count(50_000_000) == "50M"


def test_breakdown_labels_spell_links_and_copies():
    assert time_label("exposed_comm_nvlink_s") == "exposed comm, NVLink"
    assert time_label("exposed_comm_ib_s") == "exposed comm, InfiniBand"
    assert time_label("exposed_offload_d2h_pageable_s") == "exposed offload copy, device to pageable host memory"
    assert time_label("exposed_comm_xgmi_s") == "exposed comm, XGMI"   # a link type without a spelling


def test_capacity_text_is_100_columns_and_honest_at_the_ladder_end():
    res = capacity("dgx-a100")
    text = format_capacity(res)
    assert max(len(line) for line in text.splitlines()) <= TEXT_COLUMNS
    ends = [r for r in res.rows if r.at_ladder_end]
    for r in ends:
        assert r.capacity_text().startswith("\u2265 ") and "largest tried" in r.capacity_text()
    if ends:
        assert "\u2265 N: N is the largest model tried" in text
    assert all(not r.at_ladder_end or r.next_larger is None for r in res.rows)


def test_collective_tables_show_wire_bytes(capsys):
    assert main(["collective", "--op", "all_reduce", "--bytes", "1GiB", "--topo", "dgx-h100", "--gpus", "8"]) == 0
    out = capsys.readouterr().out
    assert "on the wire per GPU  1.75 GiB" in out and " ms" in out and "e-0" not in out
    assert main(["predict", "--model", "tinyllama-1.1b", "--seq", "512", "--stage", "3", "--no-output"]) == 0
    out = capsys.readouterr().out
    assert "logged" in out and "on the wire" in out
