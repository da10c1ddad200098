"""Reports: predictions.json (machine-readable), a markdown table, and PNG plots of step 1,
step 2 and the chained prediction (ladder points coloured by size, target marked, 90% band)."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np

from analysis.parallel import default_workers, parallel_map
from analysis.calibration import beyond_factors, extrapolation
from analysis.predict import Prediction
from analysis.files import atomic_write_text

SIZE_CMAP = "viridis"


def write_predictions_json(preds: list[Prediction], path, details: bool = True) -> Path:
    path = Path(path)
    atomic_write_text(path, json.dumps([p.to_json(details) for p in preds], indent=2) + "\n")
    return path


def _pts(x) -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{100 * x:.2f}"


def _fin(x) -> bool:
    return x is not None and math.isfinite(x)


def _scored(preds: list[Prediction]) -> list[Prediction]:
    """Predictions with a number and an actual (a refused task has no number to score)."""
    return [p for p in preds if p.actual_acc is not None and _fin(p.pred_acc)]


def _inside(p: Prediction) -> bool | None:
    if not (_fin(p.pred_acc_low) and _fin(p.pred_acc_high)):
        return None
    return p.pred_acc_low <= p.actual_acc <= p.pred_acc_high


def beyond_calibration_lines(preds: list[Prediction]) -> list[str]:
    """Per target, where it lies farther beyond the ladder than any backtest that calibrated its
    interval: there the widening itself is an extrapolation, which the reader must know."""
    out = []
    for target in dict.fromkeys(p.target for p in preds):
        beyond = next((p.interval_info["beyond_calibration"] for p in preds if p.target == target
                       and p.interval_info.get("beyond_calibration")), None)
        if beyond:
            parts = [f"{axis} by {f:.1f}x (the backtests reached {top:.1f}x)"
                     for axis, f, top in beyond_factors(beyond)]
            out += ["", f"Beyond the backtests: {target} extrapolates the ladder in "
                        f"{' and in '.join(parts)}; its intervals carry the calibration's widening "
                        f"past what the backtests measured."]
    return out


def markdown_table(preds: list[Prediction], reference: dict[str, tuple[float, float]] | None = None) -> str:
    """Accuracy in points (x100). ``reference``: task -> (actual, predicted) of another method,
    in points, shown side by side."""
    has_actual = any(p.actual_acc is not None for p in preds)
    head = ["task", "target", "grade", "predicted", "90% interval", "pred. loss"]
    if has_actual:
        head += ["actual", "error", "actual loss", "in interval"]
    if reference:
        head += ["reference pred.", "reference error"]
    head += ["fits"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in preds:
        row = [p.task, p.target, p.grade_name, _pts(p.pred_acc),
               f"[{_pts(p.pred_acc_low)}, {_pts(p.pred_acc_high)}]",
               f"{p.pred_loss:.4f}" if math.isfinite(p.pred_loss) else "—"]
        if has_actual:
            if p.actual_acc is not None:
                inside = _inside(p) if _fin(p.pred_acc) else None
                row += [_pts(p.actual_acc),
                        f"{100 * (p.pred_acc - p.actual_acc):+.2f}" if _fin(p.pred_acc) else "—",
                        f"{p.actual_loss:.4f}" if _fin(p.actual_loss) else "—",
                        "—" if inside is None else "yes" if inside else "no"]
            else:
                row += ["—"] * 4
        if reference:
            ref = reference.get(p.task)
            row += [f"{ref[1]:.2f}", f"{ref[1] - ref[0]:+.2f}"] if ref else ["—", "—"]
        row.append("ok" if p.converged else "**NOT CONVERGED**")
        lines.append("| " + " | ".join(row) + " |")
    scored = _scored(preds)
    if scored:
        errs = [abs(p.pred_acc - p.actual_acc) for p in scored]
        inside = [x for x in map(_inside, scored) if x is not None]
        widths = [p.pred_acc_high - p.pred_acc_low for p in preds
                  if _fin(p.pred_acc_low) and _fin(p.pred_acc_high)]
        lines.append("")
        lines.append(f"Mean absolute error: {100 * np.mean(errs):.2f} points; "
                     f"max {100 * np.max(errs):.2f}"
                     + (f"; interval coverage {np.mean(inside):.0%}" if inside else "")
                     + (f"; median interval width {100 * np.median(widths):.2f} points" if widths else "")
                     + ".")
    info = next((p.interval_info for p in preds if p.interval_info.get("method")), None)
    if info:
        lines += ["", f"Intervals: {info['method']}."]
    used = next((p.fits for p in preds if "points" in p.fits.get("step1", {})), None)
    if used:
        lines += ["", f"Points used: step 1, {used['step1']['points']}; step 2, "
                      f"{used['step2']['points']}."]
    lines += beyond_calibration_lines(preds)
    lines += [f"\nUnconstrained: {p.target} {p.task}: {p.interval_info['unconstrained']}." for p in preds
              if p.interval_info.get("unconstrained")]
    graded = [p for p in preds if p.grade is not None and p.grade.grade != "reliable"]
    if graded:
        lines += ["", "Trust grades other than reliable:"]
        lines += [f"- {p.task}: **{p.grade.grade}**: {'; '.join(p.grade.reasons)}"
                  for p in {p.task: p for p in graded}.values()]
    return "\n".join(lines) + "\n"


def write_markdown(preds: list[Prediction], path, title: str, config=None, plots=(), extra="") -> Path:
    parts = [f"# {title}\n", markdown_table(preds)]
    warns = [w for p in preds for w in p.warnings]
    if warns:
        parts.append("\n## Fit warnings\n\n" + "\n".join(f"- {w}" for w in dict.fromkeys(warns)) + "\n")
    if config is not None:
        parts.append("\n## Configuration\n\n```json\n" + json.dumps(config.to_json(), indent=2) + "\n```\n")
    if plots:
        parts.append("\n## Plots\n\n" + "\n".join(f"![{Path(p).stem}]({Path(p).name})" for p in plots) + "\n")
    if extra:
        parts.append("\n" + extra)
    atomic_write_text(path, "".join(parts))
    return Path(path)


# ------------------------------------------------------------------------------ plots


def _size_colors(preds: list[Prediction]):
    import matplotlib
    ns = sorted({s.n for p in preds for s in p.model.series})
    cmap = matplotlib.colormaps[SIZE_CMAP]
    return {n: cmap(i / max(len(ns) - 1, 1) * 0.9) for i, n in enumerate(ns)}


def _label(n: float) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.1f}B"
    if n >= 1e6:
        return f"{n / 1e6:.0f}M"
    return f"{n / 1e3:.0f}K"


def _grid(k: int):
    # a bare Figure (Agg canvas), not pyplot: pyplot's import and figure manager cost more
    # than a figure, and nothing here is shown on screen
    from matplotlib.figure import Figure
    cols = min(4, k)
    rows = math.ceil(k / cols)
    # at least 5.5 in wide so a one-task figure keeps room for its legend
    fig = Figure(figsize=(max(3.4 * cols, 5.5), 2.9 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[k:]:
        ax.set_visible(False)
    return fig, axes.flat


def _style(ax, title: str, xlabel: str, ylabel: str, logx: bool) -> None:
    """Few ticks: matplotlib builds an artist per tick, and default log axes over 6 decades
    with minor ticks made plotting the slowest part of `ladder predict`."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator
    if logx:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, numticks=5))
        ax.xaxis.set_minor_locator(NullLocator())
        # plain "1e11" labels: the default 10^x labels go through mathtext, the slowest part
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0e}".replace("e+", "e")))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.yaxis.set_major_locator(MaxNLocator(5))
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def _finish(fig, handles, path):
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7), frameon=False,
               fontsize=8, bbox_to_anchor=(0.5, 0.0))
    rows = round(fig.get_figheight() / 2.9)
    # fixed margins: tight_layout costs seconds per figure and the grid is regular
    width = fig.get_figwidth()  # margins in inches, so tick labels fit at any width
    fig.subplots_adjust(left=0.8 / width, right=1 - 0.1 / width, top=1 - 0.14 / rows, bottom=0.3 / rows + 0.02,
                        wspace=0.32, hspace=0.55)
    fig.savefig(path, dpi=130)
    return Path(path)


