"""Every CLI error path: one line on stderr naming the problem, exit code 2, nothing written."""

import json

import pytest

from zsim.cli import main


def _run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:   # argparse usage errors
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def files(tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"zero_optimization": {"stage": 3,,}}')
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("name: x\nnode: [unclosed\n")
    broken_batch = tmp_path / "batch.json"
    broken_batch.write_text(json.dumps({"train_batch_size": 30, "train_micro_batch_size_per_gpu": 4,
                                        "gradient_accumulation_steps": 1}))
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    return {"bad_json": bad_json, "bad_yaml": bad_yaml, "batch": broken_batch, "binary": binary}


CASES = [
    (["--model", "llama-9-1t"], "unknown model"),
    (["--topo", "dgx-z900"], "dgx-z900"),
    (["--stage", "5"], "stage"),
    (["--micro-batch", "0"], "micro-batch"),
    (["--seq", "-1"], "seq"),
    (["--gpus", "0"], "gpus"),
    (["--gpus", "64"], "64"),
    (["--grad-accum", "two"], "grad-accum"),
    (["--offload-param", "cpu", "--stage", "2"], "offload_param"),
    (["--ds-config", "{bad_json}"], "malformed JSON"),
    (["--ds-config", "{binary}"], "UTF-8"),
    (["--ds-config", "{batch}"], "batch identity"),
    (["--ds-config", "/nonexistent/ds.json"], "not found"),
    (["--topo", "{bad_yaml}"], "YAML"),
    (["--hardware", "no-such-gpu"], "no-such-gpu"),
]


@pytest.mark.parametrize("extra, needle", CASES)
def test_predict_errors(extra, needle, files, tmp_path, capsys):
    out_dir = tmp_path / "out"
    argv = ["predict", "--output", str(out_dir)] + [a.format(**files) for a in extra]
    code, out, err = _run(argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert needle.lower() in lines[0].lower()
    assert "Traceback" not in err
    assert not out_dir.exists()


def test_unknown_subcommand(capsys):
    code, _, err = _run(["frobnicate"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
