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

    feature: Literal["bpb", "val_ce", "task_ce"] = "bpb"  # intermediate feature: bpb (task bits per byte) | val_ce | task_ce
    step1: Literal["chinchilla", "compute"] = "chinchilla"  # chinchilla (N, D) | compute (C = 6ND)
    step1_exponents: Literal["tied", "free", "auto"] = "tied"  # tied (alpha = beta) | free | auto (tied if < 3 sizes)
    step1_points: Literal["intermediate", "final"] = "intermediate"  # intermediate (D >= step1_min_frac x final) | final
    step1_min_frac: float = 0.5  # intermediate: keep checkpoints with D >= this x final D
    step1_min_tokens: float = 0.0  # intermediate: and with D >= this many tokens (absolute cut)
    step1_per_run: int = 8  # intermediate: at most this many (evenly spaced, last included)
    link: Literal["sigmoid", "log_sigmoid"] = "log_sigmoid"  # sigmoid | log_sigmoid
    link_floor: Literal["free", "chance"] = "free"  # free | chance (pin the high-loss asymptote to chance)
    link_ceiling: Literal["one", "free"] = "one"  # one (accuracy -> 1 as loss -> 0) | free (<= 1)
    step2_skip: float = 0.1  # drop each run's first 10% of checkpoints in step 2
    wsd_step2: Literal["all", "decay"] = "decay"  # WSD runs in step 2: decay (rows from the decay's start; backtests, docs/analysis.md) | all (stable phase too)
    smooth: int = 5  # moving-average window for step 2 (1 = none)
    last: int = 5  # evaluations averaged for a run's final value (and a target's actual)
    mode: Literal["chained", "single", "direct"] = "chained"  # chained | single (single-step) | direct (arXiv 2512.08894)
    direct_exponents: Literal["tied", "free"] = "tied"  # direct: alpha = beta, or the paper's free pair
    min_evals: int = 5  # a run with fewer evaluations is rejected

    def __post_init__(self) -> None:
        for k in ("feature", "step1", "step1_points", "step1_exponents", "link", "link_floor",
                  "link_ceiling", "mode", "direct_exponents", "wsd_step2"):
            allowed = typing.get_args(_FIELD_TYPES[k])
            if getattr(self, k) not in allowed:
                raise ValueError(f"TwoStepConfig.{k}={getattr(self, k)!r}; expected one of "
                                 f"{', '.join(allowed)}")
        if not (0 <= self.step1_min_frac <= 1 and self.step1_min_tokens >= 0
                and self.step1_per_run >= 1):
            raise ValueError("TwoStepConfig: need 0 <= step1_min_frac <= 1, step1_min_tokens >= 0, "
                             "step1_per_run >= 1")
        if not 0 <= self.step2_skip < 1 or self.smooth < 1 or self.last < 1:
            raise ValueError("TwoStepConfig: need 0 <= step2_skip < 1, smooth >= 1, last >= 1")

    def validate(self) -> "TwoStepConfig":
        """Checked on construction; kept so callers written before that still read naturally."""
        return self

    def to_json(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------ data


_FIELD_TYPES = typing.get_type_hints(TwoStepConfig)
