"""What a sweep backend launches: a named command, the run directory it writes, and the
resources it needs. Backend-neutral, so the local runner and the SLURM backend take the same
job list and a rung is started the same way everywhere (one process, or `accelerate launch`
when it spans several devices or machines).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ladder.exit_codes import EXIT_PREEMPTED

if TYPE_CHECKING:
    from ladder.sweep.branches import BranchPoint

# A trainer that saved a checkpoint because it was asked to stop exits with this; backends requeue.
CHECKPOINT_EXIT_CODE = EXIT_PREEMPTED

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class JobSpecError(ValueError):
    """A job or resource field is invalid; the message names the job and the field."""


@dataclass(frozen=True)
class Resources:
    """What one rung asks the scheduler for. ``None`` leaves the cluster's default."""

    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int | None = None  # CPUs for the one task per node
    mem: str | None = None  # per node, SLURM syntax: "64G", "500M"
    time: str | None = None  # SLURM syntax: "04:00:00", "2-00:00:00", "90" (minutes)
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    extra: tuple[str, ...] = ()  # further sbatch options, verbatim: ("--constraint=a100",)
    # Training processes per node; default one per GPU (one for a CPU-only node). Set it for
    # several CPU (gloo) processes per node.
    processes_per_node: int | None = None

    @property
    def num_processes(self) -> int:
        return self.nodes * (self.processes_per_node or max(self.gpus_per_node, 1))

    @property
    def distributed(self) -> bool:
        return self.num_processes > 1

    def validate(self, where: str) -> None:
        if not isinstance(self.nodes, int) or self.nodes < 1:
            raise JobSpecError(f"{where}: nodes must be an integer >= 1, got {self.nodes!r}")
        if not isinstance(self.gpus_per_node, int) or self.gpus_per_node < 0:
            raise JobSpecError(f"{where}: gpus_per_node must be an integer >= 0, "
                               f"got {self.gpus_per_node!r}")
        if self.processes_per_node is not None and (not isinstance(self.processes_per_node, int)
                                                    or isinstance(self.processes_per_node, bool)
                                                    or self.processes_per_node < 1):
            raise JobSpecError(f"{where}: processes_per_node must be an integer >= 1, "
                               f"got {self.processes_per_node!r}")
        if self.nodes > 1 and self.gpus_per_node == 0 and not self.processes_per_node:
            raise JobSpecError(f"{where}: a multi-node rung needs gpus_per_node >= 1 "
                               f"(nodes={self.nodes}, gpus_per_node=0)")
        if self.cpus_per_task is not None and (not isinstance(self.cpus_per_task, int)
                                               or self.cpus_per_task < 1):
            raise JobSpecError(f"{where}: cpus_per_task must be an integer >= 1, "
                               f"got {self.cpus_per_task!r}")
        for key in ("mem", "time", "partition", "account", "qos"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value.strip()
                                      or any(c.isspace() for c in value)):
                raise JobSpecError(f"{where}: {key} must be a non-empty string without "
                                   f"whitespace, got {value!r}")
        if isinstance(self.extra, (str, bytes)):
            raise JobSpecError(f"{where}: extra must be a list of options, got a string "
                               f"{self.extra!r}")
        for opt in self.extra:
            if not isinstance(opt, str) or not opt.startswith("-") or "\n" in opt:
                raise JobSpecError(f"{where}: extra option {opt!r} must be one sbatch option "
                                   f"starting with '-' (e.g. '--constraint=a100')")

    @classmethod
    def from_dict(cls, d: dict, where: str = "resources") -> "Resources":
        """From a recipe's YAML mapping; unknown keys are an error (typos must not be ignored)."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise JobSpecError(f"{where}: unknown key(s) {', '.join(unknown)} "
                               f"(expected: {', '.join(sorted(known))})")
        d = dict(d)
        if "extra" in d:
            extra = d["extra"]
            if isinstance(extra, str) or not isinstance(extra, (list, tuple)):
                raise JobSpecError(f"{where}: extra must be a list of sbatch options, "
                                   f"got {extra!r}")
            d["extra"] = tuple(extra)
        if "time" in d and not isinstance(d["time"], (str, type(None))):
            # YAML 1.1 reads an unquoted 4:00:00 as the number 14400: refuse to guess.
            raise JobSpecError(f"{where}: time must be a quoted string in SLURM syntax "
                               f"(\"04:00:00\", \"2-00:00:00\", \"90\" for minutes), got "
                               f"{d['time']!r} (YAML reads an unquoted 4:00:00 as the number 14400)")
        r = cls(**d)
        r.validate(where)
        return r


@dataclass(frozen=True)
class Job:
    """One command to run to completion, resumable by rerunning the same argv."""

    name: str
    argv: tuple[str, ...]
    run_dir: Path | None = None
    resources: Resources = field(default_factory=Resources)
    waits_for: BranchPoint | None = None  # a WSD branch: its parent's checkpoint

    def __post_init__(self):
        object.__setattr__(self, "argv", tuple(os.fspath(a) for a in self.argv))
        if self.run_dir is not None:
            object.__setattr__(self, "run_dir", Path(self.run_dir))

    def validate(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise JobSpecError(f"job name {self.name!r}: use letters, digits and . _ + - "
                               f"(it names files and SLURM jobs)")
        if not self.argv or not all(isinstance(a, str) for a in self.argv):
            raise JobSpecError(f"job {self.name}: argv must be a non-empty list of strings")
        if any("\0" in a for a in self.argv):
            raise JobSpecError(f"job {self.name}: argv contains a NUL byte")
        self.resources.validate(f"job {self.name}")


def _is_python(arg: str) -> bool:
    return re.fullmatch(r"python[0-9.]*", Path(arg).name) is not None


def accelerate_options(resources: Resources, *, main_process_ip: str | None = None,
                       main_process_port: int | str | None = None,
                       machine_rank: int | str | None = None) -> list[str]:
    """``accelerate launch`` options for ``resources``: one process per GPU on every node,
    static rendezvous at ``main_process_ip:port`` when the rung spans several machines."""
    out = ["--num_processes", str(resources.num_processes), "--num_machines", str(resources.nodes)]
    if resources.num_processes > 1:
        out.append("--multi_gpu")
    if resources.nodes > 1:
        if main_process_ip is None or main_process_port is None:
            raise JobSpecError("multi-node accelerate launch needs main_process_ip and port")
        out += ["--main_process_ip", str(main_process_ip), "--main_process_port",
                str(main_process_port), "--rdzv_backend", "static", "--same_network"]
    if machine_rank is not None:
        out += ["--machine_rank", str(machine_rank)]
    return out


def accelerate_command(argv: Sequence[str]) -> list[str]:
    """How to start accelerate for ``argv``: with ``argv``'s own interpreter when it starts with
    one (the job then uses the environment the user launched from), else ``accelerate``."""
    if argv and _is_python(argv[0]):
        return [argv[0], "-m", "accelerate.commands.launch"]
    return ["accelerate", "launch"]


def accelerate_launch_argv(argv: Sequence[str], resources: Resources, **options) -> list[str]:
    """``argv`` wrapped in ``accelerate launch`` for ``resources.num_processes`` processes.
    ``--no_python`` lets any command run unchanged (``python -m ladder train ...``, a console
    script, a wrapper). ``options``: see :func:`accelerate_options`."""
    return [*accelerate_command(argv), *accelerate_options(resources, **options), "--no_python",
            *argv]


def local_argv(job: Job) -> list[str]:
    """The command that runs ``job`` on this machine: its argv, or ``accelerate launch`` over
    its devices when it needs several processes (single machine only)."""
    if job.resources.nodes > 1:
        raise JobSpecError(f"job {job.name}: {job.resources.nodes} nodes cannot run locally")
    if not job.resources.distributed:
        return list(job.argv)
    return accelerate_launch_argv(job.argv, job.resources)
