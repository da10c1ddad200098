"""GPU smoke benchmark of the real training path (not run here: no GPU machine was available).

    PYTHONPATH=. python tests/benchmarks/bench_gpu.py                 # every GPU of this node
    PYTHONPATH=. python tests/benchmarks/bench_gpu.py --size 760M --steps 40

For each strategy (DDP, and FSDP2 when there are >= 2 GPUs) it runs `ladder train` through
`accelerate launch` on the GPUs present, bf16 autocast + torch.compile, on random tokens at the
paper's 4,096 context and batch: ``--steps`` optimizer steps with one in-loop evaluation of the
paper's tasks (``--task-limit`` items each) and a checkpoint at the end; then the same run
preempted with SIGUSR1 after its first checkpoint and resumed, which must end on the same loss;
then ``AutoModelForCausalLM.from_pretrained`` of the final checkpoint. Prints per strategy
tokens/s and MFU (the trainer's own figures, against the GPU's dense bf16 peak) and the peak GPU
memory per process (``torch.cuda.max_memory_allocated``, written by each worker). Budget: under 8
minutes on 8 H100s for 190M (compilation included).
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


def worker(args) -> int:
    """Inside `accelerate launch`: train, then record this process's peak GPU memory."""
    import torch

    from ladder.cli import train as cli_train

    code = cli_train.run(argparse.Namespace(recipe=args.recipe, size=None, multiplier=None, seed=None,
                                            out=args.out, cache=None, no_progress=True,
                                            overrides=args.overrides))
    rank = int(os.environ.get("RANK", "0"))
    Path(args.out, f"peak-mem-rank{rank}.json").write_text(json.dumps(
        {"bytes": torch.cuda.max_memory_allocated()}))
    return code


def launch(recipe: Path, out: Path, gpus: int, *overrides: str, wait: bool = True):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(gpus),
           "--num_machines", "1", *(["--multi_gpu"] if gpus > 1 else []), __file__, "--worker",
           "--recipe", str(recipe), "--out", str(out), *overrides]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if wait:
        return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    return subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--size", default="190M")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--micro", type=int, default=8)
    p.add_argument("--task-limit", type=int, default=50)
    p.add_argument("--worker", action="store_true")
    p.add_argument("--recipe"), p.add_argument("--out")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    if args.worker:
        return worker(args)

    import torch
    from transformers import AutoModelForCausalLM

    from analysis.runlog import read_run
    from ladder.recipe import load_recipe
    from ladder.sweep.plan import plan_sweep
    from ladder.train import checkpoint as ckpt

    gpus = torch.cuda.device_count()
    if gpus == 0:
        print("no GPU: this benchmark needs one (see docs/training.md)")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    base = load_recipe(ROOT / "recipes" / "olmo-ladder.yaml", [f"model.sizes=[{args.size}]"])
    rung = plan_sweep(base).rungs[0]
    tokens = (args.steps + 20) * rung.batch_tokens
    np.random.default_rng(0).integers(0, 50_000, tokens).astype(np.uint32).tofile(tmp / "tokens.npy")
    mult = args.steps * rung.batch_tokens / (20 * rung.n_params)
    recipe = tmp / "recipe.yaml"
    recipe.write_text((ROOT / "recipes" / "olmo-ladder.yaml").read_text())
    common = [f"model.sizes=[{args.size}]", f"multipliers=[{mult!r}]", f"data.path={tmp}/tokens.npy",
              "evaluation.count=1", "evaluation.early=0", f"evaluation.task_limit={args.task_limit}",
              f"checkpoint.interval={max(1, args.steps // 2)}", "tracking.wandb=false",
              f"parallel.micro_batch_size={args.micro}", "train.compile=true"]
    print(f"{gpus} x {torch.cuda.get_device_name(0)}; {args.size}, {args.steps} steps of "
          f"{rung.batch_tokens:,} tokens, bf16 + compile")
    strategies = ["ddp"] + (["fsdp"] if gpus > 1 else [])
    for strategy in strategies:
        over = [*common, f"parallel.strategy={strategy}", "parallel.sizes={}"]
        ref, cut = tmp / f"{strategy}-ref", tmp / f"{strategy}-resumed"
        t0 = time.time()
        r = launch(recipe, ref, gpus, *over)
        if r.returncode != 0:
            print(f"{strategy}: FAILED\n{r.stderr[-4000:]}")
            return 1
        wall = time.time() - t0
        proc = launch(recipe, cut, gpus, *over, wait=False)
        while proc.poll() is None and ckpt.latest_resumable(cut) is None:
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGUSR1)
        proc.wait()
        r2 = launch(recipe, cut, gpus, *over)
        a, b = read_run(ref), read_run(cut)
        last = a.evals.iloc[-1]
        peak = max(json.loads(f.read_text())["bytes"] for f in ref.glob("peak-mem-rank*.json"))
        model = AutoModelForCausalLM.from_pretrained(ckpt.latest_resumable(ref).path,
                                                     torch_dtype=torch.bfloat16).cuda()
        with torch.no_grad():
            ok = torch.isfinite(model(input_ids=torch.randint(0, 50_000, (1, 128), device="cuda")).logits).all()
        print(f"{strategy}: {last['throughput/tokens_per_second']:,.0f} tokens/s, MFU "
              f"{100 * last.get('throughput/mfu', float('nan')):.1f}%, peak {peak / 2**30:.1f} GiB/GPU, "
              f"wall {wall:.0f}s (compile and evaluation included); resumed after USR1: "
              f"{'exit ' + str(r2.returncode) if r2.returncode else 'ok'}, final train loss "
              f"{b.evals['train/CrossEntropyLoss'].iloc[-1]:.4f} vs {last['train/CrossEntropyLoss']:.4f} "
              f"uninterrupted; from_pretrained {'ok' if ok else 'NON-FINITE'}")
        del model
    return 0


if __name__ == "__main__":
    sys.exit(main())
