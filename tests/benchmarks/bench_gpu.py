"""The first verdict on a GPU machine: one command, at most ~10 minutes on one GPU, a PASS/FAIL
table at the end (exit 1 if any check fails). Offline: the `olmo` tokenizer shipped with
ai2-olmo-eval, random tokens as data, no hub.

    PYTHONPATH=. python tests/benchmarks/bench_gpu.py                # on the GPU(s) of this node
    PYTHONPATH=. python tests/benchmarks/bench_gpu.py --cpu-smoke    # the same script, tiny presets, CPU

Checks, each a line of the table:
  train     a rung through `accelerate launch` (bf16 + compile + fused AdamW + background
            checkpoints): it completes; tokens/s and MFU are the trainer's own, over windows that
            end on a device sync, after warm-up (the first log window is not used)
  preempt   the same rung preempted as SLURM does (SIGUSR1 to the trainer processes, the launcher
            ignoring it), every process waited for, then resumed: same final loss as uninterrupted
  hf-load   `AutoModelForCausalLM.from_pretrained` of the final checkpoint gives finite logits
  recompile a 16-layer FSDP rung on one process with compile: any Dynamo recompile after the first
            step fails it (ladder/train/recompiles.py)
  memory    one step of each big rung (760M, 1B) at the recipe's micro-batch:
            torch.cuda.max_memory_reserved against the estimate (ladder/sweep/estimate.py)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
RESULTS: list[tuple[str, bool, str]] = []


def record(name: str, ok: bool, detail: str) -> None:
    RESULTS.append((name, ok, detail))
    print(f"[{'PASS' if ok else 'FAIL'}] {name}: {detail}", flush=True)


def _recipe(tmp: Path, size: str, steps: int, micro: int, seq: int, cpu: bool) -> tuple[Path, list[str]]:
    """A recipe file and overrides for ``steps`` steps of ``size`` on random tokens."""
    from ladder.recipe import load_recipe
    from ladder.sweep.plan import plan_sweep

    base = ROOT / "recipes" / ("tiny-cpu.yaml" if cpu else "olmo-ladder.yaml")
    over = [f"model.sizes=[{size}]", "model.tokenizer=olmo", "data.source=tokens",
            f"data.path={tmp}/tokens.npy", "data.tokens_dtype=uint32", f"train.seq_len={seq}",
            "evaluation.tasks=null", "evaluation.count=2", "evaluation.early=0",
            "data.validation_tokens=" + str(4 * seq), "tracking.wandb=false", "train.compile=true",
            "checkpoint.async_save=true", "checkpoint.interval=" + str(max(1, steps // 3)),
            "parallel.sizes={}", f"parallel.micro_batch_size={micro}", "tracking.log_interval=" + str(max(1, steps // 4))]
    if not cpu:
        over.append("model.vocab_size=100352")  # the paper's embedding rows: its rungs' N
    if cpu:
        # bf16 autocast, eager (inductor's CPU compile takes minutes; the recompile check covers Dynamo)
        over += ["train.batch_tokens=" + str(4 * micro * seq), "train.precision=bf16", "train.cpu_threads=1",
                 "train.compile=false"]
    rung = plan_sweep(load_recipe(base, over)).rungs[0]
    if not (tmp / "tokens.npy").exists():
        n = (steps + 10) * rung.batch_tokens * 2
        # ids below 50,000: the olmo tokenizer has 50,280 tokens
        np.random.default_rng(0).integers(0, 50_000, n).astype(np.uint32).tofile(tmp / "tokens.npy")
    mult = steps * rung.batch_tokens / (20 * rung.n_params)
    return base, over + [f"multipliers=[{mult!r}]"]


def launch(recipe: Path, out: Path, procs: int, overrides: list[str], env: dict, wait: bool = True):
    """`accelerate launch` of `ladder train`; the launcher ignores SIGUSR1 (as the SLURM script's
    srun step does), so a preemption reaches only the trainers."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(procs),
           "--num_machines", "1", *(["--multi_gpu"] if procs > 1 else []), "-m", "ladder", "train",
           str(recipe), "--out", str(out), "--no-progress", *overrides]
    ignore_usr1 = lambda: signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # noqa: E731
    p = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, start_new_session=True, preexec_fn=ignore_usr1)
    if wait:
        p.output = p.communicate()[0]
    return p


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        kids = subprocess.run(["pgrep", "-P", str(todo.pop())], capture_output=True, text=True).stdout.split()
        out += [int(k) for k in kids]
        todo += [int(k) for k in kids]
    return out


