"""The lines of a SLURM batch script: #SBATCH options, the launch step (srun, accelerate on
every node), the rung's body (rendezvous, signal forwarding, what to do after it exits) and the
bash copy of the retry policy of :func:`ladder.exit_codes.next_action`."""

from __future__ import annotations

import shlex
from pathlib import Path

from ladder.exit_codes import (BAD_INPUT, COMPLETED, DIVERGED, DONE as DONE_ACTION, EXIT_BAD_INPUT, EXIT_DIVERGED,
                               EXIT_OK, EXIT_PREEMPTED, GIVE_UP, PARENT_FAILED, PREEMPTED, REQUEUE, RETRY,
                               WAITING)
from ladder.sweep.launcher import JobSpecError, Resources, accelerate_options
from ladder.sweep.rundir import DONE_MARKER
from ladder.train.status import PREVIOUS, STATUS_FILE


def action_function() -> str:
    """``ladder_action OUTCOME RC`` in bash: :func:`ladder.exit_codes.next_action`, which the
    local backend uses, for the batch script (tests run both over every case)."""
    return (
        "# what next, from the run's status file (ladder.exit_codes.next_action)\n"
        "ladder_action() {\n"
        '  case "$1" in\n'
        f'    {COMPLETED}) if [ "$2" -eq {EXIT_OK} ]; then echo {DONE_ACTION}; else echo {RETRY}; fi;;\n'
        f"    {PREEMPTED}|{WAITING}) echo {REQUEUE};;\n"
        f'    {BAD_INPUT}|{DIVERGED}|{PARENT_FAILED}) echo "{GIVE_UP}";;\n'
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
        "export MASTER_ADDR MASTER_PORT\n" + ifname_function())


def ifname_function() -> str:
    """``ladder_ifname ADDR`` in bash: the network interface of this node that carries ADDR (the
    one its route to ADDR leaves by; on the node that holds ADDR, the interface holding it).
    Each node of a rung runs it for MASTER_ADDR and gives it to gloo (the checkpoint writer's
    group, and the CPU rendezvous) and NCCL's bootstrap unless already set: both otherwise bind
    to the address the node's hostname resolves to, which on a cluster may be another network
    (management Ethernet while MASTER_ADDR is on InfiniBand), and hang at start until the
    process-group timeout."""
    return (
        "# the interface that carries MASTER_ADDR on this node (run on each node of a rung)\n"
        "ladder_ifname() {\n"
        "  local addr dev\n"
        "  addr=\"$(getent ahostsv4 \"$1\" 2>/dev/null | awk 'NR==1 {print $1}')\"; addr=\"${addr:-$1}\"\n"
        "  dev=\"$(ip -o route get \"$addr\" 2>/dev/null | sed -n 's/.* dev \\([^ ]*\\).*/\\1/p' | head -n 1)\"\n"
        "  if [ -z \"$dev\" ] || [ \"$dev\" = lo ]; then  # this node's own address: the interface holding it\n"
        "    dev=\"$(ip -o addr show to \"$addr\" 2>/dev/null | awk 'NR==1 {print $2}')\"\n"
        "  fi\n"
        "  echo \"$dev\"\n"
        "}\n"
        "export -f ladder_ifname")


# each node: gloo's and NCCL's interface from its route to MASTER_ADDR, unless the job set them
_NODE_IFNAME = ('d="$(ladder_ifname "$MASTER_ADDR")"; if [ -n "$d" ]; then '
                'export GLOO_SOCKET_IFNAME="${GLOO_SOCKET_IFNAME:-$d}" NCCL_SOCKET_IFNAME="${NCCL_SOCKET_IFNAME:-$d}"; '
                'echo "[ladder] node $SLURM_NODEID: GLOO_SOCKET_IFNAME=$GLOO_SOCKET_IFNAME '
                'NCCL_SOCKET_IFNAME=$NCCL_SOCKET_IFNAME" >&2; fi; ')


def comment_text(text: object) -> str:
    """Text safe inside a bash comment (a newline would end the comment)."""
    return str(text).replace("\n", "\\n").replace("\r", "\\r")


def sbatch_lines(job_name: str, r: Resources, output: Path, workdir: Path) -> list[str]:
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


def launch_line(r: Resources) -> str:
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
            "bash -c '" + _NODE_IFNAME + "trap \"\" USR1; n=$1; shift; exec \"${@:1:n}\" --machine_rank \"$SLURM_NODEID\" "
            "--no_python \"${@:n+1}\"' ladder-rank \"${#ACCEL[@]}\" \"${ACCEL[@]}\" \"${CMD[@]}\"")


