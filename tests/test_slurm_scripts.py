"""The SLURM backend without a cluster: rendered sbatch scripts (arrays, resources, requeue and
signal lines, exact argv quoting, multi-node accelerate launch), run_state, status mapping.
The same scripts run on a real cluster in test_slurm_cluster.py (-m slurm)."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.runlog import RunLogWriter, RunMeta
from ladder.sweep.launcher import (CHECKPOINT_EXIT_CODE, Job, JobSpecError, Resources,
                             accelerate_launch_argv)
from ladder.sweep.slurm import SlurmSweep, task_ids, final_sbatch_options
from ladder.sweep.slurm_status import DONE, FAILED, QUEUED, REQUEUED, RUNNING, _combine
from ladder.sweep.rundir import run_state

ODD_ARGV = ["--note", "it's \"quoted\" $HOME `whoami` $(id) \\ back", "", "-leading-dash",
            "multi\nline", "tab\there", "ünïcødé ✓", "*", "a;b|c&d", "!bang", "{x,y}"]


def _job(tmp: Path, name: str, res: Resources = Resources(), argv=None) -> Job:
    argv = argv or [sys.executable, "-m", "ladder", "train", "r.yaml", "--size", name]
    return Job(name, argv, tmp / "runs" / name, res)


def _sbatch(script: str) -> list[str]:
    return re.findall(r"^#SBATCH (.*)$", script, re.M)


def _bash_argv(snippet: str, env: dict | None = None) -> list[str]:
    """Run a bash snippet that ends by printing an array NUL-separated; return the array."""
    r = subprocess.run(["bash", "-c", snippet], capture_output=True, env={**os.environ, **(env or {})})
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode().split("\0")[:-1]


def test_rungs_grouped_into_arrays_by_resources(tmp_path):
    a, b = Resources(gpus_per_node=1, time="02:00:00"), Resources(nodes=2, gpus_per_node=8,
                                                                  time="1-00:00:00")
    rungs = [_job(tmp_path, "190M-1xC", a), _job(tmp_path, "1B-1xC", b),
             _job(tmp_path, "190M-2xC", a), _job(tmp_path, "370M-1xC", a)]
    sweep = SlurmSweep(tmp_path / "sweep", rungs, max_parallel=3, signal_seconds=240)
    assert [[j.name for j in g.rungs] for g in sweep.groups] == [
        ["190M-1xC", "190M-2xC", "370M-1xC"], ["1B-1xC"]]
    s0, s1 = (sweep.render_array(g) for g in sweep.groups)
    assert "--array=0-2%3" in _sbatch(s0) and "--array=0-0%3" in _sbatch(s1)
    for s in (s0, s1):
        opts = _sbatch(s)
        assert "--requeue" in opts and "--signal=B:USR1@240" in opts
        assert "--open-mode=append" in opts and "--ntasks-per-node=1" in opts
        assert f"CHECKPOINT_EXIT={CHECKPOINT_EXIT_CODE}" in s
    assert {"--nodes=1", "--gpus-per-node=1", "--time=02:00:00"} <= set(_sbatch(s0))
    assert {"--nodes=2", "--gpus-per-node=8", "--time=1-00:00:00"} <= set(_sbatch(s1))
    out = [o for o in _sbatch(s0) if o.startswith("--output=")]
    assert out == [f"--output={tmp_path / 'sweep' / 'slurm' / 'logs' / 'array-0_%a.log'}"]
    # each task's rung, in order
    assert re.findall(r"^    RUNG=(.*)$", s0, re.M) == ["190M-1xC", "190M-2xC", "370M-1xC"]


def test_all_resource_fields_and_extra_options(tmp_path):
    res = Resources(nodes=1, gpus_per_node=4, cpus_per_task=32, mem="256G", time="12:00:00",
                    partition="gpu-a100", account="lm-team", qos="high",
                    extra=("--constraint=a100&ib", "--exclusive"))
    sweep = SlurmSweep(tmp_path / "s", [_job(tmp_path, "760M-1xC", res)])
    opts = _sbatch(sweep.render_array(sweep.groups[0]))
    assert {"--cpus-per-task=32", "--mem=256G", "--partition=gpu-a100", "--account=lm-team",
            "--qos=high", "--constraint=a100&ib", "--exclusive", "--gpus-per-node=4"} <= set(opts)


def test_scripts_are_valid_bash_and_written_executable(tmp_path):
    rungs = [_job(tmp_path, "a"), _job(tmp_path, "b", Resources(nodes=2, gpus_per_node=8))]
    final = Job("predict", [sys.executable, "-m", "ladder", "predict", str(tmp_path / "runs")])
    paths = SlurmSweep(tmp_path / "sweep", rungs, final, setup=["module load cuda/12.4"]).write()
    assert sorted(paths) == ["array-0", "array-1", "final"]
    for p in paths.values():
        assert p.stat().st_mode & stat.S_IXUSR
        assert subprocess.run(["bash", "-n", str(p)], capture_output=True).returncode == 0
        assert "\nmodule load cuda/12.4\n" in p.read_text()
    assert "--dependency" not in paths["final"].read_text()  # added at submission (ids)
    assert (tmp_path / "runs" / "a").is_dir()


def test_odd_argv_round_trips_exactly_through_the_script(tmp_path):
    """What bash builds from the rendered case table is the argv we were given, byte for byte."""
    argv = [sys.executable, "stand in.py", *ODD_ARGV]
    run_dir = tmp_path / "dir with 'quote' and $dollar"
    jobs = [Job("odd", argv, run_dir), Job("plain", ["echo", "hi"], tmp_path / "p")]
    script = SlurmSweep(tmp_path / "sweep", jobs).render_array(
        SlurmSweep(tmp_path / "sweep", jobs).groups[0])
    case = script[script.index("case "):script.index("esac") + 4]
    for task, job in enumerate(jobs):
        got = _bash_argv(case + '\nprintf "%s\\0" "$RUNG" "$RUN_DIR" "${CMD[@]}"',
                         {"SLURM_ARRAY_TASK_ID": str(task)})
        assert got == [job.name, str(job.run_dir), *job.argv]


def test_multi_node_launch_passes_each_nodes_rank_to_accelerate(tmp_path):
    """The srun line starts `accelerate launch` once per node with that node's SLURM_NODEID;
    srun and the interpreter are replaced by recorders so the exact argv can be checked."""
    fake_python = tmp_path / "bin" / "python3"
    fake_python.parent.mkdir()
    fake_python.write_text('#!/bin/bash\nprintf "%s\\0" "$@"\n')
    fake_python.chmod(0o755)
    res = Resources(nodes=2, gpus_per_node=8)
    job = Job("1B-5xC", [str(fake_python), "-m", "ladder", "train", *ODD_ARGV], tmp_path / "r", res)
    script = SlurmSweep(tmp_path / "sweep", [job]).render_array(
        SlurmSweep(tmp_path / "sweep", [job]).groups[0])
    start = script.index("# accelerate from")
    launch = script[start:script.index(" &\n", start)]
    assert "srun --nodes=2 --ntasks-per-node=1" in launch
    snippet = ("srun() { while [[ $1 == --* ]]; do shift; done; SLURM_NODEID=1 \"$@\"; }\n"
               f"CMD=({' '.join(__import__('shlex').quote(a) for a in job.argv)})\n"
               "MASTER_ADDR=node-a; MASTER_PORT=23456\n" + launch)
    got = _bash_argv(snippet)
    expected = accelerate_launch_argv(job.argv, res, main_process_ip="node-a",
                                      main_process_port=23456, machine_rank=1)
    assert expected[:3] == [str(fake_python), "-m", "accelerate.commands.launch"]
    assert got == expected[1:]  # the recorder is argv[0]
    assert got[got.index("--num_processes") + 1] == "16"
    assert got[got.index("--num_machines") + 1] == "2"


FAKE_SCONTROL = r"""#!/bin/bash
# scontrol as a 2-node job sees it: nodes named gpu-[a-b]; node gpu-a's NodeAddr is $ADDR
case "$*" in
  "show hostnames gpu-[a-b]") printf 'gpu-a\ngpu-b\n';;
  "-o show node gpu-a") [ -n "$ADDR" ] || exit 1
    echo "NodeName=gpu-a Arch=x86_64 CoresPerSocket=8 NodeAddr=$ADDR NodeHostName=gpu-a Version=22.05.8";;
  *) echo "unexpected: scontrol $*" >&2; exit 3;;
