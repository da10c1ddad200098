"""`ladder plan RECIPE`: the grid with N, D, steps, batch, LR and FLOPs per run, the ladder's
total compute and its share of each target's compute, the memory estimate per process for each
size and the evaluation share of each run's FLOPs."""

from __future__ import annotations

import sys

from ladder.exit_codes import EXIT_BAD_INPUT, EXIT_OK


def add_arguments(p) -> None:
    p.add_argument("recipe", metavar="RECIPE", help="recipe YAML")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--backend", default=None,
                   help="whose resources the per-size report uses (default: the backend the recipe "
                        "has settings for, else local)")


def run(args) -> int:
    import json

    from ladder.recipe import RecipeError, load_recipe

    try:
        recipe = load_recipe(args.recipe, args.overrides)  # a bad recipe waits for no other import
        from ladder.sweep.plan import layout_flops, plan_sweep, plan_table, run_flops
        plan = plan_sweep(recipe)
    except (RecipeError, KeyError, ValueError, OSError) as e:
        print(f"ladder plan: error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps({
            "runs": [{"name": r.name, "role": role, "size": r.size, "n_params": r.n_params,
                      "multiplier": r.multiplier, "tokens": r.total_steps * r.batch_tokens,
                      "batch_tokens": r.batch_tokens, "steps": r.total_steps, "lr": r.lr,
                      "flops": run_flops(r),
                      **({"parent": r.parent, "branch_step": r.decay_start} if r.parent else {})}
                     for role, r in plan.all_runs()],
            "ladder_flops": plan.ladder_flops,
            "layouts_flops": _layouts(recipe, layout_flops),
            "targets": [{"name": t.name, "n": t.n, "d": t.d, "flops": t.flops,
                         "ladder_fraction": plan.ladder_flops / t.flops} for t in plan.targets],
        }, indent=2))
    else:
        from ladder.sweep.backend import BackendError, backend_class, default_backend
        from ladder.sweep.checks import eval_report, size_report

        try:
            backend = backend_class(args.backend or default_backend(plan.recipe)).from_plan(plan)
        except BackendError as e:
            print(f"ladder plan: error: {e}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(plan_table(plan))
        print("\nper size (memory per process: estimate, see ladder/sweep/estimate.py):")
        print(size_report(plan, backend))
        print()
        print(eval_report(plan))
    return EXIT_OK


def _layouts(recipe, layout_flops) -> dict:
    """Both layouts' FLOPs (every rung from scratch; WSD decay branches), or why not."""
    from ladder.recipe import RecipeError

    try:
        scratch, branched = layout_flops(recipe)
    except RecipeError as e:
        return {"from_scratch": None, "wsd_branches": None, "note": str(e)}
    return {"from_scratch": scratch, "wsd_branches": branched, "ratio": branched / scratch}
