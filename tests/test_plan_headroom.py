"""`zsim plan` keeps a memory margin, flags ties within the model's error, ranks by the
metric asked for, and every output names its hardware profile and that profile's error."""

import json

import pytest

from zsim.cli import main
from zsim.decide.api import plan
from zsim.hardware import PROFILE_DIR
from zsim.predict import predict
from zsim.provenance import profile_provenance

from test_plan import GIB, fake_predictor

MEASURED = """
calibration:
  base_profile: a100-sxm-80gb-datasheet
  fit_runs: [run-a, run-b, run-c]
measured_error:
  evaluated_on: three runs
  step_time_mape_pct: 5.4
  step_time_max_pct: 12.6
  peak_memory_mape_pct: 6.1
  peak_memory_max_pct: 9.3
"""


@pytest.fixture()
def measured_profile(tmp_path):
    """The A100 profile with a calibration record and a measured error."""
    text = (PROFILE_DIR / "a100-sxm-80gb.yaml").read_text().replace("calibrated: false", "calibrated: true")
    path = tmp_path / "a100-measured.yaml"
    path.write_text(text + MEASURED)
    return path


def test_provenance_reads_the_profile(measured_profile):
    p = profile_provenance(measured_profile)
    assert (p.calibrated, p.fit_runs, p.base_profile) == (True, 3, "a100-sxm-80gb-datasheet")
    assert (p.step_time_mape_pct, p.peak_memory_max_pct) == (5.4, 9.3)
    assert p.memory_headroom_pct == 6.1 and p.step_time_error_pct == 5.4
    plain = profile_provenance("a100-sxm-80gb")
    assert not plain.calibrated and plain.step_time_mape_pct is None
    assert plain.memory_headroom_pct == 5.0 and plain.step_time_error_pct == 10.0
    assert "not calibrated" in plain.describe() and "not measured" in plain.describe()


def test_predict_says_which_profile_and_its_error(measured_profile, capsys):
    pred = predict("tinyllama-1.1b", "dgx-a100", hardware=str(measured_profile), seq=512)
    assert pred.provenance["step_time_mape_pct"] == 5.4 and pred.provenance["fit_runs"] == 3
    assert main(["predict", "--model", "tinyllama-1.1b", "--seq", "512", "--hardware", str(measured_profile),
                 "--no-output"]) == 0
    out = capsys.readouterr().out
    assert "calibrated on 3 runs" in out and "step time 5.4 % MAPE (max 12.6 %)" in out
    assert main(["predict", "--model", "tinyllama-1.1b", "--seq", "512", "--no-output", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["provenance"]["profile"] == "a100-sxm-80gb" and data["provenance"]["calibrated"] is False


def test_headroom_changes_the_winner():
    # The fake's optimum (stage 2, micro 4) peaks near 78 GiB of 80: inside 0 % headroom, not 5 %.
    tight = plan("llama-2-7b", "dgx-a100", global_batch=128, predictor=fake_predictor(), memory_headroom_pct=0)
    safe = plan("llama-2-7b", "dgx-a100", global_batch=128, predictor=fake_predictor(), memory_headroom_pct=5)
    assert 0.95 * 80 * GIB < tight.best.prediction.peak_memory_bytes <= 80 * GIB
    assert safe.best.prediction.peak_memory_bytes <= 0.95 * 80 * GIB
    assert safe.usable_memory_bytes == 80 * GIB - int(80 * GIB * 0.05)
    assert any("less 5.0 % headroom" in r.reason() for r in safe.rejected)


def test_default_headroom_is_the_profiles_measured_error(measured_profile):
    kw = dict(global_batch=16, seq=512, top_n=1, refine=1)
    assert plan("tinyllama-1.1b", "dgx-a100", **kw).memory_headroom_pct == 5.0
    result = plan("tinyllama-1.1b", "dgx-a100", hardware=str(measured_profile), **kw)
    assert result.memory_headroom_pct == 6.1 and result.tie_band_pct == 5.4
    assert result.to_dict()["provenance"]["peak_memory_mape_pct"] == 6.1


def test_ties_within_the_error_band():
    result = plan("llama-2-7b", "dgx-a100", global_batch=128, predictor=fake_predictor(), memory_headroom_pct=0)
    first = result.ranked[0].prediction.tokens_per_s
    expected = tuple(i + 1 for i, r in enumerate(result.ranked)
                     if i and (first / r.prediction.tokens_per_s - 1) * 100 <= result.tie_band_pct)
    assert result.tie_band_pct == 10.0 and result.ties == expected and expected


@pytest.mark.parametrize("metric", ["memory", "cost-per-token"])
def test_metric_orders_the_ranking(metric):
    result = plan("llama-2-7b", "dgx-a100", global_batch=128, predictor=fake_predictor(),
                  memory_headroom_pct=0, metric=metric)
    if metric == "memory":
        peaks = [r.prediction.peak_memory_bytes for r in result.ranked]
        assert peaks == sorted(peaks) and len(peaks) == 5
        assert all(r.memory.peak_bytes >= peaks[0] for r in result.rejected)
    else:
        tps = [r.prediction.tokens_per_s for r in result.ranked]
        assert tps == sorted(tps, reverse=True)
    assert result.to_dict()["metric"] == metric


@pytest.mark.parametrize("bad", [["--memory-headroom", "100"], ["--memory-headroom", "nan"],
                                 ["--metric", "speed"], ["--for", "trainer"]])
def test_bad_plan_options_exit_2(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["plan", "--model", "tinyllama-1.1b", "--no-output", *bad])
    assert exc.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_plan_text_names_profile_headroom_and_metric(capsys):
    assert main(["plan", "--model", "tinyllama-1.1b", "--seq", "512", "--global-batch", "16", "--top", "2",
                 "--metric", "memory", "--memory-headroom", "7.5", "--no-output"]) == 0
    out = capsys.readouterr().out
    assert "hardware profile a100-sxm-80gb: not calibrated" in out
    assert "memory headroom 7.5 %" in out and "by peak memory per GPU (lowest first)" in out
