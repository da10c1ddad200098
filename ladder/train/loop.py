"""Train one rung of a ladder: ``train(recipe, size, multiplier, seed, out)``.

The model is a Hugging Face ``Olmo2ForCausalLM``; parallelism (DDP/FSDP, processes, mixed
precision) is accelerate's. :func:`ladder.train.setup.setup` builds the run; this module is the
loop: one optimizer step is :func:`_train_step`, and a :class:`Cadence` says at which steps the
run logs, evaluates and checkpoints (:class:`Trainer`'s ``log``, ``evaluate`` and ``save``).

Exit codes of ``ladder train`` (for SLURM wrappers): :mod:`ladder.exit_codes`.
"""

from __future__ import annotations

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

from analysis.runlog import TRAIN_LOSS
from ladder.data.sequences import PackedSequences
from ladder.exit_codes import COMPLETED, DIVERGED, EXIT_OK, EXIT_PREEMPTED, PREEMPTED
from ladder.integrity import storage_error
from ladder.recipe import Recipe
from ladder.runplan import RunPlan, run_eval_steps
from ladder.train.divergence import DivergenceMonitor, LossDiverged
from ladder.train.parallel import is_fsdp
from ladder.train.setup import RunContext, eval_module, setup
from ladder.train.status import Preempted

LR = "optim/learning_rate_group0"
STATUS_EVERY = 30.0  # seconds between updates of status.json's step while running


NonFiniteLossError = LossDiverged  # the name callers know; divergence is more than NaN/inf


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
    """SIGTERM/SIGUSR1 (schedulers), SIGHUP (a closed terminal) and Ctrl-C set a flag; the loop
    finishes its step, checkpoints and exits 75. During start-up (``starting``) they raise
    :class:`Preempted` instead: there is no state to save, and the start-up can take minutes.
    A second Ctrl-C stops at once (KeyboardInterrupt)."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP, signal.SIGINT)

    def __init__(self) -> None:
        self.requested, self.starting = False, True
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_Preemption":
        for s in self.SIGNALS:
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread: no signal handling
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.starting:
            raise Preempted(signum)
        if signum == signal.SIGINT and self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


@dataclass
class Cadence:
    """At which steps the loop evaluates, logs and syncs (the only host syncs); which steps are
    saved is the checkpointer's (``saves``), and every save step is a sync point."""

    evals: set[int]
    saves: set[int]
    log_interval: int
    total_steps: int

    @classmethod
    def for_run(cls, recipe: Recipe, plan: RunPlan, saves: set[int]) -> "Cadence":
        return cls(set(run_eval_steps(plan, recipe.evaluation)), saves, recipe.tracking.log_interval,
                   plan.total_steps)

    def evaluate(self, step: int) -> bool:
        return step in self.evals

    def sync(self, step: int) -> bool:
        return (self.evaluate(step) or step in self.saves or step % self.log_interval == 0
                or step == self.total_steps)


# ---------------------------------------------------------------------------- the loop


