"""Backends behind one protocol (ladder/sweep/backend.py): a new one is one file and one
registry line, and `ladder plan`, `sweep --dry-run`, `sweep`, `status` and `cancel` use it
through the real CLI without knowing its name."""

import json
from pathlib import Path

import pytest

from ladder.sweep.backend import BACKENDS, backend_of

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "recipes" / "tiny-cpu.yaml"

# The new file: a backend that "submits" each rung as a job file in a queue directory (what a
# batch system with a spool directory would take), reads their state back and cancels them.
NEW_BACKEND = '''
import json
from pathlib import Path

from ladder.sweep.checks import Check
from ladder.sweep.launcher import Resources


class QueueStatus(list):
    def table(self):
        return "\\n".join(f"{r['name']:<20} {r['state']}" for r in self)

    def to_json(self):
        return list(self)


class FileQueueBackend:
    name = "filequeue"

    def __init__(self, queue, cpus):
        self.queue, self.cpus = Path(queue), cpus

    @classmethod
    def from_plan(cls, plan):
        from ladder.sweep.backend import BackendError, settings

        s = settings(plan.recipe, cls.name)
        if "queue" not in s:
            raise BackendError(f"{plan.recipe.source}: 'backends.filequeue.queue' is required")
        return cls(s["queue"], int(s.get("cpus", 1)))

    def resources(self, size):
        return Resources(cpus_per_task=self.cpus)

    def device_memory_gib(self, size):
        return None

    def checks(self, plan, estimates):
        return [Check("queue", self.queue.is_dir(), str(self.queue))]

    def render(self, sweep, options):
        return "\\n".join(f"would queue {j.name}" for j in sweep.jobs(self.resources))

    def launch(self, sweep, options, echo):
        for job in sweep.jobs(self.resources):
            (self.queue / f"{job.name}.json").write_text(json.dumps(
                {"argv": list(job.argv), "cpus": job.resources.cpus_per_task}))
        echo(f"queued {len(sweep.jobs())} jobs in {self.queue}")
        return False

    def status(self, sweep):
        return QueueStatus({"name": j.name, "state": "queued" if (self.queue / f"{j.name}.json").exists()
                            else "gone"} for j in sweep.jobs())

    def cancel(self, sweep):
        gone = sorted(p.stem for p in self.queue.glob("*.json"))
        for p in self.queue.glob("*.json"):
            p.unlink()
        return gone

    @classmethod
    def owns(cls, sweep_dir):
        return False
'''


def test_a_new_backend_is_one_file_and_one_registry_line(tmp_path, monkeypatch, ladder_here):
    (tmp_path / "filequeue_backend.py").write_text(NEW_BACKEND)  # the one new file
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(BACKENDS, "filequeue", "filequeue_backend:FileQueueBackend")  # the line
    queue, out = tmp_path / "queue", tmp_path / "sweep"
    args = (TINY, "--backend", "filequeue", "--out", out, "--no-predict",
            f"backends.filequeue.queue={queue}", "backends.filequeue.cpus=3")

    r = ladder_here("plan", *args[:3], args[-2], args[-1])  # per-size report from its resources
    assert r.returncode == 0 and "est. GiB/proc" in r.stdout, r.stderr
    r = ladder_here("sweep", *args, "--dry-run")
    assert r.returncode == 2 and "[FAIL] queue" in r.stdout  # its own check: no queue yet
    queue.mkdir()
    r = ladder_here("sweep", *args, "--dry-run")
    assert r.returncode == 0 and "would queue tiny-43k-4xC" in r.stdout, r.stdout + r.stderr
    assert not out.exists()

    r = ladder_here("sweep", *args)
    assert r.returncode == 0 and "queued 10 jobs" in r.stdout, r.stderr
    job = json.loads((queue / "tiny-9k-1xC.json").read_text())
    assert job["cpus"] == 3 and job["argv"][-1] == str(out / "runs" / "tiny-9k-1xC")
    assert backend_of(out) == "filequeue"

    r = ladder_here("status", out)
    assert r.returncode == 0 and "tiny-25k-2xC         queued" in r.stdout, r.stdout + r.stderr
    r = ladder_here("cancel", out)
    assert r.returncode == 0 and "filequeue: stopped" in r.stdout and not list(queue.iterdir())
    r = ladder_here("sweep", TINY, "--backend", "filequeue", "--out", tmp_path / "s2", "--no-predict")
    assert r.returncode == 2 and "'backends.filequeue.queue' is required" in r.stderr


def test_an_unknown_backend_and_older_sweeps(tmp_path, ladder_here):
    r = ladder_here("sweep", TINY, "--backend", "kubernetes", "--out", tmp_path / "s")
    assert r.returncode == 2 and "invalid choice: 'kubernetes'" in r.stderr
    r = ladder_here("plan", TINY, "--backend", "kubernetes")
    assert r.returncode == 2 and "unknown backend" in r.stderr
    # a sweep directory from before sweep.json named its backend: the one that owns it
    from ladder.recipe import load_recipe
    from ladder.sweep.sweepdir import open_sweep

    sweep = open_sweep(load_recipe(TINY), tmp_path / "old")
    assert backend_of(sweep.dir) == "local"
    (sweep.dir / "slurm").mkdir()
    (sweep.dir / "slurm" / "jobs.json").write_text("{}")
    assert backend_of(sweep.dir) == "slurm"


@pytest.mark.parametrize("name", ["local", "slurm"])
def test_the_built_in_backends_follow_the_protocol(name):
    from ladder.sweep.backend import Backend, backend_class

    cls = backend_class(name)
    assert cls.name == name
    for method in ("from_plan", "resources", "device_memory_gib", "checks", "render", "launch",
                   "status", "cancel", "owns"):
        assert callable(getattr(cls, method)), (name, method)
        assert method in vars(Backend), method  # the protocol declares each
