"""`ladder import-wandb` on recorded W&B history (no network here).

The recorded data are the paper's own W&B history exports (one CSV row = one history row),
served through a stand-in with wandb's ``Api.runs`` / ``Run`` interface, plus training-only
rows between evaluations, as a real W&B history has.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.runlog import PAPER_N, PAPER_TARGET_D, STEP, TOKENS, read_olmo_csv, read_run, read_runs
from ladder.wandb.importer import (ImportOptions, WandbImportError, convert_history, import_project,
                                 server_filters)

ROOT = Path(__file__).resolve().parents[1]


class RecordedRun:
    """wandb.apis.public.Run's interface, over recorded history rows."""

    def __init__(self, name, rows, config=None, state="finished", run_id=None, created=0):
        self.name, self._rows, self.config, self.state = name, rows, config or {}, state
        self.id = run_id or f"id-{name}-{created}"
        self.url = f"https://wandb.ai/ai2-llm/olmo-ladder/runs/{self.id}"
        self.created_at = created
        self.scanned_with: list[dict] = []

    def scan_history(self, keys=None, page_size=1000, min_step=None, max_step=None):
        self.scanned_with.append({"page_size": page_size})
        for r in self._rows:
            yield dict(r)

    def history(self, *a, **k):  # the sampled history must not be used
        raise AssertionError("import must read scan_history(), not the sampled history()")


class RecordedApi:
    def __init__(self, runs):
        self._runs = runs
        self.calls: list[tuple] = []

    def runs(self, path, filters=None, order="+created_at", per_page=50, **kw):
        self.calls.append((path, filters, order))
        return sorted(self._runs, key=lambda r: r.created_at)


def csv_history(path: Path) -> list[dict]:
    """One W&B history row per CSV row, with a training-only row (no eval keys) before each."""
    df = pd.read_csv(path).copy()
    if "_step" not in df:  # the target export has no step column; W&B always has one
        df["_step"] = (df["throughput/total_tokens"] / df["batch_size_in_tokens"]).round().astype(int)
    rows = []
    for rec in df.to_dict("records"):
        step = int(rec["_step"])
        batch = rec["batch_size_in_tokens"]
        rows.append({"_step": step - 1, "train/CrossEntropyLoss": 3.0, "_runtime": 1.5,
                     "throughput/total_tokens": (step - 1) * batch})
        rows.append({k: v for k, v in rec.items() if not (isinstance(v, float) and math.isnan(v))}
                    | {"_step": step, "_timestamp": 1.7e9})
    return rows


@pytest.fixture(scope="module")
def recorded_ladder(olmo_ladder_dir):
    files = sorted(olmo_ladder_dir.glob("*.csv"))
    runs = [RecordedRun(f"peteish-{f.stem}", csv_history(f), config={"seed": 6198}, created=i)
            for i, f in enumerate(files)]
    return files, runs


def test_import_matches_csv(recorded_ladder, tmp_path):
    files, runs = recorded_ladder
    api = RecordedApi(runs)
    logs: list[str] = []
    results = import_project("ai2-llm/olmo-ladder", tmp_path, ImportOptions(name_filter="peteish-.*"),
                             api=api, log=logs.append)
    assert [r.status for r in results] == ["imported"] * len(files), logs
    assert api.calls[0][1] == {"display_name": {"$regex": "peteish-.*"}}
    assert all(r.scanned_with == [{"page_size": 1000}] for r in runs)

    imported = {r.name: r for r in read_runs(sorted(tmp_path.iterdir()))}
    assert len(imported) == len(files)
    for f in files:
        want = read_olmo_csv(f)
        got = imported[f"peteish-{f.stem}"]
        assert got.meta.size == want.meta.size and got.meta.n_params == want.meta.n_params
        assert got.meta.multiplier == want.meta.multiplier
        assert got.meta.target_tokens == want.meta.target_tokens
        assert got.meta.batch_tokens == want.meta.batch_tokens
        assert got.meta.seed == 6198
        assert got.meta.extra["wandb_id"] == f"id-peteish-{f.stem}-{files.index(f)}"
        assert got.meta.extra["wandb_url"].endswith(got.meta.extra["wandb_id"])
        metric_cols = [c for c in want.evals.columns if c.startswith("eval/")]
        assert set(metric_cols) <= set(got.evals.columns)
        assert "train/CrossEntropyLoss" not in got.evals.columns  # only the eval rows' keys...
        assert len(got.evals) == len(want.evals)  # ...and only eval rows
        np.testing.assert_array_equal(got.evals[STEP].to_numpy(), want.evals[STEP].to_numpy())
        np.testing.assert_array_equal(got.evals[TOKENS].to_numpy(dtype=float),
                                      want.evals[TOKENS].to_numpy(dtype=float))
        for c in metric_cols:
            np.testing.assert_array_equal(got.column(c), want.column(c), err_msg=f"{f.stem} {c}")
    assert imported["peteish-1B-5xC"].n == PAPER_N["1B"]
    target = imported["peteish-7B-4T-final"]
    assert target.n == PAPER_N["7B"] and target.meta.target_tokens == PAPER_TARGET_D["7B-4T"]


