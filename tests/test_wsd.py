"""Warmup-stable-decay ladders with decay branches: the schedule, the plan (both layouts' FLOPs),
a branch started from its stable parent's checkpoint (bit for bit the parent's state at the
branch point, and bit for bit a WSD run of its length trained from scratch), a branch killed and
resumed, the parent's branch points kept, and the local scheduler's dependency (a branch starts
while its parent runs, waits through its parent's requeue, stops when its parent fails). Tiny
runs of a few dozen steps."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from analysis.runlog import read_metrics_jsonl
from ladder.recipe import RecipeError, from_dict, load_recipe
from ladder.runplan import lr_lambda, plan_branches, plan_role, plan_run
from ladder.sweep.branches import BranchPoint, checkpoint_saved
from ladder.sweep.launcher import Job
from ladder.sweep.local import run_local
from ladder.sweep.plan import plan_sweep, plan_table
from ladder.train import checkpoint as ckpt
from ladder.train.status import read_status

ROOT = Path(__file__).resolve().parents[1]
VAL = "eval/pystdlib-validation/CrossEntropyLoss"
RECIPE = {
    "name": "wsd-test",
    "model": {"sizes": ["tiny-9k"], "tokenizer_vocab_size": 512},
    "data": {"source": "pystdlib", "max_bytes": 1_500_000, "validation_tokens": 2048},
    "multipliers": [0.5, 1],
    "train": {"seq_len": 64, "batch_tokens": 1024, "micro_batch_size": 16, "cpu_threads": 1,
              "schedule": "wsd", "decay_shape": "1-sqrt"},
    "evaluation": {"count": 4, "early": 0, "batch_size": 32},
    "checkpoint": {"keep_last": 1, "keep_eval_weights": False},
    "tracking": {"log_interval": 5},
}


def ladder(*args, cache, background=False, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LADDER_CACHE": str(cache), "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "ladder", *map(str, args)]
    if background:
        return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("recipe") / "wsd.yaml"
    p.write_text(yaml.safe_dump(RECIPE))
    return p


def _train(recipe_file, out, cache, **kw):
    from ladder.train.loop import train

    return train(load_recipe(recipe_file), out=out, cache=cache, progress=False, **kw)


@pytest.fixture(scope="module")
def stable(tmp_path_factory, recipe_file, cache):
    out = tmp_path_factory.mktemp("stable") / "tiny-9k-stable"
    _train(recipe_file, out, cache, stable=True)
    return out


@pytest.fixture(scope="module")
def branch_1x(tmp_path_factory, recipe_file, cache, stable):
    """The 1xC branch, uninterrupted: the reference of the kill test."""
    out = tmp_path_factory.mktemp("branch") / "tiny-9k-1xC"
    _train(recipe_file, out, cache, multiplier=1.0, branch_from=stable)
    return out


# ---------------------------------------------------------------------------- schedule and plan


def test_schedule_shapes_and_the_branch_point():
    r = from_dict(RECIPE)
    stable, branches = plan_branches(r, "tiny-9k", 0, 512)
    b = {x.multiplier: x for x in branches}
    assert (b[0.5].decay_start, b[0.5].total_steps, b[1.0].decay_start, b[1.0].total_steps) == (41, 51, 81, 101)
    assert stable.total_steps == 81 and stable.branch_steps == (41, 81) and stable.name == "tiny-9k-stable"
    assert stable.warmup_steps == b[0.5].warmup_steps == plan_run(r, "tiny-9k", 0.5, 0, 512).warmup_steps
    lrs = [lr_lambda(s, b[1.0]) for s in range(101)]
    warm = b[1.0].warmup_steps
    assert lrs[0] == pytest.approx(1 / warm) and all(x == 1.0 for x in lrs[warm:82])
    # at the branch point the branch's LR is the stable run's: its state there is the parent's
    assert all(lr_lambda(s, b[1.0]) == lr_lambda(s, stable) for s in range(82))
    assert lrs[-1] == pytest.approx(0.1)  # final_lr_fraction at the last step
    x = (90 - 81) / 19  # 1-sqrt drops faster than linear, to the same end
    assert lrs[90] == pytest.approx(1 - 0.9 * np.sqrt(x))
    lin = plan_run(from_dict({**RECIPE, "train": {**RECIPE["train"], "decay_shape": "linear"}}),
                   "tiny-9k", 1, 0, 512)
    assert lr_lambda(90, lin) == pytest.approx(1 - 0.9 * x) and lr_lambda(90, lin) > lrs[90]
    assert all(lr_lambda(s, stable) == 1.0 for s in range(warm, 200))  # a stable run never decays
    with pytest.raises(RecipeError, match=r"decay_fraction.*inside the warmup"):
        plan_branches(from_dict({**RECIPE, "train": {**RECIPE["train"], "decay_fraction": 0.97}}),
                      "tiny-9k", 0, 512)
    with pytest.raises(RecipeError, match="branch point"):
        plan_role(r, "tiny-9k", 3.0, 0, 512, "branch")  # not a multiplier of the recipe


def test_data_order_does_not_depend_on_the_run_length():
    """What decides a step's batch (sequences per batch, seed) is the same for every length of
    one size; the sampler itself is told no length."""
    import inspect

    from ladder.data.sequences import BatchSampler

    r = from_dict(RECIPE)
    runs = [plan_run(r, "tiny-9k", m, 0, 512) for m in (0.25, 0.5, 1, 4)]
    assert len({(p.batch_seqs, p.seed, p.lr, p.warmup_steps) for p in runs}) == 1
    assert "steps" not in " ".join(inspect.signature(BatchSampler).parameters)
    a, b = BatchSampler(1000, runs[0].batch_seqs, 0), BatchSampler(1000, runs[-1].batch_seqs, 0)
    assert all((a.indices(s) == b.indices(s)).all() for s in (0, 41, 500))


def test_the_wsd_recipe_costs_under_65_percent_of_the_cosine_ladder(ladder_here):
    cosine, wsd = (plan_sweep(load_recipe(ROOT / "recipes" / f)) for f in ("tiny-cpu.yaml", "tiny-cpu-wsd.yaml"))
    assert [r.name for r in wsd.rungs] == [r.name for r in cosine.rungs]  # the same points
    assert [s.name for s in wsd.stables] == ["tiny-9k-stable", "tiny-25k-stable", "tiny-43k-stable"]
    assert wsd.ladder_flops <= 0.65 * cosine.ladder_flops
    text = plan_table(wsd)
    assert "3 stable runs + 9 decay branches" in text and "(from tiny-9k-stable)" in text
    r = ladder_here("plan", ROOT / "recipes" / "tiny-cpu.yaml")
    assert r.returncode == 0 and "layouts: every rung from scratch 2.16e+12 FLOPs" in r.stdout
    assert "(linear, decay_fraction 0.2; train.schedule=wsd)" in r.stdout  # what WSD would cost
    r = ladder_here("plan", ROOT / "recipes" / "tiny-cpu-wsd.yaml", "--json")
    doc = json.loads(r.stdout)
    assert doc["layouts_flops"]["ratio"] == pytest.approx(wsd.ladder_flops / cosine.ladder_flops)
    assert {x["name"]: x.get("parent") for x in doc["runs"]}["tiny-43k-4xC"] == "tiny-43k-stable"
    r = ladder_here("sweep", ROOT / "recipes" / "tiny-cpu-wsd.yaml", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "WSD decay branches (1-sqrt, decay_fraction 0.18; this recipe)" in r.stdout and "saving" in r.stdout
    flat = plan_sweep(from_dict({**RECIPE, "train": {**RECIPE["train"], "branches": False}}))
    assert not flat.stables and [p.role for p in flat.rungs] == ["run", "run"]


def test_a_kept_branch_point_is_never_pruned(tmp_path):
    from tests.test_train_checkpoint import fake_checkpoint

    for s in (10, 20, 30, 40):
        fake_checkpoint(tmp_path, s)
    m = tmp_path / "checkpoints" / "step0000020" / ckpt.MANIFEST
    m.write_text(json.dumps({**json.loads(m.read_text()), "keep": True}))
    ckpt.prune_checkpoints(tmp_path, keep_last=1, keep_eval_weights=False)
    assert [(c.step, c.has_state) for c in ckpt.list_checkpoints(tmp_path)] == [(20, True), (40, True)]
    assert checkpoint_saved(tmp_path, 20) and not checkpoint_saved(tmp_path, 10)


# ---------------------------------------------------------------------------- branches, exact


def test_the_stable_run_keeps_every_branch_point(stable):
    meta = json.loads((stable / "run.json").read_text())
    assert (meta["role"], meta["branch_steps"], meta["total_steps"], meta["schedule"]) == ("stable", [41, 81], 81, "wsd")
    full = [c for c in ckpt.list_checkpoints(stable) if c.has_state]
    # keep_last 1 keeps the newest other checkpoint; the branch points are kept whatever it says
    assert [(c.step, c.manifest["keep"]) for c in full] == [(41, True), (61, False), (81, True)]
    assert [r["step"] for r in read_metrics_jsonl(stable / "metrics.jsonl")] == [20, 40, 41, 61, 81]
    for step in range(0, 90):  # the torch-free reader SLURM's gate uses agrees with the trainer's
        assert checkpoint_saved(stable, step) == any(c.step == step for c in full)


def test_a_branch_starts_with_its_parents_state_bit_for_bit(tmp_path, recipe_file, cache, stable):
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    from ladder.train.setup import setup

    point = stable / "checkpoints" / "step0000041"
    ctx = setup(load_recipe(recipe_file), "tiny-9k", 0.5, 0, tmp_path / "b", cache=cache,
                branch_from=stable)
    try:
        assert ctx.step == 41 and ctx.plan.role == "branch" and ctx.plan.parent == "tiny-9k-stable"
        weights = load_file(str(point / "model.safetensors"))
        mine = ctx.model.state_dict()
        assert all(torch.equal(mine[k], v) for k, v in weights.items())
        dcp_to_torch_save(point / ckpt.STATE / ckpt.OPTIMIZER_DIR, tmp_path / "opt.pt")
        saved = torch.load(tmp_path / "opt.pt", weights_only=True)["optimizer"]
        now = get_optimizer_state_dict(ctx.model, ctx.optimizer)
        assert saved["state"].keys() == now["state"].keys()
        for k, st in saved["state"].items():
            assert all(torch.equal(torch.as_tensor(v), torch.as_tensor(now["state"][k][n])) for n, v in st.items())
        assert [g["lr"] for g in now["param_groups"]] == [g["lr"] for g in saved["param_groups"]]
        sched = torch.load(point / ckpt.STATE / "scheduler.pt", weights_only=True)
        assert ctx.scheduler.state_dict()["last_epoch"] == sched["last_epoch"] == 41
        assert ctx.scheduler.get_last_lr() == sched["_last_lr"]
        rng = torch.load(point / ckpt.STATE / "rng-rank0.pt", weights_only=True)
        assert torch.equal(torch.get_rng_state(), rng["torch"])
        mine_rows = read_metrics_jsonl(tmp_path / "b" / "metrics.jsonl")
        assert mine_rows == [r for r in read_metrics_jsonl(stable / "metrics.jsonl") if r["step"] <= 41]
        copy = tmp_path / "b" / "checkpoints" / "step0000041"
        assert os.path.samefile(copy / "model.safetensors", point / "model.safetensors")  # linked
        manifest = json.loads((copy / ckpt.MANIFEST).read_text())
        assert "keep" not in manifest and manifest["branched_from"]["step"] == 41
        assert json.loads((point / ckpt.MANIFEST).read_text())["keep"] is True  # the parent's intact
    finally:
        ctx.release()


def test_a_branch_is_a_wsd_run_of_its_length_trained_from_scratch(tmp_path, recipe_file, cache, stable):
    from safetensors.torch import load_file

    branch, scratch = tmp_path / "branch", tmp_path / "scratch"
    _train(recipe_file, branch, cache, multiplier=0.5, branch_from=stable)
    _train(recipe_file, scratch, cache, multiplier=0.5)
    meta = json.loads((branch / "run.json").read_text())
    assert (meta["role"], meta["parent"], meta["branch_step"], meta["decay_start_step"]) == \
        ("branch", "tiny-9k-stable", 41, 41)
    a, b = read_metrics_jsonl(branch / "metrics.jsonl"), read_metrics_jsonl(scratch / "metrics.jsonl")
    assert a[-1]["step"] == b[-1]["step"] == 51
    shared = {r["step"] for r in a} & {r["step"] for r in b}
    assert {s for s in shared if s > 41}  # evaluations inside the decay, in both
    for s in shared:
        ra, rb = next(r for r in a if r["step"] == s), next(r for r in b if r["step"] == s)
        assert (ra[VAL], ra["train/CrossEntropyLoss"]) == (rb[VAL], rb["train/CrossEntropyLoss"])
    wa = load_file(str(branch / "checkpoints" / "step0000051" / "model.safetensors"))
    wb = load_file(str(scratch / "checkpoints" / "step0000051" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # bit for bit


def test_a_branch_killed_and_resumed_equals_an_uninterrupted_one(tmp_path, recipe_file, cache, stable,
                                                                  branch_1x, capsys):
    from safetensors.torch import load_file

    out = tmp_path / "tiny-9k-1xC"
    argv = ("train", recipe_file, "--multiplier", "1", "--branch-from", stable, "--out", out,
            "--no-progress", "checkpoint.interval=2")  # operational: the same numbers
    proc = ladder(*argv, cache=cache, background=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        c = ckpt.latest_resumable(out)
        if c is not None and c.step >= 83:  # its own, inside the decay
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the branch finished before it could be killed"
    killed_at = ckpt.latest_resumable(out).step
    assert 81 < killed_at < 101
    from ladder.train.loop import train  # the rerun: the same command, here in-process

    again = train(load_recipe(recipe_file, ["checkpoint.interval=2"]), multiplier=1.0, out=out,
                  cache=cache, progress=False, branch_from=stable)
    assert again.status == "completed"
    assert f"from step{killed_at:07d}" in capsys.readouterr().out  # its own checkpoint, not the parent's
    a, b = read_metrics_jsonl(out / "metrics.jsonl"), read_metrics_jsonl(branch_1x / "metrics.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b]  # every evaluation exactly once
    assert [r[VAL] for r in a] == [r[VAL] for r in b]  # bit-identical
    wa = load_file(str(out / "checkpoints" / "step0000101" / "model.safetensors"))
    wb = load_file(str(branch_1x / "checkpoints" / "step0000101" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_branch_refuses_what_is_not_its_parent(tmp_path, recipe_file, cache, stable, ladder_here):
    from analysis.runlog import RunMeta
    from ladder.train.branch import BranchError, ParentFailed, ParentNotReady, seed_branch
    from ladder.train.status import write_status

    r = load_recipe(recipe_file)
    plan = plan_role(r, "tiny-9k", 0.5, 0, 512, "branch")
    meta = RunMeta.from_json({**json.loads((stable / "run.json").read_text()), "name": plan.name,
                              "role": "branch"})
    fake = tmp_path / "parent"
    fake.mkdir()
    with pytest.raises(ParentNotReady, match="has not started"):
        seed_branch(tmp_path / "b", fake, plan, meta)
    parent = json.loads((stable / "run.json").read_text())
    for change, what in (({"role": "run"}, "role: 'run' there"), ({"seed": 3}, "seed: 3 there"),
                         ({"branch_steps": [81]}, "branch_steps")):
        (fake / "run.json").write_text(json.dumps({**parent, **change}))
        with pytest.raises(BranchError, match=what):
            seed_branch(tmp_path / "b", fake, plan, meta)
    (fake / "run.json").write_text(json.dumps(parent))  # the right parent, not there yet
    with pytest.raises(ParentNotReady, match="no checkpoint at step 41 yet"):
        seed_branch(tmp_path / "b", fake, plan, meta)
    write_status(fake, "diverged", message="loss is nan at step 30")
    with pytest.raises(ParentFailed, match="diverged: loss is nan"):
        seed_branch(tmp_path / "b", fake, plan, meta)
    assert not (tmp_path / "b" / "checkpoints").exists()
    r = ladder_here("train", recipe_file, "--multiplier", "0.5", "--branch-from", fake, "--out",
                    tmp_path / "b", "--cache", cache, "--no-progress")
    assert r.returncode == 2 and (read_status(tmp_path / "b") or {}).get("outcome") == "parent_failed"
    assert r.stderr.strip().splitlines()[-1].startswith("ladder train: error: parent")


# ---------------------------------------------------------------------------- local scheduling

FAKE_PARENT = r"""
import json, os, sys, time
from pathlib import Path
run, mode = Path(sys.argv[1]), sys.argv[2]
run.mkdir(parents=True, exist_ok=True)
attempt = len(list(run.glob("attempt-*"))) + 1
(run / f"attempt-{attempt}").write_text("")
def status(outcome, code):
    (run / "status.json").write_text(json.dumps({"outcome": outcome}) + "\n")
    sys.exit(code)
