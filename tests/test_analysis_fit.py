"""The fitter: recovers published Chinchilla parameters, is stable on 8-16 points,
deterministic, and never hides a failed fit."""

import numpy as np
import pytest

from analysis import ChinchillaLaw, ComputeLaw, FitError, LogSigmoidLink, SigmoidLink, fit_loss_law

# Hoffmann et al. (2022) Approach 3 fit.
CHINCHILLA = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)


def chinchilla_loss(n, d, p=CHINCHILLA):
    return p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]


def chinchilla_table(m, noise, seed):
    """A Chinchilla-like table: N 70M-16B, D 5B-500B (log-uniform), log-normal noise."""
    rng = np.random.default_rng(seed)
    n = np.exp(rng.uniform(np.log(7e7), np.log(1.6e10), m))
    d = np.exp(rng.uniform(np.log(5e9), np.log(5e11), m))
    return n, d, chinchilla_loss(n, d) * np.exp(rng.normal(0, noise, m))


def test_recovers_published_chinchilla_fit():
    n, d, loss = chinchilla_table(400, noise=0.005, seed=0)
    law = fit_loss_law(n, d, loss)
    assert law.converged_ and law.result_.n_agree >= 2
    assert law.E == pytest.approx(1.69, abs=0.03)
    assert law.alpha == pytest.approx(0.34, abs=0.02)
    assert law.beta == pytest.approx(0.28, abs=0.02)
    assert law.A == pytest.approx(406.4, rel=0.3)
    assert law.B == pytest.approx(410.7, rel=0.3)
    assert set(law.params_) == {"E", "A", "B", "alpha", "beta"}
    # and it extrapolates: a 70B model on 1.4T tokens (Chinchilla itself)
    assert law.predict(7e10, 1.4e12)[0] == pytest.approx(chinchilla_loss(7e10, 1.4e12), rel=0.005)


def test_recovers_exactly_without_noise():
    n, d, loss = chinchilla_table(200, noise=0.0, seed=1)
    law = fit_loss_law(n, d, loss)
    for k, v in CHINCHILLA.items():
        assert getattr(law, k) == pytest.approx(v, rel=2e-3), k


