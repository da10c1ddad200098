"""Calibrated intervals and trust grades: the math on known records, and a synthetic ladder whose
largest sizes break the trend (the grade must flag it and the interval must cover the target)."""

import json

import numpy as np
import pytest

from analysis import Target, predict_target, read_run, read_runs
from analysis.calibration import (Calibration, Record, conformal_quantile, extrapolation,
                                  fit_calibration, loso_coverage)
from analysis.practice.calibrate import (calibrate_ladder, extrapolation_scenarios,
                                         load_calibration, save_calibration)
from analysis.runlog import PAPER_N

from analysis_synthetic import write_ladder, write_target


def test_conformal_quantile_is_the_finite_sample_rank():
    s = np.arange(1, 20, dtype=float)  # 19 scores: ceil(20 * 0.9) = 18th smallest
    assert conformal_quantile(s, 0.9) == 18.0
    assert conformal_quantile([3.0, 1.0], 0.9) == 3.0  # too few: the largest


def test_extrapolation_distance():
    dn, dt = extrapolation([1e8, 4e8], [2e9, 8e10], 8e8, 8e8 * 400)
    assert dn == pytest.approx(np.log(2)) and dt == pytest.approx(np.log(2))
    assert extrapolation([1e8], [2e9], 5e7, 1e9) == (0.0, 0.0)  # inside the ladder: no term


def _records(seed=0):
    """Errors that grow with the tokens-per-parameter distance dt, which the raw bootstrap
    interval (half-width 0.01) does not know about: four scenarios, 60 predictions each."""
    rng = np.random.default_rng(seed)
    out = []
    for s, dt in (("a", 0.0), ("b", 0.7), ("c", 1.0), ("d", 1.6)):
        for i in range(60):
            e = rng.normal(0, 0.006 + 0.02 * dt)
            out.append(Record(s, f"t{i % 3}", f"r{i}", 0.5, 0.49, 0.51, 0.5 + e, 0.0, dt))
    return out


def test_calibration_learns_the_extrapolation_term_and_covers_left_out_scenarios():
    recs = _records()
    raw = loso_coverage(recs)
    assert raw["d"]["coverage_raw"] < 0.5  # the raw interval misses far extrapolations
    cal = fit_calibration(recs)
    assert cal.c_t > 0 and cal.c_n == 0.0
    lo, hi = cal.widen("t0", 0.5, 0.49, 0.51, 0.0, 1.6)
    assert hi - lo > 5 * 0.02  # far out: much wider than the raw interval
    for s, row in raw.items():
        assert row["coverage"] >= 0.85, (s, row)
        assert "c" not in row["calibrated_on"] or s != "c"
    assert raw["a"]["calibrated_on"] == ["b", "c", "d"]


def test_calibration_file_roundtrip_and_bad_file(tmp_path):
    cal = fit_calibration(_records())
    p = tmp_path / "c.json"
    p.write_text(json.dumps(cal.to_json()))
    assert load_calibration(p) == cal
    p.write_text(json.dumps({"k": 1}))
    with pytest.raises(ValueError, match="not a calibration file"):
        load_calibration(p)
    assert Calibration.from_json(cal.to_json()).describe().startswith("90% interval")


def test_calibration_says_where_a_prediction_goes_beyond_its_backtests(tmp_path):
    """The widening is fitted on backtests up to some distance; past it, it is extrapolated,
    and predictions.json, the report and the W&B table say so."""
    from analysis.predict import Prediction
    from analysis.report import markdown_table

    cal = fit_calibration(_records())  # backtests reached dt 1.6 and no N extrapolation
    assert (cal.dn_max, cal.dt_max) == (0.0, 1.6)
    assert cal.beyond(0.0, 1.6) == {}
    assert cal.beyond(0.5, 2.0) == {"log_n_beyond_ladder": [0.5, 0.0],
                                    "log_tokens_per_param_beyond_ladder": [2.0, 1.6]}
    p = Prediction("t0", "big", 0.5, 0.4, 0.6, 1.0, interval_info={
        "level": 0.9, "calibrated": True, "method": cal.describe(),
        "beyond_calibration": cal.beyond(0.0, np.log(8))})
    assert ("Beyond the backtests: big extrapolates the ladder in tokens per parameter by 8.0x "
            "(the backtests reached 5.0x)") in markdown_table([p])
    old = cal.to_json()  # a file written before the reach was recorded: no claim either way
    del old["dn_max"], old["dt_max"]
    assert Calibration.from_json(old).beyond(9.0, 9.0) == {}


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """Ladder whose two largest sizes sit above the smaller ones' trend, a 3B target further up."""
    d = tmp_path_factory.mktemp("broken")
    runs = read_runs(write_ladder(d, mults=(1, 2, 4), n_evals=12,
                                  acc_shift={"760M": 0.02, "1B": 0.06}))
    n = PAPER_N["3B"]
    target = read_run(write_target(d, "3B", 200 * n, acc_shift=0.12))
    return runs, target, Target("3B", n, 200 * n)


