"""`zsim collective` on the command line: output, conventions, error exits."""

from __future__ import annotations

import json

import pytest

from zsim.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_output_follows_nccl_tests_conventions(capsys):
    code, out, err = _run(capsys, "collective", "--op", "all_reduce", "--bytes", "1GiB",
                          "--topo", "dgx-h100", "--nodes", "2", "--json")
    assert code == 0 and err == ""
    data = json.loads(out)
    for key in ("time_s", "algbw_GBps", "busbw_GBps", "algorithm", "link_bytes", "link_busy_s",
                "link_utilisation", "world_size"):
        assert key in data
    n = data["world_size"]
    assert n == 16
    assert data["algbw_GBps"] == pytest.approx(2**30 / data["time_s"] / 1e9)
    assert data["busbw_GBps"] == pytest.approx(data["algbw_GBps"] * 2 * (n - 1) / n)


@pytest.mark.parametrize("op,factor", [("all_gather", 7 / 8), ("reduce_scatter", 7 / 8)])
def test_busbw_factor(capsys, op, factor):
    code, out, _ = _run(capsys, "collective", "--op", op, "--bytes", "256MiB", "--topo",
                        "dgx-a100", "--gpus", "8", "--json")
    data = json.loads(out)
    assert code == 0
    assert data["busbw_GBps"] == pytest.approx(data["algbw_GBps"] * factor)


def test_text_output(capsys):
    code, out, _ = _run(capsys, "collective", "--op", "all_gather", "--bytes", "1e9", "--topo",
                        "pcie-8gpu", "--algorithm", "hierarchical", "--hardware", "a100-sxm-40gb")
    assert code == 0
    assert "busbw_GBps" in out and "hierarchical" in out and "a100-sxm-40gb" in out


@pytest.mark.parametrize("argv,match", [
    (["--bytes=0"], "positive"),
    (["--bytes=-1GiB"], "positive"),
    (["--bytes=lots"], "cannot read size"),
    (["--bytes=1GiB", "--topo=dgx-z900"], "unknown topology"),
    (["--bytes=1GiB", "--gpus=16"], "exceeds the 8 GPUs"),
    (["--bytes=1GiB", "--nodes=0"], "positive integer"),
    (["--bytes=1GiB", "--hardware=tpu"], "unknown hardware profile"),
    (["--bytes=1GiB", "--algorithm=tree"], "does not implement all_gather"),
])
def test_errors_exit_2_with_one_line(capsys, argv, match):
    # argparse keeps the last of a repeated option, so these override the defaults.
    args = ["collective", "--op", "all_gather", "--topo", "dgx-a100", *argv]
    code, out, err = _run(capsys, *args)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and match in err and "Traceback" not in err


def test_gpus_and_nodes_are_exclusive(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["collective", "--op", "all_gather", "--bytes", "1", "--topo", "dgx-a100",
              "--gpus", "2", "--nodes", "2"])
    assert exc.value.code == 2
