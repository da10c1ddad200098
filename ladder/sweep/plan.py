"""Plan a recipe's sweep: every rung (size x multiplier x seed) and target with N, D, batch, LR,
steps and FLOPs, before anything runs (`ladder plan`, `ladder sweep --dry-run`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ladder.recipe import Recipe, RecipeError
from ladder.runplan import RunPlan, multiplier_label, plan_run
from ladder.units import si


class SweepError(RuntimeError):
    """A sweep cannot proceed; the message says which file, rung or field and why."""


def planning_vocab_size(recipe: Recipe) -> int | None:
    """Embedding rows the trainer will use, known before any tokenizer is trained: the trainer
    rounds the tokenizer's size up to a multiple of 128 (the OLMo tokenizer -> 100,352 rows)."""
    from ladder.presets import PAPER_VOCAB, embedding_rows

    m = recipe.model
    if m.vocab_size:
        return m.vocab_size
    if m.tokenizer == "embedded":
        return embedding_rows(m.tokenizer_vocab_size)
    if m.tokenizer == "olmo":
        return PAPER_VOCAB
    return None  # a user tokenizer: the preset's default rows until the run says otherwise


@dataclass
class TargetPlan:
    """A model to predict: N and D, and (for small held-out targets) the run that trains it."""

    name: str
    n: int
    d: float
    size: str | None
    run: RunPlan | None = None  # trained by the sweep to compare prediction and actual

    @property
    def flops(self) -> float:
        return 6.0 * self.n * self.d


@dataclass
class SweepPlan:
    recipe: Recipe
    rungs: list[RunPlan]
    targets: list[TargetPlan] = field(default_factory=list)

    @property
    def ladder_flops(self) -> float:
        return sum(run_flops(r) for r in self.rungs)

    def all_runs(self) -> list[tuple[str, RunPlan]]:
        """(role, plan) of every run the sweep trains: rungs first, then trained targets."""
        return [("rung", r) for r in self.rungs] + [
            ("target", t.run) for t in self.targets if t.run is not None]


def run_flops(plan: RunPlan) -> float:
    """Training FLOPs as the paper counts compute: 6 N D (D = tokens actually trained)."""
    return 6.0 * plan.n_params * plan.total_steps * plan.batch_tokens


def plan_sweep(recipe: Recipe) -> SweepPlan:
    """Expand the grid (sizes x multipliers x seeds) and resolve every target's N and D."""
    from ladder.presets import PRESETS, get_preset

    vocab = planning_vocab_size(recipe)
    src = recipe.source
    _check_distinct_rungs(recipe)
    rungs = [plan_run(recipe, size, mult, seed, vocab)
             for size in recipe.model.sizes for mult in recipe.multipliers for seed in recipe.seeds]
    targets = []
    names = {r.name: "a rung of the ladder; a held-out target must not be fitted on" for r in rungs}
    for i, t in enumerate(recipe.targets):
        where = f"{src}: 'targets[{i}]' ({t.name})"
        if t.size is not None and t.size not in PRESETS:
            raise RecipeError(f"{where}: unknown size '{t.size}'; known sizes: {', '.join(PRESETS)}")
        if t.n is not None:
            n = int(t.n)
        elif t.size is not None:
            n = get_preset(t.size).params(vocab).n
        else:
            raise RecipeError(f"{where}: needs N: give 'size' (a preset) or 'n' (parameters)")
        if t.d is not None:
            d = float(t.d)
        elif t.multiplier is not None:
            d = float(t.multiplier) * 20 * n
        else:
            raise RecipeError(f"{where}: needs D: give 'd' (tokens) or 'multiplier' (x 20 N)")
        run = None
        if t.train:
            if t.size is None:
                raise RecipeError(f"{where}: 'train: true' needs a preset 'size' to build the model")
            run = plan_run(recipe, t.size, d / (20 * n), recipe.seeds[0], vocab)
            if run.name in names:
                raise RecipeError(f"{where}: the target run '{run.name}' is also {names[run.name]}")
            names[run.name] = f"the run of target '{t.name}' (one run directory for both)"
        targets.append(TargetPlan(t.name, n, d, t.size, run))
    return SweepPlan(recipe, rungs, targets)


def _check_distinct_rungs(recipe: Recipe) -> None:
    """A value listed twice names two rungs alike, and they would share one run directory: its
    lock admits one, and the sweep fails only after the other has trained. Refused at plan time."""
    axes = (("model.sizes", recipe.model.sizes, str), ("multipliers", recipe.multipliers, multiplier_label),
            ("seeds", recipe.seeds, str))
    for key, values, label in axes:
        first: dict[str, int] = {}
        for i, v in enumerate(values):
            j = first.setdefault(label(v), i)
            if j != i:
                raise RecipeError(f"{recipe.source}: '{key}[{i}]' ({v!r}) gives the same run names as "
                                  f"'{key}[{j}]' ({values[j]!r}); list each value once")


def plan_table(plan: SweepPlan) -> str:
    """The grid as a table, then the targets and the ladder's share of their compute."""
    head = ("run", "size", "N", "mult", "D", "batch", "steps", "peak LR", "FLOPs")
    rows = [head]
    for role, r in plan.all_runs():
        rows.append((r.name + (" (target)" if role == "target" else ""), r.size, si(r.n_params),
                     f"{r.multiplier:g}", si(r.target_tokens), si(r.batch_tokens),
                     str(r.total_steps), f"{r.lr:.3g}", f"{run_flops(r):.3g}"))
    lines = [_columns(rows), "", f"ladder: {len(plan.rungs)} runs, {plan.ladder_flops:.3g} FLOPs"]
    for t in plan.targets:
        ratio = plan.ladder_flops / t.flops
        lines.append(f"target {t.name}: N={si(t.n)} D={si(t.d)} FLOPs={t.flops:.3g}; "
                     f"ladder/target compute = {100 * ratio:.2f}%"
                     + (" (trained here to check the prediction)" if t.run else ""))
    if len(plan.targets) > 1:
        total = sum(t.flops for t in plan.targets)
        lines.append(f"all {len(plan.targets)} targets: ladder/targets compute = "
                     f"{100 * plan.ladder_flops / total:.2f}%")
    return "\n".join(lines)


def _columns(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                               enumerate(zip(r, widths))).rstrip() for r in rows)