esac
"""


@pytest.mark.parametrize("addr, expected", [("10.1.2.3", "10.1.2.3"), ("", "gpu-a")])
def test_master_address_is_the_first_nodes_node_addr(tmp_path, addr, expected):
    """Every node of a multi-node rung meets at the first node's NodeAddr (SLURM reaches nodes
    there; their names need not resolve: a two-node rung hung on it in
    test_slurm_multinode.py); the node's name only when scontrol gives no address."""
    sweep = SlurmSweep(tmp_path / "s", [_job(tmp_path, "1B-1xC", Resources(nodes=2, gpus_per_node=8))])
    script = sweep.render_array(sweep.groups[0])
    block = script[script.index("# Rendezvous"):script.index("export MASTER_ADDR MASTER_PORT")]
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "scontrol").write_text(FAKE_SCONTROL)
    (tmp_path / "bin" / "scontrol").chmod(0o755)
    got = _bash_argv("set -uo pipefail\n" + block + 'printf "%s\\0" "$MASTER_ADDR" "$MASTER_PORT"',
                     {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "ADDR": addr,
                      "SLURM_JOB_NODELIST": "gpu-[a-b]", "SLURM_JOB_ID": "123456"})
    assert got == [expected, str(20000 + 123456 % 20000)]


def test_single_process_rung_is_plain_srun(tmp_path):
    sweep = SlurmSweep(tmp_path / "s", [_job(tmp_path, "a", Resources(gpus_per_node=1))])
    script = sweep.render_array(sweep.groups[0])
    assert 'srun --nodes=1 --ntasks=1 "${CMD[@]}" &' in script
    assert "accelerate" not in script


