"""The closed-form next-token cross-entropy equals transformers' causal-LM loss and its gradient."""

import pytest
import torch
import torch.nn.functional as F

from ladder.train.loss import next_token_loss


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matches_cross_entropy_value_and_gradient(dtype):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 97, (3, 11), generator=g)
    base = torch.randn(3, 11, 97, generator=g) * 3
    a = base.clone().to(dtype).requires_grad_()
    b = base.clone().to(dtype).requires_grad_()
    ours = next_token_loss(a, ids)
    ref = F.cross_entropy(b[:, :-1].float().reshape(-1, 97), ids[:, 1:].reshape(-1))
    (2.5 * ours).backward()
    (2.5 * ref).backward()
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    assert abs(ours.item() - ref.item()) < tol * max(1.0, ref.item())
    assert a.grad.dtype == dtype
    assert torch.allclose(a.grad.float(), b.grad.float(), atol=tol, rtol=0)
    assert torch.count_nonzero(a.grad[:, -1]) == 0  # the last position has no target
    assert torch.equal(a.detach(), base.to(dtype))  # the logits are not modified in place


def test_matches_transformers_loss():
    from transformers import Olmo2Config, Olmo2ForCausalLM

    torch.manual_seed(0)
    model = Olmo2ForCausalLM(Olmo2Config(vocab_size=64, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2,
                                         num_key_value_heads=2))
    ids = torch.randint(0, 64, (2, 9))
    out = model(input_ids=ids, labels=ids)
    assert abs(next_token_loss(out.logits, ids).item() - out.loss.item()) < 1e-6


def test_no_grad_and_ignored_targets():
    logits = torch.randn(4, 10)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        v = next_token_loss(logits[None], ids)
    ref = F.cross_entropy(logits[:3], ids[0, 1:])
    assert abs(v.item() - ref.item()) < 1e-6


def test_exact_where_the_target_probability_underflows():
    """A confidently wrong token (a 250-nat logit gap, far past float32's smallest probability)
    still gets its exact loss and gradient, not inf: a diverging run must be told apart from a
    rounding artefact."""
    logits = torch.zeros(1, 4, 50)
    logits[0, 0, 7] = 200.0
    logits[0, 0, 3] = -50.0  # the target of position 0
    ids = torch.tensor([[0, 3, 5, 9]])
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    ours = next_token_loss(a, ids)
    ref = F.cross_entropy(b[0, :-1], ids[0, 1:])
    ours.backward()
    ref.backward()
    assert torch.isfinite(ours) and ref.item() > 80
    assert abs(ours.item() - ref.item()) < 1e-4
    assert torch.allclose(a.grad, b.grad, atol=1e-7)


@pytest.mark.parametrize("upstream", [1.0, 0.3])
def test_scale_folds_into_value_and_gradient(upstream):
    """``scale`` (1 / accumulation steps) gives the same value and gradient as dividing the loss,
    whether backward gets the usual 1 or another upstream gradient."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 31, (2, 7), generator=g)
    base = torch.randn(2, 7, 31, generator=g)
    a = base.clone().requires_grad_()
    b = base.clone().requires_grad_()
    scaled = next_token_loss(a, ids, scale=0.25)
    divided = next_token_loss(b, ids) / 4
    (upstream * scaled).backward()
    (upstream * divided).backward()
    assert abs(scaled.item() - divided.item()) < 1e-7
    assert torch.allclose(a.grad, b.grad, atol=1e-9, rtol=1e-6)
