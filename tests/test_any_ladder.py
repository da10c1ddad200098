"""Any lab's ladder: the input formats labs have (one table, CSV or parquet, wide or long;
lm-evaluation-harness results with a runs table; final evaluations only), tasks declared as data,
any validation loss as the feature, several targets in one call, and honesty where the ladder
cannot know (near chance, nonsense, a failed bootstrap). Bad input: one line, exit 2."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ladder_formats as F
from analysis.metrics import TaskSpec
from analysis.predict import Target, predict_target
from analysis.runlog import RunLog, RunMeta
from analysis.sources import read_ladder
from analysis.taskspec import TaskSpecError, read_task_spec
from analysis.twostep import TwoStepConfig, fit_task, validation_column

TARGET = ["--target", "1B:1.28e9:1.3e11"]
QUICK = ["--no-plots", "--n-boot", "40"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The same synthetic ladder in every format, and its task declarations."""
    root = tmp_path_factory.mktemp("lab")
    df = F.rows()
    files = {"wide": F.wide_csv(df, root / "wide.csv"), "long": F.long_csv(df, root / "long.csv"),
             "final": F.wide_csv(F.final_only(df), root / "final.csv")}
    df.to_parquet(root / "ladder.parquet")
    files["parquet"] = root / "ladder.parquet"
    files["harness"], files["runs_table"] = F.harness_dir(df, root / "harness" / "out")
    (root / "tasks.yaml").write_text(F.TASK_SPEC)
    files["spec"] = root / "tasks.yaml"
    files["root"] = root
    return files


def _by_name(runs):
    return {r.name: r for r in runs}


def test_every_format_reads_the_same_ladder(lab):
    wide = _by_name(read_ladder([lab["wide"]]))
    said = []
    others = {k: _by_name(read_ladder([lab[k]], say=said.append)) for k in ("long", "parquet")}
    harness = _by_name(read_ladder([lab["harness"]], runs_table=lab["runs_table"], say=said.append))
    assert len(wide) == 9 and wide["760M-5xC"].n == 758_220_288 and wide["760M-5xC"].meta.multiplier == 5
    for runs in others.values():
        assert runs.keys() == wide.keys()
        for name, r in wide.items():
            assert runs[name].n == r.n and runs[name].columns.keys() == r.columns.keys()
            for c in r.columns:
                np.testing.assert_array_equal(runs[name].column(c), r.column(c))
    for name, r in wide.items():  # harness: N from the runs table, tokens = step x tokens per step
        h = harness[name]
        assert h.n == r.n
        np.testing.assert_array_equal(h.column("tokens"), r.column("tokens"))
        np.testing.assert_array_equal(h.column("lm_eval/easy/acc_norm"), r.column("easy/acc_norm"))
    assert "from a long table" in said[0]
    assert "lm-evaluation-harness results, 72 file(s) -> 9 run(s)" in said[2]
    assert "N from the runs table" in said[2] and "steps x tokens per step" in said[2]


def test_task_declarations_sets_and_chance_floor(lab):
    tasks, sets = read_task_spec(lab["spec"])
    assert sets == {"mine": ("easy",)} and tasks["coin"].chance == 0.5
    assert tasks["easy"].columns("bpb") == (("easy/bpb", 1.0),) and tasks["easy"].metric == "acc_norm"
    runs = read_ladder([lab["wide"]])
    m = fit_task(runs, tasks["easy"], TwoStepConfig(link_floor="chance"))
    assert m.step2.params_["b"] == 0.25  # step 2's floor is the declared chance level
    undeclared = TaskSpec("easy2", (("easy/acc_norm", 1.0),), (("easy/bpb", 1.0),))
    with pytest.raises(ValueError, match="declares no chance accuracy"):
        fit_task(runs, undeclared, TwoStepConfig(link_floor="chance"))


def test_evaluator_reads_chance_levels_from_the_one_registry():
    from analysis.metrics import builtin_tasks
    from ladder.eval.tasks import KNOWN_TASKS
    specs = builtin_tasks()
    for name, group in KNOWN_TASKS.items():
        assert group.chance == specs[name.removesuffix("_mc")].chance, name
    assert KNOWN_TASKS["corpus_cont"].chance == 0.25 and KNOWN_TASKS["csqa_mc"].chance == 0.2


