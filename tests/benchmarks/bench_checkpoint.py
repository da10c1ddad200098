"""How long a checkpoint stalls training: a synchronous save against a background one
(``checkpoint.async_save``), on one process, in one invocation; and what the files' digests
cost: the same synchronous save with digests against one recording sizes only, alternated.

    PYTHONPATH=. python tests/benchmarks/bench_checkpoint.py                   # CPU, tiny-4.9m
    PYTHONPATH=. python tests/benchmarks/bench_checkpoint.py --size 190M --saves 3   # GPU
    PYTHONPATH=. python tests/benchmarks/bench_checkpoint.py --size 190M --digests-only --saves 3  # CPU
    PYTHONPATH=. python tests/benchmarks/bench_checkpoint.py --smoke           # seconds (test suite)

For each mode, ``--saves`` times: a few training steps, then a save. The stall is the time from
the save's call to its return (synchronous: the whole write; asynchronous: the snapshot in host
memory). Also printed: how long the background write took (joined after ``--steps-between``
steps) and the mean step time while a write was in flight against the mean without one, the cost
of sharing the machine with the writer. Modes alternate (sync, async, sync, ...) so that a
shared machine's load hits both alike; medians are printed, and the stall ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def build(args):
    import torch
    from accelerate import Accelerator

    from ladder.data.pipeline import DataConfig, ModelConfig, prepare_data
    from ladder.data.sequences import BatchSampler, PackedSequences
    from ladder.recipe import from_dict
    from ladder.runplan import plan_run
    from ladder.train.setup import build_model, build_optimizer

    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    recipe = from_dict({"model": {"sizes": [args.size], "tokenizer_vocab_size": 512},
                        "train": {"seq_len": args.seq_len, "batch_tokens": args.seq_len * args.micro,
                                  "micro_batch_size": args.micro, "lr": 1e-3, "warmup_tokens": 0}})
    data = prepare_data(DataConfig(max_bytes=args.max_bytes), ModelConfig(tokenizer_vocab_size=512))
    vocab = 100_352 if not args.size.startswith("tiny") else 512
    plan = plan_run(recipe, args.size, 1.0, 0, vocab)
    acc = Accelerator(cpu=not cuda, mixed_precision="bf16" if cuda else "no")
    model = build_model(plan).to(acc.device)
    opt = build_optimizer(model, plan, acc.device)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    model, opt = acc.prepare(model, opt)
    seqs = PackedSequences(data.train, args.seq_len)
    return acc, model, opt, sched, data.tokenizer, seqs, BatchSampler(seqs.n, plan.batch_seqs, 0), plan


def stall_cost(acc, model, opt, sched, tok, args, train_step, step) -> None:
    """The step's stall of a synchronous and of a background save, alternated; printed."""
    from ladder.train.saver import CheckpointSaver, take_snapshot

    stalls = {"sync": [], "async": []}
    writes, busy, idle = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        savers = {m: CheckpointSaver(acc, asynchronous=m == "async") for m in stalls}
        for i in range(2 * args.saves):
            mode = ("sync", "async")[i % 2]
            idle.extend(train_step() for _ in range(args.steps_between))
            saver = savers[mode]
            t0 = time.perf_counter()
            snap = take_snapshot(step(), accelerator=acc, model=model, optimizer=opt, scheduler=sched,
                                 state={"step": step()}, eval_step=False)
            saver.save(Path(tmp) / mode, snap, model=model, tokenizer=tok, keep_last=1, keep_eval_weights=False)
            stalls[mode].append(time.perf_counter() - t0)
            if mode == "async":
                while saver.in_flight:
                    busy.append(train_step())
                saver.wait()
                writes.append(time.perf_counter() - t0)
    med = {m: statistics.median(v) for m, v in stalls.items()}
    print(f"  step stall of a save: sync {1e3 * med['sync']:.1f} ms, async {1e3 * med['async']:.1f} ms "
          f"(snapshot only): ratio sync/async {med['sync'] / med['async']:.1f}x")
    print(f"  background write, snapshot to rename: {1e3 * statistics.median(writes):.1f} ms; "
          f"{len(busy)} steps ran meanwhile")
    if busy:
        print(f"  step time with a write in flight {1e3 * statistics.mean(busy):.1f} ms vs "
              f"{1e3 * statistics.mean(idle):.1f} ms without")


