"""A decay branch's start: its run directory seeded from its stable parent's checkpoint at the
branch point, then trained through the ordinary resume path.

The branch does not load its parent's state itself. It hard-links (or, across file systems,
copies) the parent's verified checkpoint directory into its own ``checkpoints/`` and the
parent's evaluation rows up to the branch point into its own ``metrics.jsonl``; the trainer then
resumes from that checkpoint exactly as it resumes any run (the same verification, the same
loader). Its log therefore reads like a WSD run of its length trained from scratch, which is
what it is, bit for bit. A checkpoint directory is never modified in place once written (a
new manifest replaces the old by rename), so sharing its files with the parent is safe.

Outcomes when the branch point is missing: the parent is still on its way (``waiting``: the
scheduler starts the branch again later) or has failed for good (``parent_failed``: never
retried, the parent's own status says why).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from analysis.files import atomic_write_text
from analysis.rowlog import format_row
from analysis.runlog import METRICS_JSONL, RUN_JSON, STEP, RunMeta, read_metrics_jsonl
from ladder.restarts import differences
from ladder.runplan import RunPlan
from ladder.train import checkpoint as ckpt
from ladder.train.status import stopped_for_good

# run.json keys a branch must share with its parent: the same model, data, batch and LR
SHARED_KEYS = ("size", "seed", "n_params", "batch_tokens", "lr", "corpus_hash", "tokenizer_hash",
               "warmup_steps")
# Recipe keys the stable phase does not depend on: branches decaying differently (another shape,
# floor or length) may start from one stable run, at a branch point it kept (checked apart).
DECAY_KEYS = ("train.decay_shape", "train.final_lr_fraction", "train.decay_fraction")


class BranchError(ValueError):
    """This branch cannot start from that parent (not its stable run); bad input."""


class ParentNotReady(RuntimeError):
    """The parent has not saved the branch point yet: start the branch again later."""


class ParentFailed(RuntimeError):
    """The parent stopped for good before its branch point: the branch cannot start."""


def branch_point(parent_dir: str | os.PathLike, step: int) -> ckpt.CheckpointInfo | None:
    """The parent's complete, resumable checkpoint at ``step``, or None."""
    return next((c for c in ckpt.list_checkpoints(parent_dir) if c.step == step and c.has_state),
                None)


def seed_branch(run_dir: Path, parent_dir: Path, plan: RunPlan, meta: RunMeta, report=print) -> bool:
    """Give a new branch its parent's state at the branch point (main process, with the run
    directory locked). Returns False when the branch has a checkpoint of its own already."""
    if ckpt.latest_resumable(run_dir) is not None:
        return False
    step = plan.decay_start
    check_parent(parent_dir, plan, meta)
    info = branch_point(parent_dir, step)
    if info is None:
        failed = stopped_for_good(parent_dir)
        if failed:
            raise ParentFailed(f"parent {parent_dir} stopped before step {step} ({failed}); "
                               f"the branch {plan.name} cannot start")
        raise ParentNotReady(f"parent {parent_dir} has no checkpoint at step {step} yet; "
                             f"start the branch {plan.name} again when it has")
    problem = ckpt.checkpoint_problem(info)
    if problem:
        raise BranchError(f"{info.path}: the branch point is damaged ({problem}); rerun the "
                          f"parent to write it again")
    rows = [r for r in read_metrics_jsonl(parent_dir / METRICS_JSONL) if int(r[STEP]) <= step]
    atomic_write_text(run_dir / METRICS_JSONL, "".join(format_row(r) for r in rows))
    how = _link_checkpoint(info, run_dir, parent_dir)
    report(f"branch {plan.name}: starting from {plan.parent} at step {step} ({how} from "
           f"{info.path})")
    return True


def check_parent(parent_dir: Path, plan: RunPlan, meta: RunMeta) -> None:
    """Refuse a parent that is not this branch's stable run: another size, seed, data, LR or
    recipe, or a stable run that keeps no checkpoint at this branch point."""
    p = Path(parent_dir) / RUN_JSON
    try:
        parent = json.loads(p.read_text())
    except FileNotFoundError:
        raise ParentNotReady(f"parent {parent_dir} has not started yet (no {RUN_JSON})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BranchError(f"{p}: unreadable ({e})") from None
    mine = meta.to_json()
    diffs = [(k, parent.get(k), mine.get(k)) for k in SHARED_KEYS if parent.get(k) != mine.get(k)]
    diffs += [d for d in differences(parent.get("recipe") or {}, mine.get("recipe") or {}, "run")
              if d[0] not in DECAY_KEYS]
    if parent.get("role") != "stable":
        diffs.insert(0, ("role", parent.get("role"), "stable"))
    elif plan.decay_start not in (parent.get("branch_steps") or []):
        diffs.insert(0, ("branch_steps", parent.get("branch_steps"), plan.decay_start))
    if diffs:
        shown = "; ".join(f"{k}: {a!r} there, {b!r} for this branch" for k, a, b in diffs[:4])
        raise BranchError(f"{parent_dir} is not the stable run of branch {plan.name} ({shown})")


def _link_checkpoint(info: ckpt.CheckpointInfo, run_dir: Path, parent_dir: Path) -> str:
    """Hard-link (else copy) the parent's checkpoint into ``run_dir``, renamed into place last.
    The copy's manifest says where it came from and drops the parent's retention mark (the
    branch prunes it like any of its checkpoints)."""
    root = Path(run_dir) / ckpt.CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{info.path.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    linked = []

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
            linked.append(True)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(info.path, tmp, copy_function=link_or_copy)
    manifest = {k: v for k, v in info.manifest.items() if k != "keep"}
    manifest["branched_from"] = {"run": Path(parent_dir).name, "dir": str(Path(parent_dir).resolve()),
                                 "step": info.step}
    # the link to the parent's manifest is replaced by rename (sealed anew), never written through
    ckpt.write_manifest(tmp, manifest, files=False)
    ckpt.fsync_tree(tmp)
    os.rename(tmp, root / info.path.name)
    return "linked" if linked else "copied"
