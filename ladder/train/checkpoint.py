"""Checkpoints: atomic on disk, exact to resume from, pruned by a retention policy.

Layout of ``<run>/checkpoints/step0000123/``::

    config.json, model.safetensors, generation_config.json   save_pretrained (HF-loadable)
    tokenizer.json, tokenizer_config.json, ...               the run's tokenizer
    training_state/optimizer/ (torch.distributed.checkpoint, by parameter name; sharded
                   under FSDP), scheduler.pt, rng-rank*.pt   exact-resume state
    training_state/state.json                                 step, tokens, data position, RNG
    checkpoint.json                                           written last: what this holds,
                                                              each file's size and digest

A checkpoint is written (:mod:`ladder.train.saver`) into ``.tmp-step0000123/`` and renamed into
place only when every file is flushed, so a directory named ``stepNNNNNNN`` is complete by
construction; temp directories left by a killed save are ignored and swept on the next start.
Its manifest records every file's size and XXH3-128 digest and its own (:mod:`ladder.integrity`);
a resume checks them all and sets a checkpoint that fails aside. Nothing is unpickled on load.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import struct
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from analysis.files import atomic_write_text, file_mode
from ladder import integrity

CKPT_DIR = "checkpoints"
_NAME = re.compile(r"^step(\d{7,})$")
MANIFEST = "checkpoint.json"
STATE = "training_state"
OPTIMIZER_DIR = "optimizer"  # torch.distributed.checkpoint: one shard file per process


def step_dir_name(step: int) -> str:
    return f"step{step:07d}"


@dataclass
class CheckpointInfo:
    path: Path
    step: int
    has_state: bool  # full training state present (resumable), not only weights
    manifest: dict[str, Any]


def list_checkpoints(run_dir: str | os.PathLike) -> list[CheckpointInfo]:
    """Complete checkpoints, oldest first (directories without a manifest are not checkpoints)."""
    root = Path(run_dir) / CKPT_DIR
    out = []
    if not root.is_dir():
        return out
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if not m or not (p / MANIFEST).is_file():
            continue
        try:
            manifest = json.loads((p / MANIFEST).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if not isinstance(manifest, dict):
            continue
        has_state = bool(manifest.get("has_state")) and (p / STATE / "state.json").is_file()
        out.append(CheckpointInfo(p, int(m.group(1)), has_state, manifest))
    return sorted(out, key=lambda c: c.step)


def latest_resumable(run_dir: str | os.PathLike) -> CheckpointInfo | None:
    full = [c for c in list_checkpoints(run_dir) if c.has_state]
    return full[-1] if full else None


def sweep_temp_dirs(run_dir: str | os.PathLike) -> list[Path]:
    """Remove the remains of interrupted saves (``.tmp-*``); returns what was removed."""
    root = Path(run_dir) / CKPT_DIR
    removed = []
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".tmp-") or p.name.startswith(".del-"):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def _fsync_files(paths: list[Path]) -> None:
    for p in paths:
        with open(p, "rb") as f:
            os.fsync(f.fileno())


def fsync_tree(path: Path) -> None:
    _fsync_files([p for p in sorted(path.rglob("*")) if p.is_file()])
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- RNG


def rng_state() -> dict[str, Any]:
    """This process's RNG states: Python/NumPy as JSON-able values, torch as tensors."""
    np_state = np.random.get_state()
    py = random.getstate()
    return {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------- load (saving: saver.py)


def load_checkpoint(ckpt: CheckpointInfo, *, accelerator, model, optimizer, scheduler) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and RNG from ``ckpt``; returns its state.json. Nothing
    is unpickled (safetensors, JSON, ``weights_only`` loads, :mod:`ladder.train.safe_dcp`).
    Raises :class:`CheckpointDamaged` for a file that cannot be what was written: one the
    digests could not vouch for (written before them), or one that asks to run code."""
    from ladder.train.safe_dcp import UnsafeCheckpointError

    try:
        return _load(ckpt, accelerator, model, optimizer, scheduler)
    except UnsafeCheckpointError as e:
        raise CheckpointDamaged(f"its optimizer metadata {e}") from None
    except Exception as e:  # noqa: BLE001 - only where no digest says the bytes are as written
        if integrity.has_digests(ckpt.manifest.get("files") or {}):
            raise
        raise CheckpointDamaged(f"unreadable: {type(e).__name__}: {' '.join(str(e).split())[:300]}") from e


def _load(ckpt: CheckpointInfo, accelerator, model, optimizer, scheduler) -> dict[str, Any]:
    from safetensors.torch import load_file

    state_dir = ckpt.path / STATE
    state = json.loads((state_dir / "state.json").read_text())
    if state.get("world_size", 1) != accelerator.num_processes:
        accelerator.print(f"note: resuming a {state.get('world_size')}-process checkpoint with "
                          f"{accelerator.num_processes} processes (data order is unchanged)")
    weights = load_file(str(ckpt.path / "model.safetensors"), device="cpu")
    _loadmodel_state(accelerator, model, weights, ckpt.path)
    if (state_dir / OPTIMIZER_DIR).is_dir():
        load_optimizer_state(model, optimizer, state_dir / OPTIMIZER_DIR)
    else:  # a checkpoint written before optimizer states were saved by parameter name
        optimizer.load_state_dict(torch.load(state_dir / "optimizer.pt", weights_only=True,
                                             map_location="cpu"))
    scheduler.load_state_dict(torch.load(state_dir / "scheduler.pt", weights_only=True))
    rank = accelerator.process_index
    rt = state_dir / f"rng-rank{rank}.pt"
    if rt.exists():
        rng = torch.load(rt, weights_only=True)
        rng.update(json.loads((state_dir / f"rng-rank{rank}.json").read_text()))
        set_rng_state(rng)
    return state


def prune_checkpoints(run_dir: Path, keep_last: int, keep_eval_weights: bool) -> list[Path]:
    """Keep the last ``keep_last`` full states; older ones lose their training state (weights kept
    for evaluation-step checkpoints when ``keep_eval_weights``) or are removed. Returns removed
    paths. Each change is ordered so that a kill leaves a consistent directory. A checkpoint
    whose manifest says ``keep`` (a WSD branch point) is never pruned."""
    removed = []
    full = [c for c in list_checkpoints(run_dir) if c.has_state and not c.manifest.get("keep")]
    for c in full[:-keep_last] if keep_last else full:
        if keep_eval_weights and c.manifest.get("eval_step"):
            files = {k: v for k, v in (c.manifest.get("files") or {}).items()
                     if not k.startswith(STATE + os.sep)}
            write_manifest(c.path, {**c.manifest, "has_state": False, "files": files},
                           files=False)  # first say it, then delete the state
            shutil.rmtree(c.path / STATE, ignore_errors=True)
            removed.append(c.path / STATE)
        else:
            trash = c.path.parent / f".del-{c.path.name}"
            os.rename(c.path, trash)
            shutil.rmtree(trash, ignore_errors=True)
            removed.append(c.path)
    return removed


def _is_fsdp(accelerator) -> bool:
    from ladder.train.parallel import is_fsdp

    return is_fsdp(accelerator)


# ---------------------------------------------------------------------------- FSDP-aware states


def model_state(accelerator, model, fsdp: bool) -> dict[str, torch.Tensor]:
    """The full model state on the main process (FSDP: gathered to CPU; collective)."""
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        state = accelerator.get_state_dict(model)
    # torch.compile's wrapper prefixes every key; the saved model is the plain HF module.
    return {k.removeprefix("_orig_mod."): v for k, v in state.items()}


def _loadmodel_state(accelerator, model, weights: dict[str, torch.Tensor], where: Path) -> None:
    unwrapped = accelerator.unwrap_model(model)
    unwrapped = getattr(unwrapped, "_orig_mod", unwrapped)
    expected = set(unwrapped.state_dict())
    # A tied head is saved once; anything else missing is a real mismatch.
    missing = sorted(k for k in expected - set(weights) if not k.endswith("lm_head.weight"))
    unexpected = sorted(set(weights) - expected)
    if missing or unexpected:
        raise RuntimeError(f"{where}: checkpoint does not match the model "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    if _is_fsdp(accelerator):  # every process holds the full tensors: each keeps its shard
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(unwrapped, weights, options=StateDictOptions(full_state_dict=True, strict=False))
    else:
        unwrapped.load_state_dict(weights, strict=False)


def optimizer_state(model, optimizer) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return {"optimizer": get_optimizer_state_dict(getattr(model, "_orig_mod", model), optimizer)}


_SINGLE = "torch.distributed is disabled"  # DCP's note when one process saves/loads: expected


def dcp_save(state: dict[str, Any], path: Path, process_group=None) -> None:
    """``process_group``: a background writer's own group, so that its collectives never
    interleave with the training step's on the default group."""
    import warnings

    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SINGLE)
        dcp.save(state, checkpoint_id=str(path), process_group=process_group)