def _scatter_runs(ax, series, ys, colors) -> None:
    """Each run's final point at its compute, coloured by size: one scatter per stretch of
    consecutive runs of one size (a scatter per run cost more than drawing it; one scatter of
    many colours would draw the markers differently), in run order."""
    for _, group in itertools.groupby(zip(series, ys), key=lambda t: t[0].n):
        group = list(group)
        ax.scatter([6 * s.n * s.d for s, _ in group], [y for _, y in group],
                   color=colors[group[0][0].n], s=18, zorder=3)


def _legend_handles(colors, with_actual):
    from matplotlib.lines import Line2D
    h = [Line2D([], [], marker="o", ls="", color=c, label=_label(n)) for n, c in colors.items()]
    h.append(Line2D([], [], marker="*", ls="", color="crimson", markersize=10, label="prediction (90% interval)"))
    if with_actual:
        h.append(Line2D([], [], marker="X", ls="", color="black", label="actual"))
    return h


def plot_step1(preds: list[Prediction], path) -> Path:
    """Feature vs compute: ladder finals, the law along each size, the target's prediction."""
    preds = [p for p in preds if p.model is not None and p.model.step1 is not None
             and p.model.single is None]
    if not preds:
        return None
    colors = _size_colors(preds)
    fig, axes = _grid(len(preds))
    for ax, p in zip(axes, preds):
        m = p.model
        _scatter_runs(ax, m.series, [np.mean(s.feature[s.tail(m.config.last)]) for s in m.series], colors)
        for n in colors:
            ds = np.geomspace(min(s.d for s in m.series) / 2, p_d(p) * 1.5, 60)
            ax.plot(6 * n * ds, m.predict_loss(np.full_like(ds, n), ds), color=colors[n], lw=0.8, alpha=0.7)
        tn, td = p_n(p), p_d(p)
        ds = np.geomspace(min(s.d for s in m.series) / 2, td * 1.5, 60)
        ax.plot(6 * tn * ds, m.predict_loss(np.full_like(ds, tn), ds), color="crimson", lw=1, ls="--")
        yerr = None
        if p.pred_loss_low is not None and math.isfinite(p.pred_loss_low or float("nan")):
            yerr = [[p.pred_loss - p.pred_loss_low], [p.pred_loss_high - p.pred_loss]]
        ax.errorbar(6 * tn * td, p.pred_loss, yerr=yerr, fmt="*", color="crimson", ms=10, capsize=3, zorder=4)
        if p.actual_loss is not None:
            ax.scatter(6 * tn * td, p.actual_loss, marker="X", color="black", s=30, zorder=5)
        _style(ax, _title(p), "compute 6ND (FLOPs)", _feature_label(m.config.feature), True)
    return _finish(fig, _legend_handles(colors, any(p.actual_loss is not None for p in preds)), path)


