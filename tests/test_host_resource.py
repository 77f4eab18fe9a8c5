"""The host as a resource: node.host in topologies, host memory under offload (DeepSpeed
0.19.8's CPU buffers), the fits check in predict/plan/capacity, and the launcher's threads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from zsim.cli import main
from zsim.decide.evaluate import Evaluator, make_setting
from zsim.decide.autoconfig import read_user_config
from zsim.decide.space import Candidate
from zsim.dsconfig import Overrides, build_run_config
from zsim.errors import ZsimInputError
from zsim.hostcost import launcher_cpu_threads
from zsim.memory import MemoryFacts, host_memory
from zsim.model import load_model
from zsim.network import load_topology
from zsim.network.spec import parse_topology
from zsim.predict import predict

TOPO_DIR = Path(__file__).resolve().parents[1] / "zsim" / "data" / "topologies"
GiB, TiB = 2**30, 2**40


# ---- topologies ------------------------------------------------------------------------------

@pytest.mark.parametrize("name, cores, mem", [
    ("dgx-a100", 128, 2 * TiB), ("dgx-a100-40gb", 128, 1 * TiB), ("dgx-h100", 112, 2 * TiB),
    ("hgx-h200", 112, 2 * TiB), ("pcie-8gpu", 64, 1 * TiB)])
def test_shipped_topologies_carry_host_figures_with_sources(name, cores, mem):
    host = load_topology(name).node.host
    assert (host.cpu_cores, host.host_memory_bytes) == (cores, mem)
    assert host.source
    if name == "pcie-8gpu":
        assert "guess" in host.source
    elif name != "hgx-h200":
        assert "docs.nvidia.com/dgx" in host.source


def _doc(host) -> dict:
    doc = yaml.safe_load((TOPO_DIR / "dgx-a100.yaml").read_text())
    if host is None:
        doc["node"].pop("host")
    else:
        doc["node"]["host"] = host
    return doc


@pytest.mark.parametrize("host, words", [
    ({"cpu_cores": 0}, "node.host.cpu_cores must be positive"),
    ({"cpu_cores": -4}, "node.host.cpu_cores must be non-negative"),
    ({"cpu_cores": 1.5}, "node.host.cpu_cores must be an integer"),
    ({"cpu_cores": "many"}, "node.host.cpu_cores must be a finite number"),
    ({"host_memory_bytes": 0}, "node.host.host_memory_bytes must be positive"),
    ({"host_memory_bytes": 1.5e3 + 0.5}, "node.host.host_memory_bytes must be an integer"),
    ({"host_memory_bytes": 2**60}, "node.host.host_memory_bytes must be at most"),
    ({"memory_GB": 2048}, "unknown key 'memory_GB' in node.host"),
    ({"source": 3}, "node.host.source must be text"),
    ([128], "node.host must be a mapping"),
])
def test_bad_host_section_is_an_error_naming_the_key(host, words):
    with pytest.raises(ZsimInputError, match="t.yaml: " + words.replace(".", r"\.")):
        parse_topology(_doc(host), "t.yaml", "t.yaml")


def test_host_section_is_optional():
    spec = parse_topology(_doc(None), "t.yaml", "t.yaml")
    assert spec.node.host.host_memory_bytes == 0 and not spec.node.host.known


def test_topo_show_prints_the_host(capsys):
    assert main(["topo", "show", "dgx-h100"]) == 0
    assert "112 CPU cores, 2.00 TiB host memory" in capsys.readouterr().out
    assert main(["topo", "show", "dgx-a100-40gb", "--json"]) == 0
    host = json.loads(capsys.readouterr().out)["host"]
    assert host["cpu_cores"] == 128 and host["host_memory_bytes"] == TiB


# ---- host memory: hand calculations against DeepSpeed 0.19.8 -----------------------------

def _run(stage, opt="cpu", par="none", ga=1, world=8, sub_group=None):
    zero = {"stage": stage, "offload_optimizer": {"device": opt}, "offload_param": {"device": par}}
    if sub_group:
        zero["sub_group_size"] = sub_group
    cfg = {"bf16": {"enabled": True}, "zero_optimization": zero,
           "train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": ga}
    return build_run_config(cfg, load_model("llama-2-7b"), world, Overrides())


FACTS = MemoryFacts(partition_numel=1_000_000, ipg_buffer_elems=0, ipg_buffer_count=1,
                    max_gathered_numel=0, persistent_numel=0)


def test_stage2_offload_optimizer_by_hand():
    """Per partition element: fp32 master 4 (S12:560-577) + Adam m, v 8 (cpu_adam.py:158-164)
    + fp32 gradient 4 (S12:934-941) + pinned 16-bit copy 2 (S12:563-575) = 18 B, plus one
    largest-parameter 16-bit staging buffer (S12:652-658); with grad-accum the 16-bit
    accumulated_grads_in_cpu (S12:1820-1853) adds 2 B."""
    one = host_memory(_run(2), FACTS, ranks_per_node=8, largest_param_numel=1000)
    assert one.bytes_per_rank == 18 * 1_000_000 + 2 * 1000
    assert one.bytes_per_node == 8 * one.bytes_per_rank
    ga = host_memory(_run(2, ga=4), FACTS, ranks_per_node=8, largest_param_numel=1000)
    assert ga.bytes_per_rank == 20 * 1_000_000 + 2 * 1000
    assert ga.breakdown_per_rank["accumulated_grads"] == 2 * 1_000_000
    assert host_memory(_run(1), FACTS, 8).bytes_per_rank == 18 * 1_000_000


def test_stage3_offload_by_hand():
    """Stage 3: fp32 master 4 (S3:1157-1160) + m, v 8 + fp32 sub-group gradients 4
    (S3:1337-1342) + grad_partitions_flat_buffer in the model dtype on the CPU 2
    (S3:333, 791-795); offload_param adds the pinned 16-bit partition 2 (S3:888-911)."""
    assert host_memory(_run(3), FACTS, 8).bytes_per_rank == 18 * 1_000_000
    both = host_memory(_run(3, par="cpu"), FACTS, 8)
    assert both.bytes_per_rank == 20 * 1_000_000
    # offload_param alone: 16-bit partition + the fp32 staging of one sub-group's swap-out
    # (S3:2854-2859), at most sub_group_size elements.
    alone = host_memory(_run(3, opt="none", par="cpu", sub_group=250_000), FACTS, 8)
    assert alone.breakdown_per_rank == {"bit16_params": 2 * 1_000_000, "swap_out_fp32_staging": 4 * 250_000}


def test_no_offload_or_nvme_needs_no_host_memory():
    assert host_memory(_run(2, opt="none"), FACTS, 8).bytes_per_node == 0
    assert host_memory(_run(3, opt="nvme", par="nvme"), FACTS, 8).bytes_per_node == 0


def test_predict_reports_host_memory_and_partition_arithmetic():
    p = predict(model="llama-2-7b", topo="dgx-a100", stage=2, offload_optimizer="cpu")
    psi = p.num_parameters
    # 18 B per parameter over the node's 8 ranks (= the world here), plus 8 staging buffers.
    staging = 8 * 2 * load_model("llama-2-7b").largest_parameter_numel()
    assert p.host_memory_bytes_per_node == pytest.approx(18 * psi + staging, rel=1e-4)
    assert p.host_memory_available_bytes == 2 * TiB and p.fits
    assert "host_memory_bytes_per_node" in p.to_dict()


# ---- a config past the node's host memory does not fit -----------------------------------

def _small_host_topology(tmp_path: Path, mem_bytes: int = 64 * GiB) -> Path:
    doc = yaml.safe_load((TOPO_DIR / "dgx-a100.yaml").read_text())
    doc["node"]["hardware"] = "a100-sxm-80gb"
    doc["node"]["host"]["host_memory_bytes"] = mem_bytes
    path = tmp_path / "small-host.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_exceeding_host_memory_is_a_result_not_an_error(tmp_path, capsys):
    topo = _small_host_topology(tmp_path)
    args = ["predict", "--model", "llama-2-7b", "--topo", str(topo), "--stage", "2",
            "--offload-optimizer", "cpu", "--no-output"]
    assert main(args + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fits"] is False and out["peak_memory_bytes"] <= out["gpu_memory_bytes"]
    assert out["host_memory_bytes_per_node"] > out["host_memory_available_bytes"] == 64 * GiB
    assert any(n.startswith("host memory:") and "node.host.host_memory_bytes" in n for n in out["notes"])
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "host memory/node" in text and "of 64.0 GiB -> DOES NOT FIT" in text


def test_plan_and_capacity_use_the_same_check(tmp_path):
    topo = _small_host_topology(tmp_path)
    model = load_model("llama-2-7b")
    setting = make_setting(model, topo, None, None, None, 2048, read_user_config(None))
    cand = Candidate(stage=2, offload_optimizer="cpu", offload_param="none", micro_batch=1, grad_accum=1,
                     activation_checkpointing=True, reduce_bucket_size=500_000_000,
                     prefetch_bucket_size=50_000_000)
    verdict = Evaluator(setting).memory(cand)
    assert not verdict.fits and verdict.reason().startswith("host memory:")
    roomy = make_setting(model, "dgx-a100", None, None, None, 2048, read_user_config(None))
    assert Evaluator(roomy).memory(cand).fits


# ---- launcher -> threads per rank -------------------------------------------------------

@pytest.mark.parametrize("launcher, ranks, cores, given, threads", [
    ("torchrun", 8, 112, None, 1.0),       # torch/distributed/run.py:872-884
    ("torchrun", 1, 112, None, 112.0),     # one process: torch's default, every core
    ("deepspeed", 8, 112, None, 14.0),     # the node's cores shared (bind_cores_to_rank: cores // ranks)
    ("deepspeed", 8, 0, None, None),       # cores unknown: predict's default
    ("torchrun", 8, 112, 6, 6.0),          # --cpu-threads wins
])
def test_launcher_threads(launcher, ranks, cores, given, threads):
    assert launcher_cpu_threads(launcher, ranks, cores, given) == threads


def test_launcher_threads_refuse_bad_input():
    with pytest.raises(ZsimInputError, match="--launcher"):
        launcher_cpu_threads("mpirun", 8, 112)
    with pytest.raises(ZsimInputError, match="--cpu-threads"):
        launcher_cpu_threads("deepspeed", 8, 112, 0)


def _step_s(capsys, *extra) -> float:
    assert main(["predict", "--topo", "hgx-h200", "--stage", "2", "--offload-optimizer", "cpu",
                 "--no-output", "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)["step_time_s"]


def test_cli_launcher_and_cpu_threads_flags(capsys):
    deepspeed = _step_s(capsys)
    torchrun = _step_s(capsys, "--launcher", "torchrun")
    assert torchrun > deepspeed                      # one thread per rank: slower CPU passes
    assert _step_s(capsys, "--launcher", "torchrun", "--cpu-threads", "14") == pytest.approx(deepspeed)
    for bad in (["--launcher", "mpirun"], ["--cpu-threads", "0"]):
        with pytest.raises(SystemExit) as exc:
            main(["predict", "--no-output", *bad])
        assert exc.value.code == 2