def load_optimizer_state(model, optimizer, path: Path) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    from ladder.train.safe_dcp import SafeFileSystemReader, SafeLoadPlanner, load_metadata

    load_metadata((path / ".metadata").read_bytes())  # refused here: DCP would turn the error into text
    module = getattr(model, "_orig_mod", model)
    state = optimizer_state(module, optimizer)
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SINGLE)
        dcp.load(state, storage_reader=SafeFileSystemReader(path), planner=SafeLoadPlanner())
    set_optimizer_state_dict(module, optimizer, state["optimizer"])


# ---------------------------------------------------------------------------- verification


DAMAGED_PREFIX = "damaged-"  # a checkpoint found damaged is kept under this name, never resumed


class CheckpointDamaged(RuntimeError):
    """A checkpoint whose files are not the ones written (or not safe to read)."""


def write_manifest(path: Path, manifest: dict[str, Any], files: bool = True) -> None:
    """Write ``checkpoint.json`` last: with ``files``, the size and digest of every other file
    (read back from the page cache while a second thread flushes them to disk, so the digests
    cost what hashing exceeds the flush; their modes set from the umask, as every other file of
    a run directory), and the manifest's own digest, so a flipped byte anywhere is found."""
    if files:
        mode = file_mode()
        paths = [p for p in sorted(path.rglob("*")) if p.is_file() and p.name != MANIFEST]
        for p in paths:
            os.chmod(p, mode)  # safetensors creates its file 0600 whatever the umask
        with ThreadPoolExecutor(1) as pool:
            flushed = pool.submit(_fsync_files, paths)
            manifest = {**manifest, "files": integrity.record_tree(path, skip=[MANIFEST])}
            flushed.result()
    atomic_write_text(path / MANIFEST, json.dumps(integrity.seal(manifest), indent=2))


