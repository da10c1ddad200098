"""A sweep: a recipe's whole ladder, run locally or on SLURM, then its targets predicted.

    recipe --plan--> runs (stable names) --backend--> run directories --predict--> predictions/

The sweep directory is the unit a user keeps:
  sweep.json      the manifest: recipe hash, rungs, targets (refuses a different recipe)
  recipe.yaml     the resolved recipe every rung is started with (edits to the original later
                  cannot change a half-finished ladder)
  runs/<name>/    one run directory per rung and per trained target (run.json, metrics.jsonl,
                  checkpoints)
  logs/<name>.log the output of each local rung;  slurm/  scripts, job ids, SLURM logs
  predictions/    predictions.json, report.md, plots, calibration.json (written when every
                  rung is done, as one set)
  predictions-partial/  the same from the rungs finished so far (`ladder status --predict`),
                  a set of its own

Rungs are started through the same entry point as ``ladder train``, in their own process, so a
rung that crashes or is killed costs only that rung, and a rerun resumes it from its checkpoint.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from analysis.files import atomic_write_text
from ladder.recipe import Recipe, load_recipe
from ladder.restarts import differences, science_hash
from ladder.runplan import RunPlan
from ladder.strict_yaml import StrictYAMLError, load_yaml_file
from ladder.sweep.launcher import Job, Resources
from ladder.sweep.plan import SweepError, SweepPlan, plan_sweep

MANIFEST = "sweep.json"
FROZEN_RECIPE = "recipe.yaml"
MANIFEST_FORMAT = "ladder-sweep/2"  # /1 recorded a hash of other sections as recipe_hash


@dataclass
class Sweep:
    """A planned sweep bound to its directory."""

    dir: Path
    plan: SweepPlan

    @property
    def recipe(self) -> Recipe:
        return self.plan.recipe

    def run_dir(self, plan: RunPlan) -> Path:
        return self.dir / "runs" / plan.name

    @property
    def predictions_dir(self) -> Path:
        """The final prediction set, written when every rung is done."""
        return self.dir / "predictions"

    @property
    def partial_predictions_dir(self) -> Path:
        """Predictions from the rungs finished so far (`ladder status --predict`)."""
        return self.dir / "predictions-partial"

    def rung_job(self, plan: RunPlan, resources: Resources = Resources()) -> Job:
        from ladder.sweep.branches import BranchPoint

        argv = [sys.executable, "-m", "ladder", "train", str(self.dir / FROZEN_RECIPE),
                "--size", plan.size, "--seed", str(plan.seed), "--out", str(self.run_dir(plan))]
        argv[7:7] = ["--stable"] if plan.role == "stable" else ["--multiplier", repr(plan.multiplier)]
        waits = None
        if plan.role == "branch":  # starts from its stable run's checkpoint at the branch point
            parent = self.dir / "runs" / str(plan.parent)
            argv += ["--branch-from", str(parent)]
            waits = BranchPoint(str(plan.parent), parent, plan.decay_start)
        return Job(plan.name, tuple(argv), self.run_dir(plan), resources, waits)

    def jobs(self, resources_for=lambda size: Resources()) -> list[Job]:
        return [self.rung_job(r, resources_for(r.size)) for _, r in self.plan.all_runs()]

    def predict_job(self, resources: Resources = Resources()) -> Job:
        argv = [sys.executable, "-m", "ladder", "sweep", str(self.dir / FROZEN_RECIPE),
                "--out", str(self.dir), "--predict-only"]
        return Job("predict", tuple(argv), None, resources)


def open_sweep(recipe: Recipe, sweep_dir: str | os.PathLike, write: bool = True,
               backend: str | None = None) -> Sweep:
    """Create the sweep directory, or reopen it if it was made from the same recipe. A sweep
    directory made from a different recipe is refused: mixing runs corrupts the fits.
    ``write=False`` only reads (`ladder status`: works on a read-only sweep, changes nothing).
    ``backend`` (the one launching it) is recorded; otherwise the recorded one is kept."""
    d = Path(sweep_dir).resolve()
    plan = plan_sweep(recipe)
    h = science_hash(recipe)
    manifest = d / MANIFEST
    old: dict = {}
    if manifest.exists():
        try:
            old = json.loads(manifest.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SweepError(f"{manifest}: invalid JSON ({e})") from None
        if not isinstance(old, dict):
            raise SweepError(f"{manifest}: not a sweep manifest (a JSON object was expected)")
        diffs = _ladder_differences(d, old, recipe, h)
        if diffs:
            shown = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, a, b in diffs[:4])
            more = f" (and {len(diffs) - 4} more)" if len(diffs) > 4 else ""
            raise SweepError(
                f"{d} holds a sweep of a different recipe ('{old.get('recipe_name')}'; {shown}{more}; "
                f"this recipe '{recipe.name}' from {recipe.source}). Refusing to mix runs: use "
                f"another --out directory.")
    sweep = Sweep(d, plan)
    if not write:
        return sweep
    d.mkdir(parents=True, exist_ok=True)
    # The frozen recipe is the source of truth for every rung; rewritten only if operational
    # keys changed (ladder/restarts.py).
    atomic_write_text(d / FROZEN_RECIPE, yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    atomic_write_text(manifest, json.dumps({
        "format": MANIFEST_FORMAT,
        "recipe_name": recipe.name,
        "recipe_source": str(recipe.source),
        "science_hash": h,  # of the keys that define the ladder's runs (ladder/restarts.py)
        "backend": backend or old.get("backend"),
        "runs": [{"name": r.name, "role": role, "size": r.size, "multiplier": r.multiplier,
                  "seed": r.seed, "n_params": r.n_params, "target_tokens": r.target_tokens,
                  "run_dir": str(sweep.run_dir(r)),
                  **({"parent": r.parent, "branch_step": r.decay_start} if r.parent else {})}
                 for role, r in plan.all_runs()],
        "targets": [{"name": t.name, "n": t.n, "d": t.d, "size": t.size,
                     "run": t.run.name if t.run else None} for t in plan.targets],
    }, indent=2) + "\n")
    return sweep


def _ladder_differences(d: Path, manifest: dict, recipe: Recipe, h: str) -> list:
    """The keys in which ``recipe`` defines other runs than the sweep in ``d``: compared with
    its frozen recipe, or, where that copy is gone, by the manifest's science hash."""
    try:
        frozen = load_yaml_file(d / FROZEN_RECIPE)
    except (OSError, StrictYAMLError):
        frozen = None
    if isinstance(frozen, dict):
        return differences(frozen, recipe.to_dict(), "ladder")
    if manifest.get("science_hash") == h:
        return []
    return [(f"{FROZEN_RECIPE} (missing or unreadable; hashes)", manifest.get("science_hash"), h)]


def load_sweep(sweep_dir: str | os.PathLike) -> Sweep:
    d = Path(sweep_dir)
    if not (d / MANIFEST).exists():
        raise SweepError(f"{d}: not a sweep directory (no {MANIFEST})")
    return open_sweep(load_recipe(d / FROZEN_RECIPE), d, write=False)