def test_final_job_depends_on_every_array(tmp_path):
    assert final_sbatch_options(["12", "15"]) == ["--dependency=afterok:12:15",
                                                  "--kill-on-invalid-dep=yes"]
    assert final_sbatch_options([]) == []


def test_paths_with_spaces_are_quoted_in_sbatch_lines(tmp_path):
    sweep = SlurmSweep(tmp_path / "my sweep", [_job(tmp_path, "a")])
    opts = _sbatch(sweep.render_array(sweep.groups[0]))
    assert f'--output="{tmp_path}/my sweep/slurm/logs/array-0_%a.log"' in opts


@pytest.mark.parametrize("bad, match", [
    (dict(nodes=0), "nodes must be an integer >= 1"),
    (dict(nodes=2, gpus_per_node=0), "multi-node rung needs gpus_per_node"),
    (dict(time="1 day"), "time must be a non-empty string without whitespace"),
    (dict(extra=("constraint=a100",)), "must be one sbatch option starting with '-'"),
])
def test_bad_resources_name_the_field(tmp_path, bad, match):
    with pytest.raises(JobSpecError, match=match):
        SlurmSweep(tmp_path / "s", [_job(tmp_path, "190M-1xC", Resources(**bad))])


def test_resources_from_recipe_mapping():
    r = Resources.from_dict({"nodes": 2, "gpus_per_node": 8, "time": "90",
                             "extra": ["--exclusive"]}, "slurm.sizes.1B")
    assert (r.nodes, r.gpus_per_node, r.time, r.extra) == (2, 8, "90", ("--exclusive",))
    import yaml
    with pytest.raises(JobSpecError, match="time must be a quoted string.*14400"):
        Resources.from_dict(yaml.safe_load("time: 4:00:00"), "slurm")
    with pytest.raises(JobSpecError, match=r"slurm.sizes.1B: unknown key\(s\) gpus"):
        Resources.from_dict({"gpus": 8}, "slurm.sizes.1B")
    with pytest.raises(JobSpecError, match="extra must be a list"):
        Resources.from_dict({"extra": "--exclusive"})


