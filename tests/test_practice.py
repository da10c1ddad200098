"""Estimation practice: checkpoint selection, ARE, partial-target fits, borrowed exponents,
no-law baselines (synthetic ladder with a known law), and the intermediate-vs-final backtest
on the OLMo ladder (computed correctly, whichever way it comes out)."""

import warnings

import numpy as np
import pytest

from analysis.practice.backtest import backtest
from analysis.practice.estimation import (FixedExponentLaw, LossLawEstimator, PartialRun, are,
                               borrowed_exponents, compare_configs, partial_baselines,
                               partial_series, practice_backtest, step1_points_configs)
from analysis.predict import actual_values
from analysis.runlog import PAPER_N, read_runs
from analysis.metrics import PAPER_TASKS
from analysis.twostep import TwoStepConfig, fit_task, run_series

from analysis_synthetic import LAW, true_bpb, write_ladder

HELLA = PAPER_TASKS["hellaswag"]


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    return read_runs(write_ladder(tmp_path_factory.mktemp("ladder"), noise=0.001))


def test_are():
    assert np.allclose(are([1.1, 0.9, 2.0], [1.0, 1.0, 2.0]), [0.1, 0.1, 0.0])


def test_fixed_exponent_law_recovers_coefficients():
    n = np.repeat([1e8, 3e8, 1e9], 4)
    d = n * np.tile([20, 40, 100, 200], 3)
    y = true_bpb(n, d)
    law = FixedExponentLaw(LAW["alpha"], LAW["beta"]).fit(n, d, y=y, strict=True)
    p = law.params_
    assert (p["alpha"], p["beta"]) == (LAW["alpha"], LAW["beta"])
    for k in ("E", "A", "B"):
        assert p[k] == pytest.approx(LAW[k], rel=0.01)
    with pytest.raises(ValueError, match="exponents must be positive"):  # checked by fit
        FixedExponentLaw(0.0, 0.3).fit(n, d, y=y)


def test_estimator_points_and_params(ladder):
    final = LossLawEstimator(HELLA, points="final").fit(ladder)
    inter = LossLawEstimator(HELLA, drop_frac=0.1, per_run=8).fit(ladder)
    assert final.n_points_ == 16 and inter.n_points_ == 16 * 8
    assert final.converged_ and inter.converged_
    n, d = PAPER_N["7B"], 4e11
    for est in (final, inter):
        assert est.predict(n, d)[0] == pytest.approx(true_bpb(n, d), rel=0.02)
        assert set(est.params_) == {"E", "A", "B", "alpha", "beta"}
    # the drop is by a fraction of each run or by tokens: a token cut above every run's end
    # leaves one point per run (its last)
    cut = LossLawEstimator(HELLA, drop_tokens=1e15).fit(ladder)
    assert cut.n_points_ == 16
    with pytest.raises(RuntimeError, match="not fitted"):
        LossLawEstimator(HELLA).predict(1e9, 1e10)
    with pytest.raises(ValueError, match="drop_frac"):
        LossLawEstimator(HELLA, drop_frac=1.5)


def test_borrowed_exponents_from_another_ladder(ladder, tmp_path):
    """Exponents from the full ladder, then only E, A, B on a two-size cheap ladder."""
    alpha, beta = borrowed_exponents(ladder, HELLA, exponents="free")
    # E and the exponents trade off along a shallow valley: recovered to a few hundredths
    assert alpha == pytest.approx(LAW["alpha"], abs=0.05) and beta == pytest.approx(LAW["beta"], abs=0.05)
    small = read_runs(write_ladder(tmp_path, sizes=("190M", "370M"), mults=(1, 2), seed=1,
                                   noise=0.001))
    est = LossLawEstimator(HELLA, fixed_exponents=(alpha, beta)).fit(small)
    assert est.exponents_ == (alpha, beta)
    n, d = PAPER_N["1B"], 200 * PAPER_N["1B"]
    assert est.predict(n, d)[0] == pytest.approx(true_bpb(n, d), rel=0.02)
    one_size = [r for r in small if r.name.startswith("190M")]
    with pytest.raises(ValueError, match="same N"):
        LossLawEstimator(HELLA).fit(one_size)
    LossLawEstimator(HELLA, fixed_exponents=(alpha, beta)).fit(one_size)  # fine with fixed ones


