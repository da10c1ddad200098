"""``ladder sizes``: the model size presets with N counted as the ladder paper does."""

from __future__ import annotations

import argparse
import json

from ladder.exit_codes import EXIT_BAD_INPUT, EXIT_OK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", help="sizes to show (default: all)")
    parser.add_argument("--seq-len", type=int, help="sequence length for FLOPs/token "
                        "(default: 4096 for paper sizes, 128 for tiny ones)")
    parser.add_argument("--vocab-size", type=int, help="embedding rows (default: 100,352 for paper "
                        "sizes, 1,024 for tiny ones)")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")


def run(args: argparse.Namespace) -> int:
    from ladder.presets import size_table

    try:
        rows = size_table(args.names or None, seq_len=args.seq_len, vocab_size=args.vocab_size)
    except KeyError as e:
        print(f"ladder sizes: error: {e.args[0]}")
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    head = ["name", "d_model", "layers", "heads", "mlp", "vocab", "N", "non-embedding N", "FLOPs/token", "seq"]
    keys = ["name", "d_model", "n_layers", "n_heads", "mlp_hidden", "vocab_size", "n_params",
            "n_nonembed", "flops_per_token", "seq_len"]
    table = [[f"{r[k]:,}" if isinstance(r[k], int) else str(r[k]) for k in keys] for r in rows]
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(head)]
    print("  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(head, widths))))
    for t in table:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(t, widths))))
    print("N counts every weight with the embedding once and no output head (the ladder paper's count); "
          "FLOPs/token = 6 x matmul weights (head included) + attention, for training.")
    return EXIT_OK
