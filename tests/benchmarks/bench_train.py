"""Throughput of our training step vs a plain ``transformers.Trainer`` on the same model, data,
global batch, micro-batch and sequence length, measured in one invocation.

    PYTHONPATH=. python tests/benchmarks/bench_train.py                       # CPU, tiny-160k
    PYTHONPATH=. python tests/benchmarks/bench_train.py --size 190M --seq-len 4096 \\
        --batch-tokens 524288 --micro 8 --steps 30                           # GPU, bf16

Variants: ``ours`` (our ``_train_step`` with ``train.compile: true``), ``ours-eager`` (the same
without compile), ``ours-logits-loss`` (our step with the loss as it was before the head and
loss were computed in chunks: the full logits, accelerate's fp32 copy of them under bf16, then
the closed-form cross-entropy; compiled like ``ours``) and ``trainer`` (a plain default
``Trainer``: same model, batch, micro-batch, sequence length, AdamW settings, grad clip and
precision; no compile). ``--compile both`` compiles the Trainer's model too
(``torch_compile=True``) and drops ``ours-eager``. ``--smoke`` runs every variant for a step in
this process on the smallest preset (the test suite runs it: tests/test_bench_smoke.py).

Each variant runs in its own subprocess (so peak memory is its own), ``--repeats`` times with the
order rotated (the machine's load hits all alike). Throughput is steady state: the first
``--warmup`` steps (compilation included, printed separately) are not timed. Prints per variant
(its best repeat) tokens/s (wall), MFU, peak memory, tokens/s per CPU-second (less sensitive to
other processes on a shared machine), minor page faults per step and warmup time; then the
ratios, best against best and as the median (and range) of per-repeat ratios: a repeat's runs
are a minute or two apart, and a shared machine's speed drifts over longer spans. MFU uses the
dense bf16 peak on GPUs (H100: 989 TFLOP/s) and a measured fp32 matmul peak on CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _setup(args):
    import torch

    from ladder.data.pipeline import DataConfig, ModelConfig, prepare_data
    from ladder.data.sequences import PackedSequences
    from ladder.recipe import from_dict
    from ladder.runplan import plan_run

    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = from_dict({
        "model": {"sizes": [args.size], "tokenizer_vocab_size": args.vocab,
                  **({"vocab_size": 100_352} if not args.size.startswith("tiny") else {})},
        "train": {"seq_len": args.seq_len, "batch_tokens": args.batch_tokens, "micro_batch_size": args.micro,
                  "lr": 1e-3, "warmup_tokens": 0},
    })
    data = prepare_data(DataConfig(max_bytes=2_000_000), ModelConfig(tokenizer_vocab_size=args.vocab))
    vocab = 100_352 if not args.size.startswith("tiny") else ((len(data.tokenizer) + 127) // 128) * 128
    plan = plan_run(recipe, args.size, 1.0, 0, vocab)
    return recipe, plan, PackedSequences(data.train, args.seq_len)


def _faults() -> int:
    """Minor page faults so far: each is a fresh 4 KiB page the kernel zeroed for this process."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _peak_memory(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB


def run_ours(args) -> dict:
    import torch
    from accelerate import Accelerator

    from ladder.data.sequences import BatchSampler
    from ladder.runplan import lr_lambda
    from ladder.train.host_memory import keep_freed_memory
    from ladder.train.loop import _train_step
    from ladder.train.setup import build_model, build_optimizer, prepare_model

    recipe, plan, seqs = _setup(args)
    cuda = torch.cuda.is_available()
    acc = Accelerator(cpu=not cuda, mixed_precision="bf16" if cuda or args.bf16 else "no")
    if not cuda and not args.no_keep_memory:
        keep_freed_memory()  # as train() does on CPU
    model = build_model(plan).to(acc.device)
    opt = build_optimizer(model, plan, acc.device)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_lambda(s, plan))
    compiled = args.compile == "both" or (args.compile == "ours" and args.variant != "ours-eager")
    if args.variant == "ours-logits-loss":
        model = LogitsLoss(model, acc, compiled)
    else:
        model, opt = prepare_model(acc, model, opt, compile=compiled)
    sampler = BatchSampler(seqs.n, plan.batch_seqs, 0)
    micro = min(args.micro, plan.batch_seqs)
    accum = plan.batch_seqs // micro
    t0 = c0 = None
    t_start = time.perf_counter()
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            if cuda:
                torch.cuda.synchronize()
            t0, c0, f0 = time.perf_counter(), time.process_time(), _faults()
        loss, _ = _train_step(model, opt, sched, acc, seqs, sampler.indices(step), micro, accum, 1.0)
    final = float(loss)  # one sync at the end
    elapsed, cpu, faults = time.perf_counter() - t0, time.process_time() - c0, _faults() - f0
    return dict(plan=plan, elapsed=elapsed, cpu=cpu, faults=faults, warmup_s=t0 - t_start, loss=final,
                device=acc.device, compiled=compiled)


