"""Checkpoint directory rules without training: what counts as complete, retention, RNG round trip."""

import json
import random

import numpy as np
import torch

from ladder.train import checkpoint as ckpt


def fake_checkpoint(run, step, eval_step=True, state=True, manifest=True):
    d = run / "checkpoints" / ckpt.step_dir_name(step)
    (d / ckpt.STATE).mkdir(parents=True)
    (d / "model.safetensors").write_bytes(b"w")
    if state:
        (d / ckpt.STATE / "state.json").write_text(json.dumps({"step": step}))
    if manifest:
        (d / ckpt.MANIFEST).write_text(json.dumps({"step": step, "has_state": state, "eval_step": eval_step}))
    return d


def test_only_manifested_directories_are_checkpoints(tmp_path):
    fake_checkpoint(tmp_path, 10)
    fake_checkpoint(tmp_path, 20, manifest=False)  # a save that never finished its manifest
    tmp = tmp_path / "checkpoints" / ".tmp-step0000030"
    tmp.mkdir()
    (tmp / ckpt.MANIFEST).write_text(json.dumps({"step": 30, "has_state": True}))
    assert [c.step for c in ckpt.list_checkpoints(tmp_path)] == [10]
    assert ckpt.latest_resumable(tmp_path).step == 10
    assert ckpt.sweep_temp_dirs(tmp_path) == [tmp] and not tmp.exists()
    assert ckpt.latest_resumable(tmp_path / "nothing") is None


def test_retention_keeps_last_states_and_eval_weights(tmp_path):
    for s, is_eval in [(10, True), (20, False), (30, True), (40, True), (50, False)]:
        fake_checkpoint(tmp_path, s, eval_step=is_eval)
    ckpt.prune_checkpoints(tmp_path, keep_last=2, keep_eval_weights=True)
    kept = {c.step: c.has_state for c in ckpt.list_checkpoints(tmp_path)}
    assert kept == {10: False, 30: False, 40: True, 50: True}  # 20: not an eval step, removed
    assert (tmp_path / "checkpoints/step0000010/model.safetensors").exists()
    assert not (tmp_path / "checkpoints/step0000010" / ckpt.STATE).exists()
    ckpt.prune_checkpoints(tmp_path, keep_last=1, keep_eval_weights=False)
    assert [c.step for c in ckpt.list_checkpoints(tmp_path)] == [10, 30, 50]
    assert ckpt.latest_resumable(tmp_path).step == 50
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]


def test_rng_state_round_trip():
    state = ckpt.rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt.set_rng_state(json.loads(json.dumps({k: state[k] for k in ("python", "numpy")})) | {
        "torch": state["torch"], "cuda": state["cuda"]})
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_host_copy_is_a_frozen_snapshot_that_keeps_aliases():
    from ladder.train.saver import host_copy

    w = torch.ones(4, 3)
    state = {"a": w, "tied": w.view(4, 3), "step": torch.tensor(5.0), "groups": [{"lr": 1e-3, "params": [0, 1]}]}
    snap = host_copy(state)
    w.add_(1)  # training goes on
    state["groups"][0]["lr"] = 0.0
    assert torch.equal(snap["a"], torch.ones(4, 3)) and snap["a"] is snap["tied"]  # saved once
    assert snap["groups"] == [{"lr": 1e-3, "params": [0, 1]}] and snap["step"].item() == 5.0


def test_a_background_write_error_is_raised_at_the_next_join(tmp_path, monkeypatch):
    import threading

    from ladder.train import saver

    class OneProcess:
        num_processes, is_main_process = 1, True

        def unwrap_model(self, m):
            return m

    started = threading.Event()

    def failing_write(*args, **kw):
        started.set()
        raise OSError("disk full")

    monkeypatch.setattr(saver, "write_snapshot", failing_write)
    s = saver.CheckpointSaver(OneProcess(), asynchronous=True)
    s.save(tmp_path, saver.Snapshot(1, {}, False, False, 0, 1, {}, {}, {}, {}), model=object(), tokenizer=None, keep_last=1, keep_eval_weights=False)
    assert started.wait(10)
    try:
        s.wait()
    except OSError as e:
        assert "disk full" in str(e)
    else:
        raise AssertionError("the background error was lost")
    assert s.wait() is None  # raised once
