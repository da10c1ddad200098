"""Plan a recipe's sweep: every rung (size x multiplier x seed) and target with N, D, batch, LR,
steps and FLOPs, before anything runs (`ladder plan`, `ladder sweep --dry-run`). A WSD recipe
with branches plans a stable run per (size, seed) and its rungs as decay branches off it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ladder.recipe import Recipe, RecipeError
from ladder.runplan import RunPlan, multiplier_label, plan_branches, plan_run, trained_steps
from ladder.units import si, text_table


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
    rungs: list[RunPlan]  # the ladder's points (a WSD ladder's: its decay branches)
    targets: list[TargetPlan] = field(default_factory=list)
    stables: list[RunPlan] = field(default_factory=list)  # WSD: the runs the branches start from

    @property
    def ladder_flops(self) -> float:
        return sum(run_flops(r) for r in self.stables + self.rungs)

    def all_runs(self) -> list[tuple[str, RunPlan]]:
        """(role, plan) of every run the sweep trains: stable runs, rungs, trained targets."""
        return [("stable", r) for r in self.stables] + [("rung", r) for r in self.rungs] + [
            ("target", t.run) for t in self.targets if t.run is not None]

    def parent_of(self, plan: RunPlan) -> RunPlan | None:
        """A branch's stable run (None for a run trained from scratch)."""
        return next((s for s in self.stables if s.name == plan.parent), None)


def run_flops(plan: RunPlan) -> float:
    """Training FLOPs as the paper counts compute: 6 N D (D = tokens this run trains; a branch
    trains its decay only, from its parent's checkpoint)."""
    first, last = trained_steps(plan)
    return 6.0 * plan.n_params * (last - first) * plan.batch_tokens


def layout_flops(recipe: Recipe) -> tuple[float, float]:
    """The grid's training FLOPs in both layouts: every rung from scratch, and WSD decay branches
    off one stable run per (size, seed) (with the recipe's decay_fraction), whatever the recipe
    uses, so that `ladder plan` shows what either choice costs."""
    wsd = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, schedule="wsd"))
    vocab = planning_vocab_size(recipe)
    scratch = branched = 0.0
    for size in recipe.model.sizes:
        for seed in recipe.seeds:
            stable, branches = plan_branches(wsd, size, seed, vocab)
            scratch += sum(run_flops(dataclasses.replace(b, role="run")) for b in branches)
            branched += run_flops(stable) + sum(run_flops(b) for b in branches)
    return scratch, branched


def plan_sweep(recipe: Recipe) -> SweepPlan:
    """Expand the grid (sizes x multipliers x seeds) and resolve every target's N and D."""
    from ladder.presets import PRESETS, get_preset

    vocab = planning_vocab_size(recipe)
    src = recipe.source
    _check_distinct_rungs(recipe)
    stables: list[RunPlan] = []
    if recipe.train.schedule == "wsd" and recipe.train.branches:
        rungs = []
        for size in recipe.model.sizes:
            for seed in recipe.seeds:
                stable, branches = plan_branches(recipe, size, seed, vocab)
                stables.append(stable)
                rungs += branches
        order = {(size, m): i for i, (size, m) in enumerate(
            (s, m) for s in recipe.model.sizes for m in recipe.multipliers)}
        rungs.sort(key=lambda r: order[(r.size, r.multiplier)])  # the cosine ladder's order
    else:
        rungs = [plan_run(recipe, size, mult, seed, vocab) for size in recipe.model.sizes
                 for mult in recipe.multipliers for seed in recipe.seeds]
    targets = []
    names = {r.name: "a rung of the ladder; a held-out target must not be fitted on" for r in rungs}
    names.update({r.name: "a stable run of the ladder" for r in stables})
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
    return SweepPlan(recipe, rungs, targets, stables)


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
        note = {"target": " (target)", "stable": " (stable)"}.get(role, "")
        steps = str(r.total_steps)
        if r.role == "branch":  # trains from its parent's checkpoint to the end
            note, steps = f" (from {r.parent})", f"{r.decay_start}-{r.total_steps}"
        rows.append((r.name + note, r.size, si(r.n_params),
                     "-" if r.role == "stable" else f"{r.multiplier:g}", si(r.target_tokens),
                     si(r.batch_tokens), steps, f"{r.lr:.3g}", f"{run_flops(r):.3g}"))
    runs = (f"{len(plan.stables)} stable runs + {len(plan.rungs)} decay branches" if plan.stables
            else f"{len(plan.rungs)} runs")
    lines = [text_table(rows), "", f"ladder: {runs}, {plan.ladder_flops:.3g} FLOPs",
             layout_line(plan.recipe)]
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


def layout_line(recipe: Recipe) -> str:
    """Both layouts' FLOPs side by side, and what the WSD branches save."""
    try:
        scratch, branched = layout_flops(recipe)
    except RecipeError as e:  # a decay inside the warmup: no branched layout for this grid
        return f"layouts: every rung from scratch; WSD branches impossible here ({e})"
    t = recipe.train
    using = "this recipe" if t.schedule == "wsd" and t.branches else "train.schedule=wsd"
    return (f"layouts: every rung from scratch {scratch:.3g} FLOPs; WSD decay branches "
            f"({t.decay_shape}, decay_fraction {t.decay_fraction:g}; {using}) {branched:.3g} FLOPs "
            f"= {100 * branched / scratch:.1f}%, saving {100 * (1 - branched / scratch):.1f}%")
