"""Integrity of the bytes a run depends on (docs/reliability.md, "Integrity" (10)): checkpoint
files and the token cache carry digests checked before use, nothing read from a run directory is
unpickled, run-log rows carry checksums and are appended whole, a full disk is one line and a failed status
with an exact resume, SIGHUP and Ctrl-C checkpoint. Runs are the tiny-9k rung of
tests/test_faults.py; tests/test_divergence.py has divergence and start-up signals."""

import errno
import json
import os
import pickle
import signal
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from analysis.rowlog import append_line
from analysis.runlog import RunLogError, RunLogWriter, read_metrics_jsonl
from ladder.exit_codes import BAD_INPUT, EXIT_BAD_INPUT, PREEMPTED
from ladder.train import checkpoint as ckpt
from ladder.train.status import read_status
from tests.test_faults import (cache, copy_run, finished, recipe_file, rows,  # noqa: F401 (fixtures)
                               same_evaluations, train_in_process)


def cli_args(recipe_file, out, cache, *overrides):
    import argparse

    return argparse.Namespace(recipe=str(recipe_file), size=None, multiplier=None, seed=None, out=str(out),
                              cache=str(cache), no_progress=True, overrides=list(overrides))


def only_error_line(err: str, *fragments) -> None:
    errors = [line for line in err.splitlines() if "error:" in line]
    assert "Traceback" not in err and len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    for f in fragments:
        assert f in errors[0], (f, err)


