"""The paper's single-step baseline: accuracy as the link of the loss law, fitted jointly."""

from __future__ import annotations

import numpy as np

from analysis.laws import Law, SigmoidLink, sigmoid_model


class SingleStepLaw(Law):
    """Acc(N, D) = link(E + A/N^alpha + B/D^beta), all 9 parameters fitted jointly on the
    runs' final accuracies (the paper's single-step baseline). Started from the two-step fit."""

    resid_scale = 0.01

    def __init__(self, loss_law: Law, link: SigmoidLink):
        self.loss_law, self.link = loss_law, link  # fitted: they are the start and the bounds
        self.p1 = len(loss_law.theta_)
        self.param_names = tuple(loss_law.param_names) + tuple(link.param_names)

    def inputs(self, n, d) -> tuple:
        return self.loss_law.inputs(n, d)

    def features(self, *X):
        return self.loss_law.features(*X)

    def model(self, theta, F):
        t1, t2 = theta[:, :self.p1], theta[:, self.p1:]
        z, J1 = self.loss_law.model(t1, F)
        L = np.exp(z)
        xs = np.log(L) if self.link.log_input else L
        # the link with per-row inputs (each parameter row has its own predicted loss)
        acc, J2 = sigmoid_model(t2, xs)
        dx = -J2[..., 3]  # d acc / d xs
        dz = dx * (1.0 if self.link.log_input else L)  # d xs / d z
        J = np.concatenate([J1 * dz[..., None], J2], axis=-1)
        return acc, J

    def starts(self, F, z, w):
        return np.concatenate([self.loss_law.theta_, self.link.theta_])[None, :]

    def bounds(self, F, z):
        b1 = self.loss_law.bounds(*self.loss_law._fit_data[:2])
        b2 = self.link.bounds(*self.link._fit_data[:2])
        return np.concatenate([b1, b2])

    def named(self, t):
        return {**self.loss_law.named(t[:self.p1]), **self.link.named(t[self.p1:])}
