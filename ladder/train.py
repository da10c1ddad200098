"""Train one rung of a ladder: ``train(recipe, size, multiplier, seed, out)``.

The model is a Hugging Face ``Olmo2ForCausalLM``; parallelism (DDP/FSDP, processes, mixed
precision) is accelerate's; this module is the loop. One optimizer step is :func:`_train_step`;
evaluation, checkpointing and logging happen between steps at the recipe's intervals.

Exit codes of ``ladder train`` (for SLURM wrappers): see ``EXIT_*`` below.
"""

from __future__ import annotations

import json
import contextlib
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from analysis.runlog import RunLogWriter, RunMeta
from ladder import checkpoint as ckpt
from ladder.host_memory import keep_freed_memory
from ladder.loss import next_token_loss
from ladder.data import BatchSampler, PackedSequences, TokenData, prepare_data, token_byte_lengths
from ladder.recipe import Recipe, RunPlan, eval_steps, lr_lambda, plan_run

EXIT_OK = 0
EXIT_ERROR = 1  # unexpected failure
EXIT_BAD_INPUT = 2  # bad recipe, arguments or data
EXIT_NONFINITE = 3  # loss became NaN/inf; the last good checkpoint is kept
EXIT_PREEMPTED = 75  # SIGTERM/SIGUSR1: checkpoint saved, rerun the same command to resume (EX_TEMPFAIL)

TRAIN_LOSS = "train/CrossEntropyLoss"
LR = "optim/learning_rate_group0"


class NonFiniteLossError(RuntimeError):
    def __init__(self, step: int, value: float, last_checkpoint: Path | None):
        self.step, self.value, self.last_checkpoint = step, value, last_checkpoint
        where = f"last good checkpoint: {last_checkpoint}" if last_checkpoint else "no checkpoint was written yet"
        super().__init__(f"training loss is {value} at step {step}; stopped ({where}). "
                         "Lower train.lr, check the data, or resume from the checkpoint with changes.")


@dataclass
class TrainResult:
    status: str  # "completed" | "preempted" | "already-complete"
    run_dir: Path
    step: int
    total_steps: int
    last_row: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_PREEMPTED if self.status == "preempted" else EXIT_OK