def rung_body(*, checkpoint: int, retries: int, max_requeues: int, launch: str) -> str:
    """The part of an array script after its rung table: rendezvous, the launch with signals
    forwarded, then what to do from the run's status file (done, requeue, retry or give up)."""
    return _RUNG_BODY.format(checkpoint=checkpoint, retries=retries, max_requeues=max_requeues,
                             done=DONE_MARKER, launch=launch, rendezvous=rendezvous_lines(),
                             status=STATUS_FILE, status_prev=PREVIOUS, action_fn=action_function())


_RUNG_BODY = r"""
CHECKPOINT_EXIT={checkpoint}   # the trainer saved a checkpoint on a signal: requeue, resume
MAX_RETRIES={retries}        # requeues after other failures (killed process, lost node)
MAX_REQUEUES={max_requeues}     # hard cap on restarts of this task
TASK="${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"
RESTARTS="${{SLURM_RESTART_COUNT:-0}}"
mkdir -p "$RUN_DIR"
echo "[ladder] $(date -Is) rung=$RUNG task=$TASK job=$SLURM_JOB_ID restart=$RESTARTS host=$(hostname)"
if [ -e "$RUN_DIR/{done}" ]; then echo "[ladder] $RUN_DIR/{done} exists: nothing to do"; exit 0; fi

{rendezvous}

PREEMPT=0; TERMINATED=0; CHILD=""
# USR1 (sent by --signal=B:USR1@ before the time limit, or by hand: scancel --signal=USR1
# --batch): forward it to srun, which delivers it to every process of the step; the trainer
# checkpoints and exits with CHECKPOINT_EXIT. (SIGTERM would make srun kill the step at once.)
on_usr1() {{ PREEMPT=1; echo "[ladder] $(date -Is) USR1: asking the rung to checkpoint"; [ -n "$CHILD" ] && kill -USR1 "$CHILD" 2>/dev/null; }}
# TERM comes from SLURM itself (scancel, preemption, node shutdown), which signals the step's
# processes too; only note it, SLURM decides whether the job comes back.
on_term() {{ TERMINATED=1; echo "[ladder] $(date -Is) TERM from SLURM"; }}
trap on_usr1 USR1
trap on_term TERM

# The previous attempt's outcome must not be read as this one's.
mv -f "$RUN_DIR/{status}" "$RUN_DIR/{status_prev}" 2>/dev/null || true
{launch} &
CHILD=$!
# `wait` returns early when a trapped signal arrives; keep waiting for the rung itself.
while :; do wait "$CHILD"; kill -0 "$CHILD" 2>/dev/null || break; done
wait "$CHILD"; RC=$?
OUTCOME="$(sed -n 's/.*"outcome": *"\([a-z_]*\)".*/\1/p' "$RUN_DIR/{status}" 2>/dev/null | head -n 1)"
echo "[ladder] $(date -Is) rung exited with $RC (outcome: ${{OUTCOME:-none}})"

requeue() {{
  if [ "$RESTARTS" -ge "$MAX_REQUEUES" ]; then echo "[ladder] $MAX_REQUEUES restarts already: not requeueing" >&2; exit "$RC"; fi
  echo "[ladder] requeue $TASK ($1)"
  if scontrol requeue "$TASK"; then exit 0; fi
  echo "[ladder] scontrol requeue $TASK failed" >&2; exit "$RC"
}}
{action_fn}
ACTION="$(ladder_action "$OUTCOME" "$RC")"
if [ "$ACTION" = done ]; then exit 0; fi
if [ "$TERMINATED" -eq 1 ] && [ "$PREEMPT" -eq 0 ]; then exit "$RC"; fi  # SLURM's own cancel/preempt
if [ "$ACTION" = "give up" ]; then
  echo "[ladder] outcome ${{OUTCOME:-none}} (exit $RC): not retried, it would fail again" >&2
  [ "$RC" -eq 0 ] && exit 1; exit "$RC"
fi
if [ "$PREEMPT" -eq 1 ] || [ "$ACTION" = requeue ]; then requeue "checkpointed"; fi
if [ "$RESTARTS" -lt "$MAX_RETRIES" ]; then requeue "${{OUTCOME:-exit $RC}}, retry $(( RESTARTS + 1 ))/$MAX_RETRIES"; fi
[ "$RC" -eq 0 ] && exit 1; exit "$RC"
"""
