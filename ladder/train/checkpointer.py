"""A run's checkpoint policy, owned by one component (as torchtitan's checkpointer and OLMo-core's
checkpointer callback own theirs): which steps are saved (every evaluation step, the step
interval, a WSD stable run's branch points, and the wall clock), how (a host snapshot, then the
files in the foreground or a background thread: ladder/train/saver.py), what is kept (the last
``keep_last`` states, evaluation-step weights, branch points never pruned:
``checkpoint.prune_checkpoints``) and where a resume starts (the newest checkpoint whose digests
hold: ``checkpoint.latest_intact``). The loop only asks :meth:`Checkpointer.maybe_save`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ladder.recipe import Recipe
from ladder.runplan import RunPlan, run_eval_steps
from ladder.train import checkpoint as ckpt
from ladder.train.saver import CheckpointSaver, take_snapshot


def save_steps(recipe: Recipe, plan: RunPlan) -> set[int]:
    """Every evaluation step (its weights are kept for offline evaluation, and a resume at it
    re-logs nothing), the ``checkpoint.interval`` steps and the last; a WSD stable run's branch
    points are evaluation steps."""
    evals = set(run_eval_steps(plan, recipe.evaluation))
    every = recipe.checkpoint.interval
    return evals if every is None else set(range(every, plan.total_steps + 1, every)) | evals


def async_saves(recipe: Recipe, accelerator) -> bool:
    """``checkpoint.async_save``; auto = with several processes or on a GPU (a one-process CPU
    run would share its cores with the writer)."""
    setting = recipe.checkpoint.async_save
    if setting == "auto":
        return accelerator.num_processes > 1 or accelerator.device.type != "cpu"
    return bool(setting)


class Checkpointer:
    """Saves, keeps and finds a run's checkpoints. Built by every process at the same point of
    the run (the background writer opens a process group)."""

    def __init__(self, recipe: Recipe, plan: RunPlan, accelerator, run_dir: Path,
                 timeout_minutes: float = 30.0):
        ck = recipe.checkpoint
        self.run_dir, self.accelerator = Path(run_dir), accelerator
        self.steps = save_steps(recipe, plan)
        self.kept = set(plan.branch_steps)  # WSD branch points: a branch starts from them
        self.minutes, self.keep_last, self.keep_eval_weights = (ck.interval_minutes, ck.keep_last,
                                                                ck.keep_eval_weights)
        self.saver = CheckpointSaver(accelerator, async_saves(recipe, accelerator), timeout_minutes)
        self.last: Path | None = None  # the newest checkpoint known complete
        self._since = time.monotonic()

    def is_save_step(self, step: int) -> bool:
        return step in self.steps

    def wall_clock_due(self) -> bool:
        """``checkpoint.interval_minutes`` have passed since the last save (asked at the loop's
        sync points, where the processes agree on it)."""
        return self.minutes is not None and time.monotonic() - self._since >= 60 * self.minutes

    def maybe_save(self, step: int, *, force: bool = False, state: dict[str, Any], model, optimizer,
                   scheduler, tokenizer, is_eval: bool) -> bool:
        """Save at a save step, or when ``force``d (a stop signal, the wall clock). The step
        stalls only for the host snapshot when saving in the background. True if it saved."""
        if not (force or self.is_save_step(step)):
            return False
        self.wait()  # at most one save in flight
        snap = take_snapshot(step, accelerator=self.accelerator, model=model, optimizer=optimizer,
                             scheduler=scheduler, eval_step=is_eval,
                             state={**state, "keep": step in self.kept})
        self.saver.save(self.run_dir, snap, model=model, tokenizer=tokenizer, keep_last=self.keep_last,
                        keep_eval_weights=self.keep_eval_weights)
        self.last = self.saver.last_written or self.last
        self._since = time.monotonic()
        return True

    def wait(self, raise_error: bool = True) -> Path | None:
        """Join the background save in flight, if any (its error is raised here unless
        ``raise_error`` is False, on a path that is already failing); the newest complete one."""
        self.last = self.saver.wait(raise_error) or self.last
        return self.last

    def resume(self, model, optimizer, scheduler) -> tuple[ckpt.CheckpointInfo | None, dict]:
        """Load the newest intact checkpoint: (its info, its state), or (None, {}). Checkpoints
        whose digests fail are set aside by the main process before anyone loads; one that still
        cannot be read (written before digests) is set aside when it fails to load and the next
        older one is tried (one process: several would have to agree first, so they stop)."""
        acc, run_dir = self.accelerator, self.run_dir
        if acc.is_main_process:
            ckpt.sweep_temp_dirs(run_dir)
            ckpt.latest_intact(run_dir, report=acc.print)  # damaged ones are set aside
        acc.wait_for_everyone()
        failed = None
        while (latest := ckpt.latest_resumable(run_dir)) is not None:
            try:
                state = ckpt.load_checkpoint(latest, accelerator=acc, model=model,
                                             optimizer=optimizer, scheduler=scheduler)
                self.last = latest.path
                return latest, state
            except ckpt.CheckpointDamaged as e:
                if acc.num_processes > 1:
                    raise ValueError(f"checkpoint {latest.path} is damaged ({e}); move it aside and "
                                     "rerun to resume from the previous one") from None
                failed = ckpt.set_aside(latest.path, str(e), acc.print)
        if failed is not None:  # the model holds part of a damaged checkpoint: never train on it
            raise ValueError(f"{failed}: no intact checkpoint is left to resume from; rerun to start "
                             "the run over")
        return None, {}
