"""The task evaluator: tokenised requests + a request scorer -> the run log's task metrics.

Per task, from each request's log-likelihood:

- acc: argmax of the raw log-likelihood is the gold choice;
- len_norm: argmax of log-likelihood per character (the paper's accuracy);
- per_token: argmax of log-likelihood per token;
- bpb: -sum log2 p(gold tokens) / bytes(gold) (the paper's task loss);
- soft / soft_log: softmax (log-softmax) over the choices' primary scores (per-character for
  len_norm tasks, raw for acc tasks), taken at the gold choice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ladder.eval.requests import TokenizedTask, default_cache_dir, prepare_task, tokenizer_fingerprint
from ladder.eval.scorer import RequestScorer
from ladder.eval.tasks import TaskGroup, resolve_task_groups

LN2 = math.log(2.0)


def task_metrics(tt: TokenizedTask, ll: np.ndarray) -> dict[str, float]:
    """Metrics of one task from its requests' log-likelihoods (nats), named like the run log."""
    n_tok = tt.n_tokens
    scores = {"acc": ll, "len_norm": ll / tt.n_chars, "per_token": ll / n_tok}
    primary = scores["acc" if tt.task.primary == "acc" else "len_norm"]
    sums = {k: 0.0 for k in ("acc", "len_norm", "per_token", "bpb", "soft", "soft_log")}
    order = np.lexsort((tt.req_choice, tt.req_doc))
    bounds = np.searchsorted(tt.req_doc[order], np.arange(tt.n_docs + 1))
    for d in range(tt.n_docs):
        idx = order[bounds[d]:bounds[d + 1]]
        label = int(tt.labels[d])
        gold = idx[label]
        for k in ("acc", "len_norm", "per_token"):
            sums[k] += float(int(np.argmax(scores[k][idx])) == label)  # first maximum wins ties
        sums["bpb"] += -ll[gold] / tt.n_bytes[gold] / LN2
        p = primary[idx]
        log_soft = p[label] - (p.max() + math.log(np.exp(p - p.max()).sum()))
        sums["soft"] += math.exp(log_soft)
        sums["soft_log"] += log_soft
    n = max(tt.n_docs, 1)
    return {tt.task.metric_name(k): v / n for k, v in sums.items()}


@dataclass
class TaskEvaluator:
    """Callable `evaluator(model, accelerator=None) -> {metric name: value}`; holds the tokenised
    requests so repeated in-loop calls only run the model."""

    groups: list[TaskGroup]
    tasks: list[TokenizedTask]
    scorer: RequestScorer
    last_loglikelihoods: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_requests(self) -> int:
        return sum(t.n_requests for t in self.tasks)

    def score_requests(self, model, accelerator=None) -> dict[str, np.ndarray]:
        """Per task id: log-likelihood (nats) of every request, in the task's request order."""
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                ll = self.scorer.score(model, self.tasks, accelerator)
        finally:
            model.train(was_training)
        out, at = {}, 0
        for tt in self.tasks:
            out[tt.task.id] = ll[at:at + tt.n_requests]
            at += tt.n_requests
        self.last_loglikelihoods = out
        return out

    def __call__(self, model, accelerator=None) -> dict[str, float]:
        ll = self.score_requests(model, accelerator)
        metrics: dict[str, float] = {}
        by_id = {}
        for tt in self.tasks:
            m = task_metrics(tt, ll[tt.task.id])
            by_id[tt.task.id] = m
            metrics.update(m)
        for g in self.groups:  # weighted aggregates (MMLU with the paper's subject weights)
            if len(g.tasks) < 2:
                continue
            for metric in ("acc", "len_norm", "per_token", "bpb", "soft", "soft_log"):
                total = sum(w * by_id[t.id][t.metric_name(metric)] for t, w in zip(g.tasks, g.weights))
                metrics[g.aggregate_name(metric)] = total / sum(g.weights)
        return {k: float(v) for k, v in metrics.items()}


def build_task_evaluator(tasks: str, tokenizer, *, limit: int | None, batch_size: int,
                         corpus_val_docs: list[str] | None, seed: int, subset: str = "random",
                         max_length: int | None = None, pack: bool = True,
                         cache_dir: str | Path | None = None,
                         max_batch_tokens: int = 65536) -> TaskEvaluator:
    """The trainer's entry point: tokenise the task set once, return `evaluator(model, accelerator)`.

    tasks: 'paper', 'all', 'corpus', a task name, or a comma list. limit: documents per task
    (None = all); with subset='random' (default, for in-loop use) a fixed-seed sample chosen by
    `seed` (pass the same seed to every rung so all rungs see the same documents), with
    subset='first' the first `limit` in file order (what `ladder eval --limit` does).
    corpus_val_docs: validation texts for the in-distribution `corpus_cont` task."""
    groups = resolve_task_groups(tasks)
    if any(t.source == "corpus" for g in groups for t in g.tasks) and not corpus_val_docs:
        raise ValueError("the corpus_cont task needs corpus_val_docs (validation document texts)")
    cache = default_cache_dir() if cache_dir is None else (Path(cache_dir) if cache_dir else None)
    tok_fp = tokenizer_fingerprint(tokenizer)
    seen: dict[str, TokenizedTask] = {}
    for g in groups:
        for t in g.tasks:
            if t.id not in seen:
                seen[t.id] = prepare_task(t, tokenizer, limit=limit, subset=subset, seed=seed,
                                          corpus_texts=corpus_val_docs, cache_dir=cache,
                                          tok_fp=tok_fp)
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(tokenizer, "eos_token_id", None)
    scorer = RequestScorer(batch_size=batch_size, max_length=max_length, pack=pack,
                           pad_token_id=pad if pad is not None else 0,
                           max_batch_tokens=max_batch_tokens)
    return TaskEvaluator(groups, list(seen.values()), scorer)