def test_rerun_skips_force_reimports(recorded_ladder, tmp_path):
    _, runs = recorded_ladder
    api = RecordedApi(runs[:2])
    first = import_project("e/p", tmp_path, api=api, log=lambda s: None)
    assert [r.status for r in first] == ["imported", "imported"]
    metrics = first[0].path / "metrics.jsonl"
    metrics.write_text(metrics.read_text().split("\n", 1)[1])  # mark: should stay untouched
    marked = metrics.read_text()
    again = import_project("e/p", tmp_path, api=api, log=lambda s: None)
    assert [r.status for r in again] == ["skipped", "skipped"]
    assert metrics.read_text() == marked
    forced = import_project("e/p", tmp_path, ImportOptions(force=True), api=api, log=lambda s: None)
    assert [r.status for r in forced] == ["imported", "imported"]
    assert metrics.read_text() != marked and len(metrics.read_text().splitlines()) == first[0].rows
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(r.name for r in runs[:2])  # no temp dirs


def _eval_row(step, tokens=None, loss=None, **kw):
    r = {"_step": step, "eval/downstream_bpb/piqa_val_rc_5shot_bpb": loss or 2.0 - step / 1000}
    if tokens is not None:
        r["throughput/total_tokens"] = tokens
    return r | kw


def test_resume_duplicates_nan_tokens_and_non_increasing(tmp_path):
    rows = [_eval_row(100, 1000), _eval_row(200, 2000), _eval_row(300, 3000, loss=9.0),
            {"_step": 250, "train/CrossEntropyLoss": 3.1},  # resumed from step 200
            _eval_row(300, 3000, loss=1.7),  # step 300 logged again after the resume: keep this
            _eval_row(400, float("nan")),  # NaN token count
            _eval_row(500, "NaN"),  # W&B JSON-encodes NaN as a string
            _eval_row(600, 2500),  # token counter went backwards
            _eval_row(700, 7000)]
    logs: list[str] = []
    res = import_project("e/p", tmp_path, api=RecordedApi([RecordedRun("370M-2xC", rows)]),
                         log=logs.append)
    assert res[0].status == "imported"
    run = read_run(tmp_path / "370M-2xC")
    assert run.evals[STEP].tolist() == [100, 200, 300, 700]
    assert run.evals[TOKENS].tolist() == [1000, 2000, 3000, 7000]
    assert run.column("eval/downstream_bpb/piqa_val_rc_5shot_bpb")[2] == 1.7
    dropped = run.meta.extra["dropped_rows"]
    assert len(dropped) == 4
    assert any("step 300" in d and "more than once" in d for d in dropped)
    assert any("step 400" in d and "NaN" in d for d in dropped)
    assert any("step 500" in d for d in dropped)
    assert any("step 600" in d and "not above" in d for d in dropped)
    assert sum("dropped step" in line for line in logs) == 4
    assert run.n == PAPER_N["370M"] and run.meta.multiplier == 2.0


