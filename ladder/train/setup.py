"""Everything a run needs before its first step: accelerator, data, model, optimizer, resume
point, run log, evaluator. :func:`setup` returns it as one :class:`RunContext`; the loop
(:mod:`ladder.train.loop`) only calls its parts."""

from __future__ import annotations

import contextlib
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from analysis.runlog import METRICS_JSONL, RunLogWriter, RunMeta, read_metrics_jsonl
from ladder.data.checks import repetition
from ladder.data.pipeline import TokenData, prepare_data
from ladder.data.sequences import BatchSampler, PackedSequences
from ladder.data.tokenizer import token_byte_lengths
from ladder.exit_codes import BAD_INPUT, PREEMPTED, RUNNING
from ladder.presets import embedding_rows
from ladder.recipe import Recipe
from ladder.runplan import RunPlan, lr_lambda, plan_role, run_eval_steps
from ladder.train.binding import claim_run_dir
from ladder.train.checkpointer import Checkpointer
from ladder.train.host_memory import keep_freed_memory
from ladder.train.parallel import (build_accelerator, enable_activation_checkpointing, enable_tf32,
                                   is_fsdp, parallel_config)
from ladder.train.status import Preempted, write_status


def default_run_dir(recipe: Recipe, plan: RunPlan) -> Path:
    return Path("runs") / recipe.name / plan.name


def build_model(plan: RunPlan, *, meta: bool = False):
    """The rung's ``Olmo2ForCausalLM``, checked to have the N its plan (tokens, batch, LR, the
    fits) was made with: the plan counts in closed form, without building the model. ``meta``:
    its parameters on the meta device (no memory; their values come from another process), its
    non-persistent buffers (RoPE's frequencies, in no state dict) real."""
    from ladder.presets import get_preset, model_params
    from ladder.train.model import Olmo2ForCausalLM

    r = plan.recipe
    config = get_preset(plan.size).config(vocab_size=plan.vocab_size, seq_len=r.train.seq_len,
                                          initializer_range=r.model.init_std)
    config._attn_implementation = "sdpa"
    torch.manual_seed(plan.seed)
    if meta:
        with torch.device("meta"):
            model = Olmo2ForCausalLM(config)
        model.model.rotary_emb = type(model.model.rotary_emb)(config)
    else:
        model = Olmo2ForCausalLM(config)
    built = model_params(model).n
    if built != plan.n_params:
        raise RuntimeError(f"{plan.size}: the built model has N = {built:,} parameters, the plan "
                           f"counted {plan.n_params:,} (ladder.presets.Preset.params no longer "
                           f"matches this transformers version's Olmo2ForCausalLM)")
    return model


def place_model(plan: RunPlan, accelerator):
    """The model before ``prepare``: on the device; or, for a paper-sized rung under FSDP over
    several processes, in the main process's host memory and on the meta device elsewhere, and
    accelerate sends the main process's weights to each process's shards
    (``cpu_ram_efficient_loading``): no process holds the whole fp32 model on its GPU, only one
    in host memory, and the initial weights are one process's, whatever the process count."""
    from ladder.presets import get_preset

    if is_fsdp(accelerator) and accelerator.num_processes > 1 and not get_preset(plan.size).tiny:
        accelerator.state.fsdp_plugin.cpu_ram_efficient_loading = True
        return build_model(plan, meta=not accelerator.is_main_process)
    return build_model(plan).to(accelerator.device)


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


def prepare_model(accelerator, model, optimizer, *, compile: bool):
    """The model and optimizer wrapped for the accelerator's strategy, compiled if asked, and
    without accelerate's fp32 copy of the outputs."""
    fsdp = is_fsdp(accelerator)
    if compile and not fsdp:
        model = torch.compile(model)
    model, optimizer = accelerator.prepare(model, optimizer)
    drop_output_cast(model)
    if compile and fsdp:  # FSDP2 shards the plain module; compile the sharded one
        model = torch.compile(model)
    return model, optimizer