class LogitsLoss:
    """The step's model as it was before the chunked head and loss: prepared by accelerate with
    its fp32 output cast, and the loss computed on the full logits it returns."""

    def __init__(self, model, acc, compiled: bool):
        import torch

        if compiled:
            model = torch.compile(model)
        self.model = acc.prepare(model)

    def __call__(self, input_ids, loss_scale):
        from ladder.train.loss import next_token_loss

        return next_token_loss(self.model(input_ids=input_ids).logits, input_ids, loss_scale)

    def __getattr__(self, name):
        return getattr(self.model, name)


def run_trainer(args) -> dict:
    import numpy as np
    import torch
    from transformers import Olmo2ForCausalLM, Trainer, TrainerCallback, TrainingArguments

    from ladder.data.sequences import BatchSampler
    from ladder.train.setup import build_model

    recipe, plan, seqs = _setup(args)
    sampler = BatchSampler(seqs.n, plan.batch_seqs, 0)
    n_steps = args.warmup + args.steps
    order = np.concatenate([sampler.indices(s) for s in range(n_steps)])

    class Packed(torch.utils.data.Dataset):
        def __len__(self):
            return len(order)

        def __getitem__(self, i):
            x = torch.from_numpy(seqs.get(order[i:i + 1])[0])
            return {"input_ids": x, "labels": x}

    cuda = torch.cuda.is_available()
    micro = min(args.micro, plan.batch_seqs)
    targs = TrainingArguments(
        output_dir=str(Path(args.tmp) / "trainer"), per_device_train_batch_size=micro,
        gradient_accumulation_steps=plan.batch_seqs // micro, max_steps=n_steps, learning_rate=1e-3,
        adam_beta1=0.9, adam_beta2=0.95, weight_decay=0.1, max_grad_norm=1.0, lr_scheduler_type="cosine",
        warmup_steps=0, logging_steps=10**9, save_strategy="no", report_to=[], use_cpu=not cuda,
        bf16=cuda, dataloader_num_workers=0, seed=0, disable_tqdm=True, torch_compile=args.compile == "both")
    times = {}

    class Clock(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            if state.global_step == args.warmup and "t0" not in times:
                if cuda:
                    torch.cuda.synchronize()
                times["t0"], times["c0"], times["f0"] = time.perf_counter(), time.process_time(), _faults()
            if state.global_step == 0 and "start" not in times:
                times["start"] = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            times["t1"], times["c1"], times["f1"] = time.perf_counter(), time.process_time(), _faults()

    ours = build_model(plan)  # the same weights in transformers' own class: its forward, its loss
    model = Olmo2ForCausalLM(ours.config)
    model.load_state_dict(ours.state_dict())
    trainer = Trainer(model=model, args=targs, train_dataset=Packed(), callbacks=[Clock()])
    out = trainer.train()
    return dict(plan=plan, elapsed=times["t1"] - times["t0"], cpu=times["c1"] - times["c0"],
                faults=times["f1"] - times["f0"],
                warmup_s=times["t0"] - times["start"], loss=out.training_loss, device=trainer.args.device,
                compiled=args.compile == "both")


def child(args) -> None:
    import torch

    from ladder.train.tracking import peak_flops

    res = (run_trainer if args.variant == "trainer" else run_ours)(args)
    plan, device = res["plan"], torch.device(res["device"])
    tps = plan.batch_tokens * args.steps / res["elapsed"]
    peak, how = peak_flops(device)
    print(json.dumps(dict(variant=args.variant, tokens_per_s=tps, seconds_per_step=res["elapsed"] / args.steps,
                          cpu_tokens_per_s=plan.batch_tokens * args.steps / res["cpu"],
                          faults_per_step=res["faults"] / args.steps,
                          warmup_s=res["warmup_s"], compiled=res["compiled"], loss=res["loss"],
                          mfu=plan.flops_per_token * tps / peak if peak else None, peak_how=how,
                          peak_mem_gib=_peak_memory(device), n_params=plan.n_params, device=str(device),
                          threads=torch.get_num_threads())))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="tiny-160k")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-tokens", type=int, default=4096)
    ap.add_argument("--micro", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=1024, help="embedded tokenizer size (tiny sizes)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads, the same for both (0 = torch default)")
    ap.add_argument("--compile", choices=["ours", "both", "none"], default="ours",
                    help="torch.compile our model (train.compile: true; default), both models, or neither")
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs per variant; best is kept")
    ap.add_argument("--no-keep-memory", action="store_true",
                    help="ablation: leave glibc's allocator at its defaults in our loop (ladder/train/host_memory.py)")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast on CPU too (always on a GPU)")
    ap.add_argument("--smoke", action="store_true", help="every variant for 2 steps in this process, tiny-9k (seconds)")
    ap.add_argument("--ab-loss", action="store_true",
                    help="the loss change alone: our step and ours-logits-loss alternating step by step in one process")
    ap.add_argument("--variant", choices=["ours", "ours-eager", "ours-logits-loss", "trainer"], help=argparse.SUPPRESS)
    ap.add_argument("--tmp", default="/tmp/ladder-bench", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        child(args)
        return 0
    if args.smoke:
        return smoke(args)
    if args.ab_loss:
        return ab_loss(args)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}
    base = [a for a in sys.argv[1:]]
    sys.path.insert(0, str(ROOT))
    import torch

    if not torch.cuda.is_available() and "LADDER_PEAK_FLOPS" not in env:  # one CPU peak for all variants
        from ladder.train.tracking import measure_cpu_matmul_flops

        if args.threads:
            torch.set_num_threads(args.threads)
        env["LADDER_PEAK_FLOPS"] = repr(measure_cpu_matmul_flops(seconds=1.0))
    variants = ["ours", "trainer", "ours-logits-loss"] + (["ours-eager"] if args.compile == "ours" else [])
    best: dict[str, dict] = {}
    runs: dict[str, list[float]] = {v: [] for v in variants}  # tokens/s of each repeat, in order
    for i in range(args.repeats):  # alternate (and rotate the order), so load changes hit all
        for variant in variants[i % len(variants):] + variants[:i % len(variants)]:
            r = subprocess.run([sys.executable, __file__, *base, "--variant", variant], env=env,
                               capture_output=True, text=True)
            if r.returncode:
                print(r.stderr[-4000:], file=sys.stderr)
                return 1
            res = json.loads(r.stdout.strip().splitlines()[-1])
            runs[variant].append(res["tokens_per_s"])
            if variant not in best or res["tokens_per_s"] > best[variant]["tokens_per_s"]:
                best[variant] = res
    o = best["ours"]
    print(f"model {args.size} (N={o['n_params']:,}), seq_len {args.seq_len}, batch {args.batch_tokens} tokens, "
          f"micro-batch {args.micro}, {args.steps} timed steps after {args.warmup} warmup, device {o['device']}, "
          f"threads {o['threads']}, best of {args.repeats}; load average {os.getloadavg()[0]:.1f}")
    peak = float(env["LADDER_PEAK_FLOPS"]) if "LADDER_PEAK_FLOPS" in env else None
    how = "LADDER_PEAK_FLOPS" if "LADDER_PEAK_FLOPS" in os.environ else "fp32 matmul, measured once for all variants"
    print("MFU peak: " + (f"{peak / 1e9:,.1f} GFLOP/s ({how})" if peak else o["peak_how"]))
    base_t = best["trainer"]
    for v in variants:
        r = best[v]
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        name = f"{v}{' (compiled)' if r['compiled'] else ''}"
        print(f"  {name:22s} {r['tokens_per_s']:>10,.0f} tokens/s  {1e3 * r['seconds_per_step']:7.1f} ms/step  "
              f"MFU {mfu}  peak memory {r['peak_mem_gib']:.2f} GiB  "
              f"CPU-time {r['cpu_tokens_per_s']:>10,.0f} tokens/s  {r['faults_per_step']:>7,.0f} page faults/step  warmup{' + compile' if r['compiled'] else ''} "
              f"{r['warmup_s']:.1f} s")
    pairs = [(v, "trainer") for v in variants if v != "trainer"] + [("ours", "ours-logits-loss")]
    for v, ref in pairs:
        # the machine's speed drifts over minutes: pair each repeat with the run beside it
        paired = sorted(a / b for a, b in zip(runs[v], runs[ref]))
        print(f"speed ratio {v} / {ref}: {best[v]['tokens_per_s'] / best[ref]['tokens_per_s']:.2f}x best/best "
              f"(CPU-time: {best[v]['cpu_tokens_per_s'] / best[ref]['cpu_tokens_per_s']:.2f}x); "
              f"per repeat: median {statistics.median(paired):.2f}x, range {paired[0]:.2f}-{paired[-1]:.2f}x")
    return 0


