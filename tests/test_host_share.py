"""Host sharing: GPUs behind one PCIe switch split its uplink; a node's ranks split its cores."""

import pytest

from zsim.network import load_topology
from zsim.predict import host_share, predict


@pytest.mark.parametrize("gpus, share", [(1, 1.0), (2, 0.5), (8, 0.5)])
def test_pcie_share_follows_switch_layout(gpus, share):
    # dgx-h100.yaml puts GPUs (0,1), (2,3), ... behind one PCIe Gen5 switch with one x16 uplink.
    assert host_share(load_topology("dgx-h100").cluster(gpus=gpus)).pcie_share == share


def test_offload_gets_slower_when_the_host_is_shared():
    one = predict("llama-2-7b", "dgx-h100", gpus=1, stage=2, offload_optimizer="cpu")
    eight = predict("llama-2-7b", "dgx-h100", gpus=8, stage=2, offload_optimizer="cpu")
    # Eight ranks each update 1/8 of the parameters but share the CPU cores: the CPU-Adam
    # time per rank stays the same, while each rank's copies shrink 8x yet run at half speed.
    cpu1 = one.time_breakdown.get("cpu_optimizer_s", 0.0)
    cpu8 = eight.time_breakdown.get("cpu_optimizer_s", 0.0)
    assert cpu8 == pytest.approx(cpu1, rel=0.05)