def drop_output_cast(model) -> None:
    """Undo accelerate's wrapping of the prepared model's forward under mixed precision: its
    ``convert_outputs_to_fp32`` copies every output to fp32 (the whole logits at evaluation).
    The loop and the evaluators run the forward under ``accelerator.autocast()`` themselves,
    and the loss is computed in fp32 inside the forward (ladder/train/loss.py)."""
    # The wrapper is the prepared object's own ``forward`` (a compiled module's, DDP's, FSDP's or
    # the model's); ``_original_forward`` is what it wrapped (a compiled module keeps it on the
    # module it compiled: read it through the wrapper, never restore it there, where it would
    # call itself).
    for m in (model, getattr(model, "module", None)):
        if m is not None and "forward" in vars(m) and hasattr(m, "_original_forward"):
            m.forward = m._original_forward
            return


def eval_module(model):
    """The module evaluations call: neither the compiled wrapper (eval mode, no_grad and other
    batch shapes would recompile it on every rank) nor DDP's (no gradients to synchronise). An
    FSDP module stays itself: its forward gathers the shards."""
    from torch.nn.parallel import DistributedDataParallel

    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def _vocab_size_for(recipe: Recipe, tokenizer) -> int:
    if recipe.model.vocab_size:
        if recipe.model.vocab_size < len(tokenizer):
            raise ValueError(f"{recipe.source}: 'model.vocab_size' ({recipe.model.vocab_size}) is "
                             f"smaller than the tokenizer {recipe.model.tokenizer!r} ({len(tokenizer)} tokens)")
        return recipe.model.vocab_size
    return embedding_rows(len(tokenizer))


