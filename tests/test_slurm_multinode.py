"""A 2-node x 1-process rung through the real `ladder sweep --backend slurm` path, on a two-node
SLURM cluster whose nodes are network namespaces (tests/slurm_multinode.py): sbatch -> srun on
both nodes -> `accelerate launch --machine_rank $SLURM_NODEID` -> one gloo process group across
the namespaces, although each node's hostname resolves to an interface that reaches no other
node (the job gives gloo the interface that carries MASTER_ADDR). It must end on the validation
losses of a 1-node x 2-process rung of the same recipe (submitted alongside, on the same cluster). `pytest -m slurm`; timing in docs/slurm.md."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from analysis.runlog import read_run
from ladder.sweep.rundir import run_state
from tests.slurm_multinode import IFNAME, NODES, namespace_inode, two_node_cluster_fixture

pytestmark = [pytest.mark.slurm, pytest.mark.slow]  # ~2 min (docs/slurm.md)
ROOT = Path(__file__).resolve().parents[1]
VAL = "eval/pystdlib-validation/CrossEntropyLoss"
RUNG = "tiny-43k-0.15xC"
RECIPE = {
    "name": "two-node",
    "model": {"sizes": ["tiny-43k"], "tokenizer_vocab_size": 300},
    "data": {"source": "pystdlib", "max_bytes": 300_000, "validation_tokens": 2048},
    "multipliers": [0.15],
    "train": {"seq_len": 32, "batch_tokens": 512, "micro_batch_size": 8, "cpu_threads": 1},
    "evaluation": {"count": 4, "early": 0, "batch_size": 16},
    "tracking": {"log_interval": 2},
    # Each node's hostname resolves to its second interface, which reaches no other node; nothing
    # here names the right one: the job derives it from the route to MASTER_ADDR.
    "slurm": {"cpus_per_task": 1, "time": "00:20:00", "max_retries": 0},
}

two_node_cluster = pytest.fixture(scope="module")(two_node_cluster_fixture)


def _rank_processes(run_dir: Path) -> dict[int, dict]:
    """The trainer processes of ``run_dir`` (the workers torchrun started: they carry RANK),
    with their network namespace and the rendezvous they were given."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if str(run_dir).encode() not in argv or b"accelerate.commands.launch" in argv:
                continue
            env = dict(kv.split(b"=", 1) for kv in Path(f"/proc/{pid}/environ").read_bytes()
                       .split(b"\0") if b"=" in kv)
            if b"RANK" not in env:
                continue
            found[int(env[b"RANK"])] = {
                "net_ns": os.stat(f"/proc/{pid}/ns/net").st_ino,
                "world_size": int(env[b"WORLD_SIZE"]), "machine_rank": int(env[b"GROUP_RANK"]),
                "master": (env[b"MASTER_ADDR"].decode(), env[b"MASTER_PORT"].decode())}
        except (OSError, KeyError, ValueError):
            continue  # gone meanwhile, or not a worker
    return found


def _logs(sweep: Path) -> str:
    return "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-3000:]}"
                     for p in sorted((sweep / "slurm" / "logs").glob("*.log")))


def test_two_node_rung_joins_one_process_group_and_matches_one_node(tmp_path, two_node_cluster):
    recipe = tmp_path / "two-node.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    env = {**two_node_cluster.env, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline",
           "LADDER_CACHE": str(tmp_path / "cache")}
    sweeps = {"two-nodes": ["slurm.nodes=2", "slurm.processes_per_node=1"],
              "one-node": ["slurm.nodes=1", "slurm.processes_per_node=2"]}
    submits = [subprocess.Popen([sys.executable, "-m", "ladder", "sweep", str(recipe), *overrides,
                                 "--backend", "slurm", "--no-predict", "--out", str(tmp_path / name)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env, cwd=tmp_path) for name, overrides in sweeps.items()]
    for p in submits:  # side by side: the two jobs fit the cluster at once
        out = p.communicate(timeout=300)[0]
        assert p.returncode == 0, out
    two, one = (tmp_path / name / "runs" / RUNG for name in sweeps)

    # While it trains: each rank is a worker in its own node's namespace, in one world of two.
    ranks: dict[int, dict] = {}
    deadline = time.monotonic() + 600
    while len(ranks) < 2 and not run_state(two).done and time.monotonic() < deadline:
        ranks.update(_rank_processes(two))
        time.sleep(0.2)
    assert sorted(ranks) == [0, 1], f"saw ranks {ranks}\n{_logs(tmp_path / 'two-nodes')}"
    node_ns = {namespace_inode(ns): node for node, (ns, _) in NODES.items()}
    assert {r: node_ns.get(p["net_ns"]) for r, p in ranks.items()} == {0: "n0", 1: "n1"}
    assert [(p["world_size"], p["machine_rank"]) for _, p in sorted(ranks.items())] == [(2, 0), (2, 1)]
    n0_addr = NODES["n0"][1]  # the first node's NodeAddr: its name resolves nowhere here
    assert ranks[0]["master"] == ranks[1]["master"] and ranks[0]["master"][0] == n0_addr

    deadline = time.monotonic() + 900
    while not (run_state(two).done and run_state(one).done) and time.monotonic() < deadline:
        if not two_node_cluster.squeue_ids():
            break  # both jobs ended; done or not, the asserts below say which
        time.sleep(1)
    two_node_cluster.wait_jobs_gone(120)
    for name, run_dir in zip(sweeps, (two, one)):
        assert run_state(run_dir).done, f"{name} did not finish\n{_logs(tmp_path / name)}"
        assert json.loads((run_dir / "run.json").read_text())["num_processes"] == 2
        assert "rung exited with 0 (outcome: completed)" in _logs(tmp_path / name)
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "two-nodes" / "slurm" / "logs").glob("*.log"))
    for node_id in (0, 1):  # each node derived the interface on its own route to the master
        assert f"[ladder] node {node_id}: GLOO_SOCKET_IFNAME={IFNAME} NCCL_SOCKET_IFNAME={IFNAME}" in logs
    # SLURM ran the 2-node step on both slurmds (their own logs say so)
    job = json.loads((tmp_path / "two-nodes" / "slurm" / "jobs.json").read_text())
    job_id = job["submissions"][-1]["arrays"][0]["job_id"]
    for node in NODES:
        log = (two_node_cluster.root / "log" / f"slurmd-{node}.log").read_text()
        assert f"launch task StepId={job_id}.0 " in log, node

    a, b = read_run(two), read_run(one)
    assert list(a.evals["step"]) == list(b.evals["step"]) and len(a.evals) >= 4
    assert max(abs(a.evals[VAL] - b.evals[VAL])) < 1e-5