def damage(path: Path, how: str) -> None:
    """Same-size damage: what a power loss or a bad sector leaves, which size checks cannot see."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    if how == "zero-block":
        start = min(4096, max(0, len(data) - 4096)) if len(data) > 4096 else 0
        data[start:start + 4096] = bytes(len(data[start:start + 4096]))
    elif how == "random-64":
        data[mid:mid + 64] = bytes((b + 1 + i) % 256 for i, b in enumerate(data[mid:mid + 64]))
    elif how == "flip":
        data[mid] ^= 0x01
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------- checkpoint digests

KINDS = [("model.safetensors", "zero-block"), ("training_state/optimizer/__0_0.distcp", "random-64"),
         ("training_state/optimizer/.metadata", "flip"), ("training_state/scheduler.pt", "flip"),
         ("training_state/rng-rank0.pt", "random-64"), ("training_state/rng-rank0.json", "flip"),
         ("training_state/state.json", "flip"), ("config.json", "flip"), ("tokenizer.json", "flip")]


@pytest.mark.parametrize("rel,how", KINDS)
def test_each_checkpoint_file_kind_damaged_is_set_aside(tmp_path, finished, rel, how):
    run = copy_run(finished, tmp_path)
    older, latest = [c for c in ckpt.list_checkpoints(run) if c.has_state][-2:]
    size = (latest.path / rel).stat().st_size
    damage(latest.path / rel, how)
    assert (latest.path / rel).stat().st_size == size
    said = []
    assert ckpt.latest_intact(run, report=said.append).path == older.path
    assert f"checkpoint {latest.path.name} is damaged ({rel} does not match its digest" in said[0]
    assert (run / "checkpoints" / f"damaged-{latest.path.name}").is_dir()


def test_a_damaged_manifest_is_set_aside(tmp_path, finished):
    run = copy_run(finished, tmp_path)
    older, latest = [c for c in ckpt.list_checkpoints(run) if c.has_state][-2:]
    m = latest.path / ckpt.MANIFEST
    manifest = json.loads(m.read_text())
    m.write_text(json.dumps({**manifest, "eval_step": not manifest["eval_step"]}))  # valid JSON
    said = []
    assert ckpt.latest_intact(run, report=said.append).path == older.path
    assert "checkpoint.json does not match its digest" in said[0]


def test_same_size_damage_in_dcp_metadata_resumes_from_the_intact_one(tmp_path, finished, recipe_file,
                                                                        cache, capsys):
    run = copy_run(finished, tmp_path)
    latest = ckpt.latest_resumable(run)
    damage(latest.path / "training_state/optimizer/.metadata", "zero-block")
    assert train_in_process(recipe_file, run, cache).status == "completed"
    assert f"checkpoint {latest.path.name} is damaged" in capsys.readouterr().out
    same_evaluations(rows(run), rows(finished))


class _Payload:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))  # unpickling creates the file


def test_a_pickle_payload_in_dcp_metadata_runs_nothing(tmp_path, finished, recipe_file, cache, capsys):
    live = tmp_path / "live"
    pickle.loads(pickle.dumps(_Payload(live)))
    assert live.exists()  # the payload works with plain pickle

    run = copy_run(finished, tmp_path)
    latest = ckpt.latest_resumable(run)
    sentinel = tmp_path / "pwned"
    meta = latest.path / "training_state/optimizer/.metadata"
    payload = pickle.dumps(_Payload(sentinel))
    meta.write_bytes(payload + b"\0" * max(0, meta.stat().st_size - len(payload)))
    # a forger rewrites the digests too: the reader itself must refuse
    ckpt.write_manifest(latest.path, {k: v for k, v in latest.manifest.items() if k != "files"})
    assert ckpt.checkpoint_problem(ckpt.latest_resumable(run)) is None
    assert train_in_process(recipe_file, run, cache).status == "completed"
    assert not sentinel.exists()
    out = capsys.readouterr().out
    assert f"checkpoint {latest.path.name} is damaged (its optimizer metadata refers to io.open" in out
    same_evaluations(rows(run), rows(finished))


def test_scheduler_and_rng_are_read_weights_only(tmp_path):
    from ladder.train.safe_dcp import UnsafeCheckpointError, load_metadata

    sentinel = tmp_path / "pwned"
    torch.save(_Payload(sentinel), tmp_path / "scheduler.pt")
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "scheduler.pt", weights_only=True)
    with pytest.raises(UnsafeCheckpointError, match="not checkpoint metadata"):
        load_metadata(pickle.dumps(_Payload(sentinel)))
    with pytest.raises(UnsafeCheckpointError, match="holds a dict"):
        load_metadata(pickle.dumps({"a": 1}))
    assert not sentinel.exists()


def test_checkpoint_files_follow_the_umask_and_old_manifests_still_load(tmp_path, finished):
    mode = 0o666 & ~_umask()
    for p in (finished / "checkpoints").rglob("*"):
        if p.is_file():
            assert p.stat().st_mode & 0o777 == mode, p  # model.safetensors was always 0600
    run = copy_run(finished, tmp_path)
    latest = ckpt.latest_resumable(run)
    files = latest.manifest["files"]  # a manifest written before digests: sizes only
    old = {k: v for k, v in latest.manifest.items() if not k.startswith("manifest_")}
    (latest.path / ckpt.MANIFEST).write_text(json.dumps({**old, "files": {k: v["bytes"] for k, v in files.items()}}))
    assert ckpt.latest_intact(run).path == latest.path


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


# ---------------------------------------------------------------------------- snapshot staging


def test_snapshot_staging_pinned_for_gpu_tensors_and_replicated_state_copied_once(monkeypatch):
    from ladder.train import saver

    seen = []
    real = torch.empty_like
    monkeypatch.setattr(torch, "empty_like", lambda t, **kw: seen.append(kw["pin_memory"]))
    saver.staging_buffer(SimpleNamespace(is_cuda=True))
    saver.staging_buffer(torch.ones(2))
    assert seen == [True, False]  # pinned on CUDA, pageable on CPU
    monkeypatch.setattr(torch, "empty_like", real)

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)

    def snap(rank):
        acc = SimpleNamespace(distributed_type="MULTI_CPU", is_main_process=rank == 0, process_index=rank,
                              num_processes=2, device=torch.device("cpu"), get_state_dict=lambda m: m.state_dict())
        return saver.take_snapshot(3, accelerator=acc, model=model, optimizer=opt, scheduler=sched,
                                   state={"step": 3}, eval_step=False)

    main, other = snap(0), snap(1)
    assert other.optimizer == {} and other.model == {}  # DDP: rank 1 copies nothing replicated
    exp_avg = main.optimizer["optimizer"]["state"]["weight"]["exp_avg"]
    assert torch.equal(exp_avg, opt.state[model.weight]["exp_avg"]) and not exp_avg.is_pinned()
    assert exp_avg.data_ptr() != opt.state[model.weight]["exp_avg"].data_ptr()


# ---------------------------------------------------------------------------- token cache


def _data(cache):
    from ladder.data.pipeline import prepare_data
    from ladder.recipe import DataConfig, ModelConfig

    return prepare_data(DataConfig(max_bytes=200_000), ModelConfig(tokenizer_vocab_size=300), cache)


@pytest.mark.parametrize("how", ["truncate", "zero-block", "flip-dtype", "no-digests"])
def test_a_damaged_token_cache_is_rebuilt_never_trained_on(tmp_path, how):
    first = _data(tmp_path)
    reference = first.train.copy()
    d = first.cache_path
    del first
    meta = json.loads((d / "meta.json").read_text())
    if how == "truncate":
        with open(d / "train.bin", "r+b") as f:
            f.truncate(f.seek(0, 2) * 2 // 5)
    elif how == "zero-block":
        damage(d / "train.bin", "zero-block")
    elif how == "flip-dtype":  # still valid: a reader acting on it would read every token wrong
        (d / "meta.json").write_text(json.dumps({**meta, "dtype": "uint32"}))
    else:  # an entry written before digests
        (d / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if k not in ("files", "manifest_xxh3_128")}))
    again = _data(tmp_path)
    assert any("token cache" in n and "damaged" in n and "built again" in n for n in again.notes), again.notes
    assert again.cache_path == d and (again.train == reference).all()
    assert [p.name for p in d.parent.iterdir() if p.name.startswith("damaged-")]


# ---------------------------------------------------------------------------- run-log rows


def test_a_changed_byte_in_a_row_is_reported(tmp_path):
    w = RunLogWriter(tmp_path)
    for s in (1, 2, 3):
        w.append({"step": s, "tokens": 10 * s, "loss": 3.25 + s})
    assert [r["loss"] for r in w.rows()] == [4.25, 5.25, 6.25] and "crc32" not in w.rows()[0]
    text = (tmp_path / "metrics.jsonl").read_text()
    (tmp_path / "metrics.jsonl").write_text(text.replace("5.25", "5.75"))  # still valid JSON
    with pytest.raises(RunLogError, match="line 2 does not match its checksum"):
        read_metrics_jsonl(tmp_path / "metrics.jsonl")
    (tmp_path / "metrics.jsonl").write_text(text.replace('"crc32"', '"crc3z"', 1))
    with pytest.raises(RunLogError, match="line 2 breaks the file's pattern"):
        read_metrics_jsonl(tmp_path / "metrics.jsonl")
    (tmp_path / "old.jsonl").write_text('{"step": 1, "tokens": 5}\n')  # written before checksums
    assert read_metrics_jsonl(tmp_path / "old.jsonl") == [{"step": 1, "tokens": 5}]


def test_a_short_write_leaves_no_torn_row(tmp_path, monkeypatch):
    from analysis import rowlog

    w = RunLogWriter(tmp_path)
    w.append({"step": 1, "tokens": 10})
    before = (tmp_path / "metrics.jsonl").read_bytes()
    calls, real = [], os.write

    def short_then_full(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real(fd, bytes(data[:7]))  # the kernel takes 7 bytes...
        raise OSError(errno.ENOSPC, "No space left on device")  # ...and refuses the rest

    monkeypatch.setattr(rowlog.os, "write", short_then_full)
    with pytest.raises(OSError, match="metrics.jsonl") as e:
        w.append({"step": 2, "tokens": 20})
    assert e.value.errno == errno.ENOSPC and len(calls) == 2
    monkeypatch.setattr(rowlog.os, "write", real)
    assert (tmp_path / "metrics.jsonl").read_bytes() == before  # the 7 bytes were cut again
    w.append({"step": 2, "tokens": 20})
    assert [r["step"] for r in w.rows()] == [1, 2]


# ---------------------------------------------------------------------------- a full disk (tmpfs)


@pytest.fixture
def small_disk(tmp_path):
    d = tmp_path / "disk"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode})")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def fill(disk: Path) -> Path:
    """Fill ``disk`` to its last page; returns the filler (delete it to free the space)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for chunk in (1 << 20, 4096, 1):
            while True:
                try:
                    if os.write(fd, b"\1" * chunk) < chunk:
                        break
                except OSError as e:
                    assert e.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return filler


