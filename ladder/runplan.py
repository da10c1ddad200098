"""A run's numbers from its recipe: N, D, batch, peak LR, steps, the LR schedule and the
evaluation steps (the paper's rules where the recipe leaves them open)."""

from __future__ import annotations

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

    @property
    def name(self) -> str:
        s = f"-s{self.seed}" if len(self.recipe.seeds) > 1 or self.seed != self.recipe.seeds[0] else ""
        return f"{self.size}-{multiplier_label(self.multiplier)}xC{s}"

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
    warm_tokens = pc.n if t.warmup_tokens is None else t.warmup_tokens
    warmup = min(steps - 1, math.ceil(warm_tokens / batch)) if steps > 1 else 0
    return RunPlan(recipe=recipe, size=size, multiplier=float(multiplier),
                   seed=recipe.seeds[0] if seed is None else int(seed), n_params=pc.n,
                   n_nonembed=pc.n_nonembed, vocab_size=vocab, target_tokens=d,
                   batch_tokens=batch, batch_seqs=batch // t.seq_len, total_steps=steps,
                   warmup_steps=warmup, lr=t.lr or paper_lr(pc.n, t.seq_len),
                   flops_per_token=preset.flops_per_token(t.seq_len, vocab))


def lr_lambda(step: int, plan: RunPlan) -> float:
    """Multiplier of the peak LR after ``step`` optimizer steps (LambdaLR convention)."""
    t = plan.recipe.train
    total, warm, floor = plan.total_steps, plan.warmup_steps, t.final_lr_fraction
    if warm and step < warm:
        return (step + 1) / warm
    if t.schedule == "wsd":
        decay = max(1, round(t.decay_fraction * total))
        start = total - decay
        if step < start:
            return 1.0
        frac = min(1.0, (step - start + 1) / decay)
        return 1.0 - (1.0 - floor) * frac
    frac = min(1.0, (step - warm + 1) / max(1, total - warm))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac))


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
