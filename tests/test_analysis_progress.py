"""Predictions while the ladder trains: `ladder status SWEEP_DIR --predict` on a half-finished
tiny sweep whose run logs follow a known two-step law (no training: the logs are written)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from analysis.files import OUTPUT_MARKER
from analysis.predict import Target
from analysis.progress import PlannedRung, predict_progress
from analysis.runlog import RunLogWriter, read_run
from ladder.recipe import from_dict
from ladder.sweep.sweepdir import open_sweep

from analysis_synthetic import true_acc, true_bpb

ROOT = Path(__file__).resolve().parents[1]
BPB = "eval/downstream_bpb/corpus_cont_val_rc_0shot_bpb"
ACC = "eval/downstream/corpus_cont_val_rc_0shot_len_norm"
SCALE = 3e4  # tiny N, D -> the synthetic law's range (the law's form is unchanged)


def _write_rung(sweep, plan, frac: float, rng) -> None:
    w = RunLogWriter(sweep.run_dir(plan))
    w.write_meta({"name": plan.name, "n_params": plan.n_params, "target_tokens": plan.target_tokens,
                  "size": plan.size, "multiplier": plan.multiplier,
                  "batch_tokens": plan.batch_tokens})
    d = plan.target_tokens
    for i, tok in enumerate(np.linspace(d / 10, d, 10)):
        if tok > frac * d * (1 + 1e-9):
            break
        bpb = float(true_bpb(plan.n_params * SCALE, tok * SCALE)) * np.exp(rng.normal(0, 0.003))
        w.append({"step": i + 1, "tokens": float(tok), BPB: bpb,
                  ACC: float(true_acc(bpb) + rng.normal(0, 0.003))})


@pytest.fixture(scope="module")
def half_sweep(tmp_path_factory):
    """tiny-9k and tiny-25k finished at 1, 2, 4xC, tiny-43k-1xC finished, tiny-43k-2xC half
    trained, tiny-43k-4xC not started: 7 of 9 rungs."""
    d = yaml.safe_load((ROOT / "recipes" / "tiny-cpu.yaml").read_text())
    d["targets"] = [{"name": "tiny-160k-8xC", "size": "tiny-160k", "multiplier": 8}]
    sweep = open_sweep(from_dict(d, "tiny.yaml"), tmp_path_factory.mktemp("sw") / "sweep")
    rng = np.random.default_rng(0)
    for r in sweep.plan.rungs:
        frac = {"tiny-43k-2xC": 0.5, "tiny-43k-4xC": 0.0}.get(r.name, 1.0)
        if frac:
            _write_rung(sweep, r, frac, rng)
    return sweep


def test_status_predict_on_a_half_finished_sweep(half_sweep):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "ladder", "status", str(half_sweep.dir),
                          "--predict", "--n-boot", "40"], capture_output=True, text=True, env=env,
                         timeout=900)
    assert res.returncode == 0, res.stderr
    assert "partial-ladder predictions from 7 of 9 rungs finished" in res.stdout
    out = half_sweep.partial_predictions_dir  # a set of its own, beside the final one
    assert (out / OUTPUT_MARKER).is_file() and not half_sweep.predictions_dir.exists()
    rows = json.loads((out / "predictions.json").read_text())
    assert [r["target"] for r in rows] == ["tiny-160k-8xC"]
    r = rows[0]
    assert 0 <= r["pred_acc_low"] < r["pred_acc"] < r["pred_acc_high"] <= 1
    assert r["interval"]["calibrated"] and r["grade"]
    assert "7 of 9" in (out / "report.md").read_text()
    progress = json.loads((out / "progress.json").read_text())
    used = [x["name"] for x in progress["rungs"] if x["state"] == "done"]
    assert len(used) == 7 and "tiny-43k-2xC" not in used
    assert [x[0] for x in progress["inputs"]["rungs"]] == used


def _full_copy(half_sweep, tmp_path, seed=2):
    """A copy of the half sweep with every rung finished."""
    sweep = open_sweep(half_sweep.plan.recipe, tmp_path / "sweep")
    shutil.copytree(half_sweep.dir / "runs", sweep.dir / "runs")
    rng = np.random.default_rng(seed)
    for r in sweep.plan.rungs:
        if r.name in ("tiny-43k-2xC", "tiny-43k-4xC"):
            (sweep.run_dir(r) / "metrics.jsonl").unlink(missing_ok=True)
            _write_rung(sweep, r, 1.0, rng)
    return sweep


def test_watching_again_keeps_the_set_until_another_rung_finishes(half_sweep, tmp_path):
    """`ladder status --predict` run every minute by a watcher: while no rung finishes, the set
    it wrote stays as it is (no refit, no new W&B run); a newly finished rung makes a new one."""
    from ladder.sweep.predict import predict_so_far

    sweep = open_sweep(half_sweep.plan.recipe, tmp_path / "sweep")
    shutil.copytree(half_sweep.dir / "runs", sweep.dir / "runs")
    first, files, fresh = predict_so_far(sweep, n_boot=30)
    assert fresh and "7 of 9" in first
    stamp = files["json"].stat().st_mtime_ns
    again, files, fresh = predict_so_far(sweep, n_boot=30)
    assert not fresh and again == first and files["json"].stat().st_mtime_ns == stamp
    r = next(r for r in sweep.plan.rungs if r.name == "tiny-43k-2xC")
    (sweep.run_dir(r) / "metrics.jsonl").unlink()
    _write_rung(sweep, r, 1.0, np.random.default_rng(3))
    later, files, fresh = predict_so_far(sweep, n_boot=30)
    assert fresh and "8 of 9" in later


def test_watching_while_the_final_prediction_is_written(half_sweep, tmp_path, monkeypatch):
    """The pair that broke the demo: mid-sweep predictions, then the sweep's own final set.
    A `status --predict` that runs while the final set is being written (here: from inside its
    report writer) changes nothing the final set owns, and both end whole."""
    import analysis.report
    from ladder.sweep.predict import predict_so_far, predict_sweep

    sweep = _full_copy(half_sweep, tmp_path)
    real = analysis.report.write_report
    seen = []

    def write_report_while_watched(preds, out, *a, **k):
        if Path(out).name.startswith(".predictions.tmp-"):  # the final set's writer
            seen.append(predict_so_far(sweep, n_boot=30)[2])
        return real(preds, out, *a, **k)

    monkeypatch.setattr(analysis.report, "write_report", write_report_while_watched)
    preds, files = predict_sweep(sweep, n_boot=30, plots=False, echo=lambda m: None)
    assert seen == [True]
    final, partial = sweep.predictions_dir, sweep.partial_predictions_dir
    assert {p.name for p in final.iterdir()} == {OUTPUT_MARKER, "predictions.json", "report.md",
                                                 "calibration.json"}
    assert json.loads((final / "predictions.json").read_text())[0]["target"] == "tiny-160k-8xC"
    assert (partial / OUTPUT_MARKER).is_file() and (partial / "progress.json").is_file()
    assert not list(sweep.dir.glob(".predictions*"))  # no half-written set left behind


def test_an_old_layout_with_predictions_partial_is_predicted_over(half_sweep, tmp_path, ladder_here):
    """Sweeps left by earlier versions hold predictions/partial/ (and calibration.json written in
    place) without the set's marker: a rerun's final prediction replaces them, exit 0."""
    sweep = _full_copy(half_sweep, tmp_path)
    old = sweep.predictions_dir / "partial"
    old.mkdir(parents=True)
    (old / "predictions.json").write_text("[]\n")
    (old / "report.md").write_text("# old\n")
    (sweep.predictions_dir / "calibration.json").write_text("{}\n")
    r = ladder_here("sweep", sweep.dir / "recipe.yaml", "--out", sweep.dir, "--predict-only",
                    "--n-boot", "40", "--no-plots")
    assert r.returncode == 0, r.stderr
    assert not old.exists() and (sweep.predictions_dir / OUTPUT_MARKER).is_file()
    assert json.loads((sweep.predictions_dir / "predictions.json").read_text())[0]["pred_acc"] > 0
    # a directory ladder did not write is still refused, by its missing marker
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "predictions.json").write_text("my own notes\n")
    r = ladder_here("predict", *sorted((sweep.dir / "runs").glob("*")), "--target-name", "t",
                    "--target-n", "1e6", "--target-d", "1e8", "--tasks", "corpus", "--out", foreign)
    assert r.returncode == 2 and "holds files ladder did not write (predictions.json)" in r.stderr


def test_missing_rungs_widen_the_interval(half_sweep, tmp_path):
    """The same target from the 7 finished rungs and from all 9 (the two missing ones written in
    full, in a copy of the sweep): the partial ladder's interval is the wider one."""
    copy = open_sweep(half_sweep.plan.recipe, tmp_path / "sweep")
    shutil.copytree(half_sweep.dir / "runs", copy.dir / "runs")
    half_sweep = copy
    plan = half_sweep.plan
    t = plan.targets[0]
    target = [Target(t.name, t.n, t.d)]
    partial = {"tiny-43k-2xC", "tiny-43k-4xC"}
    rungs = [PlannedRung(r.name, r.n_params, r.target_tokens,
                         "partial" if r.name in partial else "done") for r in plan.rungs]
    finished = [read_run(half_sweep.run_dir(r)) for r in plan.rungs if r.name not in partial]
    now = predict_progress(finished, rungs, target, "corpus", n_boot=30)
    assert 0.3 < now.compute_done < 0.8
    rng = np.random.default_rng(1)
    for r in plan.rungs:
        if r.name in partial:
            (half_sweep.run_dir(r) / "metrics.jsonl").unlink(missing_ok=True)
            _write_rung(half_sweep, r, 1.0, rng)
    for r in rungs:
        r.state = "done"
    full = predict_progress([read_run(half_sweep.run_dir(r)) for r in plan.rungs], rungs, target,
                            "corpus", n_boot=30)
    assert full.compute_done == 1.0
    w = [p.pred_acc_high - p.pred_acc_low for p in (now.predictions[0], full.predictions[0])]
    assert w[0] > w[1], w
    with pytest.raises(ValueError, match="at least 3 finished rungs of 2 sizes"):
        predict_progress(finished[:2], rungs, target, "corpus")


