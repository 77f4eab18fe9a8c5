"""``--tp/--pp/--sp`` on the command line: predict answers them (tests/test_parallel_predict.py),
report builds its report for them and refuses what predict refuses (sweep sweeps them); ``zsim topo show`` prints (and ``--json`` lists) the rank mapping; without the flags
nothing changes."""

from __future__ import annotations

import json

import pytest

from zsim.cli import main


@pytest.mark.parametrize("flags", [["--tp", "2"], ["--pp", "4"], ["--sp", "2"], ["--tp", "2", "--pp", "2"]])
def test_predict_answers_model_parallel_degrees(flags, capsys):
    assert main(["predict", "--no-output", "--json", *flags]) == 0
    par = json.loads(capsys.readouterr().out)["parallel"]
    for name, value in zip(flags[::2], flags[1::2]):
        assert par[name.lstrip("-")] == int(value)


def test_predict_accepts_degree_one(capsys):
    assert main(["predict", "--no-output", "--tp", "1", "--pp", "1", "--sp", "1", "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert main(["predict", "--no-output", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == one


def test_topo_show_prints_the_rank_mapping(capsys):
    assert main(["topo", "show", "dgx-h100", "--nodes", "2", "--tp", "2", "--pp", "4"]) == 0
    out = capsys.readouterr().out
    assert "tp 2 x sp 1 x dp 2 x pp 4 = 16 ranks" in out
    assert "the first [0, 4, 8, 12]" in out          # Megatron's first pipeline group
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == "rank node gpu tp sp dp pp".split())
    rows = [line.split() for line in lines[header + 1:]]
    assert len(rows) == 16
    assert rows[13] == ["13", "1", "5", "1", "0", "0", "3"]   # rank node gpu tp sp dp pp


def test_topo_show_json_lists_every_rank(capsys):
    assert main(["topo", "show", "dgx-h100", "--nodes", "4", "--tp", "8", "--pp", "2", "--json"]) == 0
    par = json.loads(capsys.readouterr().out)["parallel"]
    assert par["degrees"] == {"tp": 8, "sp": 1, "dp": 2, "pp": 2}
    assert len(par["ranks"]) == 32
    groups = {g["label"]: g for g in par["groups"]}
    assert groups["tensor"]["ranks_per_node"] == 8 and groups["tensor"]["nodes"] == 1
    assert groups["pipeline"]["first"] == [0, 16]


def test_topo_show_without_flags_is_unchanged(capsys):
    assert main(["topo", "show", "dgx-h100", "--json"]) == 0
    assert "parallel" not in json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("flags,match", [(["--tp", "3"], "not divisible"),
                                         (["--tp", "16", "--nodes", "2"], "NVLink"),
                                         (["--sp", "2", "--tp", "2"], "Ulysses")])
def test_topo_show_refuses_bad_layouts(flags, match, capsys):
    assert main(["topo", "show", "dgx-h100", *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and match in err


@pytest.mark.parametrize("flags", [["--tp", "3"], ["--sp", "2", "--tp", "2"], ["--sequence-parallel"],
                                   ["--ep", "2", "--tp", "2"], ["--ep", "2"]])
def test_report_refuses_what_predict_refuses(flags, capsys, tmp_path):
    """report takes --tp/--pp/--sp/--sequence-parallel/--ep as predict does (the layout report:
    tests/test_report.py) and refuses what predict refuses with predict's line, exit 2."""
    place = ["--model", "tinyllama-1.1b", "--topo", "dgx-h100"]
    assert main(["predict", *place, *flags, "--no-output"]) == 2
    predicted = capsys.readouterr().err.strip().splitlines()
    assert main(["report", *place, *flags, "-q", "--output", str(tmp_path / "r")]) == 2
    reported = capsys.readouterr().err.strip().splitlines()
    assert len(reported) == 1 and reported == predicted
    assert not (tmp_path / "r").exists()
