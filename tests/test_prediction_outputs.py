"""The output folder of `zsim predict` is worth opening: the CSV is the simulated step per
micro-step (forward/backward/step in ms), the PNG has readable labels, predict names the files."""

import csv

from zsim.cli import main
from zsim.output import CSV_FIELDS
from zsim.predict import predict


def test_csv_is_per_micro_step_phases(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", "--model", "tinyllama-1.1b", "--seq", "512", "--grad-accum", "3", "--stage", "2",
                 "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"wrote 4 files to {out}" in text and "training_metrics.csv" in text
    rows = list(csv.DictReader(open(out / "training_metrics.csv")))
    assert list(rows[0]) == CSV_FIELDS and all(c.endswith(("_ms", "_bytes", "step", "tokens")) for c in CSV_FIELDS)
    assert [int(r["micro_step"]) for r in rows] == [0, 1, 2]
    assert all(float(r["forward_ms"]) > 0 and float(r["backward_ms"]) > 0 for r in rows)
    assert float(rows[-1]["optimizer_step_ms"]) > 0 and float(rows[0]["optimizer_step_ms"]) == 0
    pred = predict("tinyllama-1.1b", "dgx-a100", seq=512, grad_accum=3, stage=2, keep_timeline=True)
    wall_ms = sum(float(r["wall_ms"]) for r in rows)
    assert abs(wall_ms - pred.timeline.step_time_s * 1e3) < 1e-3 * wall_ms
    starts = [float(r["start_ms"]) for r in rows]
    assert starts == sorted(starts) and starts[0] == 0
    assert (out / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_output_writes_nothing_and_says_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "--model", "tinyllama-1.1b", "--seq", "512", "--no-output"]) == 0
    assert "wrote" not in capsys.readouterr().out and not any(tmp_path.iterdir())
