"""Where FSDP's loss curve leaves one process's, and whether that is chaos or a real difference.

    PYTHONPATH=. python tests/benchmarks/bench_fsdp_drift.py [--steps 109] [--fused off]

Runs tests/test_fsdp.py's tiny-43k rung three ways on the same global batch (one process; one
process with the learning rate x (1 + 1e-7), the control; FSDP over 2 gloo processes) and prints,
per run against the first: the first step whose loss differs, the largest relative loss
difference over three spans of steps, and the first step at which any parameter's full gradient
or AdamW ``exp_avg_sq`` differs (over the first 12 steps). Then fused AdamW on one tensor against
the same tensor in two halves, the per-shard case. Figures: docs/training.md ("FSDP on CPU").
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECIPE = {
    "name": "fsdp-drift", "model": {"sizes": ["tiny-43k"], "tokenizer_vocab_size": 300},
    "data": {"source": "pystdlib", "max_bytes": 300_000, "validation_tokens": 2048},
    "multipliers": [0.1],
    "train": {"seq_len": 32, "batch_tokens": 512, "micro_batch_size": 8, "cpu_threads": 1},
}
DUMPED = 12  # steps whose full gradients and optimizer states are compared


def worker(out: str, strategy: str, perturb: float, steps: int, fused: str) -> None:
    """One run: per-step losses, and the first steps' full gradients and exp_avg_sq."""
    import torch

    from ladder.recipe import from_dict
    from ladder.train.loss import next_token_loss
    from ladder.train.setup import setup

    recipe = from_dict({**RECIPE, "parallel": {"strategy": strategy}, "optimizer": {"fused": fused}})
    ctx = setup(recipe, None, None, None, Path(out) / "run", cache=Path(out).parent / "cache")
    acc, model, opt, sched = ctx.accelerator, ctx.model, ctx.optimizer, ctx.scheduler
    sched.base_lrs = [b * (1 + perturb) for b in sched.base_lrs]
    for g in opt.param_groups:
        g["lr"] *= 1 + perturb
    full = lambda t: t.full_tensor() if hasattr(t, "full_tensor") else t  # noqa: E731
    losses, dumps = [], []
    for step in range(min(steps, ctx.plan.total_steps)):
        batch = torch.from_numpy(ctx.train_seqs.get(ctx.sampler.indices(step)))
        total = torch.zeros(())
        for i in range(ctx.accum):
            x = batch[i * ctx.micro:(i + 1) * ctx.micro]
            loss = next_token_loss(model(input_ids=x).logits, x, scale=1 / ctx.accum)
            acc.backward(loss)
            total += loss.detach()
        grads = {n: full(p.grad).clone() for n, p in model.named_parameters()} if step < DUMPED else None
        acc.clip_grad_norm_(model.parameters(), ctx.recipe.optimizer.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(acc.reduce(total, "mean") if acc.num_processes > 1 else total))
        if grads is not None:
            dumps.append({"grad": grads, "exp_avg_sq": {n: full(opt.state[p]["exp_avg_sq"]).clone()
                                                        for n, p in model.named_parameters()}})
    if acc.is_main_process:
        Path(out, "losses.json").write_text(json.dumps(losses))
        torch.save({"dumps": [{k: {n.removeprefix("module."): t for n, t in d[k].items()} for k in d}
                              for d in dumps]}, Path(out, "dumps.pt"))
    ctx.release()


def launch(out: Path, strategy: str, perturb: float, steps: int, fused: str) -> None:
    out.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    me = [str(Path(__file__).resolve()), "--worker", str(out), strategy, str(perturb), str(steps), fused]
    if strategy == "fsdp":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(ROOT / "launch/accelerate/cpu-2proc.yaml"), "--main_process_port", str(port), *me]
    else:
        cmd = [sys.executable, *me]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"{strategy} run failed:\n{r.stderr[-3000:]}")


def compare(ref: Path, other: Path) -> str:
    import torch

    a, b = (json.loads(Path(p, "losses.json").read_text()) for p in (ref, other))
    rel = [abs(y / x - 1) for x, y in zip(a, b)]
    first = next((i + 1 for i, r in enumerate(rel) if r), None)
    spans = ", ".join(f"steps {lo + 1}-{min(hi, len(rel))} {max(rel[lo:hi]):.1e}"
                      for lo, hi in ((0, 30), (30, 60), (60, len(rel))) if lo < len(rel))
    da, db = (torch.load(Path(p, "dumps.pt"))["dumps"] for p in (ref, other))
    firsts = []
    for kind in ("grad", "exp_avg_sq"):
        at = next((s + 1 for s in range(min(len(da), len(db)))
                   if any(not torch.equal(da[s][kind][n], db[s][kind][n]) for n in da[s][kind])), None)
        firsts.append(f"{kind} from step {at}" if at else f"{kind} equal for {len(da)} steps")
    return f"loss first differs at step {first}; max relative difference {spans}; {'; '.join(firsts)}"


def adamw_halves() -> str:
    import torch

    out = []
    for n in (24, 100, 576):
        states = []
        for parts in (1, 2):
            w = torch.randn(n, generator=torch.Generator().manual_seed(0))
            ps = [torch.nn.Parameter(c.clone()) for c in w.chunk(parts)]
            opt = torch.optim.AdamW(ps, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
            g = torch.Generator().manual_seed(1)
            for _ in range(3):
                for p, c in zip(ps, (torch.randn(n, generator=g) * 1e-3).chunk(parts)):
                    p.grad = c.clone()
                opt.step()
            states.append(torch.cat([opt.state[p]["exp_avg_sq"] for p in ps]))
        out.append(f"{n} vs 2x{n // 2}: {int((states[0] != states[1]).sum())} elements differ")
    return "fused AdamW exp_avg_sq after 3 steps, one tensor vs two halves: " + "; ".join(out)


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        out, strategy, perturb, steps, fused = sys.argv[2:7]
        return worker(out, strategy, float(perturb), int(steps), fused)
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=109)
    ap.add_argument("--fused", default="auto", choices=("auto", "on", "off"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = {"one": ("ddp", 0.0), "one, lr x (1 + 1e-7)": ("ddp", 1e-7), "fsdp, 2 processes": ("fsdp", 0.0)}
        dirs = {}
        for i, (name, (strategy, perturb)) in enumerate(runs.items()):
            dirs[name] = Path(tmp) / f"run{i}"
            launch(dirs[name], strategy, perturb, args.steps, args.fused)
        ref = dirs["one"]
        for name in list(runs)[1:]:
            print(f"{name} vs one process: {compare(ref, dirs[name])}")
    print(adamw_halves())


if __name__ == "__main__":
    main()
