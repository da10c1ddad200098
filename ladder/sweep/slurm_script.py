"""The lines of a SLURM batch script: #SBATCH options, the launch step (srun, accelerate on
every node) and the bash copy of the retry policy of :func:`ladder.exit_codes.next_action`."""

from __future__ import annotations

import shlex
from pathlib import Path

from ladder.exit_codes import (BAD_INPUT, COMPLETED, DIVERGED, DONE as DONE_ACTION, EXIT_BAD_INPUT, EXIT_DIVERGED,
                               EXIT_OK, EXIT_PREEMPTED, GIVE_UP, PREEMPTED, REQUEUE, RETRY)
from ladder.sweep.launcher import JobSpecError, Resources, accelerate_options


def action_function() -> str:
    """``ladder_action OUTCOME RC`` in bash: :func:`ladder.exit_codes.next_action`, which the
    local backend uses, for the batch script (tests run both over every case)."""
    return (
        "# what next, from the run's status file (ladder.exit_codes.next_action)\n"
        "ladder_action() {\n"
        '  case "$1" in\n'
        f'    {COMPLETED}) if [ "$2" -eq {EXIT_OK} ]; then echo {DONE_ACTION}; else echo {RETRY}; fi;;\n'
        f"    {PREEMPTED}) echo {REQUEUE};;\n"
        f'    {BAD_INPUT}|{DIVERGED}) echo "{GIVE_UP}";;\n'
        '    "") case "$2" in\n'
        f"          {EXIT_OK}) echo {DONE_ACTION};;\n"
        f'          {EXIT_BAD_INPUT}|{EXIT_DIVERGED}) echo "{GIVE_UP}";;\n'
        f"          {EXIT_PREEMPTED}) echo {REQUEUE};;\n"
        f"          *) echo {RETRY};;\n"
        "        esac;;\n"
        f"    *) echo {RETRY};;\n"
        "  esac\n"
        "}")


def rendezvous_lines() -> str:
    """MASTER_ADDR/MASTER_PORT for multi-process rungs, the same on every node of a task. The
    address is the first node's ``NodeAddr``, the address SLURM itself reaches it at: a node's
    name need not resolve where the job runs (SLURM falls back to the name when no NodeAddr
    is configured, so it is never worse than the name)."""
    return (
        "# Rendezvous for multi-process rungs (same values on every node of this task): the first\n"
        "# node's NodeAddr, the address SLURM reaches it at (its name need not resolve).\n"
        'MASTER_NODE="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"\n'
        'MASTER_ADDR="$(scontrol -o show node "$MASTER_NODE" 2>/dev/null'
        " | sed -n 's/.* NodeAddr=\\([^ ]*\\).*/\\1/p')\"\n"
        'MASTER_ADDR="${MASTER_ADDR:-$MASTER_NODE}"\n'
        "MASTER_PORT=$(( 20000 + SLURM_JOB_ID % 20000 ))\n"
        "export MASTER_ADDR MASTER_PORT")


def _comment(text: object) -> str:
    """Text safe inside a bash comment (a newline would end the comment)."""
    return str(text).replace("\n", "\\n").replace("\r", "\\r")


def _sbatch_lines(job_name: str, r: Resources, output: Path, workdir: Path) -> list[str]:
    opts = [f"--job-name={job_name}", f"--output={output}", f"--chdir={workdir}",
            f"--nodes={r.nodes}", "--ntasks-per-node=1"]
    if r.gpus_per_node:
        opts.append(f"--gpus-per-node={r.gpus_per_node}")
    for key, flag in (("cpus_per_task", "--cpus-per-task"), ("mem", "--mem"),
                      ("time", "--time"), ("partition", "--partition"),
                      ("account", "--account"), ("qos", "--qos")):
        value = getattr(r, key)
        if value is not None:
            opts.append(f"{flag}={value}")
    opts += list(r.extra)
    for o in opts:
        if "\n" in o or any(c.isspace() for c in o.split("=", 1)[0]):
            raise JobSpecError(f"sbatch option {o!r} is not one option")
    return [f"#SBATCH {_quote_sbatch(o)}" for o in opts]


def _quote_sbatch(opt: str) -> str:
    """sbatch reads ``#SBATCH`` lines itself (no shell) and accepts a double-quoted value."""
    if not any(c.isspace() for c in opt):
        return opt
    flag, _, value = opt.partition("=")
    if '"' in value:
        raise JobSpecError(f"sbatch option {opt!r}: a value with both spaces and '\"' "
                           f"cannot be written in a #SBATCH line")
    return f'{flag}="{value}"'


def _launch_line(r: Resources) -> str:
    """The step that runs a rung: plain ``srun CMD``, or ``accelerate launch`` on every node
    with the machine rank read per node from ``SLURM_NODEID`` (hence the ``bash -c``)."""
    # srun does not inherit sbatch's --cpus-per-task (SLURM >= 22.05): a step would get 1 CPU
    cpus = f" --cpus-per-task={r.cpus_per_task}" if r.cpus_per_task else ""
    if not r.distributed:
        return f'srun --nodes=1 --ntasks=1{cpus} "${{CMD[@]}}"'
    opts = accelerate_options(r, main_process_ip="@ADDR@", main_process_port="@PORT@")
    words = " ".join({"@ADDR@": '"$MASTER_ADDR"', "@PORT@": '"$MASTER_PORT"'}.get(w, shlex.quote(w))
                     for w in opts)
    return ("# accelerate from the rung's own interpreter when CMD starts with one\n"
            'case "$(basename "${CMD[0]}")" in\n'
            '  python*) ACCEL=("${CMD[0]}" -m accelerate.commands.launch);;\n'
            "  *) ACCEL=(accelerate launch);;\n"
            "esac\n"
            f"ACCEL+=({words})\n"
            "# one task per node; each passes its own SLURM_NODEID as the machine rank. The launcher\n"
            "# ignores USR1 (inherited through exec) so only the trainer processes act on it.\n"
            f"srun --nodes={r.nodes} --ntasks-per-node=1{cpus} --kill-on-bad-exit=1 "
            "bash -c 'trap \"\" USR1; n=$1; shift; exec \"${@:1:n}\" --machine_rank \"$SLURM_NODEID\" "
            "--no_python \"${@:n+1}\"' ladder-rank \"${#ACCEL[@]}\" \"${ACCEL[@]}\" \"${CMD[@]}\"")