class _Preemption:
    """SIGTERM/SIGUSR1 set a flag; the loop finishes its step, checkpoints and exits."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_Preemption":
        for s in self.SIGNALS:
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread: no signal handling
                pass
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def default_run_dir(recipe: Recipe, plan: RunPlan) -> Path:
    return Path("runs") / recipe.name / plan.name


def build_model(plan: RunPlan):
    from transformers import Olmo2ForCausalLM

    from ladder.presets import get_preset

    r = plan.recipe
    config = get_preset(plan.size).config(vocab_size=plan.vocab_size, seq_len=r.train.seq_len,
                                          initializer_range=r.model.init_std)
    config._attn_implementation = "sdpa"
    torch.manual_seed(plan.seed)
    return Olmo2ForCausalLM(config)


def build_optimizer(model, plan: RunPlan, device: torch.device):
    """AdamW; no weight decay on embeddings and norm weights (OLMo-2)."""
    o = plan.recipe.optimizer
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "embed_tokens" in name or "norm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": o.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    fused = o.fused == "on" or (o.fused == "auto" and device.type in ("cuda", "cpu"))
    kw = dict(lr=plan.lr, betas=tuple(o.betas), eps=o.eps)
    try:
        return torch.optim.AdamW(groups, fused=fused, **kw)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, foreach=True, **kw)


def _vocab_size_for(recipe: Recipe, tokenizer) -> int:
    if recipe.model.vocab_size:
        if recipe.model.vocab_size < len(tokenizer):
            raise ValueError(f"{recipe.source}: 'model.vocab_size' ({recipe.model.vocab_size}) is "
                             f"smaller than the tokenizer ({len(tokenizer)} tokens)")
        return recipe.model.vocab_size
    return int(math.ceil(len(tokenizer) / 128) * 128)


# ---------------------------------------------------------------------------- the loop


def train(recipe: Recipe, size: str | None = None, multiplier: float | None = None,
          seed: int | None = None, out: str | os.PathLike | None = None, *,
          task_evaluator: Callable | None = None, cache: str | os.PathLike | None = None,
          progress: bool = True) -> TrainResult:
    """Train (or resume) one rung. Re-running with the same arguments resumes from the latest
    complete checkpoint, or returns at once if the run already finished.

    Raises :class:`NonFiniteLossError` if the loss diverges. ``task_evaluator`` replaces the
    evaluator built from ``evaluation.tasks`` (for tests and custom evaluations)."""
    from accelerate import Accelerator

    from transformers.utils import logging as hf_logging

    from ladder.tracking import jsonable_config, peak_flops, wandb_settings

    hf_logging.disable_progress_bar()  # save_pretrained's shard bar, once per checkpoint

    size = size or recipe.model.sizes[0]
    allowed = recipe.model.sizes + [tg.size for tg in recipe.targets if tg.size]  # held-out targets too
    if size not in allowed:
        raise ValueError(f"--size {size!r} is not in {recipe.source}'s model.sizes or targets "
                         f"({', '.join(allowed)})")
    multiplier = float(multiplier if multiplier is not None else min(recipe.multipliers))
    seed = recipe.seeds[0] if seed is None else int(seed)

    cpu_only = not torch.cuda.is_available()
    precision = recipe.train.precision
    mixed = "bf16" if (precision == "bf16" or (precision == "auto" and not cpu_only)) else "no"
    tracking = recipe.tracking
    use_wandb = tracking.wandb and tracking.mode != "disabled"
    # cpu=True on CPU-only machines makes a torchrun/`accelerate launch --multi_gpu` start use
    # gloo (MULTI_CPU) instead of silently running independent single processes.
    accelerator = Accelerator(cpu=cpu_only, mixed_precision=mixed, step_scheduler_with_optimizer=False,
                              log_with="wandb" if use_wandb else None)
    device = accelerator.device
    if device.type == "cpu":
        keep_freed_memory()  # no page faults on each step's activations (ladder/host_memory.py)
        if recipe.train.cpu_threads:
            torch.set_num_threads(recipe.train.cpu_threads)
    with accelerator.main_process_first():  # main tokenizes into the cache, the others reuse it
        data = prepare_data(recipe.data, recipe.model, Path(cache) if cache else None)
    plan = plan_run(recipe, size, multiplier, seed, _vocab_size_for(recipe, data.tokenizer))
    run_dir = Path(out) if out else default_run_dir(recipe, plan)
    t = recipe.train
    world = accelerator.num_processes
    train_seqs = PackedSequences(data.train, t.seq_len, "train")
    val_seqs = PackedSequences(data.val, t.seq_len, "validation")
    sampler = BatchSampler(train_seqs.n, plan.batch_seqs, plan.seed, recipe.data.shuffle,
                           accelerator.process_index, world)
    per_proc = plan.batch_seqs // world
    micro = math.gcd(t.micro_batch_size, per_proc)
    accum = per_proc // micro

    evals = eval_steps(plan.total_steps, recipe.evaluation)
    eval_set = set(evals)
    ck = recipe.checkpoint
    ckpt_set = (eval_set if ck.interval is None
                else set(range(ck.interval, plan.total_steps + 1, ck.interval)) | {plan.total_steps})

    writer = RunLogWriter(run_dir) if accelerator.is_main_process else None
    meta = _run_meta(recipe, plan, data, accelerator, micro, accum)
    _check_same_run(run_dir, meta)

    model = build_model(plan).to(device)
    optimizer = build_optimizer(model, plan, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_lambda(s, plan))
    if t.compile:
        model = torch.compile(model)
    model, optimizer = accelerator.prepare(model, optimizer)

    step = 0
    if accelerator.is_main_process:
        ckpt.sweep_temp_dirs(run_dir)
    accelerator.wait_for_everyone()
    latest = ckpt.latest_resumable(run_dir)
    if latest is not None:
        state = ckpt.load_checkpoint(latest, accelerator=accelerator, model=model,
                                     optimizer=optimizer, scheduler=scheduler)
        step = int(state["step"])
        accelerator.print(f"resuming {run_dir} from {latest.path.name} (step {step}/{plan.total_steps})")
    if writer:
        writer.resume_at(step)  # drop evaluations logged after the checkpoint: each exactly once
        writer.write_meta(_with_status(meta, "completed" if step >= plan.total_steps else "running"))
    if step >= plan.total_steps:
        rows = writer.rows() if writer else []
        return TrainResult("already-complete", run_dir, step, plan.total_steps, rows[-1] if rows else {})

    log_with, init_kwargs = wandb_settings(recipe.tracking, recipe.name, plan.name, str(run_dir))
    if log_with:
        accelerator.init_trackers(recipe.tracking.project, config=jsonable_config(meta.to_json()),
                                  init_kwargs=init_kwargs)

    evaluator = task_evaluator
    if evaluator is None and recipe.evaluation.tasks:
        from ladder.evaluate import build_task_evaluator  # optional component, imported lazily

        evaluator = build_task_evaluator(
            recipe.evaluation.tasks, data.tokenizer, limit=recipe.evaluation.task_limit,
            batch_size=recipe.evaluation.task_batch_size, corpus_val_docs=data.validation_texts(),
            seed=plan.seed)

    byte_len = torch.as_tensor(token_byte_lengths(data.tokenizer, plan.vocab_size), device=device)
    n_val = min(val_seqs.n, max(1, recipe.data.validation_tokens // t.seq_len))
    peak, peak_how = peak_flops(device)
    last_ckpt = latest.path if latest else None
    bar = _progress(accelerator, progress, step, plan)
    pending: list[tuple[int, torch.Tensor]] = []  # (step, loss) not yet checked on the host
    last_loss = float("nan")
    t_log, tok_log, wall_train = time.perf_counter(), 0, 0.0
    tokens_per_step = plan.batch_tokens
    status = "completed"

    with _Preemption() as preempt:
        while step < plan.total_steps:
            t0 = time.perf_counter()
            idx = sampler.indices(step)
            loss, gnorm = _train_step(model, optimizer, scheduler, accelerator, train_seqs, idx,
                                      micro, accum, recipe.optimizer.grad_clip)
            step += 1
            pending.append((step, loss))
            wall_train += time.perf_counter() - t0
            tok_log += tokens_per_step

            is_eval, is_ckpt = step in eval_set, step in ckpt_set
            stop = preempt.requested
            sync = is_eval or is_ckpt or step % recipe.tracking.log_interval == 0 or step == plan.total_steps
            if world > 1 and sync:  # agree on preemption across processes at sync points only
                stop = bool(accelerator.reduce(torch.tensor(float(stop), device=device), "max").item())
            if sync or stop:
                try:
                    last_loss = _check_finite(pending, accelerator, last_ckpt)
                except NonFiniteLossError:
                    if writer:
                        writer.write_meta(_with_status(meta, "diverged"))
                    raise
                pending.clear()
                tps = tok_log / max(wall_train, 1e-9)
                mfu = plan.flops_per_token * tps / peak if peak else None
                lr_now = scheduler.get_last_lr()[0]
                if bar is not None:
                    bar.set_postfix_str(f"loss {last_loss:.4f} tok/s {tps:,.0f}"
                                        + (f" MFU {100 * mfu:.1f}%" if mfu is not None else ""),
                                        refresh=False)
                    bar.update(step - bar.n)
                accelerator.log({TRAIN_LOSS: last_loss, LR: lr_now, "throughput/tokens_per_second": tps,
                                 **({"throughput/mfu": mfu} if mfu is not None else {}),
                                 "optim/total_grad_norm": float(gnorm)}, step=step)
                tok_log, wall_train = 0, 0.0
            if is_eval:
                row = {"step": step, "tokens": step * tokens_per_step, TRAIN_LOSS: last_loss, LR: lr_now,
                       "throughput/tokens_per_second": tps}
                if mfu is not None:
                    row["throughput/mfu"] = mfu
                # the uncompiled module: eval mode and another batch size would recompile the model
                row.update(_validation(getattr(model, "_orig_mod", model), accelerator, val_seqs, n_val,
                                       recipe.evaluation.batch_size, byte_len, data.name))
                if evaluator is not None:
                    model.eval()
                    row.update(evaluator(accelerator.unwrap_model(model), accelerator))
                    model.train()
                if writer:
                    writer.append(row)
                accelerator.log({k: v for k, v in row.items() if k not in ("step",)}, step=step)
                if bar is not None:
                    bar.write(f"step {step:>6}/{plan.total_steps}  train {last_loss:.4f}  "
                              f"val {row[f'eval/{data.name}-validation/CrossEntropyLoss']:.4f}  "
                              f"bpb {row[f'eval/{data.name}-validation/bpb']:.4f}")
            if is_ckpt or stop:
                state = {"step": step, "tokens": step * tokens_per_step, "data_position": step * plan.batch_seqs,
                         "seed": plan.seed, "total_steps": plan.total_steps}
                path = ckpt.save_checkpoint(run_dir, step, accelerator=accelerator, model=model,
                                            optimizer=optimizer, scheduler=scheduler,
                                            tokenizer=data.tokenizer, state=state, eval_step=is_eval)
                last_ckpt = path or last_ckpt
                if accelerator.is_main_process:
                    ckpt.prune_checkpoints(run_dir, ck.keep_last, ck.keep_eval_weights)
                accelerator.wait_for_everyone()
            if stop and step < plan.total_steps:
                status = "preempted"
                accelerator.print(f"\npreemption signal: checkpoint saved at step {step}; "
                                  f"rerun the same command to resume (exit {EXIT_PREEMPTED})")
                break

    if bar is not None:
        bar.close()
    if writer:
        writer.write_meta(_with_status(meta, status))
    if log_with:
        accelerator.end_training()
    rows = writer.rows() if writer else []
    return TrainResult(status, run_dir, step, plan.total_steps, rows[-1] if rows else {})


def _train_step(model, optimizer, scheduler, accelerator, seqs: PackedSequences, idx: np.ndarray,
                micro: int, accum: int, clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step over this process's share of the global batch. Returns the mean loss
    (a device tensor: no host sync here) and the gradient norm before clipping."""
    device = accelerator.device
    batch = torch.from_numpy(seqs.get(idx))
    if device.type == "cuda":
        batch = batch.pin_memory()
    batch = batch.to(device, non_blocking=True)
    loss_sum = torch.zeros((), device=device)
    for i in range(accum):
        x = batch[i * micro:(i + 1) * micro]
        last = i == accum - 1
        with accelerator.no_sync(model) if not last else contextlib.nullcontext():
            with accelerator.autocast():
                loss = next_token_loss(model(input_ids=x).logits, x, scale=1 / accum)
            accelerator.backward(loss)
        loss_sum += loss.detach()
    gnorm = accelerator.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, gnorm


