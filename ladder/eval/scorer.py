"""Ranked-classification scoring of a causal LM on the ladder's tasks, fast enough to run at
every checkpoint.

For every request (context, continuation) we compute the log-likelihood of the continuation's
tokens given the context, and keep its token, character and UTF-8 byte counts. Per task:

- acc: argmax of the raw log-likelihood is the gold choice;
- len_norm: argmax of log-likelihood per character (the paper's accuracy);
- per_token: argmax of log-likelihood per token;
- bpb: -sum log2 p(gold tokens) / bytes(gold) (the paper's task loss);
- soft / soft_log: softmax (log-softmax) over the choices' primary scores (per-character for
  len_norm tasks, raw for acc tasks), taken at the gold choice.

Character and byte counts follow the code that produced the OLMo-ladder logs: the continuation's
first character (the separating space) is not counted (see docs/evaluation.md).

Speed: the context of a document is run once for all its choices (the choices are packed after
it in one row, each attending only to the context and itself, via a 4D attention mask and
explicit position ids); rows from many documents are batched, sorted by length; logits are
computed only at the positions that predict continuation tokens; tokenised requests are cached
on disk per (request data, tokenizer); under accelerate each process scores a shard of the rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ladder.eval.tasks import Doc, Task, TaskGroup, load_docs, resolve_task_groups, source_fingerprint

log = logging.getLogger(__name__)

CACHE_VERSION = "1"
LN2 = math.log(2.0)


# --------------------------------------------------------------------------- tokenisation


def bos_prefix(tokenizer) -> list[int]:
    """[BOS] when the tokenizer itself starts sequences with BOS (e.g. Llama), else [].

    OLMo's tokenizers do not add BOS, and the paper's in-loop evaluation fed contexts without it."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return []
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    return [bos] if with_special and with_special[0] == bos else []


def tokenizer_fingerprint(tokenizer) -> str:
    """Stable hash of everything that decides the token ids of a string."""
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(json.dumps([bos_prefix(tokenizer), getattr(tokenizer, "eos_token_id", None)]).encode())
    return h.hexdigest()


def _norm_length(s: str) -> tuple[int, int]:
    """(characters, UTF-8 bytes) used for normalisation: the first character (the separating
    space) is not counted, as in the code that produced the paper's logs. At least 1."""
    rest = s[1:]
    return max(len(rest), 1), max(len(rest.encode("utf-8")), 1)