def _trainers(launcher: int) -> list[int]:
    """The trainer processes under a launcher (torchrun's workers run in sessions of their own,
    so a process-group signal would not reach them): those running `ladder train`."""
    found = []
    for pid in _descendants(launcher):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"ladder" in argv and b"accelerate.commands.launch" not in argv:
            found.append(pid)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def train_checks(tmp: Path, args, env: dict, cpu: bool) -> None:
    from analysis.runlog import read_run
    from ladder.train import checkpoint as ckpt

    recipe, over = _recipe(tmp, args.size, args.steps, args.micro, args.seq_len, cpu)
    ref, cut = tmp / "ref", tmp / "cut"
    t0 = time.time()
    r = launch(recipe, ref, args.procs, over, env)
    ok = r.returncode == 0
    if not ok:
        record("train", False, f"exit {r.returncode}: " + " | ".join(line for line in r.output.splitlines() if "Error" in line)[-1500:])
        return
    ev = read_run(ref).evals
    meta = json.loads((ref / "run.json").read_text())
    steady = ev[ev["step"] > ev["step"].iloc[0]]  # the first window holds compilation
    tps = steady["throughput/tokens_per_second"].median()
    mfu = steady["throughput/mfu"].median() if "throughput/mfu" in steady else float("nan")
    record("train", bool(np.isfinite(ev["train/CrossEntropyLoss"]).all()) and (cpu or mfu <= 1),
           f"{args.size} x {args.procs} proc, {meta['mixed_precision']}, {'eager' if cpu else 'compile'}, loss kernel "
           f"{meta.get('loss_kernel', '?')}: {tps:,.0f} tokens/s, MFU {100 * mfu:.1f}% (synced windows after "
           f"warm-up), wall {time.time() - t0:.0f}s")
    proc = launch(recipe, cut, args.procs, over, env, wait=False)
    while proc.poll() is None and ckpt.latest_resumable(cut) is None:
        time.sleep(0.2)
    trainers = _trainers(proc.pid)
    for pid in trainers:  # as SLURM's srun delivers --signal to every task
        os.kill(pid, signal.SIGUSR1)
    proc.communicate()
    deadline = time.time() + 120
    while any(_alive(p) for p in trainers) and time.time() < deadline:
        time.sleep(0.2)
    status = json.loads((cut / "status.json").read_text()).get("outcome") if (cut / "status.json").exists() else None
    r2 = launch(recipe, cut, args.procs, over, env)
    a, b = read_run(ref).evals, read_run(cut).evals
    same = r2.returncode == 0 and abs(a["train/CrossEntropyLoss"].iloc[-1] - b["train/CrossEntropyLoss"].iloc[-1]) < 1e-3
    record("preempt", status == "preempted" and same and not any(_alive(p) for p in trainers),
           f"SIGUSR1 to {len(trainers)} trainer(s): outcome {status}, all exited, resumed exit {r2.returncode}, "
           f"final loss {b['train/CrossEntropyLoss'].iloc[-1]:.4f} vs {a['train/CrossEntropyLoss'].iloc[-1]:.4f}")
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(ckpt.latest_resumable(ref).path, dtype=torch.bfloat16)
    device = "cpu" if cpu else "cuda"
    with torch.no_grad():
        logits = model.to(device)(input_ids=torch.randint(0, 50_000, (1, 64), device=device)).logits
    record("hf-load", bool(torch.isfinite(logits).all()), "from_pretrained of the final checkpoint")


RECOMPILE_PROBE = ROOT / "tests" / "compile_probe.py"


def recompile_check(env: dict, cpu: bool) -> None:
    """16 decoder layers under FSDP on one process, compiled (inductor on a GPU): no recompile
    after the first step, at training or evaluation."""
    layers = 4 if cpu else 16
    backend = "eager" if cpu else "inductor"
    r = subprocess.run([sys.executable, str(RECOMPILE_PROBE), "fsdp", str(layers), backend, "bf16"], env=env,
                       cwd=ROOT, capture_output=True, text=True)
    if r.returncode:
        record("recompile", False, r.stderr[-1500:])
        return
    res = json.loads(r.stdout.strip().splitlines()[-1])
    record("recompile", res["after_first_steps"] == 0 and not res["limit_hit"] and res["recompiles"] < layers - 1,
           f"{layers}-layer FSDP + bf16 + compile ({backend}): {res['recompiles']} recompile(s) in the first step, "
           f"{res['after_first_steps']} after; {res['reasons'][:1]}")


MEMORY_STEP = r'''
import json, sys, numpy as np, torch
from ladder.data.sequences import PackedSequences
from ladder.recipe import load_recipe
from ladder.sweep.plan import plan_sweep
from ladder.train.loop import _train_step
from ladder.train.parallel import SizeParallel, build_accelerator
from ladder.train.setup import build_model, build_optimizer, prepare_model
size, micro, cpu = sys.argv[2], int(sys.argv[3]), not torch.cuda.is_available()
recipe = load_recipe(sys.argv[1], sys.argv[4:])
plan = [r for r in plan_sweep(recipe).rungs if r.size == size][0]
acc = build_accelerator(SizeParallel(), cpu_only=cpu, mixed_precision="bf16", timeout_minutes=10)
model = build_model(plan).to(acc.device)
model, opt = prepare_model(acc, model, build_optimizer(model, plan, acc.device), compile=False)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
seq = recipe.train.seq_len
seqs = PackedSequences(np.random.default_rng(0).integers(0, plan.vocab_size, seq * micro * 2).astype(np.uint32), seq, "t")
for _ in range(2):  # the second step holds the optimizer's moments, as every later one
    loss, _ = _train_step(model, opt, sched, acc, seqs, np.arange(micro), micro, 1, 1.0)
peak = torch.cuda.max_memory_reserved() if not cpu else None
print(json.dumps({"micro": micro, "loss": float(loss), "reserved": peak}))
'''


