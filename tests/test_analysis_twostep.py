"""Two-step fits, intervals, backtests and reports on a synthetic ladder with known laws."""

import json

import numpy as np
import pytest

from analysis import Target, TwoStepConfig, fit_task, predict_target, read_run, read_runs
from analysis.practice.backtest import backtest, default_scenarios
from analysis.report import write_report
from analysis.runlog import PAPER_N
from analysis.metrics import PAPER_TASKS
from analysis.twostep import moving_average

from analysis_synthetic import true_acc, true_bpb, write_ladder, write_target

HELLA = {"hellaswag": PAPER_TASKS["hellaswag"]}
# The synthetic truth is a plain sigmoid with a 0.95 ceiling: fit that form to test recovery.
TRUE_FORM = TwoStepConfig(link="sigmoid", link_ceiling="free")


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    d = tmp_path_factory.mktemp("ladder")
    return read_runs(write_ladder(d)), d


def test_moving_average():
    assert np.allclose(moving_average(np.array([1.0, 2, 3, 4, 5, 6]), 3), [1, 1.5, 2, 3, 4, 5])
    assert np.allclose(moving_average(np.array([1.0, 5]), 1), [1, 5])


def test_default_method_on_synthetic_ladder(ladder):
    """The default (log-sigmoid, ceiling 1) is not the synthetic truth, yet close to it."""
    runs, _ = ladder
    m = fit_task(runs, PAPER_TASKS["hellaswag"])
    assert m.converged and m.step2.params_["hi"] == 1.0
    n, d = PAPER_N["1B"], 2e2 * PAPER_N["1B"]
    assert m.predict_acc(n, d)[0] == pytest.approx(true_acc(true_bpb(n, d)), abs=0.02)


def test_two_step_recovers_known_laws(ladder):
    runs, _ = ladder
    m = fit_task(runs, PAPER_TASKS["hellaswag"], TRUE_FORM)
    assert m.converged, m.warnings
    n, d = PAPER_N["7B"], 4e11
    assert m.predict_loss(n, d)[0] == pytest.approx(true_bpb(n, d), rel=0.02)
    assert m.predict_acc(n, d)[0] == pytest.approx(true_acc(true_bpb(n, d)), abs=0.02)
    assert m.step2.params_["b"] == pytest.approx(0.25, abs=0.03)


@pytest.mark.parametrize("cfg", [
    TwoStepConfig(step1="compute"), TwoStepConfig(step1_points="intermediate"),
    TwoStepConfig(link="log_sigmoid"), TwoStepConfig(feature="val_ce"),
    TwoStepConfig(step1_exponents="tied"), TwoStepConfig(mode="single"),
    TwoStepConfig(link_floor="chance")])
def test_variants_fit_and_predict(ladder, cfg):
    runs, _ = ladder
    m = fit_task(runs, PAPER_TASKS["hellaswag"], cfg)
    acc = m.predict_acc(PAPER_N["1B"], 20 * 10 * PAPER_N["1B"])[0]
    assert acc == pytest.approx(true_acc(true_bpb(PAPER_N["1B"], 2e2 * PAPER_N["1B"])), abs=0.03)


def test_interval_contains_truth_and_is_deterministic(ladder, tmp_path):
    runs, _ = ladder
    target = Target("7B", PAPER_N["7B"], 4e11)
    actual = read_run(write_target(tmp_path))
    a = predict_target(runs, target, HELLA, TRUE_FORM, actual=actual, n_boot=100, warn=lambda m: None)
    b = predict_target(runs, target, HELLA, TRUE_FORM, actual=actual, n_boot=100, warn=lambda m: None)
    p = a[0]
    assert p.pred_acc_low <= p.actual_acc <= p.pred_acc_high
    assert p.pred_acc_low < p.pred_acc < p.pred_acc_high
    assert p.pred_acc_high - p.pred_acc_low < 0.1
    assert (p.pred_acc, p.pred_acc_low, p.pred_acc_high) == (b[0].pred_acc, b[0].pred_acc_low,
                                                             b[0].pred_acc_high)
    assert p.fits["interval"]["n_converged"] >= 80


def test_backtest_holds_out_largest(ladder):
    runs, _ = ladder
    assert default_scenarios(runs) == [["1B"], ["760M", "1B"], ["1B", "10xC"]]
    r = backtest(runs, ["1B"], HELLA, warn=lambda m: None)
    assert sorted(p.target for p in r.predictions) == ["1B-10xC", "1B-1xC", "1B-2xC", "1B-5xC"]
    assert r.mae() < 0.02
    with pytest.raises(ValueError, match="no such model size or token multiplier"):
        backtest(runs, ["3B"], HELLA)


def test_report_files(ladder, tmp_path):
    runs, _ = ladder
    preds = predict_target(runs, Target("7B", PAPER_N["7B"], 4e11), HELLA, n_boot=50,
                           keep_samples=True, warn=lambda m: None)
    files = write_report(preds, tmp_path, "test", TwoStepConfig())
    for k in ("step1", "step2", "chained"):
        assert files[k].exists() and files[k].stat().st_size > 10_000
        assert files[k].read_bytes()[:4] == b"\x89PNG"
    rows = json.loads((tmp_path / "predictions.json").read_text())
    assert rows[0]["task"] == "hellaswag" and 0 <= rows[0]["pred_acc_low"] <= rows[0]["pred_acc"] <= 1
    assert "| hellaswag |" in (tmp_path / "report.md").read_text()