@dataclass(kw_only=True)
class RunContext:
    """A run ready to step: the components the loop calls, and where it resumes. Built whole,
    by keyword, once the run directory is this process's (:func:`setup`)."""

    recipe: Recipe
    plan: RunPlan
    run_dir: Path
    accelerator: Any
    data: TokenData
    model: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_seqs: PackedSequences
    val_seqs: PackedSequences
    sampler: BatchSampler
    micro: int  # sequences per forward pass
    accum: int  # forward passes per optimizer step
    meta: RunMeta
    writer: RunLogWriter | None  # main process only
    checkpointer: Checkpointer
    lock: Any  # the run directory's DirLock (main process)
    step: int  # the step to resume from (0 for a new run)
    resume_loss: float | None  # train loss at the resumed checkpoint
    relog: bool  # the resumed step's evaluation row was lost: evaluate it again
    evaluator: Callable | None  # None: validation loss only (or the run is complete)
    n_val: int  # validation sequences scored per evaluation
    byte_len: torch.Tensor | None  # bytes of each token, for bits per byte
    step_reached: int | None = None  # the last step status.json reported while running

    def release(self) -> None:
        """Free the run directory for the next writer."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def set_status(self, status: str, step: int | None = None, message: str = "") -> None:
        """Record the run's state in run.json and its outcome in status.json (main process),
        which the sweep backends act on (ladder.exit_codes.next_action)."""
        if self.writer:
            self.meta.extra["status"] = status
            self.writer.write_meta(self.meta)
            write_status(self.run_dir, status, step=self.step if step is None else step,
                         total_steps=self.plan.total_steps, message=message)

    def fail(self, message: str) -> None:
        """status.json only (run.json may be what could not be written): the run stopped on an
        error the user must fix (``bad_input``: schedulers do not retry it)."""
        if self.writer:
            with contextlib.suppress(OSError):
                write_status(self.run_dir, BAD_INPUT, step=self.step if self.step_reached is None else self.step_reached,
                             total_steps=self.plan.total_steps,
                             message=message)

    def report_progress(self, step: int) -> None:
        """status.json's step while running (the loop calls it at checkpoints and every
        ``loop.STATUS_EVERY`` seconds), for ``ladder status`` and schedulers."""
        self.step_reached = step
        if self.writer:
            write_status(self.run_dir, RUNNING, step=step, total_steps=self.plan.total_steps)

    def last_row(self) -> dict[str, Any]:
        rows = self.writer.rows() if self.writer else []
        return rows[-1] if rows else {}


def setup(recipe: Recipe, size: str | None, multiplier: float | None, seed: int | None,
          out: str | os.PathLike | None, *, task_evaluator: Callable | None = None,
          cache: str | os.PathLike | None = None, force_new: bool = False, stable: bool = False,
          branch_from: str | os.PathLike | None = None) -> RunContext:
    """Build a run's components and resume from its latest intact checkpoint, if any. The run
    directory is locked (one writer) and must hold this run (or nothing); ``force_new`` moves
    a directory holding another run aside first. WSD: ``stable`` trains a size's stable run;
    ``branch_from`` (a stable run's directory) starts a decay branch from its checkpoint at
    the branch point (ladder/train/branch.py)."""
    size = size or recipe.model.sizes[0]
    allowed = recipe.model.sizes + [tg.size for tg in recipe.targets if tg.size]  # held-out targets too
    if size not in allowed:
        raise ValueError(f"--size {size!r} is not in {recipe.source}'s model.sizes or targets "
                         f"({', '.join(allowed)})")
    multiplier = float(multiplier if multiplier is not None else min(recipe.multipliers))
    if not (math.isfinite(multiplier) and multiplier > 0):
        raise ValueError(f"--multiplier must be a positive number, got {multiplier:g}")
    seed = recipe.seeds[0] if seed is None else int(seed)

    cpu_only = not torch.cuda.is_available()
    precision = recipe.train.precision
    mixed = "bf16" if (precision == "bf16" or (precision == "auto" and not cpu_only)) else "no"
    tracking = recipe.tracking
    use_wandb = tracking.wandb and tracking.mode != "disabled"
    # cpu=True on CPU-only machines makes a torchrun/`accelerate launch --multi_gpu` start use
    # gloo (MULTI_CPU) instead of silently running independent single processes.
    par = parallel_config(recipe)
    settings = par.for_size(size)
    accelerator = build_accelerator(settings, cpu_only=cpu_only, mixed_precision=mixed,
                                    timeout_minutes=par.timeout_minutes,
                                    log_with="wandb" if use_wandb else None)
    enable_tf32()
    device = accelerator.device
    if device.type == "cpu":
        keep_freed_memory()  # no page faults on each step's activations (ladder/train/host_memory.py)
        if recipe.train.cpu_threads:
            torch.set_num_threads(recipe.train.cpu_threads)
    with accelerator.main_process_first():  # main tokenizes into the cache, the others reuse it
        data = prepare_data(recipe.data, recipe.model, Path(cache) if cache else None)
    role = "stable" if stable else "branch" if branch_from is not None else "run"
    plan = plan_role(recipe, size, multiplier, seed, _vocab_size_for(recipe, data.tokenizer), role)
    run_dir = Path(out) if out else default_run_dir(recipe, plan)
    t = recipe.train
    world = accelerator.num_processes
    train_seqs, val_seqs = data.sequences(t.seq_len)
    repeats = repetition(recipe.data.path or recipe.data.source, plan.total_steps * plan.batch_tokens,
                         train_seqs.n * t.seq_len, recipe.data.max_epochs)  # refuses before any write
    for line in data.notes + ([repeats] if repeats else []):
        accelerator.print(line, file=sys.stderr)
    sampler = BatchSampler(train_seqs.n, plan.batch_seqs, plan.seed, recipe.data.shuffle,
                           accelerator.process_index, world)
    per_proc = plan.batch_seqs // world
    micro = math.gcd(settings.micro_batch_size or t.micro_batch_size, per_proc)
    accum = per_proc // micro

    meta = _run_meta(recipe, plan, data, accelerator, micro, accum)
    from ladder.train.loss import loss_kernel

    meta.extra.update(strategy="fsdp" if is_fsdp(accelerator) else "ddp",
                      activation_checkpointing=settings.activation_checkpointing,
                      loss_kernel=loss_kernel(accelerator.device))
    lock = claim_run_dir(run_dir, meta, accelerator.is_main_process, force_new, accelerator.print)
    try:
        if branch_from is not None and accelerator.is_main_process:
            from ladder.train.branch import seed_branch

            seed_branch(run_dir, Path(branch_from), plan, meta, accelerator.print)
        return _build(recipe, plan, run_dir, accelerator, data, train_seqs, val_seqs, sampler, micro, accum,
                      meta, lock, task_evaluator, settings)
    except BaseException as e:  # the directory is free again for the next attempt in this process
        if lock is not None:
            if isinstance(e, Preempted):  # the directory is ours: say so to the scheduler
                write_status(run_dir, PREEMPTED, total_steps=plan.total_steps, message=str(e))
            lock.release()
        raise


def _build(recipe, plan, run_dir, accelerator, data, train_seqs, val_seqs, sampler, micro, accum, meta,
           lock, task_evaluator, settings) -> RunContext:
    """The model, optimizer and resume point, once the run directory is this process's."""
    t, device = recipe.train, accelerator.device
    writer = RunLogWriter(run_dir, report=accelerator.print) if accelerator.is_main_process else None

    model = place_model(plan, accelerator)
    if settings.activation_checkpointing:
        enable_activation_checkpointing(model)
    optimizer = build_optimizer(model, plan, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_lambda(s, plan))
    model, optimizer = prepare_model(accelerator, model, optimizer, compile=t.compile)

    checkpointer = Checkpointer(recipe, plan, accelerator, run_dir, parallel_config(recipe).timeout_minutes)
    latest, state = checkpointer.resume(model, optimizer, scheduler)
    step = int(state.get("step", 0))
    if latest is not None:
        accelerator.print(f"resuming {run_dir} from {latest.path.name} (step {step}/{plan.total_steps})")
    if writer:
        writer.resume_at(step)  # drop evaluations logged after the checkpoint: each exactly once
    # a row lost with a torn tail at the resumed step is evaluated again (every process reads
    # the log: the evaluation is collective)
    relog = step > 0 and step in run_eval_steps(plan, recipe.evaluation) and not any(
        r.get("step") == step for r in read_metrics_jsonl(run_dir / METRICS_JSONL))
    done = step >= plan.total_steps and not relog
    evaluator = task_evaluator
    if evaluator is None and recipe.evaluation.tasks and not done:
        from ladder.eval.evaluator import build_task_evaluator  # optional component, imported lazily

        evaluator = build_task_evaluator(
            recipe.evaluation.tasks, data.tokenizer, limit=recipe.evaluation.task_limit,
            batch_size=recipe.evaluation.task_batch_size, corpus_val_docs=data.validation_texts(),
            seed=plan.seed)
    ctx = RunContext(
        recipe=recipe, plan=plan, run_dir=run_dir, accelerator=accelerator, data=data, model=model,
        optimizer=optimizer, scheduler=scheduler, train_seqs=train_seqs, val_seqs=val_seqs,
        sampler=sampler, micro=micro, accum=accum, meta=meta, writer=writer,
        checkpointer=checkpointer, lock=lock, step=step, resume_loss=state.get("train_loss"),
        relog=relog, evaluator=evaluator,
        n_val=min(val_seqs.n, max(1, recipe.data.validation_tokens // t.seq_len)),
        byte_len=torch.as_tensor(token_byte_lengths(data.tokenizer, plan.vocab_size), device=device))
    ctx.set_status("completed" if step >= plan.total_steps else RUNNING)
    return ctx


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
            **plan.schedule_info(), num_processes=accelerator.num_processes,
            micro_batch_size=micro, grad_accum_steps=accum,
            mixed_precision=str(accelerator.mixed_precision),
            recipe_hash=recipe.hash(), recipe_file=recipe.source, recipe=recipe.to_dict(),
            corpus_hash=data.corpus_hash, tokenizer_hash=data.tokenizer_hash, valset=data.name,
            versions=dict(ladder=ladder.__version__, torch=torch.__version__,
                          transformers=transformers.__version__, accelerate=accelerate.__version__,
                          datasets=datasets.__version__, tokenizers=tokenizers.__version__,
                          python=sys.version.split()[0]),
        ))
