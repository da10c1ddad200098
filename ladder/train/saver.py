"""Writing checkpoints: a snapshot in host memory at the step boundary, then the files.

Saving has two halves. :func:`take_snapshot` copies everything a checkpoint holds (weights,
optimizer state, scheduler, RNG, step) into host memory: collective under FSDP (the full weights
are gathered), and the only part the training step has to wait for. :func:`write_snapshot`
serialises it (safetensors, the optimizer through ``torch.distributed.checkpoint``, the manifest)
into ``.tmp-stepNNNNNNN/`` and renames that into place. :class:`CheckpointSaver` runs the second
half in the foreground or, asynchronously, in a background thread while training continues.

In the background, at most one save is in flight: the next save, the end of the run, a
preemption exit and an error path each wait for it first, so no checkpoint is lost. The
background writer's collectives (DCP's plan exchange, its barriers) go over a gloo group of its
own, created once, so they never interleave with the training step's collectives. A kill during
a background write leaves only a ``.tmp-`` directory, as in the foreground: the rename is last.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import torch

from ladder import integrity
from ladder.train import checkpoint as ckpt
from ladder.train.parallel import is_fsdp


@dataclass
class Snapshot:
    """One checkpoint's content in host memory, consistent at the step it was taken."""

    step: int
    state: dict[str, Any]  # state.json: step, tokens, data position, ...
    eval_step: bool
    fsdp: bool
    rank: int
    world_size: int
    model: dict[str, torch.Tensor]  # full weights (main process; empty elsewhere)
    optimizer: dict[str, Any]  # by parameter name; DTensor shards under FSDP
    scheduler: dict[str, Any]
    rng: dict[str, Any]


def host_copy(obj: Any, memo: dict | None = None) -> Any:
    """A deep copy of a state dict in host memory that training cannot change: tensors are copied
    (aliases stay aliases, so a tied head is still saved once), DTensors keep their sharding
    (DCP writes each shard with its global offsets). GPU tensors are staged into pinned memory
    without a sync per tensor: the caller synchronises once (:func:`take_snapshot`)."""
    from torch.distributed.tensor import DTensor

    memo = {} if memo is None else memo
    if isinstance(obj, DTensor):
        # the public from_local would move the copy back to the mesh's device
        return DTensor(host_copy(obj._local_tensor, memo), obj._spec, requires_grad=False)
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if key not in memo:
            memo[key] = staging_buffer(t).copy_(t, non_blocking=t.is_cuda)
        return memo[key]
    if isinstance(obj, dict):
        return {k: host_copy(v, memo) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(host_copy(v, memo) for v in obj)
    return copy.deepcopy(obj)


def staging_buffer(t: torch.Tensor) -> torch.Tensor:
    """Host memory for a copy of ``t``: pinned for a GPU tensor (the copy runs at the link's speed,
    asynchronously, and the background writer reads it without a staging copy of CUDA's own),
    pageable for a CPU one (pinning would only cost page-locking)."""
    return torch.empty_like(t, device="cpu", pin_memory=bool(t.is_cuda))


def take_snapshot(step: int, *, accelerator, model, optimizer, scheduler, state: dict[str, Any],
                  eval_step: bool) -> Snapshot:
    """Copy a checkpoint's content to host memory. Collective: every process must call it.
    Replicated state (DDP: weights and optimizer) is copied by the main process only, which
    writes it; FSDP shards are copied by each process."""
    fsdp = is_fsdp(accelerator)
    main = accelerator.is_main_process
    weights = ckpt.model_state(accelerator, model, fsdp) if (fsdp or main) else {}
    if not fsdp:  # references to the live parameters (FSDP's gather already made host copies)
        weights = host_copy(weights)
    optim = host_copy(ckpt.optimizer_state(model, optimizer)) if (fsdp or main) else {}
    if accelerator.device.type == "cuda":
        torch.cuda.current_stream(accelerator.device).synchronize()  # the pinned copies are done
    return Snapshot(step, dict(state), eval_step, fsdp, accelerator.process_index, accelerator.num_processes,
                    weights if main else {}, optim, host_copy(scheduler.state_dict()), ckpt.rng_state())


def write_snapshot(snap: Snapshot, run_dir: Path, *, model, tokenizer, barrier: Callable[[], None],
                   process_group=None, keep_last: int = 0, keep_eval_weights: bool = True,
                   asynchronous: bool = False) -> Path | None:
    """Write ``snap`` as checkpoint ``snap.step`` atomically, then prune (main process). Every
    process calls it; ``barrier`` and ``process_group`` are the writer's (see the module doc).
    ``model`` is the unwrapped module: only its config is read. A write the file system refuses
    (full, over quota, read-only) removes the temp directory and raises
    :class:`ladder.integrity.StorageError` naming the checkpoint."""
    root = Path(run_dir) / ckpt.CKPT_DIR
    final = root / ckpt.step_dir_name(snap.step)
    tmp = root / f".tmp-{ckpt.step_dir_name(snap.step)}"
    try:
        _write_files(snap, root, tmp, model=model, tokenizer=tokenizer, barrier=barrier,
                     process_group=process_group, asynchronous=asynchronous)
        if snap.rank == 0:
            _publish(tmp, final, root)
            ckpt.prune_checkpoints(run_dir, keep_last, keep_eval_weights)
    except Exception as e:
        err = integrity.storage_error(e, final)
        if err is None:
            raise
        if snap.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)  # frees the space (a .tmp- dir is never resumed)
        raise integrity.StorageError(err.errno, err.strerror, f"checkpoint {final}") from None
    barrier()
    return final if snap.rank == 0 else None


