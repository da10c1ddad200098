"""`ladder import-wandb`: turn a W&B ladder project into run directories `ladder predict` reads.

    ladder import-wandb ai2-llm/olmo-ladder --filter 'peteish-.*' --out runs/olmo-ladder

Reads each run's full history (``scan_history``, not the sampled ``history``), keeps the rows
with evaluation metrics and writes OUT/<run name>/ (run.json + metrics.jsonl). Already
imported runs are skipped unless --force. Exit status: 0 all imported or skipped, 1 some run
failed, 2 bad arguments / no connection.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import NoReturn

from ladder.exit_codes import EXIT_BAD_INPUT, EXIT_ERROR, EXIT_OK


def _n_override(text: str) -> tuple[str, int]:
    pattern, sep, n = text.rpartition("=")
    try:
        value = int(float(n.replace("_", "").replace(",", "")))
    except ValueError:
        value = 0
    if not sep or not pattern or value <= 0:
        raise argparse.ArgumentTypeError(f"expected REGEX=N (e.g. '-150M-=151898880'), got {text!r}")
    return pattern, value


def _json_dict(text: str) -> dict:
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"--mongo: invalid JSON ({e})")
    if not isinstance(d, dict):
        raise argparse.ArgumentTypeError(f"--mongo: expected a JSON object, got {text!r}")
    return d


def add_arguments(p) -> None:
    from ladder.wandb.importer import DEFAULT_EVAL_PREFIXES, DEFAULT_STEP_KEY, DEFAULT_TOKEN_KEYS
    p.add_argument("project", metavar="ENTITY/PROJECT", help="W&B project, e.g. ai2-llm/olmo-ladder")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for the run directories")
    g = p.add_argument_group("which runs")
    g.add_argument("--filter", metavar="REGEX", dest="name_filter",
                   help="keep runs whose name matches REGEX (searched; anchor with ^...$)")
    g.add_argument("--mongo", metavar="JSON", type=_json_dict,
                   help='extra W&B server filter, e.g. \'{"tags": {"$in": ["ladder"]}}\'')
    g.add_argument("--state", action="append", default=[], metavar="STATE",
                   help="keep runs in this state (finished, crashed, running, ...); repeatable")
    g.add_argument("--duplicates", choices=("merge", "error"), default="merge",
                   help="runs sharing a name (restarts): merge their histories (default) or stop")
    g.add_argument("--force", action="store_true", help="re-import runs already in DIR")
    g = p.add_argument_group("history keys")
    g.add_argument("--tokens-key", metavar="KEY", action="append",
                   help=f"history key with tokens seen (default: {', then '.join(DEFAULT_TOKEN_KEYS)})")
    g.add_argument("--step-key", default=DEFAULT_STEP_KEY, metavar="KEY",
                   help=f"history key with the optimizer step (default {DEFAULT_STEP_KEY})")
    g.add_argument("--eval-prefix", action="append", metavar="PREFIX",
                   help=f"a row is an evaluation if it has a key with this prefix "
                        f"(default {DEFAULT_EVAL_PREFIXES[0]}); repeatable")
    g.add_argument("--batch-tokens", type=int, metavar="N",
                   help="tokens per step, for tokens = step x N when no token key is logged")
    g = p.add_argument_group("model size")
    g.add_argument("--n-params", action="append", default=[], type=_n_override, metavar="REGEX=N",
                   help="N for runs whose name matches REGEX (when names carry no paper size); "
                        "repeatable, first match wins")
    p.add_argument("--timeout", type=int, default=20, help="W&B API timeout in seconds")


def run(args) -> int:
    from ladder.wandb.importer import ImportOptions, WandbImportError, import_project, open_api
    opts = ImportOptions(
        name_filter=args.name_filter, mongo=args.mongo, states=tuple(args.state),
        step_key=args.step_key, batch_tokens=args.batch_tokens, n_params=tuple(args.n_params),
        force=args.force, duplicates=args.duplicates)
    if args.tokens_key:
        opts.token_keys = tuple(args.tokens_key)
    if args.eval_prefix:
        opts.eval_prefixes = tuple(args.eval_prefix)
    if opts.batch_tokens is not None and opts.batch_tokens <= 0:
        print("ladder: error: --batch-tokens must be > 0", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        api = open_api(timeout=args.timeout)
        results = import_project(args.project, args.out, opts, api=api)
    except WandbImportError as e:
        print(f"ladder: error: {e}", file=sys.stderr)
        exit_without_wandb_teardown(EXIT_BAD_INPUT)
    counts = {s: sum(r.status == s for r in results) for s in ("imported", "skipped", "empty", "failed")}
    print(", ".join(f"{v} {k}" for k, v in counts.items()) + f" -> {args.out}")
    if counts["imported"] or counts["skipped"]:
        print(f"next: ladder predict {args.out}/* --target-name ... --target-n N --target-d D --out DIR")
    return EXIT_ERROR if counts["failed"] else EXIT_OK


def exit_without_wandb_teardown(code: int) -> NoReturn:
    """Exit now, skipping the atexit hooks. wandb's hook waits for its wandb-core service, which
    after a request the server never answered keeps retrying it, for minutes at times (the
    one-line error above came long before the command ended). Nothing of the import is pending:
    its output is written as a whole or not at all. The service watches this process's pid and
    ends itself when it is gone."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