def test_harness_ladder_predicted_end_to_end_and_direct_needs_no_loss(lab, ladder_here, tmp_path):
    r = ladder_here("predict", lab["harness"], "--runs-table", lab["runs_table"], "--tasks", "easy",
                    "--feature", "lm_eval/wikitext/bits_per_byte", *TARGET, *QUICK,
                    "--calibration", "none", "--out", tmp_path / "a")
    assert r.returncode == 0, r.stderr
    (p,) = json.loads((tmp_path / "a" / "predictions.json").read_text())
    assert p["loss_metric"] == "lm_eval/wikitext/bits_per_byte"
    assert p["pred_acc_low"] < p["pred_acc"] < p["pred_acc_high"]
    # no task loss anywhere in these tasks: the direct method reads accuracies only; the inferred
    # tasks and their columns are printed
    r = ladder_here("predict", lab["harness"], "--runs-table", lab["runs_table"], "--mode", "direct",
                    *TARGET, *QUICK, "--calibration", "none", "--out", tmp_path / "b")
    assert r.returncode in (0, 1), r.stderr
    assert "tasks inferred from the runs' columns" in r.stderr
    assert "easy: accuracy lm_eval/easy/acc_norm; loss none" in r.stderr
    rows = {p["task"]: p for p in json.loads((tmp_path / "b" / "predictions.json").read_text())}
    assert 0.5 < rows["easy"]["pred_acc"] < 0.8 and "direct" in rows["easy"]["fits"]


