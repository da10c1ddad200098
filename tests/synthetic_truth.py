"""Synthetic ladders with known truth, for choosing methods by backtests that reach as far as real
targets do (15-150x beyond a ladder in tokens per parameter, 5-35x in N), which no real ladder's
in-ladder backtests can. Each family is a task-loss law and per-task links; some match the
default method's form, others do not (free exponents, a link in L with a ceiling below 1), so a
choice that wins only on its own form shows it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.metrics import TaskSpec
from analysis.predict import Target
from analysis.runlog import RunLog, RunMeta

SIZES = (20e6, 50e6, 100e6, 200e6)
MULTS = (1, 2, 5, 10)
TARGET_N = (1e9, 7e9)  # 5x and 35x the largest rung
TARGET_TPP = (3000.0, 30000.0)  # 15x and 150x the ladder's largest tokens per parameter


@dataclass(frozen=True)
class Law:
    E: float = 0.5
    A: float = 60.0
    B: float = 200.0
    alpha: float = 0.3
    beta: float = 0.3

    def loss(self, n, d):
        return self.E + self.A / np.asarray(n, float) ** self.alpha + self.B / np.asarray(d, float) ** self.beta


@dataclass(frozen=True)
class Link:
    lo: float  # chance
    x0: float  # knee, in ln L (log link) or L
    s: float
    hi: float = 1.0
    log: bool = True

    def acc(self, loss):
        x = np.log(loss) if self.log else np.asarray(loss, float)
        return self.lo + (self.hi - self.lo) / (1 + np.exp(self.s * (x - self.x0)))


# task -> link: the ladder spans the knee; the knee lies between ladder and targets; the ladder
# barely leaves its floor (the knee far beyond it)
LOG_LINKS = {"easy": Link(0.25, 0.1, 5.0), "medium": Link(0.5, -0.25, 6.0), "hard": Link(0.25, -0.5, 8.0)}
FAMILIES = {
    "tied, log-sigmoid": (Law(), LOG_LINKS),
    "untied (alpha 0.34, beta 0.26)": (Law(A=110.0, B=100.0, alpha=0.34, beta=0.26), LOG_LINKS),
    "sigmoid in L, ceiling 0.85": (Law(), {"easy": Link(0.25, 1.1, 4.0, 0.85, False),
                                           "medium": Link(0.5, 0.8, 6.0, 0.85, False),
                                           "hard": Link(0.25, 0.62, 9.0, 0.85, False)}),
}


def ladder(family: str, *, n_evals: int = 10, final_only: bool = False, seed: int = 0,
           loss_noise: float = 0.004, acc_noise: float = 0.006, sizes=SIZES, mults=MULTS):
    """(runs, tasks) of one family: the task loss and accuracy of every checkpoint with noise."""
    law, links = FAMILIES[family]
    rng = np.random.default_rng(seed)
    runs = []
    for n in sizes:
        for m in mults:
            d_final = 20 * m * n
            tokens = np.linspace(d_final / n_evals, d_final, n_evals)[-1:] if final_only else \
                np.linspace(d_final / n_evals, d_final, n_evals)
            cols = {"step": np.arange(1.0, tokens.size + 1), "tokens": tokens}
            for task, link in links.items():
                loss = law.loss(n, tokens) * np.exp(rng.normal(0, loss_noise, tokens.size))
                cols[f"{task}/loss"] = loss
                cols[f"{task}/acc"] = np.clip(link.acc(loss) + rng.normal(0, acc_noise, tokens.size), 0, 1)
            runs.append(RunLog(RunMeta(f"{n / 1e6:g}M-{m}xC", n_params=int(n), size=f"{n / 1e6:g}M",
                                       multiplier=float(m)), cols, f"synthetic {family}"))
    tasks = {t: TaskSpec(t, ((f"{t}/acc", 1.0),), ((f"{t}/loss", 1.0),), link.lo, "acc")
             for t, link in links.items()}
    return runs, tasks


def far_targets():
    return [Target(f"{n / 1e9:g}B@{tpp:g}", n, n * tpp) for n in TARGET_N for tpp in TARGET_TPP]


def truth(family: str, task: str, target: Target) -> float:
    law, links = FAMILIES[family]
    return float(links[task].acc(law.loss(target.n, target.d)))