def train(recipe: Recipe, size: str | None = None, multiplier: float | None = None,
          seed: int | None = None, out: str | os.PathLike | None = None, *,
          task_evaluator: Callable | None = None, cache: str | os.PathLike | None = None,
          progress: bool = True, force_new: bool = False, stable: bool = False,
          branch_from: str | os.PathLike | None = None) -> TrainResult:
    """Train (or resume) one rung. Re-running with the same arguments resumes from the latest
    intact checkpoint, or returns at once if the run already finished. The run directory is
    this call's alone while it runs (a second writer is refused) and must hold this run;
    ``force_new`` moves a directory holding another run aside.

    Raises :class:`LossDiverged` if the loss diverges (:mod:`ladder.train.divergence`),
    :class:`Preempted` on a stop signal during start-up. ``task_evaluator`` replaces the
    evaluator built from ``evaluation.tasks`` (for tests and custom evaluations)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # save_pretrained's shard bar, once per checkpoint
    with _Preemption() as preempt:
        ctx = setup(recipe, size, multiplier, seed, out, task_evaluator=task_evaluator, cache=cache,
                    force_new=force_new, stable=stable, branch_from=branch_from)
        preempt.starting = False
        try:
            return _run(ctx, recipe, progress, preempt)
        except Exception as e:  # a full, read-only or failing disk: one line, status failed
            err = storage_error(e, ctx.run_dir)
            if err is None:
                raise
            ctx.fail(err.status_message())
            raise err from None
        finally:
            ctx.release()


def _run(ctx: RunContext, recipe: Recipe, progress: bool, preempt: _Preemption) -> TrainResult:
    total = ctx.plan.total_steps
    if ctx.step >= total and not ctx.relog:
        return TrainResult("already-complete", ctx.run_dir, ctx.step, total, ctx.last_row())
    trainer = Trainer(ctx, Cadence.for_run(recipe, ctx.plan, ctx.checkpointer.steps), progress)
    if ctx.relog:  # the row of the resumed step was lost (a torn write): evaluate it again
        trainer.last_loss = ctx.resume_loss if ctx.resume_loss is not None else float("nan")
        trainer.lr, trainer.tps = ctx.scheduler.get_last_lr()[0], float("nan")
        trainer.evaluate(ctx.step)
    step, status = ctx.step, COMPLETED
    ok = False
    try:
        with trainer.tracking():
            while step < total:
                trainer.step(step)
                step += 1
                stop, due = preempt.requested, False
                if trainer.cadence.sync(step):  # across processes, at sync points only
                    stop, due = trainer.agree(stop, ctx.checkpointer.wall_clock_due())
                elif ctx.accelerator.num_processes > 1:
                    # a signal some processes have seen and others not yet: acted on at the next
                    # sync point, by all together (one alone would enter the save's collectives
                    # while the others enter the next step's, and both would wait forever)
                    stop = False
                if trainer.cadence.sync(step) or stop:
                    trainer.log(step)
                if trainer.cadence.evaluate(step):
                    trainer.evaluate(step)
                trainer.save(step, force=stop or due)  # the checkpointer knows its steps
                if stop and step < total:
                    status = PREEMPTED
                    break
            ok = True
    finally:  # a background save in flight completes before the run ends, however it ends
        trainer.settle_saves(raise_error=ok)
    if status == PREEMPTED:
        ctx.accelerator.print(f"\npreemption signal: checkpoint saved at step {step}; "
                              f"rerun the same command to resume (exit {EXIT_PREEMPTED})")
    trainer.close()
    ctx.set_status(status, step)
    return TrainResult(status, ctx.run_dir, step, total, ctx.last_row())


class Trainer:
    """The loop's components over one :class:`RunContext`: step, log, evaluate, save."""

    def __init__(self, ctx: RunContext, cadence: Cadence, progress: bool):
        from ladder.train.tracking import peak_flops

        self.ctx, self.cadence = ctx, cadence
        acc = ctx.accelerator
        peak, how = peak_flops(acc.device)
        # MFU: the model FLOPs of the global batch over every process's peak (the tokens counted
        # are the global batch's)
        self.peak = peak * acc.num_processes if peak else None
        if peak is None:
            acc.print(f"note: no peak FLOP/s known for {how}: MFU is not logged (set LADDER_PEAK_FLOPS "
                      f"to the device's dense peak to log it)", file=sys.stderr)
        self.bar = _progress(ctx.accelerator, progress, ctx.step, ctx.plan)
        self.pending: list[tuple[int, torch.Tensor]] = []  # (step, loss) not yet checked on the host
        self.last_loss, self.lr, self.tps, self.mfu = float("nan"), float("nan"), 0.0, None
        self.tokens, self.window = 0, None  # since the last log: tokens, start of the timed window
        self.gnorm: torch.Tensor | float = float("nan")
        self.monitor = DivergenceMonitor()
        self.last_status = time.monotonic()
        self._trackers = False

    @contextlib.contextmanager
    def tracking(self):
        """W&B (through accelerate's trackers) for the loop's duration."""
        from ladder.train.tracking import jsonable_config, start_trackers, wandb_settings

        c = self.ctx
        log_with, init_kwargs = wandb_settings(c.recipe.tracking, c.recipe.name, c.plan.name, str(c.run_dir))
        if log_with:
            start_trackers(c.accelerator, c.recipe.tracking.project, jsonable_config(c.meta.to_json()),
                           init_kwargs, c.run_dir)
            self._trackers = True
        yield

    def step(self, step: int) -> None:
        c = self.ctx
        if self.window is None:  # the window opens on a synced device: no earlier work in it
            _device_sync(c.accelerator.device)
            self.window = time.perf_counter()
        loss, self.gnorm = _train_step(c.model, c.optimizer, c.scheduler, c.accelerator, c.train_seqs,
                                       c.sampler.indices(step), c.micro, c.accum, c.recipe.optimizer.grad_clip)
        self.pending.append((step + 1, loss))
        self.tokens += c.plan.batch_tokens

    def agree(self, stop: bool, due: bool = False) -> tuple[bool, bool]:
        """Preemption (a wall-clock checkpoint) is acted on when any process asks for it."""
        acc = self.ctx.accelerator
        if acc.num_processes == 1:
            return stop, due
        flags = acc.reduce(torch.tensor([float(stop), float(due)], device=acc.device), "max").tolist()
        return bool(flags[0]), bool(flags[1])

    def log(self, step: int) -> None:
        """Check the pending losses (divergence stops the run) and log loss, LR and throughput."""
        c = self.ctx
        try:
            self.last_loss = _check_losses(self.pending, c.accelerator, self.monitor)
        except LossDiverged as e:
            self.settle_saves(raise_error=False)  # name a checkpoint that is complete
            e = e.at(c.checkpointer.last)
            c.set_status(DIVERGED, e.step, str(e))
            raise e from None
        if time.monotonic() - self.last_status >= STATUS_EVERY:
            c.report_progress(step)
            self.last_status = time.monotonic()
        self.pending.clear()
        # the window closes after the device finished its steps (_check_losses synced the losses;
        # a device sync covers the optimizer step queued after the last loss)
        _device_sync(c.accelerator.device)
        seconds = time.perf_counter() - self.window if self.window is not None else float("nan")
        self.tps = self.tokens / max(seconds, 1e-9)
        self.mfu = c.plan.flops_per_token * self.tps / self.peak if self.peak else None
        self.lr = c.scheduler.get_last_lr()[0]
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {self.last_loss:.4f} tok/s {self.tps:,.0f}"
                                     + (f" MFU {100 * self.mfu:.1f}%" if self.mfu is not None else ""),
                                     refresh=False)
            self.bar.update(step - self.bar.n)
        c.accelerator.log({TRAIN_LOSS: self.last_loss, LR: self.lr, "throughput/tokens_per_second": self.tps,
                           **({"throughput/mfu": self.mfu} if self.mfu is not None else {}),
                           "optim/total_grad_norm": float(self.gnorm)}, step=step)
        self.tokens, self.window = 0, None  # evaluation and checkpoints happen outside the windows

    def evaluate(self, step: int) -> None:
        """Validation CE/bpb and the task evaluator; one row appended to the run log."""
        c = self.ctx
        row = {"step": step, "tokens": step * c.plan.batch_tokens, TRAIN_LOSS: self.last_loss, LR: self.lr,
               "throughput/tokens_per_second": self.tps}
        if self.mfu is not None:
            row["throughput/mfu"] = self.mfu
        row.update(_validation(eval_module(c.model), c.accelerator, c.val_seqs, c.n_val,
                               c.recipe.evaluation.batch_size, c.byte_len, c.data.name))
        if c.evaluator is not None:
            c.model.eval()
            # the unwrapped module has lost the autocast accelerate put on the prepared forward
            with c.accelerator.autocast():
                row.update(c.evaluator(eval_module(c.model), c.accelerator))
            c.model.train()
        if c.writer:
            c.writer.append(row)
        c.accelerator.log({k: v for k, v in row.items() if k not in ("step",)}, step=step)
        if self.bar is not None:
            self.bar.write(f"step {step:>6}/{c.plan.total_steps}  train {self.last_loss:.4f}  "
                           f"val {row[f'eval/{c.data.name}-validation/CrossEntropyLoss']:.4f}  "
                           f"bpb {row[f'eval/{c.data.name}-validation/bpb']:.4f}")

    def save(self, step: int, force: bool = False) -> None:
        """Hand the checkpointer this step's state; it saves at its steps or when ``force``d."""
        c = self.ctx
        state = {"step": step, "tokens": step * c.plan.batch_tokens, "data_position": step * c.plan.batch_seqs,
                 "seed": c.plan.seed, "total_steps": c.plan.total_steps,
                 "train_loss": self.last_loss}  # for a lost evaluation row evaluated again
        if c.checkpointer.maybe_save(step, force=force, state=state, model=c.model, optimizer=c.optimizer,
                                     scheduler=c.scheduler, tokenizer=c.data.tokenizer,
                                     is_eval=self.cadence.evaluate(step)):
            c.report_progress(step)

    def settle_saves(self, raise_error: bool = True) -> None:
        """Wait for the background save in flight, if any (its error is raised here)."""
        self.ctx.checkpointer.wait(raise_error)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self._trackers:
            self.ctx.accelerator.end_training()


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
    # DDP all-reduces once per step; FSDP reduce-scatters every micro-batch, so its gradients stay
    # sharded (no_sync would hold the whole model's unsharded fp32 gradients between micro-batches)
    defer_sync = accum > 1 and not is_fsdp(accelerator)
    for i in range(accum):
        x = batch[i * micro:(i + 1) * micro]
        last = i == accum - 1
        with accelerator.no_sync(model) if defer_sync and not last else contextlib.nullcontext():
            with accelerator.autocast():
                loss = model(input_ids=x, loss_scale=1 / accum)
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


def _device_sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _check_losses(pending: list[tuple[int, torch.Tensor]], accelerator, monitor: DivergenceMonitor) -> float:
    """Bring the pending losses to the host (the only sync of the loop between evaluations) and
    stop at the first that diverges. Returns the last loss, averaged over processes."""
    losses = torch.stack([loss for _, loss in pending])
    losses = accelerator.reduce(losses, "mean") if accelerator.num_processes > 1 else losses
    values = losses.tolist()
    for (s, _), v in zip(pending, values):
        monitor.check(s, v)
    return values[-1]


def _progress(accelerator, enabled: bool, step: int, plan: RunPlan):
    if not (enabled and accelerator.is_main_process):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=plan.total_steps, initial=step, desc=plan.name, unit="step", dynamic_ncols=True,
                file=sys.stderr, mininterval=1.0)