def test_missing_token_column(tmp_path):
    rows = [_eval_row(s) for s in (10, 20, 30)]
    # tokens from step x the config's batch (sequences x sequence length, OLMo's config)
    cfg = {"global_train_batch_size": {"value": 128, "desc": None}, "model": {"max_sequence_length": 4096}}
    api = RecordedApi([RecordedRun("190M-1xC", rows, config=cfg)])
    assert import_project("e/p", tmp_path, api=api, log=lambda s: None)[0].status == "imported"
    run = read_run(tmp_path / "190M-1xC")
    assert run.evals[TOKENS].tolist() == [10 * 128 * 4096, 20 * 128 * 4096, 30 * 128 * 4096]
    assert run.meta.batch_tokens == 128 * 4096 and "global_train_batch_size" in run.meta.extra["tokens_from"]

    # neither a token key nor a batch size: a clear error naming the run; other runs go on
    api = RecordedApi([RecordedRun("760M-5xC", rows), RecordedRun("1B-1xC", [_eval_row(5, 50)])])
    res = import_project("e/p", tmp_path / "b", api=api, log=lambda s: None)
    assert [r.status for r in res] == ["failed", "imported"]
    assert "run '760M-5xC'" in res[0].message and "throughput/total_tokens" in res[0].message
    assert "--batch-tokens" in res[0].message
    assert not (tmp_path / "b" / "760M-5xC").exists()

    # ... fixed by --batch-tokens
    res = import_project("e/p", tmp_path / "b", ImportOptions(batch_tokens=1000), api=api,
                         log=lambda s: None)
    assert [r.status for r in res] == ["imported", "skipped"]
    assert read_run(tmp_path / "b" / "760M-5xC").evals[TOKENS].tolist() == [10_000, 20_000, 30_000]


def test_run_without_eval_rows_is_skipped(tmp_path):
    train_only = [{"_step": s, "train/CrossEntropyLoss": 3.0, "throughput/total_tokens": s * 10}
                  for s in range(1, 50)]
    logs: list[str] = []
    api = RecordedApi([RecordedRun("190M-2xC", train_only), RecordedRun("190M-5xC", [_eval_row(1, 10)])])
    res = import_project("e/p", tmp_path, api=api, log=logs.append)
    assert [r.status for r in res] == ["empty", "imported"]
    assert "no evaluation rows" in res[0].message and "49 rows" in res[0].message
    assert any("190M-2xC" in line and "no evaluation rows" in line for line in logs)
    assert not (tmp_path / "190M-2xC").exists()


def test_filters_states_duplicates_and_n_override(tmp_path):
    crashed = RecordedRun("my-150m-run", [_eval_row(1, 10), _eval_row(2, 20, loss=5.0)],
                          state="crashed", run_id="a", created=0)
    restart = RecordedRun("my-150m-run", [_eval_row(2, 20, loss=1.5), _eval_row(3, 30)],
                          state="finished", run_id="b", created=1)
    other = RecordedRun("other", [_eval_row(1, 10)], run_id="c", created=2)
    api = RecordedApi([crashed, restart, other])
    opts = ImportOptions(name_filter=r"^my-", n_params=((r"150m", 151_898_880),),
                         mongo={"tags": {"$in": ["ladder"]}})
    res = import_project("e/p", tmp_path, opts, api=api, log=lambda s: None)
    assert [(r.name, r.status) for r in res] == [("my-150m-run", "imported")]
    run = read_run(tmp_path / "my-150m-run")
    assert run.n == 151_898_880 and run.meta.extra["n_params_source"].startswith("--n-params")
    assert run.evals[STEP].tolist() == [1, 2, 3]
    assert run.column("eval/downstream_bpb/piqa_val_rc_5shot_bpb")[1] == 1.5  # the restart wins
    assert run.meta.extra["wandb_merged_ids"] == ["a", "b"] and run.meta.extra["wandb_id"] == "b"
    assert api.calls[0][1] == {"$and": [{"tags": {"$in": ["ladder"]}},
                                        {"display_name": {"$regex": "^my-"}}]}

    with pytest.raises(WandbImportError, match="my-150m-run.*a, b"):
        import_project("e/p", tmp_path / "x", ImportOptions(duplicates="error"), api=api)
    res = import_project("e/p", tmp_path / "y", ImportOptions(states=("finished",)), api=api,
                         log=lambda s: None)
    assert [r.name for r in res] == ["my-150m-run", "other"]
    assert read_run(tmp_path / "y" / "my-150m-run").evals[STEP].tolist() == [2, 3]
    assert read_run(tmp_path / "y" / "other").meta.n_params is None  # no size: reported
    assert "no N" in res[1].message
    assert server_filters(ImportOptions(states=("finished",))) == {"state": {"$in": ["finished"]}}
    with pytest.raises(WandbImportError, match="ENTITY/PROJECT"):
        import_project("just-a-project", tmp_path, api=api)
    with pytest.raises(WandbImportError, match="invalid regex"):
        import_project("e/p", tmp_path, ImportOptions(name_filter="(unclosed"), api=api)


