"""How a two-step fit is made: the choices the backtests compare (docs/analysis.md)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
import typing
from typing import Literal

VAL_CE = "eval/c4_en-validation/CrossEntropyLoss"
FEATURES = ("bpb", "val_ce", "task_ce")


@dataclass(frozen=True)
class TwoStepConfig:
    """How to fit. Defaults are the choices the backtests support (docs/analysis.md)."""

    # intermediate feature: bpb (the task's own loss: bits per byte for OLMES) | val_ce (the runs'
    # validation loss) | task_ce (-soft_log) | the name of any loss column every run has
    feature: str = "bpb"
    step1: str = "chinchilla"  # a step-1 law of analysis/laws/registry.py: chinchilla (N, D) | compute (C = 6ND)
    step1_exponents: Literal["tied", "free", "auto"] = "tied"  # tied (alpha = beta) | free | auto (tied if < 3 sizes)
    step1_points: Literal["intermediate", "final"] = "intermediate"  # intermediate (D >= step1_min_frac x final) | final
    step1_min_frac: float = 0.5  # intermediate: keep checkpoints with D >= this x final D
    step1_min_tokens: float = 0.0  # intermediate: and with D >= this many tokens (absolute cut)
    step1_per_run: int = 8  # intermediate: at most this many (evenly spaced, last included)
    link: str = "log_sigmoid"  # a link of analysis/laws/registry.py: sigmoid | log_sigmoid
    link_floor: Literal["free", "chance"] = "free"  # free | chance (pin the high-loss asymptote to chance)
    link_ceiling: Literal["one", "free"] = "one"  # one (accuracy -> 1 as loss -> 0) | free (<= 1)
    step2_skip: float = 0.1  # drop each run's first 10% of checkpoints in step 2
    wsd_step2: Literal["all", "decay"] = "decay"  # WSD runs in step 2: decay (rows from the decay's start; backtests, docs/analysis.md) | all (stable phase too)
    smooth: int = 5  # moving-average window for step 2 (1 = none)
    last: int = 5  # evaluations averaged for a run's final value (and a target's actual)
    mode: str = "chained"  # chained | single (single-step) | direct (arXiv 2512.08894)
    direct_exponents: str = "tied"  # direct: alpha = beta, or the paper's free pair (registry)
    min_evals: int = 1  # a run with fewer evaluations is rejected (final-only ladders: 1)

    def __post_init__(self) -> None:
        if not isinstance(self.feature, str) or not self.feature.strip():
            raise ValueError(f"TwoStepConfig.feature={self.feature!r}; expected one of "
                             f"{', '.join(FEATURES)} or a column name")
        for k, allowed in choices().items():
            if getattr(self, k) not in allowed:
                raise ValueError(f"TwoStepConfig.{k}={getattr(self, k)!r}; expected one of "
                                 f"{', '.join(allowed)}")
        if not (0 <= self.step1_min_frac <= 1 and self.step1_min_tokens >= 0
                and self.step1_per_run >= 1):
            raise ValueError("TwoStepConfig: need 0 <= step1_min_frac <= 1, step1_min_tokens >= 0, "
                             "step1_per_run >= 1")
        if not 0 <= self.step2_skip < 1 or self.smooth < 1 or self.last < 1 or self.min_evals < 1:
            raise ValueError("TwoStepConfig: need 0 <= step2_skip < 1, smooth >= 1, last >= 1, "
                             "min_evals >= 1")

    def to_json(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------ data


_FIELD_TYPES = typing.get_type_hints(TwoStepConfig)


def choices() -> dict[str, tuple[str, ...]]:
    """Every choice field and its allowed values: the laws by name from the registry, the
    rest from their Literal types. The CLI's option choices are these."""
    from analysis.laws.registry import DIRECT_LAWS, LINKS, MODES, STEP1_LAWS

    out = {k: typing.get_args(t) for k, t in _FIELD_TYPES.items() if typing.get_origin(t) is Literal}
    return {**out, "step1": tuple(STEP1_LAWS), "link": tuple(LINKS), "mode": MODES,
            "direct_exponents": tuple(DIRECT_LAWS)}