def memory_checks(env: dict, cpu: bool, sizes: list[str]) -> None:
    """One process, the recipe's micro-batch (or, where the estimate says it cannot fit one GPU,
    the largest that would): the estimate against what CUDA reserved."""
    import torch

    from ladder.recipe import load_recipe
    from ladder.sweep.estimate import fitting_micro_batch, memory_estimate
    from ladder.sweep.plan import plan_sweep
    from ladder.train.parallel import micro_batch_size

    recipe_file = ROOT / "recipes" / ("tiny-cpu.yaml" if cpu else "olmo-ladder.yaml")
    over = [] if cpu else ["model.tokenizer=olmo", "model.vocab_size=100352"]
    recipe = load_recipe(recipe_file, over)
    for size in sizes:
        plan = [p for p in plan_sweep(recipe).rungs if p.size == size][0]
        kw = dict(processes=1, fsdp=False, bf16=True, gpu=not cpu)
        micro, note = micro_batch_size(recipe, size), ""
        if not cpu:
            cap = torch.cuda.get_device_properties(0).total_memory  # this GPU's real capacity
            if memory_estimate(plan, micro_batch=micro, **kw).total > cap:
                fits = fitting_micro_batch(plan, cap, micro_batch=micro, per_process=micro, **kw)
                note = f" (the recipe's {micro} does not fit one process by the estimate)"
                micro = fits or 1
        r = subprocess.run([sys.executable, "-c", MEMORY_STEP, str(recipe_file), size, str(micro), *over],
                           env=env, cwd=ROOT, capture_output=True, text=True)
        if r.returncode:
            record(f"memory {size}", False, r.stderr[-1500:])
            continue
        res = json.loads(r.stdout.strip().splitlines()[-1])
        est = memory_estimate(plan, micro_batch=micro, **kw)
        if res["reserved"] is None:
            record(f"memory {size}", bool(np.isfinite(res["loss"])), f"one step at micro {micro} ran "
                   f"(estimate {est.total / 2**20:.0f} MiB; no CUDA memory to compare on CPU)")
            continue
        ratio = est.total / res["reserved"]
        record(f"memory {size}", 0.8 < ratio < 1.25, f"micro {micro}{note}: max_memory_reserved "
               f"{res['reserved'] / 2**30:.1f} GiB, estimate {est.total / 2**30:.1f} GiB ({ratio:.2f}x)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cpu-smoke", action="store_true", help="tiny presets on CPU (the test suite runs this)")
    p.add_argument("--size", default=None, help="rung of the train/preempt checks (190M; CPU: tiny-43k)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--micro", type=int, default=None)
    p.add_argument("--seq-len", type=int, default=None)
    p.add_argument("--procs", type=int, default=None, help="processes (default: every GPU; CPU: 1)")
    p.add_argument("--skip", nargs="*", default=[], choices=["train", "recompile", "memory"])
    args = p.parse_args()
    import torch

    cpu = args.cpu_smoke
    if not cpu and not torch.cuda.is_available():
        print("no GPU: run with --cpu-smoke, or on a GPU machine (docs/training.md)")
        return 2
    args.size = args.size or ("tiny-43k" if cpu else "190M")
    args.steps = args.steps or (6 if cpu else 30)
    args.micro = args.micro or (2 if cpu else 8)
    args.seq_len = args.seq_len or (32 if cpu else 4096)
    args.procs = args.procs or (1 if cpu else torch.cuda.device_count())
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled",
           "TOKENIZERS_PARALLELISM": "false", **({"OMP_NUM_THREADS": "1", "LADDER_PEAK_FLOPS": "1e10"} if cpu else {})}
    device = "CPU" if cpu else f"{args.procs} x {torch.cuda.get_device_name(0)}"
    print(f"bench_gpu on {device}", flush=True)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        env["LADDER_CACHE"] = str(Path(tmp) / "cache")
        if "train" not in args.skip:
            train_checks(Path(tmp), args, env, cpu)
        if "recompile" not in args.skip:
            recompile_check(env, cpu)
        if "memory" not in args.skip:
            memory_checks(env, cpu, ["tiny-9k"] if cpu else ["760M", "1B"])
    print(f"\n{'check':12s} verdict  ({time.time() - t0:.0f} s, {device})")
    for name, ok, detail in RESULTS:
        print(f"{name:12s} {'PASS' if ok else 'FAIL':7s}  {detail[:300]}")
    return 0 if RESULTS and all(ok for _, ok, _ in RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
