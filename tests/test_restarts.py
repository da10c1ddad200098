"""One rule for which recipe keys may change between restarts, shared by the sweep directory's
check and the run directory's binding (ladder/restarts.py)."""

from pathlib import Path

import pytest
import yaml

from ladder.recipe import from_dict, load_recipe
from ladder.restarts import differences, key_kind
from ladder.sweep.plan import SweepError
from ladder.sweep.sweepdir import open_sweep

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "recipes" / "tiny-cpu.yaml"

# The five keys the sweep refused while the run binding allowed them, and one of each kind.
DRIFTED = ["train.compile=true", "train.cpu_threads=2", "evaluation.task_batch_size=4",
           "checkpoint.keep_last=5", "checkpoint.async_save=true"]


@pytest.mark.parametrize("override", DRIFTED + ["evaluation.batch_size=8", "tracking.wandb=true",
                                                "sweep.parallel=1", "slurm.partition=gpu"])
def test_operational_keys_may_change_for_runs_and_sweeps_alike(override, tmp_path):
    old, new = load_recipe(TINY), load_recipe(TINY, [override])
    key = override.split("=")[0]
    assert key_kind(key) == "operational"
    assert differences(old.to_dict(), new.to_dict(), "run") == []
    assert differences(old.to_dict(), new.to_dict(), "ladder") == []
    open_sweep(old, tmp_path / "s")
    open_sweep(new, tmp_path / "s")  # the demo recipe's own advice (train.compile=true) works


def test_science_keys_are_refused_by_both_and_ladder_keys_by_the_sweep_only(tmp_path):
    base = load_recipe(TINY)
    lr = load_recipe(TINY, ["train.lr=0.003"])
    assert differences(base.to_dict(), lr.to_dict(), "run") == [("train.lr", None, 0.003)]
    assert differences(base.to_dict(), lr.to_dict(), "ladder") == [("train.lr", None, 0.003)]
    mults = load_recipe(TINY, ["multipliers=[1, 2]"])
    assert key_kind("multipliers") == "ladder"
    assert differences(base.to_dict(), mults.to_dict(), "run") == []
    assert [k for k, _, _ in differences(base.to_dict(), mults.to_dict(), "ladder")] == ["multipliers"]
    open_sweep(base, tmp_path / "s")
    for other, key in ((lr, "train.lr"), (mults, "multipliers")):
        with pytest.raises(SweepError, match=rf"different recipe.*{key}.*Refusing to mix runs"):
            open_sweep(other, tmp_path / "s")


def test_a_key_an_older_version_did_not_record_counts_as_its_default(tmp_path):
    """Upgrading ladder adds keys with defaults: a sweep or run recorded before them reopens."""
    d = load_recipe(TINY).to_dict()
    old = {**d, "train": {k: v for k, v in d["train"].items() if k != "decay_fraction"}}
    assert differences(old, d, "run") == [] and differences(old, d, "ladder") == []
    changed = {**d, "train": {**d["train"], "decay_fraction": 0.5}}
    assert differences(old, changed, "run") == [("train.decay_fraction", 0.2, 0.5)]
    open_sweep(load_recipe(TINY), tmp_path / "s")
    frozen = tmp_path / "s" / "recipe.yaml"
    frozen.write_text(yaml.safe_dump(old))
    open_sweep(from_dict(d, str(TINY)), tmp_path / "s")
