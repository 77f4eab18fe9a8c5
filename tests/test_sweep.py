"""`zsim sweep`: grids from flags or YAML, one row per configuration (fits, does not fit and
invalid rows all kept), CSV and JSON written."""

import csv
import json

import pytest

from zsim.cli import main
from zsim.decide.sweep import configurations, load_grid_file, parse_list, sweep
from zsim.errors import ZsimInputError


def test_flags_grid_writes_one_row_per_configuration(tmp_path, capsys):
    rc = main(["sweep", "--model", "llama-2-7b", "--topo", "dgx-a100", "--stage", "0,1,2",
               "--micro-batch", "1,8", "--offload-param", "none,cpu", "--seq", "1024", "--output", str(tmp_path)])
    assert rc == 0
    rows = list(csv.DictReader((tmp_path / "sweep.csv").open()))
    assert len(rows) == 3 * 2 * 2
    data = json.loads((tmp_path / "sweep.json").read_text())
    assert len(data["rows"]) == 12 and data["axes"] == ["model", "topo", "stage", "offload_param", "micro_batch", "seq"]
    status = {(r["stage"], r["offload_param"], r["micro_batch"]): r for r in rows}
    # offload_param below stage 3: DeepSpeed rejects it -> an invalid row with the reason.
    assert status[("1", "cpu", "1")]["status"] == "invalid"
    assert "requires ZeRO stage 3" in status[("1", "cpu", "1")]["reason"]
    # Stage 0 keeps 16 bytes per parameter on every GPU: 7B does not fit on 80 GB.
    s0 = status[("0", "none", "1")]
    assert s0["status"] == "does_not_fit" and s0["largest_memory_term"] == "optimizer_states"
    assert int(s0["overflow_bytes"]) == int(s0["peak_memory_bytes"]) - int(s0["gpu_memory_bytes"]) > 0
    assert status[("2", "none", "1")]["status"] == "fits"
    assert "sweep: 12 configurations (" in capsys.readouterr().out


def test_yaml_grid_and_flag_override(tmp_path):
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text("model: llama-2-7b\ntopo: dgx-a100\ngrid:\n  stage: [1, 2]\n  micro_batch: [1, 2]\n"
                         "  activation_checkpointing: [off, on]\n")
    grid = load_grid_file(grid_file)
    assert grid["activation_checkpointing"] == [False, True]
    grid["stage"] = parse_list("stage", "2")
    assert len(configurations(grid)) == 1 * 2 * 2
    result = sweep(grid)
    assert len(result.rows) == 4 and all(r["status"] == "fits" for r in result.rows)
    # Checkpointing trades time for memory, configuration by configuration.
    by = {(r["micro_batch"], r["activation_checkpointing"]): r for r in result.rows}
    assert by[(2, True)]["peak_memory_bytes"] < by[(2, False)]["peak_memory_bytes"]
    assert by[(2, True)]["step_time_s"] > by[(2, False)]["step_time_s"]


@pytest.mark.parametrize("text, message", [
    ("grid:\n  colour: [red]\n", "unknown axis 'colour'"),
    ("grid:\n  micro_batch: [0]\n", "out of range"),
    ("grid:\n  activation_checkpointing: [maybe]\n", "must be on/off"),
    ("grid: [1, 2\n", "sweep grid"),
])
def test_bad_grids_are_input_errors(tmp_path, text, message):
    f = tmp_path / "g.yaml"
    f.write_text(text)
    with pytest.raises(ZsimInputError, match=message):
        load_grid_file(f)


def test_stage_deepspeed_rejects_is_an_invalid_row():
    result = sweep({"model": ["llama-2-7b"], "topo": ["dgx-a100"], "stage": [2, 5]})
    assert [r["status"] for r in result.rows] == ["fits", "invalid"]
    assert "stage" in result.rows[1]["reason"]


