"""`ladder observe`: observational scaling law across public models (Ruan et al., 2024).

Fits imputation + PCA + sigmoid link on the training models of a benchmark table and
predicts a downstream metric for the held-out ones. Writes DIR/metrics.json,
DIR/predictions.csv and plots. FLOPs are in the table's unit (column "FLOPs (1E21)").
"""

from __future__ import annotations

import argparse
import sys

from ladder.exit_codes import EXIT_BAD_INPUT


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bench_csv", metavar="BENCH_CSV",
                   help="benchmark table: Model, Model Family, FLOPs (1E21) and score columns in [0, 1]")
    p.add_argument("--join", metavar="CSV", action="extend", nargs="+", default=[],
                   help="extra metric CSV(s) joined on Model (the target may come from one)")
    p.add_argument("--target", metavar="METRIC", required=True, help="column to predict (fractions in [0, 1])")
    p.add_argument("--predictors", metavar="M1,M2,...",
                   help="comma-separated predictor benchmarks (default: every score column of "
                        "BENCH_CSV except the target)")
    p.add_argument("--pcs", type=int, default=3, help="number of principal components (default 3)")
    split = p.add_mutually_exclusive_group(required=True)
    split.add_argument("--split-file", metavar="CSV",
                       help="CSV with columns Model,split (train/test); unlisted models are left out")
    split.add_argument("--cutoff-flops", metavar="X", type=float,
                       help="train = models with FLOPs <= X, in units of 1e21 FLOPs (the CSV's "
                            "'FLOPs (1E21)' unit: 84 means 8.4e22); unknown FLOPs go to test")
    split.add_argument("--test-families", metavar="F1,F2,...",
                       help="hold out whole model families (comma-separated 'Model Family' values)")
    split.add_argument("--test-fraction", metavar="P", type=float,
                       help="hold out a random fraction of the models (seeded by --seed)")
    p.add_argument("--method", choices=("select", "paper"), default="paper",
                   help="paper (default): the authors' method (rank-1 imputation, floor in "
                        "[0, 0.2], least squares); select: choose imputation rank, sigmoid floor and "
                        "link loss/ridge by forward validation on the training models only")
    p.add_argument("--chance-level", type=float, default=0.0,
                   help="the target's chance level, used by the fixed-floor candidates of "
                        "--method select (default 0, e.g. 0.25 for 4-way multiple choice)")
    p.add_argument("--validation", choices=("auto", "forward", "kfold"), default="auto",
                   help="validation of --method select: forward (hold out the training models "
                        "with the most FLOPs), kfold, or auto (forward when all FLOPs are known)")
    p.add_argument("--ref-family", metavar="FAMILY",
                   help="reference family of the equivalent-FLOPs plot axis (default Llama-2 if it "
                        "has 2+ models with FLOPs, else the largest such family)")
    p.add_argument("--interval", type=float, default=0.9, help="prediction-interval level (default 0.9)")
    p.add_argument("--n-boot", type=int, default=200, help="bootstrap refits for intervals (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the random split")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--out", metavar="DIR", required=True, help="output directory")


def run(args: argparse.Namespace) -> int:
    from analysis.observational.data import (
        FAMILY_COL, FLOPS_COL, MODEL_COL, load_benchmark_table, split_by_cutoff, split_by_family,
        split_from_file, split_random)
    from analysis.observational.errors import ObservationalError
    from analysis.observational.run import run_observational

    try:
        from analysis.files import check_output_dir, output_dir
        check_output_dir(args.out)
        table = load_benchmark_table(args.bench_csv, args.join)
        _check_table(table, args)
        if args.split_file:
            split = split_from_file(table[MODEL_COL].tolist(), args.split_file)
        elif args.cutoff_flops is not None:
            split = split_by_cutoff(table[FLOPS_COL].to_numpy(dtype=float), args.cutoff_flops)
        elif args.test_families:
            split = split_by_family(table[FAMILY_COL].astype(str).to_numpy(),
                                    _names(args.test_families, "--test-families"))
        else:
            split = split_random(len(table), args.test_fraction, args.seed)
        predictors = _names(args.predictors, "--predictors") if args.predictors else None
        if args.n_boot < 10:
            raise ObservationalError(f"--n-boot must be at least 10, got {args.n_boot}")
        result = run_observational(
            table, args.target, split, predictors=predictors, n_components=args.pcs,
            ref_family=args.ref_family, level=args.interval, n_boot=args.n_boot, seed=args.seed,
            method=args.method, chance=args.chance_level, validation=args.validation)
        with output_dir(args.out, "ladder observe") as tmp:  # written as one set
            result.write(tmp, plots=not args.no_plots)
    except (ObservationalError, OSError, ValueError) as e:
        print(f"ladder observe: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT

    m = result.metrics
    ev = ", ".join(f"{v:.1%}" for v in m["explained_variance"])
    print(f"{m['target']} from {m['n_components']} PCs of {', '.join(m['predictors'])}")
    print(f"  models: {m['n_train']} train, {m['n_test']} test, {m['n_predict_only']} predicted without actual")
    print(f"  explained variance per PC: {ev} (total {m['explained_variance_cumulative']:.1%})")
    meth = m["method"]
    if meth["requested"] == "select":
        print(f"  method: {meth['selected']} (selected by {meth['validation']} validation on the "
              f"training models: CV MSE {meth['cv_mse']:.4e}; {meth['seconds']:.2f} s)")
    else:
        print(f"  method: {meth['selected']}")
    print(f"  train MSE {m['mse_train']:.4e}   test MSE {m['mse_test']:.4e}   test MAE {m['mae_test']:.4f}")
    print(f"  {m['interval']['level']:.0%} interval coverage on test: {m['interval']['coverage_test']:.0%}")
    print(f"  fit {m['fit_seconds'] * 1e3:.1f} ms; results in {args.out}")
    return 0


def _check_table(table, args) -> None:
    """FLOPs must be numbers; predictors finite accuracies in [0, 1], the scale the principal
    components and the sigmoid link are fitted on (a percent column would dominate the PCs)."""
    import numpy as np
    import pandas as pd

    from analysis.observational.data import FLOPS_COL, MODEL_COL, benchmark_columns
    from analysis.observational.errors import ObservationalError

    raw = table[FLOPS_COL]
    flops = pd.to_numeric(raw, errors="coerce")
    bad = np.flatnonzero((flops.isna() & raw.notna()).to_numpy() | np.isinf(flops.to_numpy(dtype=float)))
    if bad.size:
        raise ObservationalError(f"{args.bench_csv}: column {FLOPS_COL!r} must hold numbers, got "
                                 f"{raw.iloc[bad[0]]!r} for {table[MODEL_COL].iloc[bad[0]]}")
    table[FLOPS_COL] = flops
    cols = _names(args.predictors, "--predictors") if args.predictors else benchmark_columns(table)
    for c in cols:
        if c not in table.columns:
            continue  # named by the fit's own error
        v = pd.to_numeric(table[c], errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(np.isinf(v) | (v < 0) | (v > 1))
        if bad.size:
            raise ObservationalError(
                f"{args.bench_csv}: predictor {c!r} is {v[bad[0]]:g} for {table[MODEL_COL].iloc[bad[0]]}; "
                f"expected accuracies as fractions in [0, 1] (divide percentages by 100)")


def _names(text: str, flag: str) -> list[str]:
    from analysis.observational.errors import ObservationalError

    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise ObservationalError(f"{flag} is empty")
    return names