def digest_cost(acc, model, opt, sched, tok, step: int, saves: int, verbose: bool = False) -> dict[str, float]:
    """Median synchronous write time with the manifest's digests and with sizes only (what a
    manifest recorded before digests), alternated so that load hits both alike (in ABBA order: on
    a busy disk the first write of a pair is much slower than the second, whichever it is)."""
    from ladder import integrity
    from ladder.train.saver import take_snapshot, write_snapshot

    def sizes_only(root, skip=()):
        return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))
                if p.is_file() and p.name not in skip}

    real = integrity.record_tree
    times: dict[str, list[float]] = {"digests": [], "sizes only": [], "hash pass": []}

    def timed(root, skip=()):
        t = time.perf_counter()
        out = real(root, skip)
        times["hash pass"].append(time.perf_counter() - t)
        return out

    with tempfile.TemporaryDirectory() as tmp:
        snap = take_snapshot(step, accelerator=acc, model=model, optimizer=opt, scheduler=sched,
                             state={"step": step}, eval_step=False)
        unwrapped = acc.unwrap_model(model)
        for i in range(2 * saves):
            mode = ("digests", "sizes only")[(i + i // 2) % 2]  # D S S D D S S D: order effects cancel
            integrity.record_tree = timed if mode == "digests" else sizes_only
            try:
                t0 = time.perf_counter()
                write_snapshot(snap, Path(tmp) / mode, model=unwrapped, tokenizer=tok, barrier=lambda: None,
                               keep_last=1)
                times[mode].append(time.perf_counter() - t0)
                if verbose:
                    print(f"    {mode}: {1e3 * times[mode][-1]:.0f} ms", flush=True)
            finally:
                integrity.record_tree = real
        nbytes = sum(p.stat().st_size for p in (Path(tmp) / "digests").rglob("*") if p.is_file())
    return {"bytes": nbytes, **{m: statistics.median(v) for m, v in times.items()}}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="tiny-4.9m")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--micro", type=int, default=4)
    ap.add_argument("--saves", type=int, default=3, help="saves per mode")
    ap.add_argument("--steps-between", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--digests-only", action="store_true",
                    help="only the digest comparison (one training step: for sizes too slow to train on CPU)")
    ap.add_argument("--verbose", action="store_true", help="print every timed write")
    ap.add_argument("--max-bytes", type=int, default=1_000_000, help="corpus bytes to tokenize")
    ap.add_argument("--smoke", action="store_true", help="tiny-9k, one save per mode: that it runs")
    args = ap.parse_args(argv)
    if args.smoke:
        args.size, args.seq_len, args.saves, args.steps_between, args.max_bytes = "tiny-9k", 32, 1, 1, 200_000

    import torch
    from transformers.utils import logging as hf_logging

    from ladder.train.loop import _train_step

    hf_logging.disable_progress_bar()  # save_pretrained's shard bar, as train() does
    acc, model, opt, sched, tok, seqs, sampler, plan = build(args)
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    step = 0

    def train_step() -> float:
        nonlocal step
        t = time.perf_counter()
        _train_step(model, opt, sched, acc, seqs, sampler.indices(step), args.micro, 1, 1.0)
        sync()
        step += 1
        return time.perf_counter() - t

    for _ in range(1 if args.digests_only else 3):  # warm-up (one step makes the optimizer state)
        train_step()
    print(f"{args.size} ({plan.n_params / 1e6:.1f}M params), device {acc.device}, {args.saves} saves per mode")
    if not args.digests_only:
        stall_cost(acc, model, opt, sched, tok, args, train_step, lambda: step)
    cost = digest_cost(acc, model, opt, sched, tok, step, args.saves, args.verbose)
    d, n, h = cost["digests"], cost["sizes only"], cost["hash pass"]
    print(f"  synchronous write of {cost['bytes'] / 2**20:.1f} MiB: {1e3 * d:.1f} ms with digests, "
          f"{1e3 * n:.1f} ms with sizes only: digests cost {100 * (d / n - 1):+.1f}% of the write "
          f"(the hash pass itself: {1e3 * h:.1f} ms, {cost['bytes'] / h / 1e9:.2f} GB/s, overlapping the flush)")


if __name__ == "__main__":
    main()