def test_final_sweep_predictions_are_calibrated_and_the_calibration_kept(half_sweep, tmp_path):
    """Once every rung is done, the sweep's own prediction step calibrates its intervals on the
    rungs' backtests, keeps calibration.json inside the set, and reuses it when run again."""
    from ladder.sweep.predict import predict_sweep

    sweep = _full_copy(half_sweep, tmp_path, seed=5)  # a ladder no other test has calibrated
    said = []
    preds, files = predict_sweep(sweep, n_boot=30, plots=False, echo=said.append)
    rows = json.loads((sweep.predictions_dir / "predictions.json").read_text())
    assert rows[0]["interval"]["calibrated"] is True and "calibrated on" in rows[0]["interval"]["method"]
    raw = rows[0]["interval"]["raw_high"] - rows[0]["interval"]["raw_low"]
    assert rows[0]["pred_acc_high"] - rows[0]["pred_acc_low"] >= raw - 1e-12
    cal = json.loads((sweep.predictions_dir / "calibration.json").read_text())
    assert cal["scenarios"] and set(cal["loso_coverage"]) == set(cal["scenarios"])
    assert any("backtesting the ladder" in m for m in said)
    said.clear()
    again, _ = predict_sweep(sweep, n_boot=30, plots=False, echo=said.append)
    assert any("reusing" in m for m in said)
    assert again[0].pred_acc_low == preds[0].pred_acc_low
    assert (sweep.predictions_dir / "calibration.json").exists()
