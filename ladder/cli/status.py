"""`ladder status SWEEP_DIR`: per-rung state (queued/running/done/failed, tokens, last loss)
from SLURM and the run logs."""

from __future__ import annotations

import json
import sys

from ladder.exit_codes import EXIT_BAD_INPUT


def add_arguments(p) -> None:
    p.add_argument("sweep_dir", metavar="SWEEP_DIR")
    p.add_argument("--json", action="store_true")


def run(args) -> int:
    from pathlib import Path

    from ladder.recipe import RecipeError
    from ladder.sweep.slurm import JOBS_JSON, SLURM_SUBDIR, SlurmError, status
    from ladder.sweep.local import local_status
    from ladder.sweep.plan import SweepError
    from ladder.sweep.sweepdir import load_sweep

    try:
        sweep = load_sweep(args.sweep_dir)
        if (Path(args.sweep_dir) / SLURM_SUBDIR / JOBS_JSON).exists():
            st = status(args.sweep_dir)
            print(json.dumps(st.to_json(), indent=2) if args.json else st.table())
            done = st.all_done
        else:
            rows = local_status(sweep)
            if args.json:
                print(json.dumps(rows, indent=2))
            else:
                for r in rows:
                    tok = f"{r['tokens']:.4g}/{r['target_tokens']:.4g}" if r["tokens"] else "-"
                    loss = f"{r['loss']:.4f}" if r["loss"] is not None else "-"
                    print(f"{r['name']:<24} {r['role']:<7} {r['state']:<8} tokens {tok:<20} "
                          f"loss {loss}  evals {r['evals']}")
            done = all(r["state"] == "done" for r in rows)
        pred = sweep.predictions_dir / "predictions.json"
        print(f"predictions: {pred if pred.exists() else 'not yet'}")
        return 0
    except (SweepError, SlurmError, RecipeError, OSError, ValueError) as e:
        print(f"ladder status: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