@dataclass
class TokenizedTask:
    """Tokenised requests of one task (documents in file order, requests grouped by document)."""

    task: Task
    doc_index: np.ndarray  # (n_docs,) position of each document in the task's file order
    labels: np.ndarray  # (n_docs,) gold choice
    req_doc: np.ndarray  # (n_req,) document (row of labels) of each request
    req_choice: np.ndarray  # (n_req,) choice index within the document
    req_ctx: np.ndarray  # (n_req,) index into contexts (shared by the choices of a document)
    ctx_tokens: list[np.ndarray]
    cont_tokens: list[np.ndarray]
    n_chars: np.ndarray  # (n_req,) normalisation characters of the continuation
    n_bytes: np.ndarray  # (n_req,) normalisation UTF-8 bytes of the continuation
    n_chars_full: np.ndarray  # (n_req,) all characters
    n_bytes_full: np.ndarray  # (n_req,) all bytes

    @property
    def n_docs(self) -> int:
        return len(self.labels)

    @property
    def n_requests(self) -> int:
        return len(self.req_doc)

    @property
    def n_tokens(self) -> np.ndarray:
        return np.array([len(t) for t in self.cont_tokens], dtype=np.int64)

    # --- disk cache (npz of flat arrays; never pickled)
    def save(self, path: Path) -> None:
        def flat(seqs):
            off = np.zeros(len(seqs) + 1, dtype=np.int64)
            off[1:] = np.cumsum([len(s) for s in seqs])
            return (np.concatenate(seqs) if seqs else np.zeros(0, np.int64)).astype(np.int64), off
        ctx, ctx_off = flat(self.ctx_tokens)
        cont, cont_off = flat(self.cont_tokens)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, doc_index=self.doc_index, labels=self.labels, req_doc=self.req_doc,
                     req_choice=self.req_choice, req_ctx=self.req_ctx, ctx=ctx, ctx_off=ctx_off,
                     cont=cont, cont_off=cont_off, n_chars=self.n_chars, n_bytes=self.n_bytes,
                     n_chars_full=self.n_chars_full, n_bytes_full=self.n_bytes_full)
        os.replace(tmp, path)  # atomic: a cache file is complete or absent

    @classmethod
    def load(cls, task: Task, path: Path) -> "TokenizedTask":
        with np.load(path, allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
        split = lambda flat, off: [flat[off[i]:off[i + 1]] for i in range(len(off) - 1)]  # noqa: E731
        return cls(task, a["doc_index"], a["labels"], a["req_doc"], a["req_choice"], a["req_ctx"],
                   split(a["ctx"], a["ctx_off"]), split(a["cont"], a["cont_off"]), a["n_chars"],
                   a["n_bytes"], a["n_chars_full"], a["n_bytes_full"])


def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    return list(tokenizer(texts, add_special_tokens=False)["input_ids"])


def tokenize_docs(task: Task, docs: list[Doc], doc_index: list[int], tokenizer) -> TokenizedTask:
    """Tokenise contexts and continuations separately (as the reference evaluators do), prepending
    BOS when the tokenizer uses one. Contexts shared by a document's choices are encoded once."""
    prefix = bos_prefix(tokenizer)
    fallback = prefix or [t for t in (getattr(tokenizer, "eos_token_id", None),) if t is not None]
    ctx_texts: list[str] = []
    req_doc, req_choice, req_ctx, conts = [], [], [], []
    for d, doc in enumerate(docs):
        seen: dict[str, int] = {}
        for c, (ctx, cont) in enumerate(zip(doc.contexts, doc.continuations)):
            if ctx not in seen:
                seen[ctx] = len(ctx_texts)
                ctx_texts.append(ctx)
            req_doc.append(d)
            req_choice.append(c)
            req_ctx.append(seen[ctx])
            conts.append(cont)
    ctx_tok = []
    for i, ids in enumerate(_encode(tokenizer, ctx_texts)):
        ids = prefix + list(ids) if (not prefix or not ids or ids[0] != prefix[0]) else list(ids)
        if not ids:  # empty context: condition on BOS/EOS if the tokenizer has one
            if not fallback:
                raise ValueError(f"task {task.id}: a document has an empty context and the "
                                 f"tokenizer has neither a BOS nor an EOS token to condition on")
            ids = list(fallback)
        ctx_tok.append(np.asarray(ids, dtype=np.int64))
    cont_tok = [np.asarray(ids, dtype=np.int64) for ids in _encode(tokenizer, conts)]
    for i, t in enumerate(cont_tok):
        if len(t) == 0:
            raise ValueError(f"task {task.id}: continuation {conts[i]!r} tokenises to nothing")
    norm = np.array([_norm_length(s) for s in conts], dtype=np.int64).reshape(-1, 2)
    full = np.array([(len(s), len(s.encode("utf-8"))) for s in conts], dtype=np.int64).reshape(-1, 2)
    return TokenizedTask(
        task, np.asarray(doc_index, dtype=np.int64), np.array([d.label for d in docs], dtype=np.int64),
        np.asarray(req_doc, dtype=np.int64), np.asarray(req_choice, dtype=np.int64),
        np.asarray(req_ctx, dtype=np.int64), ctx_tok, cont_tok, norm[:, 0], norm[:, 1],
        full[:, 0], full[:, 1])


def select_docs(n_docs: int, limit: int | None, subset: str, seed: int) -> list[int]:
    """Indices of the documents to evaluate, in file order: all, the first `limit`, or a
    fixed-seed random `limit` (the same documents at every call, so curves are comparable)."""
    if limit is None or limit >= n_docs:
        return list(range(n_docs))
    if limit < 1:
        raise ValueError(f"limit must be >= 1 (got {limit})")
    if subset == "first":
        return list(range(limit))
    if subset == "random":
        return sorted(random.Random(seed).sample(range(n_docs), limit))
    raise ValueError(f"subset must be 'first' or 'random' (got {subset!r})")


def default_cache_dir() -> Path | None:
    env = os.environ.get("LADDER_EVAL_CACHE")
    if env:
        return None if env.lower() in ("off", "0", "none", "false") else Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ladder" / "eval"


def prepare_task(task: Task, tokenizer, *, limit: int | None, subset: str, seed: int,
                 corpus_texts: list[str] | None = None, cache_dir: Path | None = None,
                 tok_fp: str | None = None) -> TokenizedTask:
    """Documents of a task, tokenised, from the disk cache when the same request data, tokenizer
    and document selection were tokenised before."""
    path = None
    if cache_dir is not None:
        key = hashlib.sha256(json.dumps([
            CACHE_VERSION, source_fingerprint(task, corpus_texts),
            tok_fp or tokenizer_fingerprint(tokenizer), limit, subset, seed]).encode()).hexdigest()
        path = Path(cache_dir) / f"{task.id}-{key[:32]}.npz"
        if path.is_file():
            try:
                return TokenizedTask.load(task, path)
            except Exception as e:  # damaged cache entry: rebuild it
                log.warning("ignoring unreadable tokenisation cache %s (%s)", path, e)
    if subset == "first" or limit is None:
        docs = load_docs(task, limit, corpus_texts)
        index = list(range(len(docs)))
    else:
        all_docs = load_docs(task, None, corpus_texts)
        index = select_docs(len(all_docs), limit, subset, seed)
        docs = [all_docs[i] for i in index]
    tt = tokenize_docs(task, docs, index, tokenizer)
    if path is not None:
        try:
            tt.save(path)
        except OSError as e:
            log.warning("could not write tokenisation cache %s (%s)", path, e)
    return tt


# --------------------------------------------------------------------------- rows and batches


@dataclass
class _Row:
    """One sequence fed to the model and the continuation tokens it scores."""

    tokens: np.ndarray
    seg: np.ndarray  # 0 = context, i+1 = i-th packed continuation (attends to context + itself)
    pos: np.ndarray  # position ids
    pred_pos: np.ndarray  # position whose logits predict each scored token
    target: np.ndarray  # the scored token
    req: np.ndarray  # global request index of each scored token


def _plain_row(ctx: np.ndarray, cont: np.ndarray, req: int, max_len: int) -> _Row:
    if len(cont) >= max_len:
        # the continuation alone overflows the model's window: condition on the last context
        # token and score the first max_len - 1 continuation tokens (counted; warned about)
        cont = cont[: max_len - 1]
        ctx = ctx[-1:]
    q = np.concatenate([ctx, cont[:-1]])
    cut = max(0, len(q) - max_len)  # truncate the context from the left, like the reference
    q = q[cut:]
    start = len(ctx) - cut - 1
    n = len(q)
    return _Row(q, np.zeros(n, np.int64), np.arange(n), start + np.arange(len(cont)), cont,
                np.full(len(cont), req))


def _packed_row(ctx: np.ndarray, conts: list[tuple[int, np.ndarray]]) -> _Row:
    L = len(ctx)
    toks, segs, pos, pred, tgt, reqs = [ctx], [np.zeros(L, np.int64)], [np.arange(L)], [], [], []
    at = L
    for i, (req, cont) in enumerate(conts):
        body = cont[:-1]
        toks.append(body)
        segs.append(np.full(len(body), i + 1))
        pos.append(L + np.arange(len(body)))
        pred.append(np.concatenate([[L - 1], at + np.arange(len(body))]))
        tgt.append(cont)
        reqs.append(np.full(len(cont), req))
        at += len(body)
    cat = lambda xs: np.concatenate(xs).astype(np.int64)  # noqa: E731
    return _Row(cat(toks), cat(segs), cat(pos), cat(pred), cat(tgt), cat(reqs))


def build_rows(tasks: list[TokenizedTask], max_len: int, pack: bool) -> tuple[list[_Row], int]:
    """Rows for all requests of all tasks (request index = offset of its task + local index)."""
    rows: list[_Row] = []
    offset = 0
    for tt in tasks:
        groups: dict[int, list[int]] = {}
        for r, c in enumerate(tt.req_ctx):
            groups.setdefault(int(c), []).append(r)
        for c, reqs in groups.items():
            ctx = tt.ctx_tokens[c]
            conts = [(offset + r, tt.cont_tokens[r]) for r in reqs]
            if pack and len(reqs) > 1 and len(ctx) + sum(len(x) - 1 for _, x in conts) <= max_len:
                rows.append(_packed_row(ctx, conts))
            else:
                rows.extend(_plain_row(ctx, x, r, max_len) for r, x in conts)
        offset += tt.n_requests
    return rows, offset


def _unwrap(model):
    while True:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        else:
            return model


def _max_length(model, default: int = 2048) -> int:
    cfg = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        v = getattr(cfg, name, None)
        if isinstance(v, int) and v > 0:
            return v
    return default


class RequestScorer:
    """Sum of log-probabilities of each request's continuation tokens, batched.

    `pack=True` runs a document's context once for all its choices; it needs a model that honours
    custom 4D attention masks and position ids (HF eager/sdpa attention). The first call checks
    this on one document against unpacked rows and falls back to unpacked rows otherwise."""

    def __init__(self, batch_size: int = 32, max_length: int | None = None, pack: bool = True,
                 pad_token_id: int = 0, logits_chunk: int = 1024, max_batch_tokens: int = 65536):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
        self.batch_size = batch_size
        self.max_length = max_length
        self.pack = pack
        self.pad_token_id = pad_token_id
        self.logits_chunk = logits_chunk
        self.max_batch_tokens = max_batch_tokens
        self._pack_ok: dict[tuple, bool] = {}
        self._keep_kw: dict[type, bool] = {}

    # --- one forward pass
    def _forward(self, model, rows: list[_Row], packed: bool) -> tuple[np.ndarray, np.ndarray]:
        device = next(model.parameters()).device
        B, T = len(rows), max(len(r.tokens) for r in rows)
        ids = np.full((B, T), self.pad_token_id, dtype=np.int64)
        seg = np.full((B, T), -1, dtype=np.int64)  # -1 marks padding
        pos = np.zeros((B, T), dtype=np.int64)
        keep = np.zeros((B, T), dtype=bool)
        for b, r in enumerate(rows):
            n = len(r.tokens)
            ids[b, :n], seg[b, :n], pos[b, :n] = r.tokens, r.seg, r.pos
            keep[b, r.pred_pos] = True
        kwargs: dict[str, Any] = {"input_ids": torch.from_numpy(ids).to(device), "use_cache": False}
        if packed and seg.max() > 0:
            # context tokens: causal; a packed continuation: the context + its own earlier tokens
            sg = torch.from_numpy(seg).to(device)
            ar = torch.arange(T, device=device)
            allowed = (ar[None, :] <= ar[:, None])[None] & (
                (sg[:, None, :] == 0) | (sg[:, None, :] == sg[:, :, None])) & (sg[:, None, :] >= 0)
            allowed |= torch.eye(T, dtype=torch.bool, device=device)  # padding sees itself: no NaN
            allowed = allowed[:, None]
            if getattr(model.config, "_attn_implementation", "eager") == "eager":
                dtype = next(model.parameters()).dtype
                mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
                mask.masked_fill_(~allowed, torch.finfo(dtype).min)
            else:
                mask = allowed
            kwargs["attention_mask"] = mask
            kwargs["position_ids"] = torch.from_numpy(pos).to(device)
        else:  # right padding: natural positions, 2D padding mask
            kwargs["attention_mask"] = torch.from_numpy(seg >= 0).long().to(device)
        keep_t = torch.from_numpy(keep).to(device)
        logits = self._call(model, kwargs, keep_t)
        if logits.dim() == 3:
            logits = logits[keep_t.to(logits.device)]
        # flat index of (row, position) among the kept positions, row-major
        flat_index = (np.cumsum(keep.reshape(-1)) - 1).reshape(B, T)
        sel = torch.from_numpy(np.concatenate([flat_index[b, r.pred_pos] for b, r in enumerate(rows)]))
        target = torch.from_numpy(np.concatenate([r.target for r in rows]))
        req = np.concatenate([r.req for r in rows])
        # log-softmax once per kept position (chunked to bound memory), then pick each target
        sel, target = sel.to(logits.device), target.to(logits.device)
        lp = torch.empty(len(sel), dtype=torch.float32, device=logits.device)
        for s in range(0, logits.shape[0], self.logits_chunk):
            ls = torch.log_softmax(logits[s:s + self.logits_chunk].float(), dim=-1)
            m = (sel >= s) & (sel < s + ls.shape[0])
            lp[m] = ls[sel[m] - s, target[m]]
        out = lp.double().cpu()
        return req, out.numpy()

    def _call(self, model, kwargs: dict, keep: torch.Tensor) -> torch.Tensor:
        """Forward, asking for logits only at `keep` (HF `logits_to_keep` boolean mask) when the
        model supports it; otherwise all logits."""
        key = type(_unwrap(model))
        if self._keep_kw.get(key, True):
            try:
                logits = model(**kwargs, logits_to_keep=keep).logits
                if logits.dim() == 2 and logits.shape[0] == int(keep.sum()) or logits.shape[:2] == keep.shape:
                    self._keep_kw[key] = True
                    return logits
            except (TypeError, ValueError, IndexError, RuntimeError) as e:
                log.info("model does not take a boolean logits_to_keep (%s); computing all logits", e)
            self._keep_kw[key] = False
        return model(**kwargs).logits

    # --- packing check
    def _packing_works(self, model, rows: list[_Row], max_len: int) -> bool:
        impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
        key = (type(_unwrap(model)), impl, next(model.parameters()).dtype)
        if key not in self._pack_ok:
            ok = impl in ("eager", "sdpa")  # attention kernels that take a dense 4D mask
            probe = next((r for r in rows if r.seg.max() > 1), None) if ok else None
            if probe is not None:
                ctx = probe.tokens[probe.seg == 0]
                plain = [_plain_row(ctx, probe.target[probe.req == r], int(r), max_len)
                         for r in dict.fromkeys(probe.req.tolist())]
                req_u, lp_u = self._forward(model, plain, packed=False)
                try:
                    req_p, lp_p = self._forward(model, [probe], packed=True)
                except (TypeError, ValueError, RuntimeError) as e:
                    log.warning("this model cannot take a custom attention mask (%s); scoring "
                                "each choice separately", e)
                    self._pack_ok[key] = False
                    return False
                keys = sorted(set(req_p.tolist()))
                a = np.array([lp_p[req_p == r].sum() for r in keys])
                b = np.array([lp_u[req_u == r].sum() for r in keys])
                fp32 = next(model.parameters()).dtype == torch.float32
                tol = (1e-3 if fp32 else 5e-2) * max(1, len(lp_p))
                ok = bool(np.all(np.abs(a - b) <= tol))
                if not ok:
                    log.warning("packed scoring disagrees with unpacked (max diff %.3g): this model "
                                "ignores custom attention masks; scoring each choice separately",
                                float(np.max(np.abs(a - b))))
            self._pack_ok[key] = ok
        return self._pack_ok[key]

    def _batches(self, rows: list[_Row]) -> list[list[_Row]]:
        """Consecutive rows (longest first), at most batch_size rows and max_batch_tokens padded
        tokens each (bounds the B x T x T attention mask and activations for long rows)."""
        out: list[list[_Row]] = []
        for r in rows:
            if out and len(out[-1]) < self.batch_size and \
                    (len(out[-1]) + 1) * len(out[-1][0].tokens) <= self.max_batch_tokens:
                out[-1].append(r)
            else:
                out.append([r])
        return out

    # --- all requests
    @torch.no_grad()
    def score(self, model, tasks: list[TokenizedTask], accelerator=None) -> np.ndarray:
        """Log-likelihood (nats) of every request of `tasks`, concatenated in task order."""
        inner = _unwrap(model)
        max_len = self.max_length or _max_length(inner)
        packed = False
        if self.pack:
            rows, n_req = build_rows(tasks, max_len, pack=True)
            packed = self._packing_works(inner, rows, max_len)
            if not packed:
                rows, n_req = build_rows(tasks, max_len, pack=False)
        else:
            rows, n_req = build_rows(tasks, max_len, pack=False)
        n_cut = sum(int(len(t) >= max_len) for tt in tasks for t in tt.cont_tokens)
        if n_cut:
            log.warning("%d continuations are longer than the model's context (%d tokens): only "
                        "their first %d tokens are scored", n_cut, max_len, max_len - 1)
        rows.sort(key=lambda r: -len(r.tokens))  # similar lengths together: little padding
        world = getattr(accelerator, "num_processes", 1) if accelerator is not None else 1
        rank = getattr(accelerator, "process_index", 0) if accelerator is not None else 0
        mine = self._batches(rows[rank::world])
        # every process runs the same number of forward passes (FSDP/DDP collectives stay paired)
        n_batches = max(len(self._batches(rows[r::world])) for r in range(world))
        reqs, lps = [], []
        for i in range(n_batches):
            batch = mine[i] if i < len(mine) else []
            if not batch:  # idle process: run a dummy batch and drop it
                self._forward(inner, rows[:1], packed)
                continue
            req, lp = self._forward(inner, batch, packed)
            reqs.append(req)
            lps.append(lp)
        req = np.concatenate(reqs) if reqs else np.zeros(0, np.int64)
        lp = np.concatenate(lps) if lps else np.zeros(0)
        if world > 1:
            from accelerate.utils import gather_object
            parts = gather_object([(req, lp)])
            req = np.concatenate([p[0] for p in parts])
            lp = np.concatenate([p[1] for p in parts])
        ll = np.zeros(n_req, dtype=np.float64)
        np.add.at(ll, req, lp)
        return ll


# --------------------------------------------------------------------------- metrics


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


# --------------------------------------------------------------------------- evaluator


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