def test_a_short_write_on_a_full_tmpfs_is_cut_back(small_disk, monkeypatch):
    from analysis import rowlog

    log = small_disk / "metrics.jsonl"
    log.write_bytes(b"x" * 4000 + b"\n")  # 95 bytes left in its last page
    fill(small_disk)
    written, real = [], os.write
    monkeypatch.setattr(rowlog.os, "write", lambda fd, b: written.append(real(fd, b)) or written[-1])
    with pytest.raises(OSError) as e:
        append_line(log, b"y" * 500 + b"\n")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(log)
    assert written == [95]  # the kernel wrote part of the row before refusing the rest
    assert log.read_bytes() == b"x" * 4000 + b"\n"


def test_a_full_disk_during_a_checkpoint(small_disk, finished, recipe_file, cache, monkeypatch, capsys):
    from ladder.cli import train as cli_train
    from ladder.train import saver

    out, real, calls = small_disk / "run", saver.write_snapshot, []

    def filling(*a, **kw):
        calls.append(fill(small_disk) if len(calls) == 1 else None)
        return real(*a, **kw)

    monkeypatch.setattr(saver, "write_snapshot", filling)
    assert cli_train.run(cli_args(recipe_file, out, cache)) == EXIT_BAD_INPUT
    only_error_line(capsys.readouterr().err, "cannot write checkpoint", "no space left on device")
    status = read_status(out)
    assert status["outcome"] == BAD_INPUT and status["message"].startswith("failed: cannot write checkpoint")
    assert len(ckpt.list_checkpoints(out)) == 1 and not list((out / "checkpoints").glob(".tmp-*"))
    calls[1].unlink()
    monkeypatch.setattr(saver, "write_snapshot", real)
    assert cli_train.run(cli_args(recipe_file, out, cache)) == 0
    same_evaluations(rows(out), rows(finished))