def ab_loss(args) -> int:
    """Our step with the chunked head + loss (A) against the loss on full logits (B), both
    compiled (unless --compile none), same weights, alternating step by step in this process, so
    the machine's load hits both alike; prints the per-step time ratio B / A (median, range over
    the rounds of --steps steps each)."""
    import torch
    from accelerate import Accelerator

    from ladder.data.sequences import BatchSampler
    from ladder.train.host_memory import keep_freed_memory
    from ladder.train.loop import _train_step
    from ladder.train.setup import build_model, build_optimizer, prepare_model

    sys.path.insert(0, str(ROOT))
    recipe, plan, seqs = _setup(args)
    cuda = torch.cuda.is_available()
    acc = Accelerator(cpu=not cuda, mixed_precision="bf16" if cuda or args.bf16 else "no")
    if not cuda:
        keep_freed_memory()
    compiled = args.compile != "none"
    steps = {}
    for name in ("chunked", "logits"):
        model = build_model(plan).to(acc.device)
        opt = build_optimizer(model, plan, acc.device)
        if name == "logits":
            model = LogitsLoss(model, acc, compiled)
        else:
            model, opt = prepare_model(acc, model, opt, compile=compiled)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        steps[name] = (model, opt, sched)
    sampler = BatchSampler(seqs.n, plan.batch_seqs, 0)
    micro = min(args.micro, plan.batch_seqs)

    def step(name: str, i: int) -> float:
        model, opt, sched = steps[name]
        t0 = time.perf_counter()
        loss, _ = _train_step(model, opt, sched, acc, seqs, sampler.indices(i), micro, plan.batch_seqs // micro, 1.0)
        float(loss)  # the device finished the step
        return time.perf_counter() - t0

    for i in range(args.warmup):
        step("chunked", i), step("logits", i)
    ratios, totals = [], {"chunked": 0.0, "logits": 0.0}
    for r in range(args.repeats):
        t = {"chunked": 0.0, "logits": 0.0}
        for i in range(args.steps):
            for name in (("chunked", "logits") if i % 2 == 0 else ("logits", "chunked")):
                t[name] += step(name, args.warmup + r * args.steps + i)
        ratios.append(t["logits"] / t["chunked"])
        for k in t:
            totals[k] += t[k]
    n = args.repeats * args.steps
    ratios.sort()
    print(f"loss change, {args.size} seq {args.seq_len} batch {args.batch_tokens} micro {args.micro}, "
          f"{'compiled' if compiled else 'eager'}, {acc.mixed_precision}, device {acc.device}, "
          f"{torch.get_num_threads()} thread(s), load average {os.getloadavg()[0]:.1f}: chunked head + loss "
          f"{1e3 * totals['chunked'] / n:.1f} ms/step, loss on full logits {1e3 * totals['logits'] / n:.1f} ms/step; "
          f"ratio logits / chunked median {statistics.median(ratios):.2f}x, range {ratios[0]:.2f}-{ratios[-1]:.2f}x "
          f"over {args.repeats} rounds of {args.steps} alternating steps")
    return 0


def smoke(args) -> int:
    """Every variant, in this process, for a warm-up and two timed steps of tiny-9k, eager: the
    benchmark's code paths run, not its figures."""
    import torch

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("LADDER_PEAK_FLOPS", "1e10")
    args.size, args.seq_len, args.batch_tokens, args.micro = "tiny-9k", 32, 256, 4
    args.steps, args.warmup, args.compile = 2, 1, "none"
    for variant in ("ours", "ours-logits-loss", "trainer"):
        args.variant = variant
        res = (run_trainer if variant == "trainer" else run_ours)(args)
        tps = res["plan"].batch_tokens * args.steps / res["elapsed"]
        print(f"smoke {variant}: {tps:,.0f} tokens/s, loss {res['loss']:.3f}")
        assert torch.isfinite(torch.tensor(res["loss"])), variant
    return 0


if __name__ == "__main__":
    sys.exit(main())