def test_trend_break_is_graded_unreliable_and_covered(broken, tmp_path):
    runs, actual, target = broken
    scen = extrapolation_scenarios(runs)
    assert ["1B"] in scen and ["760M", "1B"] in scen
    lc = calibrate_ladder(runs, "hellaswag", n_boot=40)
    assert set(lc.coverage) == {"+".join(s) for s in scen}
    p = predict_target(runs, target, "hellaswag", actual=actual, n_boot=40,
                       calibration=lc.calibration)[0]
    assert p.grade.grade == "unreliable"
    assert any("trend" in r for r in p.grade.reasons)
    assert not p.raw_low <= p.actual_acc <= p.raw_high  # the bootstrap alone misses it
    assert p.pred_acc_low <= p.actual_acc <= p.pred_acc_high
    assert p.interval_info["calibrated"] and p.to_json()["grade"] == "unreliable"
    save_calibration(lc, tmp_path / "cal.json")
    assert load_calibration(tmp_path / "cal.json").fingerprint == lc.calibration.fingerprint


def test_clean_ladder_is_graded_reliable(tmp_path):
    runs = read_runs(write_ladder(tmp_path, mults=(1, 2, 4), n_evals=12))
    lc = calibrate_ladder(runs, "hellaswag", n_boot=40)
    p = predict_target(runs, Target("3B", PAPER_N["3B"], 200 * PAPER_N["3B"]), "hellaswag",
                       n_boot=40, calibration=lc.calibration)[0]
    assert p.grade.grade == "reliable", p.grade.reasons
    assert p.pred_acc_low < p.pred_acc < p.pred_acc_high


def test_plotted_band_is_the_calibrated_interval(broken):
    """The chained plot's band at the target's D is the reported (calibrated) interval, not the
    narrower raw bootstrap band; inside the ladder it adds no extrapolation term."""
    from analysis.report import chained_band

    runs, actual, target = broken
    lc = calibrate_ladder(runs, "hellaswag", n_boot=40)
    p = predict_target(runs, target, "hellaswag", actual=actual, n_boot=40, keep_samples=True,
                       calibration=lc.calibration)[0]
    lo, hi = chained_band(p, np.array([target.d]))
    assert lo[0] == pytest.approx(p.pred_acc_low, abs=0.01)
    assert hi[0] == pytest.approx(p.pred_acc_high, abs=0.01)
    assert lo[0] <= p.actual_acc <= hi[0]
    raw_lo, raw_hi = p.interval.band(p.model, np.array([target.n]), np.array([target.d]))
    assert hi[0] - lo[0] > 1.2 * (raw_hi[0] - raw_lo[0])


def test_a_calibration_file_without_the_backtests_reach_is_made_again(broken, tmp_path, monkeypatch):
    from analysis.practice.calibrate import ladder_calibration
    from analysis.twostep import TwoStepConfig

    runs, _, _ = broken
    monkeypatch.setenv("LADDER_CALIBRATION_CACHE", str(tmp_path / "cache"))
    said = []
    made = ladder_calibration(runs, "hellaswag", TwoStepConfig(), 40, None, said.append)
    assert made.dn_max > 0 and "reusing" not in said[-1]
    assert ladder_calibration(runs, "hellaswag", TwoStepConfig(), 40, None, said.append) == made
    assert "reusing" in said[-1]
    (cache,) = (tmp_path / "cache").glob("*.json")
    assert cache.stem == made.fingerprint
    doc = json.loads(cache.read_text())
    del doc["dn_max"], doc["dt_max"]  # as files written before the reach was recorded
    cache.write_text(json.dumps(doc))
    again = ladder_calibration(runs, "hellaswag", TwoStepConfig(), 40, None, said.append)
    assert "reusing" not in said[-1] and again.dn_max == made.dn_max
