"""Bounded inputs: huge, non-finite or mis-shaped values give one stderr line and exit 2, fast.

Covers the limits of zsim.limits (batch, sequence, model shapes, DeepSpeed integers, profile
and topology numbers by unit, topology sizes), the no-NaN/inf guard on results, bounded
and regular-file-only reads, and the calibrate/validate input shapes.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zsim import limits
from zsim.errors import ZsimInputError
from zsim.hardware import PROFILE_DIR, load_profile
from zsim.inputs import read_input_bytes
from zsim.io import dumps_json
from zsim.network.topology import TOPOLOGY_DIR

from test_cli_errors import _run as run  # one CLI runner for the error tests

SETTINGS = dict(deadline=None, database=None, max_examples=25,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
TINY = {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 256, "vocab_size": 1000, "max_position_embeddings": 512}


def one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zsim: error:"), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle.lower() in lines[0].lower(), (needle, lines[0])


def _edited_yaml(src: Path, dst: Path, section: str, key: str, value) -> Path:
    data = yaml.safe_load(src.read_text())
    data[section][key] = value
    dst.write_text(yaml.safe_dump(data))
    return dst


@pytest.mark.parametrize("argv, needles", [
    (["--micro-batch", "1e300"], ("micro-batch", "4096")),
    (["--seq", "1e300"], ("seq", str(limits.MAX_SEQ_LEN))),
    (["--grad-accum", "10000", "--stage", "3"], ("grad-accum", str(limits.MAX_GRAD_ACCUM))),
    (["--micro-batch", "1e300", "--json"], ("micro-batch",)),
    (["--gpus", "1e300"], ("gpus",)),
    (["--nodes", "1e300"], ("nodes",)),
])
def test_huge_flags_are_refused_fast(argv, needles, tmp_path, capsys):
    t0 = time.monotonic()
    code, out, err = run(["predict", "--output", str(tmp_path / "o")] + argv, capsys)
    one_line_error(code, err, *needles)
    assert out == "" and not (tmp_path / "o").exists()
    assert time.monotonic() - t0 < 10


def test_file_numbers_are_bounded(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({**TINY, "hidden_size": 1e300}))
    (tmp_path / "ds.json").write_text(json.dumps({"zero_optimization": {"stage": 2, "reduce_bucket_size": 1e308}}))
    hw = _edited_yaml(PROFILE_DIR / "h100-sxm.yaml", tmp_path / "hw.yaml", "compute", "kernel_launch_s", 1e308)
    topo = _edited_yaml(TOPOLOGY_DIR / "dgx-h100.yaml", tmp_path / "t.yaml", "fabric", "oversubscription", 1e308)
    cases = [(["--model", str(tmp_path / "m")], "hidden_size"),
             (["--ds-config", str(tmp_path / "ds.json")], "reduce_bucket_size"),
             (["--hardware", str(hw)], "kernel_launch_s"),
             (["--topo", str(topo), "--nodes", "2"], "oversubscription")]
    for extra, needle in cases:
        code, out, err = run(["predict", "--no-output", "--json"] + extra, capsys)
        one_line_error(code, err, needle)


@settings(**SETTINGS)
@given(key=st.sampled_from(["kernel_launch_s", "host_dispatch_s", "attention_efficiency"]),
       value=st.one_of(st.floats(min_value=1e7, max_value=1e308), st.integers(10**7, 10**400)))
def test_profile_numbers_bounded_by_unit(key, value, tmp_path):
    data = yaml.safe_load((PROFILE_DIR / "h100-sxm.yaml").read_text())
    data["compute"][key] = value
    path = tmp_path / f"hw-{key}.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ZsimInputError, match=key):
        load_profile(path)


@settings(**SETTINGS)
@given(key=st.sampled_from(["reduce_bucket_size", "allgather_bucket_size", "stage3_prefetch_bucket_size",
                            "sub_group_size", "stage3_max_live_parameters"]),
       value=st.one_of(st.integers(limits.MAX_DS_INT + 1, 10**400), st.floats(1e19, 1e308)))
def test_ds_integers_bounded(key, value):
    from zsim.dsconfig import build_run_config
    from zsim.model import load_model
    with pytest.raises(ZsimInputError, match=key):
        build_run_config({"zero_optimization": {"stage": 3, key: value}}, load_model("llama-2-7b"), 8)


@settings(**SETTINGS)
@given(flag=st.sampled_from([("--micro-batch", limits.MAX_MICRO_BATCH), ("--grad-accum", limits.MAX_GRAD_ACCUM),
                             ("--seq", limits.MAX_SEQ_LEN), ("--global-batch", limits.MAX_TRAIN_BATCH),
                             ("--top", limits.MAX_TOP)]),
       excess=st.integers(1, 10**300))
def test_plan_flags_bounded(flag, excess, capsys):
    name, bound = flag
    code, out, err = run(["plan", "--no-output", name, str(bound + excess)], capsys)
    one_line_error(code, err, name)


def test_topology_size_is_bounded_and_loading_is_fast(tmp_path, capsys):
    def node(gpus: int, per_switch: int) -> dict:
        return {"name": f"big{gpus}", "node": {
            "hardware": "h100-sxm", "gpus_per_node": gpus,
            "pcie": {"gpu_bandwidth_GBps": 32, "nic_bandwidth_GBps": 32, "uplink_bandwidth_GBps": 32,
                     "cpus": 2, "socket_bandwidth_GBps": 64,
                     "switches": [{"cpu": i % 2, "gpus": list(range(i * per_switch, (i + 1) * per_switch)),
                                   "nics": [i]} for i in range(gpus // per_switch)]}},
            "fabric": {"kind": "fat_tree", "nics_per_node": gpus // per_switch, "nic_bandwidth_Gbps": 200,
                       "switch_radix": 4096}}
    (tmp_path / "huge.yaml").write_text(yaml.safe_dump(node(4096, 4096)))
    t0 = time.monotonic()
    code, out, err = run(["topo", "show", str(tmp_path / "huge.yaml")], capsys)
    one_line_error(code, err, "gpus_per_node", "1024")
    assert time.monotonic() - t0 < 10
    # 512 GPUs on 256 PCIe switches with a NIC each: one path search per GPU, not per pair.
    (tmp_path / "wide.yaml").write_text(yaml.safe_dump(node(512, 2)))
    t0 = time.monotonic()
    code, out, err = run(["topo", "show", str(tmp_path / "wide.yaml")], capsys)
    assert code == 0, err
    assert time.monotonic() - t0 < 20


def test_collective_and_validate_numbers(capsys):
    code, _, err = run(["collective", "--op", "all_reduce", "--bytes", "1e300", "--topo", "dgx-a100",
                        "--gpus", "8"], capsys)
    one_line_error(code, err, "--bytes")
    for tol in ("inf", "nan", "1e300", "-1"):
        code, _, err = run(["validate", "--tolerance", tol, "validation/results"], capsys)
        one_line_error(code, err, "--tolerance")


def test_non_finite_results_are_refused(monkeypatch, tmp_path, capsys):
    with pytest.raises(ZsimInputError, match="step_time_s"):
        dumps_json({"step_time_s": float("inf")})
    with pytest.raises(ZsimInputError, match=r"rows\[1\]"):
        dumps_json({"rows": [1.0, float("nan")]})
    import importlib
    module = importlib.import_module("zsim.commands.predict")
    real = module.predict_any

    def broken(*args, **kw):
        pred = real(*args, **kw)
        object.__setattr__(pred, "step_time_s", float("nan"))
        return pred
    monkeypatch.setattr(module, "predict_any", broken)
    for extra in ([], ["--json"]):
        code, out, err = run(["predict", "--output", str(tmp_path / "o")] + extra, capsys)
        one_line_error(code, err, "step_time_s")
        assert out == "" and not (tmp_path / "o").exists()


# ---- bounded, regular-file-only reads --------------------------------------------------------

def test_special_and_huge_input_files(tmp_path, capsys):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(limits.MAX_INPUT_FILE_BYTES + 1)
    for path, needle in (("/dev/zero", "regular file"), (str(fifo), "regular file"), (str(big), "16 MiB")):
        for flag in ("--ds-config", "--model", "--hardware"):
            code, out, err = run(["predict", "--no-output", flag, path], capsys)
            one_line_error(code, err, needle)
    with pytest.raises(ZsimInputError, match="regular file"):
        read_input_bytes("/dev/null")


def test_calibrate_and_validate_inputs(tmp_path, capsys):
    cases = [("nccl_2gpu.json", "[]"), ("nccl_2gpu.json", '{"rows": [{"op": 1}]}'),
             ("microbench.json", '{"gemm": NaN}')]
    cases += [("microbench.json", body) for body in (
        '{"gemm": "x"}', '{"gemm": 3}', '{"fused_adam": []}', '{"gemm": [{"flops": "big"}]}',
        '{"hostcopy": [{"bytes": 1e400}]}', "[]")]
    for i, (name, body) in enumerate(cases):
        folder = tmp_path / f"case{i}"
        folder.mkdir()
        (folder / name).write_text(body)
        code, out, err = run(["calibrate", "-o", str(tmp_path / "x.yaml"), str(folder)], capsys)
        one_line_error(code, err, name)
    code, out, err = run(["validate", "a" * 5000], capsys)
    one_line_error(code, err, "results path")
    code, out, err = run(["calibrate", "-o", str(tmp_path / "x.yaml"), "b" * 5000], capsys)
    one_line_error(code, err, "results path")


def test_summary_with_infinity_is_an_unreadable_run(tmp_path):
    from zsim.calibrate import load_run
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for body in ('{"status": "ok", "seq": Infinity}', '{"status": "ok", "seq": 1e400}',
                 '{"status": "ok", "seq": "long"}', '{"status": "ok", "micro_batch": 1.5}'):
        (run_dir / "summary.json").write_text(body)
        result = load_run(run_dir)
        assert result.status == "unreadable" and not result.ok


def test_sweep_grid_shapes(tmp_path, capsys):
    for body, needle in (("[1, 2]", "grid"), ("just a string", "grid"), ("grid: [1, 2]", "grid"),
                         ("grid: text", "grid"), ("stage: {a: 1}", "stage"),
                         ("seq: [" + ", ".join(map(str, range(1, 5000))) + "]", "configurations")):
        (tmp_path / "g.yaml").write_text(body)
        code, out, err = run(["sweep", "--grid", str(tmp_path / "g.yaml"), "--output", str(tmp_path / "o")], capsys)
        one_line_error(code, err, needle)
