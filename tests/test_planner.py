"""Ladder planner: candidate sub-grids, their compute and backtest errors, the recommendation,
the `ladder plan-ladder` CLI and its errors (synthetic ladder with a known law)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.practice.backtest import backtest
from analysis.practice.planner import candidate_grids, plan_ladder
from analysis.runlog import read_runs
from analysis.metrics import PAPER_TASKS

from analysis_synthetic import write_ladder

ROOT = Path(__file__).resolve().parents[1]
HELLA = {"hellaswag": PAPER_TASKS["hellaswag"]}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_ladder(tmp_path_factory.mktemp("ladder"), n_evals=12)


@pytest.fixture(scope="module")
def runs(files):
    return read_runs(files)


@pytest.fixture(scope="module")
def plan(runs):
    return plan_ladder(runs, tasks=HELLA, budget_error=0.01, drops=[["370M", "10xC"]], workers=1)


def test_candidate_grids(runs):
    train = [r for r in runs if not r.name.startswith("1B-")]
    grids = {name: (kind, sorted(r.name for r in rs)) for name, kind, rs in candidate_grids(train)}
    assert list(grids) == ["full", "drop 190M", "drop 370M", "drop 760M", "drop 1xC", "drop 2xC",
                           "drop 5xC", "drop 10xC", "drop 5xC+10xC", "drop 2xC+5xC+10xC",
                           "keep 190M"]
    assert grids["drop 370M"][1] == sorted(f"{s}-{m}xC" for s in ("190M", "760M")
                                           for m in (1, 2, 5, 10))
    assert grids["drop 5xC+10xC"][1] == sorted(f"{s}-{m}xC" for s in ("190M", "370M", "760M")
                                               for m in (1, 2))
    with pytest.raises(ValueError, match="3B is not a model size or token multiplier"):
        candidate_grids(train, [["3B"]])


def test_plan_compute_errors_and_recommendation(plan, runs):
    assert plan.holdout == ["1B"] and len(plan.targets) == 4
    full = plan.full
    assert full.name == "full" and len(full.runs) == 12
    byname = {r.name: r for r in runs}
    for c in plan.candidates:
        assert c.compute == pytest.approx(sum(6 * byname[n].n * byname[n].d for n in c.runs))
        assert c.compute <= full.compute
    # a candidate's error is the backtest of its runs on the held-out 1B runs
    c = next(c for c in plan.candidates if c.name == "drop 370M")
    keep = [r for r in runs if r.name in c.runs or r.name.startswith("1B-")]
    assert c.mae == pytest.approx(backtest(keep, ["1B"], HELLA, warn=lambda m: None).mae())
    assert c.per_task_mae["hellaswag"] == pytest.approx(c.mae)
    # too small grids are reported, not fitted
    infeasible = {c.name: c.reason for c in plan.candidates if not c.feasible}
    assert infeasible == {"drop 2xC+5xC+10xC": "3 runs < 5", "keep 190M": "4 runs < 5"}
    # the custom drop list is evaluated
    assert any(c.kind == "custom" and len(c.runs) == 6 for c in plan.candidates)
    # the recommendation: cheapest feasible converged grid within the budget
    ok = [c for c in plan.candidates if c.feasible and c.converged and c.mae <= 0.01]
    assert plan.recommended is min(ok, key=lambda c: c.compute)
    assert plan.recommended.compute < full.compute  # the synthetic law is exact: cheap grids do
    doc = plan.to_json()
    assert doc["recommended"] == plan.recommended.name
    assert json.loads(json.dumps(doc))["candidates"][0]["n_runs"] == 12
    assert "**(recommended)**" in plan.table()


def test_identical_grids_fitted_once(runs):
    p = plan_ladder(runs, tasks=HELLA, drops=[["760M"]], include_systematic=False, workers=1)
    assert [c.name for c in p.candidates] == ["full", "drop 760M"]
    p = plan_ladder(runs, tasks=HELLA, drops=[["760M"], ["760M"]], include_systematic=False,
                    workers=1)
    assert p.candidates[1].aliases == ["drop 760M"] and p.recommended is None


def test_plan_bad_input(runs):
    with pytest.raises(ValueError, match="--holdout 3B: no such model size"):
        plan_ladder(runs, ["3B"], HELLA)
    with pytest.raises(ValueError, match="leaves 4 run"):
        plan_ladder(runs, tasks=HELLA, drops=[["190M", "370M"]])
    with pytest.raises(ValueError, match="planning needs at least 3"):
        plan_ladder([r for r in runs if r.name.startswith(("190M", "370M"))], tasks=HELLA)
    with pytest.raises(ValueError, match="cannot be fitted"):
        plan_ladder(runs, ["760M", "1B", "10xC", "5xC"], HELLA)


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "ladder", "plan-ladder", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_cli_plan_ladder(files, tmp_path):
    out = tmp_path / "plan"
    r = _cli(*files, "--tasks", "hellaswag", "--only-drops", "--drop", "10xC", "--drop", "5xC,10xC",
             "--budget-error", "1.0", "--target-n", "6.9e9", "--target-d", "4e12", "--out", out)
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "plan.json").read_text())
    assert [c["name"] for c in doc["candidates"]] == ["full", "drop 10xC", "drop 5xC+10xC"]
    assert doc["target_compute_flops"] == pytest.approx(6 * 6.9e9 * 4e12)
    assert doc["recommended"] in {c["name"] for c in doc["candidates"]}
    assert (out / "plan.png").read_bytes()[:4] == b"\x89PNG"
    assert "| full |" in (out / "plan.md").read_text() and "| full |" in r.stdout


@pytest.mark.parametrize("args, msg", [
    (["--drop", "3B"], "3B is not a model size or token multiplier"),
    (["--target-n", "7e9"], "--target-n and --target-d go together"),
    (["--budget-error", "-1"], "--budget-error -1.0: expected a positive"),
])
def test_cli_bad_input(files, tmp_path, args, msg):
    """(the other errors are the API's, tested above, and surface through the same handler)"""
    r = _cli(*files, "--tasks", "hellaswag", "--only-drops", *args, "--out", tmp_path / "o")
    assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr
