"""The analysis knows what is annealed: a WSD run's stable-phase evaluations are not final points
(step 1 reads only its decayed end, a held-out WSD run's actual is that end), a stable run is not
fitted, and the report says which points each step used. A synthetic ladder of run directories
whose stable-phase rows sit well above the loss law the decayed ends follow."""

import numpy as np
import pytest

from analysis.annealed import annealing, fit_runs, run_tail
from analysis.metrics import resolve_tasks
from analysis.predict import Target, actual_values, predict_target
from analysis.runlog import PAPER_N, RunLogWriter, RunMeta, read_run
from analysis.twostep import TwoStepConfig, run_series
from analysis.twostep.step1 import step1_data
from tests.analysis_synthetic import ACC, BPB, true_acc, true_bpb

TASK = resolve_tasks("hellaswag")
STABLE_GAP = 0.25  # bpb a stable-phase evaluation sits above what a run of its length reaches


def _write(out, name, size, mult, extra, tokens, bpb):
    w = RunLogWriter(out / name)
    w.write_meta(RunMeta(name=name, n_params=PAPER_N[size], size=size, multiplier=mult,
                         target_tokens=float(tokens[-1]), batch_tokens=1000, extra=extra))
    for step, (t, b) in enumerate(zip(tokens, bpb), start=1):
        w.append({"step": int(t // 1000), "tokens": float(t), BPB: float(b), ACC: float(true_acc(b))})
    return out / name


def wsd_ladder(out, sizes=("190M", "370M", "760M", "1B"), mults=(1, 2, 5, 10)):
    """Per size a stable run, and per multiplier a branch: the stable rows up to its branch
    point (STABLE_GAP above the law), three decay rows closing the gap, its decayed end on the law."""
    paths = []
    for size in sizes:
        n = PAPER_N[size]
        top = 0.8 * 20 * max(mults) * n
        st = np.linspace(top / 12, top, 12)
        paths.append(_write(out, f"{size}-stable", size, 0.8 * max(mults),
                            {"schedule": "wsd", "role": "stable", "total_steps": int(top // 1000)},
                            st, true_bpb(n, st) + STABLE_GAP))
        for m in mults:
            d = 20 * m * n
            start = 0.8 * d
            prefix = st[st <= start]
            decay = np.linspace(start, d, 5)[1:]
            gap = STABLE_GAP * np.array([0.6, 0.3, 0.1, 0.0])
            extra = {"schedule": "wsd", "role": "branch", "parent": f"{size}-stable",
                     "total_steps": int(d // 1000), "decay_start_step": int(start // 1000),
                     "branch_step": int(start // 1000)}
            paths.append(_write(out, f"{size}-{m}xC", size, m, extra, np.concatenate([prefix, decay]),
                                np.concatenate([true_bpb(n, prefix) + STABLE_GAP,
                                                true_bpb(n, decay) + gap])))
    return paths


def test_step1_reads_only_decayed_ends_and_a_stable_run_is_not_fitted(tmp_path):
    runs = [read_run(p) for p in wsd_ladder(tmp_path)]
    said = []
    fitted = fit_runs(runs, said.append)
    assert len(fitted) == 16 and all("stable" not in r.name for r in fitted)
    assert len(said) == 4 and "not final points" in said[0]
    cfg = TwoStepConfig()
    series = [run_series(r, TASK["hellaswag"], cfg.feature) for r in fitted]
    data = step1_data(series, cfg)
    assert data.y.size == 16  # one point per branch: its end, whatever step1_points says
    assert np.allclose(data.y, true_bpb(data.n, data.d))  # on the law: no stable-phase row leaked
    ann = annealing(fitted[0])
    assert ann.final.tolist() == [fitted[0].n_evals - 1] and run_tail(fitted[0], 5).size == 1
    acc, loss = actual_values(fitted[0], TASK["hellaswag"], "bpb", 5)
    assert loss == pytest.approx(float(true_bpb(fitted[0].n, fitted[0].d)))


def test_a_wsd_ladder_predicts_like_the_law_and_says_which_points_it_used(tmp_path):
    runs = [read_run(p) for p in wsd_ladder(tmp_path)]
    target = Target("3B-60B", PAPER_N["3B"], 6e10)  # inside the link's range: step 1 is the question
    truth = float(true_acc(true_bpb(PAPER_N["3B"], 6e10)))
    cfg = TwoStepConfig(link="sigmoid", link_ceiling="free")  # the synthetic link's form
    preds = predict_target(runs, target, TASK, cfg, intervals=False, warn=lambda m: None)
    assert abs(preds[0].pred_acc - truth) < 0.005
    assert preds[0].pred_loss == pytest.approx(float(true_bpb(PAPER_N["3B"], 6e10)), abs=2e-3)
    step1 = preds[0].fits["step1"]
    assert step1["n_points"] == 16
    assert step1["points"].startswith("16 points from 16 WSD run(s): their decayed ends only")
    from analysis.report import markdown_table
    assert "Points used: step 1, 16 points from 16 WSD run(s)" in markdown_table(preds)
    assert "evaluations from the start of their decay" in preds[0].fits["step2"]["points"]
    # read as if annealed throughout (the mistake this prevents), the stable rows bias step 1
    for r in runs:
        r.meta.extra["schedule"] = "cosine"
    naive = predict_target(fit_runs([r for r in runs if "stable" not in r.name]), target, TASK,
                           cfg, intervals=False, warn=lambda m: None)
    assert abs(naive[0].pred_loss - preds[0].pred_loss) > 0.02
    every = predict_target([read_run(p) for p in wsd_ladder(tmp_path / "b")], target, TASK,
                           TwoStepConfig(wsd_step2="all"), intervals=False, warn=lambda m: None)
    assert "stable phase included" in every[0].fits["step2"]["points"]
    assert every[0].fits["step2"]["n_points"] > preds[0].fits["step2"]["n_points"]