def _write_files(snap: Snapshot, root: Path, tmp: Path, *, model, tokenizer, barrier, process_group,
                 asynchronous: bool) -> None:
    main = snap.rank == 0
    state_dir = tmp / ckpt.STATE
    if main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        state_dir.mkdir(parents=True)
    barrier()
    rng = snap.rng  # every process writes its own RNG state; everything else is replicated or sharded
    torch.save({"torch": rng["torch"], "cuda": rng["cuda"]}, state_dir / f"rng-rank{snap.rank}.pt")
    (state_dir / f"rng-rank{snap.rank}.json").write_text(json.dumps({k: rng[k] for k in ("python", "numpy")}))
    # Every process writes its shard of the optimizer (FSDP), or rank 0 all of it (replicated:
    # the others hold an empty snapshot); keyed by parameter name, so a run can resume with
    # another strategy or process count.
    ckpt.dcp_save(snap.optimizer, state_dir / ckpt.OPTIMIZER_DIR, process_group)
    if main:
        model.save_pretrained(tmp, state_dict=snap.model, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        torch.save(snap.scheduler, state_dir / "scheduler.pt")
        (state_dir / "state.json").write_text(json.dumps({**snap.state, "world_size": snap.world_size}, indent=2))
    barrier()  # every process's files are written
    if main:  # last: the digest of every file, then the manifest that makes it a checkpoint
        ckpt.write_manifest(tmp, {"step": snap.step, "tokens": snap.state.get("tokens"), "has_state": True,
                                  "eval_step": snap.eval_step, "fsdp": snap.fsdp, "async": asynchronous,
                                  "keep": bool(snap.state.get("keep"))})  # a WSD branch point


def _publish(tmp: Path, final: Path, root: Path) -> None:
    """fsync the files, then rename the directory into place (a crash before leaves a temp dir)."""
    ckpt.fsync_tree(tmp)
    if final.exists():  # a stale copy of the same step (e.g. weights-only): replace it
        trash = root / f".del-{final.name}"
        os.rename(final, trash)
        shutil.rmtree(trash, ignore_errors=True)
    os.rename(tmp, final)
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointSaver:
    """Saves checkpoints in the foreground, or (``asynchronous``) stalls the step only for the
    snapshot and writes it in a background thread. :meth:`wait` is the join point."""

    def __init__(self, accelerator, asynchronous: bool, timeout_minutes: float = 30.0):
        self.accelerator, self.asynchronous = accelerator, asynchronous
        self.last_written: Path | None = None  # the newest checkpoint known complete (main process)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._group = None
        if asynchronous and accelerator.num_processes > 1:
            import torch.distributed as dist

            # collective: every process builds its saver at the same point of the run
            self._group = dist.new_group(backend="gloo", timeout=timedelta(minutes=timeout_minutes))

    def _barrier(self) -> None:
        if self._group is not None:
            import torch.distributed as dist

            dist.barrier(group=self._group)
        elif not self.asynchronous:
            self.accelerator.wait_for_everyone()

    def save(self, run_dir: Path, snap: Snapshot, *, model, tokenizer, keep_last: int,
             keep_eval_weights: bool) -> None:
        """Write ``snap``: now, or in the background after the save in flight has finished."""
        self.wait()
        unwrapped = self.accelerator.unwrap_model(model)
        unwrapped = getattr(unwrapped, "_orig_mod", unwrapped)  # torch.compile wrapper

        def job() -> None:
            path = write_snapshot(snap, run_dir, model=unwrapped, tokenizer=tokenizer, barrier=self._barrier,
                                  process_group=self._group, keep_last=keep_last,
                                  keep_eval_weights=keep_eval_weights, asynchronous=self.asynchronous)
            self.last_written = path or self.last_written

        if not self.asynchronous:
            job()
            return

        def run() -> None:
            try:
                job()
            except BaseException as e:  # raised in the training thread by wait()
                self._error = e

        self._thread = threading.Thread(target=run, name=f"checkpoint-step{snap.step}")
        self._thread.start()

    @property
    def in_flight(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self, raise_error: bool = True) -> Path | None:
        """Wait for the save in flight; its error is raised here (or dropped with
        ``raise_error=False``, on a path that is already failing). Returns the newest
        checkpoint known complete."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None and raise_error:
            raise error
        return self.last_written
