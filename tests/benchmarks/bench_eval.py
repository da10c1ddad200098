"""Requests/s of the batched evaluator vs a naive one-request-at-a-time loop, same model, same run.

The naive loop is what a straightforward implementation does: for every request, one forward
pass over context + continuation, log-softmax at the continuation's positions, sum. Both
paths score the same tokenised requests; the script checks they agree and prints the speed-up
(target: >= 5x).

    PYTHONPATH=. python tests/benchmarks/bench_eval.py [--tasks arc_easy,hellaswag,piqa]
        [--limit 10] [--hidden 256] [--layers 4] [--batch-size 32] [--device cpu]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default="arc_easy,hellaswag,piqa,csqa")
    ap.add_argument("--limit", type=int, default=10, help="documents per task")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    from transformers import Olmo2Config, Olmo2ForCausalLM, PreTrainedTokenizerFast

    from ladder.eval.evaluator import build_task_evaluator

    spec = importlib.util.find_spec("olmo_eval")
    tok = PreTrainedTokenizerFast(tokenizer_file=f"{spec.submodule_search_locations[0]}/tokenizers/"
                                                 "allenai_gpt-neox-olmo-dolma-v1_5.json")
    torch.manual_seed(0)
    cfg = Olmo2Config(vocab_size=50304, hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                      num_hidden_layers=args.layers, num_attention_heads=max(1, args.hidden // 64),
                      max_position_embeddings=2048)
    model = Olmo2ForCausalLM(cfg).to(args.device).eval()
    n_params = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as cache:
        ev = build_task_evaluator(args.tasks, tok, limit=args.limit, batch_size=args.batch_size,
                                  corpus_val_docs=None, seed=0, subset="first", cache_dir=cache)
    n = ev.n_requests
    print(f"model: Olmo2 {n_params / 1e6:.1f}M params (hidden {args.hidden}, {args.layers} layers, "
          f"vocab 50304) on {args.device}; tasks {args.tasks}, {args.limit} docs each: {n} requests")

    ev.score_requests(model)  # warm-up (and the one-off packing check)
    load_start = os.getloadavg()[0]
    t0 = time.perf_counter()
    batched = ev.score_requests(model)
    t_batched = time.perf_counter() - t0

    t0 = time.perf_counter()
    naive = {}
    with torch.no_grad():
        for tt in ev.tasks:
            out = []
            for r in range(tt.n_requests):
                ctx, cont = tt.ctx_tokens[tt.req_ctx[r]], tt.cont_tokens[r]
                ids = torch.tensor(np.concatenate([ctx, cont[:-1]]), device=args.device)[None]
                logits = model(input_ids=ids).logits[0, len(ctx) - 1:]  # continuation positions
                logp = torch.log_softmax(logits.float(), -1)
                out.append(logp[torch.arange(len(cont)), torch.tensor(cont, device=args.device)]
                           .sum().item())
            naive[tt.task.id] = np.array(out)
    t_naive = time.perf_counter() - t0

    diff = max(float(np.abs(batched[k] - naive[k]).max()) for k in naive)
    print(f"naive loop : {n / t_naive:8.1f} requests/s ({t_naive:.1f} s)")
    print(f"batched    : {n / t_batched:8.1f} requests/s ({t_batched:.1f} s, batch {args.batch_size}, "
          f"shared-context packing {'on' if all(ev.scorer._pack_ok.values()) else 'off'})")
    print(f"speed-up   : {t_naive / t_batched:.1f}x   (max |log-likelihood difference| {diff:.2e})")
    # The ratio depends on the machine's load (the naive loop's many small passes suffer most).
    print(f"load       : 1-min load average {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end, "
          f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads")


if __name__ == "__main__":
    main()