@torch.no_grad()
def _validation(model, accelerator, seqs: PackedSequences, n_val: int, batch_size: int,
                byte_len: torch.Tensor, name: str) -> dict[str, float]:
    """CE per token and bits per byte on the first ``n_val`` validation sequences (fixed set),
    split across processes and summed."""
    model.eval()
    device = accelerator.device
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # CE nats, tokens, bytes
    mine = np.arange(accelerator.process_index, n_val, accelerator.num_processes)
    for i in range(0, len(mine), batch_size):
        x = torch.from_numpy(seqs.get(mine[i:i + batch_size])).to(device)
        with accelerator.autocast():
            logits = model(input_ids=x).logits
        targets = x[:, 1:]
        ce = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.size(-1)), targets.reshape(-1),
                             reduction="sum")
        sums += torch.stack([ce.double(), torch.tensor(targets.numel(), device=device, dtype=torch.float64),
                             byte_len[targets].sum().double()])
    sums = accelerator.reduce(sums, "sum")
    ce, n, nbytes = sums.tolist()
    model.train()
    prefix = f"eval/{name}-validation"
    return {f"{prefix}/CrossEntropyLoss": ce / n, f"{prefix}/bpb": ce / math.log(2) / max(nbytes, 1)}


def _check_finite(pending: list[tuple[int, torch.Tensor]], accelerator, last_ckpt) -> float:
    """Bring the pending losses to the host (the only sync of the loop between evaluations) and
    stop at the first non-finite one. Returns the last loss, averaged over processes."""
    losses = torch.stack([loss for _, loss in pending])
    losses = accelerator.reduce(losses, "mean") if accelerator.num_processes > 1 else losses
    values = losses.tolist()
    for (s, _), v in zip(pending, values):
        if not math.isfinite(v):
            raise NonFiniteLossError(s, v, last_ckpt)
    return values[-1]


