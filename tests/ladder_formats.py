"""One synthetic ladder with known laws, written in every input format a lab might bring: a wide
table (CSV or parquet), a long table, lm-evaluation-harness results (a results JSON per
checkpoint) with a runs table, and one final evaluation per run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.runlog import PAPER_N
from analysis_synthetic import true_acc, true_bpb

TOKENS_PER_STEP = 4096
SIZES = ("190M", "370M", "760M")
MULTS = (1, 2, 5)
CHANCE = {"easy": 0.25, "coin": 0.5}  # 'coin': a 2-way task the ladder never lifts off chance


def rows(n_evals: int = 8, seed: int = 0, sizes=SIZES, mults=MULTS) -> pd.DataFrame:
    """One row per checkpoint: run, n, step, tokens and metrics named as a harness would
    (easy/acc_norm, easy/bpb, coin/acc, val/loss)."""
    rng = np.random.default_rng(seed)
    out = []
    for size in sizes:
        for m in mults:
            n = PAPER_N[size]
            final_step = int(round(20 * m * n / TOKENS_PER_STEP))
            steps = np.unique(np.linspace(final_step / n_evals, final_step, n_evals).round().astype(int))
            for s in steps:
                d = float(s * TOKENS_PER_STEP)
                bpb = float(true_bpb(n, d) * np.exp(rng.normal(0, 0.003)))
                out.append({"run": f"{size}-{m}xC", "n": n, "step": int(s), "tokens": d,
                            "easy/acc_norm": float(true_acc(bpb) + rng.normal(0, 0.003)),
                            "easy/bpb": bpb,
                            "coin/acc": float(0.5 + rng.normal(0, 0.004)),
                            "val/loss": 2.0 * bpb + 1.0})
    return pd.DataFrame(out)


def wide_csv(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=False)
    return path


def long_csv(df: pd.DataFrame, path: Path) -> Path:
    long = df.melt(id_vars=["run", "n", "step", "tokens"], var_name="metric", value_name="value")
    long.sample(frac=1.0, random_state=0).to_csv(path, index=False)  # any row order
    return path


def harness_dir(df: pd.DataFrame, root: Path) -> tuple[Path, Path]:
    """lm-evaluation-harness output: ``<root>/<org>__<model>/results_<date>.json`` per checkpoint
    (the revision names the step), and a runs table with N and tokens per step."""
    for i, r in enumerate(df.to_dict("records")):
        d = root / f"toy__{r['run']}"
        d.mkdir(parents=True, exist_ok=True)
        doc = {"results": {
            "easy": {"alias": "easy", "acc,none": r["easy/acc_norm"], "acc_stderr,none": 0.01,
                     "acc_norm,none": r["easy/acc_norm"], "acc_norm_stderr,none": 0.01},
            "coin": {"alias": "coin", "acc,none": r["coin/acc"], "acc_stderr,none": "N/A"},
            "wikitext": {"alias": "wikitext", "bits_per_byte,none": r["easy/bpb"],
                         "word_perplexity,none": 2.0 ** (3 * r["easy/bpb"])}},
            "config": {"model": "hf", "model_args": f"pretrained=toy/{r['run']},revision=step{r['step']},"
                                                    f"dtype=float32"},
            "n-shot": {"easy": 0, "coin": 0}, "versions": {"easy": 1.0, "coin": 1.0}}
        (d / f"results_2026-01-01T00-00-{i:02d}.json").write_text(json.dumps(doc))
    table = root.parent / "runs.csv"
    pd.DataFrame({"run": df["run"].unique(), "n": [PAPER_N[r.split("-")[0]] for r in df["run"].unique()],
                  "tokens_per_step": TOKENS_PER_STEP}).to_csv(table, index=False)
    return root, table


def final_only(df: pd.DataFrame) -> pd.DataFrame:
    """The last evaluation of each run (what many published ladders keep)."""
    return df.groupby("run", sort=False).tail(1).reset_index(drop=True)


TASK_SPEC = """\
tasks:
  easy:
    accuracy: easy/acc_norm
    loss: easy/bpb
    chance: 0.25
    metric: acc_norm
  coin:
    accuracy: coin/acc
    choices: 2
sets:
  mine: [easy]
"""