def test_partial_run_and_baselines(ladder):
    target = next(r for r in ladder if r.name == "1B-10xC")
    s = run_series(target, HELLA, "bpb")
    part = partial_series(s, 0.3, s.d)
    assert part.tokens[-1] <= 0.3 * s.d and part.tokens.size == 9  # 30 evals, evenly spaced
    with pytest.raises(ValueError, match="within the first"):
        partial_series(s, 0.01, s.d)
    with pytest.raises(ValueError, match="must be in"):
        PartialRun(target, 1.2, s.d)
    b = partial_baselines(target, HELLA, 0.3, s.d)
    assert b["best_so_far"] <= b["last_observed"]
    actual = actual_values(target, HELLA)[1]
    # no-law baselines overestimate the final loss (the run is still improving); the power law
    # in D of the partial run alone extrapolates the known law
    assert b["last_observed"] > actual * 1.02
    assert b["power_law_in_d"] == pytest.approx(actual, rel=0.02)
    rest = [r for r in ladder if not r.name.startswith("1B")]
    est = LossLawEstimator(HELLA).fit(rest, partial=[PartialRun(target, 0.3, s.d)])
    assert est.n_points_ == 12 * 8 + 7  # the partial run's points after 10% of planned D
    assert est.predict(target.n, target.d)[0] == pytest.approx(actual, rel=0.02)


def test_practice_backtest_rows(ladder):
    res = practice_backtest(ladder, ["1B"], {"final": dict(points="final"),
                                             "inter": dict(drop_frac=0.1)},
                            {"hellaswag": HELLA}, partial_fracs=(0.3,))
    assert res.methods == ["final", "final + partial 30%", "inter", "inter + partial 30%",
                           "baseline last observed 30%", "baseline best so far 30%",
                           "baseline power law in d 30%"]
    assert len(res.rows) == 7 * 4
    for m in res.methods:
        rows = [r for r in res.rows if r.method == m]
        assert res.loss_are(m) == pytest.approx(np.mean([abs(r.pred_loss / r.actual_loss - 1) for r in rows]))
    assert res.loss_are("final") < 0.02 and res.acc_mae("final") < 0.02
    assert res.loss_are("baseline last observed 30%") > 5 * res.loss_are("final")
    assert "| **mean** |" in res.table() and res.to_json()["summary"]["final"]["acc_mae"] > 0
    with pytest.raises(ValueError, match="no such model size"):
        practice_backtest(ladder, ["3B"], {"final": {}}, {"hellaswag": HELLA})


def test_step1_min_tokens_in_twostep(ladder):
    cfg = TwoStepConfig(step1_min_frac=0.0, step1_min_tokens=1e15)
    assert fit_task(ladder, HELLA, cfg).data1.y.size == 16
    with pytest.raises(ValueError, match="step1_min_frac"):
        TwoStepConfig(step1_min_frac=2.0)


# ------------------------------------------------------------------------- the OLMo ladder


def test_intermediate_vs_final_on_olmo_ladder(olmo_ladder_dir):
    """The must-show comparison, 2 of the 8 tasks (the benchmark runs all 8): every number
    in the table is recomputed here from separate fits of the held-out 1B runs."""
    warnings.simplefilter("ignore")
    runs = read_runs(sorted(olmo_ladder_dir.glob("*xC.csv")))
    tasks = {k: PAPER_TASKS[k] for k in ("hellaswag", "arc_easy")}
    configs = step1_points_configs(0.1)
    assert list(configs) == ["final", "intermediate, first 10% dropped",
                             "current default (intermediate, first 50% dropped)"]
    res = compare_configs(runs, ["1B"], configs, tasks)
    train = [r for r in runs if not r.name.startswith("1B-")]
    test = [r for r in runs if r.name.startswith("1B-")]
    assert len(train) == 12 and len(test) == 4
    for name, cfg in configs.items():
        for tname, task in tasks.items():
            m = fit_task(train, task, cfg)
            ares, errs = [], []
            for r in test:
                acc, loss = actual_values(r, task, cfg.feature, cfg.last)
                ares.append(abs(m.predict_loss(r.n, r.d)[0] - loss) / loss)
                errs.append(abs(m.predict_acc(r.n, r.d)[0] - acc))
            assert res.loss_are(name, tname) == pytest.approx(np.mean(ares), rel=1e-9)
            assert res.acc_mae(name, tname) == pytest.approx(np.mean(errs), rel=1e-9)
        # the final-points fit really uses one point per run, the others several
        assert m.data1.y.size == (12 if cfg.step1_points == "final" else 12 * 8)
    # the summary is the mean over the tasks, as the backtest reports it
    r = backtest(runs, ["1B"], tasks, configs["final"], warn=lambda m: None)
    assert res.loss_are("final") == pytest.approx(r.loss_are())
    assert res.acc_mae("final") == pytest.approx(r.mae())
    assert all(0 < res.loss_are(m) < 0.1 for m in res.methods)
