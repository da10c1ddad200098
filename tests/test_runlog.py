import json

import numpy as np
import pytest

from analysis.runlog import (
    PAPER_N,
    RunLogError,
    RunLogWriter,
    RunMeta,
    parse_run_name,
    read_run,
    read_runs,
)


def _write_run(tmp_path, rows, meta=None):
    w = RunLogWriter(tmp_path / "run")
    w.write_meta(meta or RunMeta(name="tiny-a-1xC", n_params=1000, target_tokens=20000, multiplier=1.0))
    for r in rows:
        w.append(r)
    return w


def test_writer_reader_roundtrip(tmp_path):
    rows = [{"step": s, "tokens": 100 * s, "train/CrossEntropyLoss": 5.0 / s} for s in (1, 2, 4)]
    _write_run(tmp_path, rows)
    run = read_run(tmp_path / "run")
    assert run.name == "tiny-a-1xC" and run.n == 1000 and run.meta.multiplier == 1.0
    np.testing.assert_allclose(run.column("train/CrossEntropyLoss"), [5.0, 2.5, 1.25])
    assert run.d == 400
    assert run.final("train/CrossEntropyLoss", last=2) == pytest.approx((2.5 + 1.25) / 2)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["format"] == "ladder-runlog/1"


def test_resume_at_keeps_each_evaluation_once(tmp_path):
    w = _write_run(tmp_path, [{"step": s, "tokens": 10 * s} for s in (1, 2, 3, 4)])
    w.resume_at(2)  # the checkpoint we resume from is step 2: steps 3, 4 will be logged again
    for s in (3, 4, 5):
        w.append({"step": s, "tokens": 10 * s})
    assert [r["step"] for r in w.rows()] == [1, 2, 3, 4, 5]


def test_torn_last_line_is_ignored_but_corrupt_middle_line_is_an_error(tmp_path):
    w = _write_run(tmp_path, [{"step": 1, "tokens": 10}, {"step": 2, "tokens": 20}])
    with open(w.metrics_path, "a") as f:
        f.write('{"step": 3, "tok')  # a write cut by SIGKILL
    assert len(read_run(tmp_path / "run").evals) == 2
    w.metrics_path.write_text('{"step": 1, "tokens": 10}\nnot json\n{"step": 2, "tokens": 20}\n')
    with pytest.raises(RunLogError, match=r"metrics.jsonl: line 2"):
        read_run(tmp_path / "run")


def test_non_increasing_tokens_names_file_and_column(tmp_path):
    _write_run(tmp_path, [{"step": 1, "tokens": 10}, {"step": 2, "tokens": 10}])
    with pytest.raises(RunLogError, match=r"run.*column 'tokens' is not increasing"):
        read_run(tmp_path / "run")


def test_nan_in_metric_is_reported_with_step(tmp_path):
    _write_run(tmp_path, [{"step": 1, "tokens": 10, "m": 1.0}, {"step": 2, "tokens": 20, "m": float("nan")}])
    run = read_run(tmp_path / "run")
    with pytest.raises(RunLogError, match=r"column 'm' has 1 NaN.*step 2"):
        run.column("m")
    with pytest.raises(RunLogError, match=r"missing column 'nope'"):
        run.column("nope")


def test_csv_errors_name_the_file(tmp_path):
    p = tmp_path / "190M-1xC.csv"
    p.write_text("_step,foo\n1,2\n")
    run = read_run(p)  # a `_step`-only export reads; where tokens are needed, the error says how
    with pytest.raises(RunLogError, match=r"190M-1xC.csv: no tokens column "
                                          r"\('throughput/total_tokens'\).*--tokens-per-step"):
        run.d
    p.write_text("foo\n2\n")
    with pytest.raises(RunLogError, match=r"190M-1xC.csv: missing columns '_step' and "
                                          r"'throughput/total_tokens'"):
        read_run(p)
    with pytest.raises(RunLogError, match="no such file"):
        read_run(tmp_path / "absent.csv")


def test_parse_run_name():
    assert parse_run_name("760M-5xC") == {
        "size": "760M", "multiplier": 5.0, "n_params": PAPER_N["760M"],
        "target_tokens": 5.0 * 20 * PAPER_N["760M"]}
    assert parse_run_name("7B-4T-final")["target_tokens"] == 3_945_065_873_408
    assert parse_run_name("whatever") == {}


