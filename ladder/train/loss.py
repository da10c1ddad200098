"""Next-token cross-entropy for the training step, without a ``tokens x vocab`` logits tensor.

The training forward (:class:`ladder.train.model.Olmo2ForCausalLM`) hands the final hidden
states and the output head's weight to :func:`linear_cross_entropy`, which computes head and
loss together in chunks of tokens (:class:`LinearCrossEntropy`): each chunk's logits are formed,
turned into its loss and its gradient with respect to the hidden states and the head weight,
and freed, so the full logits, their fp32 copy and their gradient never exist at once (for a
100k vocabulary they were most of a step's memory traffic). The gradients are formed in the
forward pass (one pass over each chunk's logits, as Liger's fused kernel does); the backward
pass only scales them. Where Liger's fused Triton kernel is installed and the tensors are on a
GPU, it does the same in one kernel (:func:`loss_kernel`).

The per-chunk math is the closed form of the cross-entropy's gradient,
``(softmax(z) - one_hot(y)) / n``: one ``exp`` per logit, in fp32 whatever the compute dtype,
its output turned into the gradient in place (:func:`_ce_and_grad`). :class:`NextTokenCrossEntropy`
applies the same math to logits that already exist (the reference path, kept for comparisons:
tests/test_loss.py, tests/benchmarks/bench_train.py).
"""

from __future__ import annotations

import math

import torch

IGNORE = -100


def _ce_and_grad(z: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor,
                 need_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sum over rows of ``weight * CE(z, targets)`` and its gradient with respect to ``z``
    (fp32). ``weight`` is 0 for ignored targets and ``scale / count`` otherwise."""
    safe = targets.clamp(min=0).unsqueeze(1)
    p = torch.softmax(z, dim=1)  # the one exp over the logits; a new tensor, z stays intact
    # log-sum-exp without a second exp pass: the largest probability is exp(max z - lse), and it
    # is >= 1/vocab, so its log is exact even where the target's probability underflows.
    lse = z.amax(dim=1) - p.amax(dim=1).log()
    loss = ((lse - z.gather(1, safe).squeeze(1)) * weight).sum()
    if not need_grad:
        return loss, None
    p.scatter_add_(1, safe, torch.full_like(safe, -1, dtype=p.dtype))  # softmax - one_hot
    p.mul_(weight.unsqueeze(1))
    return loss, p


def _token_weights(targets: torch.Tensor, scale: float) -> torch.Tensor:
    valid = targets != IGNORE
    return valid * (scale / valid.sum().clamp(min=1))


class NextTokenCrossEntropy(torch.autograd.Function):
    """Mean CE over the targets that are not ``IGNORE``; logits ``(n, vocab)``, targets ``(n,)``.
    Computed in fp32 whatever the logits' dtype (as ``transformers`` does under bf16)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        loss, grad = _ce_and_grad(logits.float(), targets, _token_weights(targets, scale),
                                  ctx.needs_input_grad[0])
        if grad is not None:
            ctx.save_for_backward(grad.to(logits.dtype))
        return loss

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_loss.to(grad.dtype), None, None


def shifted_targets(input_ids: torch.Tensor) -> torch.Tensor:
    """``input_ids[:, t+1]`` as the target of position ``t``, ``IGNORE`` at the last position,
    flattened: the targets are shifted instead of the logits, so nothing of vocabulary width
    is copied."""
    targets = torch.full_like(input_ids, IGNORE)
    targets[:, :-1] = input_ids[:, 1:]
    return targets.reshape(-1)


def next_token_loss(logits: torch.Tensor, input_ids: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Mean CE of predicting ``input_ids[:, t+1]`` from ``logits[:, t]`` (the last position has no
    target), like ``model(input_ids, labels=input_ids).loss`` without the extra passes, times
    ``scale`` (``1 / accumulation steps``: folded into the gradient as it is formed)."""
    return NextTokenCrossEntropy.apply(logits.reshape(-1, logits.size(-1)), shifted_targets(input_ids),
                                       float(scale))


MIN_CHUNK = 256  # tokens: fewer make each chunk's matmuls too thin (a small model's big vocabulary)


def chunk_tokens(n: int, vocab: int, d_model: int) -> int:
    """Tokens per chunk: a chunk's logits about as large as the hidden states of all ``n``
    tokens (Liger's rule), a power of two, at least ``MIN_CHUNK``, at most ``n``."""
    want = -(-n // max(1, -(-vocab // d_model)))
    return min(n, max(MIN_CHUNK, 1 << max(0, math.ceil(math.log2(max(1, want))))))


class LinearCrossEntropy(torch.autograd.Function):
    """``NextTokenCrossEntropy(hidden @ weight.T)`` over chunks of tokens: hidden ``(n, d)``,
    weight ``(vocab, d)``, targets ``(n,)``. The matmuls run in ``dtype`` (the autocast dtype
    under mixed precision), the softmax and the sums in fp32; the head's gradient is summed in
    fp32 across chunks."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, scale: float, chunk: int, dtype: torch.dtype):
        h, w = hidden.to(dtype), weight.to(dtype)
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        tok_w = _token_weights(targets, scale)
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        for s in range(0, h.size(0), chunk):
            hc = h[s:s + chunk]
            part, g = _ce_and_grad((hc @ w.T).float(), targets[s:s + chunk], tok_w[s:s + chunk],
                                   need_h or need_w)
            loss = loss + part
            if g is None:
                continue
            g = g.to(dtype)
            if need_h:
                grad_h[s:s + chunk] = g @ w
            if need_w:
                grad_w += (g.T @ hc).float()
        if need_h or need_w:
            ctx.save_for_backward(grad_h if need_h else hidden.new_empty(0),
                                  grad_w.to(weight.dtype) if need_w else weight.new_empty(0))
        ctx.need = (need_h, need_w)
        return loss

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        need_h, need_w = ctx.need
        return (grad_h * grad_loss.to(grad_h.dtype) if need_h else None,
                grad_w * grad_loss.to(grad_w.dtype) if need_w else None, None, None, None, None)


def loss_kernel(device: torch.device) -> str:
    """``liger`` where Liger's fused linear cross-entropy is installed and the model is on a
    GPU, else ``chunked`` (:class:`LinearCrossEntropy`)."""
    if device.type != "cuda":
        return "chunked"
    try:
        import liger_kernel.transformers.fused_linear_cross_entropy  # noqa: F401
    except ImportError:
        return "chunked"
    return "liger"


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, input_ids: torch.Tensor,
                         scale: float = 1.0, kernel: str | None = None) -> torch.Tensor:
    """Mean next-token CE of the logits ``hidden @ weight.T`` (hidden ``(batch, seq, d)``) times
    ``scale``, without materialising the logits."""
    targets = shifted_targets(input_ids)
    h = hidden.reshape(-1, hidden.size(-1))
    dtype = (torch.get_autocast_dtype(h.device.type) if torch.is_autocast_enabled(h.device.type)
             else h.dtype)
    if (kernel or loss_kernel(h.device)) == "liger":
        from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss

        # the module's (weight, input, target) call is the API its versions share; some return
        # a tuple or an output object around the loss
        out = LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE)(weight.to(dtype), h.to(dtype), targets)
        loss = out[0] if isinstance(out, tuple) else getattr(out, "loss", out)
        return loss.float() * scale
    return LinearCrossEntropy.apply(h, weight, targets, float(scale),
                                    chunk_tokens(h.size(0), weight.size(0), weight.size(1)), dtype)
