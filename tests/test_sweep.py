"""Sweeps: planning, the sweep directory's recipe guard, and a whole micro ladder trained,
fitted and predicted through `ladder sweep` (the same path as the README demo, smaller)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ladder.recipe import RecipeError, from_dict, load_recipe
from ladder.sweep.plan import SweepError, plan_sweep, plan_table
from ladder.sweep.sweepdir import open_sweep

ROOT = Path(__file__).resolve().parents[1]


def ladder_cli(*args, cwd=None, timeout=900, env=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline", **(env or {})}
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


def one_line_or_ok(r) -> bool:
    """A command run beside a sweep either works (0, or 1 for a flagged fit) or is refused in
    one line with exit 2; never a traceback."""
    if r.returncode in (0, 1):
        return True
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    return r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr


def watch_sweep(out: Path, running, *, once=None, tick=lambda: None, every=8.0, env=None,
                timeout=1200):
    """What a user in another terminal does while a sweep trains: `ladder status --predict`
    again and again, and ``once(out)`` when three rungs are done. Returns every status result."""
    seen, did_once = [], False
    deadline = time.monotonic() + timeout
    while running():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{out}: the sweep did not end in {timeout}s")
        tick()
        r = ladder_cli("status", out, "--predict", "--n-boot", "50", timeout=300, env=env)
        seen.append(r)
        if once is not None and not did_once and "from 3 of" in r.stdout:
            once(out)
            did_once = True
        time.sleep(every)
    return seen


@pytest.fixture(scope="module")
def micro_sweep(tmp_path_factory):
    """The micro ladder through `ladder sweep`, watched from another terminal meanwhile:
    `status --predict` repeatedly; once three rungs are done, `sweep --predict-only` (refused by
    the sweep's lock), `ladder predict SWEEP/runs/*` and W&B reading the offline runs."""
    tmp = tmp_path_factory.mktemp("sweep")
    out = tmp / "micro"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    argv = [sys.executable, "-m", "ladder", "sweep", str(ROOT / "recipes" / "tiny-cpu.yaml"), *MICRO,
            "--out", str(out), "--parallel", "2", "--n-boot", "50"]
    side = {}

    def once(out):
        side["predict_only"] = ladder_cli("sweep", ROOT / "recipes" / "tiny-cpu.yaml", *MICRO,
                                          "--out", out, "--predict-only", timeout=300)
        side["predict_runs"] = ladder_cli("predict", *sorted((out / "runs").iterdir()),
                                          "--target-name", "t", "--target-n", "2e5",
                                          "--target-d", "2e7", "--tasks", "corpus", "--n-boot", "50",
                                          "--no-plots", "--out", tmp / "mid", timeout=300)
        side["wandb_read"] = subprocess.run(
            [str(Path(sys.executable).with_name("wandb")), "sync", "--dry-run",
             *map(str, out.glob("runs/*/wandb/offline-run-*"))], capture_output=True, text=True,
            env=env, cwd=out, timeout=300)

    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env) as proc:
        watched = watch_sweep(out, lambda: proc.poll() is None, once=once)
        stdout, stderr = proc.communicate(timeout=900)
    r = subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)
    return out, r, watched, side


def test_micro_sweep_trains_every_rung_and_predicts_the_held_out_target(micro_sweep):
    out, r, _, _ = micro_sweep
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
    tables = list((out / "wandb").glob("offline-run-*/files/media/table/predictions_*.table.json"))
    assert len(tables) == 1, "the final predictions table was not written once"
    table = json.loads(tables[0].read_text())
    assert table["data"][0][table["columns"].index("rungs_used")].startswith("4 of 4: ")
    assert "pred_acc" in table["columns"] and table["data"][0][table["columns"].index("target")] == "micro-target"
    assert "logged predictions to W&B (offline) in group micro" in r.stderr


def test_rerun_skips_finished_rungs_and_status_reports_them(micro_sweep):
    out, _, _, _ = micro_sweep
    r = ladder_cli("sweep", ROOT / "recipes" / "tiny-cpu.yaml", *MICRO, "--out", out,
                   "--no-predict")
    assert r.returncode == 0, r.stderr
    assert "(5 already done)" in r.stdout
    s = ladder_cli("status", out, "--json")
    rows = json.loads(s.stdout.split("\npredictions:")[0])
    assert {x["state"] for x in rows} == {"done"} and len(rows) == 5


def test_watching_a_sweep_never_breaks_it(micro_sweep):
    """The demo-shaped sweep watched with `ladder status --predict` while it trains: every
    watcher's command works or is refused in one line, the sweep still ends with its final
    predictions, and the mid-sweep set stays a set of its own."""
    out, r, watched, side = micro_sweep
    assert r.returncode in (0, 1), r.stdout + r.stderr  # 1 = a fit flagged as not converged
    assert len(watched) >= 3 and all(one_line_or_ok(w) for w in watched), \
        [w.stderr for w in watched if not one_line_or_ok(w)]
    assert any("partial-ladder predictions from 3 of 4 rungs" in w.stdout for w in watched), \
        [w.stdout[-300:] + w.stderr for w in watched]
    # the three commands run once three rungs were done
    po = side["predict_only"]
    assert po.returncode == 2 and "is in use by" in po.stderr and one_line_or_ok(po), po.stderr
    assert one_line_or_ok(side["predict_runs"]), side["predict_runs"].stderr
    assert side["wandb_read"].returncode == 0, side["wandb_read"].stderr
    # the final set and the mid-sweep set, each whole, each with its marker
    final = json.loads((out / "predictions" / "predictions.json").read_text())
    assert final[0]["target"] == "micro-target" and (out / "predictions" / ".ladder-output").is_file()
    partial = out / "predictions-partial"
    progress = json.loads((partial / "progress.json").read_text())
    assert (partial / ".ladder-output").is_file() and progress["predictions"]
    assert not list(out.glob(".predictions*")) and not (out / "predictions" / "partial").exists()
    # W&B: the mid-sweep run and the final one each say which rungs they were fitted on
    used = set()
    for t in out.glob("wandb/offline-run-*/files/media/table/predictions*.table.json"):
        table = json.loads(t.read_text())
        used |= {row[table["columns"].index("rungs_used")] for row in table["data"]}
    rungs = ["tiny-9k-1xC", "tiny-9k-2xC", "tiny-25k-1xC", "tiny-25k-2xC"]
    assert "4 of 4: " + ", ".join(rungs) in used, used
    done = [x["name"] for x in progress["rungs"] if x["state"] == "done"]
    assert f"{len(done)} of 4: " + ", ".join(done) in used, (done, used)
    # and later commands on the directory the watchers left: all work
    again = ladder_cli("sweep", ROOT / "recipes" / "tiny-cpu.yaml", *MICRO, "--out", out,
                       "--predict-only", "--n-boot", "50", "--no-plots")
    assert again.returncode in (0, 1), again.stderr
    s = ladder_cli("status", out)
    assert s.returncode == 0 and "partial predictions:" in s.stdout, s.stdout + s.stderr


def test_val_ce_feature_on_the_sweeps_own_runs(micro_sweep, ladder_here, tmp_path):
    """Ladder's runs log eval/<data.name>-validation/CrossEntropyLoss: --feature val_ce reads it."""
    out, _, _, _ = micro_sweep
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