def _title(p: Prediction) -> str:
    return p.task if p.grade is None else f"{p.task} ({p.grade.grade})"


def _feature_label(feature: str) -> str:
    return {"bpb": "task loss (bits per byte)", "val_ce": "C4 validation CE",
            "task_ce": "task CE (-log p correct)"}.get(feature, feature)


def p_n(p: Prediction) -> float:
    return float(p.target_n)


def p_d(p: Prediction) -> float:
    return float(p.target_d)


def plot_step2(preds: list[Prediction], path) -> Path:
    """Accuracy vs feature on the (smoothed) intermediate checkpoints, the fitted link, and
    the target at its predicted loss."""
    preds = [p for p in preds if p.model is not None and p.model.step2 is not None]
    if not preds:
        return None
    colors = _size_colors(preds)
    fig, axes = _grid(len(preds))
    for ax, p in zip(axes, preds):
        m, d2 = p.model, p.model.data2
        ax.scatter(d2.x, d2.y, c=[colors[n] for n in d2.n], s=4, alpha=0.5, lw=0)
        lo = min(np.min(d2.x), p.pred_loss if math.isfinite(p.pred_loss) else np.inf)
        if _fin(p.actual_loss):
            lo = min(lo, p.actual_loss)
        xs = np.linspace(lo * 0.95, np.max(d2.x) * 1.02, 200)
        ax.plot(xs, m.step2.predict(xs), color="black", lw=1)
        if math.isfinite(p.pred_loss):
            ax.errorbar(p.pred_loss, p.pred_acc, yerr=_yerr(p), fmt="*", color="crimson", ms=10,
                        capsize=3, zorder=4)
        if p.actual_acc is not None and _fin(p.actual_loss):
            ax.scatter(p.actual_loss, p.actual_acc, marker="X", color="black", s=30, zorder=5)
        _style(ax, _title(p), _feature_label(m.config.feature), "accuracy", False)
    return _finish(fig, _legend_handles(colors, any(p.actual_acc is not None for p in preds)), path)


def _yerr(p: Prediction):
    """The interval as an error bar; none where there is no interval."""
    if not (_fin(p.pred_acc_low) and _fin(p.pred_acc_high)):
        return None
    return [[p.pred_acc - p.pred_acc_low], [p.pred_acc_high - p.pred_acc]]