def test_final_only_ladder_predicted_with_intervals_and_grades(lab, ladder_here, tmp_path, monkeypatch):
    monkeypatch.setenv("LADDER_CALIBRATION_CACHE", str(tmp_path / "cache"))
    r = ladder_here("predict", lab["final"], "--task-spec", lab["spec"], "--tasks", "mine", *TARGET,
                    *QUICK, "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    (p,) = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert p["interval"]["calibrated"] and p["pred_acc_low"] < p["pred_acc"] < p["pred_acc_high"]
    truth = float(F.true_acc(F.true_bpb(1.28e9, 1.3e11)))
    assert abs(p["pred_acc"] - truth) < 0.02
    assert any("scatter could not be measured" in x for x in p["trust"]["reasons"])
    assert not any("inf" in x for x in p["trust"]["reasons"])
    assert p["trust"]["metrics"]["scatter_measured"] is False


def test_repeated_rows_are_no_measure_of_scatter(lab):
    """Rows repeated to look like checkpoints have zero scatter: unmeasured, not divided by."""
    df = F.final_only(F.rows())
    runs = read_ladder([F.wide_csv(pd.concat([df.assign(step=df.step - k, tokens=df.tokens - k)
                                              for k in range(6)]), lab["root"] / "rep.csv")])
    tasks, _ = read_task_spec(lab["spec"])
    (p,) = predict_target(runs, Target("1B", 1.28e9, 1.3e11), {"easy": tasks["easy"]}, n_boot=40)
    assert p.grade.metrics["scatter_measured"] is False
    assert not any("x one evaluation" in r or "inf" in r for r in p.grade.reasons)


def _run(name, n, cols) -> RunLog:
    tokens = np.linspace(2e9, 1e10, 6)
    return RunLog(RunMeta(name, n_params=n), {"step": np.arange(6.0), "tokens": tokens, **cols})


def test_val_ce_is_the_runs_own_validation_loss():
    own = [_run(f"r{i}", 10 ** 6 * (i + 1), {"eval/pystdlib-validation/CrossEntropyLoss": np.ones(6)})
           for i in range(3)]
    assert validation_column(own) == "eval/pystdlib-validation/CrossEntropyLoss"
    both = [_run("a", 10 ** 6, {"eval/c4_en-validation/CrossEntropyLoss": np.ones(6),
                                "eval/pile-validation/CrossEntropyLoss": np.ones(6)})]
    assert validation_column(both) == "eval/c4_en-validation/CrossEntropyLoss"
    two = [_run("a", 10 ** 6, {"eval/a-validation/CrossEntropyLoss": np.ones(6),
                               "eval/b-validation/CrossEntropyLoss": np.ones(6)})]
    with pytest.raises(ValueError, match="2 validation losses.*--feature COLUMN"):
        validation_column(two)
    with pytest.raises(ValueError, match="no validation loss column"):
        validation_column([_run("a", 10 ** 6, {"x": np.ones(6)})])


def test_two_targets_in_one_call_equal_two_single_calls(lab, ladder_here, tmp_path, monkeypatch):
    """One fit and one calibration for both targets; the same numbers as one call per target,
    whose second call reuses the calibration although its --out is new."""
    monkeypatch.setenv("LADDER_CALIBRATION_CACHE", str(tmp_path / "cache"))
    args = (lab["final"], "--task-spec", lab["spec"], "--tasks", "mine", *QUICK)
    targets = {"1B": "1B:1.28e9:1.3e11", "3B": "3B:3.17e9:6e11"}
    r = ladder_here("predict", *args, "--target", targets["1B"], "--target", targets["3B"],
                    "--out", tmp_path / "both")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("backtesting the ladder") == 1
    both = {p["target"]: p for p in json.loads((tmp_path / "both" / "predictions.json").read_text())}
    for name, spec in targets.items():
        r = ladder_here("predict", *args, "--target", spec, "--out", tmp_path / name)
        assert r.returncode == 0 and "calibration: reusing" in r.stderr, r.stderr
        (one,) = json.loads((tmp_path / name / "predictions.json").read_text())
        for k in ("pred_acc", "pred_acc_low", "pred_acc_high", "pred_loss", "grade", "interval"):
            assert one[k] == both[name][k], k
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1
    cal = json.loads((tmp_path / "both" / "calibration.json").read_text())  # the one used, in the set
    assert cal["fingerprint"] == next((tmp_path / "cache").glob("*.json")).stem


def test_a_failing_prediction_leaves_the_old_set_and_its_calibration(lab, ladder_here, tmp_path,
                                                                    monkeypatch):
    """The calibration is made into the content cache and copied into the new output set only:
    a prediction that fails after calibrating leaves --out exactly as it was."""
    import analysis.predict

    monkeypatch.setenv("LADDER_CALIBRATION_CACHE", str(tmp_path / "cache"))
    out, args = tmp_path / "out", ("--task-spec", lab["spec"], "--tasks", "mine", *TARGET, *QUICK)
    assert ladder_here("predict", lab["final"], *args, "--out", out).returncode == 0
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    assert "calibration.json" in before
    other = F.wide_csv(F.final_only(F.rows(seed=1)), tmp_path / "other.csv")  # a new calibration

    def broken(*a, **k):
        raise RuntimeError("disk went away")

    monkeypatch.setattr(analysis.predict, "predict_targets", broken)
    r = ladder_here("predict", other, *args, "--out", out)
    assert r.returncode == 2 and "disk went away" in r.stderr
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2  # made, and kept in the cache
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before


def test_near_chance_task_is_refused_not_run_to_the_ceiling(lab, ladder_here, tmp_path):
    r = ladder_here("predict", lab["wide"], "--task-spec", lab["spec"], *TARGET, *QUICK,
                    "--feature", "val_ce", "--calibration", "none", "--out", tmp_path / "out")
    assert r.returncode == 1 and "no prediction for coin" in r.stderr, r.stderr
    rows = {p["task"]: p for p in json.loads((tmp_path / "out" / "predictions.json").read_text())}
    coin = rows["coin"]
    assert coin["pred_acc"] is None and coin["grade"] == "unreliable"
    assert "never leave chance" in coin["trust"]["reasons"][0] and "never leave chance" in coin["interval"]["unavailable"]
    assert rows["easy"]["grade"] == "reliable" and rows["easy"]["pred_acc"] > 0.6
    assert "coin | 1B | unreliable | — |" in (tmp_path / "out" / "report.md").read_text()


def test_a_prediction_far_above_the_ladder_is_unreliable():
    from analysis.trust import TaskNoise, grade_task
    noise = TaskNoise(acc_sd=0.004, feature_rel_sd=0.001, span=0.05, best=0.56)
    g = grade_task("two_way", noise, pred_acc=0.87)
    assert g.grade == "unreliable" and "6.2x the range" in g.reasons[0]
    assert grade_task("two_way", noise, pred_acc=0.65).grade == "reliable"


def test_failed_bootstrap_keeps_the_point_prediction(lab, monkeypatch, tmp_path):
    import analysis.uncertainty as U
    from analysis.report import write_report

    real = U.bootstrap_many

    def mostly_failing(laws, weights):
        out = real(laws, weights)
        return [(th, ok & (np.arange(ok.size) % 10 == 0)) for th, ok in out]

    monkeypatch.setattr(U, "bootstrap_many", mostly_failing)
    tasks, _ = read_task_spec(lab["spec"])
    (p,) = predict_target(read_ladder([lab["wide"]]), Target("1B", 1.28e9, 1.3e11),
                          {"easy": tasks["easy"]}, n_boot=40)
    assert 0.6 < p.pred_acc < 0.7 and np.isnan(p.pred_acc_low)
    assert "4/40 bootstrap refits converged" in p.interval_info["unavailable"]
    assert p.grade.grade == "unreliable" and any("no interval" in r or "none is given" in r
                                                 for r in p.grade.reasons)
    assert p.to_json()["pred_acc_low"] is None
    write_report([p], tmp_path, "t", plots=False)  # renders


def _nonsense(df: pd.DataFrame, how: str) -> pd.DataFrame:
    df = df.copy()
    if how == "constant loss":
        df["easy/bpb"] = 0.9
    elif how == "rising loss":
        df["easy/bpb"] = 0.5 + df["tokens"] * df["n"] / 1e20
    elif how == "zero accuracy":
        df["easy/acc_norm"] = 0.0
    return df


@pytest.mark.parametrize("how,reason", [("constant loss", "does not fall with compute"),
                                        ("rising loss", "does not fall with compute"),
                                        ("zero accuracy", "never leave chance")])
def test_nonsense_ladders_get_no_confidence(lab, ladder_here, tmp_path, how, reason):
    path = F.wide_csv(_nonsense(F.rows(), how), tmp_path / "n.csv")
    r = ladder_here("predict", path, "--task-spec", lab["spec"], "--tasks", "easy", *TARGET, *QUICK,
                    "--calibration", "none", "--out", tmp_path / "out")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    (p,) = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert p["pred_acc"] is None and p["grade"] == "unreliable" and reason in p["trust"]["reasons"][0]


def _bad_inputs(lab, tmp: Path):
    """(name, ladder predict arguments) of malformed inputs, each to fail with one line."""
    df, spec = F.rows(), ["--task-spec", str(lab["spec"]), "--tasks", "mine"]

    def csv(name, frame):
        return [str(F.wide_csv(frame, tmp / f"{name}.csv")), *spec]

    huge = df.copy()
    huge.loc[3, "easy/bpb"] = 1e300
    pct = df.copy()
    pct["easy/acc_norm"] *= 100
    varying = df.copy()
    varying.loc[0, "n"] = 5
    dup = pd.concat([df, df.iloc[[0]]])
    (tmp / "header.csv").write_text("run,n,tokens,easy/acc_norm,easy/bpb\n")
    (tmp / "bad.parquet").write_bytes(b"PAR1 not really a parquet file")
    bad_json = tmp / "h1" / "m"
    bad_json.mkdir(parents=True)
    (bad_json / "results_1.json").write_text("{not json")
    no_results = tmp / "h2" / "m"
    no_results.mkdir(parents=True)
    (no_results / "results_1.json").write_text(json.dumps({"config": {}}))
    two_unnamed = tmp / "h3" / "m"
    two_unnamed.mkdir(parents=True)
    for i in range(2):
        (two_unnamed / f"results_{i}.json").write_text(json.dumps({"results": {"a": {"acc,none": 0.3}}}))
    (tmp / "rt.csv").write_text("run,params_count\nx,1\n")
    (tmp / "rt2.csv").write_text("run,n\ntoy,1e8\ntoy,2e8\n")
    (tmp / "s1.yaml").write_text("tasks: [oops\n")
    (tmp / "s2.yaml").write_text("tasks:\n  a: {accuracy: x, chanse: 0.25}\n")
    (tmp / "s3.yaml").write_text("tasks:\n  a: {accuracy: x, chance: 2}\n")
    (tmp / "t.yaml").write_text("- {name: big, n: 1e9}\n")
    wide = str(lab["wide"])
    return [
        ("no N", csv("non", df.drop(columns=["n"]).assign(run="toy-" + df.run))),
        ("N varies in a run", csv("vary", varying)),
        ("no tokens or steps", csv("notok", df.drop(columns=["tokens", "step"]))),
        ("steps without tokens per step", csv("steps", df.drop(columns=["tokens"]))),
        ("negative tokens", csv("neg", df.assign(tokens=-df.tokens))),
        ("a row repeated", csv("dup", dup)),
        ("header only", [str(tmp / "header.csv"), *spec]),
        ("a loss of 1e300", csv("huge", huge)),
        ("accuracy in percent", csv("pct", pct)),
        ("not parquet", [str(tmp / "bad.parquet"), *spec]),
        ("harness: bad JSON", [str(tmp / "h1"), "--runs-table", str(lab["runs_table"])]),
        ("harness: no results", [str(tmp / "h2"), "--runs-table", str(lab["runs_table"])]),
        ("harness: checkpoints without steps", [str(tmp / "h3"), "--runs-table", str(lab["runs_table"])]),
        ("harness: no runs table", [str(lab["harness"])]),
        ("runs table without n", [str(lab["harness"]), "--runs-table", str(tmp / "rt.csv")]),
        ("runs table: a run twice", [str(lab["harness"]), "--runs-table", str(tmp / "rt2.csv")]),
        ("task spec: bad YAML", [wide, "--task-spec", str(tmp / "s1.yaml")]),
        ("task spec: unknown key", [wide, "--task-spec", str(tmp / "s2.yaml")]),
        ("task spec: chance 2", [wide, "--task-spec", str(tmp / "s3.yaml")]),
        ("unknown task", [wide, "--tasks", "nosuch"]),
        ("unknown feature column", [wide, *spec, "--feature", "nosuch/loss"]),
        ("targets file without d", [wide, *spec, "--targets", str(tmp / "t.yaml")]),
        ("two targets, unnamed actual", [wide, *spec, *TARGET, "--target", "3B:3e9:6e11", "--actual", wide]),
    ]


def test_malformed_inputs_give_one_line_and_exit_2(lab, ladder_here, tmp_path):
    for name, args in _bad_inputs(lab, tmp_path):
        r = ladder_here("predict", *args, *([] if "--target" in args else TARGET), *QUICK,
                        "--calibration", "none", "--out", tmp_path / "out")
        errors = [line for line in r.stderr.splitlines() if "error" in line.lower()]
        assert r.returncode == 2 and "Traceback" not in r.stderr, (name, r.stderr)
        assert len(errors) == 1 and r.stderr.rstrip().splitlines()[-1].startswith("ladder"), (name, r.stderr)
    r = ladder_here("predict", lab["wide"], "--target", "1B:big:1e11", "--out", tmp_path / "out")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing written by any of them


def _smoke(script: str) -> str:
    """A benchmark script's --smoke run (the default suite runs each); its stdout."""
    import os
    import subprocess
    import sys
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "tests" / "benchmarks" / script), "--smoke"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(root)})
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_bench_any_ladder_smoke():
    """The benchmark behind the defaults' documentation runs (one small synthetic ladder)."""
    out = _smoke("bench_any_ladder.py")
    assert "far targets" in out and "in-ladder" in out and "by grade: reliable" in out


def test_bench_multi_target_smoke():
    """The benchmark of several targets in one call runs, and every way agrees."""
    out = _smoke("bench_multi_target.py")
    assert "every way gave the same predictions" in out and "two calls, each calibrating" in out
