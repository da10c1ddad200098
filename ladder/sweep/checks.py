"""What `ladder sweep` verifies before anything is submitted, and the per-size report it prints:
a mistake found after the ladder trained (nothing to predict, no GPU requested, data missing)
costs the whole ladder's compute.

Checks: targets defined; the tasks to predict resolve and their request data is installed; the
tokenizer and the training data are reachable from here; every GPU-sized rung asks for GPUs (and
fits their memory when ``slurm.gpu_memory_gib`` is given)."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from ladder.units import si, text_table

GIB = 2 ** 30


@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"  [{'ok' if self.ok else 'FAIL'}] {self.name}: {self.detail}"


def _tasks_check(recipe, predict: bool) -> Check:
    from ladder.eval.tasks import load_docs, resolve_task_groups
    from ladder.sweep.plan import SweepError
    from ladder.sweep.predict import prediction_tasks

    name = "tasks to predict"
    if not predict:
        return Check(name, True, "not predicting (--no-predict)")
    try:
        spec = prediction_tasks(recipe)
        groups = resolve_task_groups(spec)
        for g in groups:
            for t in g.tasks:
                if t.source != "corpus":
                    load_docs(t, limit=1)
    except (SweepError, KeyError, RuntimeError, OSError) as e:
        return Check(name, False, str(e.args[0] if isinstance(e, KeyError) and e.args else e))
    in_loop = recipe.evaluation.tasks
    if not in_loop:
        return Check(name, False, f"'{spec}' is to be predicted but evaluation.tasks is null: no rung "
                     f"would log it (set evaluation.tasks, or score kept checkpoints later with "
                     f"`ladder eval-runs`)")
    return Check(name, True, f"{spec}: {sum(len(g.tasks) for g in groups)} task(s), request data found")


def _tokenizer_check(recipe) -> Check:
    from ladder.data.errors import DataError
    from ladder.data.tokenizer import olmo_tokenizer_file

    spec = recipe.model.tokenizer
    try:
        if spec == "embedded":
            return Check("tokenizer", True, "trained on the corpus at the first run")
        if spec == "olmo":
            return Check("tokenizer", True, str(olmo_tokenizer_file()))
    except DataError as e:
        return Check("tokenizer", False, str(e))
    p = Path(os.path.expanduser(spec))
    if p.exists():
        return Check("tokenizer", True, str(p))
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = isinstance(try_to_load_from_cache(spec, "tokenizer_config.json"), str)
    except Exception:  # noqa: BLE001 - not a valid repo id: the run's own load says why
        cached = False
    if cached:
        return Check("tokenizer", True, f"{spec!r}: in the local Hugging Face cache, used as is")
    return Check("tokenizer", True, f"{spec!r} is not in the local Hugging Face cache: each run "
                 f"downloads it, so the nodes need the network (or `hf download {spec}` first, "
                 f"into a cache they share)")


def _data_check(recipe) -> Check:
    import numpy as np

    d = recipe.data
    if d.source == "pystdlib":
        return Check("data", True, "this Python's standard library")
    if d.source == "hf":
        return Check("data", True, f"hub dataset {d.path!r}: read at run time")
    patterns = [d.path] if isinstance(d.path, str) else list(d.path or [])
    files = sorted({f for p in patterns for f in glob.glob(os.path.expanduser(p))})
    if not files:
        return Check("data", False, f"data.path: no files match {patterns} from this machine")
    if d.source == "tokens":
        item = np.dtype(d.tokens_dtype).itemsize
        bad = [f for f in files if os.path.getsize(f) % item]
        if bad:
            return Check("data", False, f"data.path: {bad[0]} is not a whole number of "
                         f"{d.tokens_dtype} tokens (data.tokens_dtype)")
        tokens = sum(os.path.getsize(f) for f in files) // item
        return Check("data", True, f"{len(files)} token file(s), {si(tokens)} tokens")
    return Check("data", True, f"{len(files)} file(s)")


def gpu_checks(plan, backend, estimates: dict) -> list[Check]:
    """A cluster backend's checks: every GPU-sized rung asks for GPUs, and fits their memory
    where the backend knows it (``backend.device_memory_gib``; ``estimates``: size_estimates)."""
    from ladder.presets import get_preset

    out = []
    for size in dict.fromkeys(r.size for _, r in plan.all_runs()):
        res = backend.resources(size)
        if not get_preset(size).tiny and res.gpus_per_node < 1:
            out.append(Check(f"GPUs for {size}", False, f"{backend.name}: a {size} rung asks for "
                             f"no GPU (set {backend.name}.sizes.{size}.gpus_per_node)"))
            continue
        fit = estimates[size][2]
        if fit is not None and res.gpus_per_node:
            out.append(Check(f"memory of {size}", fit["fits"], fit["line"]))
    return out


def presubmit_checks(plan, *, predict: bool, backend=None) -> list[Check]:
    """The checks every sweep gets, then those of its backend (``backend.checks``)."""
    checks = [Check("targets", bool(plan.targets) or not predict,
                    ", ".join(t.name for t in plan.targets) if plan.targets
                    else "the recipe has no 'targets' to predict")]
    checks += [_tasks_check(plan.recipe, predict), _tokenizer_check(plan.recipe), _data_check(plan.recipe)]
    if backend is not None:
        checks += backend.checks(plan, size_estimates(plan, backend))
    return checks


# ---------------------------------------------------------------------------- the report


def size_estimates(plan, backend=None) -> dict:
    """size -> (memory estimate per process, parallel settings, fit) for every size the sweep
    trains; ``fit`` (None where the backend knows no device memory, e.g. without
    ``slurm.gpu_memory_gib``) says whether the estimate fits the GPU's real capacity, with what
    margin, and which micro-batch would."""
    from ladder.sweep.estimate import memory_estimate
    from ladder.train.parallel import parallel_config

    par = parallel_config(plan.recipe)
    out = {}
    for _, r in plan.all_runs():
        if r.size in out:
            continue
        s = par.for_size(r.size)
        res = backend.resources(r.size) if backend is not None else None
        procs = res.num_processes if res is not None else 1
        per_proc = max(1, r.batch_seqs // procs)
        micro = min(s.micro_batch_size or plan.recipe.train.micro_batch_size, per_proc)
        gpu = res is not None and res.gpus_per_node > 0
        bf16 = plan.recipe.train.precision == "bf16" or (plan.recipe.train.precision == "auto" and gpu)
        kw = dict(processes=procs, fsdp=s.strategy == "fsdp", bf16=bf16,
                  activation_checkpointing=s.activation_checkpointing, gpu=gpu)
        m = memory_estimate(r, micro_batch=micro, **kw)
        gib = backend.device_memory_gib(r.size) if gpu else None
        out[r.size] = (m, (s, procs, micro, bf16), _fit(r, m, gib, micro, per_proc, kw) if gib else None)
    return out


def _fit(run, m, gib: float, micro: int, per_proc: int, kw: dict) -> dict:
    """Does estimate ``m`` fit a GPU sold as ``gib`` GB, with what margin; if not, the largest
    micro-batch that would."""
    from ladder.sweep.estimate import fitting_micro_batch, gpu_capacity

    cap = gpu_capacity(gib)
    margin = cap - m.total
    size = run.size
    line = (f"estimated {m.total / GIB:.1f} GiB per GPU (with {m.reserved / GIB:.1f} GiB for the CUDA "
            f"context and workspaces) of {cap / GIB:.1f} GiB usable on a {gib} GB GPU: ")
    if margin >= 0:
        return {"fits": True, "margin": margin, "suggest": None,
                "line": line + f"fits, {margin / GIB:.1f} GiB margin"}
    better = fitting_micro_batch(run, cap, micro_batch=micro, per_process=per_proc, **kw)
    fix = (f"parallel.sizes.{size}.micro_batch_size: {better} fits" if better else
           f"no micro-batch fits: use activation_checkpointing or strategy: fsdp for {size}")
    return {"fits": False, "margin": margin, "suggest": better,
            "line": line + f"over by {-margin / GIB:.1f} GiB; {fix}"}


def size_report(plan, backend=None) -> str:
    head = ("size", "nodes", "GPUs/node", "procs", "strategy", "micro", "act.ckpt", "time", "mem",
            "partition", "est. GiB/proc", "(params+grads+optim / activations / logits)", "fits GPU")
    rows = [head]
    for size, (m, (s, procs, micro, bf16), fit) in size_estimates(plan, backend).items():
        res = backend.resources(size) if backend is not None else None
        fits = "-" if fit is None else (
            f"yes, {fit['margin'] / GIB:.1f} GiB margin" if fit["fits"] else
            f"NO, over {-fit['margin'] / GIB:.1f} GiB: " + (f"micro {fit['suggest']} fits" if fit["suggest"]
                                                             else "act.ckpt or fsdp"))
        rows.append((size, str(res.nodes if res else 1), str(res.gpus_per_node if res else 0), str(procs),
                     s.strategy, str(micro), "yes" if s.activation_checkpointing else "no",
                     (res.time or "-") if res else "-", (res.mem or "-") if res else "-",
                     (res.partition or "-") if res else "-", f"{m.total / GIB:.1f}",
                     f"{(m.params + m.grads + m.optimizer + m.gathered) / GIB:.1f} / {m.activations / GIB:.1f} / "
                     f"{m.logits / GIB:.1f}" + (" bf16" if bf16 else " fp32"), fits))
    return text_table(rows)


def eval_report(plan) -> str:
    """Evaluation share of training FLOPs per rung (validation + tasks, forward passes)."""
    from ladder.sweep.estimate import eval_share

    tokens, note = task_tokens(plan.recipe)
    lines = [f"evaluation share of training FLOPs ({note}):"]
    for role, r in plan.all_runs():
        e = eval_share(r, tokens)
        lines.append(f"  {r.name}: {e.evaluations} evaluations x ({si(e.validation_tokens)} validation"
                     + (f" + {si(e.task_tokens)} task" if e.task_tokens else "")
                     + f" tokens) = {100 * e.share:.2f}%")
    return "\n".join(lines)


def task_tokens(recipe) -> tuple[int | None, str]:
    """Tokens the scorer runs per in-loop task evaluation, counted on the tokenised requests.
    A hub tokenizer only from the local cache: a plan is a dry run, and without a network the
    hub client's retries kept it waiting for nothing."""
    from ladder.data.errors import DataError
    from ladder.data.tokenizer import load_tokenizer
    from ladder.sweep.estimate import measure_task_tokens

    ev = recipe.evaluation
    if not ev.tasks:
        return None, "no in-loop tasks"
    if recipe.model.tokenizer == "embedded":
        return None, "task tokens not counted: the tokenizer is trained at the first run"
    try:
        tok = load_tokenizer(recipe.model, local_only=True)
        n = measure_task_tokens(ev.tasks, tok, limit=ev.task_limit, seed=recipe.seeds[0],
                                max_len=recipe.train.seq_len)
    except (DataError, KeyError, ValueError, RuntimeError, OSError) as e:
        return None, f"task tokens not counted ({e})"
    return n, f"{ev.tasks} with task_limit={ev.task_limit}: {si(n)} tokens per evaluation, counted"