def chained_band(p: Prediction, ds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The target size's 90% band along training tokens ``ds``: the bootstrap band, widened by
    the prediction's calibration at each point's own distance beyond the ladder, so the band
    drawn at the target's D is the interval reported (a raw band would look narrower)."""
    m, tn = p.model, p_n(p)
    n = np.full_like(ds, tn)
    lo, hi = p.interval.band(m, n, ds)
    if p.calibration is None:
        return lo, hi
    center = m.predict_acc(n, ds)
    fit_n, fit_d = [s.n for s in m.series], [s.d for s in m.series]
    dn, dt = np.array([extrapolation(fit_n, fit_d, tn, d) for d in ds]).T
    lo, hi = p.calibration.widen_many(p.task, center, np.minimum(lo, center),
                                      np.maximum(hi, center), dn, dt)
    return np.clip(lo, 0, 1), np.clip(hi, 0, 1)


def plot_chained(preds: list[Prediction], path) -> Path:
    """Accuracy vs compute: ladder finals, the chained law for each size and for the target's
    N (with its 90% band), the prediction and the actual."""
    preds = [p for p in preds if p.model is not None and not p.model.refused]
    if not preds:
        return None
    colors = _size_colors(preds)
    fig, axes = _grid(len(preds))
    for ax, p in zip(axes, preds):
        m = p.model
        _scatter_runs(ax, m.series, [np.mean(s.acc[s.tail(m.config.last)]) for s in m.series], colors)
        dmin = min(s.d for s in m.series) / 2
        for n in colors:
            ds = np.geomspace(dmin, max(s.d for s in m.series) * 1.5, 50)
            ax.plot(6 * n * ds, m.predict_acc(np.full_like(ds, n), ds), color=colors[n], lw=0.8, alpha=0.7)
        tn, td = p_n(p), p_d(p)
        ds = np.geomspace(dmin, td * 1.5, 50)
        ax.plot(6 * tn * ds, m.predict_acc(np.full_like(ds, tn), ds), color="crimson", lw=1, ls="--")
        if p.interval is not None and p.interval.thetas is not None and not p.interval.unavailable:
            lo, hi = chained_band(p, ds)
            ax.fill_between(6 * tn * ds, lo, hi, color="crimson", alpha=0.15, lw=0)
        ax.errorbar(6 * tn * td, p.pred_acc, yerr=_yerr(p), fmt="*", color="crimson", ms=10,
                    capsize=3, zorder=4)
        if p.actual_acc is not None:
            ax.scatter(6 * tn * td, p.actual_acc, marker="X", color="black", s=30, zorder=5)
        _style(ax, _title(p), "compute 6ND (FLOPs)", "accuracy", True)
    return _finish(fig, _legend_handles(colors, any(p.actual_acc is not None for p in preds)), path)




def write_report(preds: list[Prediction], out_dir, title: str, config=None, plots: bool = True,
                 extra: str = "") -> dict[str, Path]:
    """predictions.json, report.md and (optionally) step1.png, step2.png, chained.png."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": write_predictions_json(preds, out / "predictions.json")}
    pngs = []
    if plots and preds:
        jobs = [(plot_chained, out / "chained.png")]
        if any(p.model is not None and p.model.single is None for p in preds):
            jobs = [(plot_step1, out / "step1.png"), (plot_step2, out / "step2.png")] + jobs
        # rendering dominates; the figures are independent: one process each (3 figures on
        # 2 workers left one process drawing two), matplotlib imported once before the fork
        import matplotlib  # only here: its import alone is most of a --no-plots report's time
        matplotlib.use("Agg")
        import matplotlib.figure  # noqa: F401
        from matplotlib.backends import backend_agg  # noqa: F401
        workers = default_workers()
        pngs = [png for png in parallel_map(lambda job: job[0](preds, job[1]), jobs,
                                            len(jobs) if workers > 1 else 1) if png is not None]
    files["markdown"] = write_markdown(preds, out / "report.md", title, config, pngs, extra)
    for p_ in pngs:
        files[p_.stem] = p_
    return files


def backtest_markdown(results, *, coverage: dict | None = None) -> str:
    """backtest.md: per held-out scenario, the mean error and each prediction against its actual;
    with ``coverage`` (scenario -> leave-one-scenario-out figures) the calibrated coverage."""
    md = ["# Backtest\n"]
    coverage = coverage or {}
    for r in results:
        md.append(f"\n## Held out: {', '.join(r.holdout)}\n")
        c = coverage.get("+".join(r.holdout)) or {}
        cov = ""
        if c.get("coverage") is not None:
            cov = (f", 90% interval coverage {c['coverage']:.2f} calibrated without this scenario "
                   f"(median width {100 * c['median_width']:.2f} points; raw bootstrap "
                   f"{c['coverage_raw']:.2f}, {100 * c['median_width_raw']:.2f} points)")
        md.append(f"\nMean absolute error {100 * r.mae():.2f} points (task loss {r.loss_mae():.4f}, "
                  f"ARE {100 * r.loss_are():.2f}%)" + cov + ".\n\n")
        md.append("| task | target | predicted | actual | error | fits |\n|---|---|---|---|---|---|\n")
        for p in r.predictions:
            err = f"{100 * (p.pred_acc - p.actual_acc):+.2f}" if _fin(p.pred_acc) else "refused"
            md.append(f"| {p.task} | {p.target} | {_pts(p.pred_acc)} | {_pts(p.actual_acc)} | "
                      f"{err} | {'ok' if p.converged else '**NOT CONVERGED**'} |\n")
        are = r.per_task_loss_are()
        md.append("\n| task | MAE | loss ARE % |\n|---|---|---|\n" + "".join(
            f"| {t} | {100 * v:.2f} | {100 * are.get(t, float('nan')):.2f} |\n"
            for t, v in r.per_task().items()))
    return "".join(md)
