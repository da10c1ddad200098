"""``ladder tokenize INPUTS --tokenizer T --out DIR``: raw text to token files for training."""

from __future__ import annotations

import argparse
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", help="text files or globs: .jsonl/.json(.gz), .parquet, .txt")
    parser.add_argument("--tokenizer", required=True,
                        help="hub id (e.g. allenai/dolma2-tokenizer), tokenizer.json, a tokenizer "
                             "directory, or 'olmo'")
    parser.add_argument("--out", required=True, help="output directory (token files + manifest.json)")
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    parser.add_argument("--text-field", default="text", help="the text field/column (default: text)")
    parser.add_argument("--unit-mb", type=float, default=64,
                        help="input MB per output part file, the unit of parallel work (default 64)")
    parser.epilog = ("train on the result with data.source=tokens data.path=OUT. "
                     "Exit codes: 0 done, 1 error, 2 bad input")


def run(args: argparse.Namespace) -> int:
    from ladder.data.errors import DataError
    from ladder.data.tokenize import tokenize_corpus
    from ladder.data.tokenizer import load_tokenizer
    from ladder.exit_codes import EXIT_BAD_INPUT, EXIT_OK
    from ladder.recipe import ModelConfig

    t0, seen = time.perf_counter(), [0, 0]

    def progress(stats: dict) -> None:
        seen[0] += stats["tokens"]
        seen[1] += 1
        rate = seen[0] / max(time.perf_counter() - t0, 1e-9)
        print(f"{stats['path']}: {stats['tokens']:,} tokens ({seen[1]} parts, {rate:,.0f} tokens/s)",
              file=sys.stderr)

    try:
        if args.workers < 1:
            raise DataError(f"--workers must be >= 1, got {args.workers}")
        if args.tokenizer == "embedded":
            raise DataError("--tokenizer: 'embedded' is trained per corpus; name a tokenizer")
        tok = load_tokenizer(ModelConfig(tokenizer=args.tokenizer), field="--tokenizer")
        m = tokenize_corpus(args.inputs, tok, args.out, workers=args.workers, text_field=args.text_field,
                            unit_bytes=int(args.unit_mb * (1 << 20)), tokenizer_spec=args.tokenizer,
                            progress=progress)
    except DataError as e:
        print(f"ladder tokenize: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    dt = time.perf_counter() - t0
    print(f"{args.out}: {m['tokens']:,} tokens, {m['documents']:,} documents in {len(m['files'])} "
          f"{m['dtype']} files ({dt:.1f} s, {m['tokens'] / max(dt, 1e-9):,.0f} tokens/s); train with "
          f"data.source=tokens data.path={args.out}")
    return EXIT_OK