def test_reads_the_paper_ladder(olmo_ladder_dir):
    runs = read_runs(sorted(olmo_ladder_dir.glob("*xC.csv")))
    assert len(runs) == 16
    by = {r.name: r for r in runs}
    r = by["1B-10xC"]
    assert r.n == 1_279_395_840 and r.meta.multiplier == 10
    # the run reached its planned D = 10 x 20 x N (the paper rounds up to whole batches/steps)
    assert abs(r.d / r.meta.target_tokens - 1) < 1e-3 and r.meta.batch_tokens == 1_572_864
    target = read_run(olmo_ladder_dir / "7B-4T-final.csv")
    assert target.n == 6_887_575_552 and len(target.evals) == 1


def test_wide_exports_read_without_warnings(olmo_ladder_dir):
    """A W&B export has hundreds of columns; reading one must not print pandas' fragmentation
    warning (with its source line) at the user."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_runs(sorted(olmo_ladder_dir.glob("*.csv")))


def test_wandb_step_only_export(tmp_path):
    """A plain W&B history export: `_step`, training rows without evaluations, no tokens."""
    acc = "eval/downstream/hellaswag_val_rc_5shot_len_norm"
    p = tmp_path / "7B-target.csv"
    p.write_text(f"_step,train/loss,{acc}\n300,2.0,0.70\n100,2.5,0.60\n150,2.4,\n200,2.2,0.65\n")
    run = read_run(p)
    assert list(run.column("step")) == [100, 200, 300]  # ordered by step, train row dropped
    assert list(run.column(acc)) == [0.60, 0.65, 0.70]
    run = read_run(p, tokens_per_step=1000)
    assert run.d == 300_000
    p.write_text(f"_step,batch_size_in_tokens,{acc}\n100,10,0.6\n200,20,0.7\n")
    assert list(read_run(p).column("tokens")) == [1000, 3000]  # accumulated per step


CSV_CASES = {
    "bom_crlf_quoted": '\ufeff_step,"throughput/total_tokens",eval/x\r\n1,100,"0.5"\r\n2,200,0.25\r\n',
    "missing_and_na": "_step,a,b\n1,,NA\n2,nan,null\n3,None,1e-3\n4,#N/A,-0\n",
    "text_in_number_column": "_step,a\n1,0.5\n2,abc\n3,1_000\n4,0x10\n",
    "short_rows_blank_lines": "_step,a,b\n1,2\n\n2,3,4\n\n",
    "special_floats": "_step,a\n1,inf\n2,-Infinity\n3,1e400\n4,.5\n5,7.\n",
}


@pytest.mark.parametrize("case", sorted(CSV_CASES))
def test_csv_columns_read_as_pandas_reads_them(case, tmp_path):
    """The CSV reader (stdlib csv + numpy, so that predicting never imports pandas) against
    pandas as the oracle: same columns, rows and numbers (text and missing cells as NaN)."""
    import pandas as pd

    from analysis.columns import as_floats
    from analysis.runlog import read_csv_columns

    p = tmp_path / f"{case}.csv"
    p.write_bytes(CSV_CASES[case].encode())
    ours = read_csv_columns(p)
    theirs = pd.read_csv(p)
    assert list(ours) == list(theirs.columns)
    for col in ours:
        np.testing.assert_array_equal(as_floats(ours[col]),
                                      pd.to_numeric(theirs[col], errors="coerce").to_numpy(float),
                                      err_msg=col)


def test_csv_reader_refuses_what_it_cannot_read(tmp_path):
    p = tmp_path / "190M-1xC.csv"
    for text, needle in (("", "no header row"), ("_step,a\n1,2,3\n", "line 2 has 3 fields"),
                         ("_step,a,a\n1,2,3\n", "column 'a' appears twice")):
        p.write_text(text)
        with pytest.raises(RunLogError, match=needle):
            read_run(p)
    p.write_bytes(b"_step,a\n1,\xff\n")
    with pytest.raises(RunLogError, match="cannot read as CSV"):
        read_run(p)