def test_a_full_disk_during_a_metrics_append(small_disk, finished, recipe_file, cache, monkeypatch, capsys):
    from ladder.cli import train as cli_train

    out, real, calls = small_disk / "run", RunLogWriter.append, []

    def filling(self, row):
        if len(calls) == 1:  # a row wider than the space left (a full task set is ~100 columns)
            calls.append(fill(small_disk))
            row = {**row, "pad": "x" * 8192}
        else:
            calls.append(None)
        return real(self, row)

    monkeypatch.setattr(RunLogWriter, "append", filling)
    assert cli_train.run(cli_args(recipe_file, out, cache)) == EXIT_BAD_INPUT
    only_error_line(capsys.readouterr().err, "metrics.jsonl", "no space left on device")
    assert read_status(out)["outcome"] == BAD_INPUT
    assert [r["step"] for r in read_metrics_jsonl(out / "metrics.jsonl")] == [rows(finished)[0]["step"]]
    calls[1].unlink()
    monkeypatch.setattr(RunLogWriter, "append", real)
    assert cli_train.run(cli_args(recipe_file, out, cache)) == 0
    same_evaluations(rows(out), rows(finished))


def test_a_checkpoint_directory_turned_read_only(small_disk, finished, recipe_file, cache, monkeypatch,
                                                capsys):
    """checkpoints/ becomes a read-only mount mid-run: one line, exit 2, status failed; the run
    resumes exactly once it is writable again."""
    from ladder.cli import train as cli_train
    from ladder.train import saver

    out, real, calls = small_disk / "run", saver.write_snapshot, []
    ro = out / "checkpoints"

    def remounting(*a, **kw):
        if len(calls) == 1:
            subprocess.run(["mount", "--bind", str(ro), str(ro)], check=True)
            subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(saver, "write_snapshot", remounting)
    try:
        assert cli_train.run(cli_args(recipe_file, out, cache)) == EXIT_BAD_INPUT
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)
    only_error_line(capsys.readouterr().err, "cannot write checkpoint", "read-only file system")
    assert read_status(out)["message"].startswith("failed: cannot write checkpoint")
    monkeypatch.setattr(saver, "write_snapshot", real)
    assert cli_train.run(cli_args(recipe_file, out, cache)) == 0
    same_evaluations(rows(out), rows(finished))


# ---------------------------------------------------------------------------- signals


def test_sighup_and_ctrl_c_checkpoint_and_status_reports_the_step(tmp_path, finished, recipe_file, cache,
                                                                 monkeypatch):
    from ladder.train import loop

    for sig in (signal.SIGHUP, signal.SIGINT):
        out, real, seen = tmp_path / sig.name, loop._train_step, []

        def signalling(*a, **kw):
            seen.append((read_status(out) or {}).get("step"))
            if len(seen) == 15:
                os.kill(os.getpid(), sig)
            return real(*a, **kw)

        monkeypatch.setattr(loop, "_train_step", signalling)
        result = train_in_process(recipe_file, out, cache)
        assert result.status == "preempted" and result.step == 15 and ckpt.latest_resumable(out).step == 15
        assert max(s for s in seen if s is not None) > 0  # the step while running, not 0
        assert read_status(out)["outcome"] == PREEMPTED
        monkeypatch.setattr(loop, "_train_step", real)
        assert train_in_process(recipe_file, out, cache).status == "completed"
        same_evaluations(rows(out), rows(finished))
