"""Before a GPU-hour is spent: memory per process and the evaluation share of FLOPs per rung.

Memory (bytes per process, the figure to hold against a GPU's memory):
  params     fp32 master weights, 4 B/param (FSDP: / processes)
  grads      fp32, 4 B/param (FSDP: / processes; DDP with several processes adds its bucket copy)
  optimizer  AdamW's two fp32 moments, 8 B/param (FSDP: / processes)
  activations  saved for backward per micro-batch: per token and layer 16 d + 4 f values (the
             attention inputs/outputs, the four RMSNorms' inputs and normalised outputs, the
             SwiGLU's three f-wide tensors and its product; counted with saved-tensor hooks on
             Olmo2 layers); bf16 autocast stores the matmul inputs in bf16 and the norms in fp32.
             Activation checkpointing keeps each layer's input and one layer's activations.
  logits     the loss's peak: logits, their fp32 copy and softmax, the saved gradient
CUDA's context and allocator fragmentation come on top (~1-3 GiB on a GPU).

Evaluation share: forward FLOPs of every evaluation (validation sequences and the task rows the
scorer really runs, counted from the tokenised requests) over the run's training FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2 ** 30


@dataclass
class MemoryEstimate:
    params: float
    grads: float
    optimizer: float
    activations: float
    logits: float

    @property
    def total(self) -> float:
        return self.params + self.grads + self.optimizer + self.activations + self.logits

    def to_json(self) -> dict[str, float]:
        return {"params": self.params, "grads": self.grads, "optimizer": self.optimizer,
                "activations": self.activations, "logits": self.logits, "total": self.total}


def activation_bytes_per_token_layer(d: int, f: int, bf16: bool) -> float:
    values = 16 * d + 4 * f
    return 2 * values + 4 * 8 * d if bf16 else 4 * values


def memory_estimate(plan, *, micro_batch: int, processes: int, fsdp: bool, bf16: bool,
                    activation_checkpointing: bool = False) -> MemoryEstimate:
    """Peak bytes per process of one training step of ``plan`` (a RunPlan)."""
    from ladder.presets import get_preset

    preset = get_preset(plan.size)
    n_all = preset.params(plan.vocab_size).n_total
    shard = processes if fsdp else 1
    params, optim = 4 * n_all / shard, 8 * n_all / shard
    grads = 4 * n_all / shard * (2 if processes > 1 and not fsdp else 1)
    tokens = micro_batch * plan.recipe.train.seq_len
    d, f, layers = preset.d_model, preset.mlp_hidden, preset.n_layers
    per_layer = tokens * activation_bytes_per_token_layer(d, f, bf16)
    if activation_checkpointing:
        acts = layers * tokens * d * (2 if bf16 else 4) + per_layer
    else:
        acts = layers * per_layer
    acts += 2 * tokens * d * 4  # embedding output and final norm
    logits = tokens * plan.vocab_size * (12 if bf16 else 8)
    return MemoryEstimate(params, grads, optim, acts, logits)


def forward_flops_per_token(plan) -> float:
    return plan.flops_per_token / 3  # training FLOPs are forward + backward = 3 forwards


@dataclass
class EvalShare:
    evaluations: int
    validation_tokens: int  # per evaluation
    task_tokens: int | None  # per evaluation; None = not measurable before training
    train_flops: float
    eval_flops: float

    @property
    def share(self) -> float:
        return self.eval_flops / self.train_flops


def eval_share(plan, task_tokens: int | None) -> EvalShare:
    from ladder.runplan import own_eval_steps, trained_steps

    r = plan.recipe
    n_eval = len(own_eval_steps(plan, r.evaluation))  # a branch's: after its branch point
    val = max(1, r.data.validation_tokens // r.train.seq_len) * r.train.seq_len
    fwd = forward_flops_per_token(plan)
    first, last = trained_steps(plan)
    train = plan.flops_per_token * (last - first) * plan.batch_tokens
    return EvalShare(n_eval, val, task_tokens, train, n_eval * fwd * (val + (task_tokens or 0)))


def measure_task_tokens(tasks: str, tokenizer, *, limit: int | None, seed: int, max_len: int) -> int:
    """Tokens the scorer runs per evaluation of ``tasks`` (packed rows, as in the loop)."""
    from ladder.eval.requests import default_cache_dir, prepare_task, tokenizer_fingerprint
    from ladder.eval.scorer import build_rows
    from ladder.eval.tasks import resolve_task_groups

    tok_fp = tokenizer_fingerprint(tokenizer)
    seen = {}
    for g in resolve_task_groups(tasks):
        for t in g.tasks:
            if t.id not in seen:
                seen[t.id] = prepare_task(t, tokenizer, limit=limit, subset="random", seed=seed,
                                          cache_dir=default_cache_dir(), tok_fp=tok_fp)
    rows, _ = build_rows(list(seen.values()), max_len, pack=True)
    return int(sum(len(row.tokens) for row in rows))
