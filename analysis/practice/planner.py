"""Ladder planner: how much does a cheaper ladder cost in prediction error?

Backtest on an existing ladder (the ladder paper's compute-vs-error analysis; the
Hitchhiker's "how many models"): hold out a target (by default the largest size), then for
each candidate sub-grid of the remaining runs (drop each size, drop each token multiplier,
drop the largest multipliers, keep only the k smallest sizes, user-given drop lists) fit the
two-step law and predict the held-out runs. Each candidate gets its compute (sum of 6 N D over
the runs it uses) and its errors (accuracy MAE per task and mean, step-1 loss ARE); the
cheapest candidate within an error budget is recommended.

    plan = plan_ladder(runs, tasks="paper", budget_error=0.01)
    plan.table(); plan.recommended; plan.to_json()

One backtest is one draw: differences of a few tenths of a point between candidates are
within the noise of which runs happened to be held out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.laws.registry import step1_law
from analysis.practice.backtest import (BacktestResult, _held_out, mults_by_value, run_mult, run_size,
                               sizes_by_n, split_holdout)
from analysis.predict import Target, predict_targets
from analysis.runlog import RunLog
from analysis.twostep import TwoStepConfig

MIN_RUNS = 5  # as analysis.practice.backtest: fewer runs cannot pin a 4-parameter law plus a link


def run_compute(run: RunLog) -> float:
    """Training FLOPs of one run, 6 N D (D = tokens it reached)."""
    return 6.0 * float(run.n) * float(run.d)


@dataclass
class Candidate:
    """One sub-grid of the ladder and its backtest errors (fractions, not points)."""

    name: str
    kind: str  # full | drop size | drop multiplier | drop largest multipliers | keep smallest sizes | custom
    runs: list[str]
    compute: float
    sizes: list[str]
    mults: list[str]
    feasible: bool = True
    reason: str = ""
    per_task_mae: dict[str, float] = field(default_factory=dict)
    per_task_loss_are: dict[str, float] = field(default_factory=dict)
    mae: float = float("nan")
    loss_are: float = float("nan")
    converged: bool = True
    aliases: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        f = lambda v: float(v) if np.isfinite(v) else None  # noqa: E731
        return {"name": self.name, "kind": self.kind, "aliases": self.aliases, "runs": self.runs,
                "n_runs": len(self.runs), "sizes": self.sizes, "multipliers": self.mults,
                "compute_flops": self.compute, "feasible": self.feasible, "reason": self.reason,
                "mae": f(self.mae), "loss_are": f(self.loss_are), "converged": self.converged,
                "per_task_mae": {k: f(v) for k, v in self.per_task_mae.items()},
                "per_task_loss_are": {k: f(v) for k, v in self.per_task_loss_are.items()}}


@dataclass
class LadderPlan:
    holdout: list[str]
    targets: list[str]
    candidates: list[Candidate]
    budget_error: float | None
    recommended: Candidate | None
    target_compute: float | None = None

    @property
    def full(self) -> Candidate:
        return self.candidates[0]

    def table(self) -> str:
        tasks = list(self.full.per_task_mae)
        out = ["| grid | runs | compute (FLOPs) | vs full | "
               + ("vs target | " if self.target_compute else "")
               + "acc MAE | loss ARE % | " + " | ".join(tasks) + " |\n",
               "|---|---|---|---|" + ("---|" if self.target_compute else "") + "---|---|"
               + "---|" * len(tasks) + "\n"]
        for c in self.candidates:
            mark = " **(recommended)**" if c is self.recommended else ""
            row = [f"{c.name}{mark}", str(len(c.runs)), f"{c.compute:.3g}",
                   f"{c.compute / self.full.compute:.2f}"]
            if self.target_compute:
                row.append(f"{c.compute / self.target_compute:.2%}")
            if c.feasible:
                row += [f"{100 * c.mae:.2f}" + ("" if c.converged else " (n.c.)"),
                        f"{100 * c.loss_are:.2f}"]
                row += [f"{100 * c.per_task_mae.get(t, np.nan):.2f}" for t in tasks]
            else:
                row += [f"— ({c.reason})", "—"] + ["—"] * len(tasks)
            out.append("| " + " | ".join(row) + " |\n")
        return "".join(out)

    def to_json(self) -> dict:
        return {"holdout": self.holdout, "targets": self.targets,
                "budget_error": self.budget_error, "target_compute_flops": self.target_compute,
                "recommended": None if self.recommended is None else self.recommended.name,
                "candidates": [c.to_json() for c in self.candidates]}


def _grid_of(runs: list[RunLog]) -> tuple[list[str], list[str]]:
    return sizes_by_n(runs), mults_by_value(runs)


def candidate_grids(train: list[RunLog], drops: list[list[str]] = ()) -> list[tuple[str, str, list[RunLog]]]:
    """(name, kind, runs) for the full grid and its systematic reductions, then ``drops``
    (each a list of sizes/multipliers to remove). Unknown names in ``drops`` raise."""
    sizes, mults = _grid_of(train)
    known = sizes + mults
    out = [("full", "full", list(train))]
    for s in sizes:
        out.append((f"drop {s}", "drop size", [r for r in train if run_size(r) != s]))
    for m in mults:
        out.append((f"drop {m}", "drop multiplier", [r for r in train if run_mult(r) != m]))
    for k in range(2, len(mults)):  # k = 1 is "drop <largest multiplier>" above
        out.append((f"drop {'+'.join(mults[-k:])}", "drop largest multipliers",
                    [r for r in train if run_mult(r) not in mults[-k:]]))
    for k in range(1, len(sizes) - 1):  # keep k smallest; k = len-1 is "drop <largest size>"
        out.append((f"keep {'+'.join(sizes[:k])}", "keep smallest sizes",
                    [r for r in train if run_size(r) in sizes[:k]]))
    for d in drops:
        unknown = [x for x in d if x not in known]
        if unknown:
            raise ValueError(f"--drop {','.join(d)}: {', '.join(unknown)} is not a model size or "
                             f"token multiplier of the fitting runs (have: {', '.join(known)})")
        out.append((f"drop {'+'.join(d)}", "custom", [r for r in train if not _held_out(r, d)]))
    return out


def _feasibility(runs: list[RunLog], config: TwoStepConfig) -> str:
    if len(runs) < MIN_RUNS:
        return f"{len(runs)} runs < {MIN_RUNS}"
    if len(step1_law(config, 2).inputs(1.0, 1.0)) > 1 and len({float(r.n) for r in runs}) < 2:
        return "one model size: N term not identified"  # a law of N and D, not of compute
    return ""


def plan_ladder(runs: list[RunLog], holdout: list[str] | None = None, tasks="paper",
                config: TwoStepConfig = TwoStepConfig(), *, drops: list[list[str]] = (),
                budget_error: float | None = None, target_compute: float | None = None,
                include_systematic: bool = True, workers: int | None = None) -> LadderPlan:
    """Backtest every candidate sub-grid of the runs not in ``holdout`` (default: the largest
    size) on the held-out runs. ``budget_error`` is an accuracy MAE (fraction, e.g. 0.01 = 1
    point): the cheapest feasible, converged candidate within it is ``recommended``.
    Identical run sets are fitted once (names merged as aliases)."""
    sizes = sizes_by_n(runs)
    if len(sizes) < 3:
        raise ValueError(f"the ladder has {len(sizes)} model size(s) ({', '.join(sizes)}); "
                         f"planning needs at least 3 (one held out, two to fit)")
    holdout = list(holdout) if holdout else sizes[-1:]
    train, test = split_holdout(runs, holdout)
    if not test:
        raise ValueError(f"--holdout {', '.join(holdout)} selects no run to predict")
    bad = _feasibility(train, config)
    if bad:
        raise ValueError(f"holding out {', '.join(holdout)} leaves a grid that cannot be fitted "
                         f"({bad})")
    grids = candidate_grids(train, drops)
    if not include_systematic:
        grids = grids[:1] + [g for g in grids if g[1] == "custom"]
    for name, kind, rs in grids:
        if kind == "custom" and _feasibility(rs, config):
            raise ValueError(f"--drop {name[5:].replace('+', ',')} leaves {len(rs)} run(s) "
                             f"({_feasibility(rs, config)}); nothing to fit")
    targets = [Target(r.name, float(r.n), r.d) for r in test]
    actuals = {r.name: r for r in test}
    done: dict[frozenset, Candidate] = {}
    cands: list[Candidate] = []
    for name, kind, rs in grids:
        key = frozenset(r.name for r in rs)
        if key in done:
            done[key].aliases.append(name)
            continue
        s, m = _grid_of(rs)
        c = Candidate(name, kind, sorted(key), float(sum(run_compute(r) for r in rs)), s, m)
        c.reason = _feasibility(rs, config)
        c.feasible = not c.reason
        if c.feasible:
            preds = predict_targets(rs, targets, tasks, config, actuals=actuals, intervals=False,
                                    warn=lambda msg: None, workers=workers)
            bt = BacktestResult(holdout, preds)
            c.per_task_mae, c.mae = bt.per_task(), bt.mae()
            c.per_task_loss_are, c.loss_are = bt.per_task_loss_are(), bt.loss_are()
            c.converged = all(p.converged for p in preds)
        done[key] = c
        cands.append(c)
    rec = None
    if budget_error is not None:
        ok = [c for c in cands if c.feasible and c.converged and c.mae <= budget_error]
        rec = min(ok, key=lambda c: (c.compute, c.mae)) if ok else None
    return LadderPlan(holdout, [t.name for t in targets], cands, budget_error, rec, target_compute)


def plot_plan(plan: LadderPlan, path) -> None:
    """Accuracy MAE vs ladder compute, one labelled point per feasible candidate."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5.5))
    colors = {"full": "k", "drop size": "tab:blue", "drop multiplier": "tab:orange",
              "drop largest multipliers": "tab:red", "keep smallest sizes": "tab:green",
              "custom": "tab:purple"}
    seen = set()
    for c in plan.candidates:
        if not c.feasible:
            continue
        ax.scatter(c.compute, 100 * c.mae, color=colors.get(c.kind, "gray"), s=40,
                   marker="o" if c.converged else "x",
                   label=None if c.kind in seen else c.kind, zorder=3)
        seen.add(c.kind)
        ax.annotate(c.name, (c.compute, 100 * c.mae), fontsize=7, xytext=(4, 3),
                    textcoords="offset points")
    if plan.budget_error is not None:
        ax.axhline(100 * plan.budget_error, color="gray", ls="--", lw=1, label="error budget")
    if plan.recommended is not None:
        r = plan.recommended
        ax.scatter(r.compute, 100 * r.mae, s=160, facecolors="none", edgecolors="k", zorder=4,
                   label="recommended")
    ax.set_xscale("log")
    ax.set_xlabel("ladder compute (sum of 6ND over runs, FLOPs)")
    ax.set_ylabel("backtest accuracy MAE (points)")
    ax.set_title(f"Predicting {', '.join(plan.holdout)} from sub-grids of the ladder")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
