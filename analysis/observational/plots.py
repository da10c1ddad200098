"""Plots of an observational fit (``ObservationalResult.write``), one function per figure."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from analysis.observational.data import FLOPS_UNIT
from analysis.observational.link import logistic

STYLES = {"train": dict(marker="o", color="tab:blue"), "test": dict(marker="X", color="tab:red")}


def plot_observational(result, out_dir: str | Path) -> list[Path]:
    """Figures of an ``ObservationalResult`` in ``out_dir``; returns the files written:
    ``equivalent_compute.png`` (when there is an equivalent-FLOPs axis),
    ``capability_vs_flops.png`` (when a family map was fitted) and ``parity.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    figures = [("equivalent_compute.png", _equivalent_compute),
               ("capability_vs_flops.png", _capability_vs_flops), ("parity.png", _parity)]
    written = []
    for name, draw in figures:
        fig = draw(plt, result)
        if fig is None:
            continue
        fig.tight_layout()
        tmp = out / f".{name}.tmp.png"  # complete or absent, like every other output
        fig.savefig(tmp, dpi=120)
        plt.close(fig)
        os.replace(tmp, out / name)
        written.append(out / name)
    return written


def _equivalent_compute(plt, result):
    """Actual (train o, test x) and the fitted link along the reference family's
    equivalent-FLOPs axis, test intervals as bars."""
    eq = result.equivalent
    if eq is None:
        return None
    p = result.predictions
    fig, ax = plt.subplots(figsize=(7, 5))
    x = np.log10(p["equivalent_flops"].to_numpy() * FLOPS_UNIT)
    for s, st in STYLES.items():
        m = (p["split"] == s).to_numpy()
        ax.scatter(x[m], p["actual"][m], s=36, alpha=0.8, label=f"{s} (actual)", **st)
        if s == "test":
            ax.errorbar(x[m], p["predicted"][m],
                        yerr=[p["predicted"][m] - p["low"][m], p["high"][m] - p["predicted"][m]],
                        fmt="none", ecolor="tab:red", alpha=0.35, label="test interval")
    m = (p["split"] == "predict").to_numpy()
    if m.any():
        ax.scatter(x[m], p["predicted"][m], s=24, marker="^", color="gray", label="predicted (no actual)")
    grid = np.linspace(np.nanmin(x) - 0.2, np.nanmax(x) + 0.2, 200)
    agg = (grid - math.log10(FLOPS_UNIT)) * math.log(10) * eq.slope + eq.intercept
    link = result.model.link_
    ax.plot(grid, link.floor + (1 - link.floor) * logistic(agg), color="black", lw=2, label="sigmoid link")
    ax.set_xlabel(f"{eq.ref_family}-equivalent FLOPs (log10)")
    ax.set_ylabel(result.target)
    m = result.metrics
    ax.set_title(f"{result.target}: test MSE {m['mse_test']:.2e}, MAE {m['mae_test']:.3f}")
    ax.legend(fontsize=8, loc="upper left")
    return fig


def _capability_vs_flops(plt, result):
    """PC-1 of the training models and each family's compute map."""
    maps = result.metrics.get("family_maps") or {}
    if not maps:
        return None
    p = result.predictions
    fig, ax = plt.subplots(figsize=(7, 5))
    cmap = plt.get_cmap("tab20")
    for i, (fam, fm) in enumerate(sorted(maps.items())):
        rows = p[(p["family"] == fam) & (p["split"] == "train")]
        caps = result.model.transform(result.table_rows(rows["model"]))
        lf = np.log(rows["flops"].to_numpy())
        grid = np.linspace(lf.min(), lf.max(), 20)
        color = cmap(i % 20)
        ax.scatter(np.log10(rows["flops"] * FLOPS_UNIT), caps[:, 0], color=color, s=20)
        ax.plot(np.log10(np.exp(grid) * FLOPS_UNIT), fm["intercept"][0] + fm["slope"][0] * grid,
                color=color, lw=1.2, label=f"{fam} (R² {fm['r2'][0]:.2f})" if fm["r2"][0] is not None else fam)
    ax.set_xlabel("training FLOPs (log10)")
    ax.set_ylabel("PC-1 (training models)")
    ax.set_title("Per-family compute maps: PC-1 = α_f + β_f · ln FLOPs")
    ax.legend(fontsize=6, ncol=2, loc="lower right")
    return fig


def _parity(plt, result):
    """Predicted vs actual."""
    p = result.predictions
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    for s, st in STYLES.items():
        m = (p["split"] == s).to_numpy()
        ax.scatter(p["actual"][m], p["predicted"][m], s=30, alpha=0.8, label=s, **st)
    ax.plot([0, 1], [0, 1], color="gray", ls="--", lw=1)
    ax.set_xlabel(f"actual {result.target}")
    ax.set_ylabel("predicted")
    ax.legend()
    return fig
