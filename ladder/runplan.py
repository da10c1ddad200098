"""A run's numbers from its recipe: N, D, batch, peak LR, steps, the LR schedule and the
evaluation steps (the paper's rules where the recipe leaves them open).

A warmup-stable-decay (WSD) ladder trains, per size and seed, one *stable* run at the peak LR up
to the last branch point and a *decay branch* per multiplier that starts from the stable run's
checkpoint at its branch point and decays to the end of its own length (Hägele et al. 2024,
arXiv 2405.18392). A branch is the same run, step for step, as a WSD run of its length trained
from scratch: the stable phase never depends on the run's length, nor does the data order."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from analysis.runlog import TOKENS_PER_PARAM
from ladder.recipe import EvaluationConfig, Recipe


def paper_batch_tokens(n_params: int, seq_len: int) -> int:
    """Paper rule: ~160 (N/108e6)^(2/3) sequences of 2048 tokens, in tokens.

    The paper rounds to multiples of 128 x 2048 tokens (190M: 524,288; 370M: 786,432; 760M:
    1,310,720; 1B: 1,572,864 — reproduced exactly). Below that (tiny models) we round to a power of
    two number of sequences of ``seq_len`` (at least one)."""
    raw = 160 * 2048 * (n_params / 108e6) ** (2 / 3)
    unit = 128 * 2048
    if raw >= unit:
        tokens = max(1, round(raw / unit)) * unit
    else:
        seqs = max(1.0, raw / seq_len)
        tokens = 2 ** round(math.log2(seqs)) * seq_len
    return int(tokens)


def paper_lr(n_params: int, seq_len: int) -> float:
    """Paper rule: 0.0047 (N/108e6)^(-1/3), divided by 4 at 4096 context."""
    lr = 0.0047 * (n_params / 108e6) ** (-1 / 3)
    return lr / 4 if seq_len >= 4096 else lr


def multiplier_label(multiplier: float) -> str:
    """The multiplier as run names write it ('5' in 190M-5xC): six significant digits."""
    return f"{multiplier:g}"


@dataclass
class RunPlan:
    """Everything one run needs beyond the recipe: the numbers derived for (size, multiplier)."""

    recipe: Recipe
    size: str
    multiplier: float
    seed: int
    n_params: int
    n_nonembed: int
    vocab_size: int
    target_tokens: int  # D
    batch_tokens: int
    batch_seqs: int
    total_steps: int
    warmup_steps: int
    lr: float
    flops_per_token: int
    role: str = "run"  # "run" | "stable" (WSD: the phase its branches share) | "branch" (WSD)
    decay_steps: int = 0  # WSD: steps of the final decay (0: a stable run never decays)
    branch_steps: tuple[int, ...] = ()  # stable: where its branches start (checkpoints kept)
    parent: str | None = None  # branch: its stable run's name

    @property
    def name(self) -> str:
        s = f"-s{self.seed}" if len(self.recipe.seeds) > 1 or self.seed != self.recipe.seeds[0] else ""
        if self.role == "stable":
            return f"{self.size}-stable{s}"
        return f"{self.size}-{multiplier_label(self.multiplier)}xC{s}"

    @property
    def decay_start(self) -> int:
        """The last step at the peak LR: a branch starts from its parent's checkpoint here."""
        return self.total_steps - self.decay_steps

    def schedule_info(self) -> dict:
        """What run.json says about the schedule, for the analysis (which points are annealed)
        and the branch's start (where it comes from)."""
        t = self.recipe.train
        out: dict = {"schedule": t.schedule, "role": self.role}
        if t.schedule == "wsd":
            out.update(decay_shape=t.decay_shape, decay_start_step=self.decay_start,
                       decay_steps=self.decay_steps)
        if self.role == "stable":
            out["branch_steps"] = list(self.branch_steps)
        if self.role == "branch":
            out.update(parent=self.parent, branch_step=self.decay_start)
        return out

    @property
    def tokens_per_step(self) -> int:
        return self.batch_tokens