def test_interrupted_write_leaves_no_run_dir(tmp_path, monkeypatch):
    import ladder.wandb.importer as wi

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(wi, "read_run_dir", boom)  # interrupt after the files are written
    api = RecordedApi([RecordedRun("190M-1xC", [_eval_row(1, 10)])])
    with pytest.raises(KeyboardInterrupt):
        import_project("e/p", tmp_path, api=api, log=lambda s: None)
    assert list(tmp_path.iterdir()) == []


def test_convert_history_ignores_media_and_bookkeeping():
    conv = convert_history("r", [_eval_row(1, 10, **{"eval/table": {"_type": "table-file"},
                                                     "_runtime": 3.0, "flag": True})],
                           {}, ImportOptions())
    assert conv.rows == [{"step": 1, "tokens": 10, "eval/downstream_bpb/piqa_val_rc_5shot_bpb": 1.999}]


def _offline_env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(PYTHONPATH=str(ROOT), HOME=str(tmp_path), WANDB_MODE="offline", WANDB_SILENT="true",
               WANDB_DIR=str(tmp_path), WANDB_CONFIG_DIR=str(tmp_path / "cfg"),
               WANDB_CACHE_DIR=str(tmp_path / "cache"))
    return env


def test_real_api_without_key_fails_clearly(tmp_path):
    cmd = [sys.executable, "-m", "ladder", "import-wandb", "ai2-llm/olmo-ladder", "--out",
           str(tmp_path / "out"), "--timeout", "3"]
    p = subprocess.run(cmd, env=_offline_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "cannot connect to W&B" in p.stderr and "wandb login" in p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "out").exists()


