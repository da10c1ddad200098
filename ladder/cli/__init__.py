"""The `ladder` command. Each subcommand lives in its own module under ladder/cli/ with
``add_arguments(parser)`` and ``run(args) -> int``; modules are imported only when their
subcommand runs, so `ladder predict` never pays for importing torch."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from ladder.exit_codes import EXIT_BAD_INPUT

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "sizes": ("ladder.cli.sizes", "print the model size presets (N, non-embedding N, FLOPs/token)"),
    "train": ("ladder.cli.train", "train one rung of a recipe"),
    "tokenize": ("ladder.cli.tokenize", "tokenize raw text into token files for data.source: tokens"),
    "eval": ("ladder.cli.eval", "evaluate a causal LM checkpoint on ranked-classification tasks"),
    "plan": ("ladder.cli.plan", "print a recipe's grid, its compute and its ratio to the targets"),
    "sweep": ("ladder.cli.sweep", "run a recipe's whole ladder (local or SLURM), then predict"),
    "eval-runs": ("ladder.cli.eval_runs", "score kept checkpoints offline and merge into run logs"),
    "status": ("ladder.cli.status", "show the state of each rung of a sweep"),
    "cancel": ("ladder.cli.cancel", "stop a sweep's rungs (they keep their checkpoints)"),
    "predict": ("ladder.cli.predict", "fit two-step laws on run logs and predict a target"),
    "backtest": ("ladder.cli.backtest", "hold out the largest rungs and predict them from the rest"),
    "observe": ("ladder.cli.observe", "observational scaling law across public models"),
    "plan-ladder": ("ladder.cli.plan_ladder", "estimate prediction error vs ladder compute"),
    "import-wandb": ("ladder.cli.import_wandb", "convert a W&B ladder project into run logs"),
}


def _available() -> dict[str, tuple[str, str]]:
    return {k: v for k, v in COMMANDS.items() if importlib.util.find_spec(v[0]) is not None}


class _OneLineErrors(argparse.ArgumentParser):
    """A bad argument is one line naming it (exit 2), not the whole usage block."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = _available()
    parser = argparse.ArgumentParser(prog="ladder", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in commands.items():
        sub.add_parser(name, help=help_, add_help=False)
    # Two-stage parse: find the subcommand, then let its module define its own arguments.
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        parser.parse_args(argv or ["--help"])
        return EXIT_BAD_INPUT
    name = argv[0]
    module = importlib.import_module(commands[name][0])
    sp = _OneLineErrors(prog=f"ladder {name}", description=commands[name][1])
    module.add_arguments(sp)
    # intermixed: KEY=VALUE overrides may follow options (`ladder sweep R --out D a.b=1`)
    args = sp.parse_intermixed_args(argv[1:])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
