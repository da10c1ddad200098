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


# ---------------------------------------------------------------------------- head + loss in chunks


def _reference(hidden, weight, ids, dtype):
    """Today's step before the change: the full logits (in ``dtype``), accelerate's fp32 copy,
    then the loss on them."""
    logits = (hidden.to(dtype) @ weight.to(dtype).T).float()
    return next_token_loss(logits, ids)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_linear_cross_entropy_equals_full_logits_loss_and_gradients(dtype):
    """Several chunks (and a ragged last one), an ignored position per row: value and both
    gradients equal the loss over materialised logits, to fp32 rounding (fp32) or to bf16's
    (the matmuls in bf16, the softmax in fp32 in both)."""
    from ladder.train.loss import LinearCrossEntropy, shifted_targets

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 300, (3, 37), generator=g)
    h0, w0 = torch.randn(3, 37, 24, generator=g), torch.randn(300, 24, generator=g) * 0.3
    h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()
    hr, wr = h0.clone().requires_grad_(), w0.clone().requires_grad_()
    ours = LinearCrossEntropy.apply(h.reshape(-1, 24), w, shifted_targets(ids), 0.5, 16, dtype)
    ref = 0.5 * _reference(hr.reshape(-1, 24), wr, ids, dtype)
    (3 * ours).backward()
    (3 * ref).backward()
    tol = 1e-6 if dtype == torch.float32 else 2e-2
    assert abs(ours.item() - ref.item()) < tol * ref.item()
    for a, b in ((h.grad, hr.grad), (w.grad, wr.grad)):
        assert a.dtype == torch.float32
        assert (a - b).abs().max() < tol * b.abs().max(), (a - b).abs().max()
    assert torch.count_nonzero(h.grad[:, -1]) == 0  # the last position has no target


def test_training_forward_equals_logits_loss_and_gradients():
    """The model's training forward (head and loss in chunks) against transformers' logits and
    the loss on them: same value, same gradient for every parameter."""
    from ladder.presets import get_preset
    from ladder.train.model import Olmo2ForCausalLM

    cfg = get_preset("tiny-25k").config(vocab_size=512, seq_len=64)
    torch.manual_seed(0)
    a = Olmo2ForCausalLM(cfg)
    b = Olmo2ForCausalLM(cfg)
    b.load_state_dict(a.state_dict())
    ids = torch.randint(0, 512, (4, 64))
    ours = a(input_ids=ids, loss_scale=0.5)
    ref = 0.5 * next_token_loss(b(input_ids=ids).logits, ids)
    ours.backward()
    ref.backward()
    assert abs(ours.item() - ref.item()) < 1e-6
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-7, rtol=1e-4), name


@pytest.mark.parametrize("compiled", [False, True])
def test_bf16_step_holds_no_full_logits(compiled, monkeypatch):
    """Under bf16 autocast the training step neither materialises the ``tokens x vocab`` logits
    nor an fp32 copy of them (accelerate's output cast, undone on the plain and on the compiled
    model, where undoing it wrongly made the forward call itself): no tensor that wide and that
    long is created. The loss stays fp32."""
    import functools
    import numpy as np
    from torch.utils._python_dispatch import TorchDispatchMode

    from ladder.data.sequences import PackedSequences
    from ladder.recipe import from_dict
    from ladder.runplan import plan_run
    from ladder.train.loop import _train_step
    from ladder.train.parallel import SizeParallel, build_accelerator
    from ladder.train.setup import build_model, build_optimizer, prepare_model

    micro, seq, vocab = 8, 64, 1024  # 512 tokens: two chunks
    recipe = from_dict({"model": {"sizes": ["tiny-25k"]},
                        "train": {"seq_len": seq, "batch_tokens": 2 * micro * seq, "micro_batch_size": micro}})
    plan = plan_run(recipe, "tiny-25k", 1.0, 0, vocab)
    acc = build_accelerator(SizeParallel(), cpu_only=True, mixed_precision="bf16", timeout_minutes=1)
    model = build_model(plan)
    # Dynamo's eager backend: the same wrapping as inductor's, without minutes of compiling
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    model, opt = prepare_model(acc, model, build_optimizer(model, plan, acc.device), compile=compiled)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    seqs = PackedSequences(np.random.default_rng(0).integers(0, vocab, seq * 2 * micro + 1).astype(np.uint16), seq, "t")

    widest: list[tuple[int, torch.dtype]] = []

    class Sizes(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor) and t.dim() and t.shape[-1] == vocab:
                    widest.append((t.numel() // vocab, t.dtype))
            return out

    with Sizes():
        loss, _ = _train_step(model, opt, sched, acc, seqs, np.arange(2 * micro), micro, 2, 1.0)
    rows = max(n for n, _ in widest)
    assert rows < micro * seq, f"a {rows} x {vocab} tensor: the full logits"
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
