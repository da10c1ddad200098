"""Before a GPU-hour is spent: memory per process and the evaluation share of FLOPs per rung.

Memory (bytes per process, the figure to hold against a GPU's memory):
  params     fp32 master weights, 4 B/param (FSDP: / processes); under bf16 autocast without
             FSDP, autocast's cache of each weight's bf16 copy (2 B/param) for the forward
  grads      fp32, 4 B/param (FSDP: / processes: its gradients are reduce-scattered every
             micro-batch, never kept whole; DDP with several processes adds its bucket copy)
  optimizer  AdamW's two fp32 moments, 8 B/param (FSDP: / processes)
  gathered   FSDP only: the unsharded parameters (the root's embedding, head and final norm for
             the whole step, two decoder layers at a time) in the compute dtype, and the
             unsharded fp32 gradients of the root and one layer before their reduce-scatter
  activations  saved for backward per micro-batch: per token and layer 16 d + 4 f values (the
             attention inputs/outputs, the four RMSNorms' inputs and normalised outputs, the
             SwiGLU's three f-wide tensors and its product; counted with saved-tensor hooks on
             Olmo2 layers); bf16 autocast stores the matmul inputs in bf16 and the norms in fp32.
             Activation checkpointing keeps each layer's input and one layer's activations.
  logits     the loss's peak: it runs head and cross-entropy in chunks of tokens
             (ladder/train/loss.py), so one chunk's logits, their fp32 copy and softmax, and the
             head's fp32 gradient (plus its bf16 copy under bf16)
  reserved   on a GPU, what the CUDA context, NCCL and the cuBLAS/cuDNN workspaces take besides
             the tensors (GPU_RESERVED_BYTES)
Held against a GPU's real capacity (:func:`gpu_capacity`: an "80 GB" card has 79.2 GiB), not its
name's figure; allocator fragmentation is the margin left over.

Evaluation share: forward FLOPs of every evaluation (validation sequences and the task rows the
scorer really runs, counted from the tokenised requests) over the run's training FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2 ** 30
GPU_RESERVED_BYTES = 2.5 * GIB  # CUDA context ~0.5-1 GiB, NCCL buffers, cuBLAS/cuDNN workspaces
# What torch.cuda.get_device_properties().total_memory reports for a card sold as N GB (the
# figure the recipe's slurm.gpu_memory_gib names), rounded down; other sizes: 99% of N.
GPU_CAPACITY_GIB = {24: 22.0, 40: 39.4, 48: 44.4, 80: 79.2, 94: 93.0, 141: 139.7}


def gpu_capacity(nominal_gib: float) -> float:
    """Bytes a GPU sold as ``nominal_gib`` GB really has for a process."""
    return GPU_CAPACITY_GIB.get(int(nominal_gib), 0.99 * nominal_gib) * GIB


@dataclass
class MemoryEstimate:
    params: float
    grads: float
    optimizer: float
    activations: float
    logits: float
    gathered: float = 0.0
    reserved: float = 0.0

    @property
    def total(self) -> float:
        return (self.params + self.grads + self.optimizer + self.gathered + self.activations
                + self.logits + self.reserved)

    def to_json(self) -> dict[str, float]:
        return {"params": self.params, "grads": self.grads, "optimizer": self.optimizer,
                "gathered": self.gathered, "activations": self.activations, "logits": self.logits,
                "reserved": self.reserved, "total": self.total}


def activation_bytes_per_token_layer(d: int, f: int, bf16: bool) -> float:
    values = 16 * d + 4 * f
    return 2 * values + 4 * 8 * d if bf16 else 4 * values


def loss_bytes(tokens: int, vocab: int, d: int, bf16: bool) -> float:
    """Peak of the chunked head + cross-entropy (ladder/train/loss.py) beyond the activations."""
    from ladder.train.loss import chunk_tokens

    chunk = chunk_tokens(tokens, vocab, d)
    per_logit = 10 if bf16 else 8  # logits (bf16) -> fp32 copy -> softmax, in place as the gradient
    head = vocab * d * (4 + 2 + 2 if bf16 else 4)  # fp32 gradient; bf16: the weight's copy and the gradient's
    return chunk * vocab * per_logit + head + tokens * d * (2 if bf16 else 4)  # + the hidden states' gradient


def memory_estimate(plan, *, micro_batch: int, processes: int, fsdp: bool, bf16: bool,
                    activation_checkpointing: bool = False, gpu: bool = False) -> MemoryEstimate:
    """Peak bytes per process of one training step of ``plan`` (a RunPlan); ``gpu`` adds the
    CUDA context and library workspaces."""
    from ladder.presets import get_preset

    preset = get_preset(plan.size)
    n_all = preset.params(plan.vocab_size).n_total
    shard = processes if fsdp else 1
    params, optim = 4 * n_all / shard, 8 * n_all / shard
    grads = 4 * n_all / shard * (2 if processes > 1 and not fsdp else 1)
    d, f, layers = preset.d_model, preset.mlp_hidden, preset.n_layers
    gathered = 0.0
    if fsdp:
        layer = 4 * d * d + 3 * d * f + 4 * d
        root = n_all - layers * layer
        gathered = (root + 2 * layer) * (2 if bf16 else 4) + (root + layer) * 4
    elif bf16:
        params += 2 * n_all  # autocast's bf16 copies of the weights, cached through the forward
    tokens = micro_batch * plan.recipe.train.seq_len
    per_layer = tokens * activation_bytes_per_token_layer(d, f, bf16)
    if activation_checkpointing:
        acts = layers * tokens * d * (2 if bf16 else 4) + per_layer
    else:
        acts = layers * per_layer
    acts += 2 * tokens * d * 4  # embedding output and final norm
    return MemoryEstimate(params, grads, optim, acts, loss_bytes(tokens, plan.vocab_size, d, bf16),
                          gathered, GPU_RESERVED_BYTES if gpu else 0.0)


def fitting_micro_batch(plan, capacity: float, *, micro_batch: int, per_process: int, **kw) -> int | None:
    """The largest micro-batch up to ``micro_batch`` that divides ``per_process`` sequences and
    whose estimate fits ``capacity`` bytes; None if not even 1 does."""
    for m in range(min(micro_batch, per_process), 0, -1):
        if per_process % m == 0 and memory_estimate(plan, micro_batch=m, **kw).total <= capacity:
            return m
    return None


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