def test_bad_jobs_rejected(tmp_path):
    with pytest.raises(JobSpecError, match="duplicate rung names: a"):
        SlurmSweep(tmp_path / "s", [_job(tmp_path, "a"), _job(tmp_path, "a")])
    with pytest.raises(JobSpecError, match="job name 'a b'"):
        SlurmSweep(tmp_path / "s", [_job(tmp_path, "a b")])
    with pytest.raises(JobSpecError, match="run_dir is required"):
        SlurmSweep(tmp_path / "s", [Job("a", ["true"])])
    with pytest.raises(JobSpecError, match="argv must be a non-empty"):
        SlurmSweep(tmp_path / "s", [Job("a", [], tmp_path)])


def _write_run(run_dir: Path, tokens: list[int], target: int, batch: int = 100) -> None:
    w = RunLogWriter(run_dir)
    w.write_meta(RunMeta(name=run_dir.name, target_tokens=target, batch_tokens=batch))
    for i, t in enumerate(tokens, 1):
        w.append({"step": i, "tokens": t, "train/CrossEntropyLoss": 5.0 / i})


def test_run_state(tmp_path):
    assert run_state(tmp_path / "missing").state == "new"
    _write_run(tmp_path / "partial", [100, 200], target=1000)
    s = run_state(tmp_path / "partial")
    assert (s.state, s.tokens, s.target_tokens, s.loss, s.evals) == ("partial", 200, 1000, 2.5, 2)
    _write_run(tmp_path / "reached", [500, 960], target=1000)  # within half a batch (rounding)
    assert run_state(tmp_path / "reached").done
    _write_run(tmp_path / "marked", [100], target=1000)
    (tmp_path / "marked" / "DONE").touch()
    assert run_state(tmp_path / "marked").done
    # a write cut by a kill: the torn last line is ignored, the run is still readable
    with open(tmp_path / "partial" / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "tok')
    assert run_state(tmp_path / "partial").tokens == 200
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metrics.jsonl").write_text("not json\n{}\n")
    bad = run_state(tmp_path / "bad")
    assert bad.state == "new" and "line 1 is not valid JSON" in bad.note


def test_done_rungs_are_not_submitted_again(tmp_path):
    rungs = [_job(tmp_path, "a"), _job(tmp_path, "b")]
    _write_run(rungs[0].run_dir, [1000], target=1000)
    sweep = SlurmSweep(tmp_path / "s", rungs)
    assert [j.name for g in sweep.groups for j in g.rungs] == ["b"]
    assert [j.name for g in SlurmSweep(tmp_path / "s", rungs, skip_done=False).groups
            for j in g.rungs] == ["a", "b"]


def test_state_mapping():
    new, done = run_state(None), run_state(None)
    done.state = "done"
    assert _combine(new, "PENDING", 0, True) == QUEUED
    assert _combine(new, "PENDING", 2, True) == REQUEUED
    assert _combine(new, "REQUEUED", 1, True) == REQUEUED
    assert _combine(new, "RUNNING", 0, True) == RUNNING
    assert _combine(done, "COMPLETED", 0, True) == DONE
    assert _combine(new, "COMPLETED", 0, True) == FAILED  # exited 0 but did not finish
    assert _combine(new, "TIMEOUT", 0, True) == FAILED
    assert _combine(new, None, 0, True) == FAILED  # forgotten by SLURM, unfinished
    assert _combine(done, None, 0, True) == DONE
    assert task_ids("3") == [3] and task_ids("2-5%2") == [2, 3, 4, 5]
    assert task_ids("0,4-8:2") == [0, 4, 6, 8]


def test_jobs_json_format_is_checked(tmp_path):
    from ladder.sweep.slurm import SlurmError, load_jobs
    (tmp_path / "slurm").mkdir()
    (tmp_path / "slurm" / "jobs.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(SlurmError, match="expected format 'ladder-slurm-jobs/1'"):
        load_jobs(tmp_path)


def test_recipe_slurm_block_merges_defaults_and_sizes():
    from ladder.sweep.slurm import SlurmConfig
    cfg = SlurmConfig.from_dict({
        "partition": "gpu", "account": "lm", "time": "04:00:00", "extra": ["--exclusive"],
        "max_retries": 1, "setup": ["source .venv/bin/activate"],
        "sizes": {"190M": {"gpus_per_node": 1, "time": "02:00:00"},
                  "1B": {"nodes": 2, "gpus_per_node": 8, "time": "1-00:00:00"}}},
        known_sizes=["190M", "370M", "1B"])
    assert cfg.resources("190M") == Resources(gpus_per_node=1, time="02:00:00", partition="gpu",
                                              account="lm", extra=("--exclusive",))
    assert (cfg.resources("1B").nodes, cfg.resources("1B").partition) == (2, "gpu")
    assert cfg.resources("370M") == cfg.defaults
    assert cfg.max_retries == 1 and cfg.setup == ("source .venv/bin/activate",)
    with pytest.raises(JobSpecError, match=r"slurm.sizes: unknown size\(s\) 3B"):
        SlurmConfig.from_dict({"sizes": {"3B": {"nodes": 1}}}, known_sizes=["190M"])
    with pytest.raises(JobSpecError, match="slurm.sizes.1B: unknown key"):
        SlurmConfig.from_dict({"sizes": {"1B": {"gpu": 8}}})
    with pytest.raises(JobSpecError, match="slurm.max_retries: expected int"):
        SlurmConfig.from_dict({"max_retries": "2"})


EXAMPLE_DIR = Path(__file__).resolve().parents[1] / "launch" / "slurm" / "example"


def example_sweep() -> SlurmSweep:
    """The sweep rendered into launch/slurm/example/ (a two-resource-group olmo ladder)."""
    sweep_dir = Path("/scratch/ladder/sweeps/olmo-ladder")
    sizes = {"190M": Resources(gpus_per_node=1, time="06:00:00"),
             "1B": Resources(nodes=2, gpus_per_node=8, time="1-00:00:00")}
    rungs = []
    for size, res in sizes.items():
        res = Resources(**{**{k: getattr(res, k) for k in res.__dataclass_fields__},
                           "partition": "gpu", "account": "lm-team", "cpus_per_task": 16})
        for mult in (1, 2):
            name = f"{size}-{mult}xC"
            rungs.append(Job(name, ["python", "-m", "ladder", "train", "recipes/olmo-ladder.yaml",
                                    "--size", size, "--multiplier", str(mult), "--seed", "0",
                                    "--out", str(sweep_dir / "runs" / name)],
                             sweep_dir / "runs" / name, res))
    final = Job("predict", ["python", "-m", "ladder", "predict", str(sweep_dir / "runs"),
                            "--out", str(sweep_dir / "predictions")],
                resources=Resources(partition="cpu", account="lm-team", time="01:00:00"))
    return SlurmSweep(sweep_dir, rungs, final, workdir=Path("/home/me/ladder"),
                      setup=["source .venv/bin/activate"], skip_done=False)


def test_launch_examples_match_the_renderer():
    """launch/slurm/example/ shows users what a sweep submits; it must be what we render.
    LADDER_UPDATE_EXAMPLES=1 rewrites it."""
    sweep = example_sweep()
    rendered = {g.script_name: sweep.render_array(g) for g in sweep.groups}
    rendered["final.sbatch"] = sweep.render_final()
    if os.environ.get("LADDER_UPDATE_EXAMPLES") == "1":
        EXAMPLE_DIR.mkdir(parents=True, exist_ok=True)
        for name, text in rendered.items():
            (EXAMPLE_DIR / name).write_text(text)
    for name, text in rendered.items():
        assert (EXAMPLE_DIR / name).read_text() == text, f"{name} is stale: rerun with LADDER_UPDATE_EXAMPLES=1"


def test_local_argv_uses_accelerate_only_for_several_devices(tmp_path):
    from ladder.sweep.launcher import local_argv
    one = _job(tmp_path, "a", Resources(gpus_per_node=1))
    assert local_argv(one) == list(one.argv)
    four = _job(tmp_path, "b", Resources(gpus_per_node=4))
    assert local_argv(four) == [sys.executable, "-m", "accelerate.commands.launch",
                                "--num_processes", "4", "--num_machines", "1", "--multi_gpu",
                                "--no_python", *four.argv]
    with pytest.raises(JobSpecError, match="2 nodes cannot run locally"):
        local_argv(_job(tmp_path, "c", Resources(nodes=2, gpus_per_node=1)))


def _ifname_block(tmp_path) -> str:
    sweep = SlurmSweep(tmp_path / "s", [_job(tmp_path, "1B-1xC", Resources(nodes=2, gpus_per_node=8))])
    script = sweep.render_array(sweep.groups[0])
    return script[script.index("# the interface that carries MASTER_ADDR"):script.index("export -f ladder_ifname")]


@pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2's ip")
def test_interface_carrying_the_master_address_from_this_machines_routes(tmp_path):
    """The rendered ``ladder_ifname`` against this machine's real routing table: the loopback
    address is on lo; this machine's own address is on the interface holding it (its route
    goes through lo); another address leaves by the interface of its route."""
    block = _ifname_block(tmp_path)
    own = subprocess.run(["ip", "-o", "-4", "addr", "show", "scope", "global"], capture_output=True,
                         text=True).stdout.split()
    cases = {"127.0.0.1": "lo"}
    if own:
        cases[own[3].split("/")[0]] = own[1]
    route = subprocess.run(["ip", "-o", "route", "get", "192.0.2.7"], capture_output=True, text=True).stdout.split()
    if "dev" in route:
        cases["192.0.2.7"] = route[route.index("dev") + 1]
    for addr, dev in cases.items():
        assert _bash_argv(block + f'printf "%s\\0" "$(ladder_ifname {addr})"') == [dev], addr


FAKE_IP = r"""#!/bin/bash
# a node with two interfaces: eth0 (10.0.0.5, where its hostname resolves) and ib0 (10.77.0.2);
# MASTER_ADDR 10.77.0.1 is on ib0's network
case "$*" in
  "-o route get 10.77.0.1") echo "10.77.0.1 dev ib0 src 10.77.0.2 uid 0 \    cache";;
  "-o route get 10.77.0.2") echo "local 10.77.0.2 dev lo table local src 10.77.0.2 uid 0 \    cache <local>";;
  "-o addr show to 10.77.0.2") echo "3: ib0    inet 10.77.0.2/24 brd 10.77.0.255 scope global ib0\       valid_lft forever";;
  *) exit 1;;
esac
"""


@pytest.mark.parametrize("preset, expected", [
    ({}, ["ib0", "ib0"]),  # derived on each node from its route to MASTER_ADDR
    ({"GLOO_SOCKET_IFNAME": "eth9"}, ["eth9", "ib0"]),  # the job's own choice is kept
    ({"NCCL_SOCKET_IFNAME": "ib1"}, ["ib0", "ib1"]),
])
def test_each_node_gives_gloo_and_nccl_the_interface_to_the_master(tmp_path, preset, expected):
    """A node whose hostname resolves on eth0 while MASTER_ADDR is on ib0: the srun step of a
    multi-node rung exports GLOO_SOCKET_IFNAME (and NCCL_SOCKET_IFNAME when unset) = ib0 before
    starting accelerate; without it gloo binds the hostname's address and the rung hangs."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "ip").write_text(FAKE_IP)
    fake_python = tmp_path / "bin" / "python3"  # records what accelerate would be started with
    fake_python.write_text('#!/bin/bash\nprintf "%s\\0" "$GLOO_SOCKET_IFNAME" "$NCCL_SOCKET_IFNAME"\n')
    for f in ("ip", "python3"):
        (tmp_path / "bin" / f).chmod(0o755)
    block = _ifname_block(tmp_path)
    job = Job("1B-1xC", [str(fake_python), "-m", "ladder", "train"], tmp_path / "r", Resources(nodes=2, gpus_per_node=8))
    sweep = SlurmSweep(tmp_path / "s2", [job])
    script = sweep.render_array(sweep.groups[0])
    start = script.index("# accelerate from")
    launch = script[start:script.index(" &\n", start)]
    snippet = (block + "export -f ladder_ifname\n"
               "srun() { while [[ $1 == --* ]]; do shift; done; SLURM_NODEID=1 \"$@\"; }\n"
               f"CMD=({fake_python} -m ladder train)\n"
               "export MASTER_ADDR=10.77.0.1 MASTER_PORT=23456\n" + launch)
    env = {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "GLOO_SOCKET_IFNAME": "",
           "NCCL_SOCKET_IFNAME": "", **preset}
    got = _bash_argv(snippet, env)
    assert got == expected
    assert _bash_argv(block + 'printf "%s\\0" "$(ladder_ifname 10.77.0.2)"', env) == ["ib0"]  # the master itself
