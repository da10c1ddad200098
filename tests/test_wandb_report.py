"""Logging a sweep's predictions to W&B, checked on the offline run W&B writes to disk."""

from __future__ import annotations

import json
import math
import struct
import time
from pathlib import Path

import pytest

from analysis.predict import Prediction
from ladder.wandb.report import log_predictions, summary_values, table_columns

BLOCK = 32768  # the .wandb file is a leveldb-style log of protobuf Records in 32 KiB blocks


def wandb_records(path: Path) -> list:
    """Parse a .wandb transaction log into wandb_internal_pb2.Record messages."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a .wandb file"
    pos, buf, records = 7, b"", []
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # block trailer padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if kind == 0 and length == 0:
            break
        buf += data[pos:pos + length]
        pos += length
        if kind in (1, 4):  # FULL or LAST fragment
            r = pb.Record()
            r.ParseFromString(buf)
            records.append(r)
            buf = b""
    return records


def finished_records(path: Path, timeout: float = 30.0) -> list:
    """The records once the log holds the run's exit record: wandb's service process writes
    the .wandb file asynchronously and may still be flushing when run.finish() returns."""
    deadline = time.monotonic() + timeout
    while True:
        records = wandb_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        if time.monotonic() > deadline:
            import wandb
            wandb.teardown()  # what process exit does: stop the service, flushing its writes
            return wandb_records(path)
        time.sleep(0.2)


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return tmp_path


def _predictions() -> list[dict]:
    preds = [Prediction("mmlu", "tiny-target", 0.30, 0.27, 0.34, 1.20, actual_acc=0.32, actual_loss=1.10),
             Prediction("piqa", "tiny-target", 0.60, 0.55, 0.62, 0.90, actual_acc=0.64, actual_loss=0.95),
             Prediction("mmlu", "7B-4T", 0.48, 0.45, 0.52, 0.70),
             Prediction("piqa", "7B-4T", 0.81, 0.79, float("nan"), 0.55)]
    return [p.to_json() for p in preds]


def _plot(path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([1, 2, 3], [3, 1, 2])
    fig.savefig(path)
    plt.close(fig)
    return path


def test_summary_values():
    s = summary_values(_predictions())
    assert s["abs_error_acc/tiny-target/mean"] == pytest.approx((0.02 + 0.04) / 2)
    assert s["abs_error_acc/tiny-target/piqa"] == pytest.approx(0.04)
    assert s["abs_error_loss/tiny-target/mean"] == pytest.approx((0.10 + 0.05) / 2)
    assert s["interval_coverage/tiny-target"] == 0.5  # 0.32 in [0.27, 0.34]; 0.64 above 0.62
    assert s["pred_acc/7B-4T/piqa"] == 0.81
    assert not any(k.startswith(("abs_error", "interval")) and "7B-4T" in k for k in s)
    assert table_columns(_predictions()) == ["task", "target", "pred_acc", "pred_acc_low",
                                             "pred_acc_high", "pred_loss", "actual_acc", "actual_loss"]
    assert "actual_acc" not in table_columns(_predictions()[2:])


def test_table_shows_grade_and_whether_the_interval_is_calibrated():
    from analysis.trust import Grade

    p = Prediction("mmlu", "7B-4T", 0.48, 0.43, 0.55, 0.70, grade=Grade("noisy", ["scatter"]),
                   interval_info={"level": 0.9, "calibrated": True})
    q = Prediction("piqa", "7B-4T", 0.81, 0.79, 0.83, 0.55, grade=Grade("reliable"),
                   interval_info={"level": 0.9, "calibrated": False})
    preds = [p.to_json(), q.to_json()]
    assert table_columns(preds) == ["task", "target", "grade", "pred_acc", "pred_acc_low",
                                    "pred_acc_high", "interval_calibrated", "pred_loss"]
    from ladder.wandb.report import table_row
    assert [table_row(d)["grade"] for d in preds] == ["noisy", "reliable"]
    assert [table_row(d)["interval_calibrated"] for d in preds] == [True, False]
    # a target farther beyond the ladder than the calibrating backtests: the table says so
    far = Prediction("csqa", "7B-4T", 0.79, 0.74, 0.85, 0.73, grade=Grade("reliable"),
                     interval_info={"level": 0.9, "calibrated": True, "beyond_calibration":
                                    {"log_n_beyond_ladder": [math.log(5.4), math.log(3.4)]}})
    preds.append(far.to_json())
    assert "interval_beyond_backtests" in table_columns(preds)
    assert [table_row(d)["interval_beyond_backtests"] for d in preds] == [None, None, "N 5.4x > 3.4x"]


def test_log_predictions_offline(wandb_env):
    tmp = wandb_env
    plots = [_plot(tmp / "mmlu.png"), _plot(tmp / "piqa.png")]
    preds = _predictions()
    logged = log_predictions(preds, plots, project="ladder-test", entity=None, group="sweep-abc",
                             mode="offline", run_dir=tmp / "sweep" / "predictions")
    assert logged.url is None and logged.dir.is_dir()
    assert logged.dir.parent == tmp / "sweep" / "predictions" / "wandb"
    assert logged.dir.name.startswith("offline-run-") and logged.dir.name.endswith(logged.id)

    # the table as W&B stored it: our columns and values (NaN -> null)
    tables = list((logged.dir / "files" / "media" / "table").glob("predictions_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["task", "target", "pred_acc", "pred_acc_low", "pred_acc_high",
                                "pred_loss", "actual_acc", "actual_loss"]
    assert len(table["data"]) == 4
    assert table["data"][0] == ["mmlu", "tiny-target", 0.30, 0.27, 0.34, 1.20, 0.32, 1.10]
    assert table["data"][3] == ["piqa", "7B-4T", 0.81, 0.79, None, 0.55, None, None]

    images = sorted(p.name for p in (logged.dir / "files" / "media" / "images" / "plots").glob("*.png"))
    assert [n.split("_")[0] for n in images] == ["mmlu", "piqa"]

    # the run's identity, history and summary as recorded in the .wandb log
    records = finished_records(logged.dir / f"run-{logged.id}.wandb")
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert (run.run_group, run.job_type, run.display_name, run.project) == \
        ("sweep-abc", "predict", "predictions", "ladder-test")
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["targets"] == ["7B-4T", "tiny-target"] and config["tasks"] == ["mmlu", "piqa"]
    history_keys = {i.key or i.nested_key[0] for r in records if r.WhichOneof("record_type") == "history"
                    for i in r.history.item}
    assert {"predictions", "plots/mmlu", "plots/piqa"} <= history_keys
    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            for u in r.summary.update:
                if u.key:
                    summary[u.key] = json.loads(u.value_json)
    assert summary["abs_error_acc/tiny-target/mean"] == pytest.approx(0.03)
    assert summary["interval_coverage/tiny-target"] == 0.5
    assert summary["pred_acc/7B-4T/mmlu"] == 0.48


def test_bad_inputs_fail_before_creating_a_run(wandb_env):
    tmp = wandb_env
    kw = dict(project="p", group="g", mode="offline", run_dir=tmp / "r")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        log_predictions(_predictions(), [tmp / "missing.png"], **kw)
    with pytest.raises(ValueError, match=r"predictions\[1\]: missing field\(s\) pred_acc"):
        log_predictions([_predictions()[0], {"task": "x", "target": "t"}], [], **kw)
    with pytest.raises(ValueError, match="mode"):
        log_predictions(_predictions(), [], **{**kw, "mode": "sometimes"})
    assert not (tmp / "r").exists()
    assert log_predictions(_predictions(), [], **{**kw, "mode": "disabled"}) is None


def test_sweep_predictions_fall_back_to_offline_when_online_fails(monkeypatch, tmp_path):
    """As the rungs do: a W&B server that cannot be reached costs the sweep no W&B record."""
    from types import SimpleNamespace

    import ladder.wandb.report as report
    from ladder.sweep.predict import log_sweep_predictions

    modes = []

    def fake_log(preds, pngs, *, mode, **kw):
        modes.append(mode)
        if mode == "online":
            raise RuntimeError("Timed out while retrying: connection refused")

    monkeypatch.setattr(report, "log_predictions", fake_log)
    tracking = SimpleNamespace(wandb=True, mode="online", project="p", entity=None, group=None)
    sweep = SimpleNamespace(recipe=SimpleNamespace(tracking=tracking, name="micro"), dir=tmp_path,
                            plan=SimpleNamespace(rungs=["a", "b"]))
    files = {"json": tmp_path / "predictions" / "predictions.json"}
    said = []
    log_sweep_predictions(sweep, [], files, said.append, ["a", "b"])
    assert modes == ["online", "offline"]
    assert "W&B online failed" in said[0] and "wandb sync" in said[1]
    # offline failing too: a warning that points at the files on disk, nothing raised
    modes.clear(), said.clear()
    tracking.mode = "offline"
    monkeypatch.setattr(report, "log_predictions", lambda *a, **k: (_ for _ in ()).throw(OSError("disk")))
    log_sweep_predictions(sweep, [], files, said.append, ["a", "b"])
    assert len(said) == 1 and "could not log predictions" in said[0] and "predictions" in said[0]
