"""Next-token cross-entropy for the training step.

``F.cross_entropy`` (and ``transformers``' causal-LM loss built on it) runs log-softmax, NLL and
their two backward kernels: four passes over the ``tokens x vocab`` logits plus a zero-filled
NLL gradient. The gradient of mean cross-entropy is known in closed form,
``(softmax(z) - one_hot(y)) / n``, so :class:`NextTokenCrossEntropy` forms it during the forward
pass (one softmax, whose output becomes the gradient in place) and its backward is a single
scale, skipped when it is 1. That is one ``exp`` per logit instead of log-softmax's plus its
backward's, and the exponential is most of a CE's cost on CPU (timings against
``F.cross_entropy`` and ``transformers``' compiled loss: docs/training.md). Under bf16 the saved
gradient is bf16 (not fp32 probabilities), halving that buffer.
The loss equals ``F.cross_entropy`` to float rounding (tests/test_loss.py).
"""

from __future__ import annotations

import torch

IGNORE = -100


class NextTokenCrossEntropy(torch.autograd.Function):
    """Mean CE over the targets that are not ``IGNORE``; logits ``(n, vocab)``, targets ``(n,)``.
    Computed in fp32 whatever the logits' dtype (as ``transformers`` does under bf16)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        valid = targets != IGNORE
        safe = targets.clamp(min=0).unsqueeze(1)
        count = valid.sum().clamp(min=1)
        z = logits.float()
        p = torch.softmax(z, dim=1)  # the one exp over the logits; a new tensor, the logits stay intact
        # log-sum-exp without a second exp pass: the largest probability is exp(max z - lse), and it
        # is >= 1/vocab, so its log is exact even where the target's probability underflows.
        lse = z.amax(dim=1) - p.amax(dim=1).log()
        loss = ((lse - z.gather(1, safe).squeeze(1)) * valid).sum() * (scale / count)
        if ctx.needs_input_grad[0]:
            p.scatter_add_(1, safe, torch.full_like(safe, -1, dtype=p.dtype))  # softmax - one_hot
            p.mul_((valid * (scale / count)).unsqueeze(1).to(p.dtype))
            ctx.save_for_backward(p.to(logits.dtype))
        return loss

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        (grad,) = ctx.saved_tensors
        # loss.backward() passes 1: skip a pass over tokens x vocab (memory-bound on CPU; on GPU
        # reading the value would be a host sync, and the multiply is cheap there)
        if grad_loss.device.type == "cpu" and grad_loss.item() == 1.0:
            return grad, None, None
        return grad * grad_loss.to(grad.dtype), None, None


def next_token_loss(logits: torch.Tensor, input_ids: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Mean CE of predicting ``input_ids[:, t+1]`` from ``logits[:, t]`` (the last position has no
    target), like ``model(input_ids, labels=input_ids).loss`` without the extra passes, times
    ``scale`` (``1 / accumulation steps``: folded into the gradient as it is formed, not applied
    afterwards by another pass). The targets are shifted instead of the logits, so the logits are
    never copied."""
    targets = torch.full_like(input_ids, IGNORE)
    targets[:, :-1] = input_ids[:, 1:]
    return NextTokenCrossEntropy.apply(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), float(scale))
