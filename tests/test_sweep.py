"""Sweeps: planning, the sweep directory's recipe guard, and a whole micro ladder trained,
fitted and predicted through `ladder sweep` (the same path as the README demo, smaller)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ladder.recipe import RecipeError, from_dict, load_recipe
from ladder.sweep.plan import SweepError, plan_sweep, plan_table
from ladder.sweep.sweepdir import open_sweep

ROOT = Path(__file__).resolve().parents[1]


def ladder_cli(*args, cwd=None, timeout=900):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, "-m", "ladder", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=timeout)


def test_paper_recipe_plan_reproduces_the_papers_grid_and_compute_share():
    plan = plan_sweep(load_recipe(ROOT / "recipes" / "olmo-ladder.yaml"))
    assert len(plan.rungs) == 16
    by = {r.name: r for r in plan.rungs}
    assert by["1B-10xC"].n_params == 1_279_395_840 and by["190M-1xC"].batch_tokens == 524_288
    assert by["760M-5xC"].batch_tokens == 1_310_720
    targets = {t.name: t for t in plan.targets}
    assert targets["7B-4T"].n == 6_887_575_552 and targets["7B-4T"].d == 3_945_065_873_408
    assert targets["13B-5T"].n == 13_202_396_160
    # The paper: the ladder costs about 1% of the compute of its two targets.
    share = plan.ladder_flops / sum(t.flops for t in plan.targets)
    assert 0.005 < share < 0.015
    text = plan_table(plan)
    assert "1B-10xC" in text and "7B-4T" in text and "%" in text


def _tiny_dict(**extra):
    d = yaml.safe_load((ROOT / "recipes" / "tiny-cpu.yaml").read_text())
    d.update(extra)
    return d


def test_target_without_n_or_d_is_an_error():
    with pytest.raises(RecipeError, match=r"targets\[0\].*needs 'size' or 'n'"):
        from_dict(_tiny_dict(targets=[{"name": "big", "d": 1e6}]), "r.yaml")
    with pytest.raises(RecipeError, match=r"targets\[0\].*needs 'd' \(tokens\) or 'multiplier'"):
        from_dict(_tiny_dict(targets=[{"name": "big", "size": "tiny-160k"}]), "r.yaml")
    with pytest.raises(RecipeError, match=r"targets\[0\]\.size.*known size"):
        from_dict(_tiny_dict(targets=[{"name": "big", "size": "huge", "d": 1e6}]), "r.yaml")


def test_unknown_size_and_bad_sweep_section_are_errors():
    with pytest.raises(RecipeError, match=r"r.yaml: 'model.sizes\[1\]' must be a known size"):
        from_dict(_tiny_dict(model={"sizes": ["tiny-25k", "tiny-99q"]}), "r.yaml")
    with pytest.raises(RecipeError, match=r"unknown key 'sweep.paralel'"):
        plan_sweep(from_dict(_tiny_dict(sweep={"paralel": 2}), "r.yaml"))
    with pytest.raises(RecipeError, match=r"'sweep.parallel' must be >= 1"):
        plan_sweep(from_dict(_tiny_dict(sweep={"parallel": 0}), "r.yaml"))


def test_trained_target_must_not_be_a_rung():
    d = _tiny_dict(targets=[{"name": "t", "size": "tiny-25k", "multiplier": 1, "train": True}])
    with pytest.raises(RecipeError, match="must not be fitted on"):
        plan_sweep(from_dict(d, "r.yaml"))


def test_sweep_dir_of_another_recipe_is_refused(tmp_path):
    a = from_dict(_tiny_dict(), "a.yaml")
    open_sweep(a, tmp_path / "sw")
    # An operational change (tracking, slurm, sweep knobs) reopens the same sweep ...
    b = from_dict(_tiny_dict(tracking={"wandb": True}, sweep={"parallel": 2}), "a.yaml")
    open_sweep(b, tmp_path / "sw")
    # ... a change to what the runs compute does not: mixing runs would corrupt the fits.
    c = from_dict(_tiny_dict(multipliers=[1, 3]), "c.yaml")
    with pytest.raises(SweepError, match="different recipe.*Refusing to mix runs"):
        open_sweep(c, tmp_path / "sw")
    r = ladder_cli("sweep", ROOT / "recipes" / "tiny-cpu.yaml", "--out", tmp_path / "sw",
                   "multipliers=[1, 5]", timeout=120)
    assert r.returncode == 2 and "Refusing to mix runs" in r.stderr


def test_plan_cli_prints_grid_and_ratio(ladder_here):
    r = ladder_cli("plan", ROOT / "recipes" / "olmo-ladder.yaml", timeout=120)  # the real entry
    assert r.returncode == 0, r.stderr
    assert "760M-10xC" in r.stdout and "ladder/target compute" in r.stdout
    r = ladder_here("plan", ROOT / "recipes" / "olmo-ladder.yaml", "--json")
    plan = json.loads(r.stdout)
    assert len([x for x in plan["runs"] if x["role"] == "rung"]) == 16
    assert all(0 < t["ladder_fraction"] < 0.05 for t in plan["targets"])
    r = ladder_here("plan", ROOT / "recipes" / "olmo-ladder.yaml", "model.sizes=[190M, 5B]")
    assert r.returncode == 2 and "model.sizes[1]" in r.stderr


MICRO = [
    "name=micro",
    "model.sizes=[tiny-9k, tiny-25k]",
    "multipliers=[1, 2]",
    "data.max_bytes=1500000",
    "train.batch_tokens=1024",
    "evaluation.count=6",
    "evaluation.early=2",
    "evaluation.tasks=corpus",
    "evaluation.task_limit=120",
    "targets=[{name: micro-target, size: tiny-43k, multiplier: 1, train: true}]",
    "tracking.wandb=true",
    "tracking.mode=offline",
]


@pytest.fixture(scope="module")
def micro_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "micro"
    r = ladder_cli("sweep", ROOT / "recipes" / "tiny-cpu.yaml", *MICRO, "--out", out,
                   "--parallel", "2", "--n-boot", "50")
    return out, r


def test_micro_sweep_trains_every_rung_and_predicts_the_held_out_target(micro_sweep):
    out, r = micro_sweep
    assert r.returncode in (0, 1), r.stdout + r.stderr  # 1 = a fit flagged as not converged
    manifest = json.loads((out / "sweep.json").read_text())
    assert [x["name"] for x in manifest["runs"]] == [
        "tiny-9k-1xC", "tiny-9k-2xC", "tiny-25k-1xC", "tiny-25k-2xC", "tiny-43k-1xC"]
    for run in manifest["runs"]:
        rows = [json.loads(line) for line in open(Path(run["run_dir"]) / "metrics.jsonl")]
        assert len(rows) >= 6 and rows[-1]["tokens"] >= run["target_tokens"]
    preds = json.loads((out / "predictions" / "predictions.json").read_text())
    assert [p["task"] for p in preds] == ["corpus_cont"]
    p = preds[0]
    assert p["target"] == "micro-target"
    assert 0 <= p["pred_acc_low"] <= p["pred_acc"] <= p["pred_acc_high"] <= 1
    assert p["actual_acc"] is not None and p["actual_loss"] > 0
    assert (out / "predictions" / "report.md").exists()
    assert "micro-target" in r.stdout and "predictions:" in r.stdout
    # W&B (offline): one run per rung in the sweep's group, and the predictions run with the
    # table and plots.
    for run in manifest["runs"]:
        offline = list((Path(run["run_dir"]) / "wandb").glob("offline-run-*"))
        assert len(offline) == 1, run["name"]
    pred_runs = list((out / "wandb").glob("offline-run-*"))
    assert len(pred_runs) == 1
    tables = list(pred_runs[0].glob("files/media/table/predictions*.table.json"))
    assert tables, "the predictions table was not written"
    table = json.loads(tables[0].read_text())
    assert "pred_acc" in table["columns"] and table["data"][0][table["columns"].index("target")] == "micro-target"
    assert "logged predictions to W&B (offline) in group micro" in r.stderr


def test_rerun_skips_finished_rungs_and_status_reports_them(micro_sweep):
    out, _ = micro_sweep
    r = ladder_cli("sweep", ROOT / "recipes" / "tiny-cpu.yaml", *MICRO, "--out", out,
                   "--no-predict")
    assert r.returncode == 0, r.stderr
    assert "(5 already done)" in r.stdout
    s = ladder_cli("status", out, "--json")
    rows = json.loads(s.stdout.split("\npredictions:")[0])
    assert {x["state"] for x in rows} == {"done"} and len(rows) == 5


def test_val_ce_feature_on_the_sweeps_own_runs(micro_sweep, ladder_here, tmp_path):
    """Ladder's runs log eval/<data.name>-validation/CrossEntropyLoss: --feature val_ce reads it."""
    out, _ = micro_sweep
    manifest = json.loads((out / "sweep.json").read_text())
    rungs = [r["run_dir"] for r in manifest["runs"] if r["name"] != "tiny-43k-1xC"]
    target = next(r for r in manifest["runs"] if r["name"] == "tiny-43k-1xC")
    meta = json.loads((Path(target["run_dir"]) / "run.json").read_text())
    r = ladder_here("predict", *rungs, "--feature", "val_ce", "--target",
                    f"micro-target:{meta['n_params']}:{meta['target_tokens']}", "--actual",
                    target["run_dir"], "--n-boot", "40", "--no-plots", "--out", tmp_path / "p")
    assert r.returncode in (0, 1), r.stderr
    (p,) = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert p["loss_metric"].startswith("eval/") and p["loss_metric"].endswith("-validation/CrossEntropyLoss")
    assert p["actual_loss"] > 0 and 0 < p["pred_acc"] < 1
