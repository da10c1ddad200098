"""The direct method (arXiv 2512.08894 eq. 4): -log Acc = A/N^alpha + B/D^beta."""

import numpy as np
import pytest

from analysis import Target, TwoStepConfig, predict_target, read_runs
from analysis.twostep.direct import DirectLaw, FreeDirectLaw

from analysis_synthetic import write_ladder


def _grid(A=200.0, B=700.0, alpha=0.3, beta=0.3):
    n = np.repeat([1.9e8, 3.7e8, 7.6e8, 1.3e9], 4)
    d = n * 20 * np.tile([1, 2, 5, 10], 4)
    return n, d, np.exp(-(A / n ** alpha + B / d ** beta))


def test_direct_law_recovers_its_parameters_and_extrapolates():
    n, d, acc = _grid()
    law = DirectLaw().fit(n, d, y=acc, strict=True)
    p = law.params_
    assert p["alpha"] == pytest.approx(0.3, abs=1e-3) and p["beta"] == p["alpha"]
    assert p["A"] == pytest.approx(200, rel=0.02) and p["B"] == pytest.approx(700, rel=0.02)
    big = law.predict(np.array([7e9]), np.array([4e12]))[0]
    assert big == pytest.approx(np.exp(-(200 / 7e9 ** 0.3 + 700 / 4e12 ** 0.3)), abs=1e-4)
    n, d, acc = _grid(alpha=0.35, beta=0.25)
    free = FreeDirectLaw().fit(n, d, y=acc, strict=True).params_
    assert free["alpha"] == pytest.approx(0.35, abs=5e-3) and free["beta"] == pytest.approx(0.25, abs=5e-3)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        DirectLaw().fit(n, d, y=np.concatenate([[1.0], acc[1:]]))


def test_direct_mode_predicts_with_intervals(tmp_path):
    runs = read_runs(write_ladder(tmp_path, mults=(1, 2, 4), n_evals=12))
    cfg = TwoStepConfig(mode="direct")
    p = predict_target(runs, Target("3B", 3.2e9, 1.3e11), "hellaswag", cfg, n_boot=40)[0]
    assert p.converged and "direct" in p.fits and p.fits["direct"]["law"] == "DirectLaw"
    assert p.raw_low < p.pred_acc < p.raw_high
    assert np.isnan(p.pred_loss)  # no intermediate feature
    with pytest.raises(ValueError, match="direct_exponents"):
        TwoStepConfig(mode="direct", direct_exponents="paper")