def plan_run(recipe: Recipe, size: str, multiplier: float, seed: int | None, vocab_size: int) -> RunPlan:
    from ladder.presets import get_preset

    preset = get_preset(size)
    t = recipe.train
    vocab = int(vocab_size or preset.vocab_size)
    pc = preset.params(vocab)
    d = int(round(multiplier * TOKENS_PER_PARAM * pc.n))
    batch = t.batch_tokens or paper_batch_tokens(pc.n, t.seq_len)
    batch = max(t.seq_len, batch // t.seq_len * t.seq_len)
    steps = max(1, math.ceil(d / batch))
    warmup = _warmup_steps(t, pc.n, batch, steps)
    decay = max(1, round(t.decay_fraction * steps)) if t.schedule == "wsd" else 0
    return RunPlan(recipe=recipe, size=size, multiplier=float(multiplier),
                   seed=recipe.seeds[0] if seed is None else int(seed), n_params=pc.n,
                   n_nonembed=pc.n_nonembed, vocab_size=vocab, target_tokens=d,
                   batch_tokens=batch, batch_seqs=batch // t.seq_len, total_steps=steps,
                   warmup_steps=warmup, lr=t.lr or paper_lr(pc.n, t.seq_len),
                   flops_per_token=preset.flops_per_token(t.seq_len, vocab), decay_steps=decay)


def _warmup_steps(t, n_params: int, batch: int, steps: int) -> int:
    warm_tokens = n_params if t.warmup_tokens is None else t.warmup_tokens
    return min(steps - 1, math.ceil(warm_tokens / batch)) if steps > 1 else 0


def plan_branches(recipe: Recipe, size: str, seed: int | None, vocab_size: int,
                  multipliers: list[float] | None = None) -> tuple[RunPlan, list[RunPlan]]:
    """A WSD ladder's runs of one (size, seed): the stable run, at the peak LR up to the last
    branch point, and one decay branch per multiplier (``multipliers``: the recipe's). A branch
    must start after the warmup: the stable run's warmup must be the branch's."""
    from ladder.recipe import RecipeError

    if recipe.train.schedule != "wsd":
        raise RecipeError(f"{recipe.source}: decay branches need 'train.schedule: wsd', got "
                          f"{recipe.train.schedule!r}")
    runs = [plan_run(recipe, size, m, seed, vocab_size) for m in (multipliers or recipe.multipliers)]
    top = max(r.decay_start for r in runs)
    stable = dataclasses.replace(
        runs[0], role="stable", multiplier=top * runs[0].batch_tokens / (TOKENS_PER_PARAM * runs[0].n_params),
        target_tokens=top * runs[0].batch_tokens, total_steps=top, decay_steps=0,
        warmup_steps=_warmup_steps(recipe.train, runs[0].n_params, runs[0].batch_tokens, top),
        branch_steps=tuple(sorted({r.decay_start for r in runs})))
    for r in runs:
        if r.decay_start < max(1, r.warmup_steps) or r.warmup_steps != stable.warmup_steps:
            raise RecipeError(
                f"{recipe.source}: 'train.decay_fraction' ({recipe.train.decay_fraction:g}): the "
                f"branch {r.name} would start its decay at step {r.decay_start}, inside the warmup "
                f"({r.warmup_steps} steps); use a smaller decay_fraction or warmup_tokens")
    return stable, [dataclasses.replace(r, role="branch", parent=stable.name) for r in runs]


def plan_role(recipe: Recipe, size: str, multiplier: float, seed: int | None, vocab_size: int,
              role: str = "run") -> RunPlan:
    """The plan of one run of a recipe: from scratch ("run"), a WSD size's stable run, or the
    decay branch of ``multiplier`` off it (a multiplier of the recipe: the stable run keeps
    checkpoints at its branches' points only)."""
    if role == "run":
        return plan_run(recipe, size, multiplier, seed, vocab_size)
    stable, branches = plan_branches(recipe, size, seed, vocab_size)
    if role == "stable":
        return stable
    branch = next((b for b in branches if b.multiplier == float(multiplier)), None)
    if branch is None:
        from ladder.recipe import RecipeError

        raise RecipeError(f"{recipe.source}: a decay branch of multiplier {multiplier:g} has no "
                          f"branch point in the stable run (multipliers: "
                          f"{', '.join(map(multiplier_label, recipe.multipliers))})")
    return branch


def lr_lambda(step: int, plan: RunPlan) -> float:
    """Multiplier of the peak LR after ``step`` optimizer steps (LambdaLR convention).

    WSD: the peak up to and including :attr:`RunPlan.decay_start`, so that a branch's state at
    its branch point is its stable parent's bit for bit (the optimizer's LR included), then the
    decay shape over the remaining steps, reaching ``final_lr_fraction`` at the last one."""
    t = plan.recipe.train
    total, warm, floor = plan.total_steps, plan.warmup_steps, t.final_lr_fraction
    if warm and step < warm:
        return (step + 1) / warm
    if t.schedule == "wsd":
        start = plan.decay_start
        if plan.decay_steps == 0 or step <= start:
            return 1.0
        frac = min(1.0, (step - start) / max(1, plan.decay_steps - 1))
        return 1.0 - (1.0 - floor) * DECAY_SHAPES[t.decay_shape](frac)
    frac = min(1.0, (step - warm + 1) / max(1, total - warm))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac))


# WSD decay shapes: the share of the way from the peak to the floor after a fraction x of the
# decay. 1-sqrt (Hägele et al. 2024) drops fast, then slowly: it matches cosine with shorter
# decays than linear does.
DECAY_SHAPES = {"linear": lambda x: x, "1-sqrt": math.sqrt}


def run_eval_steps(plan: RunPlan, ev: EvaluationConfig) -> list[int]:
    """A run's evaluation steps: the recipe's, and a stable run's branch points (the stable
    curve at each branch's start, which every branch's log begins with)."""
    return sorted(set(eval_steps(plan.total_steps, ev)) | set(plan.branch_steps))


def trained_steps(plan: RunPlan) -> tuple[int, int]:
    """The steps (first, last] this run trains itself: a branch from its branch point on."""
    return (plan.decay_start if plan.role == "branch" else 0), plan.total_steps


def own_eval_steps(plan: RunPlan, ev: EvaluationConfig) -> list[int]:
    """The evaluations this run makes itself (a branch's log starts with its parent's)."""
    first, _ = trained_steps(plan)
    return [s for s in run_eval_steps(plan, ev) if s > first]


def eval_steps(total_steps: int, ev: EvaluationConfig) -> list[int]:
    """Steps (1-based, after that many optimizer steps) at which to evaluate; always the last."""
    if ev.interval:
        steps = set(range(ev.interval, total_steps + 1, ev.interval))
    else:
        count = min(ev.count, total_steps)
        steps = {max(1, round(total_steps * (i + 1) / count)) for i in range(count)}
        first = min(steps)
        if ev.early and first > 1:
            early = [round(x) for x in
                     _geomspace(1, first, ev.early + 2)[1:-1]]  # strictly inside (1, first)
            steps.update(s for s in early if 1 <= s < first)
    steps.add(total_steps)
    return sorted(steps)


def _geomspace(a: float, b: float, n: int) -> list[float]:
    return [a * (b / a) ** (i / (n - 1)) for i in range(n)]