def test_cli_bad_value_exits_2(capsys):
    assert main(["sweep", "--micro-batch", "two"]) == 2
    assert "micro_batch values must be integers" in capsys.readouterr().err


def test_sweep_jobs_gives_the_rows_of_one_process(tmp_path):
    """--jobs N predicts in N worker processes (concurrent.futures); rows and their order
    equal the one-process sweep's."""
    grid = {"model": ["tinyllama-1.1b"], "topo": ["dgx-a100"], "stage": [0, 1, 2, 3], "micro_batch": [1, 2]}
    one = sweep(grid)
    two = sweep(grid, jobs=2)
    assert two.rows == one.rows and len(two.rows) == 8
    assert main(["sweep", "--model", "tinyllama-1.1b", "--topo", "dgx-a100", "--stage", "1,2", "--jobs", "2",
                 "-o", str(tmp_path), "-q"]) == 0
    with pytest.raises(SystemExit) as exc:       # argparse's own usage error
        main(["sweep", "--jobs", "0"])
    assert exc.value.code == 2
    with pytest.raises(ZsimInputError, match="jobs"):
        sweep(grid, jobs=0)


def test_layout_axes_sweep_what_predict_tp_pp_predicts(tmp_path, capsys):
    """tp/pp/sp are grid axes: each row is `zsim predict --tp/--pp` of that configuration,
    and a layout the cluster cannot hold is an invalid row with predict's reason."""
    grid = {"model": ["llama-2-7b"], "topo": ["dgx-h100"], "stage": [1], "micro_batch": [1],
            "grad_accum": [4], "tp": [1, 2, 3], "pp": [1, 2]}
    rows = {(r["tp"], r["pp"]): r for r in sweep(grid).rows}
    assert len(rows) == 6
    for tp, pp in ((1, 1), (2, 1), (2, 2)):
        assert main(["predict", "--model", "llama-2-7b", "--topo", "dgx-h100", "--stage", "1",
                     "--micro-batch", "1", "--grad-accum", "4", "--tp", str(tp), "--pp", str(pp),
                     "--json", "--no-output"]) == 0
        want = json.loads(capsys.readouterr().out)
        got = rows[(tp, pp)]
        assert got["status"] == "fits"
        assert got["step_time_s"] == want["step_time_s"]
        assert got["peak_memory_bytes"] == want["peak_memory_bytes"]
    assert rows[(3, 1)]["status"] == "invalid" and "divisible" in rows[(3, 1)]["reason"]
    assert main(["sweep", "--model", "tinyllama-1.1b", "--topo", "dgx-h100", "--pp", "1,2",
                 "--output", str(tmp_path / "s")]) == 0
    header = (tmp_path / "s" / "sweep.csv").read_text().splitlines()[0].split(",")
    assert {"tp", "pp", "sp"} <= set(header)


def test_ep_axis_sweeps_what_predict_ep_predicts(capsys):
    """ep is a grid axis (DeepSpeed-MoE expert parallelism); combined with tp it is an invalid
    row, as predict refuses it."""
    grid = {"model": ["mistralai/Mixtral-8x7B-v0.1"], "topo": ["dgx-h100"], "stage": [2],
            "micro_batch": [1], "seq": [1024], "ep": [2, 4]}
    rows = {r["ep"]: r for r in sweep(grid).rows}
    for ep in (2, 4):
        assert main(["predict", "--model", "mistralai/Mixtral-8x7B-v0.1", "--topo", "dgx-h100",
                     "--stage", "2", "--micro-batch", "1", "--seq", "1024", "--ep", str(ep),
                     "--json", "--no-output"]) == 0
        want = json.loads(capsys.readouterr().out)
        assert rows[ep]["step_time_s"] == want["step_time_s"]
        assert rows[ep]["peak_memory_bytes"] == want["peak_memory_bytes"]
    mixed = sweep({**grid, "ep": [2], "tp": [2]}).rows[0]
    assert mixed["status"] == "invalid" and "not modelled" in mixed["reason"]