def test_real_api_unreachable_server_fails_clearly(tmp_path):
    env = _offline_env(tmp_path) | {"WANDB_API_KEY": "local-" + "0" * 40,
                                    "WANDB_BASE_URL": "http://127.0.0.1:9"}
    cmd = [sys.executable, "-m", "ladder", "import-wandb", "ai2-llm/olmo-ladder", "--out",
           str(tmp_path / "out"), "--timeout", "3"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "cannot connect to W&B" in p.stderr or "cannot list the runs" in p.stderr
    assert "Traceback" not in p.stderr


def test_cli_bad_arguments(tmp_path):
    env = _offline_env(tmp_path)
    base = [sys.executable, "-m", "ladder", "import-wandb", "e/p", "--out", str(tmp_path)]
    p = subprocess.run(base + ["--n-params", "nonsense"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 2 and "REGEX=N" in p.stderr
    p = subprocess.run(base + ["--mongo", "{bad"], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "--mongo: invalid JSON" in p.stderr


def test_prediction_from_import_equals_prediction_from_csv(recorded_ladder, tmp_path):
    """The point of the import: the same ladder gives the same prediction either way."""
    from analysis.predict import Target, predict_targets

    files, runs = recorded_ladder
    ladder = [r for r in runs if "xC" in r.name]
    import_project("ai2-llm/olmo-ladder", tmp_path, api=RecordedApi(ladder), log=lambda s: None)
    target = [Target("7B-4T", PAPER_N["7B"], PAPER_TARGET_D["7B-4T"])]
    kw = dict(tasks="piqa,hellaswag", intervals=False, warn=lambda m: None)
    from_import = predict_targets(read_runs(sorted(tmp_path.iterdir())), target, **kw)
    from_csv = predict_targets(read_runs([f for f in files if "xC" in f.name]), target, **kw)
    assert [(p.task, p.pred_acc, p.pred_loss) for p in from_import] == \
        [(p.task, p.pred_acc, p.pred_loss) for p in from_csv]
    assert 0.75 < from_import[0].pred_acc < 0.87  # piqa; the paper's 7B-4T actual is 0.8205


def test_run_imported_while_running_is_refreshed(tmp_path):
    live = RecordedRun("190M-1xC", [_eval_row(1, 10)], state="running")
    import_project("e/p", tmp_path, api=RecordedApi([live]), log=lambda s: None)
    assert read_run(tmp_path / "190M-1xC").meta.extra["wandb_state"] == "running"
    done = RecordedRun("190M-1xC", [_eval_row(1, 10), _eval_row(2, 20)], state="finished", run_id=live.id)
    res = import_project("e/p", tmp_path, api=RecordedApi([done]), log=lambda s: None)
    assert res[0].status == "imported"
    run = read_run(tmp_path / "190M-1xC")
    assert run.evals[STEP].tolist() == [1, 2] and run.meta.extra["wandb_state"] == "finished"
    assert import_project("e/p", tmp_path, api=RecordedApi([done]), log=lambda s: None)[0].status == "skipped"


def test_service_retries_are_bounded_unless_the_user_sets_them(monkeypatch):
    """The unreachable-server hang: wandb-core's default retries outlived the error by minutes."""
    from types import SimpleNamespace

    from ladder.wandb.importer import _bound_retries

    got = []
    fake = SimpleNamespace(Settings=dict, setup=got.append)
    monkeypatch.delenv("WANDB__GRAPHQL_RETRY_MAX", raising=False)
    monkeypatch.delenv("WANDB__GRAPHQL_RETRY_WAIT_MAX_SECONDS", raising=False)
    monkeypatch.setenv("WANDB__GRAPHQL_TIMEOUT_SECONDS", "60")
    _bound_retries(fake, 7)
    assert got == [{"x_graphql_retry_max": 5, "x_graphql_retry_wait_max_seconds": 7.0}]


def test_names_that_clean_to_one_directory_get_their_own(tmp_path):
    """'run/a' and 'run a' both clean to 'run_a': the second was reported 'already imported' and
    never imported, or with --force overwrote the first. Each now has a directory, found again."""
    first = RecordedRun("190M run/a", [_eval_row(1, 10), _eval_row(2, 20)], run_id="w1", created=0)
    second = RecordedRun("190M run a", [_eval_row(1, 10, loss=1.7)], run_id="w2", created=1)
    api = RecordedApi([first, second])
    res = import_project("e/p", tmp_path, api=api, log=lambda s: None)
    assert [(r.status, r.path.name) for r in res] == [("imported", "190M_run_a"),
                                                      ("imported", "190M_run_a-w2")]
    runs = read_runs([tmp_path / "190M_run_a", tmp_path / "190M_run_a-w2"])  # distinct names
    assert [(r.name, r.n_evals) for r in runs] == [("190M run/a", 2), ("190M run a", 1)]
    again = import_project("e/p", tmp_path, api=api, log=lambda s: None)
    assert [(r.status, r.path.name) for r in again] == [("skipped", "190M_run_a"),
                                                        ("skipped", "190M_run_a-w2")]
    forced = import_project("e/p", tmp_path, ImportOptions(force=True), api=api, log=lambda s: None)
    assert [r.path.name for r in forced] == ["190M_run_a", "190M_run_a-w2"]
    assert [read_run(r.path).name for r in forced] == ["190M run/a", "190M run a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["190M_run_a", "190M_run_a-w2"]
    # imported alone first, the second keeps the plain directory; the first then takes its suffix
    alone = tmp_path / "alone"
    import_project("e/p", alone, api=RecordedApi([second]), log=lambda s: None)
    both = import_project("e/p", alone, api=api, log=lambda s: None)
    assert [(r.status, r.path.name) for r in both] == [("imported", "190M_run_a-w1"),
                                                       ("skipped", "190M_run_a")]
