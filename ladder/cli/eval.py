"""`ladder eval CHECKPOINT --tasks paper --limit K --out FILE.json`: score any transformers causal
LM directory (ours or a downloaded one) on ranked-classification tasks. FILE.json is a flat
{metric name: value} object with the run log's names (the OLMo-ladder columns for the paper's
tasks). Runs on several processes with `accelerate launch -m ladder eval ...`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ladder.exit_codes import EXIT_BAD_INPUT, EXIT_OK


def positive_int(text: str) -> int:
    """argparse type: a count must be at least 1 (0 or -5 would fail later, misleadingly)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="directory of a transformers causal LM (config.json + weights)")
    parser.add_argument("--tasks", default="paper",
                        help="task set (paper, all, corpus), task name, or comma list (default: paper)")
    parser.add_argument("--limit", type=positive_int, default=None,
                        help="documents per task: the first K in file order (default: all)")
    parser.add_argument("--sample", type=positive_int, default=None,
                        help="documents per task: a fixed-seed random K instead of the first K")
    parser.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
    parser.add_argument("--out", required=True, help="output JSON file (flat metric name -> value)")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer directory or tokenizer.json (default: the checkpoint's)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="sequences per forward pass")
    parser.add_argument("--max-batch-tokens", type=positive_int, default=65536,
                        help="padded tokens per forward pass (caps batches of long sequences)")
    parser.add_argument("--max-length", type=positive_int, default=None,
                        help="longest sequence (default: the model's max_position_embeddings)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--device", default=None, help="torch device (default: accelerate's choice)")
    parser.add_argument("--corpus-val", default=None,
                        help="validation texts for the corpus_cont task: .txt (one per line) or "
                             ".jsonl with a 'text' field")
    parser.add_argument("--no-pack", action="store_true",
                        help="score every choice in its own row (no shared-context packing)")
    parser.add_argument("--cache-dir", default=None,
                        help="tokenisation cache (default $LADDER_EVAL_CACHE or ~/.cache/ladder/eval)")


def load_tokenizer(path: str):
    """Any checkpoint's tokenizer as it is. Not the recipe's loader (ladder.data.tokenizer),
    which demands an EOS token for packing documents: a downloaded model may have none, and
    scoring needs none."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    p = Path(path)
    if p.is_file() and p.suffix == ".json":
        return PreTrainedTokenizerFast(tokenizer_file=str(p))
    from ladder.data.tokenizer import cache_first

    try:
        return cache_first(AutoTokenizer, path, p.exists())  # a hub id: the cached copy first
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load a tokenizer from {path} ({e}); pass --tokenizer DIR or "
                         f"--tokenizer tokenizer.json") from None


def read_texts(path: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--corpus-val file not found: {p}")
    if p.suffix == ".jsonl":
        texts = []
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    texts.append(json.loads(line)["text"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise ValueError(f"{p} line {i}: expected a JSON object with a 'text' "
                                     f"field") from None
        return texts
    return [t for t in p.read_text(encoding="utf-8").splitlines() if t.strip()]


def run(args: argparse.Namespace) -> int:
    import torch
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM

    from ladder.eval.evaluator import build_task_evaluator
    from ladder.eval.tasks import TaskDataError

    ckpt = Path(args.checkpoint)
    if not (ckpt / "config.json").is_file():
        print(f"ladder eval: error: {ckpt} is not a transformers model directory (no config.json)", file=sys.stderr)
        return EXIT_BAD_INPUT
    if Path(args.out).is_dir():
        print(f"ladder eval: error: --out {args.out} is a directory; give a file name (e.g. {args.out}/metrics.json)",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.limit is not None and args.sample is not None:
        print("ladder eval: use either --limit (first K) or --sample (random K), not both", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        tokenizer = load_tokenizer(args.tokenizer or str(ckpt))
        corpus = read_texts(args.corpus_val) if args.corpus_val else None
        evaluator = build_task_evaluator(
            args.tasks, tokenizer, limit=args.sample if args.sample is not None else args.limit,
            batch_size=args.batch_size, corpus_val_docs=corpus, seed=args.seed,
            subset="random" if args.sample is not None else "first", max_length=args.max_length,
            pack=not args.no_pack, cache_dir=args.cache_dir, max_batch_tokens=args.max_batch_tokens)
    except (KeyError, ValueError, TaskDataError) as e:
        print(f"ladder eval: error: {e.args[0] if e.args else e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    accelerator = Accelerator(cpu=args.device == "cpu")
    dtype = "auto" if args.dtype == "auto" else getattr(torch, args.dtype)
    model = AutoModelForCausalLM.from_pretrained(str(ckpt), dtype=dtype)
    model.to(args.device or accelerator.device)
    metrics = evaluator(model, accelerator=accelerator)
    if accelerator.is_main_process:
        from analysis.files import atomic_write_text

        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(metrics, indent=1, sort_keys=True) + "\n")  # never half-written
        print(f"ladder eval: {len(metrics)} metrics on {evaluator.n_requests} requests -> {out}")
    return EXIT_OK