def _safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file is not whole (its header says how long its data is), or None."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if not 0 < n <= size - 8:
                return f"{path.name} is truncated ({size} bytes)"
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        return f"{path.name} is unreadable ({e})"
    if size != 8 + n + end:
        return f"{path.name} is {size} bytes, its header needs {8 + n + end}"
    return None


def checkpoint_problem(ckpt: CheckpointInfo) -> str | None:
    """What is wrong with a checkpoint whose manifest says it is complete, or None: the
    manifest's own digest, then every file's size and digest. A checkpoint written before
    digests gets the cheaper checks it was written for: sizes, safetensors headers, the zip
    directory of torch files."""
    m = ckpt.manifest
    problem = integrity.seal_problem(m, MANIFEST)
    if problem:
        return problem
    records = m.get("files") or {}
    if not isinstance(records, dict):
        return f"{MANIFEST} has no readable list of files"
    problem = integrity.files_problem(ckpt.path, records)
    if problem or integrity.has_digests(records):
        return problem
    for p in ckpt.path.glob("*.safetensors"):
        problem = _safetensors_problem(p)
        if problem:
            return problem
    if ckpt.has_state:
        for p in (ckpt.path / STATE).glob("*.pt"):
            try:
                with zipfile.ZipFile(p):  # torch.save's format; a cut file has no directory
                    pass
            except (OSError, zipfile.BadZipFile) as e:
                return f"{STATE}/{p.name} is unreadable ({e})"
    return None


def set_aside(ckpt_path: Path, problem: str, report=print) -> Path:
    """Rename a damaged checkpoint ``damaged-stepNNNNNNN`` (kept for inspection, never resumed)."""
    dest = ckpt_path.with_name(DAMAGED_PREFIX + ckpt_path.name)
    if dest.exists():
        shutil.rmtree(dest, ignore_errors=True)
    os.rename(ckpt_path, dest)
    report(f"checkpoint {ckpt_path.name} is damaged ({problem}); kept as {dest.name}, "
           f"resuming from the previous intact one")
    return dest


def _unreadable_manifests(run_dir: str | os.PathLike) -> list[Path]:
    """Checkpoint directories whose manifest exists but cannot be read: damaged, not unfinished."""
    root = Path(run_dir) / CKPT_DIR
    listed = {c.path for c in list_checkpoints(run_dir)}
    return sorted(p for p in root.iterdir() if _NAME.match(p.name) and (p / MANIFEST).is_file()
                  and p not in listed) if root.is_dir() else []


def latest_intact(run_dir: str | os.PathLike, report=print) -> CheckpointInfo | None:
    """The newest resumable checkpoint that passes :func:`checkpoint_problem`. Damaged newer ones
    are set aside (:func:`set_aside`) and reported. Main process only, before the others list
    the checkpoints."""
    for p in _unreadable_manifests(run_dir):
        set_aside(p, f"{MANIFEST} is unreadable", report)
    for c in reversed([c for c in list_checkpoints(run_dir) if c.has_state]):
        problem = checkpoint_problem(c)
        if problem is None:
            return c
        set_aside(c.path, problem, report)
    return None