@pytest.mark.parametrize("m", [8, 12, 16])
def test_stable_on_few_points(m):
    """A ladder-shaped design (4 sizes x 2-4 token multipliers, 0.5% noise): converges, fits
    the points to within the noise and extrapolates 10x in N within 4% (noise-free: 0.5%)."""
    sizes = np.array([1.9e8, 3.7e8, 7.6e8, 1.3e9])
    mults = np.array([1, 2, 5, 10])[: m // 4] if m < 16 else np.array([1, 2, 5, 10])
    if m == 8:
        mults = np.array([1, 10])
    if m == 12:
        mults = np.array([1, 3, 10])
    n, d = (a.ravel() for a in np.meshgrid(sizes, 20 * mults, indexing="ij"))
    d = d * n
    rng = np.random.default_rng(m)
    loss = chinchilla_loss(n, d) * np.exp(rng.normal(0, 0.005, n.size))
    law = fit_loss_law(n, d, loss)
    assert law.converged_
    assert np.max(np.abs(np.log(law.predict(n, d) / loss))) < 0.02
    truth = chinchilla_loss(1.3e10, 2.6e11)
    assert law.predict(1.3e10, 2.6e11)[0] == pytest.approx(truth, rel=0.04)
    exact = fit_loss_law(n, d, chinchilla_loss(n, d))
    assert exact.converged_
    assert exact.predict(1.3e10, 2.6e11)[0] == pytest.approx(truth, rel=0.005)


def test_deterministic():
    n, d, loss = chinchilla_table(16, noise=0.01, seed=3)
    a, b = fit_loss_law(n, d, loss), fit_loss_law(n, d, loss)
    assert a.params_ == b.params_
    assert a.result_.loss == b.result_.loss


def test_nonconverged_is_flagged_or_raised():
    n, d, loss = chinchilla_table(40, noise=0.01, seed=4)
    law = ChinchillaLaw()
    law.tol = 0.0  # an impossible convergence criterion: the fit must not claim success
    with pytest.warns(RuntimeWarning, match="did not converge"):
        law.fit(n, d, y=loss)
    assert not law.converged_ and "NOT CONVERGED" in repr(law)
    strict = ChinchillaLaw()
    strict.tol = 0.0
    with pytest.raises(FitError, match="did not converge"):
        strict.fit(n, d, y=loss, strict=True)


def test_lbfgsb_second_opinion_when_no_start_converges(monkeypatch):
    """Starts the vectorised Levenberg-Marquardt refit leaves unconverged are refined again by
    scipy's L-BFGS-B before the fit is flagged: same optimum, and the result says which method."""
    import analysis.fit as fit

    n, d, loss = chinchilla_table(40, noise=0.01, seed=4)
    usual = ChinchillaLaw().fit(n, d, y=loss)
    assert usual.converged_ and usual.result_.message == "Levenberg-Marquardt"
    monkeypatch.setattr(fit, "_newton_stacked", lambda obj, theta0, *a, **k: (
        np.array(theta0, float), np.zeros(len(theta0), bool), 0))  # no progress from the starts
    law = ChinchillaLaw().fit(n, d, y=loss)
    assert law.converged_ and law.result_.message.startswith("scipy L-BFGS-B")
    for k, v in usual.params_.items():
        assert law.params_[k] == pytest.approx(v, rel=1e-3, abs=1e-4), k


def _laws_at_random_parameters():
    """Every law with a hand-written Jacobian, set up on ladder-shaped inputs, with parameter
    rows drawn inside its bounds (so some rows have another term above the irreducible one)."""
    from analysis.laws import TiedChinchillaLaw
    from analysis.twostep.direct import DirectLaw, FreeDirectLaw

    rng = np.random.default_rng(0)
    n, d, loss = chinchilla_table(24, noise=0.01, seed=5)
    acc = np.clip(1.2 - 0.3 * loss, 0.05, 0.95)
    cases = [(ChinchillaLaw(), (n, d), loss), (TiedChinchillaLaw(), (n, d), loss),
             (ComputeLaw(), (6 * n * d,), loss), (SigmoidLink(), (loss,), acc),
             (LogSigmoidLink(), (loss,), acc), (DirectLaw(), (n, d), acc),
             (FreeDirectLaw(), (n, d), acc)]
    for law, X, y in cases:
        law.set_scale(*X)
        F, z = law.features(*X), law.to_target_space(np.asarray(y, float))
        b = law.bounds(F, z)
        lo, hi = np.maximum(b[:, 0], -8), np.minimum(b[:, 1], 8)
        yield law, F, lo + (hi - lo) * rng.uniform(0.05, 0.95, size=(6, len(lo)))


def test_jacobians_match_finite_differences():
    """The analytic Jacobian of every law's model equals central differences, parameter by
    parameter (a wrong column fits silently wherever that parameter does not matter)."""
    for law, F, theta in _laws_at_random_parameters():
        pred, J = law.model(theta, F)
        assert J.shape == pred.shape + (theta.shape[1],), type(law).__name__
        for k in range(theta.shape[1]):
            h = 1e-6 * np.maximum(1.0, np.abs(theta[:, k:k + 1]))
            up, down = theta.copy(), theta.copy()
            up[:, k:k + 1] += h
            down[:, k:k + 1] -= h
            fd = (law.model(up, F)[0] - law.model(down, F)[0]) / (2 * h)
            np.testing.assert_allclose(J[..., k], fd, rtol=1e-5, atol=1e-7,
                                       err_msg=f"{type(law).__name__} parameter {k}")


def test_too_few_points_rejected():
    with pytest.raises(ValueError, match="cannot determine 5 parameters"):
        fit_loss_law([1e8, 2e8, 3e8], [1e9, 2e9, 3e9], [3.0, 2.9, 2.8])


def test_compute_law_recovers():
    c = np.geomspace(1e18, 1e22, 30)
    loss = 1.8 + 300.0 / c ** 0.12
    law = ComputeLaw().fit(c, y=loss)
    assert law.converged_
    assert law.E == pytest.approx(1.8, rel=1e-2) and law.alpha == pytest.approx(0.12, rel=2e-2)


@pytest.mark.parametrize("cls", [SigmoidLink, LogSigmoidLink])
def test_links_recover(cls):
    rng = np.random.default_rng(0)
    x = np.linspace(0.6, 1.6, 300)
    true = cls()
    feats = np.log(x) if cls is LogSigmoidLink else x
    lo, hi, k, x0 = 0.25, 0.9, 8.0, float(np.median(feats))
    acc = lo + (hi - lo) / (1 + np.exp(k * (feats - x0))) + rng.normal(0, 0.005, x.size)
    law = cls().fit(x, y=acc)
    assert law.converged_
    p = law.params_
    assert p["b"] == pytest.approx(lo, abs=0.03) and p["a"] + p["b"] == pytest.approx(hi, abs=0.03)
    assert p["k"] == pytest.approx(-k, rel=0.15)
    assert set(p) >= {"a", "k", "L0", "b"}
    assert np.all((law.predict(np.array([0.1, 5.0])) >= 0) & (law.predict(np.array([0.1, 5.0])) <= 1))
    del true


def test_link_floor_pins_lower_asymptote():
    x = np.linspace(0.8, 1.2, 50)
    acc = 0.3 + 0.4 / (1 + np.exp(10 * (x - 1.0)))
    law = SigmoidLink(floor=0.25).fit(x, y=acc)
    assert law.params_["b"] == pytest.approx(0.25)


def test_bootstrap_refits_are_stacked_and_checked():
    n, d, loss = chinchilla_table(16, noise=0.005, seed=5)
    law = fit_loss_law(n, d, loss)
    rng = np.random.default_rng(0)
    W = np.stack([np.bincount(rng.integers(0, 16, 16), minlength=16) for _ in range(50)])
    th, ok = law.bootstrap(W.astype(float))
    assert th.shape == (50, 5) and ok.mean() > 0.8
    preds = law.predict_theta(th[ok], 7e10, 1.4e12)[:, 0]
    assert np.all(np.isfinite(preds))


def test_stacked_bootstraps_of_several_laws_are_bit_identical_to_one_by_one():
    """Laws fitted on the same inputs are refitted together (analysis.laws.stacked); every
    replicate must take exactly the steps it takes alone, whatever else is in the stack."""
    from analysis.laws import TiedChinchillaLaw
    from analysis.laws.stacked import bootstrap_many
    n, d, base = chinchilla_table(24, noise=0.0, seed=7)
    rng = np.random.default_rng(1)
    laws = [TiedChinchillaLaw().fit(n, d, y=base * np.exp(rng.normal(0, s, 24))) for s in (0.003, 0.01, 0.03)]
    laws.append(ChinchillaLaw().fit(n, d, y=base))  # another kind: refitted on its own
    laws.append(TiedChinchillaLaw().fit(n[:20], d[:20], y=base[:20]))  # other inputs: alone
    Ws = [np.stack([np.bincount(rng.integers(0, len(l._fit_data[2]), len(l._fit_data[2])),
                                minlength=len(l._fit_data[2])) for _ in range(30)]).astype(float)
          for l in laws]
    alone = [l.bootstrap(W) for l, W in zip(laws, Ws)]
    together = bootstrap_many(laws, Ws)
    for (th_a, ok_a), (th_t, ok_t) in zip(alone, together):
        assert np.array_equal(th_a, th_t) and np.array_equal(ok_a, ok_t)
    assert sum(ok.sum() for _, ok in together) > 0.8 * 150


def test_singular_step_falls_back_per_problem_when_stacked():
    from analysis.fit import _solve
    A = np.stack([np.eye(2), np.zeros((2, 2)), 2 * np.eye(2)])
    b = np.ones((3, 2))
    # a singular matrix in block 1 switches only that block to the pseudo-inverse
    got = _solve(A, b, np.array([0, 1, 2]))
    assert np.array_equal(got[0], [1.0, 1.0]) and np.array_equal(got[1], [0.0, 0.0])
    assert np.array_equal(got[2], np.linalg.solve(A[2:], b[2:, :, None])[0, :, 0])
