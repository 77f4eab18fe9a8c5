"""Same input, same output: byte-identical `zsim predict --json`, --trace and --output files
across runs in one process and across processes with different PYTHONHASHSEED (no dict-order,
set-order, id() or clock dependence)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zsim.io import dumps_json
from zsim.predict import predict

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "corpus"
SEEDS = ["0", "1", "4242"]
FILES = ["training_metrics.csv", "training_curves.png", "summary.json", "deepspeed_config_auto.json"]

CASES = {
    "zero3-offload-2nodes": ["--model", "tinyllama-1.1b", "--topo", "dgx-h100", "--nodes", "2", "--stage", "3",
                             "--ds-config", str(CORPUS / "hf_zero3_auto.json")],
    "zero1-pcie": ["--model", "tinyllama-1.1b", "--topo", "pcie-8gpu", "--gpus", "4", "--stage", "1",
                   "--grad-accum", "2", "--ds-config", str(CORPUS / "ds_zero2_strings.json")],
}


def _start(args: list[str], out: Path, seed: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": seed}
    argv = [sys.executable, "-m", "zsim.cli", "predict", *args, "--json",
            "--trace", str(out / "trace.json"), "--output", str(out / "run")]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("case", sorted(CASES))
def test_identical_bytes_across_processes(case, tmp_path):
    runs = []
    for seed in SEEDS:  # started together: they run side by side
        out = tmp_path / f"seed{seed}"
        out.mkdir()
        runs.append((seed, out, _start(CASES[case], out, seed)))
    results = {}
    for seed, out, proc in runs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr.decode(errors="replace")
        files = {name: (out / "run" / name).read_bytes() for name in FILES}
        files["trace.json"] = (out / "trace.json").read_bytes()
        files["stdout"] = stdout
        results[seed] = files
    first = results[SEEDS[0]]
    assert json.loads(first["stdout"])["step_time_s"] > 0
    assert json.loads(first["trace.json"])["traceEvents"]
    for seed in SEEDS[1:]:
        for name, data in first.items():
            assert results[seed][name] == data, f"{name} differs between PYTHONHASHSEED {SEEDS[0]} and {seed}"


def test_identical_in_one_process():
    """Repeated calls (warm caches, reused topology/profile objects) give the same answer."""
    kwargs = dict(model="tinyllama-1.1b", topo="dgx-a100", nodes=2, stage=3,
                  ds_config=CORPUS / "accelerate_zero3_offload.json", keep_timeline=True)
    first = predict(**kwargs)
    for _ in range(2):
        again = predict(**kwargs)
        assert dumps_json(again.to_dict()) == dumps_json(first.to_dict())
        assert dumps_json(dict(again.ds_config_resolved)) == dumps_json(dict(first.ds_config_resolved))
        assert again.timeline.spans == first.timeline.spans