def _progress(accelerator, enabled: bool, step: int, plan: RunPlan):
    if not (enabled and accelerator.is_main_process):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=plan.total_steps, initial=step, desc=plan.name, unit="step", dynamic_ncols=True,
                file=sys.stderr, mininterval=1.0)


# ---------------------------------------------------------------------------- run metadata


def _run_meta(recipe: Recipe, plan: RunPlan, data: TokenData, accelerator, micro: int, accum: int) -> RunMeta:
    import accelerate
    import datasets
    import tokenizers
    import transformers

    import ladder

    return RunMeta(
        name=plan.name, n_params=plan.n_params, target_tokens=plan.target_tokens, size=plan.size,
        multiplier=plan.multiplier, seed=plan.seed, n_nonembed=plan.n_nonembed,
        batch_tokens=plan.batch_tokens,
        extra=dict(
            ladder=recipe.name, lr=plan.lr, tokens_per_step=plan.tokens_per_step,
            total_steps=plan.total_steps, warmup_steps=plan.warmup_steps, seq_len=recipe.train.seq_len,
            vocab_size=plan.vocab_size, flops_per_token=plan.flops_per_token,
            schedule=recipe.train.schedule, num_processes=accelerator.num_processes,
            micro_batch_size=micro, grad_accum_steps=accum,
            mixed_precision=str(accelerator.mixed_precision),
            recipe_hash=recipe.hash(), recipe_file=recipe.source, recipe=recipe.to_dict(),
            corpus_hash=data.corpus_hash, tokenizer_hash=data.tokenizer_hash, valset=data.name,
            versions=dict(ladder=ladder.__version__, torch=torch.__version__,
                          transformers=transformers.__version__, accelerate=accelerate.__version__,
                          datasets=datasets.__version__, tokenizers=tokenizers.__version__,
                          python=sys.version.split()[0]),
        ))


def _with_status(meta: RunMeta, status: str) -> RunMeta:
    meta.extra["status"] = status
    return meta


def _check_same_run(run_dir: Path, meta: RunMeta) -> None:
    """Refuse to resume a run directory that holds a different run: mixing two runs' logs is the
    one mistake that silently corrupts a fit."""
    p = run_dir / "run.json"
    if not p.is_file():
        return
    try:
        old = json.loads(p.read_text())
    except json.JSONDecodeError:
        return
    new = meta.to_json()
    for key in ("name", "n_params", "target_tokens", "batch_tokens", "seed", "corpus_hash",
                "tokenizer_hash", "lr", "total_steps"):
        if key in old and old[key] != new.get(key):
            raise ValueError(f"{p}: this directory holds a different run ({key}: {old[key]!r} there, "
                             f"{new.get(key)!r} now); use another --out or delete it")