if mode == "fail":
    status("bad_input", 2)
if mode == "preempt" and attempt == 1:
    time.sleep(0.5)
    status("preempted", 75)
d = run / "checkpoints" / "step0000005"
(d / "training_state").mkdir(parents=True, exist_ok=True)
(d / "training_state" / "state.json").write_text("{}")
(d / "checkpoint.json").write_text(json.dumps({"step": 5, "has_state": True, "keep": True}))
time.sleep(1.5)  # the parent keeps running after its branch point
(run / "finished").write_text(str(time.time()))
status("completed", 0)
"""
FAKE_BRANCH = r"""
import json, sys, time
from pathlib import Path
run, parent = Path(sys.argv[1]), Path(sys.argv[2])
run.mkdir(parents=True, exist_ok=True)
(run / "started").write_text(json.dumps({"t": time.time(), "parent_running": not (parent / "finished").exists()}))
(run / "status.json").write_text(json.dumps({"outcome": "completed"}) + "\n")
"""


def _fake_ladder(tmp_path, mode):
    parent, branch, other = tmp_path / "p", tmp_path / "b", tmp_path / "c"
    jobs = [Job("p", (sys.executable, "-c", FAKE_PARENT, str(parent), mode), parent),
            Job("b", (sys.executable, "-c", FAKE_BRANCH, str(branch), str(parent)), branch,
                waits_for=BranchPoint("p", parent, 5)),
            Job("c", (sys.executable, "-c", FAKE_BRANCH, str(other), str(parent)), other)]
    lines = []
    outcomes = {o.name: o for o in run_local(jobs, tmp_path / "logs", parallel=2, max_retries=0,
                                             echo=lines.append, n_gpus=0)}
    return outcomes, branch, lines


def test_locally_a_branch_starts_while_its_parent_runs(tmp_path):
    outcomes, branch, lines = _fake_ladder(tmp_path, "ok")
    assert all(o.ok for o in outcomes.values()), lines
    assert json.loads((branch / "started").read_text())["parent_running"]  # not after it


def test_locally_a_requeued_parent_makes_its_branch_wait(tmp_path):
    outcomes, branch, lines = _fake_ladder(tmp_path, "preempt")
    assert all(o.ok for o in outcomes.values()) and outcomes["p"].attempts == 2, lines
    started = json.loads((branch / "started").read_text())
    assert started["parent_running"] and started["t"] > (tmp_path / "p" / "attempt-2").stat().st_mtime


def test_locally_a_failed_parent_stops_its_branch(tmp_path):
    outcomes, branch, lines = _fake_ladder(tmp_path, "fail")
    assert not outcomes["p"].ok and not outcomes["b"].ok and outcomes["c"].ok
    assert not (branch / "started").exists()
    st = read_status(branch)
    assert st["outcome"] == "parent_failed" and "parent p stopped before step 5 (bad_input)" in st["message"]
    assert any("b FAILED (parent p failed (bad_input)" in ln for ln in lines), lines


def test_slurm_holds_waiting_branches_and_leaves_out_those_nothing_would_release(tmp_path):
    """Rendering only (the real cluster: tests/test_wsd_slurm.py): the branches are an array of
    their own, held; the stable run's task releases them; a branch whose parent is done without
    its branch point is stopped instead of being submitted to wait forever."""
    from ladder.sweep.slurm import SlurmSweep
    from ladder.sweep.slurm_branches import stop_orphans
    from ladder.sweep.sweepdir import open_sweep

    sweep = open_sweep(from_dict(RECIPE, "wsd.yaml"), tmp_path / "sw")
    ss = SlurmSweep(sweep.dir, sweep.jobs())
    assert [(g.gated, [j.name for j in g.rungs]) for g in ss.groups] == \
        [(False, ["tiny-9k-stable"]), (True, ["tiny-9k-0.5xC", "tiny-9k-1xC"])]
    text = ss.render_array(ss.groups[0])
    assert "GATE=(" in text and "ladder.sweep.slurm_gate release" in text and "trap '\"${GATE[@]}\"" in text
    assert "GATE=(" not in ss.render_array(ss.groups[1])
    assert "--branch-from" in " ".join(ss.groups[1].rungs[0].argv)
    stable = sweep.run_dir(sweep.plan.stables[0])
    stable.mkdir(parents=True)
    (stable / "DONE").write_text("")  # done, yet without its branch points
    ss = SlurmSweep(sweep.dir, sweep.jobs())
    assert not ss.groups and [j.name for j in ss.orphans] == ["tiny-9k-0.5xC", "tiny-9k-1xC"]
    said = []
    stop_orphans(ss.orphans, said.append)
    st = read_status(ss.orphans[0].run_dir)
    assert st["outcome"] == "parent_failed" and "no checkpoint at step 41" in st["message"], said
