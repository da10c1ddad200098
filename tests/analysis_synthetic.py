"""A synthetic OLMo-ladder-format ladder with known two-step laws (for fast tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.runlog import PAPER_N

BPB = "eval/downstream_bpb/hellaswag_val_rc_5shot_bpb"
ACC = "eval/downstream/hellaswag_val_rc_5shot_len_norm"
VAL = "eval/c4_en-validation/CrossEntropyLoss"
LAW = dict(E=0.5, A=30.0, B=80.0, alpha=0.25, beta=0.26)
LINK = dict(lo=0.25, hi=0.95, k=9.0, x0=0.8)


def true_bpb(n, d):
    return LAW["E"] + LAW["A"] / np.asarray(n) ** LAW["alpha"] + LAW["B"] / np.asarray(d) ** LAW["beta"]


def true_acc(bpb):
    return LINK["lo"] + (LINK["hi"] - LINK["lo"]) / (1 + np.exp(LINK["k"] * (np.asarray(bpb) - LINK["x0"])))


def write_ladder(out: Path, sizes=("190M", "370M", "760M", "1B"), mults=(1, 2, 5, 10),
                 n_evals: int = 30, noise: float = 0.003, seed: int = 0,
                 acc_shift: dict[str, float] | None = None) -> list[Path]:
    """``acc_shift``: size -> accuracy added to that size's runs (a ladder whose last sizes
    break the trend of the smaller ones)."""
    rng = np.random.default_rng(seed)
    acc_shift = acc_shift or {}
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for size in sizes:
        for m in mults:
            n = PAPER_N[size]
            d_final = 20 * m * n
            tokens = np.linspace(d_final / n_evals, d_final, n_evals).round()
            bpb = true_bpb(n, tokens) * np.exp(rng.normal(0, noise, n_evals))
            acc = true_acc(bpb) + rng.normal(0, noise, n_evals) + acc_shift.get(size, 0.0)
            df = pd.DataFrame({"_step": np.arange(1, n_evals + 1) * 100,
                               "throughput/total_tokens": tokens, BPB: bpb, ACC: acc,
                               VAL: 2.0 * bpb + 1.0})
            p = out / f"{size}-{m}xC.csv"
            df.to_csv(p, index=False)
            paths.append(p)
    return paths


def write_target(out: Path, size: str = "7B", d: float = 4e11, n_evals: int = 5,
                 acc_shift: float = 0.0) -> Path:
    n = PAPER_N[size]
    tokens = np.linspace(d * 0.9, d, n_evals).round()
    bpb = true_bpb(n, np.full(n_evals, d))
    df = pd.DataFrame({"throughput/total_tokens": tokens, BPB: bpb, ACC: true_acc(bpb) + acc_shift,
                       VAL: 2.0 * bpb + 1.0})
    p = out / f"{size}-target.csv"
    df.to_csv(p, index=False)
    return p
